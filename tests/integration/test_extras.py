"""The verbs of contract §12 on real servers, both transports: ``iter_objects``,
``upload_fileobj`` / ``download_fileobj``, ``delete_objects``, and the pass-through of
``extra_args``, ``VersionId``, ``If-Match`` / ``If-None-Match``, request ids and
``handler.client``; on handlers and on multiplexers (failover, ``key-hash``, replica sets).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

import pytest

from s3kit import Multiplexer
from s3kit._async import AsyncMultiplexer
from s3kit._config import make_config
from s3kit._endpoint import Endpoint
from s3kit._errors import (
    ConnectionFailed,
    InvalidArgument,
    NotFound,
    PreconditionFailed,
    ServiceError,
)
from s3kit._outcome import SUCCESS
from s3kit._transport import DownloadState
from s3kit._transport._boto3 import Boto3Transport
from s3kit.testing import FaultProxy, S3Server

pytest.importorskip("obstore")
from s3kit._transport._obstore import ObstoreTransport

pytestmark = pytest.mark.timeout(120)

BUCKET = "test-bucket"  # the session servers' bucket (tests/conftest.py)
TRANSPORTS = ("boto3", "obstore")
MiB = 1024 * 1024
FAST: dict[str, Any] = {
    "retries": 1,
    "backoff_base_s": 0.01,
    "backoff_cap_s": 0.05,
    "connect_timeout": 1.0,
    "read_timeout": 5.0,
    "breaker_open_s": 0.2,
}


def make_endpoint(url: str, server: S3Server, transport: str, name: str = "ep") -> Endpoint:
    cfg = make_config(url, server.access_key, server.secret_key, name=name, **FAST)
    impl = Boto3Transport(cfg) if transport == "boto3" else ObstoreTransport(cfg)
    return Endpoint(cfg, transport=impl)


def spec(url: str, server: S3Server, **options: Any) -> dict[str, Any]:
    return {
        "url": url,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        **FAST,
        **options,
    }


def calls(ep: Endpoint, operation: str) -> int:
    """Successful requests of ``operation`` the endpoint has sent so far."""
    return ep.metrics_snapshot()[0].get((operation, SUCCESS), 0)


def prefix() -> str:
    return f"extras/{uuid.uuid4().hex[:10]}/"


class OneWay(io.RawIOBase):
    """A stream that can only be read (or only written): no seek, no tell, like a pipe."""

    def __init__(self, data: bytes = b"") -> None:
        super().__init__()
        self._src = io.BytesIO(data)
        self.written = bytearray()

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._src.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def write(self, data: Any) -> int:
        self.written += data
        return len(data)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["moto", "nanio"])
def server(request: pytest.FixtureRequest) -> S3Server:
    return request.getfixturevalue(f"{request.param}_server")  # type: ignore[no-any-return]


@pytest.fixture
def ep(server: S3Server, transport: str) -> Iterator[Endpoint]:
    endpoint = make_endpoint(server.url, server, transport)
    yield endpoint
    endpoint.close()


@pytest.fixture
def proxy(moto_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.port) as p:
        yield p


# ----------------------------------------------------------------------- iter_objects
def test_iter_objects_is_lazy_and_ordered(ep: Endpoint) -> None:
    base = prefix()
    keys = [f"{base}k{i:02d}" for i in range(11)] + [f"{base}sub/a", f"{base}sub/b"]
    for key in keys:
        ep.put_object(BUCKET, key, b"x")
    before = calls(ep, "iter_objects")
    entries = ep.iter_objects(BUCKET, base, page_size=5)
    assert calls(ep, "iter_objects") == before  # nothing is sent before the first next()
    first = next(entries)
    assert first["Key"] == keys[0] and first["Size"] == 1 and first["ETag"]
    assert calls(ep, "iter_objects") == before + 1
    rest = [e["Key"] for e in entries]
    assert [first["Key"], *rest] == sorted(keys)
    assert calls(ep, "iter_objects") == before + 3  # 13 keys, 5 a page
    assert entries.endpoints == [ep.name] and entries.incomplete == {}

    names = [e.get("Key") or e["Prefix"] for e in ep.iter_objects(BUCKET, base, delimiter="/")]
    assert names == sorted([*keys[:11], f"{base}sub/"])
    assert list(ep.iter_objects(BUCKET, base + "nothing/")) == []
    assert [e["Key"] for e in ep("iter_objects", bucket=BUCKET, prefix=base + "sub/")] == keys[11:]


def test_iter_objects_continues_on_another_endpoint(
    moto_server: S3Server, nanio_server: S3Server, proxy: FaultProxy, transport: str
) -> None:
    """A page that fails mid-listing continues on the next endpoint after the last name
    yielded, also when that name was a common prefix: nothing repeated, nothing lost."""
    base = prefix()
    keys = [f"{base}a/1", f"{base}a/2", f"{base}b", f"{base}c/1", f"{base}d", f"{base}e"]
    mux = Multiplexer(
        {
            "first": spec(proxy.url, moto_server, priority=0),
            "second": spec(nanio_server.url, nanio_server, priority=1),
        },
        strategy="priority",
        transport=transport,
    )
    with mux:
        for name in ("first", "second"):
            for key in keys:
                mux.put_object(BUCKET, key, b"y", endpoint=name)
        entries = mux.iter_objects(BUCKET, base, delimiter="/", page_size=1)
        head = [next(entries), next(entries)]  # "a/" then "b", both from "first"
        proxy.set_mode("refuse")
        tail = list(entries)
        names = [e.get("Key") or e["Prefix"] for e in [*head, *tail]]
        assert names == [f"{base}a/", f"{base}b", f"{base}c/", f"{base}d", f"{base}e"]
        assert entries.endpoints == ["first", "second"]


def test_iter_objects_merges_key_hash(
    moto_server: S3Server, nanio_server: S3Server, proxy: FaultProxy
) -> None:
    base = prefix()
    mux = Multiplexer(
        {
            "moto": spec(moto_server.url, moto_server),
            "nanio": spec(nanio_server.url, nanio_server),
            "flaky": spec(proxy.url, moto_server, buckets={BUCKET: "merge-other"}),
        },
        strategy="key-hash",
    )
    moto_server.create_bucket("merge-other")
    with mux:
        keys = sorted(f"{base}{i:03d}" for i in range(30))
        for key in keys:
            mux.put_object(BUCKET, key, b"z")
        entries = mux.iter_objects(BUCKET, base, page_size=4)
        assert [e["Key"] for e in entries] == keys
        assert sorted(entries.endpoints) == ["flaky", "moto", "nanio"]

        proxy.set_mode("refuse")
        entries = mux.iter_objects(BUCKET, base, page_size=4)
        listed = [e["Key"] for e in entries]
        assert listed == sorted(listed) and set(listed) < set(keys)
        assert list(entries.incomplete) == ["flaky"]
        assert isinstance(entries.incomplete["flaky"], ConnectionFailed)


# ------------------------------------------------------------ upload/download_fileobj
@pytest.mark.parametrize("size", [1000, 9 * MiB], ids=["small", "multipart"])
def test_fileobj_round_trip(ep: Endpoint, size: int) -> None:
    key = prefix() + "stream.bin"
    body = os.urandom(size)
    sent: list[int] = []
    up = ep.upload_fileobj(OneWay(body), BUCKET, key, {"ContentType": "x/y"}, callback=sent.append)
    head = ep.head_object(BUCKET, key)
    assert (up["Bucket"], up["Key"], up["Endpoint"]) == (BUCKET, key, ep.name)
    assert up["ETag"] == head["ETag"] and head["ContentLength"] == size
    assert head["ContentType"] == "x/y" and sum(sent) == size
    if size < 8 * MiB:
        assert up["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'

    sink = OneWay()
    got: list[int] = []
    down = ep.download_fileobj(BUCKET, key, sink, callback=got.append)
    assert bytes(sink.written) == body and sum(got) == size
    assert (down["ContentLength"], down["ETag"], down["Endpoint"]) == (size, up["ETag"], ep.name)

    seekable = io.BytesIO(b"keep|" + body)
    seekable.seek(5)  # uploads from the current position, like boto3's upload_fileobj
    again = ep.upload_fileobj(seekable, BUCKET, key)
    assert again["ETag"] == up["ETag"] or size >= 8 * MiB
    out = io.BytesIO()
    ep.download_fileobj(BUCKET, key, out)
    assert out.getvalue() == body


def test_download_fileobj_resumes_after_a_cut_body(
    moto_server: S3Server, proxy: FaultProxy, transport: str
) -> None:
    ep = make_endpoint(proxy.url, moto_server, transport)
    try:
        key = prefix() + "cut.bin"
        body = os.urandom(2 * MiB + 3)
        ep.put_object(BUCKET, key, body)
        retries = ep.stats().retries
        proxy.set_mode("truncate", after_bytes=MiB, count=1)
        sink = OneWay()
        got: list[int] = []
        ep.download_fileobj(BUCKET, key, sink, callback=got.append)
        assert bytes(sink.written) == body and sum(got) == len(body)
        assert all(n > 0 for n in got)  # written bytes are never given back
        assert ep.stats().retries == retries + 1
        ranged = [
            r["headers"]
            for r in proxy.stats["recent_requests"]
            if any(h.lower() == "range" for h in r["headers"])
        ]
        assert ranged, "the retry must resume with a Range request"
        assert any(h.lower() == "if-match" for h in ranged[-1]), "pinned to the ETag"
    finally:
        ep.close()


def test_download_fileobj_never_stitches_versions(ep: Endpoint) -> None:
    # A resume pinned to an ETag the object no longer has: moto answers 412 to If-Match,
    # nanio ignores it (the transport compares the ETag itself). Either way: 412, no bytes.
    key = prefix() + "changed.bin"
    ep.put_object(BUCKET, key, b"new version" * 100)
    state = DownloadState(offset=10, etag='"0123456789abcdef0123456789abcdef"', total=1100)
    sink = OneWay()
    with pytest.raises(PreconditionFailed):
        ep.transport.download_stream(BUCKET, key, sink, state, None)
    assert sink.written == b""


def test_download_fileobj_fails_over_and_resumes_on_the_same_version(
    moto_server: S3Server, nanio_server: S3Server, proxy: FaultProxy, transport: str
) -> None:
    mux = Multiplexer(
        {
            "first": spec(proxy.url, moto_server, priority=0),
            "second": spec(nanio_server.url, nanio_server, priority=1),
        },
        strategy="priority",
        transport=transport,
    )
    with mux:
        key = prefix() + "failover.bin"
        body = os.urandom(3 * MiB + 5)  # cut after 2 MiB: obstore writes 1 MiB chunks
        for name in ("first", "second"):
            mux.put_object(BUCKET, key, body, endpoint=name)  # the same version on both
        proxy.set_mode("truncate", after_bytes=2 * MiB + 1000, count=1)
        sink = OneWay()
        result = mux.download_fileobj(BUCKET, key, sink)
        assert bytes(sink.written) == body and result["Endpoint"] == "second"

        mux.put_object(BUCKET, key, b"another version" + body, endpoint="second")
        proxy.set_mode("truncate", after_bytes=2 * MiB + 1000, count=1)
        sink = OneWay()
        with pytest.raises(PreconditionFailed):
            mux.download_fileobj(BUCKET, key, sink)
        assert 0 < len(sink.written) < len(body)
        assert bytes(sink.written) == body[: len(sink.written)]  # only the first version's


def test_upload_fileobj_retries_only_what_it_can_rewind(
    moto_server: S3Server, proxy: FaultProxy, transport: str
) -> None:
    ep = make_endpoint(proxy.url, moto_server, transport)
    try:
        key = prefix() + "retry.bin"
        for source in (io.BytesIO(b"seekable"), OneWay(b"short stream")):
            proxy.set_mode("error", status=500, count=1)
            ep.upload_fileobj(source, BUCKET, key)  # rewound, or held in memory: sent again
            assert ep.get_object(BUCKET, key)["Body"] in (b"seekable", b"short stream")
        assert ep.stats().retries >= 2

        # A non-seekable stream longer than 8 MiB is read once: it cannot be sent twice.
        # (Three faults: boto3's transfer client retries a multipart request in place.)
        proxy.set_mode("error", status=500, count=3)
        with pytest.raises(InvalidArgument, match="not seekable") as info:
            ep.upload_fileobj(OneWay(os.urandom(9 * MiB)), BUCKET, key)
        proxy.set_mode("pass")
        assert isinstance(info.value.__cause__, ServiceError)
        assert info.value.__cause__.status == 500
        assert ep.get_object(BUCKET, key)["Body"] == b"short stream"
    finally:
        ep.close()


# ---------------------------------------------------------------------- delete_objects
def test_delete_objects_in_batches(ep: Endpoint) -> None:
    base = prefix()
    real = [f"{base}real{i}" for i in range(5)]
    for key in real:
        ep.put_object(BUCKET, key, b"d")
    keys = real + [f"{base}absent{i:04d}" for i in range(1200)]
    before = calls(ep, "delete_objects")
    result = ep.delete_objects(BUCKET, keys)
    assert calls(ep, "delete_objects") == before + 2  # 1000 + 205
    assert sorted(d["Key"] for d in result["Deleted"]) == sorted(keys)
    assert result["Errors"] == [] and result["Endpoint"] == ep.name
    assert list(ep.iter_objects(BUCKET, base)) == []

    ep.put_object(BUCKET, real[0], b"d")
    quiet = ep("delete_objects", bucket=BUCKET, keys=[{"Key": real[0]}], quiet=True)
    assert quiet["Deleted"] == [] and quiet["Errors"] == []
    with pytest.raises(NotFound):
        ep.head_object(BUCKET, real[0])
    assert ep.delete_objects(BUCKET, [])["Deleted"] == []
    for bad in ("one-key", [""], [{"Key": "k", "Other": 1}], 5):
        with pytest.raises(InvalidArgument, match="keys"):
            ep.delete_objects(BUCKET, bad)  # type: ignore[arg-type]


def test_delete_objects_routing(moto_server: S3Server, nanio_server: S3Server) -> None:
    base = prefix()
    endpoints = {
        "moto": spec(moto_server.url, moto_server),
        "nanio": spec(nanio_server.url, nanio_server),
    }
    with Multiplexer(endpoints, strategy="round-robin") as mux:
        keys = [f"{base}rr{i:04d}" for i in range(1001)]
        result = mux.delete_objects(BUCKET, keys)
        assert len(result["Endpoints"]) == 1  # every batch where the first one went
        assert len(result["Deleted"]) == 1001

    with Multiplexer(endpoints, strategy="key-hash") as mux:
        keys = [f"{base}kh{i:02d}" for i in range(20)]
        for key in keys:
            mux.put_object(BUCKET, key, b"k")
        owner_of = {key: mux.head_object(BUCKET, key)["Endpoint"] for key in keys}
        assert set(owner_of.values()) == {"moto", "nanio"}
        result = mux.delete_objects(BUCKET, keys)
        assert sorted(result["Endpoints"]) == ["moto", "nanio"]
        assert sorted(d["Key"] for d in result["Deleted"]) == keys
        # each key names its own owner, not the batch's first endpoint
        assert {d["Key"]: d["Endpoint"] for d in result["Deleted"]} == owner_of
        assert list(mux.iter_objects(BUCKET, base)) == []


def test_delete_objects_in_a_replica_set(
    moto_server: S3Server, nanio_server: S3Server, proxy: FaultProxy, tmp_path: Path
) -> None:
    base = prefix()
    mux = Multiplexer(
        {
            "a": spec(nanio_server.url, nanio_server),
            "b": spec(proxy.url, moto_server, retries=0),
        },
        replicas=["a", "b"],
        write_quorum=1,
        ledger_path=tmp_path / "ledger.sqlite",
    )
    with mux:
        keys = [f"{base}r{i}" for i in range(3)]
        for key in keys:
            mux.put_object(BUCKET, key, b"r", write_quorum="all")
        proxy.set_mode("refuse")
        result = mux.delete_objects(BUCKET, keys)
        assert mux.wait_for_writes(10)
        assert result["Endpoints"] == ["a"] and result["Pending"] == ["b"]
        owed = mux.pending(BUCKET, base)
        assert sorted((row["endpoint"], row["key"], row["op"]) for row in owed) == [
            ("b", key, "delete") for key in keys
        ]
        with pytest.raises(InvalidArgument, match="version"):
            mux.delete_objects(BUCKET, [{"Key": keys[0], "VersionId": "v"}])

        proxy.set_mode("pass")
        mux.repair(BUCKET, base, wait_s=5)
        assert mux.pending(BUCKET, base) == []
        for name in ("a", "b"):
            assert list(mux.iter_objects(BUCKET, base, endpoint=name)) == []


def test_upload_fileobj_in_a_replica_set(
    moto_server: S3Server, nanio_server: S3Server, tmp_path: Path
) -> None:
    mux = Multiplexer(
        {"a": spec(nanio_server.url, nanio_server), "b": spec(moto_server.url, moto_server)},
        replicas=["a", "b"],
        write_quorum="all",
        ledger_path=tmp_path / "ledger.sqlite",
    )
    with mux:
        key = prefix() + "replicated.bin"
        body = os.urandom(100_000)
        sent: list[int] = []
        result = mux.upload_fileobj(OneWay(body), BUCKET, key, callback=sent.append)
        assert sorted(result["Endpoints"]) == ["a", "b"] and sum(sent) == len(body)
        for name in ("a", "b"):
            assert mux.get_object(BUCKET, key, endpoint=name)["Body"] == body


# ------------------------------------------------------ §12 pass-through, both transports
def test_extra_args_versions_and_conditions(
    moto_server: S3Server, transport: str, tmp_path: Path
) -> None:
    ep = make_endpoint(moto_server.url, moto_server, transport)
    bucket = f"versioned-{transport}"
    try:
        moto_server.create_bucket(bucket)
        ep.client.put_bucket_versioning(  # the escape hatch works on both transports
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        key = prefix() + "v.txt"
        extra = {"ContentType": "text/plain", "Metadata": {"team": "s3kit"}}
        v1 = ep.put_object(bucket, key, b"one", extra)
        v2 = ep.put_object(bucket, key, b"two", {"ServerSideEncryption": "AES256"})
        assert v1["VersionId"] and v2["VersionId"] and v1["VersionId"] != v2["VersionId"]
        old = ep.get_object(bucket, key, VersionId=v1["VersionId"])
        assert old["Body"] == b"one" and old["Metadata"] == {"team": "s3kit"}
        assert old["ContentType"] == "text/plain"
        assert ep.head_object(bucket, key, VersionId=v1["VersionId"])["ContentLength"] == 3
        if transport == "boto3":  # obstore's HEAD does not report encryption (docs/extras.md)
            assert ep.head_object(bucket, key)["ServerSideEncryption"] == "AES256"

        source = tmp_path / "upload.txt"
        source.write_bytes(b"file body")
        ep.upload_file(str(source), bucket, key + ".file", extra)
        copied = key + ".copy"
        ep.copy_object(
            bucket,
            copied,
            bucket,
            key + ".file",
            {"MetadataDirective": "REPLACE", "Metadata": {"copied": "yes"}},
        )
        assert ep.head_object(bucket, key + ".file")["Metadata"] == {"team": "s3kit"}
        assert ep.head_object(bucket, copied)["Metadata"] == {"copied": "yes"}

        assert ep.get_object(bucket, key, IfMatch=v2["ETag"])["Body"] == b"two"
        with pytest.raises(PreconditionFailed):
            ep.get_object(bucket, key, IfMatch=v1["ETag"])
        with pytest.raises(ServiceError) as info:
            ep.get_object(bucket, key, IfNoneMatch=v2["ETag"])
        assert info.value.status == 304
        with pytest.raises(PreconditionFailed):
            ep.put_object(bucket, key, b"three", {"IfNoneMatch": "*"})

        missing = pytest.raises(NotFound)
        with missing as err:
            ep.get_object(bucket, prefix() + "missing")
        assert err.value.request_id, "a ServiceError carries the server's request id"
        assert err.value.request_id in str(err.value)

        deleted = ep.delete_objects(bucket, [{"Key": key, "VersionId": v1["VersionId"]}])
        assert deleted["Deleted"][0]["VersionId"] == v1["VersionId"]
        with pytest.raises(ServiceError):
            ep.get_object(bucket, key, VersionId=v1["VersionId"])
    finally:
        ep.close()


def test_async_wrappers(moto_server: S3Server) -> None:
    async def main() -> None:
        async with AsyncMultiplexer({"m": spec(moto_server.url, moto_server)}) as mux:
            base = prefix()
            await mux.upload_fileobj(io.BytesIO(b"async"), BUCKET, base + "a")
            await mux.upload_fileobj(io.BytesIO(b"async"), BUCKET, base + "b")
            sink = io.BytesIO()
            await mux.download_fileobj(BUCKET, base + "a", sink)
            assert sink.getvalue() == b"async"
            keys = [e["Key"] async for e in mux.iter_objects(BUCKET, base, page_size=1)]
            assert keys == [base + "a", base + "b"]
            result = await mux.delete_objects(BUCKET, keys)
            assert len(result["Deleted"]) == 2

    asyncio.run(main())


def test_bad_arguments_raise_before_sending(moto_server: S3Server) -> None:
    ep = make_endpoint("http://127.0.0.1:9", moto_server, "boto3")  # nothing listens there
    bad: list[Callable[[], object]] = [
        lambda: ep.iter_objects(BUCKET, page_size=0),
        lambda: ep.iter_objects(BUCKET, page_size=1001),
        lambda: ep.iter_objects(BUCKET, prefix=3),  # type: ignore[arg-type]
        lambda: ep.upload_fileobj(b"bytes", BUCKET, "k"),  # type: ignore[arg-type]
        lambda: ep.download_fileobj(BUCKET, "k", io.StringIO().read),  # type: ignore[arg-type]
        lambda: ep.delete_objects(BUCKET, "k"),
    ]
    for call in bad:
        with pytest.raises(InvalidArgument):
            call()
    assert ep.stats().requests == 0
