"""backoff_delay (full jitter) and RetryBudget (sliding window + reserve)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3kit._clock import FakeClock
from s3kit._retry import RetryBudget, backoff_delay

BASE = 0.1
CAP = 5.0

unit_interval = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


# ------------------------------------------------------------------ backoff_delay
@pytest.mark.parametrize("n", range(12))
def test_failure_backoff_rng_zero_is_zero(n: int) -> None:
    assert backoff_delay(n, BASE, CAP, rng=lambda: 0.0) == 0.0


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.6), (5, 3.2), (6, 5.0), (7, 5.0), (20, 5.0)],
)
def test_failure_backoff_rng_one_is_the_ceiling(n: int, expected: float) -> None:
    assert backoff_delay(n, BASE, CAP, rng=lambda: 1.0) == pytest.approx(expected)
    assert backoff_delay(n, BASE, CAP, rng=lambda: 1.0) == pytest.approx(min(CAP, BASE * 2**n))


def test_failure_backoff_scales_with_rng() -> None:
    assert backoff_delay(3, BASE, CAP, rng=lambda: 0.5) == pytest.approx(0.4)


@pytest.mark.parametrize("n", [31, 64, 1000, 10**6])
def test_cap_respected_for_huge_retry_numbers(n: int) -> None:
    assert backoff_delay(n, BASE, CAP, rng=lambda: 1.0) == pytest.approx(CAP)
    assert backoff_delay(n, BASE, CAP, throttled=True, rng=lambda: 1.0) == pytest.approx(CAP)


@settings(derandomize=True)
@given(n=st.integers(min_value=0, max_value=10_000), u=unit_interval)
def test_failure_backoff_within_full_jitter_bounds(n: int, u: float) -> None:
    delay = backoff_delay(n, BASE, CAP, rng=lambda: u)
    assert 0.0 <= delay <= min(CAP, BASE * 2.0 ** min(n, 64)) + 1e-12


@pytest.mark.parametrize("n", range(8))
def test_throttled_backoff_never_below_base(n: int) -> None:
    assert backoff_delay(n, BASE, CAP, throttled=True, rng=lambda: 0.0) == pytest.approx(BASE)


@settings(derandomize=True)
@given(n=st.integers(min_value=0, max_value=10_000), u=unit_interval)
def test_throttled_backoff_bounds_and_longer_than_failure(n: int, u: float) -> None:
    throttled = backoff_delay(n, BASE, CAP, throttled=True, rng=lambda: u)
    plain = backoff_delay(n, BASE, CAP, rng=lambda: u)
    assert BASE <= throttled <= CAP
    assert throttled >= plain


def test_throttled_ceiling_is_longer_than_failure_ceiling() -> None:
    plain = backoff_delay(0, BASE, CAP, rng=lambda: 1.0)
    throttled = backoff_delay(0, BASE, CAP, throttled=True, rng=lambda: 1.0)
    assert throttled > plain
    assert throttled <= CAP


# ------------------------------------------------------------------ RetryBudget
def spend(budget: RetryBudget, limit: int = 10_000) -> int:
    """Retries granted until the budget refuses one."""
    granted = 0
    while granted < limit and budget.try_retry():
        granted += 1
    return granted


def test_reserve_of_ten_is_full_at_start() -> None:
    budget = RetryBudget(0.2, clock=FakeClock())
    assert spend(budget) == 10
    assert budget.try_retry() is False


def test_ratio_grants_twenty_percent_of_requests_after_reserve() -> None:
    budget = RetryBudget(0.2, clock=FakeClock())
    assert spend(budget) == 10
    for _ in range(100):
        budget.record_request()
    assert spend(budget) == 20


def test_ratio_and_reserve_add_up() -> None:
    budget = RetryBudget(0.2, clock=FakeClock())
    for _ in range(50):
        budget.record_request()
    assert spend(budget) == 10 + 10


def test_zero_ratio_grants_only_the_reserve() -> None:
    budget = RetryBudget(0.0, reserve=3, clock=FakeClock())
    for _ in range(1000):
        budget.record_request()
    assert spend(budget) == 3


def test_window_slides_and_old_requests_are_forgotten() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.2, clock=clock)
    for _ in range(100):
        budget.record_request()
    assert spend(budget) == 30
    clock.advance(5.0)
    assert budget.try_retry() is False  # still inside the 10 s window
    clock.advance(6.0)  # 11 s after: requests and retries both left the window
    assert spend(budget) == 10  # only the reserve: the 100 old requests are forgotten


def test_window_keeps_recent_requests_while_dropping_old_ones() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.2, clock=clock)
    for _ in range(100):  # t = 0
        budget.record_request()
    clock.advance(6.0)
    for _ in range(50):  # t = 6
        budget.record_request()
    clock.advance(5.0)  # t = 11: the first 100 are gone, the 50 remain
    assert spend(budget) == 10 + 10
