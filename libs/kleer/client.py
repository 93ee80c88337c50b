"""The async Kleer API client: one aiohttp session, bounded concurrency, polite retries, typed errors.

Usage::

    async with KleerClient(company_id=42, token=Secret("...")) as kleer:
        async for page in kleer.clients.pages():
            ...
        invoice = await kleer.invoices.get(1234)
        new_id = await kleer.clients.create({"name": "Fjällbacka Bygg AB"})
        await kleer.clients.update(new_id, {"email": "info@fjallbackabygg.se"})

Guarantees:

- At most ``max_concurrency`` requests are in flight; a request waiting for
  its retry does not hold a slot.
- 429, 5xx, timeouts and connection errors are retried (``RetryPolicy``:
  bounded attempts, exponential backoff with jitter, ``Retry-After``
  honoured). Other 4xx are never retried.
- Creates (PUT) are not idempotent in Kleer, so a create is only resent when
  the answer says it was not processed (429, 503) or the connection could not
  be opened; after any other failure it raises ``KleerUnavailable`` with
  ``ambiguous=True`` instead of risking a duplicate.
- Lists are followed page by page to the end (``offset``/``limit``; the next
  page is fetched while the caller handles the current one).
- Request bodies may hold ``Decimal`` values (quantities, hours): they are sent
  as exact JSON numbers (``encode_body``), never rounded through a float.
- The token is sent only as ``X-Token``; it never appears in logs or errors.
- Every attempt is counted in ``KLEER_REQUESTS`` / ``KLEER_REQUEST_SECONDS``
  with ``endpoint = "<METHOD> <route template>"`` (e.g. ``GET /company/{company-id}/client/{id}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from decimal import Decimal
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

import aiohttp
import orjson

from libs.config import ConfigError, Secret, Settings
from libs.kleer.errors import (
    KleerAuthError,
    KleerError,
    KleerNotFound,
    KleerUnavailable,
    KleerValidationError,
)
from libs.kleer.records import (
    AgreementRecord,
    ClientRecord,
    InvoiceRecord,
    KleerRecord,
    ProductRecord,
    ProjectRecord,
)
from libs.kleer.resources import (
    AGREEMENT,
    CLIENT,
    INVOICE,
    LIMIT_PARAM,
    MAX_PAGE_SIZE,
    OFFSET_PARAM,
    PRODUCT,
    PROJECT,
    Resource,
)
from libs.kleer.retry import NOT_PROCESSED_STATUSES, RETRYABLE_STATUSES, RetryPolicy, parse_retry_after
from libs.observability.logging import correlation_headers, get_logger, register_secret
from libs.observability.metrics import KLEER_REQUEST_SECONDS, KLEER_REQUESTS

DEFAULT_BASE_URL = "https://api.kleer.se/v1"
_JSON = "application/json"
_MAX_ERROR_TEXT = 300

log = get_logger(__name__)

R = TypeVar("R")


class _Retryable(Exception):
    """One attempt failed in a way another attempt may fix."""

    def __init__(
        self, description: str, *, status: int | None, retry_after: float | None, processed: bool
    ) -> None:
        super().__init__(description)
        self.description = description
        self.status = status
        self.retry_after = retry_after
        self.processed = processed  # False when the server certainly did not act on the request


class KleerClient:
    """Async client of one Kleer company. Use as ``async with KleerClient(...) as kleer``."""

    def __init__(
        self,
        *,
        company_id: int,
        token: Secret,
        base_url: str = DEFAULT_BASE_URL,
        max_concurrency: int = 8,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        page_size: int = MAX_PAGE_SIZE,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        self.company_id = company_id
        self.base_url = base_url.rstrip("/")
        self.page_size = page_size
        self.retry = retry or RetryPolicy()
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_concurrency = max_concurrency
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._sleep = sleep
        self._rand = rand
        self._session: aiohttp.ClientSession | None = None
        register_secret(token.value)
        self.clients = ResourceAPI[ClientRecord](self, CLIENT)
        self.products = ResourceAPI[ProductRecord](self, PRODUCT)
        self.invoices = ResourceAPI[InvoiceRecord](self, INVOICE)
        self.agreements = ResourceAPI[AgreementRecord](self, AGREEMENT)
        self.projects = ResourceAPI[ProjectRecord](self, PROJECT)

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> KleerClient:
        """Build from ``KLEER_API_BASE``, ``KLEER_COMPANY_ID`` and ``KLEER_TOKEN``."""
        token = settings.secret("KLEER_TOKEN")
        problems = [] if token else ["KLEER_TOKEN is not set: Kleer API token (sent as X-Token)."]
        company_id = settings.get_int("KLEER_COMPANY_ID")
        if company_id is None:
            problems.append("KLEER_COMPANY_ID is not set: Kleer company id of the default connection.")
        if problems:
            raise ConfigError(problems)
        assert company_id is not None
        base_url = settings.get("KLEER_API_BASE") or DEFAULT_BASE_URL
        return cls(company_id=company_id, token=token, base_url=base_url, **options)

    def __repr__(self) -> str:
        return f"KleerClient(base_url={self.base_url!r}, company_id={self.company_id})"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the HTTP session (done by ``async with``)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"X-Token": self._token.value, "Accept": _JSON},
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_concurrency),
                middlewares=(_no_silent_resend,),
            )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # --- resource operations --------------------------------------------------------------------

    async def iter_pages(
        self,
        resource: Resource,
        *,
        page_size: int | None = None,
        params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[list[KleerRecord]]:
        """Yield the records of ``resource`` page by page, from offset 0 to the end of the list.

        The next page is requested while the caller handles the current one.
        Stops at ``size`` (the server's total), at an empty page, or, when the
        server reports no size, at a page shorter than its ``limit``.
        """
        limit = page_size or self.page_size
        offset = 0
        pending = asyncio.ensure_future(self._fetch_page(resource, offset, limit, params))
        try:
            while True:
                items, size, served_limit = await pending
                offset += len(items)
                finished = (
                    not items
                    or (size is not None and offset >= size)
                    or (size is None and len(items) < served_limit)
                )
                if not finished:
                    pending = asyncio.ensure_future(self._fetch_page(resource, offset, limit, params))
                yield items
                if finished:
                    return
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, KleerError):
                    await pending

    async def list_all(
        self,
        resource: Resource,
        *,
        page_size: int | None = None,
        params: Mapping[str, str] | None = None,
    ) -> list[KleerRecord]:
        """Every record of ``resource`` (all pages)."""
        records: list[KleerRecord] = []
        async for page in self.iter_pages(resource, page_size=page_size, params=params):
            records.extend(page)
        return records

    async def get(self, resource: Resource, record_id: int) -> KleerRecord:
        body = await self._call("GET", resource.item_route, record_id=record_id)
        if not isinstance(body, dict):
            raise KleerError(
                "the answer is not a record", endpoint=f"GET {resource.item_route}", record_id=record_id
            )
        return body

    async def create(self, resource: Resource, record: Mapping[str, Any]) -> int:
        """PUT a new record; returns the id Kleer gave it."""
        endpoint = f"PUT {resource.collection_route}"
        body = await self._call("PUT", resource.collection_route, body=record)
        created = body.get("created") if isinstance(body, dict) else None
        new_id = created.get("id") if isinstance(created, dict) else None
        if not isinstance(new_id, int):
            raise KleerError(
                f"unexpected answer to a create: {_snippet(body)}", endpoint=endpoint, record=record
            )
        return new_id

    async def update(self, resource: Resource, record_id: int, record: Mapping[str, Any]) -> KleerRecord:
        """POST changes to a record; returns Kleer's ``saved`` answer (agreements: the new revision-nr)."""
        body = await self._call("POST", resource.item_route, record_id=record_id, body=record)
        saved = body.get("saved") if isinstance(body, dict) else None
        if not isinstance(saved, dict):
            raise KleerError(
                f"unexpected answer to an update: {_snippet(body)}",
                endpoint=f"POST {resource.item_route}",
                record=record,
                record_id=record_id,
            )
        return saved

    async def delete(self, resource: Resource, record_id: int) -> None:
        await self._call("DELETE", resource.item_route, record_id=record_id)

    # --- transport --------------------------------------------------------------------------------

    async def _fetch_page(
        self, resource: Resource, offset: int, limit: int, params: Mapping[str, str] | None
    ) -> tuple[list[KleerRecord], int | None, int]:
        query = {**(params or {}), OFFSET_PARAM: str(offset), LIMIT_PARAM: str(limit)}
        body = await self._call("GET", resource.collection_route, params=query)
        items = body.get(resource.list_key) if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise KleerError(
                f"a list answer without a {resource.list_key!r} list: {_snippet(body)}",
                endpoint=f"GET {resource.collection_route}",
            )
        size = body.get("size")
        served_limit = body.get("limit")
        return (
            items,
            size if isinstance(size, int) else None,
            served_limit if isinstance(served_limit, int) else limit,
        )

    def _url(self, route: str, record_id: int | None) -> str:
        path = route.replace("{company-id}", str(self.company_id))
        if record_id is not None:
            path = path.replace("{id}", str(record_id))
        return self.base_url + path

    async def _call(
        self,
        method: str,
        route: str,
        *,
        record_id: int | None = None,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """One API call with retries; returns the decoded JSON answer or raises a ``KleerError``."""
        endpoint = f"{method} {route}"
        url = self._url(route, record_id)
        data = encode_body(body) if body is not None else None
        context: dict[str, Any] = {"endpoint": endpoint, "record": body, "record_id": record_id}
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._semaphore:
                    return await self._attempt(method, url, endpoint, params, data, context)
            except _Retryable as failure:
                if method == "PUT" and failure.processed:
                    raise KleerUnavailable(
                        f"{failure.description}; the create may or may not have been stored: "
                        "look the record up (e.g. by foreign-id) before creating it again",
                        attempts=attempt,
                        ambiguous=True,
                        status=failure.status,
                        **context,
                    ) from None
                delay = self.retry.next_delay(attempt, self._rand(), failure.retry_after)
                if delay is None:
                    raise KleerUnavailable(
                        f"{failure.description} (gave up after {attempt} attempt(s))",
                        attempts=attempt,
                        retry_after=failure.retry_after,
                        status=failure.status,
                        **context,
                    ) from None
                log.warning(
                    "kleer_request_retry",
                    endpoint=endpoint,
                    record_id=record_id,
                    status=failure.status,
                    problem=failure.description,
                    attempt=attempt,
                    delay_seconds=round(delay, 3),
                )
                await self._sleep(delay)

    async def _attempt(
        self,
        method: str,
        url: str,
        endpoint: str,
        params: Mapping[str, str] | None,
        data: bytes | None,
        context: dict[str, Any],
    ) -> Any:
        session = self._session
        if session is None:
            raise RuntimeError("KleerClient is not started: use `async with KleerClient(...)`")
        headers = correlation_headers({"Content-Type": _JSON} if data is not None else {})
        started = time.perf_counter()
        status_label = "error"
        try:
            async with session.request(method, url, params=params, data=data, headers=headers) as response:
                raw = await response.read()
                retry_after_header = response.headers.get("Retry-After")
                status = response.status
            status_label = str(status)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # The connection never opened, so Kleer cannot have seen the request.
            status_label = "connection_error"
            raise _Retryable(
                f"cannot connect to Kleer: {type(exc).__name__}",
                status=None,
                retry_after=None,
                processed=False,
            ) from None
        except TimeoutError:
            status_label = "timeout"
            raise _Retryable(
                "Kleer did not answer in time", status=None, retry_after=None, processed=True
            ) from None
        except aiohttp.ClientError as exc:
            status_label = "connection_error"
            raise _Retryable(
                f"the connection to Kleer failed: {type(exc).__name__}",
                status=None,
                retry_after=None,
                processed=True,
            ) from None
        finally:
            KLEER_REQUESTS.labels(endpoint=endpoint, status=status_label).inc()
            KLEER_REQUEST_SECONDS.labels(endpoint=endpoint).observe(time.perf_counter() - started)

        if 200 <= status < 300:
            try:
                return orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                raise KleerError(
                    f"the answer is not JSON: {self._mask(raw)}", status=status, **context
                ) from None
        message = self._error_message(raw)
        if status in RETRYABLE_STATUSES:
            raise _Retryable(
                f"HTTP {status}: {message}",
                status=status,
                retry_after=parse_retry_after(retry_after_header, time.time()),
                processed=status not in NOT_PROCESSED_STATUSES,
            )
        if status in (401, 403):
            raise KleerAuthError(
                f"{message} (check KLEER_TOKEN and KLEER_COMPANY_ID)", status=status, **context
            )
        if status == 404:
            raise KleerNotFound(message, status=status, **context)
        if status in (400, 422):
            raise KleerValidationError(message, status=status, **context)
        raise KleerError(message, status=status, **context)

    def _error_message(self, raw: bytes) -> str:
        """Kleer's ``{"error": {"message": ...}}``, or the start of whatever came instead."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._mask(raw) or "(empty answer)"
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if isinstance(message, str):
            return self._mask(message.encode())
        return self._mask(raw)

    def _mask(self, raw: bytes) -> str:
        text = raw[:_MAX_ERROR_TEXT].decode("utf-8", "replace")
        token = self._token.value
        return text.replace(token, "****") if token else text


class _WriteInterrupted(aiohttp.ClientConnectionError):
    """The connection broke while a create was in flight (not a subclass aiohttp resends on)."""


async def _no_silent_resend(
    request: aiohttp.ClientRequest, handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]]
) -> aiohttp.ClientResponse:
    """Stop aiohttp from quietly sending a PUT again after a dropped connection.

    aiohttp resends "idempotent" methods (PUT among them) once when the
    connection drops; Kleer's PUT creates a record, so a resend could store it
    twice. The drop becomes an error aiohttp leaves alone, and ``_call``
    decides (a create whose fate is unknown is reported as ambiguous).
    """
    try:
        return await handler(request)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        if request.method != "PUT" or isinstance(exc, aiohttp.ClientConnectorError):
            raise
        raise _WriteInterrupted(f"{type(exc).__name__}: {exc}") from exc


def encode_body(record: Mapping[str, Any]) -> bytes:
    """A request body as JSON; ``Decimal`` values (quantities, hours, rates) become exact JSON numbers.

    ``Decimal("1.50")`` is sent as ``1.50``, never through a float. A non-finite
    ``Decimal`` (NaN, Infinity) has no JSON form and raises ``TypeError``.
    """
    return orjson.dumps(record, default=_json_number)


def _json_number(value: Any) -> orjson.Fragment:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"{value} cannot be sent to Kleer: JSON has no such number")
        return orjson.Fragment(format(value, "f").encode())
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _snippet(body: Any) -> str:
    return orjson.dumps(body).decode()[:_MAX_ERROR_TEXT]


class ResourceAPI(Generic[R]):
    """The operations on one resource, typed with its record shape (e.g. ``kleer.invoices``)."""

    def __init__(self, client: KleerClient, resource: Resource) -> None:
        self.client = client
        self.resource = resource

    async def pages(
        self, *, page_size: int | None = None, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[list[R]]:
        """Every record, page by page (see ``KleerClient.iter_pages``)."""
        async for page in self.client.iter_pages(self.resource, page_size=page_size, params=params):
            yield cast(list[R], page)

    async def list_all(
        self, *, page_size: int | None = None, params: Mapping[str, str] | None = None
    ) -> list[R]:
        return cast(list[R], await self.client.list_all(self.resource, page_size=page_size, params=params))

    async def get(self, record_id: int) -> R:
        return cast(R, await self.client.get(self.resource, record_id))

    async def create(self, record: R) -> int:
        return await self.client.create(self.resource, cast(Mapping[str, Any], record))

    async def update(self, record_id: int, record: R) -> KleerRecord:
        return await self.client.update(self.resource, record_id, cast(Mapping[str, Any], record))

    async def delete(self, record_id: int) -> None:
        await self.client.delete(self.resource, record_id)
