"""How a half-open probe's outcome drives the breaker (contract §3, "Half-open").

"Any HTTP answer except a throttle or 500/502/504 closes the breaker; a throttle re-opens it
without doubling the interval." Driven through Endpoint.run with an in-memory Op: no network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from s3kit._clock import FakeClock
from s3kit._config import make_config
from s3kit._endpoint import Endpoint
from s3kit._errors import (
    CircuitOpenError,
    ConnectionFailed,
    EndpointError,
    NotFound,
    ServiceError,
    Throttled,
)
from s3kit._ops import READ, Op

OPEN_S = 10.0


def make_endpoint() -> tuple[Endpoint, FakeClock]:
    cfg = make_config(
        "http://127.0.0.1:1",
        "ak",
        "sk",
        name="ep",
        circuit_breaker_threshold=1,
        breaker_open_s=OPEN_S,
        breaker_max_open_s=1000,
        retries=0,
    )
    clock = FakeClock()
    ep = Endpoint(cfg, clock=clock, transport=object(), rng=lambda: 0.0)  # type: ignore[arg-type]
    return ep, clock


def op_raising(make_error: Callable[[], EndpointError] | None) -> Op:
    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        if make_error is None:
            return {"ok": True}
        raise make_error()

    return Op("head_object", attempt, READ, "b", "k")


def refused() -> EndpointError:
    return ConnectionFailed("refused", endpoint="ep", operation="head_object")


def opened_then_half_open() -> tuple[Endpoint, FakeClock]:
    ep, clock = make_endpoint()
    with pytest.raises(ConnectionFailed):
        ep.run(op_raising(refused))
    assert ep.breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        ep.run(op_raising(None))
    clock.advance(OPEN_S)
    assert ep.breaker.state == "half_open"
    return ep, clock


def test_failed_probe_reopens_with_doubled_interval() -> None:
    ep, _ = opened_then_half_open()
    with pytest.raises(ConnectionFailed):
        ep.run(op_raising(refused))
    assert ep.breaker.state == "open"
    assert ep.breaker.retry_after() == pytest.approx(2 * OPEN_S)


def test_probe_500_reopens() -> None:
    ep, _ = opened_then_half_open()
    with pytest.raises(ServiceError):
        ep.run(op_raising(lambda: ServiceError(code="InternalError", status=500)))
    assert ep.breaker.state == "open"


def test_probe_success_closes() -> None:
    ep, _ = opened_then_half_open()
    assert ep.run(op_raising(None))["Endpoint"] == "ep"
    assert ep.breaker.state == "closed"


def test_probe_answered_with_404_closes() -> None:
    ep, _ = opened_then_half_open()
    with pytest.raises(NotFound):
        ep.run(op_raising(lambda: NotFound(code="NoSuchKey", status=404)))
    assert ep.breaker.state == "closed"


def test_throttled_probe_reopens_without_doubling() -> None:
    ep, _ = opened_then_half_open()
    with pytest.raises(Throttled):
        ep.run(op_raising(lambda: Throttled(code="SlowDown", status=503)))
    assert ep.breaker.state == "open"
    assert ep.breaker.retry_after() == pytest.approx(OPEN_S)
