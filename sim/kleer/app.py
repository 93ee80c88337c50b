"""The Kleer simulator's HTTP app: the Kleer API under ``/v1`` and admin endpoints under ``/_sim``.

API (``/v1/company/{company-id}/...``, see ``libs.kleer.resources``)
    ``client``, ``product``, ``client/invoice``, ``client/agreement``,
    ``client-project``: ``GET`` lists, ``PUT`` creates
    (``{"created": {"id": N}}``); ``GET``/``POST``/``DELETE`` on ``/{id}``
    read, update (``{"saved": {"id": N}}``, agreements also the new
    ``revision-nr``) and delete (``{"deleted": {"id": N}}``; agreements are
    only marked ``deleted`` as a new revision; certified invoices cannot be
    changed or deleted, and a client with records cannot be deleted).

    Every request needs ``X-Token`` (else 401). An unknown company is a 404.
    Failures answer ``{"error": {"message": "..."}}`` with a 4xx: malformed
    JSON or XML, unknown fields, wrong types and missing required fields are
    400s, never a 500. Answers are JSON when the request's ``Accept`` names
    ``application/json``, XML otherwise (``sim.kleer.xml``). Bodies are JSON
    (``Content-Type: application/json``) or XML (``application/xml``).

Paging
    Lists take ``offset`` (default 0) and ``limit`` (default 100, at most
    1000; larger values are lowered to 1000) and answer
    ``{"<resource>": [...], "offset": O, "limit": <rows returned>, "size": <total>}``
    in ascending id order, every record complete (invoices with ``rows``,
    agreements with ``first-invoice-rows`` and ``recurring-rows``). Invoice
    lists also filter by ``from-date`` / ``to-date`` (``invoice-date``,
    inclusive, ``YYYY-MM-DD``) and ``query`` (case-insensitive text in the
    invoice number, references, e-mail or client name).

Admin (``/_sim``, JSON, no token)
    ``GET health``; ``GET|POST|DELETE faults`` (``sim.kleer.faults``);
    ``GET|DELETE requests`` (counts per endpoint and status, ``?recent=N``
    latest requests); ``GET state`` (counts; ``?records=true`` dumps records,
    narrowed by ``company-id`` and ``resource``); ``POST reset`` (empty the
    book, faults and log; optional ``{"clients": N, "seed": S}`` reseeds);
    ``POST seed`` ``{"clients": N, "seed": S, "company-id": C}``;
    ``POST mutate`` ``{"share": 0.05, "seed": N, "company-id": C}`` (answers
    what changed; without a seed each call uses the next one, 1, 2, 3, ...); ``POST companies`` ``{"company-id": C, "name": "..."}``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson
from aiohttp import web

from libs.kleer.resources import (
    DEFAULT_PAGE_SIZE,
    INVOICE,
    INVOICE_FROM_DATE_PARAM,
    INVOICE_QUERY_PARAM,
    INVOICE_TO_DATE_PARAM,
    LIMIT_PARAM,
    MAX_PAGE_SIZE,
    OFFSET_PARAM,
    RESOURCES,
    Resource,
)
from libs.observability.logging import get_logger
from sim.kleer import rules, xml
from sim.kleer.faults import BadFaultPlan, FaultPlan, RequestLog
from sim.kleer.mutation import mutate
from sim.kleer.schema import ValidationFailed, validate_body
from sim.kleer.seeding import seed
from sim.kleer.store import CompanyBook, KleerStore, Record

API_PREFIX = "/v1"
ADMIN_PREFIX = "/_sim"
MAX_BODY_BYTES = 10 * 1024 * 1024
_JSON = "application/json"

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class SimState:
    """Everything the app serves from; tests reach it through ``KleerSimServer``."""

    store: KleerStore
    faults: FaultPlan = field(default_factory=FaultPlan)
    requests: RequestLog = field(default_factory=RequestLog)
    mutations: int = 0  # POST /_sim/mutate calls; the default seed of the next one, so each differs
    retry_after: float = 1.0  # the Retry-After of a fresh (or cleared) fault plan

    def __post_init__(self) -> None:
        self.faults.retry_after = self.retry_after

    def clear_faults(self) -> FaultPlan:
        self.faults = FaultPlan(retry_after=self.retry_after)
        return self.faults


STATE = web.AppKey("kleer_sim_state", SimState)


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def create_app(state: SimState) -> web.Application:
    """The simulator app serving ``state``."""
    app = web.Application(
        middlewares=[_observe, _shape_errors, _inject_faults, _authenticate],
        client_max_size=MAX_BODY_BYTES,
    )
    app[STATE] = state
    company = API_PREFIX + "/company/{company_id}"
    for resource in RESOURCES:
        collection = f"{company}/{resource.path}"
        item = collection + r"/{id:\d+}"
        app.router.add_get(collection, _list_handler(resource), allow_head=False)
        app.router.add_put(collection, _create_handler(resource))
        app.router.add_get(item, _get_handler(resource), allow_head=False)
        app.router.add_post(item, _update_handler(resource))
        app.router.add_delete(item, _delete_handler(resource))
    admin = ADMIN_PREFIX
    app.router.add_get(f"{admin}/health", _health)
    app.router.add_get(f"{admin}/faults", _get_faults)
    app.router.add_post(f"{admin}/faults", _set_faults)
    app.router.add_delete(f"{admin}/faults", _clear_faults)
    app.router.add_get(f"{admin}/requests", _get_requests)
    app.router.add_delete(f"{admin}/requests", _clear_requests)
    app.router.add_get(f"{admin}/state", _get_state)
    app.router.add_post(f"{admin}/reset", _reset)
    app.router.add_post(f"{admin}/seed", _seed)
    app.router.add_post(f"{admin}/mutate", _mutate)
    app.router.add_post(f"{admin}/companies", _add_company)
    return app


# --- middlewares ----------------------------------------------------------------------------------


def _is_api(request: web.Request) -> bool:
    return request.path.startswith(API_PREFIX + "/")


def _endpoint(request: web.Request) -> str:
    resource = request.match_info.route.resource
    if resource is None:
        return "(no route)"
    return resource.canonical.replace("{company_id}", "{company-id}")


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log every API request with its route template and final status (0: dropped)."""
    if not _is_api(request):
        return await handler(request)
    started = time.perf_counter()
    status = 500
    request.app[STATE].requests.begin()
    try:
        response = await handler(request)
        status = 0 if isinstance(response, _Dropped) else response.status
        return response
    finally:
        request.app[STATE].requests.record(
            request.method, _endpoint(request), request.path, status, time.perf_counter() - started
        )


