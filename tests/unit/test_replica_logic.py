"""Replica sets with in-memory fake stores: quorum writes, the ledger, reads, hedging, repair.

Each endpoint is a real :class:`Endpoint` whose transport is a :class:`FakeS3` over a dict, so
routing, breakers, retries and the replica logic run for real, without a network. Slow or broken
members are scripted per method.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from s3kit import (
    AccessDenied,
    AsyncMultiplexer,
    ConfigError,
    ConnectionFailed,
    EndpointError,
    InvalidArgument,
    Multiplexer,
    NoHealthyEndpoint,
    NotFound,
    PreconditionFailed,
)
from s3kit._config import make_config
from s3kit._endpoint import Endpoint
from s3kit._ledger import DELETE, PUT, Ledger
from s3kit._replica import (
    HEDGE_COLD_S,
    HEDGE_FLOOR_S,
    SOURCE_ETAG,
    HedgeConfig,
    ReplicaGroup,
    check_quorum,
    parse_hedge,
    resolve_quorum,
)
from s3kit._transport import DownloadState

pytestmark = pytest.mark.timeout(60)

BUCKET = "bk"
_CLOCK = itertools.count()
Script = Callable[[str], "EndpointError | None"]


def _now() -> datetime.datetime:
    # strictly increasing LastModified, one second apart, so "newest" is well defined
    return datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(
        seconds=next(_CLOCK)
    )


class Obj:
    def __init__(self, data: bytes, meta: dict[str, str] | None = None, multipart: bool = False):
        self.data = data
        md5 = hashlib.md5(data).hexdigest()
        self.etag = f'"{md5}-2"' if multipart else f'"{md5}"'
        self.meta = dict(meta or {})
        self.modified = _now()


class FakeS3:
    """An in-memory S3 for one endpoint. ``fail(method)`` may return an error to raise;
    ``delay(method)`` seconds are slept first. ``multipart`` makes upload_file produce
    multipart-style ETags; ``honour_if_match=False`` ignores If-Match like some servers do."""

    name = "fake"

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.objects: dict[tuple[str, str], Obj] = {}
        self.fail: Script | None = None
        self.delay: dict[str, float] = {}
        self.multipart = False
        self.honour_if_match = True
        self.cut_download_after: int | None = None  # bytes, once
        self.uploads: list[dict[str, Any]] = []  # multipart uploads in progress
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    # helpers
    def _enter(self, method: str, detail: Any = None) -> None:
        with self._lock:
            self.calls.append((method, detail))
        wait = self.delay.get(method, 0.0)
        if wait:
            time.sleep(wait)
        if self.fail is not None:
            error = self.fail(method)
            if error is not None:
                raise error

    def _obj(self, bucket: str, key: str, method: str) -> Obj:
        obj = self.objects.get((bucket, key))
        if obj is None:
            raise NotFound(code="NoSuchKey", status=404, endpoint=self.endpoint, operation=method)
        return obj

    def count(self, method: str) -> int:
        with self._lock:
            return sum(1 for m, _ in self.calls if m == method)

    @staticmethod
    def _head(obj: Obj) -> dict[str, Any]:
        return {
            "ContentLength": len(obj.data),
            "ETag": obj.etag,
            "LastModified": obj.modified,
            "Metadata": dict(obj.meta),
            "ContentType": "application/octet-stream",
        }

    # the transport
    def head_object(self, bucket: str, key: str, extra: Any, timeout: Any) -> dict[str, Any]:
        self._enter("head_object", key)
        return self._head(self._obj(bucket, key, "head_object"))

    def get_object(
        self, bucket: str, key: str, range: Any, extra: Any, timeout: Any
    ) -> dict[str, Any]:
        self._enter("get_object", (key, range))
        obj = self._obj(bucket, key, "get_object")
        if_match = (extra or {}).get("IfMatch")
        if if_match and self.honour_if_match and if_match != obj.etag:
            raise PreconditionFailed(code="PreconditionFailed", status=412, operation="get_object")
        data = obj.data
        if range is not None:
            first, last = range.removeprefix("bytes=").split("-")
            data = data[int(first) : int(last) + 1]
        return {**self._head(obj), "ContentLength": len(data), "Body": data}

    def put_object(
        self, bucket: str, key: str, body: Any, extra: Any, timeout: Any
    ) -> dict[str, Any]:
        self._enter("put_object", key)
        data = bytes(body) if isinstance(body, (bytes, bytearray, memoryview)) else body.read()
        obj = Obj(data, (extra or {}).get("Metadata"))
        self.objects[bucket, key] = obj
        return {"ETag": obj.etag}

    def upload_file(
        self,
        path: str,
        bucket: str,
        key: str,
        extra: Any,
        timeout: Any,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        self._enter("upload_file", key)
        with open(path, "rb") as fh:
            data = fh.read()
        obj = Obj(data, (extra or {}).get("Metadata"), multipart=self.multipart)
        self.objects[bucket, key] = obj
        if progress is not None:
            progress(len(data))
        return {"ETag": obj.etag}

    def delete_object(self, bucket: str, key: str, extra: Any, timeout: Any) -> dict[str, Any]:
        self._enter("delete_object", key)
        self.objects.pop((bucket, key), None)
        return {}

    def copy_object(
        self, bucket: str, key: str, sb: str, sk: str, extra: Any, timeout: Any
    ) -> dict[str, Any]:
        self._enter("copy_object", key)
        src = self._obj(sb, sk, "copy_object")
        obj = Obj(src.data, src.meta)
        self.objects[bucket, key] = obj
        return {"CopyObjectResult": {"ETag": obj.etag}}

    def list_objects(
        self, bucket: str, prefix: Any, max_keys: Any, delimiter: Any, timeout: Any
    ) -> dict[str, Any]:
        self._enter("list_objects", prefix)
        contents = [
            {"Key": k, "Size": len(o.data), "ETag": o.etag, "LastModified": o.modified}
            for (b, k), o in sorted(self.objects.items())
            if b == bucket and k.startswith(prefix or "")
        ]
        return {"Contents": contents, "KeyCount": len(contents), "IsTruncated": False}

    def download_into(
        self, bucket: str, key: str, fileobj: BinaryIO, state: DownloadState, timeout: Any
    ) -> None:
        """As the boto3 transport: resume with Range + If-Match, start over on a 412."""
        self._enter("download_into", (key, state.offset, state.etag))
        obj = self._obj(bucket, key, "download_file")
        start = state.offset
        if start and state.etag and state.etag != obj.etag and self.honour_if_match:
            fileobj.seek(0)
            fileobj.truncate()
            state.restart()
            start = 0
        if not state.offset:
            state.etag, state.total, state.response = obj.etag, len(obj.data), self._head(obj)
        data = obj.data[start:]
        cut = self.cut_download_after
        if cut is not None:
            self.cut_download_after = None
            state.take(fileobj, data[:cut])
            raise ConnectionFailed("cut", endpoint=self.endpoint, operation="download_file")
        state.take(fileobj, data)

    def presign(self, bucket: str, key: str, expiration: int, method: str) -> str:
        return f"http://{self.endpoint}.invalid/{bucket}/{key}"

    def client(self) -> FakeS3:
        """The boto3-client escape hatch: only the multipart-upload calls are faked."""
        return self

    def list_multipart_uploads(self, Bucket: str, **params: Any) -> dict[str, Any]:
        self._enter("list_multipart_uploads", Bucket)
        return {"Uploads": [dict(u) for u in self.uploads], "IsTruncated": False}

    def abort_multipart_upload(self, Bucket: str, Key: str, UploadId: str) -> dict[str, Any]:
        self._enter("abort_multipart_upload", UploadId)
        self.uploads = [u for u in self.uploads if u["UploadId"] != UploadId]
        return {}

    def list_buckets(self, timeout: Any) -> dict[str, Any]:
        return {"Buckets": []}

    def close(self) -> None:
        pass


def refused(method: str) -> EndpointError:
    return ConnectionFailed("connection refused", operation=method)


def add(mux: Multiplexer, name: str, **options: Any) -> FakeS3:
    """Install an endpoint named ``name`` over a fresh FakeS3, as add_endpoint would."""
    fake = FakeS3(name)
    config = make_config(
        "http://127.0.0.1:1", "ak", "sk", name=name, **{**mux._defaults, **options}
    )
    ep = Endpoint(config, events=mux._events, transport=fake, rng=lambda: 0.5)  # type: ignore[arg-type]
    mux._endpoints[name] = ep
    mux._ordered = (*mux._ordered, ep)
    return fake


FAST = {"retries": 0, "backoff_base_s": 0.001, "backoff_cap_s": 0.01, "breaker_open_s": 30.0}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[..., tuple[Multiplexer, dict[str, FakeS3]]]]:
    made: list[Multiplexer] = []

    def make(
        names: tuple[str, ...] = ("a", "b", "c"), **kw: Any
    ) -> tuple[Multiplexer, dict[str, FakeS3]]:
        kw.setdefault("ledger_path", str(tmp_path / "ledger.sqlite"))
        mux = Multiplexer(replicas=list(names), **{**FAST, **kw})
        # distinct priorities: under strategy="priority" a is asked first, then b, then c
        fakes = {name: add(mux, name, priority=i) for i, name in enumerate(names)}
        made.append(mux)
        return mux, fakes

    yield make
    for mux in made:
        mux.close(timeout=5)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


# --------------------------------------------------------------------- settings
@pytest.mark.parametrize(("n", "w"), [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3)])
def test_default_quorum_is_half_rounded_up(n: int, w: int) -> None:
    assert resolve_quorum(None, n) == w
    assert resolve_quorum("all", n) == n
    assert resolve_quorum(1, n) == 1


def test_quorum_and_hedge_validation() -> None:
    for bad in (0, -1, True, "most", 1.5):
        with pytest.raises(InvalidArgument):
            check_quorum(bad)
    with pytest.raises(InvalidArgument):
        resolve_quorum(4, 3)
    assert parse_hedge(None) is None and parse_hedge(False) is None
    assert parse_hedge(True) == HedgeConfig(None, 0.1)
    assert parse_hedge({"delay_s": 0.05}) == HedgeConfig(0.05, 0.1)
    assert parse_hedge({"delay_s": None, "max_extra": 0.2}) == HedgeConfig(None, 0.2)
    for bad_hedge in ({"delay": 1}, {"delay_s": 0}, {"max_extra": 2}, {"max_extra": True}, 3):
        with pytest.raises(InvalidArgument):
            parse_hedge(bad_hedge)


def test_multiplexer_validates_the_replica_keywords(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        Multiplexer(write_quorum=0)
    with pytest.raises(InvalidArgument):
        Multiplexer(hedge={"delay": 1})
    with pytest.raises(InvalidArgument):
        Multiplexer(replicas="abc")
    with pytest.raises(InvalidArgument):
        Multiplexer(replicas=[])
    with pytest.raises(InvalidArgument):
        Multiplexer(replicas=["a", "a"])
    with pytest.raises(InvalidArgument):
        Multiplexer(ledger_path=3)  # type: ignore[arg-type]
    mux = Multiplexer(replicas=["a", "b"], write_quorum="all", ledger_path=tmp_path / "l.db")
    assert mux.replica_groups == {"replicas": ("a", "b")}
    assert mux.ledger_path == str(tmp_path / "l.db")
    mux.close()


def test_hedge_budget_is_a_token_bucket() -> None:
    group = ReplicaGroup("g", ["a", "b"], HedgeConfig(None, 0.1))
    assert not group.try_spend("b")  # starts empty: hedges never exceed max_extra of reads
    spent = 0
    for _ in range(1000):
        group.deposit()
        spent += group.try_spend("b")
    assert spent == 100
    for _ in range(1000):
        group.deposit()  # a calm spell fills the bucket up to its cap only
    assert sum(group.try_spend("b") for _ in range(100)) == 5
    assert group.stats()["by_endpoint"] == {"b": 105}


def test_hedge_delay_follows_the_sets_p95_with_a_floor() -> None:
    group = ReplicaGroup("g", ["a", "b"], HedgeConfig())
    assert group.delay() == HEDGE_COLD_S
    group.record_latency("a", 5.0)  # a member's first answer (its connection) is no sample
    for _ in range(15):
        group.record_latency("a", 0.001)
    assert group.delay() == HEDGE_COLD_S  # fewer than 16 samples
    for _ in range(100):
        group.record_latency("a", 0.001)
    assert group.delay() == HEDGE_FLOOR_S
    for i in range(400):
        group.record_latency("a", 0.05 if i % 10 else 0.5)  # 10 % slow: the p95 is slow
    assert group.delay() == pytest.approx(0.5)
    assert ReplicaGroup("g", ["a"], HedgeConfig(0.07)).delay() == 0.07


# ----------------------------------------------------------------- no replica set
def test_without_a_replica_set_nothing_new_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    mux = Multiplexer(**FAST)
    fakes = {n: add(mux, n) for n in ("a", "b")}
    mux.put_object(BUCKET, "k", b"v")
    assert sum(f.count("put_object") for f in fakes.values()) == 1
    assert (
        mux.get_object(BUCKET, "k", endpoint=next(n for n in fakes if fakes[n].objects))["Body"]
        == b"v"
    )
    mux.delete_object(BUCKET, "k")
    assert mux._writes is None and mux._hedges is None and mux._ledger_obj is None
    assert mux.replica_groups == {}
    with pytest.raises(ConfigError, match="replica set"):
        mux.repair(BUCKET)
    mux.close()
    assert not (tmp_path / "state").exists()


# ------------------------------------------------------------------------- writes
def test_a_write_goes_to_every_member_and_returns_at_quorum(rig: Any) -> None:
    mux, fakes = rig()
    fakes["c"].delay["put_object"] = 0.3
    result = mux.put_object(BUCKET, "k", b"payload")
    assert set(result["Endpoints"]) == {"a", "b"}  # two acks (of three) are enough
    assert result["Endpoint"] in ("a", "b") and result["Pending"] == ["c"]
    assert result["ETag"] == f'"{hashlib.md5(b"payload").hexdigest()}"'
    assert [e["endpoint"] for e in mux.pending()] == ["c"]  # c still being written
    wait_until(lambda: not mux.pending())  # finished in the background
    assert all(f.objects[BUCKET, "k"].data == b"payload" for f in fakes.values())


def test_a_file_object_body_is_read_once_for_every_member(rig: Any) -> None:
    mux, fakes = rig(write_quorum="all")
    result = mux.put_object(BUCKET, "k", io.BytesIO(b"stream"))
    assert sorted(result["Endpoints"]) == ["a", "b", "c"] and result["Pending"] == []
    assert all(f.objects[BUCKET, "k"].data == b"stream" for f in fakes.values())


def test_a_member_down_is_pending_and_in_the_ledger(rig: Any) -> None:
    mux, fakes = rig()
    fakes["c"].fail = refused
    result = mux.put_object(BUCKET, "k", b"v")
    assert sorted(result["Endpoints"]) == ["a", "b"] and result["Pending"] == ["c"]
    wait_until(lambda: bool(mux.pending()) and mux.pending()[0]["attempts"] == 1)
    (entry,) = mux.pending()
    assert (entry["endpoint"], entry["key"], entry["op"]) == ("c", "k", PUT)
    assert "ConnectionFailed" in entry["last_error"]


def test_short_of_quorum_raises_and_is_recorded(rig: Any) -> None:
    mux, fakes = rig()
    fakes["b"].fail = fakes["c"].fail = refused
    with pytest.raises(NoHealthyEndpoint) as info:
        mux.put_object(BUCKET, "k", b"v")
    assert {name for name, _ in info.value.attempts} == {"b", "c"}
    wait_until(lambda: {e["endpoint"] for e in mux.pending()} == {"b", "c"})
    # a per-call quorum of one succeeds
    result = mux.put_object(BUCKET, "k2", b"v", write_quorum=1)
    assert result["Endpoints"] == ["a"]
    with pytest.raises(NoHealthyEndpoint):
        mux.put_object(BUCKET, "k3", b"v", write_quorum="all")


def test_a_request_every_member_refuses_raises_its_error_and_owes_nothing(rig: Any) -> None:
    mux, fakes = rig()
    for fake in fakes.values():
        fake.fail = lambda m: AccessDenied(code="AccessDenied", status=403, operation=m)
    with pytest.raises(AccessDenied):
        mux.put_object(BUCKET, "k", b"v")
    assert mux.pending() == []
    fakes["c"].fail = refused  # one member down: it may yet take the write, it stays owed
    with pytest.raises(NoHealthyEndpoint):
        mux.put_object(BUCKET, "k2", b"v", write_quorum="all")
    wait_until(lambda: sorted(e["endpoint"] for e in mux.pending()) == ["a", "b", "c"])


def test_upload_file_goes_everywhere_and_the_callback_counts_one_copy(
    rig: Any, tmp_path: Path
) -> None:
    mux, fakes = rig(write_quorum="all")
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    seen: list[int] = []
    result = mux.upload_file(str(path), BUCKET, "f", callback=seen.append)
    assert sorted(result["Endpoints"]) == ["a", "b", "c"]
    assert sum(seen) == 1000
    assert all(f.objects[BUCKET, "f"].data == b"x" * 1000 for f in fakes.values())


def test_delete_goes_everywhere_and_a_miss_is_a_tombstone(rig: Any) -> None:
    mux, fakes = rig()
    mux.put_object(BUCKET, "k", b"v", write_quorum="all")
    fakes["c"].fail = refused
    result = mux.delete_object(BUCKET, "k")
    assert sorted(result["Endpoints"]) == ["a", "b"] and result["Pending"] == ["c"]
    wait_until(lambda: [e["op"] for e in mux.pending()] == [DELETE])
    assert mux.pending()[0]["endpoint"] == "c"
    assert (BUCKET, "k") not in fakes["a"].objects and (BUCKET, "k") in fakes["c"].objects


def test_copy_goes_to_every_member(rig: Any) -> None:
    mux, fakes = rig(write_quorum="all")
    mux.put_object(BUCKET, "src", b"v")
    result = mux.copy_object(BUCKET, "dst", BUCKET, "src")
    assert sorted(result["Endpoints"]) == ["a", "b", "c"]
    assert all(f.count("copy_object") == 1 for f in fakes.values())


def test_close_waits_for_background_writes_up_to_a_bound(rig: Any, tmp_path: Path) -> None:
    mux, fakes = rig(ledger_path=str(tmp_path / "close.sqlite"))
    fakes["c"].delay["put_object"] = 0.3
    mux.put_object(BUCKET, "k1", b"v")
    mux.close(timeout=5)  # waits: c finishes and its row goes
    assert (BUCKET, "k1") in fakes["c"].objects
    assert Ledger(tmp_path / "close.sqlite").entries() == []

    mux2, fakes2 = rig(ledger_path=str(tmp_path / "close2.sqlite"))
    fakes2["c"].delay["put_object"] = 1.0
    mux2.put_object(BUCKET, "k2", b"v")
    mux2.close(timeout=0.05)  # gives up: the row stays for repair
    rows = Ledger(tmp_path / "close2.sqlite").entries()
    assert [(e.endpoint, e.key) for e in rows] == [("c", "k2")]


def test_naming_a_member_reaches_it_alone_and_naming_a_set_reaches_the_set(rig: Any) -> None:
    mux, fakes = rig()
    result = mux.put_object(BUCKET, "only-b", b"v", endpoint="b")
    assert "Pending" not in result and result["Endpoint"] == "b"
    assert [n for n, f in fakes.items() if (BUCKET, "only-b") in f.objects] == ["b"]
    extra = {n: add(mux, n) for n in ("x", "y")}
    mux.add_replica_group("other", ["x", "y"])
    result = mux.put_object(BUCKET, "k", b"v", endpoint="other", write_quorum="all")
    assert sorted(result["Endpoints"]) == ["x", "y"]
    assert not any((BUCKET, "k") in f.objects for f in fakes.values())
    assert mux.get_object(BUCKET, "k", endpoint="other")["Endpoint"] in ("x", "y")
    assert extra["x"].objects and extra["y"].objects


def test_replica_set_membership_rules(rig: Any) -> None:
    mux = Multiplexer(replicas=["a", "b"], **FAST)
    add(mux, "a")
    with pytest.raises(ConfigError, match="b"):
        mux.put_object(BUCKET, "k", b"v")  # b was never added
    add(mux, "b")
    assert mux.put_object(BUCKET, "k", b"v")["Endpoint"] in ("a", "b")
    add(mux, "c")
    with pytest.raises(ConfigError, match="already belong"):
        mux.add_replica_group("g2", ["b", "c"])
    with pytest.raises(ConfigError, match="endpoint's name"):
        mux.add_replica_group("c", ["c"])
    with pytest.raises(ConfigError, match="already exists"):
        mux.add_replica_group("replicas", ["c"])
    mux.remove_endpoint("b", drain_timeout=1)
    assert mux.replica_groups == {"replicas": ("a",)}
    mux.close()


def test_add_replica_group_alone_makes_the_routed_set(tmp_path: Path) -> None:
    mux = Multiplexer(ledger_path=str(tmp_path / "l.sqlite"), **FAST)
    fakes = {n: add(mux, n) for n in ("a", "b")}
    mux.add_replica_group("pair", ["a", "b"])
    result = mux.put_object(BUCKET, "k", b"v", write_quorum="all")
    assert sorted(result["Endpoints"]) == ["a", "b"]
    assert all(f.objects for f in fakes.values())
    mux.close()


# -------------------------------------------------------------------------- reads
def test_a_read_falls_over_to_the_next_member(rig: Any) -> None:
    mux, fakes = rig(strategy="priority")
    mux.put_object(BUCKET, "k", b"v", write_quorum="all")
    fakes["a"].fail = refused
    assert mux.get_object(BUCKET, "k")["Endpoint"] == "b"
    assert mux.head_object(BUCKET, "k")["Endpoint"] == "b"


def test_a_missing_key_falls_over_only_when_asked(rig: Any) -> None:
    mux, fakes = rig(strategy="priority")
    fakes["b"].objects[BUCKET, "k"] = Obj(b"v")
    with pytest.raises(NotFound):
        mux.get_object(BUCKET, "k")
    mux2, fakes2 = rig(strategy="priority", read_fallback_on_missing=True)
    fakes2["b"].objects[BUCKET, "k"] = Obj(b"v")
    assert mux2.get_object(BUCKET, "k")["Endpoint"] == "b"
    with pytest.raises(NotFound):
        mux2.get_object(BUCKET, "nowhere")


def test_presign_all_lists_the_sets_members(rig: Any) -> None:
    mux, _ = rig(names=("a", "b"))
    add(mux, "outsider")
    urls = mux.presign_all(BUCKET, "k")
    assert len(urls) == 2 and not any("outsider" in u for u in urls)


def test_a_slow_first_member_is_hedged(rig: Any) -> None:
    mux, fakes = rig(strategy="priority", hedge={"delay_s": 0.05, "max_extra": 1.0})
    mux.put_object(BUCKET, "k", b"v", write_quorum="all")
    fakes["a"].delay["get_object"] = 0.5
    t0 = time.monotonic()
    result = mux.get_object(BUCKET, "k")
    elapsed = time.monotonic() - t0
    assert result["Endpoint"] == "b" and result["Body"] == b"v"
    assert elapsed < 0.45  # a alone takes 0.5 s
    stats = mux.hedge_stats()["replicas"]
    assert (stats["reads"], stats["hedges"], stats["hedge_wins"]) == (1, 1, 1)
    assert mux.hedges_sent() == {"b": 1}


def test_a_fast_answer_sends_no_hedge(rig: Any) -> None:
    mux, fakes = rig(hedge={"delay_s": 1.0, "max_extra": 1.0})
    mux.put_object(BUCKET, "k", b"v", write_quorum="all")
    for _ in range(10):
        mux.get_object(BUCKET, "k")
    assert mux.hedge_stats()["replicas"]["hedges"] == 0
    assert sum(f.count("get_object") for f in fakes.values()) == 10


def test_hedges_stay_within_the_budget(rig: Any) -> None:
    mux, fakes = rig(strategy="priority", hedge={"delay_s": 0.005, "max_extra": 0.1})
    mux.put_object(BUCKET, "k", b"v", write_quorum="all")
    fakes["a"].delay["get_object"] = 0.03  # every first answer is late
    for _ in range(40):
        mux.get_object(BUCKET, "k")
    stats = mux.hedge_stats()["replicas"]
    assert stats["reads"] == 40 and stats["hedges"] == 4
    assert stats["extra"] == pytest.approx(0.1)


def test_a_hedged_read_falls_over_and_keeps_client_errors(rig: Any) -> None:
    mux, fakes = rig(strategy="priority", hedge={"delay_s": 0.5, "max_extra": 1.0})
    mux.put_object(BUCKET, "k", b"v", write_quorum="all")
    fakes["a"].fail = refused
    t0 = time.monotonic()
    assert mux.get_object(BUCKET, "k")["Endpoint"] == "b"  # at once, not after the delay
    assert time.monotonic() - t0 < 0.45
    with pytest.raises(NotFound):
        mux.get_object(BUCKET, "missing")
    for fake in fakes.values():
        fake.fail = refused
    with pytest.raises(NoHealthyEndpoint):
        mux.get_object(BUCKET, "k")


def test_hedged_reads_retry_in_later_rounds(rig: Any) -> None:
    mux, fakes = rig(strategy="priority", hedge=True, retries=1)
    mux.put_object(BUCKET, "k", b"v", write_quorum="all")
    failures = iter([refused("get_object")] * 3)
    for fake in fakes.values():
        fake.fail = lambda m: next(failures, None) if m == "get_object" else None
    assert mux.get_object(BUCKET, "k")["Body"] == b"v"  # round 2 on a


# ----------------------------------------------------------------------- downloads
@pytest.mark.parametrize("honour_if_match", [True, False])
def test_a_download_never_stitches_two_versions(
    rig: Any, tmp_path: Path, honour_if_match: bool
) -> None:
    mux, fakes = rig(strategy="priority")
    v1, v2 = b"1" * 1000, b"2" * 1000
    fakes["a"].objects[BUCKET, "k"] = Obj(v1, multipart=True)  # no MD5 check to save us
    fakes["b"].objects[BUCKET, "k"] = Obj(v2, multipart=True)
    fakes["b"].honour_if_match = honour_if_match
    fakes["a"].cut_download_after = 400
    out = tmp_path / "out"
    result = mux.download_file(BUCKET, "k", str(out))
    assert out.read_bytes() == v2 and result["Endpoint"] == "b"
    assert result["ETag"] == fakes["b"].objects[BUCKET, "k"].etag


def test_a_download_resumes_on_a_member_holding_the_same_version(rig: Any, tmp_path: Path) -> None:
    mux, fakes = rig(strategy="priority")
    obj = Obj(b"abc" * 400)
    fakes["a"].objects[BUCKET, "k"] = obj
    fakes["b"].objects[BUCKET, "k"] = obj
    fakes["a"].cut_download_after = 500
    out = tmp_path / "out"
    mux.download_file(BUCKET, "k", str(out))
    assert out.read_bytes() == obj.data
    (_, (_key, offset, etag)) = next(c for c in fakes["b"].calls if c[0] == "download_into")
    assert (offset, etag) == (500, obj.etag)  # resumed where a stopped, pinned to its ETag


# ------------------------------------------------------- hedged and ranged downloads
def test_a_slow_download_is_hedged_and_the_loser_leaves_no_file(rig: Any, tmp_path: Path) -> None:
    mux, fakes = rig(strategy="priority", hedge={"delay_s": 0.02, "max_extra": 1.0})
    obj = Obj(b"hedged" * 100)
    for fake in fakes.values():
        fake.objects[BUCKET, "k"] = obj
    fakes["a"].delay["download_into"] = 0.5
    target = tmp_path / "dl"
    target.mkdir()
    counted: list[int] = []
    result = mux.download_file(BUCKET, "k", str(target / "out"), callback=counted.append)
    assert result["Endpoint"] == "b" and (target / "out").read_bytes() == obj.data
    assert sum(counted) == len(obj.data)
    stats = mux.hedge_stats()["replicas"]
    assert (stats["hedges"], stats["hedge_wins"]) == (1, 1)
    wait_until(lambda: fakes["a"].count("download_into") == 1 and os.listdir(target) == ["out"])
    assert sum(counted) == len(obj.data)  # a's leg ended without counting a byte


def test_a_fast_download_sends_no_hedge(rig: Any, tmp_path: Path) -> None:
    mux, fakes = rig(strategy="priority", hedge={"delay_s": 0.5, "max_extra": 1.0})
    for fake in fakes.values():
        fake.objects[BUCKET, "k"] = Obj(b"v" * 10)
    assert mux.download_file(BUCKET, "k", str(tmp_path / "out"))["Endpoint"] == "a"
    assert mux.hedge_stats()["replicas"]["hedges"] == 0
    assert fakes["b"].count("download_into") == 0


def test_a_hedged_download_takes_the_next_member_when_one_fails(rig: Any, tmp_path: Path) -> None:
    mux, fakes = rig(strategy="priority", hedge={"delay_s": 0.5, "max_extra": 0.1})
    for fake in fakes.values():
        fake.objects[BUCKET, "k"] = Obj(b"v" * 10)
    fakes["a"].fail = refused
    assert mux.download_file(BUCKET, "k", str(tmp_path / "out"))["Endpoint"] == "b"
    fakes["b"].objects.clear()
    fakes["c"].objects.clear()
    with pytest.raises(NotFound):  # a failed, then b answered 404: an answer, raised
        mux.download_file(BUCKET, "k", str(tmp_path / "out2"))
    assert not (tmp_path / "out2").exists()


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> int:
    from s3kit import _replica

    monkeypatch.setattr(_replica, "PART_SIZE", 1000)
    return 1000


def ranges(fake: FakeS3) -> list[str]:
    return [c[1][1] for c in fake.calls if c[0] == "get_object" and c[1][1] is not None]


def test_a_large_download_comes_in_ranged_parts_from_every_member(
    rig: Any, tmp_path: Path, small_parts: int
) -> None:
    mux, fakes = rig(strategy="priority")
    obj = Obj(bytes(range(256)) * 20)  # 5120 bytes: six parts of 1000
    for fake in fakes.values():
        fake.objects[BUCKET, "k"] = obj
    counted: list[int] = []
    out = tmp_path / "out"
    result = mux.download_file(BUCKET, "k", str(out), callback=counted.append)
    assert out.read_bytes() == obj.data and sum(counted) == len(obj.data)
    assert result["Endpoints"] == ["a", "b", "c"] and result["ETag"] == obj.etag
    assert all(len(ranges(f)) == 2 for f in fakes.values())
    assert sorted(r for f in fakes.values() for r in ranges(f)) == sorted(
        f"bytes={i}-{min(i + 1000, 5120) - 1}" for i in range(0, 5120, 1000)
    )
    assert os.listdir(tmp_path) == ["out"]


def test_a_failed_range_is_fetched_from_another_member(
    rig: Any, tmp_path: Path, small_parts: int
) -> None:
    mux, fakes = rig(strategy="priority")
    obj = Obj(b"x" * 2500)
    for fake in fakes.values():
        fake.objects[BUCKET, "k"] = obj
    fakes["b"].fail = lambda m: refused(m) if m == "get_object" else None
    result = mux.download_file(BUCKET, "k", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == obj.data
    assert "b" not in result["Endpoints"] and fakes["b"].count("get_object") >= 1


@pytest.mark.parametrize("honour_if_match", [True, False])
def test_a_member_with_another_version_is_never_stitched_in(
    rig: Any, tmp_path: Path, small_parts: int, honour_if_match: bool
) -> None:
    mux, fakes = rig(strategy="priority")
    v1, v2 = Obj(b"1" * 3000, multipart=True), Obj(b"2" * 3000, multipart=True)
    fakes["a"].objects[BUCKET, "k"] = v1
    fakes["b"].objects[BUCKET, "k"] = v2
    fakes["c"].objects[BUCKET, "k"] = v1
    fakes["b"].honour_if_match = honour_if_match
    result = mux.download_file(BUCKET, "k", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == v1.data
    assert result["ETag"] == v1.etag and "b" not in result["Endpoints"]
    assert ranges(fakes["b"])  # b was asked, and its bytes were not used


def test_a_ranged_download_that_cannot_finish_leaves_nothing(
    rig: Any, tmp_path: Path, small_parts: int
) -> None:
    mux, fakes = rig(strategy="priority")
    fakes["a"].objects[BUCKET, "k"] = Obj(b"x" * 2500)
    fakes["a"].fail = lambda m: refused(m) if m == "get_object" else None
    counted: list[int] = []
    with pytest.raises(NoHealthyEndpoint):  # a's ranges fail, b and c lack the key
        mux.download_file(BUCKET, "k", str(tmp_path / "out"), callback=counted.append)
    assert os.listdir(tmp_path) == [] and sum(counted) == 0


# -------------------------------------------------------------------------- repair
def listing(fake: FakeS3) -> dict[str, bytes]:
    return {k: o.data for (b, k), o in fake.objects.items() if b == BUCKET}


def test_repair_replays_the_ledger_and_is_idempotent(rig: Any) -> None:
    mux, fakes = rig()
    fakes["c"].fail = refused
    for i in range(5):
        mux.put_object(BUCKET, f"k{i}", f"v{i}".encode())
    wait_until(lambda: len(mux.pending()) == 5 and all(e["attempts"] for e in mux.pending()))
    dry = mux.repair(BUCKET, dry_run=True)
    assert dry["failed"] >= 1 and listing(fakes["c"]) == {}  # c is still down
    fakes["c"].fail = None
    mux.endpoint("c").breaker.reset()
    actions: list[dict[str, Any]] = []
    dry = mux.repair(BUCKET, dry_run=True, on_action=actions.append)
    assert dry == {"checked": 5, "copied": 5, "failed": 0, "from_ledger": 5, "unreachable": []}
    assert listing(fakes["c"]) == {} and len(mux.pending()) == 5  # nothing changed
    assert {a["action"] for a in actions} == {"copy"} and all(a["dry_run"] for a in actions)
    progress: list[tuple[str, int, int]] = []
    result = mux.repair(BUCKET, progress=lambda *a: progress.append(a))
    assert result == {"checked": 5, "copied": 5, "failed": 0, "from_ledger": 5, "unreachable": []}
    assert listing(fakes["c"]) == listing(fakes["a"]) == listing(fakes["b"])
    assert (
        fakes["c"].objects[BUCKET, "k0"].meta[SOURCE_ETAG] == fakes["a"].objects[BUCKET, "k0"].etag
    )
    assert mux.pending() == []
    assert progress[-1][1] == progress[-1][2]
    assert mux.repair(BUCKET) == {
        "checked": 5,
        "copied": 0,
        "failed": 0,
        "from_ledger": 0,
        "unreachable": [],
    }


def test_repair_never_resurrects_a_deleted_key(rig: Any) -> None:
    mux, fakes = rig()
    mux.put_object(BUCKET, "gone", b"v", write_quorum="all")
    fakes["c"].fail = refused
    mux.delete_object(BUCKET, "gone")
    wait_until(lambda: [e["op"] for e in mux.pending()] == [DELETE])
    fakes["c"].fail = None
    mux.endpoint("c").breaker.reset()
    result = mux.repair(BUCKET)
    assert result["from_ledger"] == 1 and result["copied"] == 0
    assert all((BUCKET, "gone") not in f.objects for f in fakes.values())
    assert mux.pending() == []


def test_a_tombstone_not_yet_replayed_keeps_the_key_out_of_the_comparison(rig: Any) -> None:
    mux, fakes = rig()
    mux.put_object(BUCKET, "gone", b"v", write_quorum="all")
    fakes["c"].fail = refused
    mux.delete_object(BUCKET, "gone")
    wait_until(lambda: bool(mux.pending()) and mux.pending()[0]["attempts"] == 1)
    fakes["c"].fail = lambda m: refused(m) if m == "delete_object" else None
    mux.endpoint("c").breaker.reset()
    result = mux.repair(BUCKET)  # c lists "gone" but cannot delete it yet
    assert result["failed"] == 1 and result["copied"] == 0
    assert (BUCKET, "gone") not in fakes["a"].objects  # not copied back from c


def test_repair_compares_listings_newest_wins(rig: Any) -> None:
    mux, fakes = rig()
    fakes["a"].objects[BUCKET, "only-a"] = Obj(b"a")  # written behind s3kit's back
    for fake in fakes.values():
        fake.objects[BUCKET, "same"] = Obj(b"same")
    fakes["a"].objects[BUCKET, "changed"] = Obj(b"old!")
    fakes["b"].objects[BUCKET, "changed"] = Obj(b"old!")
    fakes["c"].objects[BUCKET, "changed"] = Obj(b"new!")  # same size, newer
    result = mux.repair(BUCKET)
    assert result == {"checked": 3, "copied": 4, "failed": 0, "from_ledger": 0, "unreachable": []}
    for fake in fakes.values():
        assert listing(fake) == {"only-a": b"a", "same": b"same", "changed": b"new!"}
    assert mux.repair(BUCKET)["copied"] == 0
    assert mux.repair(BUCKET, prefix="only")["checked"] == 1


def test_multipart_copies_converge_through_the_source_etag(rig: Any) -> None:
    mux, fakes = rig()
    for fake in fakes.values():
        fake.multipart = True  # every upload gets a multipart-style ETag, unlike the source
    fakes["a"].objects[BUCKET, "big"] = Obj(b"x" * 100)
    fakes["b"].objects[BUCKET, "big"] = Obj(b"x" * 100, multipart=True)  # another part size
    assert mux.repair(BUCKET)["copied"] == 2  # b's ETag cannot be compared: copied once
    assert fakes["c"].objects[BUCKET, "big"].etag.endswith('-2"')
    again = mux.repair(BUCKET)
    assert again["copied"] == 0 and again["checked"] == 1


def test_repair_probes_a_member_whose_breaker_is_open_and_repairs_it(rig: Any) -> None:
    mux, fakes = rig()
    fakes["c"].fail = refused
    for i in range(3):
        mux.put_object(BUCKET, f"k{i}", b"v")
    mux.wait_for_writes()
    mux.endpoint("c").breaker.force_open(300)  # a long outage: open for minutes more
    result = mux.repair(BUCKET)
    assert result["unreachable"] == ["c"] and result["failed"] == 1
    assert fakes["c"].count("list_objects") == 1  # one probe, no per-key attempts
    fakes["c"].fail = None
    result = mux.repair(BUCKET)
    assert result == {
        "checked": 3,
        "copied": 3,
        "failed": 0,
        "from_ledger": 3,
        "unreachable": [],
    }
    assert mux.stats()["c"].state == "closed" and mux.pending() == []


def test_repair_waits_for_a_member_up_to_wait_s(rig: Any) -> None:
    mux, fakes = rig()
    fakes["c"].fail = refused
    mux.put_object(BUCKET, "k", b"v")
    mux.wait_for_writes()
    threading.Timer(0.4, lambda: setattr(fakes["c"], "fail", None)).start()
    result = mux.repair(BUCKET, wait_s=30)
    assert result["unreachable"] == [] and result["copied"] == 1
    assert fakes["c"].count("list_objects") >= 2  # probed again until it answered
    with pytest.raises(InvalidArgument, match="wait_s"):
        mux.repair(BUCKET, wait_s=-1)


def test_repair_of_an_unknown_set_is_a_config_error(rig: Any) -> None:
    mux, _ = rig()
    with pytest.raises(ConfigError, match="unknown replica set"):
        mux.repair(BUCKET, group="nope")
    assert mux.repair(BUCKET, group="replicas")["checked"] == 0


def test_a_write_after_repair_started_keeps_its_row(rig: Any) -> None:
    """The ledger's token: repair resolves only the rows it read."""
    mux, fakes = rig()
    ledger = mux._ledger()
    ledger.record("replicas", ["c"], BUCKET, "k", PUT, "old")
    fakes["a"].objects[BUCKET, "k"] = Obj(b"v")
    entries = ledger.entries()
    ledger.record("replicas", ["c"], BUCKET, "k", PUT, "new")  # a newer write, still owed
    assert not ledger.resolve("replicas", "c", BUCKET, "k", PUT, entries[0].token)
    assert len(ledger.entries()) == 1


