"""The simulator's HTTP face: HubSpot's API routes plus ``/_sim/*`` for tests and demos.

Every API request passes, in order: request counting, injected faults,
authentication, the portal's rate limit, then the handler. Any failure is
answered with HubSpot's error JSON; malformed input is a 400, never a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from libs.hubspot.objects import OBJECTS, ObjectType
from sim.hubspot.errors import ApiError, error_body, json_response, not_found, validation_error
from sim.hubspot.oauth import TokenStatus
from sim.hubspot.search import search
from sim.hubspot.simulator import INTEGRATION_CHANGE_SOURCE, HubSpotSimulator
from sim.hubspot.store import BatchAnswer, Source, now_iso

SIM: web.AppKey[HubSpotSimulator] = web.AppKey("hubspot_sim", HubSpotSimulator)
ASSOCIATION_BATCH_LIMIT = 2_000
LIST_LIMIT = 100
_log = logging.getLogger("sim.hubspot")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- helpers ---------------------------------------------------------------------------

async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise validation_error(f"Invalid input JSON on line 1: {exc}") from None


def _sim(request: web.Request) -> HubSpotSimulator:
    return request.app[SIM]


def _type(request: web.Request, key: str = "object_type") -> ObjectType:
    return _sim(request).object_type(request.match_info[key])


def _objects_type(request: web.Request) -> ObjectType:
    kind = _type(request)
    if kind is ObjectType.PROJECTS and request.path.startswith("/crm/v3/objects/"):
        raise not_found("Projects live under /crm/objects/v3/projects, not /crm/v3/objects/projects.")
    return kind


def _api_source(request: web.Request) -> Source:
    sim = _sim(request)
    change_source = request.headers.get("X-Sim-Change-Source", INTEGRATION_CHANGE_SOURCE)
    source_id = request.headers.get("X-Sim-Source-Id", str(sim.config.app_id))
    return Source(change_source, source_id)


def _query_int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise validation_error(f"Query parameter '{name}' must be a whole number, got {raw!r}.") from None


def _query_properties(request: web.Request) -> list[str]:
    names: list[str] = []
    for raw in request.query.getall("properties", []):
        names.extend(p for p in raw.split(",") if p)
    return names


def _batch_response(answer: BatchAnswer, ok_status: int) -> web.Response:
    at = now_iso()
    body: dict[str, Any] = {"status": "COMPLETE", "results": answer.results, "requestedAt": at,
                            "startedAt": at, "completedAt": at}
    if answer.errors:
        body["numErrors"] = len(answer.errors)
        body["errors"] = answer.errors
        return json_response(body, 207)
    return json_response(body, ok_status)


def _rate_limited(policy: str, headers: dict[str, str]) -> web.Response:
    lowered = policy.lower()
    body = error_body("RATE_LIMITS", f"You have reached your {lowered} limit.", errorType="RATE_LIMIT",
                      policyName=policy, groupName="publicapi")
    return json_response(body, 429, headers)


# --- middleware -------------------------------------------------------------------------

def _endpoint(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    if resource is None:
        return f"{request.method} (unmatched)"
    template = resource.canonical
    for key in ("object_type", "op", "from_type", "to_type"):
        if key in request.match_info:
            template = template.replace("{" + key + "}", request.match_info[key])
    return f"{request.method} {template}"


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    sim = _sim(request)
    path = request.path
    if path.startswith("/_sim/"):
        return await _guarded(request, handler, {})
    endpoint = _endpoint(request)
    response = await _api(request, handler, sim, path)
    sim.count_request(endpoint, response.status)
    return response


async def _api(request: web.Request, handler: Handler, sim: HubSpotSimulator, path: str) -> web.StreamResponse:
    faults = sim.faults
    if faults.active() and not path.startswith("/oauth/"):
        decision = faults.decide(path)
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        if decision.drop:
            await request.read()
            transport = request.transport
            if transport is not None:
                transport.abort()
            return web.Response(status=599)
        if decision.storm:
            return _rate_limited("TEN_SECONDLY_ROLLING", _limit_headers(sim, 0, private=False))
        if decision.status is not None:
            status = decision.status
            category = "RATE_LIMITS" if status == 429 else ("LOCKED" if status == 423 else "INTERNAL_ERROR")
            return json_response(error_body(category, f"Injected fault: HTTP {status}"), status)
    if path == "/oauth/v1/token":
        return await _guarded(request, handler, {})
    private = False
    if not path.startswith("/automation/v4/actions/") or "hapikey" not in request.query:
        failure = _authenticate(request, sim)
        if isinstance(failure, web.Response):
            return failure
        private = failure
    elif request.query.get("hapikey") != sim.config.developer_api_key:
        return json_response(error_body("INVALID_AUTHENTICATION", "The developer API key provided is invalid."), 401)
    headers: dict[str, str] = {}
    is_search = path.endswith("/search") and request.method == "POST"
    if is_search:
        if not sim.search_window.hit().allowed:
            return _rate_limited("SECONDLY", {})
    else:
        verdict = sim.window.hit()
        if sim.config.rate_limit_max > 0:
            headers = _limit_headers(sim, verdict.remaining, private=private)
            if not verdict.allowed:
                return _rate_limited("TEN_SECONDLY_ROLLING", headers)
        if private and sim.config.daily_limit > 0:
            daily = sim.daily.hit()
            headers["X-HubSpot-RateLimit-Daily"] = str(sim.config.daily_limit)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(daily.remaining)
            if not daily.allowed:
                return _rate_limited("DAILY", headers)
    return await _guarded(request, handler, headers)


def _limit_headers(sim: HubSpotSimulator, remaining: int, *, private: bool) -> dict[str, str]:
    c = sim.config
    return {
        "X-HubSpot-RateLimit-Max": str(c.rate_limit_max),
        "X-HubSpot-RateLimit-Remaining": str(remaining),
        "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(c.scaled_ms(c.rate_limit_interval_ms))),
    }


def _authenticate(request: web.Request, sim: HubSpotSimulator) -> web.Response | bool:
    """A 401 answer, or whether the token is a private-app token."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return json_response(error_body(
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
            "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"), 401)
    status, expired_for = sim.tokens.check(token.strip())
    if status is TokenStatus.EXPIRED:
        return json_response(error_body(
            "EXPIRED_AUTHENTICATION",
            f"The OAuth token used to make this call expired {int(expired_for)} second(s) ago."), 401)
    if status is TokenStatus.UNKNOWN:
        return json_response(error_body(
            "INVALID_AUTHENTICATION", "The access token provided is invalid or has been revoked."), 401)
    return status is TokenStatus.PRIVATE_APP


