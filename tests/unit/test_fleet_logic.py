"""FleetHealth without a Redis server: URL masking, validation, the probe gate, applying the
fleet's messages, local fallback, and logging an outage once (s3kit._fleet)."""

from __future__ import annotations

import json
import logging
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("redis")

from s3kit._breaker import ADMIT, PROBE, REJECT, CircuitBreaker
from s3kit._clock import FakeClock
from s3kit._config import make_config
from s3kit._endpoint import Endpoint
from s3kit._errors import (
    CircuitOpenError,
    ConfigError,
    ConnectionFailed,
    InvalidArgument,
    Throttled,
)
from s3kit._events import (
    BreakerStateChanged,
    EndpointMisconfigured,
    Event,
    EventBus,
    FailedOver,
)
from s3kit._fleet import (
    FleetHealth,
    FleetStoreRestored,
    FleetStoreUnavailable,
    endpoint_id,
    mask_url,
)
from s3kit._ops import READ, Op
from s3kit.testing import free_port

PASSWORD = "hunter2-Secret"
OPEN_S = 10.0


class StubTransport:
    """Answers the health probe as told; ``gate`` holds a probe until the test releases it."""

    name = "stub"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.error: Exception | None = None
        self.probes = 0
        self.entered = 0

    def list_buckets(self, timeout: float | None) -> dict[str, Any]:
        self.entered += 1
        self.gate.wait(10)
        self.probes += 1
        if self.error is not None:
            raise self.error
        return {"Buckets": []}

    def close(self) -> None:
        pass


def make_endpoint(name: str = "ep", bus: EventBus | None = None) -> tuple[Endpoint, FakeClock]:
    cfg = make_config(
        "http://127.0.0.1:1",
        "ak",
        "sk",
        name=name,
        circuit_breaker_threshold=2,
        breaker_open_s=OPEN_S,
        breaker_max_open_s=4 * OPEN_S,
        retries=0,
    )
    clock = FakeClock()
    transport: Any = StubTransport()
    ep = Endpoint(cfg, clock=clock, transport=transport, events=bus, rng=lambda: 0.0)
    return ep, clock


def dead_store() -> str:
    return f"redis://app:{PASSWORD}@127.0.0.1:{free_port()}/0"


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.fixture
def made() -> Iterator[list[FleetHealth]]:
    fleets: list[FleetHealth] = []
    yield fleets
    for fleet in fleets:
        fleet.stop()


def fleet_for(
    made: list[FleetHealth], endpoints: dict[str, Endpoint], clock: FakeClock, **kw: Any
) -> FleetHealth:
    fleet = FleetHealth(
        dead_store(), "unit", endpoints=endpoints, clock=clock, poll_interval_s=0.02, **kw
    )
    made.append(fleet)
    return fleet


# ------------------------------------------------------------------------- urls and names
@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user:pw@host:6379/0", "redis://user:***@host:6379/0"),
        ("rediss://user:p%40ss@host:6380/1", "rediss://user:***@host:6380/1"),
        ("redis://:pw@host", "redis://:***@host"),
        ("redis://pwonly@host", "redis://***@host"),
        ("redis://host/0?password=pw&db=1", "redis://host/0?password=%2A%2A%2A&db=1"),
        ("unix://:pw@/tmp/redis.sock?db=0", "unix://:***@/tmp/redis.sock?db=0"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_endpoint_id_is_name_and_url_hash() -> None:
    a = endpoint_id("eu", "https://s3.eu-west-1.amazonaws.com")
    assert a == endpoint_id("eu", "https://s3.eu-west-1.amazonaws.com")
    assert a.startswith("eu#") and "amazonaws" not in a
    assert a != endpoint_id("eu", "https://s3.eu-west-2.amazonaws.com")
    assert a != endpoint_id("us", "https://s3.eu-west-1.amazonaws.com")


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("url", "fleet", "argument"),
    [
        (f"http://u:{PASSWORD}@host", "f", "health_store"),
        ("", "f", "health_store"),
        ("redis://host", None, "fleet"),
        ("redis://host", "", "fleet"),
        ("redis://host", "has space", "fleet"),
        ("redis://host", "a{b}", "fleet"),
        (f"redis://u:{PASSWORD}@host:notaport/0", "f", "health_store"),
    ],
)
def test_bad_arguments_raise_without_showing_the_password(
    url: str, fleet: str | None, argument: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        FleetHealth(url, fleet)
    assert info.value.argument == argument
    assert PASSWORD not in str(info.value)


def test_missing_redis_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigError, match=r"s3kit\[redis\]"):
        FleetHealth("redis://127.0.0.1:6379/0", "f")


