"""When and how long to wait before retrying a Kleer request (pure: no I/O, no clock).

Kleer documents no rate limit; we are polite anyway: bounded attempts,
exponential backoff with jitter, and a server's ``Retry-After`` is honoured.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass

# Statuses worth another try: Kleer (or something in front of it) is busy or briefly broken.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Statuses that say the request was not processed, so even a create (PUT, not idempotent) may be resent.
NOT_PROCESSED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with "equal jitter" exponential backoff.

    Attempt ``n`` (1-based) that failed waits between ``d/2`` and ``d`` where
    ``d = min(max_delay, base_delay * 2 ** (n - 1))``, or the server's
    ``Retry-After`` when that is longer. A ``Retry-After`` beyond
    ``max_retry_after`` is not waited for: the call gives up at once.
    """

    max_attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 10.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, attempt: int, rand: float) -> float:
        """Seconds to wait after failed attempt ``attempt``; ``rand`` is uniform in [0, 1)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return ceiling / 2 + ceiling / 2 * rand

    def next_delay(self, attempt: int, rand: float, retry_after: float | None = None) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up."""
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None and retry_after > self.max_retry_after:
            return None
        delay = self.backoff(attempt, rand)
        return max(delay, retry_after) if retry_after is not None else delay


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from ``now`` (Unix time) that a ``Retry-After`` header asks for; ``None`` if unusable.

    Accepts delta-seconds (also fractional, which simulators use) and HTTP dates.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)