async def _guarded(request: web.Request, handler: Handler, headers: dict[str, str]) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ApiError as exc:
        response = json_response(exc.body(), exc.status)
    except web.HTTPException as exc:
        category = "OBJECT_NOT_FOUND" if exc.status == 404 else "VALIDATION_ERROR"
        message = f"Unable to route {request.method} url: {request.path}" if exc.status in (404, 405) else exc.reason
        response = json_response(error_body(category, message), exc.status)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # Shapes we did not foresee are still the caller's malformed input, not our crash.
        _log.info("malformed input on %s %s: %r", request.method, request.path, exc)
        response = json_response(error_body("VALIDATION_ERROR", f"Invalid input: {exc}"), 400)
    for key, value in headers.items():
        response.headers[key] = value
    return response


# --- OAuth -------------------------------------------------------------------------------

async def oauth_token(request: web.Request) -> web.Response:
    sim = _sim(request)
    form = await request.post()
    c = sim.config
    if form.get("grant_type") != "refresh_token":
        return json_response({"status": "BAD_GRANT_TYPE", "message": "grant_type must be refresh_token",
                              "correlationId": error_body("", "")["correlationId"]}, 400)
    if form.get("client_id") != c.client_id or form.get("client_secret") != c.client_secret:
        return json_response({"status": "BAD_CLIENT_ID", "message": "missing or unknown client id/secret",
                              "correlationId": error_body("", "")["correlationId"]}, 400)
    if form.get("refresh_token") != c.refresh_token:
        return json_response({"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token",
                              "correlationId": error_body("", "")["correlationId"]}, 400)
    token = sim.tokens.issue(c.access_token_lifetime_s)
    return json_response({"token_type": "bearer", "refresh_token": c.refresh_token, "access_token": token,
                          "expires_in": _seconds(c.access_token_lifetime_s)})


