"""What the Postgres event store does beyond the shared contract: plans and pooled sessions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from libs.events.envelope import NewEvent
from libs.events.store import (
    COPY_FROM_EVENTS,
    AppendRequest,
    PostgresEventStore,
    _usable,
    create_pool,
    untouched_session,
)


@asynccontextmanager
async def _after_a_bulk_load_explaining(conn: asyncpg.Connection, after: int) -> AsyncIterator[list[str]]:
    """5,000 more events after position ``after``, then the plans of every statement run in the block
    (auto_explain, nested statements too)."""
    await conn.execute(
        "INSERT INTO events (position, event_id, stream, version, type, data, metadata) "
        "SELECT $1::bigint + n, gen_random_uuid(), 'c1/bulk/' || n, 1, 'T', '{}', '{}' "
        "FROM generate_series(1, 5000) AS n",
        after,
    )
    plans: list[str] = []

    def collect(_conn: object, message: asyncpg.PostgresLogMessage) -> None:
        plans.append(message.message)

    conn.add_log_listener(collect)
    await conn.execute(
        "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; "
        "SET auto_explain.log_nested_statements = on; SET auto_explain.log_level = notice"
    )
    try:
        yield plans
    finally:
        await conn.execute("RESET auto_explain.log_min_duration")
        conn.remove_log_listener(collect)


async def test_the_append_keeps_to_the_indexes_after_the_log_outgrows_its_first_plans(
    database_url: str,
) -> None:
    """Plans cached while the log was empty must not scan the whole log once it is big."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    store = PostgresEventStore(pool)
    try:
        async with pool.acquire() as conn:
            stored = NewEvent("T", {})
            await store.append("c1/plan/0", [stored], conn=conn)
            for i in range(1, 7):  # past the point where Postgres settles on a cached plan
                await store.append_batch(
                    [AppendRequest(f"c1/plan/{i}-{k}", [NewEvent("T", {})]) for k in range(20)]
                    + [AppendRequest("c1/plan/0", [stored])],
                    conn=conn,
                )
                await store.append_batch([AppendRequest(f"c1/plan/{i}", [NewEvent("T", {})])], conn=conn)
            async with _after_a_bulk_load_explaining(conn, 127) as plans:
                await store.append("c1/plan/new", [NewEvent("T", {})], conn=conn)  # one event (migration 014)
                await store.append_batch(  # a retry: the path that skips stored events
                    [AppendRequest("c1/plan/0", [stored]), AppendRequest("c1/plan/7", [NewEvent("T", {})])],
                    conn=conn,
                )
        inserts = [p for p in plans if "INSERT INTO events" in p]
        assert len(inserts) == 2, plans
        assert all("Seq Scan on events" not in p for p in plans), "\n\n".join(plans)
        # every look-up of the log (stored ids, stream heads, the log head) walks an index; the one-event
        # path inserts VALUES and looks its heads up in statements of their own
        lookups = [p for p in plans if "FROM events e" in p]
        assert len(lookups) >= 4 and all("Index" in p for p in lookups), "\n\n".join(plans)
        assert await store.head() == 5129
    finally:
        await pool.close()


