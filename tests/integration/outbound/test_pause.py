"""``kleer-sync outbound pause`` / ``resume``: paused pushers write nothing, stay in their group, and push
everything that queued meanwhile once resumed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from libs.events import pauses
from libs.observability import metrics
from services.outbound.app import PUSHER_GROUP, pusher_consumer
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim
from tests.integration.outbound.conftest import (
    Outbound,
    assert_hubspot_matches,
    expected_snapshots,
    wait_until_pushed,
    write_requests,
)

ROOT = Path(__file__).resolve().parents[3]


async def _checkpoints(outbound: Outbound) -> dict[int, int]:
    rows = await outbound.pool.fetch(
        "SELECT partition, position FROM consumer_checkpoints WHERE consumer = $1", outbound.group
    )
    return {r["partition"]: r["position"] for r in rows}


async def test_a_paused_pusher_writes_nothing_and_pushes_what_queued_once_resumed(
    kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim, outbound_without_pusher: Outbound
) -> None:
    outbound = outbound_without_pusher
    kleer_sim.seed(n_clients=20, seed=31)
    consumer = pusher_consumer(
        outbound.store,
        outbound.pusher,
        bootstrap_servers=outbound.broker.bootstrap_servers,
        topic_prefix=outbound.prefix,
        group=outbound.group,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await outbound.sync(timeout=60)
        writes, checkpoints = write_requests(hubspot_sim), await _checkpoints(outbound)

        paused = await pauses.pause(outbound.pool, outbound.group, reason="HubSpot incident", by="user:test")
        assert (paused.reason, paused.paused_by) == ("HubSpot incident", "user:test")
        await asyncio.sleep(1.5)  # a running pusher notices within a second
        gauge = metrics.CONSUMER_PAUSED.labels(consumer=outbound.group)
        assert gauge._value.get() == 1
        kleer_sim.mutate(0.25, seed=9)
        report = await outbound.poller.poll_once()
        assert report.ok and report.changed > 0
        await asyncio.sleep(2.5)  # the relay publishes them; a running pusher would have written them by now
        assert write_requests(hubspot_sim) == writes
        assert await _checkpoints(outbound) == checkpoints
        assert not task.done()

        ended = await pauses.resume(outbound.pool, outbound.group)
        assert ended is not None and ended.paused_at == paused.paused_at
        assert await pauses.resume(outbound.pool, outbound.group) is None
        await wait_until_pushed(outbound.pool, outbound.prefix, 60, outbound.group)
        assert gauge._value.get() == 0
    finally:
        await consumer.stop()
        await asyncio.wait_for(task, 30)

    assert write_requests(hubspot_sim) > writes
    assert_hubspot_matches(hubspot_sim, expected_snapshots(kleer_sim))
    assert await outbound.pool.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_pause_and_resume_commands_pause_the_pushers_group_and_say_what_they_did(
    database_url: str, pool: asyncpg.Pool
) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}

    async def run(*args: str, dsn: str = database_url) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.cli", "outbound", *args],
            cwd=ROOT, env={**env, "DATABASE_URL": dsn}, capture_output=True, text=True, timeout=60,
        )

    paused = await run("pause", "--reason", "reviewing the first import", "--actor", "user:ops")
    assert paused.returncode == 0, paused.stderr
    assert "pushers paused since" in paused.stdout and "by user:ops (reviewing the first import)" in paused.stdout
    assert "kleer-sync outbound resume" in paused.stdout
    assert await pool.fetchval("SELECT array_agg(consumer) FROM consumer_pauses") == [PUSHER_GROUP]
    again = await run("pause")  # pausing a paused group keeps the first pause
    assert again.returncode == 0 and "by user:ops (reviewing the first import)" in again.stdout
    resumed = await run("resume")
    assert resumed.returncode == 0 and "pushers resumed" in resumed.stdout
    assert (await run("resume")).stdout.strip() == "the pushers were not paused"
    unreachable = await run("pause", dsn="postgresql://kleer:secret-pw@127.0.0.1:1/none")
    assert unreachable.returncode == 2 and "secret-pw" not in unreachable.stderr + unreachable.stdout