def test_repr_stats_and_pickling_never_show_the_password() -> None:
    fleet = FleetHealth(f"rediss://app:{PASSWORD}@cache.internal:6380/0", "orders-api")
    assert PASSWORD not in repr(fleet) and "app:***@cache.internal" in repr(fleet)
    assert PASSWORD not in str(fleet.stats())
    with pytest.raises(TypeError):
        pickle.dumps(fleet)


def test_start_without_endpoints_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        FleetHealth("redis://127.0.0.1:1/0", "f").start()


# ---------------------------------------------------------------------------- the gate
def test_gate_keeps_state_and_refuses_the_probe_to_callers(made: list[FleetHealth]) -> None:
    ep, clock = make_endpoint()
    ep.breaker.force_open(OPEN_S)
    fleet = fleet_for(made, {"ep": ep}, clock)
    fleet._adopt()  # what start() does first
    assert type(ep.breaker).__name__ == "_FleetBreaker"
    assert ep.breaker.state == "open" and ep.breaker.retry_after() == pytest.approx(OPEN_S)
    clock.advance(OPEN_S)
    assert ep.breaker.state == "half_open"
    assert ep.breaker.admit() == REJECT  # a user call is never the probe
    op = Op("head_object", lambda e, t: {"ok": True}, READ, "b", "k")
    with pytest.raises(CircuitOpenError):
        ep.run(op)
    assert ep.breaker.probes == 0
    fleet.stop()
    assert type(ep.breaker) is CircuitBreaker
    assert ep.breaker.admit() == PROBE  # without a store, callers probe again


def test_gate_hot_path_admits_when_closed(made: list[FleetHealth]) -> None:
    ep, clock = make_endpoint()
    fleet_for(made, {"ep": ep}, clock)._adopt()
    assert ep.breaker.admit() == ADMIT


# ------------------------------------------------------------ store unreachable: fallback
def test_unreachable_store_falls_back_to_a_local_prober(
    made: list[FleetHealth], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="s3kit")
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    ep, clock = make_endpoint(bus=bus)
    transport: Any = ep.transport
    transport.gate.clear()  # hold the probe while we look
    fleet = fleet_for(made, {"ep": ep}, clock).start()
    wait_for(lambda: any(isinstance(e, FleetStoreUnavailable) for e in events))
    assert not fleet.connected
    ep.breaker.force_open(OPEN_S)
    clock.advance(OPEN_S)
    wait_for(lambda: transport.entered == 1)  # the prober is in its probe
    assert ep.breaker.admit() == REJECT  # the prober holds the half-open slot, not a caller
    transport.gate.set()
    wait_for(lambda: ep.breaker.state == "closed")
    assert fleet.probe_log[-1][2:] == (-1, "ok")  # -1: a local probe, no fleet lease
    time.sleep(0.3)  # more reconnect attempts: still one log line and one event
    downs = [e for e in events if isinstance(e, FleetStoreUnavailable)]
    assert len(downs) == 1 and downs[0].endpoint == "" and "***" in downs[0].store
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([m for m in lines if "unreachable" in m]) == 1
    assert PASSWORD not in caplog.text
    assert all(PASSWORD not in repr(e) for e in events)