def _seconds(value: float) -> int | float:
    """HubSpot says 1800; sub-second lifetimes (tests) stay fractional so clients can honour them."""
    return int(value) if value >= 1 else value


# --- objects -------------------------------------------------------------------------------

async def list_objects(request: web.Request) -> web.Response:
    sim = _sim(request)
    kind = _objects_type(request)
    limit = _query_int(request, "limit", 10)
    if not 1 <= limit <= LIST_LIMIT:
        raise validation_error(f"limit must be between 1 and {LIST_LIMIT}, got {limit}.")
    after = _query_int(request, "after", 0)
    if request.query.get("archived") == "true":
        return json_response({"results": []})
    names = sim.store.read_names(kind, _query_properties(request))
    records, next_after = sim.store.page(kind, after, limit)
    body: dict[str, Any] = {"results": [r.to_json(names) for r in records]}
    if next_after is not None:
        body["paging"] = {"next": {"after": str(next_after),
                                   "link": f"{request.path}?after={next_after}&limit={limit}"}}
    return json_response(body)


async def create_object(request: web.Request) -> web.Response:
    sim = _sim(request)
    kind = _objects_type(request)
    body = await read_json(request)
    record = sim.store.create_one(kind, body, _api_source(request))
    names = list((body or {}).get("properties") or {})
    return json_response(record.to_json([*names, "createdate", "hs_lastmodifieddate", "hs_object_id"]), 201)


async def get_object(request: web.Request) -> web.Response:
    sim = _sim(request)
    kind = _objects_type(request)
    record = sim.store.get_one(kind, request.match_info["object_id"], request.query.get("idProperty"))
    return json_response(record.to_json(sim.store.read_names(kind, _query_properties(request))))


async def update_object(request: web.Request) -> web.Response:
    sim = _sim(request)
    kind = _objects_type(request)
    body = await read_json(request)
    record = sim.store.update_one(kind, request.match_info["object_id"], request.query.get("idProperty"), body,
                                  _api_source(request))
    names = list((body or {}).get("properties") or {})
    return json_response(record.to_json([*names, "createdate", "hs_lastmodifieddate", "hs_object_id"]))


async def archive_object(request: web.Request) -> web.Response:
    sim = _sim(request)
    kind = _objects_type(request)
    sim.store.archive_one(kind, request.match_info["object_id"], _api_source(request))
    return web.Response(status=204)


async def batch_objects(request: web.Request) -> web.Response:
    sim = _sim(request)
    kind = _objects_type(request)
    op = request.match_info["op"]
    body = await read_json(request)
    store = sim.store
    if op == "upsert":
        return _batch_response(store.batch_upsert(kind, body, _api_source(request)), 200)
    if op == "create":
        return _batch_response(store.batch_create(kind, body, _api_source(request)), 201)
    if op == "update":
        return _batch_response(store.batch_update(kind, body, _api_source(request)), 200)
    if op == "read":
        return _batch_response(store.batch_read(kind, body), 200)
    if op == "archive":
        store.batch_archive(kind, body, _api_source(request))
        return web.Response(status=204)
    raise not_found(f"Unable to route POST url: {request.path}")


