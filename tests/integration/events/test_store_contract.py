"""The event store's promises (see libs/events/store.py), against real PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.events.envelope import EventDataError, NewEvent
from libs.events.store import (
    ANY,
    NO_STREAM,
    AppendRequest,
    AppendResult,
    ConcurrencyError,
    PostgresEventStore,
)


class _InATransaction(PostgresEventStore):
    """Appends each batch in a transaction of the caller's, the way the poller and the consumers do."""

    async def append_batch(self, requests: Sequence[AppendRequest], *, conn: Any = None) -> list[AppendResult]:
        if conn is not None:
            return await super().append_batch(requests, conn=conn)
        async with self.pool.acquire() as own, own.transaction():
            return await super().append_batch(requests, conn=own)


@pytest.fixture(params=["append function", "copy"])
def store(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> PostgresEventStore:
    """Every promise holds on both ways in: the append function, and COPY (a batch of 2 or more events
    appended in a caller's transaction, here)."""
    if request.param == "copy":
        return _InATransaction(pool, copy_from_events=2)
    return PostgresEventStore(pool)


async def test_two_writers_at_the_same_expected_version_exactly_one_wins(store: PostgresEventStore) -> None:
    stream = "c1/kleer-client/1"
    await store.append(stream, [NewEvent("KleerClientChanged", {"n": 0})], NO_STREAM)

    async def writer(i: int) -> str:
        try:
            await store.append(stream, [NewEvent("KleerClientChanged", {"writer": i})], expected_version=1)
            return "won"
        except ConcurrencyError as exc:
            assert exc.stream == stream and exc.expected == 1 and exc.actual == 2
            return "conflict"

    outcomes = await asyncio.gather(writer(1), writer(2))
    assert sorted(outcomes) == ["conflict", "won"]
    events = await store.read_stream(stream)
    assert [e.version for e in events] == [1, 2]


async def test_appending_the_same_event_id_twice_stores_it_once(store: PostgresEventStore) -> None:
    event = NewEvent("KleerClientChanged", {"name": "Acme"})
    first = await store.append("c1/kleer-client/7", [event], NO_STREAM)
    again = await store.append("c1/kleer-client/7", [event], NO_STREAM)  # a retry after a lost answer
    assert first[0].inserted and not again[0].inserted
    assert first[0].position == again[0].position
    assert len(await store.read_stream("c1/kleer-client/7")) == 1
    assert await store.head() == 1


async def test_a_retried_batch_skips_its_stored_events_and_appends_the_rest(store: PostgresEventStore) -> None:
    first, second = NewEvent("T", {"i": 1}), NewEvent("T", {"i": 2})
    await store.append("c1/k/1", [first], NO_STREAM)
    await store.append("c1/k/2", [NewEvent("T", {})])
    # The answer to the first append was lost; the writer retries it with one more event.
    results = await store.append_batch([AppendRequest("c1/k/1", [first, second], NO_STREAM)])
    assert [(r.event_id, r.position, r.version, r.inserted) for r in results] == [
        (first.event_id, 1, 1, False),
        (second.event_id, 3, 2, True),
    ]
    assert [e.data["i"] for e in await store.read_stream("c1/k/1")] == [1, 2]


async def test_a_retried_batch_with_a_conflict_stores_nothing(store: PostgresEventStore) -> None:
    stored = NewEvent("T", {})
    await store.append("c1/m/1", [stored])
    await store.append("c1/m/2", [NewEvent("T", {})])
    with pytest.raises(ConcurrencyError) as caught:
        await store.append_batch(
            [
                AppendRequest("c1/m/1", [stored, NewEvent("T", {})]),
                AppendRequest("c1/m/3", [NewEvent("T", {})]),
                AppendRequest("c1/m/2", [NewEvent("T", {})], NO_STREAM),  # it exists
            ]
        )
    assert (caught.value.stream, caught.value.expected, caught.value.actual) == ("c1/m/2", 0, 1)
    assert await store.head() == 2
    assert await store.read_stream("c1/m/3") == []


async def test_a_batch_is_atomic_when_one_stream_conflicts(store: PostgresEventStore) -> None:
    await store.append("c1/a/1", [NewEvent("T", {})])
    with pytest.raises(ConcurrencyError):
        await store.append_batch(
            [
                AppendRequest("c1/a/2", [NewEvent("T", {})], NO_STREAM),
                AppendRequest("c1/a/1", [NewEvent("T", {})], NO_STREAM),  # exists already
            ]
        )
    assert await store.read_stream("c1/a/2") == []
    assert await store.head() == 1


async def test_versions_are_consecutive_per_stream_and_positions_global(store: PostgresEventStore) -> None:
    await store.append_batch(
        [
            AppendRequest("c1/s/1", [NewEvent("T", {"i": i}) for i in range(3)]),
            AppendRequest("c1/s/2", [NewEvent("T", {"i": i}) for i in range(2)]),
        ]
    )
    await store.append("c1/s/1", [NewEvent("T", {"i": 3})], expected_version=3)
    assert [e.version for e in await store.read_stream("c1/s/1")] == [1, 2, 3, 4]
    everything = await store.read_all(0, 100)
    assert [e.position for e in everything] == [1, 2, 3, 4, 5, 6]
    assert [e.data["i"] for e in everything if e.stream == "c1/s/1"] == [0, 1, 2, 3]


async def test_malformed_event_data_is_refused_with_the_event_type_named(store: PostgresEventStore) -> None:
    with pytest.raises(EventDataError, match="KleerClientChanged: data must be a JSON object"):
        await store.append("c1/x/1", [NewEvent("KleerClientChanged", ["not", "an", "object"])])  # type: ignore[arg-type]
    with pytest.raises(EventDataError, match="not JSON-serialisable"):
        await store.append("c1/x/1", [NewEvent("KleerClientChanged", {"when": object()})])
    assert await store.head() == 0


async def test_read_all_filters_by_type(store: PostgresEventStore) -> None:
    await store.append("c1/t/1", [NewEvent("A", {}), NewEvent("B", {}), NewEvent("A", {})])
    assert [e.type for e in await store.read_all(0, 10, types=["A"])] == ["A", "A"]


async def test_concurrent_writers_and_a_follower_see_every_event_once_in_order(
    store: PostgresEventStore,
) -> None:
    """8 writers x 1,000 events on random streams; a follower reading by position misses nothing."""
    writers, per_writer = 8, 1000
    rng = random.Random(7)
    written: set[uuid.UUID] = set()
    done = asyncio.Event()

    async def writer(w: int) -> None:
        sent = 0
        while sent < per_writer:
            size = min(rng.choice([1, 1, 5, 20, 50]), per_writer - sent)
            batch = [NewEvent("T", {"w": w, "i": sent + k}) for k in range(size)]
            requests = [AppendRequest(f"c1/r/{rng.randrange(200)}", [e]) for e in batch]
            await store.append_batch(requests)
            written.update(e.event_id for e in batch)
            sent += size

    seen: list[int] = []
    seen_ids: list[uuid.UUID] = []

    async def follower() -> None:
        after = 0
        while True:
            finished = done.is_set()
            page = await store.read_all(after, 500)
            for event in page:
                seen.append(event.position)
                seen_ids.append(event.event_id)
            if page:
                after = page[-1].position
            elif finished:
                return
            else:
                await asyncio.sleep(0.001)

    follow = asyncio.create_task(follower())
    await asyncio.gather(*(writer(w) for w in range(writers)))
    done.set()
    await follow
    assert len(seen_ids) == writers * per_writer
    assert set(seen_ids) == written
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(1, 4), st.booleans()),
        min_size=1,
        max_size=12,
    )
)
async def test_interleaved_appends_with_expectations_match_a_model(
    store: PostgresEventStore, plan: list[tuple[int, int, bool]]
) -> None:
    """Property: versions behave like a per-stream counter whatever the interleaving of checks."""
    prefix = uuid.uuid4().hex[:8]
    model: dict[str, int] = {}
    for stream_no, count, check in plan:
        stream = f"p/{prefix}/{stream_no}"
        current = model.get(stream, 0)
        expected = current if check else ANY
        await store.append(stream, [NewEvent("T", {}) for _ in range(count)], expected)
        model[stream] = current + count
        if check:
            with pytest.raises(ConcurrencyError):
                await store.append(stream, [NewEvent("T", {})], current)
    for stream, version in model.items():
        assert [e.version for e in await store.read_stream(stream)] == list(range(1, version + 1))
