"""CircuitBreaker: closed → open → half-open (one probe) → closed, driven by a FakeClock."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from s3kit._breaker import ADMIT, PROBE, REJECT, CircuitBreaker
from s3kit._clock import FakeClock

THRESHOLD = 3
OPEN_S = 10.0
MAX_OPEN_S = 100.0


def make(
    *,
    threshold: int = THRESHOLD,
    open_s: float = OPEN_S,
    max_open_s: float = MAX_OPEN_S,
    rng: Callable[[], float] = lambda: 0.0,
    on_transition: Callable[[str, str, float], None] | None = None,
) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    breaker = CircuitBreaker(
        threshold, open_s, max_open_s, clock=clock, rng=rng, on_transition=on_transition
    )
    return breaker, clock


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.threshold):
        breaker.on_failure()


def to_half_open_probe(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """Advance past the open interval and take the probe."""
    clock.advance(breaker.retry_after())
    assert breaker.admit() == PROBE


# ------------------------------------------------------------------ closed → open
def test_starts_closed_and_admits() -> None:
    breaker, _ = make()
    assert breaker.state == "closed"
    assert breaker.admit() == ADMIT
    assert breaker.retry_after() == 0.0
    assert breaker.consecutive_failures == 0


def test_opens_after_exactly_threshold_consecutive_failures() -> None:
    breaker, _ = make(threshold=5)
    for i in range(4):
        breaker.on_failure()
        assert breaker.state == "closed", f"opened after {i + 1} failures"
        assert breaker.admit() == ADMIT
        assert breaker.consecutive_failures == i + 1
    breaker.on_failure()
    assert breaker.state == "open"
    assert breaker.admit() == REJECT


def test_threshold_of_one_opens_on_first_failure() -> None:
    breaker, _ = make(threshold=1)
    breaker.on_failure()
    assert breaker.state == "open"


def test_success_resets_the_consecutive_count() -> None:
    breaker, _ = make()
    breaker.on_failure()
    breaker.on_failure()
    breaker.on_success()
    assert breaker.consecutive_failures == 0
    breaker.on_failure()
    breaker.on_failure()
    assert breaker.state == "closed"  # 2 + 2 failures, never 3 in a row
    breaker.on_failure()
    assert breaker.state == "open"


def test_neutral_outcome_neither_counts_nor_resets() -> None:
    breaker, _ = make()
    breaker.on_failure()
    breaker.on_failure()
    breaker.on_neutral()
    assert breaker.consecutive_failures == 2
    assert breaker.state == "closed"
    breaker.on_failure()
    assert breaker.state == "open"


# ------------------------------------------------------------------ open
def test_open_rejects_until_interval_passes_then_half_open() -> None:
    breaker, clock = make(rng=lambda: 0.0)
    trip(breaker)
    assert breaker.retry_after() == pytest.approx(OPEN_S)
    clock.advance(OPEN_S - 0.001)
    assert breaker.state == "open"
    assert breaker.admit() == REJECT
    assert breaker.retry_after() == pytest.approx(0.001)
    clock.advance(0.001)
    assert breaker.state == "half_open"
    assert breaker.retry_after() == 0.0


def test_first_open_interval_jitter_only_lengthens() -> None:
    breaker, clock = make(rng=lambda: 1.0)
    trip(breaker)
    assert breaker.retry_after() == pytest.approx(OPEN_S * 1.2)
    clock.advance(OPEN_S * 1.2 - 0.01)
    assert breaker.admit() == REJECT
    clock.advance(0.01)
    assert breaker.admit() == PROBE


def test_failures_while_open_do_not_extend_the_interval() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(4.0)
    for _ in range(10):
        breaker.on_failure()
    assert breaker.retry_after() == pytest.approx(OPEN_S - 4.0)


def test_non_probe_success_while_open_does_not_close() -> None:
    breaker, clock = make()
    trip(breaker)
    breaker.on_success()  # a slow call that started before the breaker opened
    assert breaker.state == "open"
    assert breaker.admit() == REJECT
    clock.advance(OPEN_S)
    assert breaker.admit() == PROBE
    breaker.on_success()  # another non-probe success while the probe is out
    assert breaker.state == "half_open"
    assert breaker.admit() == REJECT


def test_allow_probe_false_never_takes_the_probe() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(OPEN_S)
    assert breaker.admit(allow_probe=False) == REJECT
    assert breaker.admit() == PROBE


# ------------------------------------------------------------------ half-open
def test_exactly_one_probe_others_rejected() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(OPEN_S)
    assert breaker.admit() == PROBE
    assert [breaker.admit() for _ in range(10)] == [REJECT] * 10
    assert breaker.state == "half_open"
    assert breaker.probes == 1


@pytest.mark.parametrize("round_", range(10))
def test_exactly_one_probe_among_16_concurrent_threads(round_: int) -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(OPEN_S)
    n = 16
    barrier = threading.Barrier(n)
    results: list[int] = []
    results_lock = threading.Lock()

    def worker() -> None:
        barrier.wait(timeout=10)
        verdict = breaker.admit()
        with results_lock:
            results.append(verdict)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert len(results) == n
    assert results.count(PROBE) == 1
    assert results.count(REJECT) == n - 1
    assert breaker.probes == 1


def test_probe_success_closes_and_resets_interval() -> None:
    breaker, clock = make()
    trip(breaker)
    to_half_open_probe(breaker, clock)
    breaker.on_failure(probe=True)  # interval now 20
    to_half_open_probe(breaker, clock)
    breaker.on_success(probe=True)
    assert breaker.state == "closed"
    assert breaker.admit() == ADMIT
    assert breaker.retry_after() == 0.0
    # the next trip starts again from the base interval, not the doubled one
    trip(breaker)
    assert breaker.retry_after() == pytest.approx(OPEN_S)


def test_probe_failure_reopens_with_doubled_interval_rng_zero() -> None:
    breaker, clock = make(rng=lambda: 0.0)
    trip(breaker)
    expected = [20.0, 40.0, 80.0, 100.0, 100.0]  # doubled, capped at MAX_OPEN_S
    for interval in expected:
        to_half_open_probe(breaker, clock)
        breaker.on_failure(probe=True)
        assert breaker.state == "open"
        assert breaker.admit() == REJECT
        assert breaker.retry_after() == pytest.approx(interval)


def test_probe_failure_interval_with_rng_one_is_1_2x_doubled() -> None:
    breaker, clock = make(rng=lambda: 1.0)
    trip(breaker)
    assert breaker.retry_after() == pytest.approx(12.0)
    to_half_open_probe(breaker, clock)
    breaker.on_failure(probe=True)
    # doubling applies to the un-jittered base (10 → 20), then × 1.2
    assert breaker.retry_after() == pytest.approx(24.0)
    to_half_open_probe(breaker, clock)
    breaker.on_failure(probe=True)
    assert breaker.retry_after() == pytest.approx(48.0)


def test_probe_failure_interval_is_capped_at_max_open_s() -> None:
    breaker, clock = make(open_s=10.0, max_open_s=25.0, rng=lambda: 0.0)
    trip(breaker)
    intervals = []
    for _ in range(4):
        to_half_open_probe(breaker, clock)
        breaker.on_failure(probe=True)
        intervals.append(breaker.retry_after())
    assert intervals == pytest.approx([20.0, 25.0, 25.0, 25.0])


def test_max_open_s_below_open_s_is_raised_to_open_s() -> None:
    breaker, clock = make(open_s=10.0, max_open_s=1.0)
    trip(breaker)
    to_half_open_probe(breaker, clock)
    breaker.on_failure(probe=True)
    assert breaker.retry_after() == pytest.approx(10.0)


def test_release_probe_lets_another_probe_go() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(OPEN_S)
    assert breaker.admit() == PROBE
    assert breaker.admit() == REJECT
    breaker.release_probe()
    assert breaker.state == "half_open"
    assert breaker.admit() == PROBE
    assert breaker.admit() == REJECT
    assert breaker.probes == 2


def test_on_neutral_probe_closes() -> None:
    breaker, clock = make()
    trip(breaker)
    to_half_open_probe(breaker, clock)
    breaker.on_neutral(probe=True)
    assert breaker.state == "closed"
    assert breaker.admit() == ADMIT


def test_on_neutral_non_probe_while_open_does_nothing() -> None:
    breaker, _ = make()
    trip(breaker)
    breaker.on_neutral()
    assert breaker.state == "open"
    assert breaker.admit() == REJECT


# ------------------------------------------------------------------ transitions
def test_transition_callback_receives_old_new_retry_after() -> None:
    seen: list[tuple[str, str, float]] = []
    breaker, clock = make(on_transition=lambda o, n, r: seen.append((o, n, r)))
    trip(breaker)
    to_half_open_probe(breaker, clock)
    breaker.on_failure(probe=True)
    to_half_open_probe(breaker, clock)
    breaker.on_success(probe=True)
    assert seen == [
        ("closed", "open", pytest.approx(10.0)),
        ("open", "half_open", 0.0),
        ("half_open", "open", pytest.approx(20.0)),
        ("open", "half_open", 0.0),
        ("half_open", "closed", 0.0),
    ]


def test_no_transition_fired_without_state_change() -> None:
    seen: list[tuple[str, str, float]] = []
    breaker, _ = make(on_transition=lambda o, n, r: seen.append((o, n, r)))
    breaker.on_success()
    breaker.on_failure()
    breaker.on_neutral()
    assert seen == []


def test_transition_callback_runs_outside_the_lock() -> None:
    """A callback that reads the breaker and calls admit() must not deadlock."""
    observed: list[tuple[str, str, int]] = []
    holder: dict[str, CircuitBreaker] = {}

    def callback(old: str, new: str, retry_after: float) -> None:
        br = holder["b"]
        verdict = br.admit(allow_probe=False)  # takes the lock unless closed
        observed.append((new, br.state, verdict))
        br.retry_after()
        _ = br.consecutive_failures

    breaker, clock = make(on_transition=callback)
    holder["b"] = breaker

    def scenario() -> None:
        trip(breaker)  # closed → open
        clock.advance(breaker.retry_after())
        breaker.admit()  # open → half_open (fires from inside admit)
        breaker.on_failure(probe=True)  # half_open → open
        clock.advance(breaker.retry_after())
        breaker.admit()
        breaker.on_success(probe=True)  # half_open → closed

    t = threading.Thread(target=scenario, daemon=True)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "transition callback deadlocked on the breaker lock"
    assert observed == [
        ("open", "open", REJECT),
        ("half_open", "half_open", REJECT),
        ("open", "open", REJECT),
        ("half_open", "half_open", REJECT),
        ("closed", "closed", ADMIT),
    ]


# ------------------------------------------------------------------ retry_after / reset
def test_retry_after_values_through_the_cycle() -> None:
    breaker, clock = make(rng=lambda: 0.5)  # interval × 1.1
    assert breaker.retry_after() == 0.0
    trip(breaker)
    assert breaker.retry_after() == pytest.approx(11.0)
    clock.advance(3.0)
    assert breaker.retry_after() == pytest.approx(8.0)
    clock.advance(100.0)
    assert breaker.retry_after() == 0.0  # never negative
    assert breaker.admit() == PROBE
    assert breaker.retry_after() == 0.0
    breaker.on_success(probe=True)
    assert breaker.retry_after() == 0.0


def test_force_open_for_seconds_then_reset() -> None:
    breaker, clock = make()
    breaker.force_open(7.0)
    assert breaker.state == "open"
    assert breaker.retry_after() == pytest.approx(7.0)
    breaker.reset()
    assert breaker.state == "closed"
    assert breaker.admit() == ADMIT
    breaker.force_open()
    assert breaker.retry_after() == pytest.approx(OPEN_S)
    clock.advance(OPEN_S)
    assert breaker.state == "half_open"


def test_reset_does_not_close_while_a_probe_is_out() -> None:
    breaker, clock = make()
    trip(breaker)
    to_half_open_probe(breaker, clock)
    breaker.reset()
    assert breaker.state == "half_open"
    breaker.on_success(probe=True)
    assert breaker.state == "closed"