async def search_objects(request: web.Request) -> web.Response:
    sim = _sim(request)
    return json_response(search(sim.store, _objects_type(request), await read_json(request)))


# --- properties ----------------------------------------------------------------------------

async def list_properties(request: web.Request) -> web.Response:
    sim = _sim(request)
    kind = _type(request)
    return json_response({"results": [p.to_json() for p in sim.store.properties[kind].values()]})


async def create_property(request: web.Request) -> web.Response:
    sim = _sim(request)
    prop = sim.store.create_property(_type(request), await read_json(request))
    return json_response(prop.to_json(), 201)


async def batch_properties(request: web.Request) -> web.Response:
    sim = _sim(request)
    kind = _type(request)
    body = await read_json(request)
    inputs = sim.store.parse_inputs(body, limit=100)
    at = now_iso()
    if request.match_info["op"] == "create":
        results, errors = [], []
        for item in inputs:
            try:
                results.append(sim.store.create_property(kind, item).to_json())
            except ApiError as exc:
                errors.append({"status": "error", "category": exc.category, "message": exc.message,
                               "context": {"name": [str(item.get("name"))]}})
        return _batch_response(BatchAnswer(results, errors), 201)
    if request.match_info["op"] == "read":
        found = [sim.store.properties[kind][str(i.get("name"))].to_json() for i in inputs
                 if str(i.get("name")) in sim.store.properties[kind]]
        return json_response({"status": "COMPLETE", "results": found, "startedAt": at, "completedAt": at})
    raise not_found(f"Unable to route POST url: {request.path}")


async def get_property(request: web.Request) -> web.Response:
    sim = _sim(request)
    return json_response(sim.store.get_property(_type(request), request.match_info["name"]).to_json())


async def update_property(request: web.Request) -> web.Response:
    sim = _sim(request)
    prop = sim.store.update_property(_type(request), request.match_info["name"], await read_json(request))
    return json_response(prop.to_json())


async def archive_property(request: web.Request) -> web.Response:
    sim = _sim(request)
    sim.store.archive_property(_type(request), request.match_info["name"])
    return web.Response(status=204)


async def list_groups(request: web.Request) -> web.Response:
    sim = _sim(request)
    return json_response({"results": list(sim.store.groups[_type(request)].values())})


async def create_group(request: web.Request) -> web.Response:
    sim = _sim(request)
    return json_response(sim.store.create_group(_type(request), await read_json(request)), 201)


# --- associations v4 ----------------------------------------------------------------------

def _record_id(sim: HubSpotSimulator, kind: ObjectType, raw: Any) -> int:
    try:
        record_id = int(str(raw))
    except ValueError:
        raise validation_error(f"{raw!r} is not a valid {kind.value} id.") from None
    if record_id not in sim.store.records[kind]:
        raise not_found(f"No {kind.value} with id {record_id} exists.")
    return record_id


def _pair_result(from_kind: ObjectType, from_id: int, to_kind: ObjectType, to_id: int,
                 type_ids: list[int]) -> dict[str, Any]:
    return {"fromObjectTypeId": OBJECTS[from_kind].type_id, "fromObjectId": from_id,
            "toObjectTypeId": OBJECTS[to_kind].type_id, "toObjectId": to_id,
            "labels": [], "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": t} for t in type_ids]}


async def put_default_association(request: web.Request) -> web.Response:
    sim = _sim(request)
    from_kind, to_kind = _type(request, "from_type"), _type(request, "to_type")
    from_id = _record_id(sim, from_kind, request.match_info["from_id"])
    to_id = _record_id(sim, to_kind, request.match_info["to_id"])
    type_id = sim.store.associations.default_type_id(from_kind, to_kind)
    sim.store.associations.add(from_kind, from_id, to_kind, to_id, type_id)
    at = now_iso()
    result = _pair_result(from_kind, from_id, to_kind, to_id, [type_id])
    return json_response({"status": "COMPLETE", "results": [result], "startedAt": at, "completedAt": at})


