"""Frozen event objects for listeners, and the ``s3kit`` logger.

Listeners are called as ``callback(event)``; they should accept any :class:`Event` subclass and
ignore kinds they do not know, so new events don't break them. A listener that raises is logged
and otherwise ignored: monitoring must never fail a request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "BreakerStateChanged",
    "EndpointMisconfigured",
    "EndpointSaturatedEvent",
    "Event",
    "EventBus",
    "FailedOver",
    "RetryScheduled",
    "logger",
]

logger = logging.getLogger("s3kit")
logger.addHandler(logging.NullHandler())  # a library leaves output to the application


@dataclass(frozen=True)
class Event:
    endpoint: str

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class BreakerStateChanged(Event):
    old: str
    new: str
    retry_after: float


@dataclass(frozen=True)
class RetryScheduled(Event):
    operation: str
    attempt: int
    delay: float
    error: str


@dataclass(frozen=True)
class FailedOver(Event):
    """A strategy-routed call left ``endpoint`` (because of ``error``) for the next candidate."""

    operation: str
    error: str


@dataclass(frozen=True)
class EndpointSaturatedEvent(Event):
    operation: str
    limit: int


@dataclass(frozen=True)
class EndpointMisconfigured(Event):
    """The endpoint rejected our credentials; it is routed last until a call on it succeeds."""

    operation: str
    code: str


Listener = Callable[[Event], None]


class EventBus:
    """Thread-safe list of listeners; emitting with no listener costs one attribute read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: tuple[Listener, ...] = ()

    def subscribe(self, callback: Listener) -> Callable[[], None]:
        # Each subscription is its own wrapper, so unsubscribing removes only this one.
        def token(event: Event) -> None:
            callback(event)

        with self._lock:
            self._listeners = (*self._listeners, token)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(cb for cb in self._listeners if cb is not token)

        return unsubscribe

    def emit(self, event: Event, level: int = logging.INFO) -> None:
        if logger.isEnabledFor(level):
            logger.log(level, "%s", _describe(event))
        for callback in self._listeners:
            try:
                callback(event)
            except Exception:
                logger.exception("s3kit event listener %r failed", callback)


def _describe(event: Event) -> str:
    if isinstance(event, BreakerStateChanged):
        extra = f" for {event.retry_after:.1f}s" if event.new == "open" else ""
        return f"endpoint {event.endpoint}: breaker {event.old} -> {event.new}{extra}"
    if isinstance(event, RetryScheduled):
        return (
            f"endpoint {event.endpoint}: retry {event.attempt} of {event.operation} "
            f"in {event.delay:.2f}s after {event.error}"
        )
    if isinstance(event, FailedOver):
        return f"endpoint {event.endpoint}: {event.operation} failed over ({event.error})"
    if isinstance(event, EndpointSaturatedEvent):
        return (
            f"endpoint {event.endpoint}: saturated during {event.operation} (limit {event.limit})"
        )
    if isinstance(event, EndpointMisconfigured):
        return (
            f"endpoint {event.endpoint}: credentials rejected ({event.code}) "
            f"during {event.operation}"
        )
    return repr(event)
