"""Per-endpoint concurrency limiter with an AIMD limit.

At most ``limit`` requests are in flight at once. The limit starts at ``max_concurrent``; each
throttle halves it (not below 1) and each success adds back ``1/limit`` (additive increase,
multiplicative decrease, as in Netflix's concurrency-limits), so a store that says SlowDown gets
fewer concurrent requests from us until it recovers. Callers that find no free slot wait on a
condition, up to a bounded time.
"""

from __future__ import annotations

import threading
import time

from ._clock import SYSTEM_CLOCK, Clock

__all__ = ["Limiter"]

# After a throttle, routing prefers other endpoints for this long.
THROTTLE_MEMORY_S = 5.0


class Limiter:
    __slots__ = (
        "_clock",
        "_cond",
        "_limit",
        "_lock",
        "_waiters",
        "in_flight",
        "max_concurrent",
        "throttled_until",
    )

    def __init__(self, max_concurrent: int, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.max_concurrent = max_concurrent
        self._limit = float(max_concurrent)
        # The hot path (try_acquire/release) takes the bare lock, a C-level context manager,
        # and signals the condition only when someone waits on it.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiters = 0
        self._clock = clock
        self.in_flight = 0
        self.throttled_until = 0.0

    @property
    def limit(self) -> int:
        """The current concurrency limit (an int, at least 1)."""
        return max(1, int(self._limit))

    def try_acquire(self) -> bool:
        with self._lock:
            if self.in_flight < max(1, int(self._limit)):
                self.in_flight += 1
                return True
            return False

    def acquire(self, timeout: float) -> bool:
        """Take a slot, waiting up to ``timeout`` seconds. Returns False if none came free."""
        with self._cond:
            if self.in_flight < max(1, int(self._limit)):
                self.in_flight += 1
                return True
            if timeout <= 0:
                return False
            # Condition waits use real time: the limiter is exercised with real threads.
            end = time.monotonic() + timeout
            self._waiters += 1
            try:
                while self.in_flight >= max(1, int(self._limit)):
                    remaining = end - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
            finally:
                self._waiters -= 1
            self.in_flight += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.in_flight -= 1
            if self._waiters:
                self._cond.notify()

    def on_success(self) -> None:
        limit = self._limit
        if limit < self.max_concurrent:  # hot path: nothing to do at the full limit
            with self._lock:
                self._limit = min(float(self.max_concurrent), self._limit + 1.0 / self._limit)
                if self._waiters:
                    self._cond.notify()

    def on_throttle(self) -> None:
        with self._lock:
            self._limit = max(1.0, self._limit / 2.0)
            self.throttled_until = self._clock.monotonic() + THROTTLE_MEMORY_S

    def recently_throttled(self, now: float) -> bool:
        return now < self.throttled_until