async def put_labelled_association(request: web.Request) -> web.Response:
    sim = _sim(request)
    from_kind, to_kind = _type(request, "from_type"), _type(request, "to_type")
    from_id = _record_id(sim, from_kind, request.match_info["from_id"])
    to_id = _record_id(sim, to_kind, request.match_info["to_id"])
    types = _association_types(sim, from_kind, to_kind, await read_json(request))
    for type_id in types:
        sim.store.associations.add(from_kind, from_id, to_kind, to_id, type_id)
    return json_response(_pair_result(from_kind, from_id, to_kind, to_id, types), 201)


def _association_types(sim: HubSpotSimulator, from_kind: ObjectType, to_kind: ObjectType, raw: Any) -> list[int]:
    if not isinstance(raw, list) or not raw:
        raise validation_error("'types' must be a non-empty list of {associationCategory, associationTypeId}.")
    type_ids: list[int] = []
    for item in raw:
        if not isinstance(item, dict):
            raise validation_error("each association type must be an object")
        type_id = item.get("associationTypeId")
        if not isinstance(type_id, int) or isinstance(type_id, bool):
            raise validation_error("'associationTypeId' must be an integer.")
        if item.get("associationCategory") not in ("HUBSPOT_DEFINED", "USER_DEFINED", "INTEGRATOR_DEFINED"):
            raise validation_error("'associationCategory' must be HUBSPOT_DEFINED, USER_DEFINED or INTEGRATOR_DEFINED.")
        if not sim.store.associations.valid_type_id(from_kind, to_kind, type_id):
            raise validation_error(
                f"associationTypeId {type_id} is not valid for {from_kind.value} → {to_kind.value}."
            )
        type_ids.append(type_id)
    return type_ids


async def read_associations(request: web.Request) -> web.Response:
    sim = _sim(request)
    from_kind, to_kind = _type(request, "from_type"), _type(request, "to_type")
    from_id = _record_id(sim, from_kind, request.match_info["from_id"])
    limit = _query_int(request, "limit", 500)
    after = _query_int(request, "after", 0)
    results = sim.store.associations.to_json(from_kind, from_id, to_kind)
    page = results[after:after + limit]
    body: dict[str, Any] = {"results": page}
    if after + limit < len(results):
        body["paging"] = {"next": {"after": str(after + limit)}}
    return json_response(body)


async def delete_association(request: web.Request) -> web.Response:
    sim = _sim(request)
    from_kind, to_kind = _type(request, "from_type"), _type(request, "to_type")
    try:
        from_id, to_id = int(request.match_info["from_id"]), int(request.match_info["to_id"])
    except ValueError:
        raise validation_error("association ids must be numeric") from None
    sim.store.associations.remove(from_kind, from_id, to_kind, to_id)
    return web.Response(status=204)


async def batch_associations(request: web.Request) -> web.Response:
    return await _batch_associations(request, request.match_info["op"])


async def batch_default_associations(request: web.Request) -> web.Response:
    return await _batch_associations(request, "associate_default")


