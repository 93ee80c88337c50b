"""Group commit: many callers' appends in one transaction, one fsync.

One Postgres commit per HTTP request tops out near 800 commits/s on a small
machine (each commit waits for its fsync). ``GroupCommitter`` gathers the
``AppendRequest``s that concurrent callers submit for a few milliseconds,
appends them all with one ``append_batch`` (one transaction), then wakes
every caller with its own results.

Guarantees:

- **Durable before return.** ``submit`` returns only after the transaction
  holding the caller's events has committed; the results are the caller's
  own ``AppendResult``s (``inserted=False`` for an event_id stored before,
  including one submitted twice in the same group).
- **Isolation of failures.** If a group's transaction fails, each caller's
  requests are retried alone, so one caller's bad data (or a concurrency
  conflict on its stream) fails that caller only. A database outage fails
  every caller of the group with the database's error.
- **Bounded waiting.** A caller that finds the committer idle waits at most
  ``max_delay`` for company before its group is flushed (less when
  ``max_events`` are reached); one that arrives while a group commits waits
  for that commit only, then goes in the next group at once. One group commits
  at a time: while it commits, the next one gathers, so throughput grows with
  load instead of latency.
- ``stop`` flushes what was submitted before it and refuses new submissions
  (``GroupCommitClosed``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from libs.events.store import AppendRequest, AppendResult, PostgresEventStore


class GroupCommitClosed(RuntimeError):
    """The committer is stopped; nothing more can be submitted."""


@dataclass
class _Pending:
    requests: Sequence[AppendRequest]
    future: asyncio.Future[list[AppendResult]]
    events: int


@dataclass
class GroupCommitStats:
    """Counters for benchmarks and tests (not metrics: those live in libs.observability.metrics)."""

    groups: int = 0
    submissions: int = 0
    events: int = 0
    fallbacks: int = 0
    largest_group: int = 0
    commit_seconds: list[float] = field(default_factory=list)


class GroupCommitter:
    """Batches concurrent appends into shared transactions; ``start``/``stop`` or ``async with``."""

    def __init__(
        self,
        store: PostgresEventStore,
        *,
        max_delay: float = 0.002,
        max_events: int = 5000,
    ) -> None:
        if max_delay < 0:
            raise ValueError("max_delay must not be negative")
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.store = store
        self.max_delay = max_delay
        self.max_events = max_events
        self.stats = GroupCommitStats()
        self._queue: list[_Pending] = []
        self._queued_events = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> GroupCommitter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._task is None:
            self._closed = False
            self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        """Commit everything submitted so far, then stop."""
        self._closed = True
        self._wake.set()
        self._full.set()
        task, self._task = self._task, None
        if task is not None:
            await task

    async def submit(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Append ``requests`` in the next group; returns once they are committed."""
        return await asyncio.shield(self.enqueue(requests))

    def enqueue(self, requests: Sequence[AppendRequest]) -> asyncio.Future[list[AppendResult]]:
        """Queue ``requests`` for the next group; the future resolves once they are committed.

        ``submit`` without a coroutine of its own (no task per caller: the webhook intake's hot path). The
        future is the committer's: await it through ``asyncio.shield`` so a cancelled caller cannot cancel it.
        """
        if self._closed or self._task is None:
            raise GroupCommitClosed("the group committer is not running")
        future: asyncio.Future[list[AppendResult]] = asyncio.get_running_loop().create_future()
        events = sum(len(r.events) for r in requests)
        if events == 0:
            future.set_result([])
            return future
        self._queue.append(_Pending(requests, future, events))
        self._queued_events += events
        self._wake.set()
        if self._queued_events >= self.max_events:
            self._full.set()
        return future

    # -- the flusher -------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                if self.max_delay > 0 and self._queued_events < self.max_events and not self._closed:
                    # Woken from idle: give concurrent callers a moment to join this group. Submissions that
                    # queued while a commit ran have waited already: they go in the next group at once.
                    self._full.clear()
                    timer = asyncio.get_running_loop().call_later(self.max_delay, self._full.set)
                    try:
                        await self._full.wait()
                    finally:
                        timer.cancel()
                continue
            group = self._take_group()
            await self._commit(group)

    def _take_group(self) -> list[_Pending]:
        group: list[_Pending] = []
        events = 0
        while self._queue and (not group or events + self._queue[0].events <= self.max_events):
            pending = self._queue.pop(0)
            group.append(pending)
            events += pending.events
        self._queued_events -= events
        return group

    async def _commit(self, group: list[_Pending]) -> None:
        requests = [r for p in group for r in p.requests]
        started = time.perf_counter()
        try:
            results = await self.store.append_batch(requests)
        except asyncio.CancelledError:
            for pending in group:
                if not pending.future.done():
                    pending.future.set_exception(GroupCommitClosed("cancelled before commit"))
            raise
        except Exception as exc:
            if len(group) == 1:
                _fail(group[0], exc)
            else:
                await self._commit_one_by_one(group)
            return
        self._record(group, time.perf_counter() - started)
        by_id = {r.event_id: r for r in results}
        claimed: set[uuid.UUID] = set()
        for pending in group:
            own = _own_results(pending.requests, by_id, claimed)
            if not pending.future.done():
                pending.future.set_result(own)

    async def _commit_one_by_one(self, group: list[_Pending]) -> None:
        self.stats.fallbacks += 1
        for pending in group:
            try:
                results = await self.store.append_batch(pending.requests)
            except Exception as exc:
                _fail(pending, exc)
            else:
                if not pending.future.done():
                    by_id = {r.event_id: r for r in results}
                    pending.future.set_result(_own_results(pending.requests, by_id, set()))

    def _record(self, group: list[_Pending], seconds: float) -> None:
        stats = self.stats
        stats.groups += 1
        stats.submissions += len(group)
        stats.events += sum(p.events for p in group)
        stats.largest_group = max(stats.largest_group, len(group))
        if len(stats.commit_seconds) < 100_000:
            stats.commit_seconds.append(seconds)


def _own_results(
    requests: Sequence[AppendRequest], by_id: dict[uuid.UUID, AppendResult], claimed: set[uuid.UUID]
) -> list[AppendResult]:
    """One caller's results in its submission order (one per distinct event_id).

    ``claimed`` holds the event_ids earlier callers of the same group were
    told they inserted: a later caller submitting the same id gets
    ``inserted=False``, as it would have in a group of its own.
    """
    own: list[AppendResult] = []
    seen: set[uuid.UUID] = set()
    for request in requests:
        for event in request.events:
            result = by_id.get(event.event_id)
            if result is None or event.event_id in seen:
                continue
            seen.add(event.event_id)
            if result.inserted:
                if event.event_id in claimed:
                    result = replace(result, inserted=False)
                else:
                    claimed.add(event.event_id)
            own.append(result)
    return own


def _fail(pending: _Pending, exc: Exception) -> None:
    if not pending.future.done():
        pending.future.set_exception(exc)
