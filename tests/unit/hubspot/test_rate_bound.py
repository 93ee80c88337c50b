"""The rate-limit bound bench_outbound divides by is the least time the simulator's sliding window allows."""

from __future__ import annotations

import pytest

from bench.bench_outbound import linear_rate_bound, rate_bound
from sim.hubspot.ratelimit import SlidingWindow


def _earliest_last_request(requests: int, limit: int, window_s: float) -> float:
    """Send ``requests`` as early as the simulator's window admits each one; the time of the last."""
    window = SlidingWindow(limit, window_s)
    tick, sent = 0, 0
    while sent < requests:
        if window.hit(tick * window_s / 1000).allowed:
            sent += 1
        else:
            tick += 1
    return tick * window_s / 1000


@pytest.mark.parametrize("requests", [1, 110, 111, 220, 221, 301, 1001])
def test_the_bound_is_the_earliest_time_the_window_admits_the_last_request(requests: int) -> None:
    assert _earliest_last_request(requests, 110, 1.0) == pytest.approx(rate_bound(requests, 110, 1.0), abs=0.002)


def test_the_linear_bound_of_earlier_figures_is_below_what_any_client_can_do() -> None:
    assert rate_bound(301, 110, 10.0) == 20.0
    assert linear_rate_bound(301, 110, 10.0) == pytest.approx(17.36, abs=0.01)
    assert all(linear_rate_bound(n, 110, 10.0) <= rate_bound(n, 110, 10.0) for n in range(1, 2000))
