"""A Postgres restart in the middle of a busy relay and consumer: nothing lost, nothing twice, nothing parked.

The server is a private cluster (``pgcluster.py``): the machine's shared one
serves every other test. The relay and the consumers run in this process, so
a component that gives up shows as a finished task, not as a dead process.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from libs.events.consumer import ConsumerConfig, EventConsumer, HandlerResult
from libs.events.dlq import DeadLetterQueue
from libs.events.envelope import NewEvent, RecordedEvent
from libs.events.outage import database_unavailable
from libs.events.relay import RELAY_LOCK, Relay, RelayConfig
from libs.events.store import AppendRequest, PostgresEventStore, create_pool
from services.outbound.consumer import BatchingConsumer
from services.topics import all_topic_names, make_router
from sim.broker import TansuBroker
from tests.reliability.pgcluster import PrivateCluster
from tests.reliability.system import create_database

pytestmark = pytest.mark.slow

TOTAL = 3000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    running = PrivateCluster(tmp_path_factory.mktemp("pg") / "postgres.log")
    running.start()
    try:
        yield running
    finally:
        running.destroy()


@pytest.fixture
async def store(cluster: PrivateCluster) -> AsyncIterator[PostgresEventStore]:
    dsn = await create_database(cluster.dsn, prefix="kspgrestart")
    pool = await create_pool(dsn, min_size=0, max_size=6)
    await pool.execute("CREATE TABLE test_effects (event_id uuid NOT NULL, position bigint NOT NULL)")
    try:
        yield PostgresEventStore(pool)
    finally:
        await pool.close()


async def _record_effects_after_a_read(pool: asyncpg.Pool, events: Sequence[RecordedEvent]) -> HandlerResult:
    # Handlers read the database before they write (own writes, id maps): that read fails during the outage.
    await pool.fetchval("SELECT count(*) FROM consumer_checkpoints")

    async def write(conn: asyncpg.Connection) -> None:
        await conn.executemany("INSERT INTO test_effects (event_id, position) VALUES ($1, $2)",
                               [(e.event_id, e.position) for e in events])

    return HandlerResult(writes=[write])


async def _append(store: PostgresEventStore, count: int, tag: str) -> None:
    for start in range(0, count, 250):
        await store.append_batch([
            AppendRequest(f"c1/kleer-client/{tag}{i % 97}", [NewEvent("KleerClientChanged", {"i": i})])
            for i in range(start, min(count, start + 250))
        ])


async def _effects(pool: asyncpg.Pool) -> int:
    try:
        return int(await pool.fetchval("SELECT count(DISTINCT event_id) FROM test_effects"))
    except Exception as exc:
        if database_unavailable(exc):
            return -1
        raise


async def _wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} within {timeout:.0f}s")


class _Gate:
    """Holds the handler after its first batch until the test starts the restart.

    Waiting for a window of "some but not all events took effect" missed it on
    a loaded machine: the consumer went past the window between two polls. The
    gate makes the restart land while the stream is certainly half-way.
    """

    def __init__(self) -> None:
        self.batches = 0
        self.holding = asyncio.Event()
        self.opened = asyncio.Event()

    async def pass_(self) -> None:
        self.batches += 1
        if self.batches > 1 and not self.opened.is_set():
            self.holding.set()
            await self.opened.wait()


def _consumer(kind: str, store: PostgresEventStore, broker: TansuBroker, prefix: str, gate: _Gate) -> EventConsumer:
    config = ConsumerConfig(name=f"test-{prefix}", topics=all_topic_names(prefix)[:1],
                            bootstrap_servers=broker.bootstrap_servers, router=make_router(prefix),  # type: ignore[arg-type]
                            max_batch=200)

    async def handler(events: Sequence[RecordedEvent]) -> HandlerResult:
        await gate.pass_()
        return await _record_effects_after_a_read(store.pool, events)

    if kind == "batching":  # the pusher's: commits in the background while the next batch is handled
        return BatchingConsumer(store, handler, config, DeadLetterQueue(store), max_events=300, linger=0.05,
                                pipeline=True)
    return EventConsumer(store, handler, config, DeadLetterQueue(store))


@pytest.mark.parametrize(("consumer_kind", "mode"), [("base", "immediate"), ("batching", "fast")])
async def test_postgres_restart_mid_stream_loses_duplicates_and_parks_nothing(
    cluster: PrivateCluster, store: PostgresEventStore, own_broker: TansuBroker, consumer_kind: str, mode: str
) -> None:
    pool = store.pool
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _append(store, TOTAL, "a")
    relay = Relay(store, make_router(prefix), RelayConfig(own_broker.bootstrap_servers, all_topic_names(prefix),
                                                           batch_size=200))  # type: ignore[arg-type]
    gate = _Gate()
    consumer = _consumer(consumer_kind, store, own_broker, prefix, gate)
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(consumer.run())]
    try:
        await asyncio.wait_for(gate.holding.wait(), 90)  # the second batch is in hand, held
        await _wait_until(lambda: _some_but_not_all(pool), 30, "the first batch did not take effect")
        gate.opened.set()  # the held batch now reads and writes while Postgres goes down
        await asyncio.to_thread(cluster.restart, mode, 2.0)
        assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
        await _append(store, TOTAL, "b")  # written after the restart: the pipeline must still be flowing

        async def all_in() -> bool:
            return await _effects(pool) >= 2 * TOTAL

        await _wait_until(all_in, 90, f"not every event took effect after the restart ({await _effects(pool)})")
        assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
        # The single-active lock died with its session: the relay publishes only once it holds it again.
        assert await pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND ((classid::bigint << 32) | objid::bigint) = $1", RELAY_LOCK) == 1
    finally:
        await consumer.stop()
        await relay.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    await asyncio.sleep(0.5)  # a duplicate delivery would land in this time
    total, distinct = await pool.fetchrow("SELECT count(*), count(DISTINCT event_id) FROM test_effects")
    assert (total, distinct) == (2 * TOTAL, 2 * TOTAL)
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0


async def _some_but_not_all(pool: asyncpg.Pool) -> bool:
    return 0 < await _effects(pool) < TOTAL


def test_outage_classification_tells_the_database_from_http_peers() -> None:
    assert database_unavailable(ConnectionRefusedError(111, "Connect call failed"))
    assert database_unavailable(asyncpg.AdminShutdownError("terminating connection due to administrator command"))
    assert database_unavailable(asyncpg.CannotConnectNowError("the database system is starting up"))
    assert database_unavailable(asyncpg.InterfaceError("connection is closed"))
    wrapped = RuntimeError("could not load the id map")
    wrapped.__cause__ = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    assert database_unavailable(wrapped)
    key = aiohttp.client_reqrep.ConnectionKey("kleer", 443, True, None, None, None, None)
    assert not database_unavailable(aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused")))
    assert not database_unavailable(TimeoutError())
    assert not database_unavailable(asyncpg.UniqueViolationError("duplicate key"))
    assert not database_unavailable(ValueError("bad data"))


def test_private_cluster_keeps_committed_rows_across_an_immediate_restart(cluster: PrivateCluster) -> None:
    async def scenario() -> tuple[int, int]:
        conn = await asyncpg.connect(cluster.dsn)
        await conn.execute("CREATE TABLE IF NOT EXISTS kept (n int)")
        await conn.execute("INSERT INTO kept VALUES (1)")
        before = int(await conn.fetchval("SELECT count(*) FROM kept"))
        postmaster = cluster.postmaster_pid()
        await asyncio.to_thread(cluster.restart, "immediate", 0.2)
        assert postmaster is not None and cluster.postmaster_pid() not in (None, postmaster)  # really restarted
        assert conn.is_closed() or not await _answers(conn)
        conn = await asyncpg.connect(cluster.dsn)
        after = int(await conn.fetchval("SELECT count(*) FROM kept"))
        await conn.close()
        return before, after

    before, after = asyncio.run(scenario())
    assert after == before >= 1


async def _answers(conn: asyncpg.Connection) -> bool:
    try:
        await conn.fetchval("SELECT 1")
    except Exception:
        return False
    return True


def test_restart_without_the_private_cluster_is_refused(tmp_path: Path) -> None:
    from tests.reliability.system import System, SystemConfig

    system = System(SystemConfig(tmp_path))
    with pytest.raises(RuntimeError, match="private cluster"):
        asyncio.run(system.restart_postgres("fast", 0.1))


async def test_supervisor_restarts_a_service_that_exits_and_the_invariant_reports_it(tmp_path: Path) -> None:
    from tests.reliability.invariants import check_processes
    from tests.reliability.processes import ManagedProcess
    from tests.reliability.system import System, SystemConfig

    marker = tmp_path / "crashed-once"
    # Exits with 3 the first time (a crash), runs the second time (after the supervisor's restart).
    script = (f"import pathlib, sys, time\nm = pathlib.Path({str(marker)!r})\n"
              "if not m.exists():\n    m.touch(); time.sleep(0.3); sys.exit(3)\ntime.sleep(60)\n")
    system = System(SystemConfig(tmp_path))
    system.started_at = time.monotonic()
    system.session = aiohttp.ClientSession()
    process = ManagedProcess("relay", [sys.executable, "-c", script], dict(os.environ), tmp_path / "relay.log",
                             module_cli=False)
    system.processes["relay"] = process
    process.start()
    supervisor = asyncio.create_task(system.supervise(interval=0.1))
    try:
        async def restarted() -> bool:
            return process.starts == 2 and process.alive

        await _wait_until(restarted, 20, "the supervisor did not restart the crashed process")
        result = check_processes(system)
    finally:
        supervisor.cancel()
        process.stop(grace=1)
        await system.session.close()
    assert [(e["process"], e["phase"], e["exit_code"]) for e in system.exits] == [("relay", "running", 3)]
    assert not result.ok and "relay exited with code 3 (running" in result.problems[0]
    assert result.figures["relay"] == {"starts": 2, "sigkills": 0, "own_exits": 1}


async def _relay_lock_holder(pool: asyncpg.Pool) -> int | None:
    pid = await pool.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND ((classid::bigint << 32) | objid::bigint) = $1", RELAY_LOCK)
    return int(pid) if pid is not None else None


async def test_relay_whose_lock_session_is_killed_takes_the_lock_again(
    store: PostgresEventStore, own_broker: TansuBroker
) -> None:
    """An idle lock session can end alone (idle timeouts, a proxy, pg_terminate_backend) while the
    relay's other connections work: it must not go on publishing without the lock."""
    pool = store.pool
    prefix = f"t{uuid.uuid4().hex[:8]}"
    relay = Relay(store, make_router(prefix), RelayConfig(own_broker.bootstrap_servers, all_topic_names(prefix)))  # type: ignore[arg-type]
    task = asyncio.create_task(relay.run())
    try:
        async def locked() -> bool:
            return await _relay_lock_holder(pool) is not None

        await _wait_until(locked, 30, "the relay never took its lock")
        first = await _relay_lock_holder(pool)
        await pool.execute("SELECT pg_terminate_backend($1)", first)

        async def locked_again() -> bool:
            holder = await _relay_lock_holder(pool)
            return holder is not None and holder != first

        await _wait_until(locked_again, 30, "the relay went on without its lock")
        assert not task.done(), task.exception()
    finally:
        await relay.stop()
        await asyncio.wait_for(task, 30)


