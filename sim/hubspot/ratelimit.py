"""HubSpot's per-portal sliding-window limits, on the simulator's (scalable) clock."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    remaining: int


class SlidingWindow:
    """At most ``max_requests`` in any ``interval_s`` (real seconds); refused requests do not count."""

    def __init__(self, max_requests: int, interval_s: float) -> None:
        self.max_requests = max_requests
        self.interval_s = interval_s
        self._hits: deque[float] = deque()

    def hit(self, now: float | None = None) -> Verdict:
        if self.max_requests <= 0:
            return Verdict(True, 0)
        moment = time.monotonic() if now is None else now
        hits = self._hits
        edge = moment - self.interval_s
        while hits and hits[0] <= edge:
            hits.popleft()
        if len(hits) >= self.max_requests:
            return Verdict(False, 0)
        hits.append(moment)
        return Verdict(True, self.max_requests - len(hits))

    def used(self) -> int:
        edge = time.monotonic() - self.interval_s
        return sum(1 for h in self._hits if h > edge)


class DailyCounter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def hit(self) -> Verdict:
        if self.limit <= 0:
            return Verdict(True, 0)
        if self.used >= self.limit:
            return Verdict(False, 0)
        self.used += 1
        return Verdict(True, self.limit - self.used)
