"""Process-level faults against one endpoint handler: bad credentials, crash, stall, load.

Every test has its own server (``fresh_server``) since it kills or pauses it; measured
latencies are printed (``pytest -s``) and only checked against generous sanity bounds.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import s3kit
from s3kit import (
    AccessDenied,
    CircuitOpenError,
    ConnectionFailed,
    ConnectTimeout,
    EndpointSaturated,
    NotFound,
    ReadTimeout,
    TransportError,
)
from s3kit.testing import S3Server

BUCKET = "test-bucket"
ServerFactory = Callable[..., S3Server]


def _wait_half_open(handler: s3kit.Endpoint) -> None:
    """Sleep until the breaker's open interval (with its ×1.0-1.2 jitter) has passed."""
    time.sleep(handler.breaker.retry_after() + 0.05)
    assert handler.stats().state == "half_open"


@pytest.mark.timeout(90)
def test_wrong_credentials_fail_fast_and_never_trip_breaker(
    kit: s3kit.S3Kit, fresh_server: ServerFactory
) -> None:
    server = fresh_server("nanio")
    bad = kit.create_s3_endpoint_handler(
        server.url, secret_key="not-the-secret", circuit_breaker_threshold=3, retries=3
    )
    good = kit.create_s3_endpoint_handler(server.url)
    try:
        with pytest.raises(AccessDenied) as err:
            bad.list_objects(BUCKET)
        assert err.value.code == "SignatureDoesNotMatch"
        assert err.value.attempt_count == 1
        st = bad.stats()
        assert (st.requests, st.access_errors, st.retries) == (1, 1, 0)
        assert st.misconfigured is True

        for i in range(9):  # 10 calls in all, threshold 3
            with pytest.raises(AccessDenied) as err:
                bad.get_object(BUCKET, f"k{i}")
            assert err.value.attempt_count == 1
        st = bad.stats()
        assert st.state == "closed"
        assert st.misconfigured is True
        assert (st.requests, st.access_errors, st.retries, st.endpoint_failures) == (10, 10, 0, 0)
        assert bad.breaker.consecutive_failures == 0

        with pytest.raises(AccessDenied) as err:  # an unknown access key is rejected too
            kit.create_s3_endpoint_handler(server.url, access_key="nobody").list_objects(BUCKET)
        assert err.value.code == "InvalidAccessKeyId"

        # The server is fine: a handler with the right credentials works at once.
        good.put_object(BUCKET, "after-bad-creds", b"ok")
        assert good.get_object(BUCKET, "after-bad-creds")["Body"] == b"ok"
        assert good.stats().misconfigured is False
    finally:
        bad.close()
        good.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["moto", "nanio"])
def test_killed_server_opens_breaker_then_one_probe_closes_it(
    kit: s3kit.S3Kit, fresh_server: ServerFactory, kind: str
) -> None:
    server = fresh_server(kind)
    handler = kit.create_s3_endpoint_handler(
        server.url,
        retries=1,
        backoff_base_s=0.01,
        circuit_breaker_threshold=3,
        breaker_open_s=0.5,
    )
    try:
        handler.put_object(BUCKET, "before-kill", b"v")  # a pooled keep-alive connection too
        t_kill = time.perf_counter()
        server.kill()
        for _ in range(3):
            assert handler.stats().state == "closed"
            with pytest.raises(ConnectionFailed) as err:
                handler.head_object(BUCKET, "before-kill")
            assert err.value.attempt_count == 2  # retries=1
        t_open = time.perf_counter()
        st = handler.stats()
        assert st.state == "open"
        assert (st.endpoint_failures, st.retries) == (6, 3)
        print(f"\n[{kind}] kill -> breaker open after 3 calls: {(t_open - t_kill) * 1e3:.1f} ms")

        with pytest.raises(CircuitOpenError) as open_err:
            handler.head_object(BUCKET, "before-kill")
        assert "Circuit breaker is open" in str(open_err.value)
        assert open_err.value.attempt_count == 0
        assert 0 < open_err.value.retry_after <= 0.6

        latencies = []
        for _ in range(100):
            t0 = time.perf_counter()
            with pytest.raises(CircuitOpenError):
                handler.head_object(BUCKET, "before-kill")
            latencies.append(time.perf_counter() - t0)
        median_us = statistics.median(latencies) * 1e6
        print(
            f"[{kind}] CircuitOpenError latency over 100 calls: median {median_us:.1f} us, "
            f"max {max(latencies) * 1e6:.1f} us"
        )
        assert max(latencies) < 0.05  # sanity only: nothing is sent
        st = handler.stats()
        assert st.rejected_open == 101
        assert st.requests == 7  # the put + 6 attempts: rejected calls send nothing

        server.restart()
        server.create_bucket(BUCKET)  # moto restarts empty; nanio kept it on disk
        _wait_half_open(handler)

        probes_before = handler.breaker.probes
        barrier = threading.Barrier(8)
        outcomes: list[str] = []
        lock = threading.Lock()

        def call() -> None:
            barrier.wait()
            try:
                handler.list_objects(BUCKET)
                result = "ok"
            except CircuitOpenError:
                result = "open"
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        print(f"[{kind}] 8 callers after the open interval: {sorted(outcomes)}")
        assert len(outcomes) == 8
        assert handler.breaker.probes == probes_before + 1  # exactly one probe admitted
        assert outcomes.count("ok") >= 1
        st = handler.stats()
        assert st.state == "closed"
        assert st.rejected_open == 101 + outcomes.count("open")
        handler.list_objects(BUCKET)  # closed: no further probe
        assert handler.breaker.probes == probes_before + 1
    finally:
        handler.close()


