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
- **Bounded waiting.** A caller that finds the committer idle waits for
  company only while each turn of the event loop brings more submissions (the
  requests received meanwhile are being read), at most ``max_delay`` and
  ``max_events``; no fixed delay. One that arrives while a group commits waits
  for that commit only, then goes in the next group at once. One group commits
  at a time: while it commits, the next one gathers, so throughput grows with
  load instead of latency.
- **Deadlines.** ``enqueue(requests, timeout=...)`` fails the caller's future
  with ``TimeoutError`` once ``timeout`` has passed without its commit (within
  ``DEADLINE_RESOLUTION``), from one timer for all callers. Giving up, like
  cancelling the future, never cancels the commit: the requests are committed
  anyway (a retry is then a duplicate).
- ``stop`` flushes what was submitted before it and refuses new submissions
  (``GroupCommitClosed``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from libs.events.store import AppendRequest, AppendResult, PostgresEventStore

#: How late past its timeout a caller's future may fail (the deadline timer's tick).
DEADLINE_RESOLUTION = 0.05


class GroupCommitClosed(RuntimeError):
    """The committer is stopped; nothing more can be submitted."""


@dataclass(slots=True)
class _Pending:
    requests: Sequence[AppendRequest]
    future: asyncio.Future[list[AppendResult]]
    events: int
    deadline: float | None = None  # loop time after which the caller gives up


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
        self._queue: deque[_Pending] = deque()
        self._queued_events = 0
        self._committing: list[_Pending] = []
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
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
        task, self._task = self._task, None
        if task is not None:
            await task
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    async def submit(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Append ``requests`` in the next group; returns once they are committed."""
        return await asyncio.shield(self.enqueue(requests))

    def enqueue(
        self, requests: Sequence[AppendRequest], timeout: float | None = None
    ) -> asyncio.Future[list[AppendResult]]:
        """Queue ``requests`` for the next group; the future resolves once they are committed.

        ``submit`` without a coroutine of its own (no task per caller: the webhook intake's hot path). With
        ``timeout`` (seconds), the future fails with ``TimeoutError`` if the commit has not finished by then
        (checked every ``DEADLINE_RESOLUTION``; cheaper than a timer per caller). The future is the caller's
        alone: cancelling it, or its timing out, does not cancel the commit, which still happens.
        """
        if self._closed or self._task is None:
            raise GroupCommitClosed("the group committer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[AppendResult]] = loop.create_future()
        events = 0
        for request in requests:
            events += len(request.events)
        if events == 0:
            future.set_result([])
            return future
        deadline = None
        if timeout is not None:
            deadline = loop.time() + timeout
            if self._deadline_timer is None:
                self._deadline_timer = loop.call_later(DEADLINE_RESOLUTION, self._expire_deadlines)
        self._queue.append(_Pending(requests, future, events, deadline))
        self._queued_events += events
        self._wake.set()
        return future

    def _expire_deadlines(self) -> None:
        """Fail the futures of callers past their deadline; tick again while any caller waits with one."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiting = False
        for pending in (*self._committing, *self._queue):
            if pending.deadline is None or pending.future.done():
                continue
            if pending.deadline <= now:
                pending.future.set_exception(TimeoutError("the group commit did not finish in time"))
            else:
                waiting = True
        self._deadline_timer = None
        if waiting:
            self._deadline_timer = loop.call_later(DEADLINE_RESOLUTION, self._expire_deadlines)

    # -- the flusher -------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                # Woken from idle: let concurrent callers join this group. Submissions that queued while a
                # commit ran have waited already: they go in the next group at once.
                await self._gather_company()
                continue
            group = self._take_group()
            self._committing = group
            try:
                await self._commit(group)
            finally:
                self._committing = []

    async def _gather_company(self) -> None:
        """Wait while each turn of the event loop brings more submissions, at most ``max_delay``.

        The requests that arrived with the first one are being read and checked; a turn that adds nothing
        ends the wait. No timer: a lone caller on an idle server is committed at once, and under load the
        group takes everything that has arrived while the server keeps working (a fixed wait left it idle).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_delay
        while not self._closed and self._queued_events < self.max_events and loop.time() < deadline:
            queued = len(self._queue)
            await asyncio.sleep(0)
            if len(self._queue) == queued:
                return

    def _take_group(self) -> list[_Pending]:
        group: list[_Pending] = []
        events = 0
        queue = self._queue
        while queue and (not group or events + queue[0].events <= self.max_events):
            pending = queue.popleft()
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
        if _answer_in_order(group, results):
            return
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


def _answer_in_order(group: list[_Pending], results: list[AppendResult]) -> bool:
    """Hand each caller its results when the group's results are its events, in order, all inserted.

    The common case (no event_id stored before or repeated): results come in position order, which is
    the order of the batch. Each result's event_id is checked against its event; on any difference
    nothing is answered and False tells the caller to match results by event_id instead.
    """
    if len(results) != sum(p.events for p in group):
        return False
    owns: list[list[AppendResult]] = []
    i = 0
    for pending in group:
        start = i
        for request in pending.requests:
            for event in request.events:
                result = results[i]
                if result.event_id != event.event_id or not result.inserted:
                    return False
                i += 1
        owns.append(results[start:i])
    for pending, own in zip(group, owns, strict=True):
        if not pending.future.done():
            pending.future.set_result(own)
    return True


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
                    result = result._replace(inserted=False)
                else:
                    claimed.add(event.event_id)
            own.append(result)
    return own


def _fail(pending: _Pending, exc: Exception) -> None:
    if not pending.future.done():
        pending.future.set_exception(exc)
