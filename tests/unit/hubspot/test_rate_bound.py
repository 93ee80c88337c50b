"""The rate-limit bound bench_outbound divides by is the least time the simulator's sliding window allows."""

from __future__ import annotations

import pytest

from bench.bench_outbound import cpu_floor, linear_rate_bound, rate_bound
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


def test_the_cpu_floor_is_the_push_cpu_spread_over_the_cores_against_the_bound() -> None:
    run = {"push_cpu_seconds": {"pusher": 40.0, "postgres": 16.0, "hubspot_sim": 8.0}, "push_wall_seconds": 34.0}
    floor = cpu_floor(run, 28.0, cores=2)
    assert floor == {"cpu_seconds": 64.0, "cores": 2, "busy": 1.88, "ratio": round(64 / 2 / 28, 3)}
    assert cpu_floor(run, 28.0, cores=4)["ratio"] < 1  # the same work on twice the cores: the rate limit binds
    assert cpu_floor({"push_wall_seconds": 1.0}, 28.0) is None  # no CPU figures (an older result)
    assert cpu_floor(run, 0.0) is None  # everything fit in the first window
