"""Limiter: bounded in-flight slots with an AIMD limit."""

from __future__ import annotations

import threading

from s3kit._clock import FakeClock
from s3kit._limits import THROTTLE_MEMORY_S, Limiter

WAIT = 10.0  # generous bound for real-thread hand-offs; never reached when the code works


def test_try_acquire_up_to_max_then_false() -> None:
    lim = Limiter(3, clock=FakeClock())
    assert [lim.try_acquire() for _ in range(3)] == [True, True, True]
    assert lim.in_flight == 3
    assert lim.try_acquire() is False
    assert lim.in_flight == 3


def test_release_frees_a_slot() -> None:
    lim = Limiter(2, clock=FakeClock())
    assert lim.try_acquire()
    assert lim.try_acquire()
    assert not lim.try_acquire()
    lim.release()
    assert lim.in_flight == 1
    assert lim.try_acquire()
    assert not lim.try_acquire()


def test_on_throttle_halves_limit_not_below_one() -> None:
    lim = Limiter(8, clock=FakeClock())
    assert lim.limit == 8
    limits = []
    for _ in range(5):
        lim.on_throttle()
        limits.append(lim.limit)
    assert limits == [4, 2, 1, 1, 1]


def test_throttled_limit_is_enforced_by_try_acquire() -> None:
    lim = Limiter(4, clock=FakeClock())
    lim.on_throttle()
    assert lim.limit == 2
    assert lim.try_acquire()
    assert lim.try_acquire()
    assert not lim.try_acquire()


def test_on_throttle_sets_recently_throttled_for_a_while() -> None:
    clock = FakeClock()
    lim = Limiter(4, clock=clock)
    assert not lim.recently_throttled(clock.monotonic())
    lim.on_throttle()
    assert lim.recently_throttled(clock.monotonic())
    clock.advance(THROTTLE_MEMORY_S - 0.01)
    assert lim.recently_throttled(clock.monotonic())
    clock.advance(0.01)
    assert not lim.recently_throttled(clock.monotonic())


def test_on_success_grows_additively_back_to_max() -> None:
    lim = Limiter(8, clock=FakeClock())
    lim.on_throttle()
    assert lim.limit == 4
    lim.on_success()
    assert lim.limit == 4  # +1/limit, not a jump back
    seen = [lim.limit]
    for _ in range(100):
        lim.on_success()
        seen.append(lim.limit)
    assert seen == sorted(seen)  # never shrinks on success
    assert max(seen) == 8  # never exceeds max_concurrent
    assert lim.limit == 8
    # roughly limit successes per +1: 4→8 takes more than 4 successes
    assert seen.index(8) > 4


def test_on_success_at_full_limit_is_a_no_op() -> None:
    lim = Limiter(3, clock=FakeClock())
    for _ in range(10):
        lim.on_success()
    assert lim.limit == 3


def test_from_limit_one_a_success_gives_two() -> None:
    lim = Limiter(4, clock=FakeClock())
    for _ in range(3):
        lim.on_throttle()
    assert lim.limit == 1
    lim.on_success()
    assert lim.limit == 2


def test_acquire_takes_a_free_slot_at_once_and_zero_timeout_fails_when_full() -> None:
    lim = Limiter(1, clock=FakeClock())
    assert lim.acquire(0) is True
    assert lim.acquire(0) is False
    assert lim.acquire(-1) is False
    assert lim.in_flight == 1


def test_acquire_times_out_when_nothing_is_released() -> None:
    lim = Limiter(1, clock=FakeClock())
    assert lim.try_acquire()
    assert lim.acquire(0.05) is False
    assert lim.in_flight == 1


def _waiter(lim: Limiter) -> tuple[threading.Thread, threading.Event, threading.Event, list[bool]]:
    started = threading.Event()
    done = threading.Event()
    result: list[bool] = []

    def run() -> None:
        started.set()
        result.append(lim.acquire(WAIT))
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, started, done, result


def test_waiter_gets_the_slot_when_another_releases() -> None:
    lim = Limiter(1, clock=FakeClock())
    assert lim.try_acquire()
    t, started, done, result = _waiter(lim)
    assert started.wait(WAIT)
    # the slot is held: the waiter cannot have it, however long we look
    assert not done.wait(0.05)
    lim.release()
    assert done.wait(WAIT)
    t.join(WAIT)
    assert result == [True]
    assert lim.in_flight == 1


def test_waiter_wakes_when_success_raises_the_limit() -> None:
    lim = Limiter(2, clock=FakeClock())
    lim.on_throttle()
    assert lim.limit == 1
    assert lim.try_acquire()
    t, started, done, result = _waiter(lim)
    assert started.wait(WAIT)
    assert not done.wait(0.05)
    lim.on_success()  # limit 1 → 2: a slot appears without any release
    assert done.wait(WAIT)
    t.join(WAIT)
    assert result == [True]
    assert lim.in_flight == 2


def test_concurrency_never_exceeds_the_limit_under_threads() -> None:
    lim = Limiter(3, clock=FakeClock())
    n = 12
    barrier = threading.Barrier(n)
    lock = threading.Lock()
    current = 0
    peak = 0
    acquired: list[bool] = []

    def worker() -> None:
        nonlocal current, peak
        barrier.wait(WAIT)
        ok = lim.acquire(WAIT)
        with lock:
            acquired.append(ok)
            if ok:
                current += 1
                peak = max(peak, current)
        if ok:
            with lock:
                current -= 1
            lim.release()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    assert not any(t.is_alive() for t in threads)
    assert acquired == [True] * n
    assert 1 <= peak <= 3
    assert lim.in_flight == 0
