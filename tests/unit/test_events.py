"""EventBus: listeners, unsubscribe, and failure isolation."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from s3kit._events import (
    BreakerStateChanged,
    EndpointMisconfigured,
    Event,
    EventBus,
    FailedOver,
    RetryScheduled,
)


def test_subscriber_receives_the_event_object() -> None:
    bus = EventBus()
    got: list[Event] = []
    bus.subscribe(got.append)
    event = BreakerStateChanged("ep", "closed", "open", 30.0)
    bus.emit(event)
    assert got == [event]
    assert got[0] is event


def test_listeners_are_called_in_subscription_order() -> None:
    bus = EventBus()
    calls: list[str] = []
    bus.subscribe(lambda e: calls.append("first"))
    bus.subscribe(lambda e: calls.append("second"))
    bus.emit(FailedOver("ep", "get_object", "ReadTimeout"))
    assert calls == ["first", "second"]


def test_unsubscribe_stops_delivery_and_is_idempotent() -> None:
    bus = EventBus()
    a: list[Event] = []
    b: list[Event] = []
    unsub_a = bus.subscribe(a.append)
    bus.subscribe(b.append)
    bus.emit(Event("one"))
    unsub_a()
    unsub_a()  # a second call is harmless
    bus.emit(Event("two"))
    assert [e.endpoint for e in a] == ["one"]
    assert [e.endpoint for e in b] == ["one", "two"]


def test_listener_exception_does_not_propagate(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    after: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    bus.subscribe(broken)
    bus.subscribe(after.append)
    with caplog.at_level(logging.ERROR, logger="s3kit"):
        bus.emit(RetryScheduled("ep", "put_object", 1, 0.1, "ReadTimeout"))  # must not raise
    assert len(after) == 1  # later listeners still run
    assert any("listener" in r.getMessage() for r in caplog.records)
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


def test_emit_without_listeners_is_fine() -> None:
    EventBus().emit(Event("ep"))


def test_emit_logs_a_description(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    with caplog.at_level(logging.INFO, logger="s3kit"):
        bus.emit(BreakerStateChanged("minio-a", "closed", "open", 30.0), logging.WARNING)
        bus.emit(EndpointMisconfigured("minio-b", "get_object", "SignatureDoesNotMatch"))
    messages = [r.getMessage() for r in caplog.records]
    assert "endpoint minio-a: breaker closed -> open for 30.0s" in messages
    assert any("minio-b" in m and "SignatureDoesNotMatch" in m for m in messages)
    assert caplog.records[0].levelno == logging.WARNING


def test_events_are_frozen_and_have_a_kind() -> None:
    event = BreakerStateChanged("ep", "open", "half_open", 0.0)
    assert event.kind == "BreakerStateChanged"
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.new = "closed"  # type: ignore[misc]


def test_unsubscribe_removes_only_its_own_subscription() -> None:
    bus = EventBus()
    got: list[Event] = []

    def listener(event: Event) -> None:
        got.append(event)

    unsub_first = bus.subscribe(listener)
    bus.subscribe(listener)  # the same function object, subscribed twice
    unsub_first()
    bus.emit(Event("ep"))
    assert len(got) == 1
