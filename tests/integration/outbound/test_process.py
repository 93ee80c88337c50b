"""``kleer-sync outbound``: poller, relay and pusher in one process, health on METRICS_PORT, clean SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid

import aiohttp
import pytest

from libs.events.store import PostgresEventStore
from services.outbound.app import PUSHER_GROUP
from sim.broker import TansuBroker, free_port
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim
from tests.integration.outbound.conftest import (
    CONNECTION,
    assert_hubspot_matches,
    expected_snapshots,
    wait_until_pushed,
)

pytestmark = pytest.mark.slow


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def _finished(process: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, bytes]:
    # Wait without blocking the event loop: the simulators live in it.
    for _ in range(int(timeout / 0.05)):
        if process.poll() is not None:
            return process.communicate()
        await asyncio.sleep(0.05)
    process.kill()
    raise AssertionError(f"{process.args!r} did not finish within {timeout}s")


async def test_the_outbound_process_syncs_a_book_answers_health_and_stops_cleanly_on_sigterm(
    store: PostgresEventStore,
    database_url: str,
    broker: TansuBroker,
    kleer_sim: KleerSimServer,
    hubspot_sim: HubSpotSim,
) -> None:
    kleer_sim.seed(n_clients=40, seed=51)
    prefix = f"proc{uuid.uuid4().hex[:8]}"
    metrics_port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KLEER_API_BASE": kleer_sim.base_url,
        "KLEER_TOKEN": kleer_sim.token,
        "KLEER_COMPANY_ID": str(kleer_sim.company_id),
        "HUBSPOT_API_BASE": hubspot_sim.base_url,
        "HUBSPOT_ACCESS_TOKEN": hubspot_sim.token,
        "HUBSPOT_PORTAL_ID": str(hubspot_sim.portal_id),
        "CONNECTION_ID": CONNECTION,
        "METRICS_PORT": str(metrics_port),
        "LOG_LEVEL": "warning",
    }
    setup = await _finished(_cli("hubspot", "setup", env=env), 60)
    assert b"HubSpot is ready" in setup[0], setup[1].decode()

    expected = expected_snapshots(kleer_sim)
    process = _cli("outbound", env=env)
    try:
        for _ in range(600):  # the poller's first pass records every record once
            if await store.pool.fetchval(
                "SELECT count(*) FROM events WHERE type LIKE 'Kleer%Changed'"
            ) >= len(expected):
                break
            await asyncio.sleep(0.1)
        await wait_until_pushed(store.pool, prefix, timeout=60, group=PUSHER_GROUP)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{metrics_port}/readyz") as ready:
                assert ready.status == 200, await ready.text()
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as scrape:
                assert "kleer_sync_poll_last_success_timestamp_seconds" in await scrape.text()
        # One active poller per connection: a second one is turned away while the first holds the lock.
        second = await _finished(_cli("outbound", "poller", "--once", env=env), 60)
        assert b"another poller holds the lock" in second[1]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await _finished(process, 40)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert_hubspot_matches(hubspot_sim, expected)
