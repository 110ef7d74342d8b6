"""Multiplexer failover rules (contract §3) with scripted fake transports and a FakeClock.

No network: each endpoint is an :class:`Endpoint` built with ``transport=`` a :class:`FakeTransport`
that answers or raises s3kit errors as the test scripts it, installed into the multiplexer's
membership the way ``add_endpoint`` would.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from s3kit import (
    AccessDenied,
    BreakerStateChanged,
    CircuitOpenError,
    ConfigError,
    ConnectionFailed,
    EndpointError,
    EndpointMisconfigured,
    Event,
    FailedOver,
    Multiplexer,
    NoHealthyEndpoint,
    NotFound,
    ReadTimeout,
    Throttled,
)
from s3kit._clock import FakeClock
from s3kit._config import make_config
from s3kit._endpoint import Endpoint
from s3kit._ops import get_object

URL = "http://127.0.0.1:1"
BUCKET = "bk"
Fail = Callable[[str], "EndpointError | None"]


class FakeTransport:
    """Answers every call, unless ``fail(method)`` returns an error to raise."""

    name = "fake"

    def __init__(self, endpoint: str, fail: Fail | None = None) -> None:
        self.endpoint = endpoint
        self.fail = fail
        self.calls: list[str] = []
        self.closed = False
        self._lock = threading.Lock()

    def _do(self, method: str, result: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.calls.append(method)
        fail = self.fail
        if fail is not None:
            error = fail(method)
            if error is not None:
                raise error
        return result

    def head_object(self, bucket: str, key: str, extra: Any, timeout: Any) -> dict[str, Any]:
        return self._do("head_object", {"ContentLength": 4})

    def get_object(
        self, bucket: str, key: str, range: Any, extra: Any, timeout: Any
    ) -> dict[str, Any]:
        return self._do("get_object", {"Body": f"from {self.endpoint}".encode()})

    def put_object(
        self, bucket: str, key: str, body: Any, extra: Any, timeout: Any
    ) -> dict[str, Any]:
        return self._do("put_object", {"ETag": '"etag"'})

    def delete_object(self, bucket: str, key: str, extra: Any, timeout: Any) -> dict[str, Any]:
        return self._do("delete_object", {})

    def copy_object(
        self, bucket: str, key: str, sb: str, sk: str, extra: Any, timeout: Any
    ) -> dict[str, Any]:
        return self._do("copy_object", {"CopyObjectResult": {"ETag": '"etag"'}})

    def list_objects(
        self, bucket: str, prefix: Any, max_keys: Any, delimiter: Any, timeout: Any
    ) -> dict[str, Any]:
        return self._do("list_objects", {"Contents": [], "KeyCount": 0, "IsTruncated": False})

    def upload_file(
        self, path: str, bucket: str, key: str, extra: Any, timeout: Any
    ) -> dict[str, Any]:
        return self._do("upload_file", {"ETag": '"etag"'})

    def list_buckets(self, timeout: Any) -> dict[str, Any]:
        return self._do("list_buckets", {"Buckets": []})

    def presign(self, bucket: str, key: str, expiration: int, method: str) -> str:
        return f"http://{self.endpoint}.invalid/{bucket}/{key}"

    def close(self) -> None:
        self.closed = True


# ------------------------------------------------------------------ error scripts
def refused(method: str) -> EndpointError:
    return ConnectionFailed("connection refused", operation=method)


def stalled(method: str) -> EndpointError:
    return ReadTimeout("read timed out", operation=method)


def slow_down(method: str) -> EndpointError:
    return Throttled(code="SlowDown", status=503, operation=method)


def missing(method: str) -> EndpointError:
    return NotFound(code="NoSuchKey", status=404, operation=method)


def denied(method: str) -> EndpointError:
    return AccessDenied(code="AccessDenied", status=403, operation=method)


def bad_signature(method: str) -> EndpointError:
    return AccessDenied(code="SignatureDoesNotMatch", status=403, operation=method)


# ----------------------------------------------------------------------- helpers
class Rig:
    """A multiplexer on a FakeClock whose endpoints talk to fake transports."""

    def __init__(self, strategy: str = "round-robin", **defaults: Any) -> None:
        defaults.setdefault("retries", 3)
        defaults.setdefault("backoff_base_s", 0.01)
        defaults.setdefault("breaker_open_s", 10.0)
        self.clock = FakeClock()
        self.mux = Multiplexer(strategy=strategy, clock=self.clock, **defaults)
        self.transports: dict[str, FakeTransport] = {}
        self.events: list[Event] = []
        self.mux.on_event(self.events.append)

    def add(self, name: str, fail: Fail | None = None, **options: Any) -> Endpoint:
        transport = FakeTransport(name, fail)
        config = make_config(URL, "ak", "sk", name=name, **{**self.mux._defaults, **options})
        ep = Endpoint(
            config,
            clock=self.clock,
            events=self.mux._events,
            transport=transport,  # type: ignore[arg-type]
            rng=lambda: 0.5,
        )
        self.mux._endpoints[name] = ep
        self.mux._ordered = (*self.mux._ordered, ep)
        self.transports[name] = transport
        return ep

    def calls(self, name: str) -> int:
        return len(self.transports[name].calls)

    def of_kind(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


# ------------------------------------------------------------- failing over
@pytest.mark.parametrize("error", [refused, stalled], ids=["refused", "read-timeout"])
def test_endpoint_failure_fails_over_at_once_one_attempt_per_leg(error: Fail) -> None:
    rig = Rig(retries=3)
    a = rig.add("a", error)
    rig.add("b")
    result = rig.mux.get_object(BUCKET, "k")
    assert result["Endpoint"] == "b"
    assert result["Body"] == b"from b"
    assert rig.calls("a") == 1  # failover, not a retry on a
    assert rig.clock.sleeps == []  # no backoff before failing over
    st = a.stats()
    assert (st.requests, st.endpoint_failures, st.retries, st.failovers_away) == (1, 1, 0, 1)
    assert a.breaker.consecutive_failures == 1
    [event] = rig.of_kind(FailedOver)
    assert (event.endpoint, event.operation, event.error) == (
        "a",
        "get_object",
        type(error("")).__name__,
    )


def test_failover_happens_with_retries_zero() -> None:
    rig = Rig(retries=0)
    rig.add("a", refused)
    rig.add("b")
    assert rig.mux.put_object(BUCKET, "k", b"data")["Endpoint"] == "b"


def test_throttle_fails_over_and_never_trips_the_breaker() -> None:
    rig = Rig(circuit_breaker_threshold=2)
    a = rig.add("a", slow_down)
    rig.add("b")
    rig.add("c")
    for _ in range(9):
        assert rig.mux.head_object(BUCKET, "k")["Endpoint"] in ("b", "c")
    assert rig.calls("a") == 1  # throttled once, then routed behind the others
    assert a.breaker.state == "closed"
    st = a.stats()
    assert (st.throttles, st.endpoint_failures, st.failovers_away) == (1, 0, 1)
    assert st.concurrency_limit < st.max_concurrent  # AIMD halved
    assert [ep.name for ep in rig.mux.ranked()][-1] == "a"


def test_not_found_is_raised_at_once_without_failover() -> None:
    rig = Rig()
    a = rig.add("a", missing)
    rig.add("b")
    with pytest.raises(NotFound) as err:
        rig.mux.get_object(BUCKET, "k")
    assert err.value.attempt_count == 1
    assert rig.calls("b") == 0
    assert a.stats().client_errors == 1
    assert a.breaker.consecutive_failures == 0
    assert rig.of_kind(FailedOver) == []


def test_read_fallback_on_missing_walks_on_for_reads_only() -> None:
    rig = Rig()
    rig.mux.read_fallback_on_missing = True
    rig.add("a", missing)
    rig.add("b")
    assert rig.mux.get_object(BUCKET, "k", strategy="priority")["Endpoint"] == "b"
    assert rig.mux.head_object(BUCKET, "k", strategy="priority")["Endpoint"] == "b"
    # a write answered 404 (NoSuchBucket) is still raised at once
    rig.transports["a"].fail = lambda m: NotFound(code="NoSuchBucket", status=404, operation=m)
    with pytest.raises(NotFound):
        rig.mux.put_object(BUCKET, "k", b"x", strategy="priority")
    assert rig.transports["b"].calls.count("put_object") == 0


def test_key_hash_read_walks_its_order_on_not_found() -> None:
    rig = Rig(strategy="key-hash")
    rig.add("a")
    rig.add("b")
    rig.add("c")
    order = [ep.name for ep in rig.mux.ranked(get_object(BUCKET, "k"))]
    rig.transports[order[0]].fail = missing  # written elsewhere while the owner was down
    assert rig.mux.get_object(BUCKET, "k")["Endpoint"] == order[1]
    assert rig.mux.head_object(BUCKET, "k")["Endpoint"] == order[1]
    # a write answered 404 is still raised at once
    with pytest.raises(NotFound):
        rig.mux.put_object(BUCKET, "k", b"x")
    # missing everywhere: NotFound itself, not NoHealthyEndpoint
    for name in order:
        rig.transports[name].fail = missing
    with pytest.raises(NotFound):
        rig.mux.get_object(BUCKET, "k")


def test_read_fallback_missing_everywhere_raises_not_found() -> None:
    rig = Rig()
    rig.mux.read_fallback_on_missing = True
    rig.add("a", missing)
    rig.add("b", missing)
    with pytest.raises(NotFound):
        rig.mux.get_object(BUCKET, "k")
    assert rig.calls("a") == rig.calls("b") == 1


def test_access_denied_fails_reads_over_but_raises_for_writes() -> None:
    rig = Rig()
    a = rig.add("a", denied)
    rig.add("b")
    for _ in range(2):  # whichever goes first, the read lands on b
        assert rig.mux.get_object(BUCKET, "k", strategy="priority")["Endpoint"] == "b"
        assert rig.mux.head_object(BUCKET, "k", strategy="priority")["Endpoint"] == "b"
        assert rig.mux.list_objects(BUCKET, strategy="priority")["Endpoint"] == "b"
    with pytest.raises(AccessDenied) as err:
        rig.mux.put_object(BUCKET, "k", b"x", strategy="priority")
    assert err.value.code == "AccessDenied"
    assert rig.transports["b"].calls.count("put_object") == 0
    assert a.misconfigured is False
    assert a.breaker.consecutive_failures == 0


def test_rejected_credentials_fail_writes_over_and_mark_misconfigured() -> None:
    rig = Rig()
    a = rig.add("a", bad_signature)
    rig.add("b")
    rig.add("c")
    result = rig.mux.put_object(BUCKET, "k", b"x", strategy="priority")
    assert result["Endpoint"] == "b"
    assert a.misconfigured is True
    assert a.stats().access_errors == 1
    assert a.breaker.consecutive_failures == 0
    [event] = rig.of_kind(EndpointMisconfigured)
    assert (event.endpoint, event.code) == ("a", "SignatureDoesNotMatch")
    # routed last from now on, whatever the strategy's rotation
    for _ in range(6):
        assert rig.mux.ranked()[-1] is a
        assert rig.mux.get_object(BUCKET, "k")["Endpoint"] in ("b", "c")
    assert rig.calls("a") == 1
    assert rig.mux.healthy() == ["b", "c"]
    # a call on it that succeeds clears the mark
    rig.transports["a"].fail = None
    rig.mux.get_object(BUCKET, "k", endpoint="a")
    assert a.misconfigured is False


# ---------------------------------------------------------- not failed over
def test_delete_is_not_failed_over_after_it_was_sent() -> None:
    rig = Rig(retries=2)
    a = rig.add("a", refused)
    rig.add("b")
    with pytest.raises(ConnectionFailed) as err:
        rig.mux.delete_object(BUCKET, "k", strategy="priority")
    assert rig.calls("b") == 0
    # the endpoint's own retries apply (it is the only candidate that may take it)
    assert err.value.attempt_count == 3 == rig.calls("a")
    assert a.stats().retries == 2
    assert rig.of_kind(FailedOver) == []


def test_copy_is_not_failed_over_after_it_was_sent() -> None:
    rig = Rig(retries=0)
    rig.add("a", refused)
    rig.add("b")
    with pytest.raises(ConnectionFailed):
        rig.mux.copy_object(BUCKET, "k2", BUCKET, "k", strategy="priority")
    assert rig.calls("b") == 0


def test_delete_skips_an_open_breaker_endpoint() -> None:
    rig = Rig()
    a = rig.add("a", refused)
    rig.add("b")
    a.breaker.force_open(30)
    for _ in range(3):
        assert rig.mux.delete_object(BUCKET, "k")["Endpoint"] == "b"
    assert rig.calls("a") == 0
    assert rig.mux.delete_object(BUCKET, "k", strategy="priority")["Endpoint"] == "b"


def test_delete_with_every_breaker_open_is_no_healthy_endpoint() -> None:
    rig = Rig()
    for name in ("a", "b"):
        rig.add(name).breaker.force_open(30)
    with pytest.raises(NoHealthyEndpoint) as err:
        rig.mux.delete_object(BUCKET, "k")
    assert [name for name, _ in err.value.attempts] == ["a", "b"]
    assert all(isinstance(e, CircuitOpenError) for _, e in err.value.attempts)
    assert rig.calls("a") == rig.calls("b") == 0


def test_delete_waits_for_a_slot_when_every_endpoint_is_saturated() -> None:
    rig = Rig(max_concurrent=1, acquire_timeout=5.0)
    a = rig.add("a")
    b = rig.add("b")
    assert a.limiter.try_acquire() and b.limiter.try_acquire()
    releaser = threading.Timer(0.2, a.limiter.release)
    releaser.start()
    try:
        assert rig.mux.delete_object(BUCKET, "k")["Endpoint"] == "a"
    finally:
        releaser.join()
        b.limiter.release()


def test_put_waits_for_a_slot_when_every_endpoint_is_saturated() -> None:
    rig = Rig(max_concurrent=1, acquire_timeout=5.0)
    a = rig.add("a")
    b = rig.add("b")
    assert a.limiter.try_acquire() and b.limiter.try_acquire()
    releaser = threading.Timer(0.2, a.limiter.release)  # both equally loaded: waits on a
    t0 = time.monotonic()
    releaser.start()
    try:
        assert rig.mux.put_object(BUCKET, "k", b"x")["Endpoint"] == "a"
    finally:
        releaser.join()
        b.limiter.release()
    waited = time.monotonic() - t0
    print(f"\nput waited {waited:.2f}s for a slot")
    assert waited < 4.0
    assert a.stats().saturated == 1 == b.stats().saturated
    assert a.limiter.in_flight == b.limiter.in_flight == 0


# ------------------------------------------------------------ all candidates fail
def test_all_fail_raises_no_healthy_endpoint_listing_every_attempt() -> None:
    rig = Rig(retries=0)
    rig.add("a", refused)
    rig.add("b", stalled)
    rig.add("c", slow_down)
    with pytest.raises(NoHealthyEndpoint) as err:
        rig.mux.get_object(BUCKET, "k", strategy="priority")
    attempts = err.value.attempts
    assert [name for name, _ in attempts] == ["a", "b", "c"]
    assert [type(e) for _, e in attempts] == [ConnectionFailed, ReadTimeout, Throttled]
    assert err.value.__cause__ is attempts[-1][1]
    assert "a: ConnectionFailed" in str(err.value)
    assert rig.clock.sleeps == []  # one round: retries=0


def test_rounds_are_at_most_one_plus_the_largest_retries() -> None:
    rig = Rig(circuit_breaker_threshold=10)
    rig.add("a", refused, retries=1)
    rig.add("b", refused, retries=2)
    with pytest.raises(NoHealthyEndpoint) as err:
        rig.mux.get_object(BUCKET, "k")
    assert rig.calls("a") == rig.calls("b") == 3  # 1 + max(1, 2) rounds, one attempt each
    assert len(err.value.attempts) == 6
    assert len(rig.clock.sleeps) == 2  # a backoff between rounds, none within one
    assert all(0 <= s <= 5.0 for s in rig.clock.sleeps)
    assert rig.mux.endpoint("a").stats().retries == 0  # failover legs spend no retries


def test_rounds_stop_once_every_breaker_is_open() -> None:
    rig = Rig(retries=3, circuit_breaker_threshold=2)
    rig.add("a", refused)
    rig.add("b", refused)
    with pytest.raises(NoHealthyEndpoint) as err:
        rig.mux.get_object(BUCKET, "k")
    # round 1 and 2 fail on both (2 legs each: both open), round 3 finds both open and stops
    assert rig.calls("a") == rig.calls("b") == 2
    kinds = [type(e).__name__ for _, e in err.value.attempts]
    assert kinds == ["ConnectionFailed"] * 4 + ["CircuitOpenError"] * 2
    assert len(rig.clock.sleeps) == 2
    assert err.value.__cause__ is err.value.attempts[-1][1]


def test_each_failed_leg_counts_once_and_opens_after_threshold_routed_calls() -> None:
    rig = Rig(retries=3, circuit_breaker_threshold=2)
    dead = rig.add("a", refused)
    rig.add("b")
    rig.add("c")
    opened: list[int] = []
    rig.mux.on_event(
        lambda e: (
            opened.append(rig.calls("a"))
            if isinstance(e, BreakerStateChanged) and e.new == "open"
            else None
        )
    )
    served = []
    for _ in range(30):
        served.append(rig.mux.get_object(BUCKET, "k")["Endpoint"])
        if rig.calls("a") < 2:
            assert dead.breaker.state == "closed"
    assert "a" not in served
    assert rig.calls("a") == 2  # two calls tried it, one attempt each: open, never tried again
    assert opened == [2]
    assert dead.breaker.state == "open"
    st = dead.stats()
    assert (st.endpoint_failures, st.failovers_away, st.retries) == (2, 2, 0)
    assert st.requests == 2
    assert rig.clock.sleeps == []


def test_open_breaker_probed_after_interval_and_closed() -> None:
    rig = Rig(circuit_breaker_threshold=1, breaker_open_s=10.0)
    a = rig.add("a", refused)
    rig.add("b")
    rig.mux.get_object(BUCKET, "k", strategy="priority")
    assert a.breaker.state == "open"
    rig.transports["a"].fail = None  # the endpoint came back
    for _ in range(4):
        assert rig.mux.get_object(BUCKET, "k", strategy="priority")["Endpoint"] == "b"
    rig.clock.advance(a.breaker.retry_after())
    assert a.breaker.state == "half_open"
    served = [rig.mux.get_object(BUCKET, "k")["Endpoint"] for _ in range(2)]
    assert "a" in served  # back in the rotation: the first call it heads is the probe
    assert a.breaker.state == "closed"
    assert a.breaker.probes == 1


def test_failed_over_events_and_counters_add_up() -> None:
    rig = Rig(retries=0, circuit_breaker_threshold=100)
    a = rig.add("a", refused)
    b = rig.add("b", slow_down)  # priority does not demote a throttled endpoint
    rig.add("c", priority=1)
    for _ in range(5):
        assert rig.mux.get_object(BUCKET, "k", strategy="priority")["Endpoint"] == "c"
    failed = rig.of_kind(FailedOver)
    assert Counter(e.endpoint for e in failed) == {"a": 5, "b": 5}
    assert {e.error for e in failed} == {"ConnectionFailed", "Throttled"}
    assert a.stats().failovers_away == 5 == b.stats().failovers_away
    for ep in rig.mux.endpoints.values():
        st = ep.stats()
        assert st.requests == (
            st.successes + st.client_errors + st.access_errors + st.throttles + st.endpoint_failures
        )


# ---------------------------------------------------------------- named calls
def test_named_call_uses_own_retries_and_never_fails_over() -> None:
    rig = Rig(retries=2)
    a = rig.add("a", refused)
    rig.add("b")
    with pytest.raises(ConnectionFailed) as err:
        rig.mux.get_object(BUCKET, "k", endpoint="a")
    assert err.value.attempt_count == 3  # retries + 1
    assert isinstance(err.value.previous, ConnectionFailed)
    assert rig.calls("a") == 3 and rig.calls("b") == 0
    assert len(rig.clock.sleeps) == 2
    st = a.stats()
    assert (st.requests, st.retries, st.failovers_away) == (3, 2, 0)
    assert a.breaker.consecutive_failures == 1  # one leg
    assert rig.of_kind(FailedOver) == []
    assert rig.mux.get_object(BUCKET, "k", endpoint="b")["Endpoint"] == "b"


def test_named_call_to_an_open_endpoint_raises_circuit_open() -> None:
    rig = Rig()
    a = rig.add("a")
    rig.add("b")
    a.breaker.force_open(30)
    with pytest.raises(CircuitOpenError, match="Circuit breaker is open"):
        rig.mux.get_object(BUCKET, "k", endpoint="a")
    assert rig.calls("a") == rig.calls("b") == 0


def test_unknown_endpoint_name_is_a_config_error_naming_known_ones() -> None:
    rig = Rig()
    rig.add("alpha")
    rig.add("beta")
    with pytest.raises(ConfigError) as err:
        rig.mux.get_object(BUCKET, "k", endpoint="gamma")
    assert "gamma" in str(err.value)
    assert "alpha" in str(err.value) and "beta" in str(err.value)
    with pytest.raises(ConfigError):
        rig.mux.endpoint("gamma")


# --------------------------------------------------------------- health checks
def test_check_health_returns_answering_names_and_feeds_breakers() -> None:
    rig = Rig(circuit_breaker_threshold=2)
    rig.add("a")
    dead = rig.add("b", refused)
    rig.add("c", missing)  # an S3 answer: the endpoint is up
    assert rig.mux.check_health() == ["a", "c"]
    assert dead.breaker.state == "closed"
    assert rig.mux.check_health() == ["a", "c"]
    assert dead.breaker.state == "open"
    assert rig.mux.healthy() == ["a", "c"]
    rig.transports["b"].fail = None
    rig.clock.advance(dead.breaker.retry_after())
    assert rig.mux.check_health() == ["a", "b", "c"]
    assert dead.breaker.state == "closed"


@pytest.mark.parametrize("error", [slow_down, bad_signature], ids=["throttle", "bad-credentials"])
def test_health_probe_throttle_or_bad_credentials_never_trip_breaker(error: Fail) -> None:
    rig = Rig(circuit_breaker_threshold=2)
    ep = rig.add("a", error)
    for _ in range(4):
        assert "a" not in rig.mux.check_health()  # answered, but not healthy
    assert ep.breaker.state == "closed"


# ------------------------------------------------------------------ configuration
def test_explicit_endpoint_options_beat_multiplexer_defaults() -> None:
    mux = Multiplexer(retries=0, max_concurrent=16)
    ep = mux.add_endpoint("a", URL, "ak", "sk", retries=3, max_concurrent=5)
    assert (ep.config.retries, ep.config.max_concurrent) == (3, 5)


def test_multiplexer_defaults_apply_to_added_endpoints() -> None:
    mux = Multiplexer(retries=0, circuit_breaker_threshold=2, read_timeout=1)
    ep = mux.add_endpoint("a", URL, "ak", "sk", retries=1)
    assert (ep.config.retries, ep.config.circuit_breaker_threshold) == (1, 2)
    assert ep.config.read_timeout == 1
    with pytest.raises(ConfigError, match="already exists"):
        mux.add_endpoint("a", URL)
    mux.close()