async def _batch_associations(request: web.Request, op: str) -> web.Response:
    sim = _sim(request)
    from_kind, to_kind = _type(request, "from_type"), _type(request, "to_type")
    inputs = sim.store.parse_inputs(await read_json(request), limit=ASSOCIATION_BATCH_LIMIT)
    records = sim.store.records
    assoc = sim.store.associations
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    if op == "read":
        for item in inputs:
            raw = item.get("id")
            try:
                from_id = int(str(raw))
            except ValueError:
                from_id = -1
            if from_id not in records[from_kind]:
                errors.append({"status": "error", "category": "OBJECT_NOT_FOUND",
                               "message": f"No {from_kind.value} with id {raw}", "context": {"fromObjectId": [str(raw)]}})
                continue
            results.append({"from": {"id": str(from_id)}, "to": assoc.to_json(from_kind, from_id, to_kind)})
        return _batch_response(BatchAnswer(results, errors), 200)
    parsed: list[tuple[Any, Any, list[int] | None]] = []
    for item in inputs:
        from_ref, to_ref = item.get("from"), item.get("to")
        if not isinstance(from_ref, dict) or not isinstance(to_ref, dict):
            raise validation_error("each input needs 'from': {id} and 'to': {id}.")
        types: list[int] | None = None
        if op == "create":
            types = _association_types(sim, from_kind, to_kind, item.get("types"))
        parsed.append((from_ref.get("id"), to_ref.get("id"), types))
    for raw_from, raw_to, types in parsed:
        try:
            from_id, to_id = int(str(raw_from)), int(str(raw_to))
        except ValueError:
            from_id, to_id = -1, -1
        if from_id not in records[from_kind] or to_id not in records[to_kind]:
            errors.append({"status": "error", "category": "VALIDATION_ERROR",
                           "message": f"{from_kind.value} {raw_from} or {to_kind.value} {raw_to} does not exist.",
                           "context": {"fromObjectId": [str(raw_from)], "toObjectId": [str(raw_to)]}})
            continue
        if op == "archive":
            assoc.remove(from_kind, from_id, to_kind, to_id)
            continue
        type_ids = types if types is not None else [assoc.default_type_id(from_kind, to_kind)]
        for type_id in type_ids:
            assoc.add(from_kind, from_id, to_kind, to_id, type_id)
        results.append(_pair_result(from_kind, from_id, to_kind, to_id, type_ids))
    if op == "archive":
        return web.Response(status=204)
    return _batch_response(BatchAnswer(results, errors), 201 if op == "create" else 200)


# --- automation v4 -------------------------------------------------------------------------

def _app_id(request: web.Request) -> int:
    try:
        return int(request.match_info["app_id"])
    except ValueError:
        raise validation_error("appId must be numeric") from None


async def complete_callback(request: web.Request) -> web.Response:
    sim = _sim(request)
    sim.actions.complete(request.match_info["callback_id"], await read_json(request))
    return web.Response(status=204)


async def complete_callbacks(request: web.Request) -> web.Response:
    sim = _sim(request)
    sim.actions.complete_batch(await read_json(request))
    return web.Response(status=204)


async def action_definitions(request: web.Request) -> web.Response:
    sim = _sim(request)
    app_id = _app_id(request)
    if request.method == "GET":
        return json_response(sim.actions.list_definitions(app_id))
    return json_response(sim.actions.create_definition(app_id, await read_json(request)), 201)


async def action_definition(request: web.Request) -> web.Response:
    sim = _sim(request)
    app_id, definition_id = _app_id(request), request.match_info["definition_id"]
    if request.method == "GET":
        return json_response(sim.actions.get_definition(app_id, definition_id))
    if request.method == "DELETE":
        sim.actions.delete_definition(app_id, definition_id)
        return web.Response(status=204)
    return json_response(sim.actions.update_definition(app_id, definition_id, await read_json(request)))


# --- /_sim admin -----------------------------------------------------------------------------

async def sim_state(request: web.Request) -> web.Response:
    return json_response(_sim(request).state_json(full=request.query.get("full") in ("1", "true")))


async def sim_requests(request: web.Request) -> web.Response:
    sim = _sim(request)
    if request.method == "DELETE":
        sim.request_counts.clear()
        return web.Response(status=204)
    return json_response(sim.requests_json())


async def sim_reset(request: web.Request) -> web.Response:
    _sim(request).reset()
    return web.Response(status=204)


async def sim_wipe(request: web.Request) -> web.Response:
    _sim(request).wipe()
    return web.Response(status=204)


