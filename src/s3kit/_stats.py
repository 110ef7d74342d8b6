"""Per-endpoint counters and latency, read through a frozen :class:`EndpointStats` snapshot.

Counters count attempts: ``requests = successes + client_errors + access_errors + throttles +
endpoint_failures``; ``rejected_open`` and ``saturated`` (calls that sent nothing) are apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["EndpointStats", "LatencyWindow"]

_EWMA_ALPHA = 0.2


@dataclass(frozen=True)
class EndpointStats:
    name: str
    url: str
    state: str
    requests: int
    in_flight: int
    successes: int
    client_errors: int
    access_errors: int
    throttles: int
    endpoint_failures: int
    retries: int
    failovers_away: int
    rejected_open: int
    saturated: int
    concurrency_limit: int
    max_concurrent: int
    misconfigured: bool
    latency_ewma_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class LatencyWindow:
    """EWMA plus the last ``size`` samples (seconds) for percentiles. Caller holds a lock."""

    __slots__ = ("_i", "_samples", "_size", "ewma")

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._samples: list[float] = []
        self._i = 0
        self.ewma = 0.0

    def add(self, seconds: float) -> None:
        if not self._samples:
            self.ewma = seconds
        else:
            self.ewma += _EWMA_ALPHA * (seconds - self.ewma)
        if len(self._samples) < self._size:
            self._samples.append(seconds)
        else:
            self._samples[self._i] = seconds
            self._i = (self._i + 1) % self._size

    def percentiles(self, *qs: float) -> list[float]:
        data = sorted(self._samples)
        if not data:
            return [0.0 for _ in qs]
        n = len(data)
        # nearest rank: the smallest sample with at least q of the samples at or below it
        return [data[min(n - 1, max(0, math.ceil(round(q * n, 9)) - 1))] for q in qs]