# ----------------------------------------------------------------- multipart uploads
def test_repair_aborts_what_a_failed_multipart_upload_left(rig: Any) -> None:
    mux, fakes = rig()
    now = datetime.datetime.now(datetime.timezone.utc)
    fakes["c"].uploads = [
        {"Key": "big", "UploadId": "orphan", "Initiated": now},
        {"Key": "big", "UploadId": "ancient", "Initiated": now - datetime.timedelta(hours=2)},
        {"Key": "other", "UploadId": "someone-else", "Initiated": now},
    ]
    t = now.timestamp()
    mux._ledger().record_upload("c", BUCKET, "big", t - 5, t + 1, refused("upload_file"))
    actions: list[dict[str, Any]] = []
    mux.repair(BUCKET, dry_run=True, on_action=actions.append)
    assert [a["upload_id"] for a in actions if a["action"] == "abort"] == ["orphan"]
    assert len(fakes["c"].uploads) == 3 and len(mux._ledger().failed_uploads()) == 1
    actions.clear()
    result = mux.repair(BUCKET, on_action=actions.append)
    assert result["failed"] == 0
    assert [(a["endpoint"], a["upload_id"]) for a in actions] == [("c", "orphan")]
    assert [u["UploadId"] for u in fakes["c"].uploads] == ["ancient", "someone-else"]
    assert mux._ledger().failed_uploads() == []

    stale = mux.abort_stale_uploads(BUCKET, older_than_s=3600, dry_run=True)
    assert [u["UploadId"] for u in stale["Aborted"]] == ["ancient"] and stale["DryRun"]
    listed = mux.list_multipart_uploads(BUCKET, "oth", endpoint="replicas")
    assert [(u["Endpoint"], u["UploadId"]) for u in listed["Uploads"]] == [("c", "someone-else")]
    done = mux.abort_stale_uploads(BUCKET, older_than_s=3600, endpoint="c")
    assert [u["UploadId"] for u in done["Aborted"]] == ["ancient"]
    assert [u["UploadId"] for u in fakes["c"].uploads] == ["someone-else"]
    with pytest.raises(InvalidArgument, match="older_than_s"):
        mux.abort_stale_uploads(BUCKET, older_than_s=-1)


