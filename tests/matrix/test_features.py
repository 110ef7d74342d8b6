"""The compatibility matrix: s3kit's features on every server kind, through both transports.

Each test runs once per (server kind, transport): ``target`` is a real server (see
conftest.py), and every call goes through an s3kit handler or Multiplexer. A known server
bug is an ``xfail(strict=True)`` with the reason (so a fixed server shows up as a failure to
update), documented in docs/compatibility.md; anything else that fails is s3kit's to fix.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import s3kit
from s3kit import (
    AccessDenied,
    Endpoint,
    Multiplexer,
    NotFound,
    PreconditionFailed,
    ServiceError,
)
from s3kit._outcome import BAD_CREDENTIALS, classify
from s3kit.testing import S3ServerPool

from .conftest import BUCKET, Target, unique

pytestmark = pytest.mark.timeout(240)

MiB = 1024 * 1024
N_PAGED = 1100

# Known server bugs (xfail strict: a server that gets fixed turns the cell into a failure).
NANIO_PERCENT = (
    "nanio 0.1.7 answers SignatureDoesNotMatch for any key containing '%' (a raw boto3 client "
    "too): it verifies the signature against a decoded path"
)
MOTO_RESTART = "moto keeps everything in memory: a restarted server is empty"
NANIO_SEGMENTS = (
    "nanio 0.1.7 refuses keys with an empty, '.' or '..' segment, or ending in '/' "
    "(400 InvalidObjectName): its objects are files under the bucket's folder"
)
WEED_TRAILING_SLASH = (
    "SeaweedFS 4.48 stores a key ending in '/' as a directory: the PUT answers the body's "
    "ETag, but a GET returns 0 bytes (Content-Type httpd/unix-directory)"
)
WEED_DOUBLE_SLASH = (
    "SeaweedFS 4.48 folds '//' into '/': 'a//b' and 'a/b' are one object, and a listing "
    "returns 'a/b'"
)
WEED_DOT_SEGMENTS = "SeaweedFS 4.48 answers 400 InvalidRequest to a key with a '.' or '..' segment"
WEED_PHANTOM_PREFIX = (
    "SeaweedFS 4.48 keeps the emptied folder: a '/'-delimited listing still shows 'q/' as a "
    "common prefix after its last object is deleted"
)
NANIO_CONDITIONAL = (
    "nanio 0.1.7 ignores If-Match and If-None-Match on GET: it always answers 200 with the "
    "body (s3kit pins a resumed download with If-Match; its MD5 check still catches a mix)"
)
NANIO_SUFFIX_RANGE = (
    "nanio 0.1.7 answers 400 InvalidArgument 'unsupported Range header' to a suffix range "
    "(bytes=-n), which S3 and RFC 9110 allow"
)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()  # type: ignore[no-any-return]


def _xfail(request: pytest.FixtureRequest, reason: str) -> None:
    request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))


# ----------------------------------------------------------------------------- basics
def test_put_get_head_delete(handler: Endpoint) -> None:
    key = unique("obj.bin")
    body = os.urandom(100_000)
    put = handler.put_object(BUCKET, key, body)
    assert put["ETag"].strip('"') == _md5(body)
    got = handler.get_object(BUCKET, key)
    assert got["Body"] == body
    head = handler.head_object(BUCKET, key)
    assert head["ContentLength"] == len(body)
    assert head["ETag"].strip('"') == _md5(body)
    handler.delete_object(BUCKET, key)
    with pytest.raises(NotFound):
        handler.head_object(BUCKET, key)
    with pytest.raises(NotFound) as err:
        handler.get_object(BUCKET, key)
    assert err.value.code == "NoSuchKey"


def test_copy(handler: Endpoint) -> None:
    src = unique("source.bin")
    body = os.urandom(10_000)
    handler.put_object(BUCKET, src, body)
    dst = unique("copy.bin")
    copied = handler.copy_object(BUCKET, dst, BUCKET, src)
    assert copied["Key"] == dst
    assert handler.get_object(BUCKET, dst)["Body"] == body
    assert handler.head_object(BUCKET, dst)["ContentLength"] == len(body)


def test_copy_etag(handler: Endpoint, target: Target, transport: str) -> None:
    src = unique("source.bin")
    put = handler.put_object(BUCKET, src, b"copy me")
    copied = handler.copy_object(BUCKET, unique("copy.bin"), BUCKET, src)
    # obstore reports no ETag for a copy (documented); when there is one it must match.
    if "ETag" in copied:
        assert copied["ETag"] == put["ETag"]


def test_list_prefix_delimiter(handler: Endpoint) -> None:
    base = unique()
    keys = [base + "a.txt", base + "b/c.txt", base + "b/d.txt", base + "e/f/g.txt"]
    for key in keys:
        handler.put_object(BUCKET, key, b"x")
    flat = handler.list_objects(BUCKET, prefix=base)
    assert [o["Key"] for o in flat["Contents"]] == sorted(keys)
    assert flat["KeyCount"] == 4
    tree = handler.list_objects(BUCKET, prefix=base, delimiter="/")
    assert [o["Key"] for o in tree["Contents"]] == [base + "a.txt"]
    assert [p["Prefix"] for p in tree["CommonPrefixes"]] == [base + "b/", base + "e/"]
    sub = handler.list_objects(BUCKET, prefix=base + "b/", delimiter="/")
    assert [o["Key"] for o in sub["Contents"]] == [base + "b/c.txt", base + "b/d.txt"]
    partial = handler.list_objects(BUCKET, prefix=base + "b/c")
    assert [o["Key"] for o in partial["Contents"]] == [base + "b/c.txt"]
    assert handler.list_objects(BUCKET, prefix=base + "nothing/")["Contents"] == []


def test_list_after_delete(
    handler: Endpoint, target: Target, request: pytest.FixtureRequest
) -> None:
    if target.kind == "seaweedfs":
        _xfail(request, WEED_PHANTOM_PREFIX)
    base = unique()
    handler.put_object(BUCKET, base + "q/r/s.txt", b"1")
    handler.put_object(BUCKET, base + "top.txt", b"1")
    handler.delete_object(BUCKET, base + "q/r/s.txt")
    tree = handler.list_objects(BUCKET, prefix=base, delimiter="/")
    assert [o["Key"] for o in tree["Contents"]] == [base + "top.txt"]
    assert tree.get("CommonPrefixes", []) == []


def _paged(target: Target) -> tuple[str, list[str]]:
    """1100 keys under one prefix, written once per server with a raw client."""
    if "paged" not in target.cache:
        prefix = unique("paged/")
        keys = [f"{prefix}{i:05d}" for i in range(N_PAGED)]
        client = target.client()

        def put(key: str) -> None:
            client.put_object(Bucket=BUCKET, Key=key, Body=b"p")

        with ThreadPoolExecutor(max_workers=16) as ex:
            list(ex.map(put, keys))
        target.cache["paged"] = (prefix, keys)
    return target.cache["paged"]  # type: ignore[no-any-return]


def test_pagination_over_1000_keys(handler: Endpoint, target: Target) -> None:
    prefix, keys = _paged(target)
    flat = handler.list_objects(BUCKET, prefix=prefix)
    assert [o["Key"] for o in flat["Contents"]] == keys
    assert flat["KeyCount"] == N_PAGED
    assert flat["IsTruncated"] is False
    # "/"-delimited under a "/"-terminated prefix: the listing obstore carries natively.
    tree = handler.list_objects(BUCKET, prefix=prefix, delimiter="/")
    assert [o["Key"] for o in tree["Contents"]] == keys
    assert tree.get("CommonPrefixes", []) == []
    capped = handler.list_objects(BUCKET, prefix=prefix, max_keys=1050)
    assert [o["Key"] for o in capped["Contents"]] == keys[:1050]
    assert capped["IsTruncated"] is True


# ----------------------------------------------------------------------------- big objects
@dataclass(frozen=True)
class BigFile:
    path: Path
    sha256: str
    size: int


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigFile]:
    size = 64 * MiB
    path = tmp_path_factory.mktemp("big") / "64mib.bin"
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(64):
            f.write(i.to_bytes(4, "big") + block[4:])  # every MiB differs
    yield BigFile(path, _sha256(path), size)
    path.unlink(missing_ok=True)


def test_multipart_64mib(handler: Endpoint, big_file: BigFile, tmp_path: Path, note: Any) -> None:
    key = unique("big.bin")
    t0 = time.monotonic()
    up = handler.upload_file(str(big_file.path), BUCKET, key)
    t_up = time.monotonic() - t0
    assert up["Key"] == key
    head = handler.head_object(BUCKET, key)
    assert head["ContentLength"] == big_file.size
    etag = str(head["ETag"]).strip('"')  # upload's own ETag: see test_upload_file_etag
    dst = tmp_path / "big.out"
    t0 = time.monotonic()
    down = handler.download_file(BUCKET, key, str(dst))
    t_down = time.monotonic() - t0
    assert down["ContentLength"] == big_file.size
    assert _sha256(dst) == big_file.sha256
    parts = etag.rpartition("-")[2] if "-" in etag else "1"
    note(f"{parts} parts; up {t_up:.1f} s, down {t_down:.1f} s")
    handler.delete_object(BUCKET, key)


@pytest.fixture(scope="session")
def nine_mib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nine") / "9mib.bin"
    path.write_bytes(os.urandom(9 * MiB))  # just over the 8 MiB multipart threshold
    return path


def test_upload_file_etag(handler: Endpoint, target: Target, nine_mib: Path) -> None:
    key = unique("nine.bin")
    up = handler.upload_file(str(nine_mib), BUCKET, key)
    head = handler.head_object(BUCKET, key)
    assert up["ETag"] == head["ETag"]
    assert str(up["ETag"]).endswith('-2"')
    handler.delete_object(BUCKET, key)


# ----------------------------------------------------------------------------- ranges
RANGES = {
    "bytes=a-b": ("bytes=10-19", slice(10, 20)),
    "bytes=a-": ("bytes=1000-", slice(1000, None)),
    "bytes=-n (suffix)": ("bytes=-24", slice(-24, None)),
}


@pytest.mark.parametrize("variant", list(RANGES))
def test_range_get(
    handler: Endpoint, target: Target, variant: str, request: pytest.FixtureRequest
) -> None:
    if target.kind == "nanio" and variant.startswith("bytes=-"):
        _xfail(request, NANIO_SUFFIX_RANGE)
    spec, part = RANGES[variant]
    key = unique("range.bin")
    body = bytes(range(256)) * 4
    handler.put_object(BUCKET, key, body)
    got = handler.get_object(BUCKET, key, range=spec)
    expected = body[part]
    assert got["Body"] == expected
    assert got["ContentLength"] == len(expected)
    start = part.start % len(body)
    assert got["ContentRange"] == f"bytes {start}-{start + len(expected) - 1}/{len(body)}"


def test_conditional_get(handler: Endpoint, target: Target, request: pytest.FixtureRequest) -> None:
    if target.kind == "nanio":
        _xfail(request, NANIO_CONDITIONAL)
    key = unique("conditional.txt")
    etag = handler.put_object(BUCKET, key, b"version 1")["ETag"]
    assert handler.get_object(BUCKET, key, IfMatch=etag)["Body"] == b"version 1"
    with pytest.raises(PreconditionFailed):
        handler.get_object(BUCKET, key, IfMatch='"0123456789abcdef0123456789abcdef"')
    with pytest.raises(ServiceError) as err:
        handler.get_object(BUCKET, key, IfNoneMatch=etag)
    assert err.value.status == 304


# ----------------------------------------------------------------------------- presigned
def test_presigned_get_urllib(handler: Endpoint, target: Target, note: Any) -> None:
    key = unique("signed.txt")
    body = b"presigned body " + os.urandom(8)
    handler.put_object(BUCKET, key, body)
    url = handler.create_presigned_url(BUCKET, key, expiration=300)
    assert "X-Amz-Signature=" in url
    assert _fetch(url) == body
    sig_at = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    bad = url[:sig_at] + ("0" if url[sig_at] != "0" else "1") + url[sig_at + 1 :]
    if target.checks_signatures:
        with pytest.raises(urllib.error.HTTPError) as err:
            _fetch(bad)
        assert err.value.code == 403
        err.value.close()
    else:
        assert _fetch(bad) == body
        note("a tampered signature is accepted too (the server checks none)")


def test_presigned_put_urllib(handler: Endpoint, target: Target) -> None:
    key = unique("signed upload.txt")
    body = b"uploaded with a presigned PUT " + os.urandom(8)
    url = handler.create_presigned_url(BUCKET, key, expiration=300, method="PUT")
    # urllib would label the body application/x-www-form-urlencoded, which moto parses as a
    # form (the object is stored empty, or the request hangs): say what it is, as curl -T does.
    request = urllib.request.Request(
        url, data=body, method="PUT", headers={"Content-Type": "application/octet-stream"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
    assert handler.get_object(BUCKET, key)["Body"] == body
    head_url = handler.create_presigned_url(BUCKET, key, expiration=300, method="HEAD")
    with urllib.request.urlopen(urllib.request.Request(head_url, method="HEAD"), timeout=30) as r:
        assert int(r.headers["Content-Length"]) == len(body)


# ----------------------------------------------------------------------------- credentials
def test_wrong_credentials(target: Target, transport: str, note: Any) -> None:
    if not target.checks_signatures:
        pytest.skip(f"{target.kind} checks no signatures or keys: any credentials work")
    key = unique("secret.txt")
    target.client().put_object(Bucket=BUCKET, Key=key, Body=b"x")
    codes: set[str] = set()
    wrong_secret = target.handler(transport, secret_key="wrong-" + target.secret_key, retries=2)
    unknown_key = target.handler(transport, access_key="AKIDS3KITUNKNOWN00", retries=2)
    try:
        for ep in (wrong_secret, unknown_key):
            calls: list[Callable[[], object]] = [
                partial(ep.get_object, BUCKET, key),
                partial(ep.put_object, BUCKET, key + ".new", b"y"),
                partial(ep.list_objects, BUCKET, prefix=key),
            ]
            for call in calls:
                with pytest.raises(AccessDenied) as err:
                    call()
                codes.add(err.value.code)
                assert classify(err.value) == BAD_CREDENTIALS, err.value.code
                assert err.value.attempt_count == 1  # never retried
                assert target.secret_key not in str(err.value)
            assert ep.misconfigured
            assert ep.stats().endpoint_failures == 0
            assert ep.stats().state == "closed"
    finally:
        wrong_secret.close()
        unknown_key.close()
    note("codes: " + ", ".join(sorted(codes)))


# ----------------------------------------------------------------------------- odd keys
ODD_KEYS = {
    "unicode": "ünïcödé/漢字/😀.txt",
    "spaces": "with space/a  b c.txt",
    "plus": "plus+sign/a+b+c.txt",
    "percent": "per%cent/100% %41 %2F.txt",
    "trailing '/' (folder marker with a body)": "folder/",
    "'//' (empty segment)": "a//b.txt",
    "'.' and '..' segments": "x/./y/../z.txt",
}
# (server kind, variant) -> reason: known server bugs or refusals.
ODD_KEY_BUGS = {
    ("nanio", "percent"): NANIO_PERCENT,
    ("nanio", "trailing '/' (folder marker with a body)"): NANIO_SEGMENTS,
    ("nanio", "'//' (empty segment)"): NANIO_SEGMENTS,
    ("nanio", "'.' and '..' segments"): NANIO_SEGMENTS,
    ("seaweedfs", "trailing '/' (folder marker with a body)"): WEED_TRAILING_SLASH,
    ("seaweedfs", "'//' (empty segment)"): WEED_DOUBLE_SLASH,
    ("seaweedfs", "'.' and '..' segments"): WEED_DOT_SEGMENTS,
}


@pytest.mark.parametrize("variant", list(ODD_KEYS))
def test_odd_keys(
    handler: Endpoint,
    target: Target,
    variant: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    reason = ODD_KEY_BUGS.get((target.kind, variant))
    if reason is not None:
        _xfail(request, reason)
    base = unique()
    key = base + ODD_KEYS[variant]
    body = f"body of {variant}".encode()
    assert handler.put_object(BUCKET, key, body)["Key"] == key
    assert handler.get_object(BUCKET, key)["Body"] == body
    assert handler.head_object(BUCKET, key)["ContentLength"] == len(body)
    listed = handler.list_objects(BUCKET, prefix=base)
    assert [o["Key"] for o in listed["Contents"]] == [key]
    dst = tmp_path / "odd.out"
    handler.download_file(BUCKET, key, str(dst))
    assert dst.read_bytes() == body
    assert _fetch(handler.create_presigned_url(BUCKET, key, expiration=300)) == body
    handler.copy_object(BUCKET, key + ".copy", BUCKET, key)
    assert handler.get_object(BUCKET, key + ".copy")["Body"] == body
    handler.delete_object(BUCKET, key)
    handler.delete_object(BUCKET, key + ".copy")
    with pytest.raises(NotFound):
        handler.head_object(BUCKET, key)
    assert handler.list_objects(BUCKET, prefix=base)["Contents"] == []


# ----------------------------------------------------------------------------- failover
def test_failover(target: Target, transport: str, tmp_path: Path, note: Any) -> None:
    pool: S3ServerPool | None = None
    if target.ceph is not None:
        urls = target.urls  # two gateways of one cluster: the data is shared
        kill: Callable[[], None] = partial(target.ceph.kill_gateway, 0)
    else:  # two independent servers of this kind, replicated by the multiplexer
        pool = S3ServerPool(
            2,
            target.kind,
            buckets=[BUCKET],
            access_key=target.access_key,
            secret_key=target.secret_key,
        )
        pool.start(timeout=60)
        urls = pool.urls
        kill = pool[0].kill
    mux = Multiplexer(
        strategy="round-robin",
        access_key=target.access_key,
        secret_key=target.secret_key,
        transport=transport,
        retries=1,
        circuit_breaker_threshold=1,
        connect_timeout=1.0,
        read_timeout=10.0,
        backoff_base_s=0.01,
    )
    try:
        mux.add_endpoint("a", urls[0])
        mux.add_endpoint("b", urls[1])
        key = unique("failover.bin")
        body = os.urandom(50_000)
        src = tmp_path / "src.bin"
        src.write_bytes(body)
        if pool is None:
            mux.put_object(BUCKET, key, body, endpoint="a")
        else:
            results = mux.replicate(str(src), BUCKET, key)
            assert all(r["success"] for r in results.values()), results
        kill()
        t0 = time.monotonic()
        for _ in range(10):
            got = mux.get_object(BUCKET, key)
            assert got["Body"] == body
            assert got["Endpoint"] == "b"
        assert mux.head_object(BUCKET, key)["ContentLength"] == len(body)
        dst = tmp_path / "dst.bin"
        assert mux.download_file(BUCKET, key, str(dst))["Endpoint"] == "b"
        assert dst.read_bytes() == body
        listed = mux.list_objects(BUCKET, prefix=key)
        assert [o["Key"] for o in listed["Contents"]] == [key]
        new_key = unique("written-after.bin")
        put = mux.put_object(BUCKET, new_key, b"after the failover")
        assert put["Endpoint"] == "b"
        assert mux.get_object(BUCKET, new_key, endpoint="b")["Body"] == b"after the failover"
        took = time.monotonic() - t0
        stats = mux.stats()
        assert stats["a"].state == "open"
        note(f"14 routed calls after the kill in {took:.2f} s")
    finally:
        mux.close()
        if pool is not None:
            pool.stop()
        if target.ceph is not None:
            target.ceph.start_gateway(0)


# ----------------------------------------------------------------------------- the guide
def test_guide_compat(target: Target, transport: str, tmp_path: Path) -> None:
    kit = s3kit.s3_kit(
        metadata={
            "s3cfg": {
                "accessKey": target.access_key,
                "secretKey": target.secret_key,
                "endpoint": target.url,
            }
        }
    )
    handler = kit.create_s3_endpoint_handler(
        endpoint_url=target.url,
        access_key=target.access_key,
        secret_key=target.secret_key,
        max_concurrent=5,
        circuit_breaker_threshold=5,
        retries=3,
        transport=transport,
    )
    src = tmp_path / "guide.txt"
    src.write_bytes(b"the guide's upload")
    key = unique("guide.txt")
    try:
        up = handler("upload_file", file_path=str(src), bucket=BUCKET, key=key)
        assert up["Key"] == key
        listed = handler("list_objects", bucket=BUCKET, prefix=key)
        assert [o["Key"] for o in listed["Contents"]] == [key]
        assert handler("head_object", bucket=BUCKET, key=key)["ContentLength"] == 18
        dst = tmp_path / "back.txt"
        handler("download_file", bucket=BUCKET, key=key, file_path=str(dst))
        assert dst.read_bytes() == b"the guide's upload"
        url = handler("create_presigned_url", bucket=BUCKET, key=key, expiration=3600)
        assert _fetch(url) == b"the guide's upload"
        handler("delete_object", bucket=BUCKET, key=key)
        with pytest.raises(NotFound):
            handler("head_object", bucket=BUCKET, key=key)
    finally:
        handler.close()

    # The guide's multiplexer class (built in), over this server.
    with s3kit.S3EndpointMultiplexer(kit) as multiplexer:
        multiplexer.add_endpoint(
            name="local",
            endpoint_url=target.url,
            access_key=target.access_key,
            secret_key=target.secret_key,
            max_concurrent=10,
            transport=transport,
        )
        up = multiplexer.upload_file(str(src), BUCKET, key)
        assert up["Endpoint"] == "local"
        assert multiplexer.head_object(BUCKET, key)["ContentLength"] == 18
        listed = multiplexer.list_objects(BUCKET, prefix=key)
        assert [o["Key"] for o in listed["Contents"]] == [key]
        url = multiplexer.create_presigned_url(BUCKET, key)
        assert _fetch(url) == b"the guide's upload"
        multiplexer.delete_object(BUCKET, key)


# ----------------------------------------------------------------------------- restart
def test_restart_keeps_data(target: Target, request: pytest.FixtureRequest) -> None:
    if target.kind == "moto":
        _xfail(request, MOTO_RESTART)
    key = unique("durable.txt")
    client = target.client()
    client.put_object(Bucket=BUCKET, Key=key, Body=b"durable")
    if target.ceph is not None:
        target.ceph.kill_gateway(0)
        target.ceph.start_gateway(0)
        client = target.client(target.ceph.urls[0])
    else:
        server = target.servers[0]
        server.restart(timeout=60)
        if target.kind == "moto":
            server.create_bucket(BUCKET)  # the session's other tests need it back
            target.cache.clear()
    handler = target.handler("boto3")
    try:
        assert handler.get_object(BUCKET, key)["Body"] == b"durable"
    finally:
        handler.close()
