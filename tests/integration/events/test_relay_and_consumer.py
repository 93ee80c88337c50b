"""Relay and consumer against a real broker: crashes and broker data loss lose nothing, duplicate nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest

from libs.events.consumer import ConsumerConfig, EventConsumer, HandlerResult
from libs.events.dlq import DeadLetterQueue
from libs.events.envelope import NewEvent, RecordedEvent
from libs.events.kafka import DEFAULT_PARTITIONS
from libs.events.relay import Relay, RelayConfig
from libs.events.store import AppendRequest, PostgresEventStore
from services.topics import all_topic_names, make_router
from sim.broker import TansuBroker, free_port

pytestmark = pytest.mark.slow


async def _effects_table(pool: asyncpg.Pool) -> None:
    await pool.execute("CREATE TABLE test_effects (event_id uuid NOT NULL, position bigint NOT NULL)")


async def _record_effects(events: Sequence[RecordedEvent]) -> HandlerResult:
    async def write(conn: asyncpg.Connection) -> None:
        await conn.executemany(
            "INSERT INTO test_effects (event_id, position) VALUES ($1, $2)",
            [(e.event_id, e.position) for e in events],
        )

    return HandlerResult(writes=[write])


async def _append(store: PostgresEventStore, count: int, tag: str) -> None:
    for start in range(0, count, 250):
        await store.append_batch(
            [
                AppendRequest(f"c1/kleer-client/{tag}{i % 97}", [NewEvent("KleerClientChanged", {"i": i})])
                for i in range(start, min(count, start + 250))
            ]
        )


async def _wait_for_effects(pool: asyncpg.Pool, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pool.fetchval("SELECT count(DISTINCT event_id) FROM test_effects") >= expected:
            await asyncio.sleep(1.0)  # let any duplicate arrive before we count
            return
        await asyncio.sleep(0.2)
    got = await pool.fetchval("SELECT count(DISTINCT event_id) FROM test_effects")
    raise AssertionError(f"only {got} of {expected} events took effect within {timeout}s")


async def _assert_exactly_once(pool: asyncpg.Pool, expected: int) -> None:
    total, distinct = await pool.fetchrow("SELECT count(*), count(DISTINCT event_id) FROM test_effects")
    missing = await pool.fetchval(
        "SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM test_effects t WHERE t.event_id = e.event_id)"
    )
    assert (total, distinct, missing) == (expected, expected, 0)


@contextlib.asynccontextmanager
async def _running_consumer(
    store: PostgresEventStore, broker: TansuBroker, prefix: str, handler: Any = _record_effects
) -> AsyncIterator[EventConsumer]:
    consumer = EventConsumer(
        store,
        handler,
        ConsumerConfig(
            name=f"test-{prefix}",
            topics=all_topic_names(prefix)[:1],
            bootstrap_servers=broker.bootstrap_servers,
            router=make_router(prefix),  # type: ignore[arg-type]
        ),
        DeadLetterQueue(store),
    )
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        await consumer.stop()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def _running_relay(store: PostgresEventStore, broker: TansuBroker, prefix: str) -> AsyncIterator[Relay]:
    """The relay in this process (batches of 100; a broker that lost its data is noticed within 0.5 s)."""
    relay = Relay(
        store,
        make_router(prefix),  # type: ignore[arg-type]
        RelayConfig(bootstrap_servers=broker.bootstrap_servers, topics=all_topic_names(prefix), batch_size=100,
                    loss_check_interval=0.5),
    )
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        await relay.stop()
        await asyncio.wait_for(task, 30)


def _start_relay_process(database_url: str, broker: TansuBroker, prefix: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": prefix,
        "METRICS_PORT": str(free_port()),
        "LOG_LEVEL": "warning",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "relay", "--batch-size", "50"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_relay_killed_mid_publish_and_restarted_gives_each_effect_exactly_once(
    store: PostgresEventStore, pool: asyncpg.Pool, database_url: str, own_broker: TansuBroker
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    total = 20_000
    await _effects_table(pool)
    await _append(store, total, "a")
    relay = _start_relay_process(database_url, own_broker, prefix)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            published = await pool.fetchval("SELECT position FROM relay_state") or 0
            if published >= 1000:
                break
            await asyncio.sleep(0.01)
        os.kill(relay.pid, signal.SIGKILL)
        relay.wait(10)
        published = await pool.fetchval("SELECT position FROM relay_state")
        assert 0 < published < total, "the relay must be killed mid-publish for this test to mean anything"
    finally:
        if relay.poll() is None:
            relay.kill()
    relay = _start_relay_process(database_url, own_broker, prefix)
    try:
        async with _running_consumer(store, own_broker, prefix):
            await _wait_for_effects(pool, total, timeout=120)
    finally:
        relay.terminate()
        relay.wait(20)
    await _assert_exactly_once(pool, total)


async def test_a_commit_postgres_aborts_to_break_a_deadlock_is_committed_again_not_lost_nor_fatal(
    store: PostgresEventStore, pool: asyncpg.Pool, broker: TansuBroker
) -> None:
    """Two handlers' commits that lock the same rows in other orders: Postgres aborts one (nothing of it is
    applied). The consumer commits that batch again; it does not stop (an inbound handlers process did, in a
    soak, 2026-12-07)."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _effects_table(pool)
    aborted: list[int] = []

    async def handler(events: Sequence[RecordedEvent]) -> HandlerResult:
        record = (await _record_effects(events)).writes[0]

        async def write(conn: asyncpg.Connection) -> None:
            await record(conn)  # written, then the whole transaction is aborted
            if len(aborted) < 3:
                aborted.append(len(events))
                raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected (test)")

        return HandlerResult(writes=[write])

    async with _running_relay(store, broker, prefix), _running_consumer(store, broker, prefix, handler):
        await _append(store, 600, "dl")
        await _wait_for_effects(pool, 600, timeout=60)
    assert len(aborted) == 3
    await _assert_exactly_once(pool, 600)


