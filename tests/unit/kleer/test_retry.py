from __future__ import annotations

import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.kleer.retry import RetryPolicy, parse_retry_after

POLICY = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=8.0, max_retry_after=30.0)


@given(attempt=st.integers(1, 40), rand=st.floats(0, 1, exclude_max=True))
def test_backoff_grows_exponentially_with_jitter_and_never_passes_the_cap(attempt: int, rand: float) -> None:
    ceiling = min(POLICY.max_delay, POLICY.base_delay * 2 ** (attempt - 1))
    delay = POLICY.backoff(attempt, rand)
    assert ceiling / 2 <= delay <= ceiling


def test_jitter_spreads_the_delay() -> None:
    assert POLICY.backoff(3, 0.0) < POLICY.backoff(3, 0.99)


def test_gives_up_after_the_last_attempt() -> None:
    assert POLICY.next_delay(4, 0.5) is not None
    assert POLICY.next_delay(5, 0.5) is None


@given(retry_after=st.floats(0, 30), rand=st.floats(0, 1, exclude_max=True))
def test_waits_at_least_what_retry_after_asks(retry_after: float, rand: float) -> None:
    delay = POLICY.next_delay(1, rand, retry_after)
    assert delay is not None and delay >= retry_after


def test_a_retry_after_beyond_the_limit_gives_up_at_once() -> None:
    assert POLICY.next_delay(1, 0.5, 31.0) is None


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=-1)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), (" 0.25 ", 0.25), ("0", 0.0), ("-5", 0.0), (None, None), ("soon", None), ("nan", None), ("inf", None)],
)
def test_retry_after_in_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=1_000_000.0) == seconds


def test_retry_after_as_an_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 120, usegmt=True)
    assert parse_retry_after(header, now) == pytest.approx(120, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now) == 0.0
