"""FaultProxy against a real moto server: every mode as botocore sees it, then as s3kit sees it.

Each test gets its own proxy (stopped in teardown); the moto server is shared by the module and
never faulted itself. Timings are only checked against generous bounds.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.handlers
import pytest

import s3kit
from s3kit._proxy import FaultProxy
from s3kit.testing import S3Server

BUCKET = "proxy-bucket"
ACCESS_KEY = "testing-access"
SECRET_KEY = "testing-secret"
KiB = 1024
MiB = 1024 * KiB

# How botocore reports a connection that dies under it (no response, or a broken body).
CONNECTION_ERRORS = (
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.IncompleteReadError,
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[S3Server]:
    server = S3Server("moto", access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    try:
        server.start()
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def objects(upstream: S3Server) -> dict[str, bytes]:
    """Objects put directly on moto (not through a proxy), by key."""
    data = {
        "small": os.urandom(KiB),
        "100k": os.urandom(100 * KiB),
        "400k": os.urandom(400 * KiB),
        "4m": os.urandom(4 * MiB),
    }
    client = upstream.client()
    for key, body in data.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
    return data


ProxyFactory = Callable[..., FaultProxy]


@pytest.fixture
def make_proxy(upstream: S3Server) -> Iterator[ProxyFactory]:
    """``make_proxy(**kwargs)``: a started proxy in front of moto, stopped in teardown."""
    proxies: list[FaultProxy] = []

    def factory(**kwargs: Any) -> FaultProxy:
        proxy = FaultProxy(upstream.port, **kwargs)
        proxies.append(proxy)
        return proxy.start()

    try:
        yield factory
    finally:
        for proxy in proxies:
            proxy.stop()
        assert not any(p.running for p in proxies)


@pytest.fixture
def proxy(make_proxy: ProxyFactory) -> FaultProxy:
    return make_proxy(seed=1234)


def _client(url: str, *, expect_header: bool = False, **config: Any) -> Any:
    """A plain boto3 client like ``S3Server.client()``, pointed at ``url``."""
    settings: dict[str, Any] = {
        "s3": {"addressing_style": "path"},
        "retries": {"total_max_attempts": 1},
        "connect_timeout": 2,
        "read_timeout": 10,
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }
    settings.update(config)
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=botocore.config.Config(**settings),
    )
    if not expect_header:
        client.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)
    return client


def _key(name: str) -> str:
    return f"proxy/{uuid.uuid4().hex[:10]}/{name}"


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def _error(exc: botocore.exceptions.ClientError) -> tuple[str, int, str]:
    meta = exc.response["ResponseMetadata"]
    return (
        exc.response["Error"]["Code"],
        meta["HTTPStatusCode"],
        meta["HTTPHeaders"].get("content-type", ""),
    )


# ------------------------------------------------------------------------------ pass


@pytest.mark.timeout(60)
def test_pass_roundtrip_is_byte_identical(proxy: FaultProxy, upstream: S3Server) -> None:
    client = _client(proxy.url)
    direct = upstream.client()
    for size in (KiB, 20 * MiB):
        key = _key(f"{size}.bin")
        body = os.urandom(size)
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
        assert direct.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
        assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
    stats = proxy.stats
    assert stats["requests"] == 4
    assert sum(stats["faults_injected"].values()) == 0
    assert [r["method"] for r in stats["recent_requests"]] == ["PUT", "GET", "PUT", "GET"]


@pytest.mark.timeout(60)
def test_pass_keeps_one_client_connection_alive(
    proxy: FaultProxy, objects: dict[str, bytes]
) -> None:
    # moto answers every request with "Connection: close"; the proxy still keeps the client's
    # connection alive (and opens a new upstream connection per request).
    client = _client(proxy.url)
    for i in range(50):
        if i % 2:
            client.head_object(Bucket=BUCKET, Key="small")
        else:
            assert client.get_object(Bucket=BUCKET, Key="small")["Body"].read() == objects["small"]
    stats = proxy.stats
    assert stats["requests"] == 50
    assert stats["connections"] == 1


@pytest.mark.timeout(60)
def test_pass_with_expect_100_continue(proxy: FaultProxy) -> None:
    client = _client(proxy.url, expect_header=True)
    key = _key("expect.bin")
    body = os.urandom(2 * MiB)
    client.put_object(Bucket=BUCKET, Key=key, Body=io.BytesIO(body))
    put = proxy.stats["recent_requests"][-1]
    assert put["method"] == "PUT"
    assert put["headers"].get("expect") == "100-continue"
    assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body


@pytest.mark.timeout(60)
def test_pass_chunked_request_body(proxy: FaultProxy, upstream: S3Server) -> None:
    # botocore only sends chunked bodies for streams of unknown length; moto accepts them.
    key = _key("chunked.bin")
    parts = [b"hello ", os.urandom(70_000), b" world"]
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.putrequest("PUT", f"/{BUCKET}/{key}")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.putheader("Authorization", f"AWS {ACCESS_KEY}:unchecked")
        conn.endheaders()
        for part in parts:
            conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    finally:
        conn.close()
    got = upstream.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert got == b"".join(parts)


@pytest.mark.timeout(60)
def test_pass_32_concurrent_connections(proxy: FaultProxy, objects: dict[str, bytes]) -> None:
    client = _client(proxy.url, max_pool_connections=32)

    def fetch(_: int) -> bytes:
        return client.get_object(Bucket=BUCKET, Key="100k")["Body"].read()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(fetch, range(96)))
    assert all(r == objects["100k"] for r in results)
    stats = proxy.stats
    assert stats["requests"] == 96
    assert 1 <= stats["connections"] <= 96
    assert stats["rejected_connections"] == 0


# -------------------------------------------------------------------- per-request faults


@pytest.mark.timeout(60)
def test_latency_delays_responses(proxy: FaultProxy, objects: dict[str, bytes]) -> None:
    client = _client(proxy.url)
    client.head_object(Bucket=BUCKET, Key="small")  # connect outside the measurement
    proxy.set_mode("latency", delay_s=0.5)
    t0 = time.monotonic()
    for _ in range(3):
        client.head_object(Bucket=BUCKET, Key="small")
    assert time.monotonic() - t0 >= 1.4
    assert proxy.stats["faults_injected"]["latency"] == 3
    proxy.set_mode("latency", delay_s=5.0, fraction=0.0)
    t0 = time.monotonic()
    client.head_object(Bucket=BUCKET, Key="small")
    assert time.monotonic() - t0 < 4.0
    assert proxy.stats["faults_injected"]["latency"] == 3


@pytest.mark.timeout(60)
def test_error_slowdown_internal_and_html(proxy: FaultProxy, objects: dict[str, bytes]) -> None:
    client = _client(proxy.url)
    proxy.set_mode("error")  # 503 SlowDown
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.get_object(Bucket=BUCKET, Key="small")
    assert _error(err.value) == ("SlowDown", 503, "application/xml")
    assert err.value.response["Error"]["Message"] == "Please reduce your request rate."
    # A HEAD answer has no body, so botocore can only report the status.
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.head_object(Bucket=BUCKET, Key="small")
    assert _error(err.value)[:2] == ("503", 503)
    assert err.value.response["ResponseMetadata"]["HTTPHeaders"]["content-length"] != "0"

    proxy.set_mode("error", status=500)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.list_objects_v2(Bucket=BUCKET)
    assert _error(err.value) == ("InternalError", 500, "application/xml")

    proxy.set_mode("error", html=True)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.get_object(Bucket=BUCKET, Key="small")
    code, status, ctype = _error(err.value)
    assert (code, status) == ("503", 503)
    assert ctype.startswith("text/html")

    proxy.set_mode("pass")
    assert client.get_object(Bucket=BUCKET, Key="small")["Body"].read() == objects["small"]
    stats = proxy.stats
    assert stats["faults_injected"]["error"] == 4
    assert stats["connections"] == 1  # error answers keep the connection alive


@pytest.mark.timeout(60)
def test_error_on_put_with_expect_100_continue(proxy: FaultProxy) -> None:
    # The error is the final answer to the headers: botocore never sends the body, so the
    # proxy closes that connection; the next request works on a new one.
    client = _client(proxy.url, expect_header=True)
    proxy.set_mode("error", count=1)
    key = _key("expect-error.bin")
    body = os.urandom(MiB)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.put_object(Bucket=BUCKET, Key=key, Body=io.BytesIO(body))
    assert _error(err.value)[:2] == ("SlowDown", 503)
    assert proxy.mode == "pass"
    client.put_object(Bucket=BUCKET, Key=key, Body=io.BytesIO(body))
    assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body


@pytest.mark.timeout(60)
def test_error_fraction_is_seeded_and_roughly_half(proxy: FaultProxy) -> None:
    client = _client(proxy.url)
    proxy.set_mode("error", fraction=0.5)
    failed = 0
    for _ in range(100):
        try:
            client.head_object(Bucket=BUCKET, Key="small")
        except botocore.exceptions.ClientError as exc:
            assert _error(exc)[1] == 503
            failed += 1
    assert 30 <= failed <= 70
    stats = proxy.stats
    assert stats["faults_injected"]["error"] == failed
    assert stats["requests"] == 100
    assert [r["fault"] for r in stats["recent_requests"]].count("error") == failed

    # The same seed gives the same sequence.
    proxy2 = FaultProxy(proxy.upstream_port, seed=1234)
    with proxy2:
        client2 = _client(proxy2.url)
        proxy2.set_mode("error", fraction=0.5)
        seq2 = []
        for _ in range(100):
            try:
                client2.head_object(Bucket=BUCKET, Key="small")
                seq2.append("pass")
            except botocore.exceptions.ClientError:
                seq2.append("error")
    assert seq2 == [r["fault"] for r in stats["recent_requests"]]


@pytest.mark.timeout(60)
def test_count_faults_the_next_requests_then_passes(
    proxy: FaultProxy, objects: dict[str, bytes]
) -> None:
    client = _client(proxy.url)
    proxy.set_mode("error", status=500, count=2)
    for _ in range(2):
        with pytest.raises(botocore.exceptions.ClientError):
            client.head_object(Bucket=BUCKET, Key="small")
    assert proxy.mode == "pass"
    assert client.get_object(Bucket=BUCKET, Key="small")["Body"].read() == objects["small"]


@pytest.mark.timeout(60)
def test_blackhole_times_out_the_read(proxy: FaultProxy, objects: dict[str, bytes]) -> None:
    client = _client(proxy.url, read_timeout=1, connect_timeout=1)
    proxy.set_mode("blackhole")
    t0 = time.monotonic()
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        client.get_object(Bucket=BUCKET, Key="small")
    assert 0.9 <= time.monotonic() - t0 < 10
    assert proxy.stats["faults_injected"]["blackhole"] == 1
    proxy.set_mode("pass")
    assert client.get_object(Bucket=BUCKET, Key="small")["Body"].read() == objects["small"]


@pytest.mark.timeout(60)
def test_reset_before_and_during_the_body(proxy: FaultProxy, objects: dict[str, bytes]) -> None:
    client = _client(proxy.url)
    proxy.set_mode("reset")  # after 100 bytes: inside the response headers
    with pytest.raises(CONNECTION_ERRORS) as err:
        client.get_object(Bucket=BUCKET, Key="100k")["Body"].read()
    assert isinstance(err.value, botocore.exceptions.ConnectionClosedError)

    proxy.set_mode("reset", after_bytes=5000)  # inside the body
    with pytest.raises(CONNECTION_ERRORS) as err:
        client.get_object(Bucket=BUCKET, Key="100k")["Body"].read()
    assert "reset" in str(err.value).lower()

    proxy.set_mode("pass")
    assert client.get_object(Bucket=BUCKET, Key="100k")["Body"].read() == objects["100k"]
    assert proxy.stats["faults_injected"]["reset"] == 2


@pytest.mark.timeout(60)
def test_truncate_cuts_the_body(proxy: FaultProxy, objects: dict[str, bytes]) -> None:
    client = _client(proxy.url)
    proxy.set_mode("truncate")  # half the Content-Length
    resp = client.get_object(Bucket=BUCKET, Key="100k")
    assert resp["ContentLength"] == 100 * KiB  # the headers arrive intact
    with pytest.raises(
        (botocore.exceptions.IncompleteReadError, botocore.exceptions.ResponseStreamingError)
    ):
        resp["Body"].read()

    proxy.set_mode("truncate", after_bytes=1000)
    body = client.get_object(Bucket=BUCKET, Key="100k")["Body"]
    assert body.read(1000) == objects["100k"][:1000]
    with pytest.raises(
        (botocore.exceptions.IncompleteReadError, botocore.exceptions.ResponseStreamingError)
    ):
        body.read()

    proxy.set_mode("pass")
    assert client.get_object(Bucket=BUCKET, Key="100k")["Body"].read() == objects["100k"]


@pytest.mark.timeout(60)
def test_refuse_then_pass_on_the_same_port(proxy: FaultProxy, objects: dict[str, bytes]) -> None:
    client = _client(proxy.url, connect_timeout=1)
    client.head_object(Bucket=BUCKET, Key="small")  # leaves an idle pooled connection
    port = proxy.port
    proxy.set_mode("refuse")
    assert _refused(port)
    # The idle pooled connection was closed by the proxy: urllib3 usually notices and dials
    # (refused); when the close is still in flight, the request goes out on it and is reset.
    with pytest.raises(
        (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError)
    ):
        client.get_object(Bucket=BUCKET, Key="small")
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        _client(proxy.url, connect_timeout=1).get_object(Bucket=BUCKET, Key="small")
    proxy.set_mode("pass")
    assert proxy.port == port
    assert not _refused(port)
    assert client.get_object(Bucket=BUCKET, Key="small")["Body"].read() == objects["small"]


@pytest.mark.timeout(60)
def test_slow_throttles_the_response(proxy: FaultProxy, objects: dict[str, bytes]) -> None:
    client = _client(proxy.url)
    proxy.set_mode("slow", bytes_per_s=200_000)
    t0 = time.monotonic()
    assert client.get_object(Bucket=BUCKET, Key="400k")["Body"].read() == objects["400k"]
    assert time.monotonic() - t0 >= 1.5


# ------------------------------------------------------------------------- lifecycle


@pytest.mark.timeout(60)
def test_max_lifetime_stops_the_proxy(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy(max_lifetime_s=1)
    port = proxy.port
    assert not _refused(port)
    deadline = time.monotonic() + 10
    while not _refused(port):
        assert time.monotonic() < deadline, "proxy did not stop by itself"
        time.sleep(0.1)
    assert time.monotonic() - (deadline - 10) < 5
    time.sleep(0.2)
    assert not proxy.running
    proxy.stop()  # still fine


@pytest.mark.timeout(60)
def test_stop_is_idempotent_and_frees_held_connections(upstream: S3Server) -> None:
    with FaultProxy(upstream.port) as proxy:
        port = proxy.port
        proxy.set_mode("blackhole")
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert sock.recv(10) == b""  # the held connection ended with the proxy
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    proxy.stop()
    assert not proxy.running
    assert _refused(port)
    with pytest.raises(RuntimeError):
        proxy.start()


@pytest.mark.timeout(60)
def test_bad_arguments_are_rejected(upstream: S3Server) -> None:
    with pytest.raises(ValueError):
        FaultProxy(upstream.port, host="0.0.0.0")
    proxy = FaultProxy(upstream.port)
    with pytest.raises(ValueError):
        proxy.set_mode("explode")
    with pytest.raises(ValueError):
        proxy.set_mode("latency", delay=1)
    with pytest.raises(ValueError):
        proxy.set_mode("error", fraction=2)
    with pytest.raises(ValueError):
        proxy.set_mode("refuse", count=1)
    proxy.stop()  # never started: a no-op


# --------------------------------------------------------------------- s3kit end to end


def _handler(proxy: FaultProxy, **options: Any) -> s3kit.Endpoint:
    settings: dict[str, Any] = {"retries": 0, "read_timeout": 1, "connect_timeout": 1}
    settings.update(options)
    return s3kit.s3_kit().create_s3_endpoint_handler(proxy.url, ACCESS_KEY, SECRET_KEY, **settings)


S3KIT_CASES: dict[str, tuple[str, dict[str, Any], type[Exception]]] = {
    "slowdown": ("error", {}, s3kit.Throttled),
    "html503": ("error", {"html": True}, s3kit.ServiceError),
    "internal500": ("error", {"status": 500}, s3kit.ServiceError),
    "truncate": ("truncate", {}, s3kit.ConnectionFailed),
    "reset": ("reset", {"after_bytes": 5000}, s3kit.ConnectionFailed),
    "blackhole": ("blackhole", {}, s3kit.ReadTimeout),
    "refuse": ("refuse", {}, s3kit.ConnectionFailed),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(S3KIT_CASES))
def test_s3kit_classifies_each_fault(
    case: str, proxy: FaultProxy, objects: dict[str, bytes]
) -> None:
    mode, params, expected = S3KIT_CASES[case]
    handler = _handler(proxy)
    try:
        assert handler.get_object(BUCKET, "100k")["Body"] == objects["100k"]
        proxy.set_mode(mode, **params)
        with pytest.raises(expected) as err:
            handler.get_object(BUCKET, "100k")
        exc = err.value
        if case == "slowdown":
            assert (exc.code, exc.status) == ("SlowDown", 503)  # type: ignore[attr-defined]
        elif case == "html503":
            assert not isinstance(exc, s3kit.Throttled)
            assert exc.status == 503  # type: ignore[attr-defined]
        elif case == "internal500":
            assert (exc.code, exc.status) == ("InternalError", 500)  # type: ignore[attr-defined]
        proxy.set_mode("pass")
        assert handler.get_object(BUCKET, "100k")["Body"] == objects["100k"]
    finally:
        handler.close()


@pytest.mark.timeout(60)
def test_s3kit_head_object_503_is_throttled(proxy: FaultProxy) -> None:
    handler = _handler(proxy)
    try:
        proxy.set_mode("error")
        with pytest.raises(s3kit.Throttled) as err:
            handler.head_object(BUCKET, "small")
        assert err.value.status == 503
    finally:
        handler.close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(60)
def test_s3kit_download_resumes_after_truncation(
    proxy: FaultProxy, objects: dict[str, bytes], tmp_path: Path
) -> None:
    handler = _handler(proxy, retries=2, read_timeout=10)
    target = tmp_path / "4m.bin"
    try:
        proxy.set_mode("truncate", after_bytes=MiB, count=1)
        result = handler.download_file(BUCKET, "4m", str(target))
    finally:
        handler.close()
    assert target.read_bytes() == objects["4m"]
    assert result["ContentLength"] == 4 * MiB
    gets = [r for r in proxy.stats["recent_requests"] if r["method"] == "GET"]
    assert [g["fault"] for g in gets] == ["truncate", "pass"]
    assert "range" not in gets[0]["headers"]
    assert gets[1]["headers"]["range"] == f"bytes={MiB}-"
    assert gets[1]["headers"]["if-match"].strip('"') == hashlib.md5(objects["4m"]).hexdigest()
    assert handler.stats().retries == 1
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


@pytest.mark.timeout(60)
def test_s3kit_get_object_deadline_covers_a_slow_body(
    proxy: FaultProxy, objects: dict[str, bytes]
) -> None:
    handler = _handler(proxy, read_timeout=5)
    try:
        proxy.set_mode("slow", bytes_per_s=100_000)  # 400 KiB take ~4 s; each read is quick
        t0 = time.monotonic()
        with pytest.raises(s3kit.ReadTimeout):
            handler.get_object(BUCKET, "400k", timeout=1)
        assert time.monotonic() - t0 < 3
    finally:
        handler.close()