async def test_broker_restarted_empty_mid_stream_still_delivers_every_event_once(
    store: PostgresEventStore, pool: asyncpg.Pool, own_broker: TansuBroker
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _effects_table(pool)
    async with _running_relay(store, own_broker, prefix), _running_consumer(store, own_broker, prefix):
        await _append(store, 1500, "b")
        await _wait_for_effects(pool, 1500, timeout=60)
        await _append(store, 500, "c")  # some of these are in flight when the broker dies
        own_broker.restart()  # comes back with no topics, no messages, no offsets
        await _append(store, 1000, "d")
        await _wait_for_effects(pool, 3000, timeout=120)
    await _assert_exactly_once(pool, 3000)


async def test_a_batch_fetched_before_the_broker_lost_its_data_is_read_again_not_checkpointed(
    store: PostgresEventStore, pool: asyncpg.Pool, own_broker: TansuBroker
) -> None:
    """Found by the short soak: a consumer stalled for good after a broker restart.

    It had fetched a batch from the broker that then died, noticed the relay's new broker epoch
    before handling the batch, and checkpointed the old broker's offsets under the new epoch. Its
    next start sought to those offsets in the new broker's far shorter partitions, and waited there.
    """
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _effects_table(pool)
    async with _running_relay(store, own_broker, prefix):
        async with _running_consumer(store, own_broker, prefix) as consumer:
            await _append(store, 1500, "b")
            await _wait_for_effects(pool, 1500, timeout=60)
            epoch = await pool.fetchval("SELECT max(epoch) FROM relay_state") or 0
            assert consumer._kafka is not None
            kafka = consumer._kafka
            fetch = kafka.getmany
            armed = asyncio.Event()

            async def getmany_then_lose_the_broker(*args: object, **kwargs: object) -> object:
                batches = await fetch(*args, **kwargs)
                if batches and armed.is_set():
                    armed.clear()
                    # The broker dies once this batch is in hand, and the relay sees it lost its data.
                    own_broker.restart()
                    deadline = time.monotonic() + 30
                    while (await pool.fetchval("SELECT max(epoch) FROM relay_state") or 0) == epoch:
                        assert time.monotonic() < deadline, "the relay did not notice the broker's data loss"
                        await asyncio.sleep(0.1)
                    consumer._epoch_checked = 0.0  # it reads the new epoch before handling the batch
                return batches

            kafka.getmany = getmany_then_lose_the_broker  # type: ignore[method-assign]
            armed.set()
            await _append(store, 400, "c")
            await _wait_for_effects(pool, 1900, timeout=90)
            assert not armed.is_set(), "no batch was fetched after the hook was armed"
        # A new start resumes from the checkpoints: they must hold offsets of the broker that now runs.
        async with _running_consumer(store, own_broker, prefix):
            await _append(store, 300, "d")
            await _wait_for_effects(pool, 2200, timeout=60)
    await _assert_exactly_once(pool, 2200)


async def test_a_checkpoint_offset_past_the_end_of_its_partition_resumes_from_the_start(
    store: PostgresEventStore, pool: asyncpg.Pool, own_broker: TansuBroker
) -> None:
    """A stored Kafka offset the broker does not have (it lost the data it came from) is not waited at."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _effects_table(pool)
    topic = all_topic_names(prefix)[0]
    epoch = await pool.fetchval("SELECT COALESCE(max(epoch), 0) FROM relay_state")
    await pool.executemany(
        "INSERT INTO consumer_checkpoints (consumer, topic, partition, position, kafka_offset, epoch) "
        "VALUES ($1, $2, $3, 0, 100000, $4)",
        [(f"test-{prefix}", topic, partition, epoch) for partition in range(DEFAULT_PARTITIONS)],
    )
    async with _running_relay(store, own_broker, prefix), _running_consumer(store, own_broker, prefix):
        await _append(store, 300, "e")
        await _wait_for_effects(pool, 300, timeout=60)
    await _assert_exactly_once(pool, 300)


async def test_a_paused_consumer_group_takes_nothing_until_resumed_then_everything_once(
    store: PostgresEventStore, pool: asyncpg.Pool, broker: TansuBroker
) -> None:
    from libs.events import pauses

    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _effects_table(pool)
    async with _running_relay(store, broker, prefix), _running_consumer(store, broker, prefix) as consumer:
        await _append(store, 300, "p")
        await _wait_for_effects(pool, 300, timeout=60)
        await pauses.pause(pool, consumer.config.name, reason="test")
        await asyncio.sleep(1.5)  # noticed within a second
        await _append(store, 400, "q")
        await asyncio.sleep(2.0)  # relayed by now; a running consumer would have taken them
        assert await pool.fetchval("SELECT count(*) FROM test_effects") == 300
        await pauses.resume(pool, consumer.config.name)
        await _wait_for_effects(pool, 700, timeout=60)
    await _assert_exactly_once(pool, 700)