def test_a_failed_large_upload_is_recorded_and_a_refused_one_is_not(
    rig: Any, tmp_path: Path
) -> None:
    from s3kit import _uploads

    mux, fakes = rig()
    big = tmp_path / "big"
    big.write_bytes(b"x" * _uploads.MULTIPART_THRESHOLD)
    fakes["c"].fail = refused
    with pytest.raises(NoHealthyEndpoint):
        mux.upload_file(str(big), BUCKET, "big", write_quorum="all")
    mux.wait_for_writes()
    (row,) = mux._ledger().failed_uploads()
    assert (row.endpoint, row.key) == ("c", "big") and "ConnectionFailed" in (row.last_error or "")
    fakes["c"].fail = lambda m: AccessDenied(code="AccessDenied", status=403, operation=m)
    mux.endpoint("c").breaker.reset()
    mux.upload_file(str(big), BUCKET, "big2")
    mux.wait_for_writes()
    assert [r.key for r in mux._ledger().failed_uploads()] == ["big"]


def test_cleanup_ages() -> None:
    from s3kit._cli import UsageError, _age

    assert [_age(t) for t in ("90s", "30m", "24h", "7d", "1w", "0", "1.5h")] == [
        90,
        1800,
        86400,
        604800,
        604800,
        0,
        5400,
    ]
    with pytest.raises(UsageError, match="--older-than"):
        _age("soon")