async def sim_faults(request: web.Request) -> web.Response:
    sim = _sim(request)
    if request.method == "POST":
        return json_response(sim.set_faults(await read_json(request)))
    if request.method == "DELETE":
        sim.clear_faults()
        return web.Response(status=204)
    return json_response(sim.faults.to_json())


async def sim_rate_limit(request: web.Request) -> web.Response:
    sim = _sim(request)
    if request.method == "GET":
        return json_response(sim.rate_limit_json())
    body = await read_json(request)
    if not isinstance(body, dict):
        raise validation_error("rate-limit needs {max, interval_ms, search_per_s, daily, time_scale}")
    try:
        return json_response(sim.set_rate_limit(
            max_requests=body.get("max"), interval_ms=body.get("interval_ms"), search_per_s=body.get("search_per_s"),
            daily=body.get("daily"), time_scale=body.get("time_scale")))
    except (TypeError, ValueError) as exc:
        raise validation_error(f"malformed rate limit: {exc}") from None


async def sim_config(request: web.Request) -> web.Response:
    sim = _sim(request)
    if request.method == "POST":
        sim.configure_app(await read_json(request))
    c = sim.config
    return json_response({"portal_id": c.portal_id, "app_id": c.app_id, "client_id": c.client_id,
                          "strict_value_types": c.strict_value_types,
                          "shuffle_batch_results": c.shuffle_batch_results,
                          "access_token_lifetime_s": c.access_token_lifetime_s,
                          "rate_limit": sim.rate_limit_json(), "webhooks": sim.webhooks.to_json()})


async def sim_webhooks(request: web.Request) -> web.Response:
    sim = _sim(request)
    if request.method == "POST":
        return json_response(sim.configure_webhooks(await read_json(request)))
    return json_response(sim.webhooks.to_json())


async def sim_webhook_deliveries(request: web.Request) -> web.Response:
    sim = _sim(request)
    deliveries = [d.__dict__ for d in sim.webhooks.deliveries]
    return json_response({"deliveries": deliveries[-1000:], "events": list(sim.webhooks.delivered)[-1000:],
                          "stats": sim.webhooks.stats})


async def sim_ui_edit(request: web.Request) -> web.Response:
    sim = _sim(request)
    record = sim.ui_edit(request.match_info["object_type"], request.match_info["object_id"], await read_json(request))
    return json_response(record.to_json(None, include_all=True))


async def sim_ui_create(request: web.Request) -> web.Response:
    sim = _sim(request)
    record = sim.ui_create(request.match_info["object_type"], await read_json(request))
    return json_response(record.to_json(None, include_all=True), 201)


async def sim_ui_merge(request: web.Request) -> web.Response:
    sim = _sim(request)
    record = sim.ui_merge(request.match_info["object_type"], await read_json(request))
    return json_response(record.to_json(None, include_all=True))


async def sim_ui_delete(request: web.Request) -> web.Response:
    sim = _sim(request)
    sim.ui_delete(request.match_info["object_type"], request.match_info["object_id"], await read_json(request))
    return web.Response(status=204)


