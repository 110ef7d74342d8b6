"""Per-endpoint circuit breaker: closed → open → half-open (one probe) → closed.

The protected call never runs under the breaker's lock (pybreaker's pitfall): callers ask
:meth:`CircuitBreaker.admit` first, do their request unlocked, then report the outcome.

- closed: every call is admitted. ``threshold`` consecutive failed legs open it.
- open: every call is rejected at once until ``open_until``.
- half-open: the open interval has passed; exactly one caller is admitted as the probe, the
  others keep being rejected. A good probe closes the breaker (interval back to the base); a
  failed one re-opens it with the interval doubled up to ``max_open_s``. Jitter only lengthens
  the interval (×1.0–1.2), so a fleet does not probe in lock-step.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from ._clock import SYSTEM_CLOCK, Clock

__all__ = ["ADMIT", "CLOSED", "HALF_OPEN", "OPEN", "PROBE", "REJECT", "CircuitBreaker"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

# admit() answers
ADMIT = 1
PROBE = 2
REJECT = 0

Transition = Callable[[str, str, float], None]


class CircuitBreaker:
    __slots__ = (
        "_base_open_s",
        "_clock",
        "_failures",
        "_lock",
        "_max_open_s",
        "_on_transition",
        "_open_s",
        "_open_until",
        "_probe_in_flight",
        "_rng",
        "_state",
        "probes",
        "threshold",
        "transitions",
    )

    def __init__(
        self,
        threshold: int,
        open_s: float,
        max_open_s: float,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: Callable[[], float] = random.random,
        on_transition: Transition | None = None,
    ) -> None:
        self.threshold = threshold
        self._base_open_s = open_s
        self._max_open_s = max(open_s, max_open_s)
        self._open_s = open_s
        self._clock = clock
        self._rng = rng
        self._on_transition = on_transition
        self._lock = threading.Lock()
        self._state = CLOSED  # CLOSED, OPEN (half-open is OPEN past open_until) or HALF_OPEN
        self._failures = 0
        self._open_until = 0.0
        self._probe_in_flight = False
        self.probes = 0  # probes admitted, for tests and stats
        self.transitions = 0

    # ----------------------------------------------------------------- reading
    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (an open breaker whose interval has passed)."""
        state = self._state
        if state is OPEN and self._clock.monotonic() >= self._open_until:
            return HALF_OPEN
        return state

    def retry_after(self) -> float:
        """Seconds until the next probe may be admitted (0 when one may go now or one is out)."""
        if self._state is CLOSED:
            return 0.0
        return max(0.0, self._open_until - self._clock.monotonic())

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    # ------------------------------------------------------------------ admit
    def admit(self, *, allow_probe: bool = True) -> int:
        """ADMIT (closed), PROBE (this caller is the single half-open probe) or REJECT."""
        if self._state is CLOSED:  # hot path: no lock
            return ADMIT
        fire = None
        with self._lock:
            if self._state is CLOSED:
                return ADMIT
            if self._probe_in_flight or not allow_probe:
                return REJECT
            if self._clock.monotonic() < self._open_until:
                return REJECT
            self._probe_in_flight = True
            self.probes += 1
            if self._state is OPEN:
                self._state = HALF_OPEN
                fire = (OPEN, HALF_OPEN, 0.0)
        if fire:
            self._fire(*fire)
        return PROBE

    # ---------------------------------------------------------------- outcomes
    def on_success(self, probe: bool = False) -> None:
        """The endpoint answered well (or answered at all, for a probe)."""
        if self._state is CLOSED and not self._failures and not probe:
            return  # hot path: nothing to change
        fire = None
        with self._lock:
            self._failures = 0
            if probe:
                self._probe_in_flight = False
            # Only a probe closes an open breaker: a slow call that started before the endpoint
            # died may still succeed after the breaker opened, and proves nothing.
            if probe and self._state is not CLOSED:
                fire = self._close()
        if fire:
            self._fire(*fire)

    def on_neutral(self, probe: bool = False) -> None:
        """An outcome that says nothing about health (client error, throttle).

        For a probe it proves the endpoint answers, so it closes the breaker.
        """
        if probe:
            self.on_success(probe=True)

    def on_throttle(self, probe: bool = False) -> None:
        """The endpoint asked us to slow down. Never trips a closed breaker; a throttled probe
        re-opens it for the same interval (not doubled): the store is alive but busy."""
        if not probe:
            return
        with self._lock:
            self._probe_in_flight = False
            fire = self._open(self._clock.monotonic())
        self._fire(*fire)

    def on_failure(self, probe: bool = False) -> None:
        """One failed leg (an endpoint failure after this leg's attempts)."""
        fire = None
        with self._lock:
            now = self._clock.monotonic()
            if probe:
                self._probe_in_flight = False
                self._open_s = min(self._open_s * 2, self._max_open_s)
                fire = self._open(now)
            elif self._state is CLOSED:
                self._failures += 1
                if self._failures >= self.threshold:
                    self._open_s = self._base_open_s
                    fire = self._open(now)
        if fire:
            self._fire(*fire)

    def release_probe(self) -> None:
        """The probe was admitted but nothing was sent (no slot, deadline): let another probe go."""
        with self._lock:
            self._probe_in_flight = False

    def force_open(self, seconds: float | None = None) -> None:
        """Open now (a health check failed, or the fleet says so)."""
        fire = None
        with self._lock:
            if seconds is not None:
                old = self._state
                self._state = OPEN
                self._failures = 0
                self._open_until = self._clock.monotonic() + seconds
                self.transitions += 1
                fire = (old, OPEN, seconds)
            elif self._state is CLOSED:
                fire = self._open(self._clock.monotonic())
        if fire:
            self._fire(*fire)

    def reset(self) -> None:
        """Close the breaker (a successful health probe)."""
        fire = None
        with self._lock:
            self._failures = 0
            if self._state is not CLOSED and not self._probe_in_flight:
                fire = self._close()
        if fire:
            self._fire(*fire)

    def _close(self) -> tuple[str, str, float]:
        old = self._state
        self._state = CLOSED
        self._open_s = self._base_open_s
        self.transitions += 1
        return (old, CLOSED, 0.0)

    def _open(self, now: float) -> tuple[str, str, float]:
        old = self._state
        interval = self._open_s * (1.0 + 0.2 * self._rng())
        self._state = OPEN
        self._open_until = now + interval
        self._failures = 0
        self.transitions += 1
        return (old, OPEN, interval)

    def _fire(self, old: str, new: str, retry_after: float) -> None:
        if self._on_transition is not None and old != new:
            self._on_transition(old, new, retry_after)
