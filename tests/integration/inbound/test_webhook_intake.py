"""POST /webhooks/hubspot over real HTTP and Postgres: verify, record durably, answer."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import orjson
import pytest

from libs.hubspot.signatures import HEADER_SIGNATURE_V3, HEADER_TIMESTAMP
from services.inbound.intake import WebhookIntake
from services.inbound.webhook_events import WEBHOOK_RECEIVED, webhook_event_id

from .conftest import CONNECTION, PORTAL, InboundServer, company_change, signed_headers


async def _post_raw(server: InboundServer, body: bytes, headers: dict[str, str], url: str | None = None,
                    method: str = "POST") -> tuple[int, dict[str, object]]:
    async with server.session.request(method, url or server.webhook_url, data=body, headers=headers) as resp:
        raw = await resp.read()
        if resp.content_type != "application/json":
            return resp.status, {"text": raw.decode(errors="replace")}
        return resp.status, orjson.loads(raw)


async def _recorded(server: InboundServer) -> list[str]:
    rows = await server.deps.pool.fetch("SELECT stream FROM events WHERE type = $1 ORDER BY position", WEBHOOK_RECEIVED)
    return [r["stream"] for r in rows]


async def test_signed_events_are_recorded_before_the_answer(inbound_server: InboundServer) -> None:
    events = [company_change(501, "name", "Fjällbacka Bygg AB"), company_change(502, "phone", "+46 8 123")]
    response = await inbound_server.post_events(events)
    assert response.status == 200
    recorded = await inbound_server.deps.store.read_stream(f"{CONNECTION}/hubspot-company/501")
    assert [e.type for e in recorded] == [WEBHOOK_RECEIVED]
    assert recorded[0].event_id == webhook_event_id(PORTAL, events[0]["eventId"])
    assert recorded[0].data["propertyValue"] == "Fjällbacka Bygg AB"
    assert recorded[0].metadata["actor"] == "webhook"
    assert await _recorded(inbound_server) == [f"{CONNECTION}/hubspot-company/501", f"{CONNECTION}/hubspot-company/502"]


async def test_redelivered_events_are_recorded_once(inbound_server: InboundServer) -> None:
    event = company_change(503, "name", "Once AB")
    first = await inbound_server.post_events([event])
    retry = await inbound_server.post_events([{**event, "attemptNumber": 1}, event])
    assert (first.status, retry.status) == (200, 200)
    assert await _recorded(inbound_server) == [f"{CONNECTION}/hubspot-company/503"]


async def test_hubspot_published_signature_vector_is_accepted(inbound_server: InboundServer) -> None:
    # The documented vector: POST https://www.example.com/webhook_uri, body {'example_field':'example_value'}.
    from aiohttp import web

    from libs.config import Secret
    from services.inbound.app import app_runner

    options = inbound_server.deps.options
    vector_options = type(options)(
        client_secret=Secret("yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"),
        public_base_url="https://www.example.com",
        portals=options.portals,
        signature_max_age_ms=10**14,  # the vector's timestamp is from 2023
    )
    app = web.Application()
    app.router.add_post("/webhook_uri", WebhookIntake(vector_options, inbound_server.deps.committer).handle)
    runner = app_runner(app)
    await runner.setup()
    from sim.broker import free_port

    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        headers = {HEADER_SIGNATURE_V3: "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y=", HEADER_TIMESTAMP: "1693657560000"}
        url = f"http://127.0.0.1:{port}/webhook_uri"
        status, body = await _post_raw(inbound_server, b"{'example_field':'example_value'}", headers, url)
        # The signature passes; the body (not a JSON array) is what is refused.
        assert (status, body["error"]) == (400, "malformed_webhook")
        headers[HEADER_SIGNATURE_V3] = "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Z="
        status, body = await _post_raw(inbound_server, b"{'example_field':'example_value'}", headers, url)
        assert (status, body["reason"]) == (401, "bad_signature")
    finally:
        await runner.cleanup()


def _body() -> bytes:
    return orjson.dumps([company_change(600, "name", "Signed AB")])


@pytest.mark.parametrize("tamper", ["body", "uri", "method", "timestamp", "secret"])
async def test_tampered_requests_are_refused_with_401(inbound_server: InboundServer, tamper: str) -> None:
    body = _body()
    url = inbound_server.webhook_url
    now = int(time.time() * 1000)
    headers = signed_headers(
        url + ("?portal=1" if tamper == "uri" else ""),
        body,
        method="PUT" if tamper == "method" else "POST",
        secret="wrong-secret" if tamper == "secret" else "test-client-secret-0000",
        timestamp_ms=now,
    )
    if tamper == "timestamp":
        headers[HEADER_TIMESTAMP] = str(now - 1000)
    if tamper == "body":
        body = body.replace(b"Signed AB", b"Signed AC")
    status, answer = await _post_raw(inbound_server, body, headers)
    assert (status, answer["error"], answer["reason"]) == (401, "unauthorized", "bad_signature")
    assert await _recorded(inbound_server) == []


async def test_stale_and_unsigned_requests_are_refused_with_401(inbound_server: InboundServer) -> None:
    body = _body()
    stale = signed_headers(inbound_server.webhook_url, body, timestamp_ms=int(time.time() * 1000) - 301_000)
    status, answer = await _post_raw(inbound_server, body, stale)
    assert (status, answer["reason"]) == (401, "stale_timestamp")
    status, answer = await _post_raw(inbound_server, body, {"Content-Type": "application/json"})
    assert (status, answer["reason"]) == (401, "unsigned")
    assert await _recorded(inbound_server) == []


async def test_query_string_is_part_of_the_signed_uri(inbound_server: InboundServer) -> None:
    body = _body()
    url = inbound_server.webhook_url + "?source=hubspot&x=%3A"
    status, _ = await _post_raw(inbound_server, body, signed_headers(url, body), url)
    assert status == 200


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_legacy_signature_versions_are_accepted_when_declared(inbound_server: InboundServer, version: str) -> None:
    response = await inbound_server.post_events([company_change(610, "name", "Legacy AB")], version=version)
    assert response.status == 200
    body = _body()
    headers = signed_headers(inbound_server.webhook_url, body, version)
    status, answer = await _post_raw(inbound_server, body.replace(b"Signed", b"Forged"), headers)
    assert (status, answer["reason"]) == (401, "bad_signature")
    headers["X-HubSpot-Signature-Version"] = "v9"
    status, answer = await _post_raw(inbound_server, body, headers)
    assert (status, answer["reason"]) == (401, "unknown_version")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "not valid UTF-8 JSON"),
        (b"\xff\xfe[]", "not valid UTF-8 JSON"),
        (b'{"eventId": 1}', "must be a JSON array"),
        (b"[]", "empty array"),
        (b"[1]", "must be an object"),
        (b'[{"eventId": "1", "subscriptionType": "company.creation", "portalId": 62515, "objectId": 1}]', "whole number"),
        (b'[{"eventId": 1e30, "subscriptionType": "company.creation", "portalId": 62515, "objectId": 1}]', "whole number"),
        (b'[{"eventId": 123456789012345678901234567890, "subscriptionType": "company.creation", "portalId": 62515, "objectId": 1}]', "whole number"),
        (b'[{"eventId": 1, "subscriptionType": "company.creation", "portalId": 62515}]', "is required"),
        (b'[{"eventId": 1, "subscriptionType": "company.creation", "portalId": 62515, "objectId": 1, "propertyName": "a\\u0000"}]', "property name"),
        (b'[{"eventId": 1, "subscriptionType": "object.creation", "portalId": 62515, "objectId": 1}]', "objectTypeId"),
    ],
)
async def test_malformed_bodies_are_refused_with_a_clear_400(
    inbound_server: InboundServer, body: bytes, problem: str
) -> None:
    status, answer = await _post_raw(inbound_server, body, signed_headers(inbound_server.webhook_url, body))
    assert status == 400
    assert answer["error"] == "malformed_webhook"
    assert problem in str(answer["message"])


async def test_bodies_over_one_mebibyte_are_refused_with_413(inbound_server: InboundServer) -> None:
    big = b"[" + b" " * (1024 * 1024) + b"]"
    status, answer = await _post_raw(inbound_server, big, signed_headers(inbound_server.webhook_url, big))
    assert (status, answer["error"]) == (413, "too_large")

    async def chunks():  # no Content-Length: the streamed size is checked
        for _ in range(20):
            yield b" " * 65536

    async with inbound_server.session.post(inbound_server.webhook_url, data=chunks()) as resp:
        assert resp.status == 413


async def test_oversized_headers_are_refused_before_the_handler(inbound_server: InboundServer) -> None:
    body = _body()
    headers = {**signed_headers(inbound_server.webhook_url, body), "X-Padding": "x" * 20_000}
    status, _ = await _post_raw(inbound_server, body, headers)
    assert status in (400, 431)


async def test_events_of_other_portals_are_refused(inbound_server: InboundServer) -> None:
    foreign = company_change(700, "name", "Elsewhere AB", portalId=PORTAL + 1)
    response = await inbound_server.post_events([foreign])
    assert response.status == 403
    ours = company_change(701, "name", "Here AB")
    body = orjson.dumps([foreign, ours])
    status, answer = await _post_raw(inbound_server, body, signed_headers(inbound_server.webhook_url, body))
    assert (status, answer) == (200, {"recorded": 1, "duplicates": 0, "refused": 1})
    assert await _recorded(inbound_server) == [f"{CONNECTION}/hubspot-company/701"]


async def test_concurrent_requests_share_commits(inbound_server: InboundServer) -> None:
    before = inbound_server.deps.committer.stats.groups
    responses = await asyncio.gather(
        *(inbound_server.post_events([company_change(800 + i, "name", f"C{i}")]) for i in range(200))
    )
    assert {r.status for r in responses} == {200}
    assert len(await _recorded(inbound_server)) == 200
    groups = inbound_server.deps.committer.stats.groups - before
    assert groups < 200


async def test_unknown_paths_and_methods_are_not_server_errors(inbound_server: InboundServer) -> None:
    async with inbound_server.session.get(inbound_server.webhook_url) as resp:
        assert resp.status == 405
    async with inbound_server.session.get(inbound_server.base_url + "/openapi.json") as resp:
        doc = await resp.json()
        assert doc["openapi"].startswith("3.")
        assert "/webhooks/hubspot" in doc["paths"]


async def test_health_and_metrics_are_served_on_the_app(inbound_server: InboundServer) -> None:
    async with inbound_server.session.get(inbound_server.base_url + "/healthz") as resp:
        assert resp.status == 200
    async with inbound_server.session.get(inbound_server.base_url + "/readyz") as resp:
        assert resp.status == 200, await resp.text()
    await inbound_server.post_events([company_change(900, "name", "Metric AB")])
    async with inbound_server.session.get(inbound_server.base_url + "/metrics") as resp:
        text = await resp.text()
    assert 'kleer_sync_webhook_requests_total{outcome="accepted"}' in text
    assert "kleer_sync_webhook_request_seconds_bucket" in text


def test_event_ids_are_stable_per_portal_and_event() -> None:
    assert webhook_event_id(1, 2) == webhook_event_id(1, 2)
    assert webhook_event_id(1, 2) != webhook_event_id(2, 2)
    assert isinstance(webhook_event_id(1, 2), uuid.UUID)
    _ = aiohttp  # imported for the fixture's types
