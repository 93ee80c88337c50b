"""The group committer under the webhook intake: durable before the answer, shared transactions, dedupe."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from libs.events.envelope import NewEvent
from libs.events.group_commit import DEADLINE_RESOLUTION, GroupCommitClosed, GroupCommitter
from libs.events.store import AppendRequest, PostgresEventStore


def _request(stream: str, *event_ids: uuid.UUID) -> AppendRequest:
    return AppendRequest(stream, [NewEvent("WebhookReceived", {"n": i}, {}, e) for i, e in enumerate(event_ids)])


async def _stored(store: PostgresEventStore, event_ids: list[uuid.UUID]) -> int:
    return int(await store.pool.fetchval("SELECT count(*) FROM events WHERE event_id = ANY($1::uuid[])", event_ids))


async def test_concurrent_callers_share_one_transaction_and_each_gets_its_own_results(
    store: PostgresEventStore,
) -> None:
    ids = [[uuid.uuid4() for _ in range(3)] for _ in range(20)]
    async with GroupCommitter(store, max_delay=0.05) as committer:
        futures = [committer.enqueue([_request(f"t/hubspot-company/{n}", *own)]) for n, own in enumerate(ids)]
        results = await asyncio.gather(*(asyncio.shield(f) for f in futures))
        assert committer.stats.groups == 1
    for own, result in zip(ids, results, strict=True):
        assert [r.event_id for r in result] == own
        assert all(r.inserted for r in result)
    assert await _stored(store, [e for own in ids for e in own]) == 60


async def test_an_event_id_stored_before_or_sent_twice_in_a_group_is_inserted_once(
    store: PostgresEventStore,
) -> None:
    old, new = uuid.uuid4(), uuid.uuid4()
    async with GroupCommitter(store, max_delay=0.05) as committer:
        [first] = await committer.submit([_request("t/hubspot-company/1", old)])
        assert first.inserted
        again, twice_a, twice_b = await asyncio.gather(
            committer.submit([_request("t/hubspot-company/1", old)]),
            committer.submit([_request("t/hubspot-company/2", new)]),
            committer.submit([_request("t/hubspot-company/2", new)]),
        )
    assert [r.inserted for r in again] == [False]
    assert sorted([twice_a[0].inserted, twice_b[0].inserted]) == [False, True]
    assert await _stored(store, [old, new]) == 2


async def test_a_caller_that_gives_up_does_not_cancel_the_commit(store: PostgresEventStore) -> None:
    event_id = uuid.uuid4()
    async with GroupCommitter(store) as committer, store.pool.acquire() as blocker:
        # Another session holds the log still: the commit cannot finish before the caller gives up.
        blocking = blocker.transaction()
        await blocking.start()
        await blocker.execute("LOCK TABLE events IN EXCLUSIVE MODE")
        future = committer.enqueue([_request("t/hubspot-company/3", event_id)])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(future), 0.05)
        await blocking.rollback()
        [result] = await asyncio.shield(future)
    assert result.inserted
    assert await _stored(store, [event_id]) == 1


async def test_a_caller_with_a_deadline_fails_in_time_and_the_commit_still_happens(store: PostgresEventStore) -> None:
    late, patient = uuid.uuid4(), uuid.uuid4()
    async with GroupCommitter(store) as committer, store.pool.acquire() as blocker:
        blocking = blocker.transaction()
        await blocking.start()
        await blocker.execute("LOCK TABLE events IN EXCLUSIVE MODE")
        started = asyncio.get_running_loop().time()
        timed = committer.enqueue([_request("t/hubspot-company/5", late)], timeout=0.2)
        waiting = committer.enqueue([_request("t/hubspot-company/6", patient)])  # no deadline: waits on
        with pytest.raises(TimeoutError):
            await timed
        waited = asyncio.get_running_loop().time() - started
        assert 0.2 <= waited < 0.2 + 5 * DEADLINE_RESOLUTION + 1.0, waited  # one shared timer, not per caller
        assert not waiting.done()
        await blocking.rollback()
        [result] = await waiting
    assert result.inserted
    assert await _stored(store, [late, patient]) == 2  # the caller that gave up was committed anyway


async def test_nothing_to_append_is_answered_at_once_and_a_stopped_committer_refuses(
    store: PostgresEventStore,
) -> None:
    committer = GroupCommitter(store)
    await committer.start()
    assert await committer.enqueue([AppendRequest("t/hubspot-company/4", [])]) == []
    await committer.stop()
    with pytest.raises(GroupCommitClosed):
        committer.enqueue([_request("t/hubspot-company/4", uuid.uuid4())])
