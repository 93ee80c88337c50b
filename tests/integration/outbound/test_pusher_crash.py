"""The pusher stopped in the middle of a batch (SIGKILL, or SIGTERM as Kubernetes stops a pod), then
restarted: HubSpot ends exactly right, with no duplicates and nothing parked."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from libs.events.store import PostgresEventStore
from libs.kleer import KleerClient
from services.outbound.app import PUSHER_GROUP
from services.outbound.snapshots import Snapshot
from sim.broker import TansuBroker, free_port
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim
from tests.integration.outbound.conftest import (
    CONNECTION,
    assert_hubspot_matches,
    expected_snapshots,
    running_outbound,
    wait_until_pushed,
)

pytestmark = pytest.mark.slow


def _start_pusher(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "outbound", "pusher"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _pusher_env(database_url: str, broker: TansuBroker, prefix: str, hubspot_sim: HubSpotSim) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": prefix,
        "HUBSPOT_API_BASE": hubspot_sim.base_url,
        "HUBSPOT_ACCESS_TOKEN": hubspot_sim.token,
        "HUBSPOT_PORTAL_ID": str(hubspot_sim.portal_id),
        "CONNECTION_ID": CONNECTION,
        "METRICS_PORT": str(free_port()),
        "LOG_LEVEL": "warning",
    }


async def _wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class PolledBook:
    """125 Kleer clients polled into the log, the pusher not started yet: its environment and what HubSpot
    must hold in the end."""

    store: PostgresEventStore
    hubspot_sim: HubSpotSim
    prefix: str
    env: dict[str, str]
    expected: dict[tuple[str, str], Snapshot]

    async def assert_exact(self) -> None:
        assert_hubspot_matches(self.hubspot_sim, self.expected)  # every record once by kleer_id, exact values
        assert sum(len(r) for r in self.hubspot_sim.store.records.values()) == len(self.expected)
        assert await self.store.pool.fetchval("SELECT count(*) FROM hubspot_ids") == len(self.expected)
        assert await self.store.pool.fetchval("SELECT count(*) FROM dead_letters") == 0


@pytest.fixture
async def book(
    store: PostgresEventStore,
    database_url: str,
    broker: TansuBroker,
    kleer_sim: KleerSimServer,
    kleer_client: KleerClient,
    hubspot_sim: HubSpotSim,
) -> AsyncIterator[PolledBook]:
    kleer_sim.seed(n_clients=125, seed=31)
    expected = expected_snapshots(kleer_sim)
    async with running_outbound(store, kleer_client, hubspot_sim, broker, pusher=False) as outbound:
        await outbound.poller.poll_once()
        yield PolledBook(store, hubspot_sim, outbound.prefix,
                         _pusher_env(database_url, broker, outbound.prefix, hubspot_sim), expected)


async def test_a_pusher_killed_mid_batch_and_restarted_leaves_hubspot_exact_without_duplicates(
    book: PolledBook,
) -> None:
    store, hubspot_sim, expected, env = book.store, book.hubspot_sim, book.expected, book.env
    hubspot_sim.set_faults(latency={"ms": 250})  # keep the batch in flight long enough to kill it there
    first = _start_pusher(env)
    try:
        await _wait_for(
            lambda: sum(hubspot_sim.store.counts().values()) > 0, 60, "the first HubSpot writes"
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    written_before_restart = sum(hubspot_sim.store.counts().values())
    assert 0 < written_before_restart < len(expected), "the kill must land in the middle of the batch"
    assert await store.pool.fetchval("SELECT count(*) FROM hubspot_ids") == 0, "nothing was committed"

    hubspot_sim.clear_faults()
    second = _start_pusher(env)
    try:
        await wait_until_pushed(store.pool, book.prefix, timeout=60, group=PUSHER_GROUP)
    finally:
        second.send_signal(signal.SIGTERM)
        _, stderr = second.communicate(timeout=30)
    assert second.returncode == 0, stderr.decode()[-2000:]
    await book.assert_exact()


async def test_a_pusher_stopped_with_sigterm_mid_batch_exits_cleanly_in_time_and_loses_nothing(
    book: PolledBook,
) -> None:
    store, hubspot_sim, expected, env = book.store, book.hubspot_sim, book.expected, book.env
    hubspot_sim.set_faults(latency={"ms": 250})  # the batch is in flight when the signal comes
    first = _start_pusher(env)
    try:
        await _wait_for(lambda: sum(hubspot_sim.store.counts().values()) > 0, 60, "the first HubSpot writes")
        written_at_signal = sum(hubspot_sim.store.counts().values())
        signalled = time.monotonic()
        first.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(first.communicate, timeout=40)
    finally:
        if first.poll() is None:
            first.kill()
    stopped_in = time.monotonic() - signalled
    assert first.returncode == 0, stderr.decode()[-2000:]
    assert stopped_in < 30, f"took {stopped_in:.1f}s: longer than the pod's grace period"
    assert written_at_signal < len(expected), "the signal must land in the middle of the sync"
    # What it wrote and committed is bookkept; the rest was handed back (its checkpoint did not pass it).
    committed = await store.pool.fetchval("SELECT count(*) FROM hubspot_ids")
    assert committed <= sum(hubspot_sim.store.counts().values())

    hubspot_sim.clear_faults()
    env["METRICS_PORT"] = str(free_port())
    second = _start_pusher(env)
    try:
        await _wait_healthy(int(env["METRICS_PORT"]), second)  # up, its signal handlers installed
        await wait_until_pushed(store.pool, book.prefix, timeout=60, group=PUSHER_GROUP)
    finally:
        second.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(second.communicate, timeout=30)
    assert second.returncode == 0, stderr.decode()[-2000:]
    await book.assert_exact()


async def _wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.poll() is None, "the pusher exited while starting"
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"the pusher did not answer /healthz within {timeout:.0f}s")