async def sim_invoke_action(request: web.Request) -> web.Response:
    sim = _sim(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise validation_error("invoke needs an object")
    invocation = await sim.actions.invoke(sim.store, body)
    return json_response(invocation.to_json())


async def sim_actions(request: web.Request) -> web.Response:
    sim = _sim(request)
    return json_response({"invocations": [i.to_json() for i in sim.actions.invocations],
                          "completions": sim.actions.completions,
                          "definitions": sim.actions.definitions})


async def sim_expire_tokens(request: web.Request) -> web.Response:
    _sim(request).tokens.expire_all()
    return web.Response(status=204)


# --- wiring -----------------------------------------------------------------------------------

def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/oauth/v1/token", oauth_token)
    for prefix in ("/crm/v3/objects/{object_type}", "/crm/objects/v3/{object_type}"):
        r.add_get(prefix, list_objects)
        r.add_post(prefix, create_object)
        r.add_post(prefix + "/batch/{op}", batch_objects)
        r.add_post(prefix + "/search", search_objects)
        r.add_get(prefix + "/{object_id}", get_object)
        r.add_patch(prefix + "/{object_id}", update_object)
        r.add_delete(prefix + "/{object_id}", archive_object)
    props = "/crm/v3/properties/{object_type}"
    r.add_get(props, list_properties)
    r.add_post(props, create_property)
    r.add_get(props + "/groups", list_groups)
    r.add_post(props + "/groups", create_group)
    r.add_post(props + "/batch/{op}", batch_properties)
    r.add_get(props + "/{name}", get_property)
    r.add_patch(props + "/{name}", update_property)
    r.add_delete(props + "/{name}", archive_property)
    v4 = "/crm/v4/objects/{from_type}/{from_id}/associations"
    r.add_put(v4 + "/default/{to_type}/{to_id}", put_default_association)
    r.add_put(v4 + "/{to_type}/{to_id}", put_labelled_association)
    r.add_delete(v4 + "/{to_type}/{to_id}", delete_association)
    r.add_get(v4 + "/{to_type}", read_associations)
    r.add_post("/crm/v4/associations/{from_type}/{to_type}/batch/{op:create|read|archive}", batch_associations)
    r.add_post("/crm/v4/associations/{from_type}/{to_type}/batch/associate/default", batch_default_associations)
    r.add_post("/automation/v4/actions/callbacks/complete", complete_callbacks)
    r.add_post("/automation/v4/actions/callbacks/{callback_id}/complete", complete_callback)
    r.add_route("GET", "/automation/v4/actions/{app_id}", action_definitions)
    r.add_route("POST", "/automation/v4/actions/{app_id}", action_definitions)
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        r.add_route(method, "/automation/v4/actions/{app_id}/{definition_id}", action_definition)
    r.add_get("/_sim/state", sim_state)
    r.add_get("/_sim/requests", sim_requests)
    r.add_delete("/_sim/requests", sim_requests)
    r.add_post("/_sim/reset", sim_reset)
    r.add_post("/_sim/wipe", sim_wipe)
    for method in ("GET", "POST", "DELETE"):
        r.add_route(method, "/_sim/faults", sim_faults)
    r.add_get("/_sim/rate-limit", sim_rate_limit)
    r.add_post("/_sim/rate-limit", sim_rate_limit)
    r.add_get("/_sim/config", sim_config)
    r.add_post("/_sim/config", sim_config)
    r.add_get("/_sim/webhooks", sim_webhooks)
    r.add_post("/_sim/webhooks", sim_webhooks)
    r.add_get("/_sim/webhooks/deliveries", sim_webhook_deliveries)
    r.add_post("/_sim/ui-edit/{object_type}/{object_id}", sim_ui_edit)
    r.add_post("/_sim/ui-create/{object_type}", sim_ui_create)
    r.add_post("/_sim/ui-delete/{object_type}/{object_id}", sim_ui_delete)
    r.add_post("/_sim/ui-merge/{object_type}", sim_ui_merge)
    r.add_post("/_sim/workflow-actions/invoke", sim_invoke_action)
    r.add_get("/_sim/workflow-actions", sim_actions)
    r.add_post("/_sim/oauth/expire", sim_expire_tokens)


def create_app(simulator: HubSpotSimulator | None = None) -> web.Application:
    """The aiohttp app; the simulator's webhook dispatcher starts and stops with it."""
    sim = simulator or HubSpotSimulator()
    app = web.Application(middlewares=[api_middleware], client_max_size=16 * 1024**2)
    app[SIM] = sim

    async def lifecycle(_: web.Application) -> Any:
        await sim.start()
        yield
        await sim.stop()

    app.cleanup_ctx.append(lifecycle)
    add_routes(app)
    return app
