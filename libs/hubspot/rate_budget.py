"""A per-portal budget of HubSpot requests, so a full sync runs near the limit without 429s.

HubSpot limits each portal to N requests per rolling window (110 per 10 s for
public apps) shared by every process. Reacting to 429s is too late; the
budget grants requests before they are sent.

Contract (``RateBudget``): call ``acquire()`` before each request and
``observe(headers, status)`` once after it — with the answer's headers, or
``status=0`` when no answer came (connection error, timeout, cancellation).

How it counts: HubSpot counts a request when it arrives, some time after our
grant (queueing, connecting, the network) and before its answer. So a grant
counts while its request is in flight, and then for one interval after the
answer — never less than HubSpot's own window. At most ``max_requests -
safety_margin`` are counted at once (110 → 104). ``sent()`` tells the budget
that a granted request has gone out (its headers are sent), or never will.

Corrections: from each answer's ``X-HubSpot-RateLimit-*`` headers a lower
``Max`` or another interval is adopted, and when HubSpot reports more requests
spent than we count (another app or process on the portal) the difference is
booked as requests spread over the window. A 429 is a signal to back off:
nobody is granted anything for a tenth of the window, doubling on each
consecutive 429 up to a whole window.

``SlidingWindowBudget`` counts exactly as above, in process memory (one
process per portal, tests). ``PostgresRateBudget`` counts the same way for
every pod of a portal together, in Postgres (migration 020, on the database
clock): each pod reports its answers to the shared row, so a request that is
slow to arrive (a burst on new connections, a busy event loop) keeps its
grant until HubSpot has let it go, whichever pod asks next.
``UnlimitedBudget`` never waits.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from libs.events.store import untouched_session
from libs.observability.logging import get_logger

HEADER_MAX = "X-HubSpot-RateLimit-Max"
HEADER_REMAINING = "X-HubSpot-RateLimit-Remaining"
HEADER_INTERVAL = "X-HubSpot-RateLimit-Interval-Milliseconds"
HEADER_DAILY = "X-HubSpot-RateLimit-Daily"
HEADER_DAILY_REMAINING = "X-HubSpot-RateLimit-Daily-Remaining"

_log = get_logger("libs.hubspot.rate_budget")

DEFAULT_MAX_REQUESTS = 110
DEFAULT_INTERVAL_MS = 10_000
NO_ANSWER = 0  # the status to observe when a request got no answer


@runtime_checkable
class RateBudget(Protocol):
    """Grants HubSpot requests within the portal's limit.

    ``acquire(cost)`` returns once ``cost`` requests may be sent (it waits
    otherwise; a wait cancelled before it returns takes nothing).
    ``observe(headers, status)`` is called once per granted request with its
    answer's headers and status (429s included), or with ``status=0`` when no
    answer came. Neither raises for HubSpot reasons.
    """

    async def acquire(self, cost: int = 1) -> None: ...

    def sent(self, went: bool = True) -> None:
        """A granted request has gone out (``went``), or will not (it failed before): once per grant, before
        its ``observe``."""

    def observe(self, headers: Mapping[str, str], status: int = 200) -> None: ...

    async def flush(self) -> None:
        """Pass on what the budget still holds for others (the HubSpot client calls it as it closes)."""


@dataclass(frozen=True)
class RateHeaders:
    """HubSpot's rate-limit headers of one answer (absent ones are None)."""

    max: int | None = None
    remaining: int | None = None
    interval_ms: int | None = None
    daily: int | None = None
    daily_remaining: int | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> RateHeaders:
        def number(name: str) -> int | None:
            raw = headers.get(name)
            if raw is None:
                raw = headers.get(name.lower())
            try:
                return int(raw) if raw is not None else None
            except ValueError:
                return None

        return cls(number(HEADER_MAX), number(HEADER_REMAINING), number(HEADER_INTERVAL),
                   number(HEADER_DAILY), number(HEADER_DAILY_REMAINING))


def default_safety_margin(max_requests: int) -> int:
    """About 5% of the limit, at least 1 (110 → 6, so 104 requests per window)."""
    return max(1, round(max_requests * 0.05))