@web.middleware
async def _shape_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure answers Kleer's ``{"error": {"message": ...}}`` (or its XML form) with its status."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(request, exc.status, exc.message, exc.headers)
    except ValidationFailed as exc:
        return _error(request, 400, exc.message)
    except rules.RuleBroken as exc:
        return _error(request, exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _error(request, exc.status, _http_message(request, exc), headers)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("kleer_sim_unexpected_error", method=request.method, path=request.path)
        return _error(request, 500, "internal error in the Kleer simulator (a bug: see its log)")


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such resource: {request.path}"
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return f"the body is larger than {MAX_BODY_BYTES} bytes"
    return exc.reason


@web.middleware
async def _inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _is_api(request):
        return await handler(request)
    faults = request.app[STATE].faults
    verdict = faults.decide(request.path[len(API_PREFIX) :])
    if verdict.delay:
        await asyncio.sleep(verdict.delay)
    if verdict.drop:
        return _drop(request)
    if verdict.status is not None:
        headers = {"Retry-After": f"{faults.retry_after:g}"} if verdict.status in (429, 503) else None
        message = "too many requests: slow down" if verdict.status == 429 else "injected failure (simulator)"
        raise ApiError(verdict.status, message, headers)
    response = await handler(request)
    return _drop(request) if verdict.drop_after else response


class _Dropped(web.Response):
    """Stands for the answer that was never sent."""


def _drop(request: web.Request) -> web.Response:
    """Close the connection without an answer (the client sees a disconnect)."""
    if request.transport is not None:
        request.transport.abort()
    return _Dropped(status=499)


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _is_api(request) and request.headers.get("X-Token") not in request.app[STATE].store.tokens:
        raise ApiError(401, "missing or invalid X-Token: authenticate with a valid API token")
    return await handler(request)


# --- answers -------------------------------------------------------------------------------------


def _wants_json(request: web.Request) -> bool:
    """Kleer answers XML unless asked for JSON; the admin endpoints always answer JSON."""
    return not _is_api(request) or _JSON in request.headers.get("Accept", "").lower()


def _answer(request: web.Request, tag: str, body: Any, status: int = 200) -> web.Response:
    """``body`` under ``tag``: JSON ``{tag: body}`` for envelopes, XML ``<tag>...</tag>``."""
    if _wants_json(request):
        return web.Response(body=orjson.dumps({tag: body}), status=status, content_type=_JSON)
    return web.Response(text=xml.document(tag, body), status=status, content_type="application/xml")


def _record(request: web.Request, resource: Resource, record: Record) -> web.Response:
    if _wants_json(request):
        return web.Response(body=orjson.dumps(record), content_type=_JSON)
    return web.Response(text=xml.document(resource.name, record), content_type="application/xml")


def _error(request: web.Request, status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    response = _answer(request, "error", {"message": message}, status)
    if headers:
        response.headers.update(headers)
    return response


# --- API handlers --------------------------------------------------------------------------------


def _book(request: web.Request) -> CompanyBook:
    raw = request.match_info["company_id"]
    book = request.app[STATE].store.companies.get(int(raw)) if raw.isdigit() and len(raw) < 19 else None
    if book is None:
        raise ApiError(404, f"company {raw} not found")
    return book


def _record_id(request: web.Request) -> int:
    return int(request.match_info["id"])


def _int_param(request: web.Request, name: str, default: int, minimum: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number, got {raw[:40]!r}") from None
    if value < minimum:
        raise ApiError(400, f"{name} must be at least {minimum}, got {value}")
    return value


def _date_param(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        if len(raw) != 10:
            raise ValueError
        return date.fromisoformat(raw).isoformat()
    except ValueError:
        raise ApiError(400, f"{name} must be a date written YYYY-MM-DD, got {raw[:40]!r}") from None


def _list_handler(resource: Resource) -> Handler:
    async def list_records(request: web.Request) -> web.StreamResponse:
        book = _book(request)
        offset = _int_param(request, OFFSET_PARAM, 0, 0)
        limit = min(_int_param(request, LIMIT_PARAM, DEFAULT_PAGE_SIZE, 1), MAX_PAGE_SIZE)
        table = book.tables[resource.name]
        ids = _invoice_selection(request, book) if resource is INVOICE else table.ids()
        items = table.page(ids, offset, limit)
        if _wants_json(request):
            body = {resource.list_key: items, "offset": offset, "limit": len(items), "size": len(ids)}
            return web.Response(body=orjson.dumps(body), content_type=_JSON)
        text = xml.list_document(resource.xml_list_tag, resource.name, items, offset, len(ids))
        return web.Response(text=text, content_type="application/xml")

    return list_records


def _invoice_selection(request: web.Request, book: CompanyBook) -> list[int]:
    first = _date_param(request, INVOICE_FROM_DATE_PARAM)
    last = _date_param(request, INVOICE_TO_DATE_PARAM)
    query = (request.query.get(INVOICE_QUERY_PARAM) or "").strip().lower() or None
    table = book.invoices
    if first is None and last is None and query is None:
        return table.ids()
    clients = book.clients

    def matches(invoice: Record) -> bool:
        day = invoice["invoice-date"]
        if (first is not None and day < first) or (last is not None and day > last):
            return False
        if query is None:
            return True
        client = clients.get(invoice["client-ref"]["id"]) or {}
        parts = (invoice["invoice-nr"], invoice["your-reference"], invoice["invoice-email"],
                 invoice["agreement-nr"], client.get("name"))
        text = " ".join(str(part) for part in parts if part is not None)
        return query in text.lower()

    return table.select((first, last, query), matches)


async def _read_body(request: web.Request, resource: Resource) -> Any:
    raw = await request.read()
    content_type = request.content_type
    if content_type == _JSON or content_type.endswith("+json"):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValidationFailed(f"the body is not valid JSON: {exc}") from None
    if content_type in ("application/xml", "text/xml"):
        return xml.parse_body(resource.name, raw)
    raise ApiError(
        415,
        f"unsupported Content-Type {content_type!r}: send the {resource.name} as JSON "
        "(Content-Type: application/json) or XML (application/xml)",
    )


def _get_handler(resource: Resource) -> Handler:
    async def get_record(request: web.Request) -> web.StreamResponse:
        record = _book(request).tables[resource.name].get(_record_id(request))
        if record is None:
            raise ApiError(404, f"{resource.name} {_record_id(request)} not found")
        return _record(request, resource, record)

    return get_record


def _create_handler(resource: Resource) -> Handler:
    async def create_record(request: web.Request) -> web.StreamResponse:
        book = _book(request)
        body = validate_body(resource.name, await _read_body(request, resource), partial=False)
        record = rules.create(request.app[STATE].store, book, resource.name, body)
        return _answer(request, "created", {"id": record["id"]})

    return create_record


def _update_handler(resource: Resource) -> Handler:
    async def update_record(request: web.Request) -> web.StreamResponse:
        book = _book(request)
        record_id = _record_id(request)
        payload = await _read_body(request, resource)
        if isinstance(payload, dict) and payload.get("id") not in (None, record_id):
            raise ValidationFailed(f"the body's id {payload.get('id')!r} does not match the URL's id {record_id}")
        body = validate_body(resource.name, payload, partial=True)
        record = rules.update(request.app[STATE].store, book, resource.name, record_id, body)
        return _answer(request, "saved", rules.saved_answer(resource.name, record))

    return update_record


def _delete_handler(resource: Resource) -> Handler:
    async def delete_record(request: web.Request) -> web.StreamResponse:
        record = rules.delete(_book(request), resource.name, _record_id(request))
        return _answer(request, "deleted", {"id": record["id"]})

    return delete_record


# --- admin handlers -------------------------------------------------------------------------------


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=_JSON)


async def _admin_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _admin_int(body: dict[str, Any], name: str, default: int | None, minimum: int = 0) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ApiError(400, f"{name} must be a whole number of at least {minimum}")
    return value


def _admin_company(request: web.Request, body: dict[str, Any]) -> int | None:
    company_id = _admin_int(body, "company-id", None, 1)
    if company_id is not None and company_id not in request.app[STATE].store.companies:
        raise ApiError(404, f"company {company_id} not found (add it with POST {ADMIN_PREFIX}/companies)")
    return company_id


async def _health(request: web.Request) -> web.Response:
    return _json({"ok": True})


async def _get_faults(request: web.Request) -> web.Response:
    return _json(request.app[STATE].faults.describe())


async def _set_faults(request: web.Request) -> web.Response:
    faults = request.app[STATE].faults
    try:
        faults.update(await _admin_body(request))
    except BadFaultPlan as exc:
        raise ApiError(400, str(exc)) from None
    return _json(faults.describe())


async def _clear_faults(request: web.Request) -> web.Response:
    return _json(request.app[STATE].clear_faults().describe())


async def _get_requests(request: web.Request) -> web.Response:
    recent = _int_param(request, "recent", 50, 0)
    return _json(request.app[STATE].requests.describe(recent))


async def _clear_requests(request: web.Request) -> web.Response:
    request.app[STATE].requests.clear()
    return _json({"cleared": True})


async def _get_state(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    if request.query.get("records", "").lower() not in ("1", "true", "yes"):
        return _json(store.summary())
    company = request.query.get("company-id")
    if company is not None and (not company.isdigit() or int(company) not in store.companies):
        raise ApiError(404, f"company {company} not found")
    resource = request.query.get("resource")
    if resource is not None and resource not in {r.name for r in RESOURCES}:
        raise ApiError(400, f"resource must be one of {', '.join(r.name for r in RESOURCES)}")
    return _json(store.dump(int(company) if company else None, resource))


async def _reset(request: web.Request) -> web.Response:
    body = await _admin_body(request)
    state = request.app[STATE]
    clients = _admin_int(body, "clients", 0)
    seed_value = _admin_int(body, "seed", 1)
    state.store.reset()
    state.clear_faults()
    state.requests.clear()
    answer: dict[str, Any] = {"reset": True}
    if clients:
        answer["seeded"] = seed(state.store, n_clients=clients, seed=seed_value or 1).as_dict()
    return _json(answer)


async def _seed(request: web.Request) -> web.Response:
    body = await _admin_body(request)
    clients = _admin_int(body, "clients", 100)
    seed_value = _admin_int(body, "seed", 1)
    company_id = _admin_int(body, "company-id", None, 1)
    assert clients is not None and seed_value is not None
    summary = seed(request.app[STATE].store, n_clients=clients, seed=seed_value, company_id=company_id)
    return _json(summary.as_dict())


async def _mutate(request: web.Request) -> web.Response:
    body = await _admin_body(request)
    share = body.get("share", 0.05)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ApiError(400, "share must be a number between 0 and 1, e.g. 0.05")
    state = request.app[STATE]
    state.mutations += 1
    seed_value = _admin_int(body, "seed", state.mutations)
    assert seed_value is not None
    company_id = _admin_company(request, body)
    return _json(mutate(state.store, share=share, seed=seed_value, company_id=company_id))


async def _add_company(request: web.Request) -> web.Response:
    body = await _admin_body(request)
    company_id = _admin_int(body, "company-id", None, 1)
    if company_id is None:
        raise ApiError(400, "company-id is required")
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise ApiError(400, "name must be a string")
    book = request.app[STATE].store.add_company(company_id, name)
    return _json({"company-id": book.company_id, "name": book.name})