async def test_the_copy_append_looks_the_heads_up_by_index_after_the_log_outgrows_its_first_plans(
    database_url: str,
) -> None:
    """The opening of a COPY append (migration 016) walks indexes, whatever plans it cached on a small log."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    store = PostgresEventStore(pool, copy_from_events=2)
    try:
        async with pool.acquire() as conn:
            stored = NewEvent("T", {})
            await store.append("c1/plan/0", [stored], conn=conn)
            for i in range(1, 7):  # past the point where Postgres settles on a cached plan
                async with conn.transaction():
                    await store.append_batch(
                        [AppendRequest(f"c1/plan/{i}-{k}", [NewEvent("T", {})]) for k in range(20)]
                        + [AppendRequest("c1/plan/0", [stored])],
                        conn=conn,
                    )
            async with _after_a_bulk_load_explaining(conn, 121) as plans, conn.transaction():
                results = await store.append_batch(
                    [AppendRequest("c1/plan/0", [stored, NewEvent("T", {})]), AppendRequest("c1/plan/7", [NewEvent("T", {})])],
                    conn=conn,
                )
        lookups = [p for p in plans if "FROM events e" in p]
        assert len(lookups) >= 3, "\n\n".join(plans)  # stored ids, stream heads, the log head
        assert all("Seq Scan on events" not in p for p in plans), "\n\n".join(plans)
        assert [(r.position, r.version, r.inserted) for r in results] == [(1, 1, False), (5122, 2, True), (5123, 1, True)]
    finally:
        await pool.close()


async def test_a_large_batch_goes_in_by_copy_and_with_the_callers_transaction(store: PostgresEventStore) -> None:
    """A batch of COPY size: numbered like any other, rolled back with the caller's transaction, and in a
    transaction of its own when the caller's connection has none."""
    def batch(tag: str) -> list[AppendRequest]:
        return [AppendRequest(f"c1/big/{i % 50}", [NewEvent("T", {"tag": tag, "i": i})]) for i in range(COPY_FROM_EVENTS)]

    async with store.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        results = await store.append_batch(batch("rolled back"), conn=conn)
        assert [r.position for r in results] == list(range(1, COPY_FROM_EVENTS + 1))
        await transaction.rollback()
        assert await store.head() == 0

        results = await store.append_batch(batch("kept"), conn=conn)  # no transaction open: it opens one
        assert not conn.is_in_transaction()
    assert [r.position for r in results] == list(range(1, COPY_FROM_EVENTS + 1)) and all(r.inserted for r in results)
    again = await store.append_batch(batch("ignored"))  # new event ids, the streams go on
    assert [r.version for r in again[:50]] == [COPY_FROM_EVENTS // 50 + 1] * 50
    stream = await store.read_stream("c1/big/7")
    assert [e.version for e in stream] == list(range(1, 2 * COPY_FROM_EVENTS // 50 + 1))
    assert [e.data["i"] for e in stream[: COPY_FROM_EVENTS // 50]] == list(range(7, COPY_FROM_EVENTS, 50))
    log = await store.read_all(0, 10 * COPY_FROM_EVENTS)
    assert [e.position for e in log] == list(range(1, 2 * COPY_FROM_EVENTS + 1))
    recorded = [e.recorded_at for e in log]
    assert recorded == sorted(recorded)  # recorded_at grows with position: replay's search relies on it
    assert {e.data["tag"] for e in log} == {"kept", "ignored"}


async def test_session_state_never_passes_to_the_next_user_of_a_pooled_connection(database_url: str) -> None:
    """The store skips the pool's session reset after its own statements, and only then."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    store = PostgresEventStore(pool)
    try:
        await store.append("c1/s/1", [NewEvent("T", {})])
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'leaky'")
            await conn.execute("SELECT pg_advisory_lock(4242999999)")
            await store.append("c1/s/1", [NewEvent("T", {})], conn=conn)
        for _ in range(2):
            async with pool.acquire() as conn:
                assert await conn.fetchval("SHOW application_name") != "leaky"
                assert not await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                )
                await conn.execute("SET application_name = 'leaky'")
            assert len(await store.read_all(0, 10)) == 2
    finally:
        await pool.close()


async def test_an_untouched_session_goes_back_without_the_reset_and_after_an_error_with_it(database_url: str) -> None:
    """For statements that leave no session state (the rate budget's): no reset round trip after they succeed,
    the pool's full reset after an error. (A setting made inside shows which happened; real callers make none.)"""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with untouched_session(pool) as conn:
            await conn.execute("SET application_name = 'untouched'")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == "untouched"  # no RESET ALL ran
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with untouched_session(pool) as conn:
                await conn.execute("SET application_name = 'failed'")
                await conn.execute("SELECT 1 / 0")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") not in ("untouched", "failed")
    finally:
        await pool.close()


async def test_a_pool_made_elsewhere_works_with_the_store(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        store = PostgresEventStore(pool)
        event = NewEvent("T", {"id": str(uuid.uuid4())})
        await store.append("c1/e/1", [event])
        assert (await store.get(event.event_id)) is not None
    finally:
        await pool.close()


async def test_the_appended_counter_counts_each_newly_stored_event_once_by_type(store: PostgresEventStore) -> None:
    from prometheus_client import REGISTRY

    def counted(event_type: str) -> float:
        return REGISTRY.get_sample_value("kleer_sync_events_appended_total", {"type": event_type}) or 0.0

    kinds = (f"Counted{uuid.uuid4().hex[:8]}", f"Counted{uuid.uuid4().hex[:8]}")
    before = [counted(k) for k in kinds]
    stored = NewEvent(kinds[0], {})
    await store.append_batch([AppendRequest("c1/n/1", [stored, NewEvent(kinds[1], {}), NewEvent(kinds[0], {})])])
    await store.append_batch([AppendRequest("c1/n/1", [stored, NewEvent(kinds[1], {})])])  # a retry plus one new
    assert [counted(k) - b for k, b in zip(kinds, before, strict=True)] == [2, 2]
    single = NewEvent(kinds[1], {})
    await store.append("c1/n/2", [single])
    await store.append("c1/n/2", [single])  # a retried single event: stored once, counted once
    assert [counted(k) - b for k, b in zip(kinds, before, strict=True)] == [2, 3]


async def test_the_store_keeps_a_connection_back_only_briefly_and_never_from_a_full_pool(database_url: str) -> None:
    """Between its statements the store may keep one idle connection; others never wait long for it."""
    pool = await create_pool(database_url, min_size=2, max_size=2)
    store = PostgresEventStore(pool, keep_connection_seconds=0.2)
    try:
        await store.append("c1/k/1", [NewEvent("T", {})])
        assert pool.get_idle_size() == 1  # kept back for the next statement
        pids = {await _backend_pid(store) for _ in range(3)}
        assert len(pids) == 1  # the same connection each time, not a pool round
        async with pool.acquire():  # the pool's other connection: now the pool is full
            started = asyncio.get_running_loop().time()
            async with pool.acquire():  # waits for the kept one, at most the keep time
                waited = asyncio.get_running_loop().time() - started
        assert waited < 1.0
        await asyncio.sleep(0.3)
        assert pool.get_idle_size() == 2  # given back once idle for the keep time
        async with pool.acquire():  # with the pool full after a statement, nothing is kept
            await store.append("c1/k/1", [NewEvent("T", {})])
            assert pool.get_idle_size() == 1
    finally:
        await asyncio.wait_for(pool.close(), 2.0)


async def test_a_kept_connection_the_server_closed_is_replaced_not_used(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=3)
    store = PostgresEventStore(pool, keep_connection_seconds=2.0)
    try:
        await store.append("c1/g/1", [NewEvent("T", {})])
        kept = await _backend_pid(store)
        async with pool.acquire() as admin:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", kept)
        for _ in range(50):  # until the client has read the server's goodbye
            if store._kept is None or not _usable(store._kept):
                break
            await asyncio.sleep(0.02)
        await store.append("c1/g/1", [NewEvent("T", {})])
        assert await _backend_pid(store) != kept
        assert [e.version for e in await store.read_stream("c1/g/1")] == [1, 2]
    finally:
        await asyncio.wait_for(pool.close(), 5.0)


async def _backend_pid(store: PostgresEventStore) -> int:
    """The server process of the connection the store's next statement runs on."""
    async with store._connection() as conn:
        return int(conn.get_server_pid())
