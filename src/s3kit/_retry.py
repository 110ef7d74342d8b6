"""Retry policy: full-jitter exponential backoff and a retry budget.

The budget follows Finagle's: retries may be at most ``ratio`` of the requests of the last
``window_s`` seconds, plus a reserve of ``reserve`` retries per window that is full at start, so
a dead endpoint's retries never multiply the load on it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ._clock import SYSTEM_CLOCK, Clock

__all__ = ["RetryBudget", "backoff_delay"]

# A throttled endpoint asked us to slow down: back off longer than after a failure.
THROTTLE_FACTOR = 4.0


def backoff_delay(
    retry_number: int,
    base_s: float,
    cap_s: float,
    *,
    throttled: bool = False,
    rng: Callable[[], float] = random.random,
) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(cap, base × 2^n)].

    ``retry_number`` counts from 0 for the first retry. A throttle multiplies the base by
    :data:`THROTTLE_FACTOR` and never waits less than ``base_s``.
    """
    base = base_s * THROTTLE_FACTOR if throttled else base_s
    ceiling = min(cap_s, base * (2.0 ** min(retry_number, 30)))
    delay = ceiling * rng()
    if throttled:
        delay = max(delay, min(base_s, cap_s))
    return delay


class RetryBudget:
    """Sliding-window retry budget. Not locked: the owner calls it under its own lock."""

    __slots__ = ("_buckets", "_clock", "_slot_s", "ratio", "reserve")

    def __init__(
        self,
        ratio: float = 0.2,
        *,
        reserve: int = 10,
        window_s: float = 10.0,
        slots: int = 10,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.ratio = ratio
        self.reserve = reserve
        self._clock = clock
        self._slot_s = window_s / slots
        # each bucket: [slot index, requests, retries]
        self._buckets = [[-1, 0, 0] for _ in range(slots)]

    def _bucket(self, now: float | None = None) -> list[int]:
        slot = int((self._clock.monotonic() if now is None else now) / self._slot_s)
        bucket = self._buckets[slot % len(self._buckets)]
        if bucket[0] != slot:
            bucket[0] = slot
            bucket[1] = 0
            bucket[2] = 0
        return bucket

    def _totals(self) -> tuple[int, int]:
        slot = int(self._clock.monotonic() / self._slot_s)
        oldest = slot - len(self._buckets) + 1
        requests = retries = 0
        for b in self._buckets:
            if b[0] >= oldest:
                requests += b[1]
                retries += b[2]
        return requests, retries

    def record_request(self, now: float | None = None) -> None:
        """Count a request (``now``: the caller's monotonic time, saving a clock read)."""
        self._bucket(now)[1] += 1

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it."""
        requests, retries = self._totals()
        if retries + 1 > self.ratio * requests + self.reserve:
            return False
        self._bucket()[2] += 1
        return True