class BudgetPolicy:
    """Limit, interval and corrections, shared by both budgets, and the in-process budget's requests in flight
    (the Postgres one keeps its own, with their database times). Pure, no I/O.

    Times are milliseconds on the caller's clock.
    """

    def __init__(self, max_requests: int, interval_ms: int, safety_margin: int | None,
                 window_padding_ms: int | None) -> None:
        if max_requests < 1 or interval_ms < 1:
            raise ValueError("max_requests and interval_ms must be positive")
        self.configured_max = max_requests
        self.max_requests = max_requests
        self.interval_ms = interval_ms
        self._margin = safety_margin
        self.padding_ms = window_padding_ms or 0  # extra time every grant counts (beyond the rules above)
        self.consecutive_429 = 0
        self.pending_used = -1  # HubSpot's count of spent requests, not yet applied
        self.pending_block_ms = 0
        self.in_flight: deque[float] = deque()  # grant times of requests without an answer yet

    @property
    def limit(self) -> int:
        """Requests counted at most at once."""
        margin = self._margin if self._margin is not None else default_safety_margin(self.max_requests)
        return max(1, self.max_requests - margin)

    @property
    def stale_after_ms(self) -> float:
        """A grant never observed (a caller that broke the contract) stops counting as in flight after this."""
        return max(3.0 * self.interval_ms, 1_000.0)

    def cost_of(self, cost: int) -> int:
        """The grants a request of ``cost`` takes: at least one, at most the whole window."""
        return min(max(1, cost), self.limit)

    def granted(self, now: float, cost: int) -> None:
        self.in_flight.extend([now] * cost)

    def drop_stale(self, now: float) -> None:
        edge = now - self.stale_after_ms
        while self.in_flight and self.in_flight[0] < edge:
            self.in_flight.popleft()

    def answered(self) -> bool:
        """One request in flight has its answer (the oldest: they are alike); False if none was."""
        if not self.in_flight:
            return False
        self.in_flight.popleft()
        return True

    def observe(self, headers: Mapping[str, str], status: int) -> RateHeaders:
        parsed = RateHeaders.parse(headers)
        if parsed.max is not None and parsed.max > 0:
            # HubSpot's word is final when lower; never spend more than configured.
            self.max_requests = min(self.configured_max, parsed.max)
        if parsed.interval_ms is not None and parsed.interval_ms > 0:
            self.interval_ms = parsed.interval_ms
        if parsed.max is not None and parsed.remaining is not None:
            self.pending_used = max(self.pending_used, parsed.max - parsed.remaining)
        if status == 429:
            self.consecutive_429 += 1
            step = self.interval_ms / 10 * 2 ** (self.consecutive_429 - 1)
            self.pending_block_ms = max(self.pending_block_ms, int(min(self.interval_ms, step)))
        elif 200 <= status < 300:
            self.consecutive_429 = 0
        return parsed

    def take_pending(self) -> tuple[int, int]:
        used, block = self.pending_used, self.pending_block_ms
        self.pending_used, self.pending_block_ms = -1, 0
        return used, block


