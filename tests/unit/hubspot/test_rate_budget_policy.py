"""SlidingWindowBudget on a fake clock: exact grants and waits, corrections from headers, 429 back-off."""

from __future__ import annotations

import pytest

from libs.hubspot.rate_budget import (
    HEADER_INTERVAL,
    HEADER_MAX,
    HEADER_REMAINING,
    RateBudget,
    RateHeaders,
    SlidingWindowBudget,
    UnlimitedBudget,
    default_safety_margin,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def budget(clock: FakeClock, max_requests: int = 10, interval_ms: int = 1000, **kw: int) -> SlidingWindowBudget:
    return SlidingWindowBudget(max_requests, interval_ms, clock=clock, sleep=clock.sleep, **kw)


def test_default_margin_is_about_five_percent() -> None:
    assert default_safety_margin(110) == 6
    assert default_safety_margin(100) == 5
    assert default_safety_margin(5) == 1


def test_budgets_satisfy_the_protocol() -> None:
    clock = FakeClock()
    assert isinstance(budget(clock), RateBudget)
    assert isinstance(UnlimitedBudget(), RateBudget)


async def test_grants_the_limit_minus_margin_then_waits_for_the_first_answer_to_age_an_interval() -> None:
    clock = FakeClock()
    b = budget(clock, safety_margin=2)
    for _ in range(8):
        await b.acquire()
        b.observe({}, 200)
    assert clock.slept == []
    clock.now += 0.3
    await b.acquire()
    assert clock.slept == [pytest.approx(0.7)]


async def test_a_request_in_flight_counts_until_an_interval_after_its_answer() -> None:
    clock = FakeClock()
    b = budget(clock, max_requests=2, safety_margin=0)
    await b.acquire()
    await b.acquire()
    clock.now += 2.0  # far past the interval, but no answer yet: HubSpot may not have counted them
    assert b.wait_ms() > 0
    b.observe({}, 200)
    assert b.wait_ms() == pytest.approx(1000)
    clock.now += 1.0
    assert b.wait_ms() == 0


async def test_no_answer_counts_as_answered_now() -> None:
    clock = FakeClock()
    b = budget(clock, max_requests=1, safety_margin=0)
    await b.acquire()
    b.observe({}, 0)
    assert b.counted() == 1
    clock.now += 1.0
    assert b.counted() == 0


async def test_grants_never_observed_stop_counting_after_three_intervals() -> None:
    clock = FakeClock()
    b = budget(clock, max_requests=1, safety_margin=0)
    await b.acquire()
    clock.now += 3.1
    assert b.counted() == 0


async def test_headers_lower_the_limit_adopt_the_interval_and_book_foreign_use() -> None:
    clock = FakeClock()
    b = budget(clock, max_requests=100, interval_ms=10_000, safety_margin=0)
    b.observe({HEADER_MAX: "50", HEADER_REMAINING: "20", HEADER_INTERVAL: "2000"}, 200)
    assert b.policy.limit == 50 and b.policy.interval_ms == 2000
    assert b.wait_ms() == 0  # 30 foreign requests booked, spread over the window, plus this one
    assert b.counted() == 31
    b.observe({HEADER_MAX: "500"}, 200)
    assert b.policy.limit == 100  # never above what was configured


async def test_each_consecutive_429_doubles_the_back_off_up_to_one_interval() -> None:
    clock = FakeClock()
    b = budget(clock, max_requests=100, interval_ms=1000)
    waits = []
    for _ in range(6):
        b.observe({}, 429)
        waits.append(round(b.wait_ms()))
        clock.now += 5
    assert waits == [100, 200, 400, 800, 1000, 1000]
    b.observe({}, 200)
    b.observe({}, 429)
    assert round(b.wait_ms()) == 100


async def test_cost_is_capped_at_the_limit() -> None:
    clock = FakeClock()
    b = budget(clock, max_requests=5, safety_margin=0)
    await b.acquire(cost=50)
    assert b.counted() == 5


def test_rate_headers_parse_case_insensitively_and_ignore_garbage() -> None:
    parsed = RateHeaders.parse({"x-hubspot-ratelimit-max": "110", HEADER_REMAINING: "x"})
    assert parsed.max == 110 and parsed.remaining is None


async def test_unlimited_budget_never_waits() -> None:
    b = UnlimitedBudget()
    for _ in range(1000):
        await b.acquire()
    b.observe({}, 429)
