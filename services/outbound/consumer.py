"""A consumer that hands the pusher large batches and keeps HubSpot busy while it commits.

The base ``EventConsumer`` calls its handler once per partition with whatever
one fetch returned (often a few hundred events spread over four partitions),
then commits, then fetches again. For HubSpot that is expensive twice over:
every call ends in partly filled requests (a batch upsert takes 100 records per
object type, an association batch 2,000, and HubSpot's rate limit counts
requests, not records), and no request is in flight while a batch commits.

This subclass

- gathers messages from all assigned partitions for up to ``linger`` seconds
  (or ``max_events``, or until none has come for ``quiet`` seconds: the
  partitions are drained, and waiting longer only delays the batch) and calls
  the handler once with all of them, in log order;
- commits the effects and every partition's checkpoint (with its Kafka offset
  and the broker epoch, as the base class does) in one transaction;
- with ``pipeline`` on, commits in the background while the handler already
  works on the next batch: batch N+1 is handled while batch N-1 commits and
  batch N's commit waits for it (``COMMITS_BEHIND``), so the handler must not
  rely on the last two batches' rows being committed (``Pusher`` keeps what it
  wrote in memory). Commits stay in order; one that finds its checkpoints moved
  (another member of the group committed past us) commits nothing, nor do the
  ones after it, and the consumer reads on from Postgres's checkpoints. A stop
  finishes the batches in flight and their commits first;
- while its group is paused (``kleer-sync outbound pause``), commits the batch
  in flight and takes nothing more until resumed;
- with ``prefetch`` on, fetches and decodes batch N+1's messages while the
  handler of batch N waits for HubSpot, so that the next batch's requests
  start sooner (which of them are new is still decided against the
  checkpoints when the batch is taken), and hands them to ``prepare``.

Dedupe, gap filling, broker-epoch changes, database restarts (the batch in flight is
forgotten and taken again from the checkpoints), retries and parking are the base
class's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import asyncpg
from aiokafka.structs import TopicPartition

from libs.events.consumer import ConsumerConfig, EventConsumer, HandlerResult
from libs.events.dlq import DeadLetterQueue
from libs.events.envelope import RecordedEvent
from libs.events.kafka import MARKER_HEADER, Stopped, header
from libs.events.outage import database_unavailable
from libs.events.store import PostgresEventStore
from libs.observability import metrics
from libs.observability.logging import get_logger

log = get_logger(__name__)
_POSITION = attrgetter("position")


@dataclass(frozen=True)
class _Batch:
    """New events per partition, the checkpoints they follow, the last Kafka offset read and the broker epoch
    that offset belongs to (a broker that lost its data numbers its offsets anew)."""

    events: dict[TopicPartition, list[RecordedEvent]]
    after: dict[TopicPartition, int]
    offsets: dict[TopicPartition, int]
    epoch: int = 0

    def ordered(self) -> list[RecordedEvent]:
        return sorted((e for batch in self.events.values() for e in batch), key=lambda e: e.position)


# Events per pusher batch at most (the consumer gathers up to this many for up to ``PUSH_LINGER_S``). Measured with
# bench_outbound --only unlimited, one sitting: 20,000 made 5,529-5,642 records/s end to end, 1,000-8,000
# made 5,808-6,674 (the next batch starts sooner and the last one ends sooner), with as few HubSpot requests
# (1.036-1.040 x the minimum). 5,000 keeps 50 full upserts per object type in one batch.
PUSH_BATCH_EVENTS = 5_000
# Commits not yet done while the next batch is handled: the one under way and one waiting for it. With one
# (the handler waited for the last batch's commit before the next), each pusher sat 0.1-0.3 s a batch with no
# request out while Postgres committed 5,000 invoices or line items (bench_outbound (b), 2026-12-07).
COMMITS_BEHIND = 2
# Seconds a pusher batch gathers, at most, while messages keep coming (a drained backlog ends it sooner, after
# ``quiet``). Every batch ends in a partly filled request per object type and per association pair, so while a
# poll streams in, the fewer batches the fewer requests: two pushers keep up with the stream and took a
# second's worth (about 2,200 events) per batch at 1 s; at 2 s a batch comes near PUSH_BATCH_EVENTS. Measured
# (bench_outbound --only unlimited, 2026-12-08, alternating): (a) 1.041 and 1.038 at 2 s against 1.051 and
# 1.054 at 1 s (3,102 and 3,094 requests against 3,132 and 3,141), (c) within its noise. A change reaches
# HubSpot up to a second later while a poll streams; the poll itself runs every 15 minutes or more.
PUSH_LINGER_S = 2.0


def _void(commit: asyncio.Task[bool]) -> bool:
    """A commit done that committed nothing (its checkpoints had moved, or the one before it did)."""
    return commit.done() and not commit.cancelled() and commit.exception() is None and not commit.result()


class BatchingConsumer(EventConsumer):
    def __init__(
        self,
        store: PostgresEventStore,
        handler: Callable[[Sequence[RecordedEvent]], Awaitable[HandlerResult]],
        config: ConsumerConfig,
        dlq: DeadLetterQueue,
        *,
        max_events: int = PUSH_BATCH_EVENTS,
        linger: float = PUSH_LINGER_S,
        quiet: float = 0.6,
        pipeline: bool = True,
        prefetch: bool = True,
        on_idle: Callable[[], Awaitable[Any]] | None = None,
        idle_interval: float = 10.0,
        idle_first: float = 0.5,
        on_discard: Callable[[], None] | None = None,
        prepare: Callable[[Sequence[RecordedEvent]], None] | None = None,
    ) -> None:
        super().__init__(store, handler, config, dlq)
        self.max_events = max_events
        self.linger = linger
        # A batch stops gathering once no message has come for this long: the end of a sync's backlog went
        # to HubSpot a whole linger late (bench_outbound (b): a second with no request before the last batch).
        # Not sooner than 0.6 s: while a poll streams in, the relay publishes in bursts, and a 0.2 s pause
        # ended batches of a median 1,764 events, with two pushers one partial upsert per object type each
        # (bench_outbound (a) 1.069-1.079; 1.040-1.041 at 0.6 s, with (b) and (c) within their noise).
        self.quiet = min(quiet, linger)
        self.pipeline = pipeline
        self.prefetch = prefetch
        self._ahead: asyncio.Task[dict[TopicPartition, list[Any]]] | None = None  # the next batch, prefetched
        self._decoded: dict[tuple[TopicPartition, int], RecordedEvent] = {}  # its events, by partition and offset
        self.on_idle = on_idle
        self.idle_interval = idle_interval
        # The idle chore (the pusher's sweep of waiting associations) runs soon after work, then ever less
        # often while it finds nothing: a child whose parent another pusher wrote last waits about a second,
        # not a whole interval, and an idle pusher asks Postgres once per ``idle_interval``.
        self.idle_first = min(idle_first, idle_interval)
        self._idle_wait = idle_interval
        self.on_discard = on_discard  # a handled batch will not be committed: drop what the handler remembers
        # Given a prefetched batch's events, in log order, as they decode: the handler's work that needs nothing
        # else (the pusher coalesces them), done while the batch before waits for HubSpot, not after it.
        self.prepare = prepare
        self._last_idle = time.monotonic()

    async def run(self) -> None:
        if self._kafka is None:
            try:
                await self.start()
            except Stopped:
                return
        # The handled batches' commits, oldest first; each starts once the one before has committed.
        commits: deque[asyncio.Task[bool]] = deque()
        try:
            while not self._stopping.is_set():
                try:
                    pause = await self._paused_now()
                    if pause is not None:
                        if not await self._settle_all(commits):  # the batches in flight commit before the pause
                            await self._start_over()
                        await self._hold_while_paused(pause)
                        continue
                    gathered = await self._next_messages()
                    if await self._follow_broker_epoch():
                        # What was just fetched may come from the broker that lost its data (its offsets mean
                        # nothing to the new one): it is read again, from the start, as the base class does.
                        self._drop_ahead()
                        continue
                    if not gathered:
                        if commits:
                            if not await self._settle_all(commits):
                                await self._start_over()
                        else:
                            await self._maybe_idle()
                        continue
                    batch = await self._take(gathered)
                    if batch is None:
                        continue
                    started = time.perf_counter()
                    handling = asyncio.ensure_future(self._run_handler(batch.ordered()))
                    if self.prefetch:  # while the handler waits for HubSpot
                        self._ahead = asyncio.create_task(self._prefetched())
                    result = await handling  # overlaps the commits of the batches before
                    log.info(
                        "batch handled",
                        consumer=self.config.name,
                        events=sum(len(e) for e in batch.events.values()),
                        seconds=round(time.perf_counter() - started, 3),
                    )
                    if not await self._settle_all(commits, keep=COMMITS_BEHIND - 1):
                        # Another member committed past us meanwhile: what was handled since is void.
                        with contextlib.suppress(Exception):
                            await result.settled()
                        await self._start_over()
                        continue
                    previous = commits[-1] if commits else None
                    commits.append(asyncio.create_task(self._commit_after(previous, batch, result)))
                    self._idle_wait = self.idle_first
                    for tp, events in batch.events.items():  # tentative, so the next batch starts after it
                        self._checkpoints[(tp.topic, tp.partition)] = events[-1].position
                    if not self.pipeline and not await self._settle_all(commits):
                        await self._start_over()
                except Exception as exc:
                    if not database_unavailable(exc):
                        raise
                    # The batches in flight may or may not have committed: Postgres says which, once it is back.
                    self._drop_ahead()
                    await self._abandon(commits)
                    self._discarded()
                    log.warning("database unavailable; resuming from the checkpoints once it is back",
                                consumer=self.config.name, error=repr(exc))
                    await self._resume_after_outage()
        finally:
            self._drop_ahead()
            with contextlib.suppress(Exception):
                await self._settle_all(commits)
            await self._abandon(commits)
            kafka, self._kafka = self._kafka, None
            if kafka is not None:
                await kafka.stop()

    async def _settle_all(self, commits: deque[asyncio.Task[bool]], keep: int = 0) -> bool:
        """Wait for the oldest commits until ``keep`` are left; False (the rest waited for as well) if one of
        them found its checkpoints moved, and so committed nothing, nor did the ones after it."""
        while len(commits) > keep:
            if not await self._settle(commits.popleft()):
                await self._abandon(commits)
                return False
        if any(_void(commit) for commit in commits):  # one of those kept already knows: start over now, not a
            await self._abandon(commits)  # batch later (the next batch would be handled for nothing)
            return False
        return True

    @staticmethod
    async def _abandon(commits: deque[asyncio.Task[bool]]) -> None:
        """Wait for these commits, whatever they end in (an outage, a commit before them that found its
        checkpoints moved: they commit nothing then)."""
        while commits:
            with contextlib.suppress(Exception):
                await commits.popleft()

    async def _commit_after(self, previous: asyncio.Task[bool] | None, batch: _Batch, result: HandlerResult) -> bool:
        """``_commit_all`` once the batch before has committed; nothing (False) if it did not."""
        if previous is not None and not await previous:
            with contextlib.suppress(Exception):
                await result.settled()
            return False
        return await self._commit_all(batch, result)

    async def _start_over(self) -> None:
        """A commit found its partitions' checkpoints moved (another member of the group committed past us):
        forget what was handled since, and read on from the checkpoints Postgres holds."""
        self._discarded()
        self._drop_ahead()
        if self._kafka is not None:
            await self._register(list(self._kafka.assignment()))

    async def _settle(self, commit: asyncio.Task[bool]) -> bool:
        committed = await commit
        if committed:
            await self._update_lag()
        return committed

    async def _next_messages(self) -> dict[TopicPartition, list[Any]]:
        """The messages of the next batch: prefetched during the last one, or fetched now."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return await self._gather()
        try:
            return await ahead
        except Exception as exc:  # the prefetch's fetch (or decoding) failed: fetch again, here
            log.warning("prefetch failed; fetching again", consumer=self.config.name, error=repr(exc))
            self._decoded.clear()
            return await self._gather()

    async def _prefetched(self) -> dict[TopicPartition, list[Any]]:
        """Fetch the next batch's messages and decode their events (``_decode`` finds them then)."""
        gathered = await self._gather()
        decoded = self._decoded
        for tp, messages in gathered.items():
            for start in range(0, len(messages), 500):
                for message in messages[start : start + 500]:
                    if header(message, MARKER_HEADER) is not None:
                        continue
                    with contextlib.suppress(Exception):  # a bad message is reported when it is taken
                        decoded[(tp, message.offset)] = self._decode(tp, message)
                await asyncio.sleep(0)  # let the handler's answers in between
        if self.prepare is not None and decoded:
            try:
                self.prepare(sorted(decoded.values(), key=_POSITION))
            except Exception as exc:  # only work done ahead: the handler does it again; the messages stay
                log.warning("preparing the next batch failed; its handler will do it", consumer=self.config.name,
                            error=repr(exc))
        return gathered

    def _decode(self, tp: TopicPartition, message: Any) -> RecordedEvent:
        found = self._decoded.pop((tp, message.offset), None)
        return found if found is not None else super()._decode(tp, message)

    def _drop_ahead(self) -> None:
        """Forget the prefetched batch (an outage, a stop, the broker's data gone): it is fetched again."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.cancel()
        self._decoded.clear()

    async def _gather(self) -> dict[TopicPartition, list[Any]]:
        assert self._kafka is not None
        gathered: dict[TopicPartition, list[Any]] = {}
        count = 0
        deadline: float | None = None
        while count < self.max_events and not self._stopping.is_set():
            if deadline is None:
                timeout = self.config.poll_timeout_ms
            else:
                timeout = max(0, int(min(deadline - time.monotonic(), self.quiet) * 1000))
            try:
                batches = await self._kafka.getmany(timeout_ms=timeout, max_records=self.max_events - count)
            except Exception as exc:
                log.warning("consumer fetch failed; retrying", consumer=self.config.name, error=str(exc))
                await asyncio.sleep(0.5)
                break
            for tp, messages in batches.items():
                gathered.setdefault(tp, []).extend(messages)
                count += len(messages)
            if deadline is None:
                if not batches:
                    break  # nothing arrived within one poll timeout
                deadline = time.monotonic() + self.linger
            elif not batches:
                break  # quiet for ``quiet`` seconds: drained
            if time.monotonic() >= deadline:
                break
        return gathered

    async def _take(self, gathered: dict[TopicPartition, list[Any]]) -> _Batch | None:
        after = {tp: self._checkpoints.get((tp.topic, tp.partition), 0) for tp in gathered}
        events: dict[TopicPartition, list[RecordedEvent]] = {}
        for tp, messages in gathered.items():
            found = await self._new_events(tp, messages, after[tp])
            if found:
                events[tp] = found
        self._decoded.clear()  # what the prefetch decoded is taken now; the rest is stale
        if not events:
            return None
        return _Batch(events, after, {tp: gathered[tp][-1].offset for tp in events}, self._epoch or 0)

    async def _commit_all(self, batch: _Batch, result: HandlerResult) -> bool:
        """Effects and every partition's checkpoint in one transaction; False if one moved under us."""
        await result.settled()  # the handler's work still under way (the pusher's associations)
        started = time.perf_counter()

        async def commit(conn: asyncpg.Connection) -> dict[tuple[str, int], int]:
            moved: dict[tuple[str, int], int] = {}
            for tp in batch.events:
                stored = await self._lock_checkpoint(conn, tp)
                if stored is not None and stored > batch.after[tp]:
                    moved[(tp.topic, tp.partition)] = stored
            if not moved:
                await self._apply(
                    conn,
                    result,
                    [(tp, events[-1].position, batch.offsets[tp]) for tp, events in batch.events.items()],
                    epoch=batch.epoch,
                )
            return moved

        moved = await self._in_transaction(commit)
        if moved:
            # Nothing of this batch was committed: back to where it started (a later batch then reads the
            # events in between from Postgres), except where another member has moved on.
            for tp in batch.events:
                self._checkpoints[(tp.topic, tp.partition)] = batch.after[tp]
            self._checkpoints.update(moved)
            return False
        result.committed()
        handled = sum(len(events) for events in batch.events.values())
        log.info(
            "batch committed",
            consumer=self.config.name,
            events=handled,
            seconds=round(time.perf_counter() - started, 3),
        )
        self.handled += handled
        metrics.CONSUMER_HANDLED.labels(consumer=self.config.name, outcome="handled").inc(handled)
        return True

    def _discarded(self) -> None:
        if self.on_discard is not None:
            self.on_discard()

    async def _maybe_idle(self) -> None:
        if self.on_idle is None or time.monotonic() - self._last_idle < self._idle_wait:
            return
        self._last_idle = time.monotonic()
        found: Any = None
        try:
            found = await self.on_idle()
        except Exception as exc:  # an idle chore must never stop the consumer
            log.warning("idle task failed", consumer=self.config.name, error=repr(exc))
        # Something done: soon again. Nothing: wait twice as long as last time, up to idle_interval.
        self._idle_wait = self.idle_first if found else min(self._idle_wait * 2, self.idle_interval)
