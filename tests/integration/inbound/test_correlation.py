"""One correlation id crosses HTTP: into our service's answers and log lines, out to Kleer and HubSpot.

Inside the log and Kafka it travels in the events' metadata and the message
headers (``libs/events``); these tests cover the HTTP legs.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from libs.config import Secret
from libs.hubspot.client import HubSpotClient
from libs.kleer import KleerClient
from libs.observability.logging import CORRELATION_HEADER, bind_correlation_id, configure_logging
from sim.broker import free_port
from tests.integration.inbound.conftest import InboundServer

MINTED = re.compile(r"[0-9a-f]{16}-[0-9a-f]+")  # the process's random prefix and a counter


@pytest.fixture
async def peer() -> AsyncIterator[tuple[str, list[str | None]]]:
    """A stand-in API that answers an empty list and remembers each request's correlation header."""
    seen: list[str | None] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get(CORRELATION_HEADER))
        if request.path.startswith("/crm/"):
            return web.json_response({"results": []})
        return web.json_response({"client": [], "paging": {"total": 0}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_calls_to_kleer_and_hubspot_carry_the_bound_correlation_id(
    peer: tuple[str, list[str | None]],
) -> None:
    base, seen = peer

    async def one_chain(correlation_id: str | None) -> None:
        if correlation_id is not None:
            bind_correlation_id(correlation_id)
        async with KleerClient(company_id=1, token=Secret("kleer-token"), base_url=base) as kleer:
            await kleer.clients.list_all()
        async with HubSpotClient(base_url=base, token=Secret("pat-token")) as hubspot:
            await hubspot.batch_read("companies", ["1"], properties=["name"])

    await asyncio.create_task(one_chain("poll-7f3a"))  # a task of its own: its own context
    assert seen and set(seen) == {"poll-7f3a"}
    seen.clear()
    await asyncio.create_task(one_chain(None))
    assert seen and set(seen) == {None}  # nothing bound: no header invented


async def test_every_answer_names_its_correlation_id_and_the_requests_log_lines_carry_it(
    inbound_server: InboundServer,
) -> None:
    http = inbound_server.session
    async with http.get(f"{inbound_server.base_url}/healthz", headers={CORRELATION_HEADER: "ops-check-1"}) as r:
        assert r.headers[CORRELATION_HEADER] == "ops-check-1"
    minted = set()
    for _ in range(2):
        async with http.get(f"{inbound_server.base_url}/healthz") as r:
            assert MINTED.fullmatch(r.headers[CORRELATION_HEADER])
            minted.add(r.headers[CORRELATION_HEADER])
    assert len(minted) == 2  # one per request
    buffer = io.StringIO()
    configure_logging("info", role="test", stream=buffer)  # the services' JSON logs, into the buffer
    async with http.post(f"{inbound_server.base_url}/webhooks/hubspot", data=b"[]",
                         headers={CORRELATION_HEADER: "x" * 500}) as r:  # unsigned: refused, still named
        assert r.status == 401
        named = r.headers[CORRELATION_HEADER]
    assert MINTED.fullmatch(named)  # an unusable incoming id is replaced, not echoed
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    refused = [line for line in lines if "refused" in line["event"]]
    assert refused and all(line.get("correlation_id") == named for line in refused), lines
