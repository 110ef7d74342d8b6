"""Per-endpoint counters and latency, read through a frozen :class:`EndpointStats` snapshot.

Counters count attempts: ``requests = successes + client_errors + access_errors + throttles +
endpoint_failures``; ``rejected_open`` and ``saturated`` (calls that sent nothing) are apart.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["LATENCY_BUCKETS", "EndpointStats", "LatencyWindow"]

#: upper bounds (seconds) of the latency histogram's buckets; one more bucket holds the rest
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_EWMA_ALPHA = 0.2
COST_DECAY_S = 5.0  # time constant of the routing cost's decay while an endpoint is idle
COST_CLIP = 3.0  # a routing-cost sample counts at most this many times the current cost


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

    __slots__ = ("_i", "_samples", "_size", "buckets", "cost", "cost_at", "ewma", "total")

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._samples: list[float] = []
        self._i = 0
        self.ewma = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, not cumulative
        self.total = 0.0
        self.cost = 0.0  # the routing cost (a clipped EWMA), as of cost_at
        self.cost_at = 0.0

    def add(self, seconds: float, now: float = 0.0) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        # The routing cost: an EWMA whose samples are clipped at COST_CLIP times the current
        # value. One tail answer (every store has them) moves it by at most 40 %, so equal
        # endpoints stay equal; an endpoint that turns slow for good gets there in a few
        # answers (x1.4 each). Finagle's peak-EWMA takes every spike in full and keeps it for
        # seconds, and under load all endpoints' spikes look alike.
        cost = self.cost
        self.cost = (
            seconds if not cost else cost + _EWMA_ALPHA * (min(seconds, COST_CLIP * cost) - cost)
        )
        self.cost_at = now
        if not self._samples:
            self.ewma = seconds
        else:
            self.ewma += _EWMA_ALPHA * (seconds - self.ewma)
        if len(self._samples) < self._size:
            self._samples.append(seconds)
        else:
            self._samples[self._i] = seconds
            self._i = (self._i + 1) % self._size

    def routing_cost(self, now: float) -> float:
        """The routing cost decayed toward 0 for the time without samples, so an endpoint
        that was slow once is tried again after a while instead of being starved forever."""
        if not self.cost:
            return 0.0
        return self.cost * math.exp(-max(0.0, now - self.cost_at) / COST_DECAY_S)

    def percentiles(self, *qs: float) -> list[float]:
        data = sorted(self._samples)
        if not data:
            return [0.0 for _ in qs]
        n = len(data)
        # nearest rank: the smallest sample with at least q of the samples at or below it
        return [data[min(n - 1, max(0, math.ceil(round(q * n, 9)) - 1))] for q in qs]
