"""A per-portal budget of HubSpot requests, so a full sync runs near the limit without 429s.

HubSpot limits each portal to N requests per rolling window (110 per 10 s for
public apps) shared by every process. Reacting to 429s is too late; the
budget grants requests before they are sent:

* it spends at most ``max_requests - safety_margin`` per window, and counts
  each grant for ``interval + padding``: HubSpot counts a request when it
  arrives, which is some time after our grant (queueing, connecting, the
  network), so the padding is the largest recent grant-to-answer latency the
  client reported (an upper bound of that delay), at least 2% and at most a
  quarter of the interval;
* ``observe(headers, status)`` corrects it from HubSpot's
  ``X-HubSpot-RateLimit-*`` headers: a lower ``Max`` or another interval is
  adopted, and when HubSpot reports more requests spent than we granted
  (another app or process on the portal) the difference is booked as grants
  spread over the window;
* a 429 is a signal to back off: nobody spends for a tenth of the window,
  doubling on each consecutive 429 up to a whole window.

``SlidingWindowBudget`` keeps the window in process memory (one process per
portal, tests); ``PostgresRateBudget`` keeps it in Postgres (table and
function from migration 006) so every pod of a portal shares one window; the
database clock orders the grants. ``UnlimitedBudget`` never waits. All three
satisfy ``RateBudget``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

HEADER_MAX = "X-HubSpot-RateLimit-Max"
HEADER_REMAINING = "X-HubSpot-RateLimit-Remaining"
HEADER_INTERVAL = "X-HubSpot-RateLimit-Interval-Milliseconds"
HEADER_DAILY = "X-HubSpot-RateLimit-Daily"
HEADER_DAILY_REMAINING = "X-HubSpot-RateLimit-Daily-Remaining"

DEFAULT_MAX_REQUESTS = 110
DEFAULT_INTERVAL_MS = 10_000


@runtime_checkable
class RateBudget(Protocol):
    """Grants HubSpot requests within the portal's limit.

    ``acquire(cost)`` returns once ``cost`` requests may be sent (it waits
    otherwise; cancelling it gives nothing back and takes nothing).
    ``observe(headers, status, latency_s)`` feeds every answer's headers and
    status back, 429s included, with the seconds from the grant to the answer
    when known. Neither raises for HubSpot reasons.
    """

    async def acquire(self, cost: int = 1) -> None: ...

    def observe(self, headers: Mapping[str, str], status: int = 200, latency_s: float | None = None) -> None: ...


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
    """The limit, window and corrections shared by both budget implementations (pure, no I/O)."""

    def __init__(self, max_requests: int, interval_ms: int, safety_margin: int | None,
                 window_padding_ms: int | None) -> None:
        if max_requests < 1 or interval_ms < 1:
            raise ValueError("max_requests and interval_ms must be positive")
        self.configured_max = max_requests
        self.max_requests = max_requests
        self.interval_ms = interval_ms
        self._margin = safety_margin
        self._padding = window_padding_ms
        self.consecutive_429 = 0
        self.pending_used = -1  # HubSpot's count of spent requests, not yet applied
        self.pending_block_ms = 0
        self._latencies_ms: deque[float] = deque(maxlen=32)

    @property
    def limit(self) -> int:
        """Requests we grant per window."""
        margin = self._margin if self._margin is not None else default_safety_margin(self.max_requests)
        return max(1, self.max_requests - margin)

    @property
    def window_ms(self) -> int:
        """How long a grant counts: the interval plus padding for the grant-to-arrival delay."""
        if self._padding is not None:
            return self.interval_ms + self._padding
        padding = max(1.0, self.interval_ms / 50, max(self._latencies_ms, default=0.0))
        return self.interval_ms + int(min(padding, self.interval_ms / 4))

    def observe(self, headers: Mapping[str, str], status: int, latency_s: float | None = None) -> RateHeaders:
        if latency_s is not None and latency_s >= 0:
            self._latencies_ms.append(latency_s * 1000)
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
    """``RateBudget`` for one process: the window lives in memory; waiters are served in order."""

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
        self._grants: list[float] = []  # ms, ascending
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()

    def _now_ms(self) -> float:
        return self._clock() * 1000

    def _settle(self, now: float) -> None:
        policy = self.policy
        edge = now - policy.window_ms
        grants = self._grants
        if grants and grants[0] <= edge:
            self._grants = grants = [g for g in grants if g > edge]
        used, block = policy.take_pending()
        if used > len(grants):
            missing = min(used, 2 * policy.limit + 10) - len(grants)
            step = policy.window_ms / (missing + 1)
            grants.extend(now - policy.window_ms + step * (i + 1) for i in range(missing))
            grants.sort()
        if block:
            self._blocked_until = max(self._blocked_until, now + block)

    def wait_ms(self, cost: int = 1) -> float:
        """0 and the grant recorded, or the milliseconds to wait (nothing recorded)."""
        now = self._now_ms()
        self._settle(now)
        if self._blocked_until > now:
            return self._blocked_until - now
        limit = self.policy.limit
        cost = min(max(1, cost), limit)
        grants = self._grants
        if len(grants) + cost <= limit:
            grants.extend([now] * cost)
            return 0.0
        return max(1.0, grants[len(grants) + cost - limit - 1] + self.policy.window_ms - now)

    async def acquire(self, cost: int = 1) -> None:
        async with self._lock:
            while True:
                wait = self.wait_ms(cost)
                if wait <= 0:
                    return
                await self._sleep(wait / 1000)

    def observe(self, headers: Mapping[str, str], status: int = 200, latency_s: float | None = None) -> None:
        self.policy.observe(headers, status, latency_s)

    def in_window(self) -> int:
        """Grants currently counted (for metrics and tests)."""
        now = self._now_ms()
        return sum(1 for g in self._grants if g > now - self.policy.window_ms)


class PostgresRateBudget:
    """``RateBudget`` shared by every process of a portal through Postgres (migration 006).

    Construct with an asyncpg pool and the portal id:
    ``PostgresRateBudget(pool, portal="12345", max_requests=110, interval_ms=10_000)``.
    Each grant is one short statement (``SELECT hubspot_rate_acquire(...)``) under
    the portal row's lock; waiting happens outside any transaction. Within one
    process, waiters queue locally so only one of them polls the database.
    """

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
        self._lock = asyncio.Lock()

    async def wait_ms(self, cost: int = 1) -> int:
        """0 and the grant recorded, or the milliseconds to wait (nothing recorded)."""
        policy = self.policy
        used, block = policy.take_pending()
        cost = min(max(1, cost), policy.limit)
        wait: int = await self._pool.fetchval(
            "SELECT hubspot_rate_acquire($1, $2, $3, $4, $5, $6)",
            self.portal, cost, policy.limit, policy.window_ms, used, block,
        )
        return wait

    async def acquire(self, cost: int = 1) -> None:
        async with self._lock:
            while True:
                wait = await self.wait_ms(cost)
                if wait <= 0:
                    return
                # A little jitter so pods waiting for the same slot do not all poll at once.
                await asyncio.sleep(wait / 1000 + random.uniform(0, min(0.05, wait / 10_000)))

    def observe(self, headers: Mapping[str, str], status: int = 200, latency_s: float | None = None) -> None:
        self.policy.observe(headers, status, latency_s)

    async def in_window(self) -> int:
        grants = await self._pool.fetchval(
            "SELECT coalesce(array_length(grants, 1), 0) FROM hubspot_rate_budget WHERE portal = $1",
            self.portal,
        )
        return int(grants or 0)


class UnlimitedBudget:
    """``RateBudget`` that never waits (simulator benchmarks, one-off scripts)."""

    async def acquire(self, cost: int = 1) -> None:
        return None

    def observe(self, headers: Mapping[str, str], status: int = 200, latency_s: float | None = None) -> None:
        return None

