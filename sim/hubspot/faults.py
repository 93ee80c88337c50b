"""Faults injected at run time (``/_sim/faults``): error statuses, latency, dropped connections, 429 storms.

They apply to API requests, not to the OAuth token endpoint.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from sim.hubspot.errors import validation_error

_DISTRIBUTIONS = ("fixed", "uniform", "exponential")


@dataclass(frozen=True)
class FaultDecision:
    delay_s: float = 0.0
    drop: bool = False
    status: int | None = None  # an injected error status
    storm: bool = False  # an injected 429


@dataclass
class Faults:
    error_rates: dict[int, float] = field(default_factory=dict)  # status → probability per request
    latency_distribution: str = "fixed"
    latency_ms: float = 0.0  # fixed value, uniform upper bound, or exponential mean
    latency_min_ms: float = 0.0  # uniform lower bound
    drop_rate: float = 0.0
    storm_429_requests: int = 0  # the next N API requests answer 429
    storm_429_until: float = 0.0  # monotonic time until which every API request answers 429
    path_prefix: str | None = None  # only requests under this path

    @classmethod
    def from_json(cls, body: Any) -> Faults:
        """Parse ``{"error_rates": {"503": 0.1}, "latency": {"distribution": "uniform", "min_ms": 5,
        "max_ms": 50}, "drop_rate": 0.01, "storm_429": {"requests": 20} | {"seconds": 2}, "path_prefix": "/crm"}``."""
        if not isinstance(body, dict):
            raise validation_error("faults must be an object")
        faults = cls()
        try:
            rates = body.get("error_rates") or {}
            faults.error_rates = {int(status): float(rate) for status, rate in rates.items()}
            for status, rate in faults.error_rates.items():
                if not 400 <= status <= 599 or not 0 <= rate <= 1:
                    raise validation_error(f"error rate {rate} for status {status} is out of range")
            latency = body.get("latency") or {}
            distribution = str(latency.get("distribution", "fixed"))
            if distribution not in _DISTRIBUTIONS:
                raise validation_error(f"latency distribution must be one of {_DISTRIBUTIONS}")
            faults.latency_distribution = distribution
            faults.latency_ms = float(latency.get("max_ms", latency.get("mean_ms", latency.get("ms", 0))))
            faults.latency_min_ms = float(latency.get("min_ms", 0))
            faults.drop_rate = float(body.get("drop_rate", 0))
            storm = body.get("storm_429") or {}
            faults.storm_429_requests = int(storm.get("requests", 0))
            if storm.get("seconds"):
                faults.storm_429_until = time.monotonic() + float(storm["seconds"])
            prefix = body.get("path_prefix")
            faults.path_prefix = str(prefix) if prefix else None
        except (TypeError, ValueError, AttributeError) as exc:
            raise validation_error(f"malformed faults: {exc}") from None
        return faults

    def to_json(self) -> dict[str, Any]:
        return {
            "error_rates": {str(k): v for k, v in self.error_rates.items()},
            "latency": {"distribution": self.latency_distribution, "ms": self.latency_ms,
                        "min_ms": self.latency_min_ms},
            "drop_rate": self.drop_rate,
            "storm_429": {"requests": self.storm_429_requests,
                          "seconds_left": max(0.0, self.storm_429_until - time.monotonic())},
            "path_prefix": self.path_prefix,
        }

    def active(self) -> bool:
        return bool(self.error_rates or self.latency_ms or self.drop_rate or self.storm_429_requests
                    or self.storm_429_until > time.monotonic())

    def decide(self, path: str) -> FaultDecision:
        if self.path_prefix and not path.startswith(self.path_prefix):
            return FaultDecision()
        delay = self._delay_s()
        if self.storm_429_requests > 0:
            self.storm_429_requests -= 1
            return FaultDecision(delay_s=delay, storm=True)
        if self.storm_429_until > time.monotonic():
            return FaultDecision(delay_s=delay, storm=True)
        if self.drop_rate and random.random() < self.drop_rate:
            return FaultDecision(delay_s=delay, drop=True)
        for status, rate in self.error_rates.items():
            if random.random() < rate:
                return FaultDecision(delay_s=delay, status=status)
        return FaultDecision(delay_s=delay)

    def _delay_s(self) -> float:
        if not self.latency_ms:
            return 0.0
        if self.latency_distribution == "uniform":
            return random.uniform(self.latency_min_ms, self.latency_ms) / 1000
        if self.latency_distribution == "exponential":
            return random.expovariate(1 / self.latency_ms) / 1000
        return self.latency_ms / 1000
