"""``kleer_sync_dead_letters``: what a scrape of any process shows is the database's open entries.

The queue is shared: the pusher parks, an operator redrives from the admin
page or the CLI in another process. The gauge is therefore read from the
database at scrape time, so a new dead letter shows without a resolution in
the same process, and a source whose last entry was resolved elsewhere goes
back to 0 (the alert on it must clear).
"""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from libs.events.dlq import DeadLetterQueue
from libs.events.store import PostgresEventStore
from libs.observability import health
from libs.observability.health import HealthServer
from sim.broker import free_port


async def _dead_letters(port: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        sample.labels["source"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "kleer_sync_dead_letters"
        for sample in family.samples
    }


async def test_a_scrape_shows_dead_letters_parked_and_resolved_by_any_process(
    store: PostgresEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "DB_GAUGE_INTERVAL", 0.0)  # every scrape reads the database
    dlq = DeadLetterQueue(store)
    port = free_port()
    server = HealthServer(port, {}, host="127.0.0.1", pool=store.pool)
    await server.start()
    try:
        before = await _dead_letters(port)
        assert before["outbound-pusher"] == 0 and before["inbound-handlers"] == 0  # the series exist at 0

        async with store.pool.acquire() as conn, conn.transaction():
            for n in (1, 2):
                await dlq.park(conn, source="outbound-pusher", connection="c1", record=f"kleer:client:{n}",
                               reason="HubSpot refused it")
            await dlq.park(conn, source="inbound-handlers", connection="c1", record="kleer:client:3",
                           reason="Kleer refused it")
        parked = await _dead_letters(port)
        assert (parked["outbound-pusher"], parked["inbound-handlers"]) == (2, 1)

        # Resolved by another process (no call into this process's queue object): the scrape still sees it.
        await store.pool.execute("UPDATE dead_letters SET status = 'redriven' WHERE source = 'outbound-pusher'")
        resolved = await _dead_letters(port)
        assert (resolved["outbound-pusher"], resolved["inbound-handlers"]) == (0, 1)
    finally:
        await server.stop()


async def test_scrapes_are_throttled_and_survive_a_database_that_is_gone(
    store: PostgresEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    server = HealthServer(port, {}, host="127.0.0.1", pool=store.pool)
    await server.start()
    try:
        assert (await _dead_letters(port))["outbound-pusher"] == 0
        async with store.pool.acquire() as conn, conn.transaction():
            await DeadLetterQueue(store).park(conn, source="outbound-pusher", connection="c1",
                                              record="kleer:client:9", reason="refused")
        # Within DB_GAUGE_INTERVAL of the last refresh the scrape answers from memory, without a query.
        assert (await _dead_letters(port))["outbound-pusher"] == 0
        await store.pool.close()  # the database is unreachable now: the scrape still answers, with the last value
        monkeypatch.setattr(health, "DB_GAUGE_INTERVAL", 0.0)
        assert "outbound-pusher" in await _dead_letters(port)
    finally:
        await server.stop()
