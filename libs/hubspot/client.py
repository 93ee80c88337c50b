"""The async HubSpot API client: one aiohttp session, a shared rate budget, retries, typed errors.

Contract:

* Every request first takes a grant from the portal's ``RateBudget`` (search
  requests also from the search budget, about 5 per second) and feeds the
  answer's rate-limit headers back to it.
* Retries, with exponential backoff and full jitter, happen only for 429,
  502, 503, 504, 521, 523, 524, 423 and for connection errors or timeouts;
  any other 4xx raises its typed error at once (``libs.hubspot.errors``).
  A 429 of the ``DAILY`` policy is not retried.
* A 401 with OAuth credentials refreshes the access token once and retries;
  a second 401 raises ``HubSpotAuthError``. Tokens never reach logs or errors.
* Batch calls take any number of inputs, send them in chunks of 100 (a few
  chunks in parallel: ``concurrency`` per client) and return a ``BatchResult`` with one outcome per input:
  a 207 answer is split per input, and a chunk HubSpot refuses as a whole
  marks each of its inputs failed (``whole_chunk=True``). Retried chunks are
  safe for upserts, updates, reads and archives; prefer upserts over creates,
  because a create whose answer was lost may have happened.
* Metrics: ``HUBSPOT_REQUESTS``/``HUBSPOT_REQUEST_SECONDS`` by route template,
  ``HUBSPOT_RATE_REMAINING`` by portal, ``HUBSPOT_RATE_LIMITED`` by policy.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import orjson

from libs.config import Secret, Settings
from libs.hubspot.auth import OAuthCredentials, OAuthTokens, PrivateAppToken, TokenSource
from libs.hubspot.errors import (
    RETRYABLE_STATUSES,
    HubSpotAuthError,
    HubSpotConflict,
    HubSpotError,
    HubSpotNotFound,
    HubSpotRateLimited,
    HubSpotRequestError,
    HubSpotUnavailable,
    HubSpotValidationError,
    error_for_status,
)
from libs.hubspot.models import (
    Association,
    AssociationFailed,
    AssociationInput,
    AssociationResult,
    BatchResult,
    EnsureReport,
    HubSpotRecord,
    InputFailed,
    InputSucceeded,
    PropertyGroupSpec,
    PropertyInfo,
    PropertySpec,
    RecordInput,
)
from libs.hubspot.objects import (
    DEFAULT_PROPERTY_GROUPS,
    OBJECTS,
    ObjectType,
    api_name,
    association_type_id,
)
from libs.hubspot.rate_budget import NO_ANSWER, RateBudget, RateHeaders, SlidingWindowBudget
from libs.observability.logging import correlation_headers, get_logger
from libs.observability.metrics import (
    HUBSPOT_RATE_LIMITED,
    HUBSPOT_RATE_REMAINING,
    HUBSPOT_REQUEST_SECONDS,
    HUBSPOT_REQUESTS,
)

DEFAULT_BASE_URL = "https://api.hubapi.com"
BATCH_SIZE = 100
SEARCH_PAGE_SIZE = 200
SEARCH_RESULT_CAP = 10_000
DEFAULT_ASSOCIATION_CHUNK = 1_000
ASSOCIATION_CHUNK_MAX = 2_000
_WHOLE_CHUNK_ERRORS = (HubSpotValidationError, HubSpotNotFound, HubSpotConflict, HubSpotRequestError)
_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)

_log = get_logger("libs.hubspot.client")
T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]


def _objects_path(kind: ObjectType) -> tuple[str, str]:
    """The objects base path and its route template (for metrics)."""
    base = OBJECTS[kind].objects_base
    template = base if kind is ObjectType.PROJECTS else "/crm/v3/objects/{objectType}"
    return base, template


class HubSpotClient:
    """Async HubSpot client; use ``async with HubSpotClient(...) as hubspot:``.

    Give either ``token`` (private app) or ``oauth`` credentials. Without a
    ``budget`` the client keeps an in-process ``SlidingWindowBudget`` of 100
    requests per 10 s (safe for every private-app tier); pods sharing a portal
    should share a ``PostgresRateBudget``.
    """

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        token: Secret | None = None,
        oauth: OAuthCredentials | None = None,
        budget: RateBudget | None = None,
        search_budget: RateBudget | None = None,
        portal: str | int = "default",
        developer_api_key: Secret | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 5,
        retry_base_s: float = 0.5,
        retry_cap_s: float = 30.0,
        concurrency: int = 4,
        association_chunk_size: int = DEFAULT_ASSOCIATION_CHUNK,
    ) -> None:
        if token and oauth:
            raise ValueError("give either a private-app token or OAuth credentials, not both")
        if token:
            self._auth: TokenSource = PrivateAppToken(token)
        elif oauth:
            self._auth = OAuthTokens(oauth)
        else:
            raise ValueError("HubSpotClient needs a private-app token or OAuth credentials")
        if not 1 <= association_chunk_size <= ASSOCIATION_CHUNK_MAX:
            raise ValueError(f"association_chunk_size must be between 1 and {ASSOCIATION_CHUNK_MAX}")
        self.base_url = base_url.rstrip("/")
        self.budget: RateBudget = budget or SlidingWindowBudget(100, 10_000)
        self.search_budget: RateBudget = search_budget or SlidingWindowBudget(5, 1_000, safety_margin=1)
        self.portal = str(portal)
        self._developer_api_key = developer_api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_retries = max_retries
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self._concurrency = max(1, concurrency)
        self._slots = asyncio.Semaphore(self._concurrency)
        self.association_chunk_size = association_chunk_size
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> HubSpotClient:
        """A client configured from the environment (private-app token, or the OAuth trio)."""
        secret = settings.secret("HUBSPOT_ACCESS_TOKEN")
        token = secret if secret else None
        oauth = None
        if token is None:
            oauth = OAuthCredentials(
                client_id=settings.require("HUBSPOT_CLIENT_ID"),
                client_secret=settings.secret("HUBSPOT_CLIENT_SECRET"),
                refresh_token=settings.secret("HUBSPOT_REFRESH_TOKEN"),
            )
        kwargs.setdefault("portal", settings.get("HUBSPOT_PORTAL_ID") or settings.connection_id)
        return cls(base_url=settings.get("HUBSPOT_API_BASE") or DEFAULT_BASE_URL, token=token, oauth=oauth, **kwargs)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, trace_configs=[_SENT_TRACE])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        try:
            await self.budget.flush()  # a shared budget: report the last answers now
        except Exception as exc:  # they count until their grants' hold ends instead
            _log.warning("hubspot_budget_flush_failed", error=type(exc).__name__)

    async def __aenter__(self) -> HubSpotClient:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"HubSpotClient(base_url={self.base_url!r}, portal={self.portal!r})"

    # --- the request core -------------------------------------------------------------

    def _backoff_s(self, attempt: int) -> float:
        return random.uniform(0, min(self.retry_cap_s, self.retry_base_s * 2 ** (attempt - 1)))

    async def request(
        self,
        method: str,
        template: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        search: bool = False,
        budgeted: bool = True,
    ) -> Answer:
        """Send one request with budget, auth, retries and metrics; return a 2xx answer or raise.

        ``template`` is the route template used as the metrics label (no ids).
        """
        if self._session is None:
            raise RuntimeError("HubSpotClient is not started: use `async with HubSpotClient(...)`")
        session = self._session
        endpoint = f"{method} {template}"
        data = orjson.dumps(json_body) if json_body is not None else None
        attempt = 0
        refreshed = False
        while True:
            sending: _Sending | None = None
            if budgeted:
                await self._acquire(search)
                sending = _Sending(self._budgets(search))
            answered = False
            try:
                headers = {"Authorization": "Bearer " + await self._auth.token(session, self.base_url)}
                if data is not None:
                    headers["Content-Type"] = "application/json"
                correlation_headers(headers)
                started = time.perf_counter()
                async with session.request(method, self.base_url + path, data=data, params=params,
                                           headers=headers, trace_request_ctx=sending) as resp:
                    raw = await resp.read()
                    status = resp.status
                    answer_headers: Mapping[str, str] = resp.headers
                answered = True
            except _CONNECTION_ERRORS as exc:
                HUBSPOT_REQUESTS.labels(endpoint=endpoint, status="error").inc()
                attempt += 1
                if attempt > self.max_retries:
                    raise HubSpotUnavailable(
                        f"no answer after {attempt} attempts ({type(exc).__name__})", endpoint=endpoint,
                        attempts=attempt) from None
                delay = self._backoff_s(attempt)
                _log.warning("hubspot_retry", endpoint=endpoint, error=type(exc).__name__, attempt=attempt,
                             delay_s=round(delay, 3))
                await asyncio.sleep(delay)
                continue
            finally:
                if sending is not None:
                    sending.done(went=answered)  # no-op once the request went out
                if budgeted and not answered:
                    self._observe(search, {}, NO_ANSWER)
            HUBSPOT_REQUESTS.labels(endpoint=endpoint, status=str(status)).inc()
            HUBSPOT_REQUEST_SECONDS.labels(endpoint=endpoint).observe(time.perf_counter() - started)
            if budgeted:
                self._observe(search, answer_headers, status)
                rate = RateHeaders.parse(answer_headers)
                if rate.remaining is not None and not search:
                    HUBSPOT_RATE_REMAINING.labels(portal=self.portal).set(rate.remaining)
            body = _decode(raw)
            if 200 <= status < 300:
                return Answer(status, body, answer_headers)
            error_body = body if isinstance(body, dict) else {"message": _snippet(raw)}
            if status == 401 and self._auth.can_refresh and not refreshed:
                refreshed = True
                _log.info("hubspot_token_refresh", endpoint=endpoint)
                await self._auth.refresh(session, self.base_url)
                continue
            error = error_for_status(status, error_body, endpoint)
            if status == 429:
                policy = str(error_body.get("policyName") or "UNKNOWN")
                HUBSPOT_RATE_LIMITED.labels(policy=policy).inc()
                if policy == "DAILY":
                    raise error
            if status not in RETRYABLE_STATUSES:
                raise error
            attempt += 1
            if attempt > self.max_retries:
                if isinstance(error, HubSpotRateLimited):
                    error.retry_after = self.retry_cap_s
                    raise error
                raise HubSpotUnavailable(
                    f"still failing after {attempt} attempts: {error.message}", status=status,
                    category=error.category, correlation_id=error.correlation_id, endpoint=endpoint,
                    attempts=attempt)
            delay = self._backoff_s(attempt)
            _log.warning("hubspot_retry", endpoint=endpoint, status=status, category=error.category,
                         attempt=attempt, delay_s=round(delay, 3))
            await asyncio.sleep(delay)

    async def _acquire(self, search: bool) -> None:
        """A grant from the portal budget, and for searches also from the search budget."""
        await self.budget.acquire()
        if search:
            try:
                await self.search_budget.acquire()
            except BaseException:
                self.budget.sent(went=False)  # give the portal grant back to the contract
                self.budget.observe({}, NO_ANSWER)
                raise

    def _budgets(self, search: bool) -> tuple[RateBudget, ...]:
        return (self.budget, self.search_budget) if search else (self.budget,)

    def _observe(self, search: bool, headers: Mapping[str, str], status: int) -> None:
        if search:
            # Search has its own limit: its answers (429s included) say nothing of the portal window,
            # but the portal grant was used and is answered now.
            self.search_budget.observe(headers, status)
            self.budget.observe({}, NO_ANSWER)
        else:
            self.budget.observe(headers, status)

    async def _gather(self, jobs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
        """Run batch chunks, at most ``concurrency`` in flight across every batch call of this client.

        The cap is per client, not per call: a pusher upserting four object types at once must not put
        four times as many requests in HubSpot's queue (a request in its queue waits longer for its
        answer, and its grant counts until an interval after that answer: a slower push).
        """
        semaphore = self._slots

        async def run(job: Callable[[], Awaitable[T]]) -> T:
            async with semaphore:
                return await job()

        return list(await asyncio.gather(*(run(job) for job in jobs)))

    # --- batch writes and reads -----------------------------------------------------------

    async def batch_upsert(self, object_type: ObjectType, inputs: Sequence[RecordInput], *,
                           id_property: str) -> BatchResult:
        """Create or update by a unique property (e.g. ``kleer_id``); ``new`` tells which happened.

        Inputs with the same id are merged (later properties win) and share one outcome.
        """
        return await self._write_by_id(object_type, "upsert", inputs, id_property)

    async def batch_update(self, object_type: ObjectType, inputs: Sequence[RecordInput], *,
                           id_property: str | None = None) -> BatchResult:
        """Update existing records by hs_object_id, or by a unique ``id_property``."""
        return await self._write_by_id(object_type, "update", inputs, id_property)

    async def _write_by_id(self, object_type: ObjectType, op: str, inputs: Sequence[RecordInput],
                           id_property: str | None) -> BatchResult:
        merged: dict[str, Mapping[str, str]] = {}  # the caller's properties, copied only to merge them
        owners: dict[str, list[int]] = {}
        for index, item in enumerate(inputs):
            if not item.id:
                raise ValueError(f"batch {op} input {index} has no id")
            properties = item.properties if type(item.properties) is dict else dict(item.properties)
            if item.id in merged:
                merged[item.id] = {**merged[item.id], **properties}
                owners[item.id].append(index)
            else:
                merged[item.id] = properties
                owners[item.id] = [index]
        ids = list(merged)
        base, template = _objects_path(object_type)

        async def send(chunk: list[int]) -> BatchResult:
            body_inputs: list[dict[str, Any]] = []
            for position in chunk:
                entry: dict[str, Any] = {"id": ids[position], "objectWriteTraceId": str(position),
                                         "properties": merged[ids[position]]}
                if id_property:
                    entry["idProperty"] = id_property
                body_inputs.append(entry)
            key_of = {ids[p]: p for p in chunk}

            def position_of_result(result: Mapping[str, Any]) -> int | None:
                props = result.get("properties") or {}
                if id_property and props.get(id_property) in key_of:
                    return key_of[props[id_property]]
                return key_of.get(str(result.get("id"))) if not id_property else None

            return await self._send_chunk(
                "POST", f"{template}/batch/{op}", f"{base}/batch/{op}", {"inputs": body_inputs}, chunk,
                position_of_result, lambda ctx: [key_of[i] for i in ctx.get("ids", []) if i in key_of])

        chunks = [list(range(i, min(i + BATCH_SIZE, len(ids)))) for i in range(0, len(ids), BATCH_SIZE)]
        parts = await self._gather([partial(send, c) for c in chunks])
        if len(ids) == len(inputs):  # nothing merged: positions are the caller's indexes
            return BatchResult.merge(parts)
        return _fan_out(BatchResult.merge(parts), [owners[i] for i in ids])

    async def batch_create(self, object_type: ObjectType, inputs: Sequence[Mapping[str, str]]) -> BatchResult:
        """Create records. Not idempotent: prefer ``batch_upsert`` for anything that may be retried."""
        base, template = _objects_path(object_type)

        async def send(chunk: list[int]) -> BatchResult:
            body = {"inputs": [{"objectWriteTraceId": str(p), "properties": dict(inputs[p])} for p in chunk]}
            return await self._send_chunk("POST", f"{template}/batch/create", f"{base}/batch/create", body, chunk,
                                          lambda _: None, lambda _: [])

        chunks = [list(range(i, min(i + BATCH_SIZE, len(inputs)))) for i in range(0, len(inputs), BATCH_SIZE)]
        return BatchResult.merge(await self._gather([partial(send, c) for c in chunks]))

    async def batch_read(self, object_type: ObjectType, ids: Sequence[str], *, properties: Sequence[str] = (),
                         id_property: str | None = None) -> BatchResult:
        """Read records by hs_object_id or a unique ``id_property``; unknown ids fail with OBJECT_NOT_FOUND."""
        unique = list(dict.fromkeys(ids))
        owners: dict[str, list[int]] = {}
        for index, value in enumerate(ids):
            owners.setdefault(value, []).append(index)
        names = list(properties)
        if id_property and id_property not in names:
            names.append(id_property)
        base, template = _objects_path(object_type)

        async def send(chunk: list[int]) -> BatchResult:
            key_of = {unique[p]: p for p in chunk}
            body: dict[str, Any] = {"inputs": [{"id": unique[p]} for p in chunk], "properties": names}
            if id_property:
                body["idProperty"] = id_property

            def position_of_result(result: Mapping[str, Any]) -> int | None:
                if id_property:
                    return key_of.get(str((result.get("properties") or {}).get(id_property)))
                return key_of.get(str(result.get("id")))

            return await self._send_chunk(
                "POST", f"{template}/batch/read", f"{base}/batch/read", body, chunk, position_of_result,
                lambda ctx: [key_of[i] for i in ctx.get("ids", []) if i in key_of])

        chunks = [list(range(i, min(i + BATCH_SIZE, len(unique)))) for i in range(0, len(unique), BATCH_SIZE)]
        parts = await self._gather([partial(send, c) for c in chunks])
        if len(unique) == len(ids):  # no id twice: positions are the caller's indexes
            return BatchResult.merge(parts)
        return _fan_out(BatchResult.merge(parts), [owners[u] for u in unique])

    async def batch_archive(self, object_type: ObjectType, ids: Sequence[str]) -> None:
        """Archive records by hs_object_id (unknown ids are ignored, as HubSpot does)."""
        unique = list(dict.fromkeys(ids))
        base, template = _objects_path(object_type)

        async def send(chunk: list[str]) -> None:
            await self.request("POST", f"{template}/batch/archive", f"{base}/batch/archive",
                               json_body={"inputs": [{"id": i} for i in chunk]})

        chunks = [unique[i:i + BATCH_SIZE] for i in range(0, len(unique), BATCH_SIZE)]
        await self._gather([partial(send, c) for c in chunks])

    async def _send_chunk(
        self,
        method: str,
        template: str,
        path: str,
        body: Mapping[str, Any],
        chunk: list[int],
        position_of_result: Callable[[Mapping[str, Any]], int | None],
        positions_of_context: Callable[[Mapping[str, Any]], list[int]],
    ) -> BatchResult:
        """One batch request → per-position outcomes (positions are indices into the call's unique inputs)."""
        try:
            answer = await self.request(method, template, path, json_body=body)
        except _WHOLE_CHUNK_ERRORS as exc:
            failed = tuple(
                InputFailed(p, exc.category or type(exc).__name__, exc.message, exc.status, dict(exc.context), True)
                for p in chunk
            )
            return BatchResult((), failed)
        payload = answer.body if isinstance(answer.body, dict) else {}
        pending = set(chunk)
        succeeded: list[InputSucceeded] = []
        failed_list: list[InputFailed] = []
        unmatched: list[Mapping[str, Any]] = []
        for result in payload.get("results") or []:
            position = _trace_position(result, pending)
            if position is None:
                position = position_of_result(result)
            if position is None or position not in pending:
                unmatched.append(result)
                continue
            pending.discard(position)
            succeeded.append(_succeeded(position, result))
        for error in payload.get("errors") or []:
            context = error.get("context") or {}
            positions = [int(t) for t in context.get("objectWriteTraceId", []) if str(t).isdigit()]
            positions = [p for p in positions if p in pending] or [
                p for p in positions_of_context(context) if p in pending]
            for position in positions:
                pending.discard(position)
                failed_list.append(InputFailed(position, str(error.get("category") or "UNKNOWN"),
                                               str(error.get("message") or ""), answer.status, dict(context)))
        for position, result in zip(sorted(pending), unmatched, strict=False):
            pending.discard(position)
            succeeded.append(_succeeded(position, result))
        for position in sorted(pending):
            failed_list.append(InputFailed(position, "UNKNOWN", "HubSpot's answer did not mention this input",
                                           answer.status))
        return BatchResult(tuple(succeeded), tuple(failed_list))

    # --- lists and search -------------------------------------------------------------

    async def iter_records(self, object_type: ObjectType, *, properties: Sequence[str] = (),
                           page_size: int = 100) -> AsyncIterator[HubSpotRecord]:
        """Every record of the type, following the ``paging.next.after`` cursor to the end."""
        base, template = _objects_path(object_type)
        after: str | None = None
        while True:
            params = {"limit": str(min(max(1, page_size), 100))}
            if properties:
                params["properties"] = ",".join(properties)
            if after:
                params["after"] = after
            answer = await self.request("GET", template, base, params=params)
            body = answer.body if isinstance(answer.body, dict) else {}
            for raw in body.get("results") or []:
                yield HubSpotRecord.from_json(raw)
            after = ((body.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                return

    async def list_records(self, object_type: ObjectType, *, properties: Sequence[str] = ()) -> list[HubSpotRecord]:
        return [r async for r in self.iter_records(object_type, properties=properties)]

    async def search(
        self,
        object_type: ObjectType,
        *,
        filter_groups: Sequence[Mapping[str, Any]] = (),
        properties: Sequence[str] = (),
        sorts: Sequence[Mapping[str, Any]] = (),
        query: str | None = None,
        max_results: int = SEARCH_RESULT_CAP,
    ) -> list[HubSpotRecord]:
        """Search (≈5 requests/s and 10,000 results at most: keep it off hot paths)."""
        base, template = _objects_path(object_type)
        found: list[HubSpotRecord] = []
        after = 0
        cap = min(max_results, SEARCH_RESULT_CAP)
        while len(found) < cap:
            limit = min(SEARCH_PAGE_SIZE, cap - after)
            body: dict[str, Any] = {"filterGroups": list(filter_groups), "properties": list(properties),
                                    "sorts": list(sorts), "limit": limit, "after": str(after)}
            if query:
                body["query"] = query
            answer = await self.request("POST", f"{template}/search", f"{base}/search", json_body=body, search=True)
            payload = answer.body if isinstance(answer.body, dict) else {}
            found.extend(HubSpotRecord.from_json(r) for r in payload.get("results") or [])
            next_after = ((payload.get("paging") or {}).get("next") or {}).get("after")
            if not next_after:
                break
            after = int(next_after)
        return found[:cap]

    # --- properties ---------------------------------------------------------------------

    async def get_properties(self, object_type: ObjectType) -> list[PropertyInfo]:
        answer = await self.request("GET", "/crm/v3/properties/{objectType}",
                                    f"/crm/v3/properties/{api_name(object_type)}")
        return [PropertyInfo.from_json(p) for p in (answer.body or {}).get("results") or []]

    async def create_property(self, object_type: ObjectType, spec: PropertySpec) -> PropertyInfo:
        """Create one property; ``HubSpotConflict`` if it exists."""
        answer = await self.request("POST", "/crm/v3/properties/{objectType}",
                                    f"/crm/v3/properties/{api_name(object_type)}",
                                    json_body=spec.to_json(DEFAULT_PROPERTY_GROUPS[object_type]))
        return PropertyInfo.from_json(answer.body or {})

    async def get_property_groups(self, object_type: ObjectType) -> list[str]:
        answer = await self.request("GET", "/crm/v3/properties/{objectType}/groups",
                                    f"/crm/v3/properties/{api_name(object_type)}/groups")
        return [str(g.get("name")) for g in (answer.body or {}).get("results") or []]

    async def create_property_group(self, object_type: ObjectType, group: PropertyGroupSpec) -> None:
        await self.request("POST", "/crm/v3/properties/{objectType}/groups",
                           f"/crm/v3/properties/{api_name(object_type)}/groups",
                           json_body={"name": group.name, "label": group.label})

    async def ensure_properties(self, object_type: ObjectType, specs: Sequence[PropertySpec], *,
                                group: PropertyGroupSpec | None = None) -> EnsureReport:
        """Create the group and the properties that are missing; safe to run twice, and from two pods.

        Existing properties are left alone; one whose type or uniqueness differs
        from its spec is reported in ``mismatched`` (fix it by hand in HubSpot).
        """
        group_created = False
        if group is not None and group.name not in await self.get_property_groups(object_type):
            try:
                await self.create_property_group(object_type, group)
                group_created = True
            except HubSpotConflict:
                pass
        existing = {p.name: p for p in await self.get_properties(object_type)}
        created: list[str] = []
        present: list[str] = []
        mismatched: list[str] = []
        for spec in specs:
            if group is not None and spec.group_name is None:
                spec = PropertySpec(spec.name, spec.label, spec.type, spec.field_type, group.name,
                                    spec.has_unique_value, spec.description, spec.options)
            found = existing.get(spec.name)
            if found is None:
                try:
                    await self.create_property(object_type, spec)
                    created.append(spec.name)
                    continue
                except HubSpotConflict:  # another pod created it meanwhile
                    present.append(spec.name)
                    continue
            present.append(spec.name)
            if found.type != spec.type or found.has_unique_value != spec.has_unique_value:
                mismatched.append(spec.name)
                _log.warning("hubspot_property_mismatch", object_type=object_type.value, property=spec.name,
                             expected_type=spec.type, actual_type=found.type,
                             expected_unique=spec.has_unique_value, actual_unique=found.has_unique_value)
        return EnsureReport(tuple(created), tuple(present), tuple(mismatched), group_created)

    # --- associations v4 ------------------------------------------------------------------

    async def associate(self, from_type: ObjectType, from_id: str, to_type: ObjectType, to_id: str) -> None:
        """One default association (idempotent ``PUT``); prefer ``associate_batch`` for many."""
        await self.request(
            "PUT", "/crm/v4/objects/{fromObjectType}/{fromId}/associations/default/{toObjectType}/{toId}",
            f"/crm/v4/objects/{api_name(from_type)}/{from_id}/associations/default/{api_name(to_type)}/{to_id}")

    async def associate_batch(self, from_type: ObjectType, to_type: ObjectType,
                              inputs: Sequence[AssociationInput], *, chunk_size: int | None = None) -> AssociationResult:
        """Write associations in large batches (idempotent).

        Inputs without a ``type_id`` use the known HUBSPOT_DEFINED id for the pair,
        or HubSpot's default association when the pair has none on record.
        """
        size = min(chunk_size or self.association_chunk_size, ASSOCIATION_CHUNK_MAX)
        typed: list[tuple[int, AssociationInput, int]] = []
        default: list[tuple[int, AssociationInput]] = []
        known = association_type_id(from_type, to_type)
        for index, item in enumerate(inputs):
            type_id = item.type_id if item.type_id is not None else known
            if type_id is None:
                default.append((index, item))
            else:
                typed.append((index, item, type_id))
        prefix = f"/crm/v4/associations/{api_name(from_type)}/{api_name(to_type)}/batch"
        template = "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch"
        jobs: list[Callable[[], Awaitable[AssociationResult]]] = []
        for start in range(0, len(typed), size):
            part = typed[start:start + size]
            body = {"inputs": [{"from": {"id": a.from_id}, "to": {"id": a.to_id},
                                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": t}]}
                               for _, a, t in part]}
            jobs.append(partial(self._send_associations, f"{template}/create", f"{prefix}/create", body,
                                [(i, a) for i, a, _ in part]))
        for start in range(0, len(default), size):
            dpart = default[start:start + size]
            dbody = {"inputs": [{"from": {"id": a.from_id}, "to": {"id": a.to_id}} for _, a in dpart]}
            jobs.append(partial(self._send_associations, f"{template}/associate/default",
                                f"{prefix}/associate/default", dbody, dpart))
        parts = await self._gather(jobs)
        failed = sorted((f for p in parts for f in p.failed), key=lambda f: f.index)
        return AssociationResult(sum(p.written for p in parts), tuple(failed))

    async def _send_associations(self, template: str, path: str, body: Mapping[str, Any],
                                 part: Sequence[tuple[int, AssociationInput]]) -> AssociationResult:
        try:
            answer = await self.request("POST", template, path, json_body=body)
        except _WHOLE_CHUNK_ERRORS as exc:
            return AssociationResult(0, tuple(
                AssociationFailed(i, exc.category or type(exc).__name__, exc.message, True) for i, _ in part))
        payload = answer.body if isinstance(answer.body, dict) else {}
        by_pair: dict[tuple[str, str], list[int]] = {}
        for index, item in part:
            by_pair.setdefault((item.from_id, item.to_id), []).append(index)
        failed: list[AssociationFailed] = []
        for error in payload.get("errors") or []:
            context = error.get("context") or {}
            for from_id, to_id in zip(context.get("fromObjectId", []), context.get("toObjectId", []), strict=False):
                for index in by_pair.pop((str(from_id), str(to_id)), []):
                    failed.append(AssociationFailed(index, str(error.get("category") or "UNKNOWN"),
                                                    str(error.get("message") or "")))
        written = len(part) - len(failed)
        return AssociationResult(written, tuple(failed))

    async def get_associations(self, from_type: ObjectType, from_id: str, to_type: ObjectType) -> list[Association]:
        found: list[Association] = []
        after: str | None = None
        while True:
            params = {"limit": "500"}
            if after:
                params["after"] = after
            answer = await self.request(
                "GET", "/crm/v4/objects/{fromObjectType}/{fromId}/associations/{toObjectType}",
                f"/crm/v4/objects/{api_name(from_type)}/{from_id}/associations/{api_name(to_type)}", params=params)
            body = answer.body if isinstance(answer.body, dict) else {}
            for raw in body.get("results") or []:
                types = tuple(int(t.get("typeId")) for t in raw.get("associationTypes") or [])
                found.append(Association(str(raw.get("toObjectId")), types))
            after = ((body.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                return found

    # --- workflow actions -----------------------------------------------------------------

    async def complete_callback(self, callback_id: str, output_fields: Mapping[str, Any]) -> None:
        """Finish a BLOCKed workflow action with its ``outputFields``."""
        await self.request("POST", "/automation/v4/actions/callbacks/{callbackId}/complete",
                           f"/automation/v4/actions/callbacks/{callback_id}/complete",
                           json_body={"outputFields": dict(output_fields)})

    def _definitions_params(self) -> dict[str, str] | None:
        return {"hapikey": self._developer_api_key.value} if self._developer_api_key else None

    async def list_action_definitions(self, app_id: int | str) -> list[dict[str, Any]]:
        answer = await self.request("GET", "/automation/v4/actions/{appId}", f"/automation/v4/actions/{app_id}",
                                    params=self._definitions_params(), budgeted=False)
        return list((answer.body or {}).get("results") or [])

    async def create_action_definition(self, app_id: int | str, definition: Mapping[str, Any]) -> dict[str, Any]:
        answer = await self.request("POST", "/automation/v4/actions/{appId}", f"/automation/v4/actions/{app_id}",
                                    json_body=dict(definition), params=self._definitions_params(), budgeted=False)
        return dict(answer.body or {})

    async def update_action_definition(self, app_id: int | str, definition_id: str,
                                       definition: Mapping[str, Any]) -> dict[str, Any]:
        answer = await self.request("PATCH", "/automation/v4/actions/{appId}/{definitionId}",
                                    f"/automation/v4/actions/{app_id}/{definition_id}", json_body=dict(definition),
                                    params=self._definitions_params(), budgeted=False)
        return dict(answer.body or {})


# --- helpers ------------------------------------------------------------------------------

class _Sending:
    """One granted request on its way: tells its budgets, once, when it has gone out (or never will)."""

    __slots__ = ("budgets", "told")

    def __init__(self, budgets: tuple[RateBudget, ...]) -> None:
        self.budgets = budgets
        self.told = False

    def done(self, went: bool = True) -> None:
        if not self.told:
            self.told = True
            for budget in self.budgets:
                budget.sent(went)


async def _on_headers_sent(_session: aiohttp.ClientSession, context: Any, _params: Any) -> None:
    sending = context.trace_request_ctx
    if isinstance(sending, _Sending):
        sending.done()


# A request has gone out once its headers are sent (a request that never did is no longer counted by the budget).
_SENT_TRACE = aiohttp.TraceConfig()
_SENT_TRACE.on_request_headers_sent.append(_on_headers_sent)
_SENT_TRACE.freeze()


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _snippet(raw: bytes) -> str:
    return raw[:200].decode(errors="replace") if raw else "empty answer"


def _trace_position(result: Mapping[str, Any], pending: set[int]) -> int | None:
    trace = result.get("objectWriteTraceId")
    if trace is not None and str(trace).isdigit() and int(trace) in pending:
        return int(trace)
    return None


def _succeeded(position: int, result: Mapping[str, Any]) -> InputSucceeded:
    new = result.get("new")
    return InputSucceeded(position, str(result.get("id")), result, new if isinstance(new, bool) else None)


def _fan_out(result: BatchResult, owners: Sequence[Sequence[int]]) -> BatchResult:
    """Positions of merged inputs → every caller index that shared them."""
    succeeded = [InputSucceeded(i, s.id, s.answer, s.new) for s in result.succeeded for i in owners[s.index]]
    failed = [InputFailed(i, f.category, f.message, f.status, f.context, f.whole_chunk)
              for f in result.failed for i in owners[f.index]]
    return BatchResult(tuple(sorted(succeeded, key=lambda s: s.index)), tuple(sorted(failed, key=lambda f: f.index)))


__all__ = ["DEFAULT_BASE_URL", "Answer", "HubSpotAuthError", "HubSpotClient", "HubSpotError"]