@pytest.mark.timeout(90)
def test_paused_server_times_out_opens_breaker_and_recovers(
    kit: s3kit.S3Kit, fresh_server: ServerFactory
) -> None:
    server = fresh_server("moto")
    handler = kit.create_s3_endpoint_handler(
        server.url,
        read_timeout=1,
        connect_timeout=1,
        retries=0,
        circuit_breaker_threshold=2,
        breaker_open_s=0.5,
    )
    try:
        handler.put_object(BUCKET, "k", b"v")
        t_pause = time.perf_counter()
        server.pause()
        for _ in range(2):
            t0 = time.perf_counter()
            with pytest.raises((ReadTimeout, ConnectTimeout)) as err:
                handler.head_object(BUCKET, "k")
            elapsed = time.perf_counter() - t0
            print(f"\nstalled call ended in {elapsed:.2f} s with {type(err.value).__name__}")
            assert elapsed < 10
            assert err.value.attempt_count == 1
        t_open = time.perf_counter()
        assert handler.stats().state == "open"
        print(f"SIGSTOP -> breaker open after 2 calls: {t_open - t_pause:.2f} s")
        with pytest.raises(CircuitOpenError):
            handler.head_object(BUCKET, "k")

        server.resume()
        _wait_half_open(handler)
        probes = handler.breaker.probes
        assert handler.head_object(BUCKET, "k")["ContentLength"] == 1  # the probe
        assert handler.breaker.probes == probes + 1
        st = handler.stats()
        assert st.state == "closed"
        assert st.endpoint_failures == 2
    finally:
        handler.close()


@pytest.mark.timeout(90)
def test_timeout_argument_bounds_a_stalled_call(
    kit: s3kit.S3Kit, fresh_server: ServerFactory
) -> None:
    server = fresh_server("moto")
    handler = kit.create_s3_endpoint_handler(server.url, read_timeout=15)
    try:
        handler.put_object(BUCKET, "k", b"v")
        server.pause()
        t0 = time.perf_counter()
        with pytest.raises(TransportError):
            handler.head_object(BUCKET, "k", timeout=1.0)
        elapsed = time.perf_counter() - t0
        print(f"\nhead_object(timeout=1.0) on a stalled server ended after {elapsed:.2f} s")
        assert elapsed < 5
    finally:
        handler.close()


@pytest.mark.timeout(90)
def test_counters_add_up_under_32_threads(kit: s3kit.S3Kit, fresh_server: ServerFactory) -> None:
    server = fresh_server("moto")
    handler = kit.create_s3_endpoint_handler(server.url, max_concurrent=8)
    n_threads, n_ops = 32, 20
    missing = 0
    missing_lock = threading.Lock()

    def worker(t: int) -> int:
        nonlocal missing
        calls = 0
        key, body = "", b""
        for j in range(n_ops):
            kind = j % 4
            calls += 1
            if kind == 0:
                key, body = f"hammer/{t}/{j}", f"{t}-{j}".encode()
                handler.put_object(BUCKET, key, body)
            elif kind == 1:
                assert handler.get_object(BUCKET, key)["Body"] == body
            elif kind == 2:
                handler.head_object(BUCKET, key)
            else:
                with pytest.raises(NotFound):
                    handler.head_object(BUCKET, f"missing/{uuid.uuid4().hex}")
                with missing_lock:
                    missing += 1
        return calls

    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(n_threads) as pool:
            total = sum(pool.map(worker, range(n_threads)))
        elapsed = time.perf_counter() - t0
        st = handler.stats()
        print(f"\n{total} calls, {n_threads} threads: {elapsed:.2f} s, p99 {st.p99_ms:.1f} ms")
        assert total == n_threads * n_ops
        assert st.requests == (
            st.successes + st.client_errors + st.access_errors + st.throttles + st.endpoint_failures
        )
        assert st.requests == total
        assert st.client_errors == missing == n_threads * n_ops // 4
        assert st.successes == total - missing
        assert (st.retries, st.saturated, st.rejected_open, st.in_flight) == (0, 0, 0, 0)
        assert st.state == "closed"
    finally:
        handler.close()


@pytest.mark.timeout(90)
def test_saturated_slot_waits_then_raises(kit: s3kit.S3Kit, fresh_server: ServerFactory) -> None:
    server = fresh_server("moto")
    handler = kit.create_s3_endpoint_handler(
        server.url, max_concurrent=1, acquire_timeout=0.3, read_timeout=3, retries=0
    )
    holder_result: dict[str, Any] = {}

    def hold() -> None:
        try:
            handler.head_object(BUCKET, "k")
        except Exception as exc:
            holder_result["error"] = exc

    try:
        handler.put_object(BUCKET, "k", b"v")
        server.pause()
        holder = threading.Thread(target=hold)
        holder.start()
        deadline = time.monotonic() + 5
        while handler.stats().in_flight != 1:
            assert time.monotonic() < deadline, "the holder never took the slot"
            time.sleep(0.005)

        t0 = time.perf_counter()
        with pytest.raises(EndpointSaturated) as err:
            handler.head_object(BUCKET, "k")
        waited = time.perf_counter() - t0
        print(f"\nEndpointSaturated after waiting {waited:.3f} s (acquire_timeout=0.3)")
        assert 0.2 <= waited < 3
        assert err.value.attempt_count == 0
        assert err.value.limit == 1
        assert handler.stats().saturated == 1

        holder.join(15)
        assert not holder.is_alive()
        assert isinstance(holder_result.get("error"), ReadTimeout)
        st = handler.stats()
        assert st.in_flight == 0
        assert st.requests == 2  # the put and the stalled head; the saturated call sent nothing
    finally:
        server.resume()
        handler.close()


@pytest.mark.skip(reason="download resume needs a fault-injecting proxy (truncated body)")
def test_download_resumes_after_truncated_body() -> None:
    raise NotImplementedError