class SlidingWindowBudget:
    """``RateBudget`` for one process: in-flight requests plus answers of the last interval, in memory.

    Waiters are served in order. ``clock`` (seconds) and ``sleep`` can be replaced in tests.
    """

    def __init__(
        self,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        *,
        safety_margin: int | None = None,
        window_padding_ms: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.policy = BudgetPolicy(max_requests, interval_ms, safety_margin, window_padding_ms)
        self._clock = clock
        self._sleep = sleep
        self._answered: deque[float] = deque()  # answer times (and booked foreign use), ascending
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()

    def _now_ms(self) -> float:
        return self._clock() * 1000

    def _settle(self, now: float) -> None:
        policy = self.policy
        span = policy.interval_ms + policy.padding_ms
        answered = self._answered
        while answered and answered[0] <= now - span:
            answered.popleft()
        policy.drop_stale(now)
        used, block = policy.take_pending()
        counted = len(answered) + len(policy.in_flight)
        if used > counted:
            missing = min(used, 2 * policy.limit + 10) - counted
            step = span / (missing + 1)
            merged = sorted([*answered, *(now - span + step * (i + 1) for i in range(missing))])
            self._answered = deque(merged)
        if block:
            self._blocked_until = max(self._blocked_until, now + block)

    def wait_ms(self, cost: int = 1) -> float:
        """0 and the grant recorded, or the milliseconds to wait (nothing recorded)."""
        now = self._now_ms()
        self._settle(now)
        if self._blocked_until > now:
            return self._blocked_until - now
        policy = self.policy
        limit = policy.limit
        cost = policy.cost_of(cost)
        counted = len(self._answered) + len(policy.in_flight)
        if counted + cost <= limit:
            policy.granted(now, cost)
            return 0.0
        need = counted + cost - limit
        span = policy.interval_ms + policy.padding_ms
        if need <= len(self._answered):
            return max(1.0, self._answered[need - 1] + span - now)
        # Requests in flight must answer first; look again soon.
        return max(1.0, policy.interval_ms / 50)

    async def acquire(self, cost: int = 1) -> None:
        async with self._lock:
            while True:
                wait = self.wait_ms(cost)
                if wait <= 0:
                    return
                await self._sleep(wait / 1000)

    def sent(self, went: bool = True) -> None:
        return None  # this budget counts to the answer anyway

    async def flush(self) -> None:
        return None  # nobody else counts with it

    def observe(self, headers: Mapping[str, str], status: int = 200) -> None:
        if self.policy.answered():
            self._answered.append(self._now_ms())
        self.policy.observe(headers, status)

    def counted(self) -> int:
        """Requests counted now: in flight plus answered within the interval (metrics, tests)."""
        now = self._now_ms()
        self._settle(now)
        return len(self._answered) + len(self.policy.in_flight)


class PostgresRateBudget:
    """``RateBudget`` shared by every process of a portal through Postgres (migrations 006, 019, 020, 021).

    Construct with an asyncpg pool and the portal id:
    ``PostgresRateBudget(pool, portal="12345", max_requests=110, interval_ms=10_000)``.
    Each grant is one short statement (``SELECT ... FROM hubspot_rate_grant(...)``) under
    the portal row's lock, on the database clock; waiting happens outside any
    transaction. Within one process, waiters queue locally and one task asks for
    all of them in one statement (a pusher has 8 requests waiting at a time: one
    round trip each made them wait 37 ms on average for a grant that was there).
    When the window cannot take them all, they are served one at a time, so
    none waits for slots a later one needs, and each one alone *reserves* the
    slot that frees first (migration 021): its request goes out when that slot
    frees, without asking again, while the next waiter reserves the slot after.

    A grant counts as the in-process budget counts it: while its request is
    unanswered (at most ``policy.stale_after_ms``, should this process die), then
    for the interval after its answer. Each statement reports the answers since
    the one before: for each, the database time of its grant and until when it
    counts (the grant's database time plus the answer's delay on this process's
    clock, measured from just before the grant's statement went out, so never
    short, plus the interval). When no statement follows an answer soon (the
    process has nothing more to send), a report of its own goes, at most one per
    tenth of the interval. The budget's statements leave no session state: their
    connection goes back to the pool without its session reset.
    """

    _GRANT = "SELECT wait_ms, granted_at_ms FROM hubspot_rate_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"

    def __init__(
        self,
        pool: Any,
        portal: str | int,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        *,
        safety_margin: int | None = None,
        window_padding_ms: int | None = None,
    ) -> None:
        self.policy = BudgetPolicy(max_requests, interval_ms, safety_margin, window_padding_ms)
        self._pool = pool
        self.portal = str(portal)
        self._queue: deque[tuple[int, asyncio.Future[None]]] = deque()  # (cost, granted) of the waiters
        self._granter: asyncio.Task[None] | None = None
        # Grants without an answer, oldest first: (this clock before the grant's statement, its database time).
        self._unanswered: deque[tuple[float, int]] = deque()
        self._never_sent = 0  # grants whose request failed before going out, not yet observed
        self._answered_at: list[int] = []  # answers not yet reported: grant times (database clock) ...
        self._answered_until: list[int] = []  # ... and until when each counts
        self._reporter: asyncio.Task[None] | None = None
        self._reserved: dict[asyncio.Future[None], int] = {}  # waiters with a reservation not yet handed out
        self._handing_out_at = 0.0  # the event loop's time of the last reservation's hand-out
        self._held_until = 0.0  # the event loop's time a 429's block ends: reservations wait for it

    @staticmethod
    def _now_ms() -> float:
        return time.monotonic() * 1000

    async def wait_ms(self, cost: int = 1) -> int:
        """0 and the grant recorded, or the milliseconds to wait (nothing recorded). ``cost=0`` only reports
        the answers."""
        wait, _ = await self._ask(cost)
        return wait

    async def _ask(self, cost: int, *, reserve: bool = False) -> tuple[int, bool]:
        """One statement: (0, True) granted now; (ms, True) with ``reserve``, granted for that many
        milliseconds from now (the request must not go sooner); (ms, False) nothing granted, ask again then."""
        policy = self.policy
        asked = self._now_ms()
        self._drop_stale(asked)
        used, block = policy.take_pending()
        cost = policy.cost_of(cost) if cost > 0 else 0
        answered_at, answered_until = self._answered_at, self._answered_until
        self._answered_at, self._answered_until = [], []
        try:
            async with untouched_session(self._pool) as conn:
                wait, granted_at = await conn.fetchrow(
                    self._GRANT, self.portal, cost, policy.limit, policy.interval_ms + policy.padding_ms,
                    int(policy.stale_after_ms), answered_at, answered_until, used, block, reserve,
                )
        except BaseException:
            self._answered_at[:0], self._answered_until[:0] = answered_at, answered_until  # for the next one
            raise
        if granted_at is None or cost <= 0:
            return int(wait), False
        # A reserved grant's time is the statement's plus the wait: its answer's delay counts from here plus the
        # wait, so that it is measured from the grant's time at the latest (never short), as for one granted now.
        wait = max(0, int(wait))
        self._unanswered.extend([(asked + wait, granted_at)] * cost)
        return wait, True

    def _drop_stale(self, now: float) -> None:
        edge = now - self.policy.stale_after_ms
        while self._unanswered and self._unanswered[0][0] < edge:
            self._unanswered.popleft()

    async def acquire(self, cost: int = 1) -> None:
        cost = self.policy.cost_of(cost)
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((cost, granted))
        if self._granter is None:
            self._granter = asyncio.create_task(self._grant_queued())
        try:
            await granted
        except asyncio.CancelledError:
            reserved = self._reserved.pop(granted, None)
            if reserved is not None:  # a reservation not yet handed out: it goes back now
                self._give_back(reserved)
            elif granted.done() and not granted.cancelled():  # granted as we were cancelled: give it back
                self._give_back(cost)
            raise

    def _give_back(self, cost: int) -> None:
        """Return the grants of a request that will not be sent."""
        for _ in range(cost):
            self.sent(went=False)
            self.observe({}, NO_ANSWER)

    def sent(self, went: bool = True) -> None:
        if not went:
            self._never_sent += 1

    async def _grant_queued(self) -> None:
        """Grant the queued waiters, as many at once as the queue holds and the window takes."""
        group: list[tuple[int, asyncio.Future[None]]] = []
        try:
            while self._queue:
                group = self._next_group()
                await self._grant(group)
                group = []
        finally:
            self._granter = None
            left = [*group, *self._queue]  # only if this task was cancelled (the loop is closing)
            self._queue.clear()
            for _, granted in left:
                granted.cancel()

    def _next_group(self) -> list[tuple[int, asyncio.Future[None]]]:
        group: list[tuple[int, asyncio.Future[None]]] = []
        total = 0
        while self._queue:
            cost, granted = self._queue[0]
            if granted.done():  # cancelled while queued
                self._queue.popleft()
                continue
            if group and total + cost > self.policy.limit:
                break
            self._queue.popleft()
            group.append((cost, granted))
            total += cost
        return group

    async def _grant(self, group: list[tuple[int, asyncio.Future[None]]]) -> None:
        while True:
            waiting = [(cost, granted) for cost, granted in group if not granted.done()]
            if not waiting:
                return
            try:
                # One waiter alone takes the slot that frees first, reserved; a group is granted now or not at all.
                wait, granted = await self._ask(sum(cost for cost, _ in waiting), reserve=len(waiting) == 1)
            except Exception as exc:  # the database: the acquire of each waiter asking now raises it
                for _, granted_now in waiting:
                    if not granted_now.done():
                        granted_now.set_exception(exc)
                return
            if granted:
                if wait <= 0:
                    self._hand_out(waiting)
                else:  # the next waiters ask meanwhile: each reserves the slot after
                    self._hand_out_later(wait, waiting)
                return
            if len(waiting) > 1:
                # The window cannot take them all: the first alone now, the others after it, in order.
                self._queue.extendleft(reversed(waiting[1:]))
                group = waiting[:1]
                continue
            # A little jitter so pods waiting for the same slot do not all poll at once.
            await asyncio.sleep(wait / 1000 + random.uniform(0, min(0.05, wait / 10_000)))

    def _hand_out(self, waiting: list[tuple[int, asyncio.Future[None]]]) -> None:
        """The waiters' grants are theirs: their requests may go now."""
        for cost, granted in waiting:
            if granted.done():  # cancelled meanwhile: its grants go back
                self._give_back(cost)
            else:
                granted.set_result(None)

    def _hand_out_later(self, wait_ms: int, waiting: list[tuple[int, asyncio.Future[None]]]) -> None:
        """Hand reserved grants out once their slot has freed: in ``wait_ms``, and after the reservations
        before (a later statement may come back with a shorter wait for a slot that frees no sooner)."""
        loop = asyncio.get_running_loop()
        self._handing_out_at = max(loop.time() + wait_ms / 1000, self._handing_out_at + 1e-6)
        for cost, granted in waiting:
            self._reserved[granted] = cost
        loop.call_at(self._handing_out_at, self._hand_out_reserved, waiting)

    def _hand_out_reserved(self, waiting: list[tuple[int, asyncio.Future[None]]]) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._held_until:  # a 429 came after the reservation: its request waits out the block
            loop.call_at(self._held_until, self._hand_out_reserved, waiting)  # (it counts longer, never shorter)
            return
        self._hand_out([(cost, granted) for cost, granted in waiting if self._reserved.pop(granted, None)])

    def observe(self, headers: Mapping[str, str], status: int = 200) -> None:
        policy = self.policy
        never_sent = self._never_sent > 0  # this grant's request never reached HubSpot: it stops counting now
        if never_sent:
            self._never_sent -= 1  # even when its grant went stale already: it must not pass to the next answer
        if self._unanswered:
            asked, granted_at = self._unanswered.popleft()
            # HubSpot counted the request when it arrived, by now: it counts for the interval from here.
            counts_for = 0 if never_sent else policy.interval_ms + policy.padding_ms
            self._answered_at.append(granted_at)
            self._answered_until.append(granted_at + math.ceil(self._now_ms() - asked) + counts_for)
            if self._reporter is None:
                self._reporter = asyncio.get_running_loop().create_task(self._report_soon())
        policy.observe(headers, status)
        if status == 429 and self._reserved:  # the next statement tells the other processes; these are granted
            self._held_until = max(self._held_until, asyncio.get_running_loop().time() + policy.pending_block_ms / 1000)

    async def _report_soon(self) -> None:
        """Report the answers if no statement has taken them within a tenth of the interval (a process with
        nothing more to send, or waiting for the window): until then the other processes count those grants
        as in flight, which costs them nothing while the window holds enough answered grants to wait for
        (they wait for the earliest to leave it), and a look again a fiftieth of the interval later when not.
        Sooner (a fiftieth), these reports took a quarter of the budget's statement time in a push's profile."""
        try:
            await asyncio.sleep(max(0.005, self.policy.interval_ms / 10_000))
            await self.flush()  # what a grant's statement has not taken meanwhile
        except Exception as exc:  # the database: the next statement reports them (they count longer till then)
            _log.warning("hubspot_budget_report_failed", portal=self.portal, error=type(exc).__name__,
                         next_step="none needed: the next grant's statement reports the answers")
        finally:
            self._reporter = None

    async def flush(self) -> None:
        """Report the answers not yet reported (by ``_report_soon``, and as the HubSpot client closes)."""
        if self._answered_at:
            await self.wait_ms(0)

    async def counted(self) -> int:
        """Grants in the shared window as last stored, in flight or answered (metrics, tests)."""
        grants = await self._pool.fetchval(
            "SELECT coalesce(array_length(grants, 1), 0) FROM hubspot_rate_budget WHERE portal = $1",
            self.portal,
        )
        return int(grants or 0)


class UnlimitedBudget:
    """``RateBudget`` that never waits (simulator benchmarks, one-off scripts)."""

    async def acquire(self, cost: int = 1) -> None:
        return None

    def sent(self, went: bool = True) -> None:
        return None

    def observe(self, headers: Mapping[str, str], status: int = 200) -> None:
        return None

    async def flush(self) -> None:
        return None