@pytest.mark.parametrize(
    ("error", "interval"),
    [
        (ConnectionFailed("refused", endpoint="ep", operation="probe"), 2 * OPEN_S),
        (Throttled(code="SlowDown", status=503), OPEN_S),
    ],
)
def test_local_probe_failure_reopens(
    made: list[FleetHealth], error: Exception, interval: float
) -> None:
    ep, clock = make_endpoint()
    transport: Any = ep.transport
    transport.error = error
    fleet = fleet_for(made, {"ep": ep}, clock).start()
    ep.breaker.force_open(OPEN_S)
    clock.advance(OPEN_S)
    wait_for(lambda: fleet.probes_sent >= 1 and ep.breaker.state == "open")
    assert interval <= ep.breaker.retry_after() <= interval * 1.2
    assert ep.name in fleet._changed  # pushed to the fleet when the store is back


# ------------------------------------------------------------------ applying the fleet's news
def test_messages_are_applied_without_echo(made: list[FleetHealth]) -> None:
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    ep, clock = make_endpoint(bus=bus)
    fleet = fleet_for(made, {"ep": ep}, clock)
    fleet._adopt()
    eid = endpoint_id("ep", ep.url)

    def send(**msg: Any) -> None:
        fleet._on_message(json.dumps({"o": "someone-else", "e": eid, **msg}))

    send(k="fails", c=1)  # one failure elsewhere in the window: ours opens one sooner
    assert ep.breaker.threshold == 1
    assert not fleet._changed

    send(k="open", g=10, ms=5000)
    assert ep.breaker.threshold == 2  # back to the configured threshold
    assert ep.breaker.state == "open" and ep.breaker.retry_after() == pytest.approx(5.0)
    opened = [e for e in events if isinstance(e, BreakerStateChanged)]
    assert opened and opened[-1].new == "open" and opened[-1].retry_after == pytest.approx(5.0)
    assert not fleet._changed  # applied state is not published back

    send(k="closed", g=9)  # older than what we applied: ignored
    assert ep.breaker.state == "open"
    send(k="closed", g=11)
    assert ep.breaker.state == "closed"

    fleet._on_message(json.dumps({"o": fleet._origin, "e": eid, "k": "open", "g": 99, "ms": 1}))
    assert ep.breaker.state == "closed"  # our own message

    send(k="throttle", ms=3000)
    assert ep.limiter.throttled_until == pytest.approx(clock.monotonic() + 3.0)
    assert ep.limiter.limit == ep.limiter.max_concurrent  # a time, not a limit cut

    send(k="misconf", c="InvalidAccessKeyId")
    assert ep.misconfigured
    assert any(isinstance(e, EndpointMisconfigured) and e.operation == "fleet" for e in events)
    send(k="misconf", c="")
    assert not ep.misconfigured

    for junk in ("not json", json.dumps({"e": eid, "k": "open"}), json.dumps({"e": "x#1"})):
        fleet._on_message(junk)  # ignored, never raises
    assert ep.breaker.state == "closed"


def test_listener_marks_local_transitions_and_wakes(made: list[FleetHealth]) -> None:
    bus = EventBus()
    ep, clock = make_endpoint(bus=bus)
    fleet = fleet_for(made, {"ep": ep}, clock)
    fleet._adopt()
    fleet._wake.clear()
    bus.emit(FailedOver("ep", "get_object", "ConnectionFailed"))
    assert fleet._wake.is_set() and not fleet._changed
    fleet._wake.clear()
    ep.breaker.force_open(OPEN_S)  # a local transition
    assert fleet._wake.is_set() and fleet._changed == {"ep"}


def test_an_outage_is_logged_once_and_restored(
    made: list[FleetHealth], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="s3kit")
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    ep, clock = make_endpoint(bus=bus)
    fleet = fleet_for(made, {"ep": ep}, clock)
    fleet._adopt()
    err = ConnectionError(f"auth failed for {PASSWORD}")
    fleet._set_down(err)
    fleet._set_down(err)
    fleet._set_up()
    fleet._set_down(err)
    kinds = [type(e) for e in events]
    assert kinds == [FleetStoreUnavailable, FleetStoreRestored, FleetStoreUnavailable]
    assert fleet.outages == 2
    assert PASSWORD not in caplog.text and "auth failed for ***" in caplog.text
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 2
