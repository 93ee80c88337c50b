"""The pusher's consumer handles the next batch while the last two commit, in order; a commit that finds its
checkpoints moved voids the ones after it, and the consumer reads on from Postgres's checkpoints."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from aiokafka.structs import TopicPartition

from libs.events.consumer import ConsumerConfig, HandlerResult
from services.outbound.consumer import COMMITS_BEHIND, BatchingConsumer, _Batch

TP = TopicPartition("t", 0)
COMMIT_SECONDS = 0.3


class _Kafka:
    """Hands out ``batches`` batches of one message, then nothing."""

    def __init__(self, batches: int) -> None:
        self.left = batches
        self.offset = 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if self.left <= 0:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        self.left -= 1
        self.offset += 1
        return {TP: [SimpleNamespace(offset=self.offset, headers=[])]}

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def stop(self) -> None:
        return None


class _Run:
    """A consumer whose handler and commits only log when they start and end (the commits take a while)."""

    def __init__(
        self,
        batches: int,
        moved_at: int | None = None,
        prepare: Callable[[Any], None] | None = None,
        handle_seconds: float = 0.01,
        broker_lost_after: int | None = None,
    ) -> None:
        self.log: list[tuple[str, int]] = []
        self.handle_seconds = handle_seconds
        self.broker_lost_after = broker_lost_after
        self.moved_at = moved_at
        self.discarded = 0
        self.started_over = 0
        consumer = BatchingConsumer(
            SimpleNamespace(pool=None),  # type: ignore[arg-type]
            self.handle,
            ConsumerConfig("pusher", ["t"], "127.0.0.1:1", poll_timeout_ms=50),
            None,  # type: ignore[arg-type]
            max_events=1,
            linger=0.0,
            quiet=0.0,
            prefetch=prepare is not None,
            on_discard=self.discard,
            prepare=prepare,
        )
        consumer._kafka = _Kafka(batches)  # type: ignore[assignment]
        consumer._take = self.take  # type: ignore[method-assign]
        consumer._commit_all = self.commit  # type: ignore[method-assign]
        consumer._paused_now = self.no_pause  # type: ignore[method-assign]
        consumer._follow_broker_epoch = self.same_epoch  # type: ignore[method-assign]
        consumer._update_lag = self.no_lag  # type: ignore[method-assign]
        consumer._register = self.register  # type: ignore[method-assign]
        consumer._decode = self.decode  # type: ignore[method-assign]
        self.consumer = consumer

    @staticmethod
    def decode(tp: TopicPartition, message: Any) -> Any:
        return SimpleNamespace(position=message.offset, event_id=f"e{message.offset}", metadata={})

    async def take(self, gathered: dict[TopicPartition, list[Any]]) -> _Batch:
        offset = gathered[TP][-1].offset
        event = SimpleNamespace(position=offset, event_id=f"e{offset}", metadata={})
        return _Batch({TP: [event]}, {TP: offset - 1}, {TP: offset})  # type: ignore[list-item]

    async def handle(self, events: Any) -> HandlerResult:
        self.log.append(("handle", events[0].position))
        await asyncio.sleep(self.handle_seconds)
        return HandlerResult()

    async def commit(self, batch: _Batch, result: HandlerResult) -> bool:
        n = batch.offsets[TP]
        self.log.append(("commit", n))
        await asyncio.sleep(COMMIT_SECONDS)
        self.log.append(("committed", n))
        return n != self.moved_at

    def discard(self) -> None:
        self.discarded += 1

    async def register(self, assigned: list[TopicPartition]) -> None:
        """Resume as Postgres says: another member committed batches 1 and 2, so Kafka reads on from 3."""
        self.started_over += 1
        kafka = self.consumer._kafka
        assert isinstance(kafka, _Kafka)
        kafka.offset, kafka.left = 2, 1

    async def no_pause(self) -> None:
        return None

    async def same_epoch(self) -> bool:
        """The broker epoch as the base class follows it: with ``broker_lost_after``, the broker loses its data
        once that message is fetched, and the partition is read again from the message after the last handled."""
        kafka = self.consumer._kafka
        assert isinstance(kafka, _Kafka)
        if self.broker_lost_after is None or kafka.offset != self.broker_lost_after:
            return False
        self.broker_lost_after = None
        handled = max(n for what, n in self.log if what == "handle")
        kafka.left += kafka.offset - handled
        kafka.offset = handled
        return True

    async def no_lag(self) -> None:
        return None

    async def run_until(self, done: Any, timeout: float = 10.0) -> None:
        task = asyncio.create_task(self.consumer.run())
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self.consumer._stopping.set()
        await asyncio.wait_for(task, timeout)


async def test_the_next_batch_is_handled_while_the_two_before_it_commit_in_order() -> None:
    assert COMMITS_BEHIND == 2
    run = _Run(batches=4)
    await run.run_until(lambda: ("committed", 4) in run.log)
    log = run.log
    # Batch 3 is handled while batch 1 still commits (and batch 2's commit waits for it) ...
    assert log.index(("handle", 3)) < log.index(("committed", 1))
    # ... batch 4 not before batch 1 has committed: at most two commits outstanding.
    assert log.index(("committed", 1)) < log.index(("handle", 4))
    commits = [n for what, n in log if what == "commit"]
    assert commits == [1, 2, 3, 4]
    for n in (1, 2, 3):  # one at a time, in order
        assert log.index(("committed", n)) < log.index(("commit", n + 1))


async def test_a_commit_that_finds_its_checkpoints_moved_voids_the_next_and_starts_over() -> None:
    run = _Run(batches=3, moved_at=1)
    await run.run_until(lambda: run.started_over > 0 and ("committed", 3) in run.log)
    commits = [n for what, n in run.log if what == "commit"]
    assert 2 not in commits  # batch 2 was handled on batch 1's checkpoints: never committed
    assert commits == [1, 3]  # batch 3, handled on them too, is taken again from Kafka and commits then
    assert [n for what, n in run.log if what == "handle"] == [1, 2, 3, 3]
    assert run.started_over == 1 and run.discarded == 1



async def test_a_void_commit_known_before_the_next_batch_is_taken_starts_over_at_once() -> None:
    # Handling takes longer than a commit: batch 2's commit has found its checkpoints moved by the time batch 3
    # is handled. The consumer starts over then, rather than chaining batch 3's commit to it and handling 4.
    run = _Run(batches=4, moved_at=2, handle_seconds=2 * COMMIT_SECONDS)
    await run.run_until(lambda: run.started_over > 0 and ("committed", 3) in run.log)
    assert [n for what, n in run.log if what == "handle"] == [1, 2, 3, 3]
    assert [n for what, n in run.log if what == "commit"] == [1, 2, 3]


async def test_a_failure_preparing_the_prefetched_batch_loses_none_of_its_messages() -> None:
    def prepare(events: Any) -> None:
        raise RuntimeError("work done ahead failed")

    run = _Run(batches=4, prepare=prepare)
    await run.run_until(lambda: ("committed", 4) in run.log)
    # The messages fetched ahead are handled all the same (the handler coalesces them itself).
    assert [n for what, n in run.log if what == "handle"] == [1, 2, 3, 4]


async def test_a_batch_fetched_before_the_broker_lost_its_data_is_not_handled_but_read_again() -> None:
    run = _Run(batches=4, broker_lost_after=2)
    await run.run_until(lambda: ("committed", 4) in run.log)
    # Batch 2, fetched from the broker that lost its data, is left (its offset means nothing to the new one);
    # it is handled once, as read again.
    assert [n for what, n in run.log if what == "handle"] == [1, 2, 3, 4]