# -------------------------------------------------------------------------- asyncio
def test_async_multiplexer_has_the_replica_verbs(tmp_path: Path) -> None:
    async def main() -> None:
        mux = Multiplexer(ledger_path=str(tmp_path / "l.sqlite"), **FAST)
        fakes = {n: add(mux, n) for n in ("a", "b")}
        async with AsyncMultiplexer(multiplexer=mux) as amux:
            await amux.add_replica_group("pair", ["a", "b"])
            result = await amux.put_object(BUCKET, "k", b"v", write_quorum="all")
            assert sorted(result["Endpoints"]) == ["a", "b"]
            fakes["b"].objects.clear()
            assert await amux.repair(BUCKET) == {
                "checked": 1,
                "copied": 1,
                "failed": 0,
                "from_ledger": 0,
                "unreachable": [],
            }
            assert amux.pending() == [] and "pair" in amux.hedge_stats()

    asyncio.run(main())


def test_precondition_failed_is_a_client_error_for_reads(rig: Any) -> None:
    mux, fakes = rig(strategy="priority", read_fallback_on_missing=True)
    fakes["a"].fail = lambda m: PreconditionFailed(code="PreconditionFailed", status=412)
    with pytest.raises(PreconditionFailed):
        mux.get_object(BUCKET, "k", IfMatch='"x"')


def test_a_stalled_member_cannot_take_every_write_thread(rig: Any) -> None:
    """A member far behind gets at most 2 x max_concurrent legs; the rest are owed to it in the
    ledger at once, and writes keep succeeding on the others."""
    mux, fakes = rig(max_concurrent=2)
    fakes["c"].delay["put_object"] = 1.0
    results = [mux.put_object(BUCKET, f"k{i}", b"v") for i in range(10)]
    assert all(r["Pending"] == ["c"] for r in results)
    saturated = [e for e in mux.pending() if "EndpointSaturated" in (e["last_error"] or "")]
    assert len(saturated) == 6  # 4 legs queued or running on c, the other 6 refused
    assert max(mux._legs_per_endpoint.values()) <= 4
    wait_until(lambda: len(mux.pending()) == 6, timeout=10)
    assert mux._legs_per_endpoint == {"a": 0, "b": 0, "c": 0}
