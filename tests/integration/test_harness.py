"""Tests of the local S3 server harness in s3kit.testing, against real server processes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from s3kit.testing import S3Server, S3ServerPool, free_port

pytestmark = pytest.mark.timeout(60)


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def moto_server() -> Iterator[S3Server]:
    with S3Server("moto") as server:
        server.create_bucket("bkt")
        yield server


@pytest.fixture
def nanio_server() -> Iterator[S3Server]:
    with S3Server("nanio") as server:
        server.create_bucket("bkt")
        yield server


def test_free_port_is_unique() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20


def test_url_known_before_start_and_repr_hides_secret() -> None:
    server = S3Server("moto", secret_key="very-secret-value")
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert not server.running
    assert server.pid is None
    assert "very-secret-value" not in repr(server)
    server.stop()  # stopping a never-started server is a no-op


@pytest.mark.timeout(60)
def test_moto_pool_separate_servers() -> None:
    with S3ServerPool(2, "moto", buckets=["alpha", "beta"]) as pool:
        assert len(pool) == 2
        assert len(set(pool.urls)) == 2
        assert [s.url for s in pool] == pool.urls
        a, b = pool[0].client(), pool[1].client()
        for c in (a, b):
            names = {x["Name"] for x in c.list_buckets()["Buckets"]}
            assert names == {"alpha", "beta"}
        a.put_object(Bucket="alpha", Key="k", Body=b"hello")
        assert a.get_object(Bucket="alpha", Key="k")["Body"].read() == b"hello"
        with pytest.raises(ClientError) as err:
            b.get_object(Bucket="alpha", Key="k")
        assert err.value.response["Error"]["Code"] == "NoSuchKey"
        pids = [s.pid for s in pool]
    assert all(p is not None and _pid_gone(p) for p in pids)
    assert pool.stop_errors == []
    assert not any(s.running for s in pool)


@pytest.mark.timeout(60)
def test_nanio_roundtrip_auth_and_restart_keeps_data(nanio_server: S3Server) -> None:
    c = nanio_server.client()
    c.put_object(Bucket="bkt", Key="dir/obj", Body=b"payload")
    assert c.get_object(Bucket="bkt", Key="dir/obj")["Body"].read() == b"payload"

    impostor = S3Server("nanio", port=nanio_server.port, secret_key="wrong-secret")
    bad = impostor.client()
    with pytest.raises(ClientError) as err:
        bad.get_object(Bucket="bkt", Key="dir/obj")
    code = err.value.response["Error"]["Code"]
    assert code in {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"}
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # A rejected PUT must not leave the connection unusable (Expect: 100-continue quirk).
    for _ in range(2):
        with pytest.raises(ClientError):
            bad.put_object(Bucket="bkt", Key="x", Body=b"z" * 100_000)
    with pytest.raises(ClientError):
        bad.list_buckets()

    data_dir, port, old_pid = nanio_server.data_dir, nanio_server.port, nanio_server.pid
    nanio_server.restart()
    assert nanio_server.port == port
    assert nanio_server.data_dir == data_dir
    assert nanio_server.pid != old_pid
    assert old_pid is not None and _pid_gone(old_pid)
    assert c.get_object(Bucket="bkt", Key="dir/obj")["Body"].read() == b"payload"


def test_nanio_stop_removes_owned_data_dir() -> None:
    server = S3Server("nanio").start()
    data_dir = server.data_dir
    assert data_dir is not None and os.path.isdir(data_dir)
    server.stop()
    assert not os.path.exists(data_dir)


@pytest.mark.timeout(60)
def test_kill_then_restart(moto_server: S3Server) -> None:
    pid = moto_server.pid
    assert pid is not None
    moto_server.kill()
    assert not moto_server.running
    assert _pid_gone(pid)
    c = moto_server.client()
    t0 = time.monotonic()
    with pytest.raises(EndpointConnectionError):
        c.list_buckets()
    assert time.monotonic() - t0 < 5
    moto_server.restart()
    assert moto_server.running
    assert c.list_buckets()["Buckets"] == []  # moto keeps nothing across a restart


@pytest.mark.timeout(60)
def test_pause_stalls_then_resume(moto_server: S3Server) -> None:
    c = moto_server.client(read_timeout=1, connect_timeout=1)
    c.put_object(Bucket="bkt", Key="k", Body=b"v")
    moto_server.pause()
    assert moto_server.running
    assert "paused" in repr(moto_server)
    t0 = time.monotonic()
    with pytest.raises((ReadTimeoutError, ConnectTimeoutError)):
        c.get_object(Bucket="bkt", Key="k")
    assert time.monotonic() - t0 < 10
    moto_server.resume()
    assert c.get_object(Bucket="bkt", Key="k")["Body"].read() == b"v"


@pytest.mark.timeout(60)
def test_stop_is_idempotent_and_reaps(moto_server: S3Server) -> None:
    pid = moto_server.pid
    assert pid is not None
    moto_server.stop()
    moto_server.stop()
    assert moto_server.pid is None
    assert not moto_server.running
    assert _pid_gone(pid)


@pytest.mark.timeout(60)
def test_stop_while_paused(nanio_server: S3Server) -> None:
    pid = nanio_server.pid
    assert pid is not None
    nanio_server.pause()
    t0 = time.monotonic()
    nanio_server.stop()
    assert time.monotonic() - t0 < 7
    assert _pid_gone(pid)


def test_start_refuses_port_in_use() -> None:
    with S3Server("moto") as first:
        clash = S3Server("nanio", port=first.port)
        with pytest.raises(RuntimeError, match="already in use"):
            clash.start()
        assert clash.pid is None
        clash.stop()
        assert first.client().list_buckets()["Buckets"] == []


def test_start_failure_reports_log_tail() -> None:
    server = S3Server("nanio", access_key="")  # nanio refuses to start without credentials
    with pytest.raises(RuntimeError, match="exited with code") as err:
        server.start(timeout=15)
    assert "NANIO_ACCESS_KEY" in str(err.value)
    assert server.pid is None
    server.stop()