async def test_overlapping_postgres_restart_faults_run_one_after_the_other(tmp_path: Path) -> None:
    from tests.reliability.system import System, SystemConfig

    system = System(SystemConfig(tmp_path, private_postgres=True))
    assert system.cluster is not None
    await asyncio.to_thread(system.cluster.start)
    try:
        await asyncio.gather(system.restart_postgres("fast", 0.3), system.restart_postgres("immediate", 0.3))
        assert system.postgres_restarts == 2 and system.cluster.running
        conn = await asyncpg.connect(system.cluster.dsn)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
    finally:
        system.cluster.destroy()


async def test_readyz_fails_while_postgres_is_down_and_recovers_by_itself(
    cluster: PrivateCluster, store: PostgresEventStore
) -> None:
    from libs.observability.health import HealthServer, postgres_check
    from sim.broker import free_port

    port = free_port()
    health = HealthServer(port, {"postgres": postgres_check(store.pool)}, host="127.0.0.1", pool=store.pool)
    await health.start()

    async def readyz(session: aiohttp.ClientSession) -> tuple[int, dict[str, object]]:
        async with session.get(f"http://127.0.0.1:{port}/readyz") as answer:
            return answer.status, await answer.json()

    try:
        async with aiohttp.ClientSession() as session:
            assert (await readyz(session))[0] == 200
            await asyncio.to_thread(cluster.stop, "fast")
            try:
                status, body = await readyz(session)
                assert status == 503 and "postgres" in body["failing"], body  # type: ignore[operator]
                async with session.get(f"http://127.0.0.1:{port}/metrics") as metrics_answer:
                    assert metrics_answer.status == 200  # a scrape still answers while the database is down
            finally:
                await asyncio.to_thread(cluster.start)
            deadline = time.monotonic() + 30
            while (await readyz(session))[0] != 200:  # nobody restarts the process: the pool reconnects
                assert time.monotonic() < deadline, "readyz did not recover within 30s of Postgres coming back"
                await asyncio.sleep(0.2)
    finally:
        await health.stop()
