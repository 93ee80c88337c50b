"""``POST /webhooks/hubspot``: verify, record durably, answer fast.

Order of checks (each failure answered with a JSON error, never a 500):

1. size: ``Content-Length`` over the limit, or a streamed body growing past
   it -> 413 (the body is not buffered beyond the limit);
2. signature (v3, or v1/v2 when the request declares them) over
   ``PUBLIC_BASE_URL`` + path + query, v3 timestamps within 5 minutes -> 401;
3. body: a JSON array of well-formed events -> 400 naming the problem;
4. portal: events of portals that are not ours are refused (not recorded);
   a request with nothing but foreign events -> 403.

Accepted events are appended as ``WebhookReceived`` through the group
committer, and only after the commit is the request answered 200. HubSpot
retries anything else, and redeliveries are no-ops (derived event ids).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from libs.events.group_commit import GroupCommitter
from libs.events.store import AppendRequest
from libs.hubspot.signatures import SignatureError, verify_request
from libs.observability import metrics
from libs.observability.logging import get_logger
from services.inbound.options import InboundOptions
from services.inbound.webhook_events import MalformedWebhook, WebhookEvent, parse_webhook_body

log = get_logger(__name__)

WEBHOOK_PATH = "/webhooks/hubspot"
_READ_CHUNK = 64 * 1024


class BodyTooLarge(Exception):
    pass


# The labelled counters of the hot path, bound once.
_REQUESTS = {outcome: metrics.WEBHOOK_REQUESTS.labels(outcome=outcome) for outcome in ("accepted", "error")}
_RECORDED = metrics.WEBHOOK_EVENTS.labels(outcome="recorded")
_DUPLICATES = metrics.WEBHOOK_EVENTS.labels(outcome="duplicate")


def error_response(status: int, error: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, "message": message, **extra}, status=status)


def refuse_unsigned(options: InboundOptions, request: web.Request, body: bytes, what: str) -> web.Response | None:
    """The 401 answer when ``request`` is not signed by HubSpot with our client secret, else None.

    The signature covers ``PUBLIC_BASE_URL`` + path + query (v3, or v1/v2 when declared), v3 timestamps
    within ``options.signature_max_age_ms``; ``what`` names the endpoint in the log line.
    """
    try:
        verify_request(
            options.client_secret.value,
            request.method,
            options.public_base_url + request.raw_path,
            body,
            request.headers,
            int(time.time() * 1000),
            options.signature_max_age_ms,
        )
    except SignatureError as exc:
        log.info(f"{what} refused: bad signature", reason=exc.reason.value, detail=exc.detail)
        message = (
            "the request is not signed by HubSpot with our client secret: check HUBSPOT_CLIENT_SECRET "
            "and that PUBLIC_BASE_URL is the URL HubSpot calls"
        )
        return error_response(401, "unauthorized", message, reason=exc.reason.value)
    return None


class WebhookIntake:
    """The webhook endpoint's handler, with its dependencies."""

    def __init__(self, options: InboundOptions, committer: GroupCommitter) -> None:
        self.options = options
        self.committer = committer

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        outcome = "error"
        try:
            response, outcome = await self._handle(request)
            return response
        finally:
            counter = _REQUESTS.get(outcome)
            (counter or metrics.WEBHOOK_REQUESTS.labels(outcome=outcome)).inc()
            metrics.WEBHOOK_REQUEST_SECONDS.observe(time.perf_counter() - started)

    async def _handle(self, request: web.Request) -> tuple[web.Response, str]:
        try:
            body = await self._read_body(request)
        except BodyTooLarge:
            limit = self.options.max_body_bytes
            return error_response(413, "too_large", f"the body is larger than {limit} bytes"), "too_large"
        refused = refuse_unsigned(self.options, request, body, "webhook")
        if refused is not None:
            return refused, "unauthorized"
        try:
            events = parse_webhook_body(body)
        except MalformedWebhook as exc:
            log.info("webhook refused: malformed", problem=str(exc))
            return web.json_response(exc.to_json(), status=400), "malformed"
        ours, foreign = self._by_portal(events)
        if foreign:
            metrics.WEBHOOK_EVENTS.labels(outcome="foreign_portal").inc(len(foreign))
            log.warning(
                "webhook events of other portals refused",
                portals=sorted({e.portal_id for e in foreign})[:10],
                events=len(foreign),
            )
        if not ours:
            message = "every event belongs to a HubSpot portal this deployment does not serve"
            return error_response(403, "foreign_portal", message, refused=len(foreign)), "foreign_portal"
        try:
            recorded, duplicates = await self._record(ours)
        except TimeoutError:
            log.error("webhook not recorded in time; HubSpot will retry", events=len(ours))
            return error_response(503, "unavailable", "the event log did not commit in time"), "error"
        except Exception as exc:
            log.error("webhook not recorded; HubSpot will retry", error=repr(exc), events=len(ours))
            return error_response(503, "unavailable", "the event log is unavailable; retry later"), "error"
        _RECORDED.inc(recorded)
        if duplicates:
            _DUPLICATES.inc(duplicates)
        answer = {"recorded": recorded, "duplicates": duplicates, "refused": len(foreign)}
        return web.Response(body=orjson.dumps(answer), content_type="application/json"), "accepted"

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.options.max_body_bytes
        length = request.content_length
        if length is not None:
            if length > limit:
                raise BodyTooLarge
            try:
                return await request.content.readexactly(length)
            except asyncio.IncompleteReadError as short:
                return short.partial  # the client went away mid-body: it fails the signature check
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _by_portal(self, events: Sequence[WebhookEvent]) -> tuple[list[tuple[str, WebhookEvent]], list[WebhookEvent]]:
        ours: list[tuple[str, WebhookEvent]] = []
        foreign: list[WebhookEvent] = []
        for event in events:
            connection = self.options.connection_for(event.portal_id)
            if connection is None:
                foreign.append(event)
            else:
                ours.append((connection, event))
        return ours, foreign

    async def _record(self, events: Sequence[tuple[str, WebhookEvent]]) -> tuple[int, int]:
        received_at = int(time.time() * 1000)
        by_stream: dict[str, list[Any]] = {}
        for connection, event in events:
            by_stream.setdefault(event.stream(connection), []).append(event.to_new_event(received_at))
        requests = [AppendRequest(stream, new) for stream, new in by_stream.items()]
        # The committer's deadline (one timer for all requests, not one per request): giving up, like a
        # cancelled handler, does not cancel the commit, which still counts (a retry is then a duplicate).
        results = await self.committer.enqueue(requests, timeout=self.options.answer_within_seconds)
        recorded = sum(1 for r in results if r.inserted)
        return recorded, len(events) - recorded
