"""Fault injection and the request log of the Kleer simulator.

A ``FaultPlan`` decides, per API request (never for ``/_sim`` admin calls),
whether to delay it and whether to fail it. It is set at run time with
``POST /_sim/faults`` (fields merge into the current plan; ``DELETE`` clears
it) using this JSON shape, every key optional::

    {
      "latency": {"distribution": "uniform", "ms": 5, "max-ms": 50},
      "error-rates": {"503": 0.1, "500": 0.02},
      "drop-rate": 0.01,
      "drop-after-rate": 0.0,
      "force-429": 3,
      "fail-next": [503, 503],
      "retry-after": 0.2,
      "path-prefix": "/company/1/client/invoice",
      "seed": 7
    }

- ``latency.distribution``: ``none``, ``fixed`` (``ms``), ``uniform`` (between
  ``ms`` and ``max-ms``) or ``exponential`` (mean ``ms``, capped at ``max-ms``
  when that is set).
- ``error-rates``: per status (4xx/5xx), the chance that a request answers it.
- ``drop-rate``: chance that the connection is closed without an answer,
  before the request is handled; ``drop-after-rate``: the request is handled
  (a create or update is stored) and then the connection is closed without an
  answer, the case where a client cannot know whether its write happened.
- ``force-429``: the next N requests answer 429 with ``Retry-After``.
- ``fail-next``: the next requests answer these statuses, one each, in order
  (deterministic, for tests; ``0`` drops that request's connection instead);
  consumed before ``force-429``.
- ``retry-after``: seconds sent in ``Retry-After`` with 429 and 503 answers.
- ``path-prefix``: only requests whose path below ``/v1`` starts with it are affected.
- ``seed``: seeds the random draws, for reproducible runs.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

DISTRIBUTIONS = ("none", "fixed", "uniform", "exponential")
_KEYS = ("latency", "error-rates", "drop-rate", "drop-after-rate", "force-429", "fail-next", "retry-after",
         "path-prefix", "seed")


class BadFaultPlan(ValueError):
    """The admin request describes an impossible plan; the message says which part."""


@dataclass(frozen=True)
class Verdict:
    """What to do with one request: wait ``delay`` seconds, then answer ``status``, drop, or carry on."""

    delay: float = 0.0
    status: int | None = None
    drop: bool = False
    drop_after: bool = False


@dataclass
class FaultPlan:
    distribution: str = "none"
    latency_ms: float = 0.0
    latency_max_ms: float = 0.0
    error_rates: dict[int, float] = field(default_factory=dict)
    drop_rate: float = 0.0
    drop_after_rate: float = 0.0
    force_429: int = 0
    fail_next: deque[int] = field(default_factory=deque)
    retry_after: float = 1.0
    path_prefix: str = ""
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def update(self, changes: Any) -> None:
        """Merge an admin JSON body into the plan; raises ``BadFaultPlan`` and then changes nothing."""
        if not isinstance(changes, dict):
            raise BadFaultPlan("the fault plan must be a JSON object")
        unknown = sorted(set(changes) - set(_KEYS))
        if unknown:
            raise BadFaultPlan(
                f"unknown fault setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(_KEYS)}"
            )
        staged = dataclasses.replace(
            self, fail_next=deque(self.fail_next), error_rates=dict(self.error_rates)
        )
        if "latency" in changes:
            staged._set_latency(changes["latency"])
        if "error-rates" in changes:
            staged.error_rates = _error_rates(changes["error-rates"])
        for key, attribute in (("drop-rate", "drop_rate"), ("drop-after-rate", "drop_after_rate")):
            if key in changes:
                setattr(staged, attribute, _probability(changes[key], key))
        if "force-429" in changes:
            staged.force_429 = _count(changes["force-429"], "force-429")
        if "fail-next" in changes:
            statuses = changes["fail-next"]
            if not isinstance(statuses, list):
                raise BadFaultPlan("fail-next must be a list of HTTP statuses, e.g. [503, 503]")
            staged.fail_next = deque(0 if type(s) is int and s == 0 else _status(s, "fail-next") for s in statuses)
        if "retry-after" in changes:
            staged.retry_after = _number(changes["retry-after"], "retry-after", 0, 3600)
        if "path-prefix" in changes:
            if not isinstance(changes["path-prefix"], str):
                raise BadFaultPlan("path-prefix must be a string such as /company/1/client")
            staged.path_prefix = changes["path-prefix"]
        if "seed" in changes:
            if changes["seed"] is not None and (
                isinstance(changes["seed"], bool) or not isinstance(changes["seed"], int)
            ):
                raise BadFaultPlan("seed must be an integer or null")
            staged.seed = changes["seed"]
            staged.rng = random.Random(staged.seed)
        if sum(staged.error_rates.values()) + staged.drop_rate + staged.drop_after_rate > 1:
            raise BadFaultPlan("error-rates, drop-rate and drop-after-rate together must not exceed 1")
        vars(self).update(vars(staged))

    def _set_latency(self, latency: Any) -> None:
        if not isinstance(latency, dict):
            raise BadFaultPlan(
                'latency must be an object such as {"distribution": "uniform", "ms": 5, "max-ms": 50}'
            )
        unknown = sorted(set(latency) - {"distribution", "ms", "max-ms"})
        if unknown:
            raise BadFaultPlan(f"unknown latency setting(s) {', '.join(map(repr, unknown))}")
        distribution = latency.get("distribution", "fixed")
        if distribution not in DISTRIBUTIONS:
            raise BadFaultPlan(f"latency.distribution must be one of {', '.join(DISTRIBUTIONS)}")
        self.distribution = distribution
        self.latency_ms = _number(latency.get("ms", 0), "latency.ms", 0, 600_000)
        self.latency_max_ms = _number(latency.get("max-ms", 0), "latency.max-ms", 0, 600_000)
        if distribution == "uniform" and self.latency_max_ms < self.latency_ms:
            raise BadFaultPlan("latency.max-ms must be at least latency.ms for a uniform distribution")

    def describe(self) -> dict[str, Any]:
        return {
            "latency": {
                "distribution": self.distribution,
                "ms": self.latency_ms,
                "max-ms": self.latency_max_ms,
            },
            "error-rates": {str(k): v for k, v in sorted(self.error_rates.items())},
            "drop-rate": self.drop_rate,
            "drop-after-rate": self.drop_after_rate,
            "force-429": self.force_429,
            "fail-next": list(self.fail_next),
            "retry-after": self.retry_after,
            "path-prefix": self.path_prefix,
            "seed": self.seed,
        }

    def decide(self, path: str) -> Verdict:
        """The verdict for one API request to ``path`` (below ``/v1``)."""
        if self.path_prefix and not path.startswith(self.path_prefix):
            return Verdict()
        delay = self._delay()
        if self.fail_next:
            status = self.fail_next.popleft()
            return Verdict(delay, drop=True) if status == 0 else Verdict(delay, status=status)
        if self.force_429 > 0:
            self.force_429 -= 1
            return Verdict(delay, status=429)
        if not (self.error_rates or self.drop_rate or self.drop_after_rate):
            return Verdict(delay)
        roll = self.rng.random()
        if roll < self.drop_rate:
            return Verdict(delay, drop=True)
        roll -= self.drop_rate
        for status, rate in self.error_rates.items():
            if roll < rate:
                return Verdict(delay, status=status)
            roll -= rate
        return Verdict(delay, drop_after=roll < self.drop_after_rate)

    def _delay(self) -> float:
        if self.distribution == "none":
            return 0.0
        if self.distribution == "fixed":
            ms = self.latency_ms
        elif self.distribution == "uniform":
            ms = self.rng.uniform(self.latency_ms, self.latency_max_ms)
        else:
            ms = self.rng.expovariate(1 / self.latency_ms) if self.latency_ms > 0 else 0.0
            if self.latency_max_ms:
                ms = min(ms, self.latency_max_ms)
        return ms / 1000


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadFaultPlan(f"{name} must be a number")
    if not low <= value <= high:
        raise BadFaultPlan(f"{name} must be between {low:g} and {high:g}, got {value}")
    return float(value)


def _probability(value: Any, name: str) -> float:
    return _number(value, name, 0, 1)


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadFaultPlan(f"{name} must be a whole number of requests, 0 or more")
    return value


def _status(value: Any, name: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise BadFaultPlan(f"{name}: {value!r} is not an HTTP error status (400-599)")
    return value


def _error_rates(value: Any) -> dict[int, float]:
    if not isinstance(value, dict):
        raise BadFaultPlan('error-rates must be an object of status to chance, e.g. {"503": 0.1}')
    return {
        _status(status, "error-rates"): _probability(rate, f"error-rates.{status}")
        for status, rate in value.items()
    }


@dataclass(frozen=True)
class LoggedRequest:
    at: float
    method: str
    endpoint: str  # the route template, e.g. /v1/company/{company-id}/client/{id}
    path: str
    status: int  # 0 when the connection was dropped without an answer
    seconds: float


class RequestLog:
    """Counts per endpoint and status, plus the most recent requests."""

    def __init__(self, keep: int = 10_000) -> None:
        self.recent: deque[LoggedRequest] = deque(maxlen=keep)
        self.counts: Counter[tuple[str, str, int]] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0  # the most API requests handled at once since the last clear

    def begin(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def record(self, method: str, endpoint: str, path: str, status: int, seconds: float) -> None:
        """A request that ``begin`` announced has finished."""
        self.in_flight = max(0, self.in_flight - 1)
        self.recent.append(LoggedRequest(time.time(), method, endpoint, path, status, seconds))
        self.counts[(method, endpoint, status)] += 1

    def count(self, method: str | None = None, endpoint: str | None = None, status: int | None = None) -> int:
        """How many requests matched every given criterion."""
        return sum(
            n
            for (m, e, s), n in self.counts.items()
            if (method is None or m == method)
            and (endpoint is None or e == endpoint)
            and (status is None or s == status)
        )

    def clear(self) -> None:
        self.recent.clear()
        self.counts.clear()
        self.max_in_flight = self.in_flight

    def describe(self, recent: int = 50) -> dict[str, Any]:
        by_endpoint: dict[str, dict[str, int]] = {}
        for (method, endpoint, status), n in sorted(self.counts.items()):
            by_endpoint.setdefault(f"{method} {endpoint}", {})[str(status)] = n
        tail = list(self.recent)[-recent:] if recent > 0 else []
        return {
            "total": sum(self.counts.values()),
            "in-flight": self.in_flight,
            "max-in-flight": self.max_in_flight,
            "by-endpoint": by_endpoint,
            "recent": [
                {
                    "method": r.method,
                    "endpoint": r.endpoint,
                    "path": r.path,
                    "status": r.status,
                    "ms": round(r.seconds * 1000, 2),
                }
                for r in tail
            ],
        }
