"""Routing strategies: in which order a strategy-routed call tries the endpoints.

The multiplexer first splits endpoints into tiers (healthy; recently throttled; misconfigured;
open), then asks the strategy to order the healthy tier. A strategy is any object with a
``name`` and ``order(candidates, op) -> list`` (the :class:`Router` protocol); it must be
thread-safe and cheap: it runs on every call.

- ``round-robin``: true rotation over the healthy endpoints, in the order they were added.
- ``least-loaded``: fewest requests in flight now; ties by fewest requests so far, then rotation.
- ``random``: uniform shuffle.
- ``weighted``: random order biased by each endpoint's ``weight``.
- ``latency``: power of two choices (Finagle's P2C) on an EWMA of latency (tail answers
  clipped, decaying while idle) × (1 + in flight / concurrency limit); endpoints with no
  measurement yet go first, so they get measured.
- ``priority``: lowest ``priority`` first; a lower tier takes traffic only while every endpoint
  above it is unavailable. Rotation within a tier.
- ``key-hash``: rendezvous hashing of bucket/key, so a key always goes to the first healthy
  endpoint of its own order (for stores that do not replicate each other).
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ._errors import ConfigError

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._ops import Op

__all__ = ["STRATEGIES", "Router", "make_router"]


@runtime_checkable
class Router(Protocol):
    name: str
    #: whether routing moves recently throttled endpoints behind the others
    demote_throttled: bool

    def order(self, candidates: Sequence[Endpoint], op: Op | None) -> list[Endpoint]: ...


class _Rotation:
    def __init__(self) -> None:
        self._counter = itertools.count()  # next() is atomic under the GIL: no lock needed

    def _start(self, n: int) -> int:
        return next(self._counter) % n if n else 0


class RoundRobin(_Rotation):
    name = "round-robin"
    demote_throttled = True

    def order(self, candidates: Sequence[Endpoint], op: Op | None) -> list[Endpoint]:
        i = self._start(len(candidates))
        return [*candidates[i:], *candidates[:i]]


class LeastLoaded(_Rotation):
    name = "least-loaded"
    demote_throttled = True

    def order(self, candidates: Sequence[Endpoint], op: Op | None) -> list[Endpoint]:
        n = len(candidates)
        start = self._start(n)
        ranked = sorted(
            range(n),
            key=lambda i: (
                candidates[i].limiter.in_flight,
                candidates[i].legs,
                (i - start) % n,
            ),
        )
        return [candidates[i] for i in ranked]


class RandomOrder:
    name = "random"
    demote_throttled = True

    def order(self, candidates: Sequence[Endpoint], op: Op | None) -> list[Endpoint]:
        out = list(candidates)
        random.shuffle(out)
        return out


class Weighted:
    name = "weighted"
    demote_throttled = True

    def order(self, candidates: Sequence[Endpoint], op: Op | None) -> list[Endpoint]:
        # Efraimidis–Spirakis: sort by u^(1/w), the first is chosen with probability w/Σw.
        keyed = [(random.random() ** (1.0 / ep.config.weight), ep) for ep in candidates]
        keyed.sort(key=lambda pair: pair[0], reverse=True)
        return [ep for _, ep in keyed]


class LatencyP2C:
    name = "latency"
    demote_throttled = True

    @staticmethod
    def _score(ep: Endpoint, now: float | None = None) -> float:
        # Latency, weighted by how full the endpoint's concurrency limit is. Finagle
        # multiplies by (in flight + 1), which assumes latency grows with each request queued
        # at the server; a large object store barely notices one client's requests, and that
        # factor sends every idle slow endpoint a share of the traffic (its p99 becomes
        # everyone's). Load still counts: a slot-starved endpoint costs up to twice as much.
        limiter = ep.limiter
        return ep.latency_cost(now) * (1.0 + limiter.in_flight / limiter.limit)

    def order(self, candidates: Sequence[Endpoint], op: Op | None) -> list[Endpoint]:
        n = len(candidates)
        if n < 2:
            return list(candidates)
        score = self._score
        # one clock reading for all: scores decay with time, and reading it per endpoint
        # would make the later ones look a little cheaper on every call
        now = candidates[0]._clock.monotonic()
        scores = [score(ep, now) for ep in candidates]
        a = random.randrange(n)
        b = random.randrange(n - 1)
        if b >= a:
            b += 1
        first = a if scores[a] <= scores[b] else b
        rest = sorted((i for i in range(n) if i != first), key=scores.__getitem__)
        return [candidates[first], *(candidates[i] for i in rest)]


class Priority(_Rotation):
    name = "priority"
    demote_throttled = False

    def order(self, candidates: Sequence[Endpoint], op: Op | None) -> list[Endpoint]:
        tiers: dict[int, list[Endpoint]] = {}
        for ep in candidates:
            tiers.setdefault(ep.config.priority, []).append(ep)
        tick = next(self._counter)  # one rotation step per call, applied within each tier
        out: list[Endpoint] = []
        for level in sorted(tiers):
            tier = tiers[level]
            i = tick % len(tier)
            out += tier[i:] + tier[:i]
        return out


class KeyHash(_Rotation):
    name = "key-hash"
    demote_throttled = False

    def order(self, candidates: Sequence[Endpoint], op: Op | None) -> list[Endpoint]:
        if op is None or op.key is None:
            i = self._start(len(candidates))
            return [*candidates[i:], *candidates[:i]]
        ident = f"{op.bucket}/{op.key}".encode()

        def weight(ep: Endpoint) -> bytes:
            return hashlib.blake2b(ident, key=ep.name.encode()[:64], digest_size=8).digest()

        return sorted(candidates, key=weight, reverse=True)


STRATEGIES: dict[str, type] = {
    cls.name: cls
    for cls in (RoundRobin, LeastLoaded, RandomOrder, Weighted, LatencyP2C, Priority, KeyHash)
}


def make_router(strategy: str | Router) -> Router:
    """A router for a strategy name (or the given Router object)."""
    if isinstance(strategy, str):
        cls = STRATEGIES.get(strategy)
        if cls is None:
            raise ConfigError(
                f"unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}"
            )
        router: Router = cls()
        return router
    if isinstance(strategy, Router):
        return strategy
    raise ConfigError(f"strategy must be a name or a Router, got {type(strategy).__name__}")
