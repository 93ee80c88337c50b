"""The relay as a process: graceful SIGTERM, readiness that follows its dependencies, start-up errors."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import aiohttp
import asyncpg
import pytest

from libs.events.envelope import NewEvent
from libs.events.store import AppendRequest, PostgresEventStore
from sim.broker import TansuBroker, free_port

pytestmark = pytest.mark.slow


def _relay(database_url: str, bootstrap: str, metrics_port: int, prefix: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_PREFIX": prefix,
        "METRICS_PORT": str(metrics_port),
        "LOG_LEVEL": "info",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "relay", "--batch-size", "100"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def _status(url: str) -> int:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r,
        ):
            return r.status
    except aiohttp.ClientError:
        return 0


async def _wait_status(url: str, wanted: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        status = await _status(url)
        if status == wanted:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{url} answered {status}, not {wanted}, within {timeout}s")


async def test_sigterm_mid_publish_exits_cleanly_and_a_restart_loses_nothing(
    store: PostgresEventStore, pool: asyncpg.Pool, database_url: str, own_broker: TansuBroker
) -> None:
    for start in range(0, 20_000, 1000):
        await store.append_batch(
            [
                AppendRequest(f"c/kleer-client/{i}", [NewEvent("KleerClientChanged", {"i": i})])
                for i in range(start, start + 1000)
            ]
        )
    prefix = f"t{uuid.uuid4().hex[:8]}"
    relay = _relay(database_url, own_broker.bootstrap_servers, free_port(), prefix)
    deadline = time.monotonic() + 60
    while (
        await pool.fetchval("SELECT position FROM relay_state") or 0
    ) < 500 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    relay.send_signal(signal.SIGTERM)
    assert relay.wait(30) == 0, relay.stdout.read().decode() if relay.stdout else ""
    assert time.monotonic() - started < 25  # inside the grace period
    stopped_at = await pool.fetchval("SELECT position FROM relay_state")
    relay = _relay(database_url, own_broker.bootstrap_servers, free_port(), prefix)
    try:
        deadline = time.monotonic() + 90
        while await pool.fetchval("SELECT position FROM relay_state") < 20_000:
            assert time.monotonic() < deadline, "the restarted relay did not publish the rest"
            await asyncio.sleep(0.1)
    finally:
        relay.terminate()
        relay.wait(30)
    assert 0 < stopped_at <= 20_000
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        f"{prefix}.outbound.changes",
        bootstrap_servers=own_broker.bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(seen) < 20_000 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for messages in batches.values():
                for message in messages:
                    if message.value:
                        seen.add(int(message.value.split(b'"position":', 1)[1].split(b",", 1)[0]))
    finally:
        await consumer.stop()
    assert seen == set(range(1, 20_001))


async def test_readyz_fails_while_the_broker_is_down_and_recovers_by_itself(
    database_url: str, own_broker: TansuBroker
) -> None:
    port = free_port()
    relay = _relay(database_url, own_broker.bootstrap_servers, port, f"t{uuid.uuid4().hex[:8]}")
    try:
        await _wait_status(f"http://127.0.0.1:{port}/readyz", 200)
        assert await _status(f"http://127.0.0.1:{port}/healthz") == 200
        own_broker.stop()
        await _wait_status(f"http://127.0.0.1:{port}/readyz", 503)
        own_broker.start()
        await _wait_status(f"http://127.0.0.1:{port}/readyz", 200)
    finally:
        relay.terminate()
        relay.wait(30)


def test_a_broker_that_is_down_at_start_up_is_retried_not_fatal(database_url: str) -> None:
    metrics_port = free_port()
    relay = _relay(database_url, f"127.0.0.1:{free_port()}", metrics_port, "down")
    try:
        deadline = time.monotonic() + 60
        while not asyncio.run(_status(f"http://127.0.0.1:{metrics_port}/healthz")) == 200:
            assert relay.poll() is None, "the relay must keep retrying the broker, not exit"
            assert time.monotonic() < deadline, "the relay did not come up"
            time.sleep(0.2)
        time.sleep(3)  # several retries
        assert relay.poll() is None, "the relay must keep retrying the broker, not exit"
        assert asyncio.run(_status(f"http://127.0.0.1:{metrics_port}/readyz")) == 503
    finally:
        relay.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        output = relay.communicate(timeout=30)[0].decode()
    assert "retrying" in output and "Kafka" in output
    assert relay.returncode == 0 and time.monotonic() - stopping < 10, "SIGTERM must end the retries promptly"


def test_a_wrong_database_url_names_the_cause() -> None:
    env = {
        **os.environ,
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none",
        "KAFKA_BOOTSTRAP_SERVERS": "x:1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "relay"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "cannot connect to PostgreSQL" in result.stderr and "DATABASE_URL" in result.stderr
