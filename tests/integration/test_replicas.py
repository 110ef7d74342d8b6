"""Replica sets on real nanio servers (data on disk), some behind a FaultProxy.

Replica fallback, hedged reads against one slowed replica (numbers printed: ``pytest -s``),
quorum writes with a replica killed, then restarted and repaired, the ledger surviving a killed
process, tombstones, mixed-version protection for downloads, and ``s3kit repair``. Time is only
checked against generous bounds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from s3kit import Multiplexer, NotFound
from s3kit._ledger import Ledger
from s3kit.testing import FaultProxy, S3Server, S3ServerPool

BUCKET = "replica-bucket"
ACCESS_KEY = "testing-access"
SECRET_KEY = "testing-secret"
NAMES = ["r0", "r1", "r2"]
MiB = 1024 * 1024

FAST: dict[str, Any] = {
    "connect_timeout": 0.5,
    "read_timeout": 2.0,
    "backoff_base_s": 0.01,
    "backoff_cap_s": 0.1,
    "breaker_open_s": 0.3,
    "breaker_max_open_s": 1.0,
}


def endpoints_for(urls: list[str]) -> dict[str, dict[str, Any]]:
    # distinct priorities: under strategy="priority" r0 is asked first, then r1, then r2
    return {
        name: {"url": url, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "priority": i}
        for i, (name, url) in enumerate(zip(NAMES, urls, strict=True))
    }


def percentile(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, max(0, int(q * len(data) + 0.5) - 1))]


@pytest.fixture(scope="module")
def proxied() -> Iterator[tuple[S3ServerPool, list[FaultProxy]]]:
    """Three nanio servers, each behind its own FaultProxy (left in pass mode by each test)."""
    with S3ServerPool(3, "nanio", buckets=[BUCKET]) as pool:
        proxies = [FaultProxy(server.port, seed=i).start() for i, server in enumerate(pool)]
        try:
            yield pool, proxies
        finally:
            for proxy in proxies:
                proxy.stop()


@pytest.fixture
def fresh_pool() -> Iterator[Callable[[], S3ServerPool]]:
    """Three nanio servers of the test's own (it may kill and restart them)."""
    pools: list[S3ServerPool] = []

    def make() -> S3ServerPool:
        pool = S3ServerPool(3, "nanio", buckets=[BUCKET]).start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.stop()


def proxied_mux(proxies: list[FaultProxy], tmp_path: Path, **options: Any) -> Multiplexer:
    urls = [p.url for p in proxies]
    return Multiplexer(
        endpoints_for(urls),
        replicas=NAMES,
        ledger_path=str(tmp_path / "ledger.sqlite"),
        **{**FAST, **options},
    )


_CLIENTS: dict[str, Any] = {}


def client(server: S3Server) -> Any:
    """A boto3 client per server URL (making one costs a good part of a second)."""
    found = _CLIENTS.get(server.url)
    if found is None:
        found = _CLIENTS[server.url] = server.client()
    return found


def on_every_server(pool: S3ServerPool, key: str) -> list[bytes | None]:
    out: list[bytes | None] = []
    for server in pool:
        try:
            out.append(client(server).get_object(Bucket=BUCKET, Key=key)["Body"].read())
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "NoSuchKey":
                raise
            out.append(None)
    return out


def listing(pool: S3ServerPool, prefix: str) -> list[dict[str, tuple[int, str]]]:
    out = []
    for server in pool:
        page = client(server).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        out.append({o["Key"]: (o["Size"], o["ETag"]) for o in page.get("Contents") or []})
    return out


# ---------------------------------------------------------------------------- reads
@pytest.mark.timeout(90)
def test_replica_fallback(proxied: tuple[S3ServerPool, list[FaultProxy]], tmp_path: Path) -> None:
    pool, proxies = proxied
    key = f"fallback/{uuid.uuid4().hex}"
    for server in pool:
        client(server).put_object(Bucket=BUCKET, Key=key, Body=b"everywhere")
    with proxied_mux(proxies, tmp_path, strategy="priority", retries=0) as mux:
        try:
            proxies[0].set_mode("error", status=503)  # throttled
            assert mux.get_object(BUCKET, key)["Endpoint"] == "r1"
            proxies[0].set_mode("reset")  # endpoint failure
            assert mux.get_object(BUCKET, key)["Body"] == b"everywhere"
            assert mux.head_object(BUCKET, key)["Endpoint"] != "r0"
            proxies[0].set_mode("pass")
            mux.endpoint("r0").breaker.force_open(30)  # open breaker: nothing sent to r0
            before = proxies[0].stats["requests"]
            assert mux.get_object(BUCKET, key)["Endpoint"] == "r1"
            assert proxies[0].stats["requests"] == before
            mux.endpoint("r0").breaker.reset()
            out = tmp_path / "dl"
            proxies[0].set_mode("reset")
            assert mux.download_file(BUCKET, key, str(out))["Endpoint"] == "r1"
            assert out.read_bytes() == b"everywhere"
        finally:
            proxies[0].set_mode("pass")
    only_last = f"fallback/{uuid.uuid4().hex}"
    client(pool[2]).put_object(Bucket=BUCKET, Key=only_last, Body=b"on r2 only")
    with proxied_mux(proxies, tmp_path, strategy="priority", read_fallback_on_missing=True) as mux:
        assert mux.get_object(BUCKET, only_last)["Endpoint"] == "r2"
    with proxied_mux(proxies, tmp_path, strategy="priority") as mux, pytest.raises(NotFound):
        mux.get_object(BUCKET, only_last)  # without the option a 404 is an answer


@pytest.mark.faults  # longer: in make test-faults with the fault matrix
@pytest.mark.timeout(180)
def test_hedged_reads_cut_the_tail(
    proxied: tuple[S3ServerPool, list[FaultProxy]], tmp_path: Path
) -> None:
    """One replica holds 10 % of its responses for 300 ms. Over 200 reads, hedging after the
    set's p95 keeps those out of the p99, for a few percent of extra requests."""
    pool, _ = proxied
    key = f"hedge/{uuid.uuid4().hex}"
    body = os.urandom(8192)
    for server in pool:
        client(server).put_object(Bucket=BUCKET, Key=key, Body=body)
    reads = 200
    numbers: dict[str, dict[str, float]] = {}
    for label, hedge in (("unhedged", None), ("hedged", True)):
        # Proxies of this run's own, seeded: both runs draw the same faults in the same order.
        proxies = [FaultProxy(server.port, seed=7 + i).start() for i, server in enumerate(pool)]
        with contextlib.ExitStack() as stack:
            for proxy in proxies:
                stack.callback(proxy.stop)
            mux = stack.enter_context(proxied_mux(proxies, tmp_path, hedge=hedge))
            for _ in range(30):  # connections and clients made, latency window filled
                mux.get_object(BUCKET, key)
            sent_before = sum(p.stats["requests"] for p in proxies)
            stats_before = mux.hedge_stats()["replicas"]
            proxies[0].set_mode("latency", delay_s=0.3, fraction=0.1)
            latencies = []
            try:
                for _ in range(reads):
                    t0 = time.perf_counter()
                    assert mux.get_object(BUCKET, key)["Body"] == body
                    latencies.append(time.perf_counter() - t0)
            finally:
                proxies[0].set_mode("pass")
            sent = sum(p.stats["requests"] for p in proxies) - sent_before
            stats = mux.hedge_stats()["replicas"]
            hedges = stats["hedges"] - stats_before["hedges"]
            numbers[label] = {
                "p50_ms": percentile(latencies, 0.5) * 1000,
                "p99_ms": percentile(latencies, 0.99) * 1000,
                "max_ms": max(latencies) * 1000,
                "extra_pct": 100.0 * (sent - reads) / reads,
                "hedges": hedges,
                "wins": stats["hedge_wins"] - stats_before["hedge_wins"],
                "delay_ms": (stats["delay_s"] or 0) * 1000,
                "held": proxies[0].stats["faults_injected"]["latency"],
            }
    for label, n in numbers.items():
        print(
            f"\n{label:>9}: p50 {n['p50_ms']:.1f} ms, p99 {n['p99_ms']:.1f} ms, "
            f"max {n['max_ms']:.0f} ms, extra requests {n['extra_pct']:.1f} % "
            f"(hedges {n['hedges']:.0f}, won {n['wins']:.0f}, delay {n['delay_ms']:.0f} ms; "
            f"{n['held']:.0f} responses held 300 ms)"
        )
    ratio = numbers["hedged"]["p99_ms"] / numbers["unhedged"]["p99_ms"]
    print(f"hedged p99 / unhedged p99 = {ratio:.2f}")
    assert numbers["unhedged"]["extra_pct"] == 0
    assert numbers["hedged"]["p99_ms"] < numbers["unhedged"]["p99_ms"]
    assert numbers["hedged"]["extra_pct"] <= 15.0


# --------------------------------------------------------------------------- writes
@pytest.mark.faults  # longer: in make test-faults with the fault matrix
@pytest.mark.timeout(180)
def test_quorum_writes_with_a_replica_down_then_repair(
    fresh_pool: Callable[[], S3ServerPool], tmp_path: Path
) -> None:
    pool = fresh_pool()
    ledger_path = str(tmp_path / "ledger.sqlite")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * MiB))  # a multipart upload
    with Multiplexer(
        endpoints_for(pool.urls), replicas=NAMES, ledger_path=ledger_path, **FAST
    ) as mux:
        pool[2].kill()
        keys = [f"quorum/{i:03d}" for i in range(40)]
        for i, key in enumerate(keys):
            result = mux.put_object(BUCKET, key, os.urandom(1000 + i))
            assert sorted(result["Endpoints"]) == ["r0", "r1"]  # 2 of 3: the default quorum
            assert result["Pending"] == ["r2"]
        result = mux.upload_file(str(big), BUCKET, "quorum/big.bin")
        assert result["Pending"] == ["r2"]
        keys.append("quorum/big.bin")
        pending = mux.pending(BUCKET)
        assert sorted(e["key"] for e in pending) == sorted(keys)
        assert {e["endpoint"] for e in pending} == {"r2"}

        # the outage outlasts the background writes to r2: they end (owed in the ledger)
        # before it comes back, instead of racing its restart and re-opening its breaker
        assert mux.wait_for_writes(timeout=30)
        pool[2].restart()
        assert "r2" in mux.check_health()  # r2 answers again
        # once its open interval (up to breaker_max_open_s) has passed, a health probe closes
        # r2's breaker; repair runs after the recovery
        end = time.monotonic() + 10
        while mux.stats()["r2"].state != "closed" and time.monotonic() < end:
            time.sleep(0.05)
            mux.check_health()
        assert mux.stats()["r2"].state == "closed"
        t0 = time.monotonic()
        result = mux.repair(BUCKET, "quorum/")
        elapsed = time.monotonic() - t0
        print(f"\nrepair after an outage: {result} in {elapsed:.2f} s")
        assert result == {
            "checked": 41,
            "copied": 41,
            "failed": 0,
            "from_ledger": 41,
            "unreachable": [],
        }
        assert mux.pending() == []
        assert mux.repair(BUCKET, "quorum/") == {
            "checked": 41,
            "copied": 0,
            "failed": 0,
            "from_ledger": 0,
            "unreachable": [],
        }
    for key in keys:
        copies = on_every_server(pool, key)
        assert copies[0] is not None and copies[0] == copies[1] == copies[2], key
    assert on_every_server(pool, "quorum/big.bin")[2] == big.read_bytes()
    assert Ledger(ledger_path).entries() == []


SLOW_BREAKER = {**FAST, "breaker_open_s": 30.0, "breaker_max_open_s": 60.0}


@pytest.mark.faults  # longer: in make test-faults with the fault matrix
@pytest.mark.timeout(120)
def test_repair_skips_a_member_still_down_then_repairs_it_while_its_breaker_is_open(
    fresh_pool: Callable[[], S3ServerPool], tmp_path: Path
) -> None:
    """While r2 is down, repair skips it: one failure naming it, not one per key, and its
    ledger rows stay. Once r2 is back, its breaker stays open for 30 s more: repair probes it,
    the answer closes the breaker, and everything is copied now."""
    pool = fresh_pool()
    with Multiplexer(
        endpoints_for(pool.urls),
        replicas=NAMES,
        ledger_path=str(tmp_path / "ledger.sqlite"),
        **SLOW_BREAKER,
    ) as mux:
        pool[2].kill()
        keys = [f"open/{i:02d}" for i in range(8)]
        for key in keys:
            assert mux.put_object(BUCKET, key, key.encode() * 100)["Pending"] == ["r2"]
        assert mux.wait_for_writes(timeout=30)
        assert mux.stats()["r2"].state == "open"

        actions: list[dict[str, Any]] = []
        result = mux.repair(BUCKET, "open/", on_action=actions.append)
        print(f"\nrepair with r2 down: {result}")
        assert result["unreachable"] == ["r2"] and result["failed"] == 1
        assert result["copied"] == 0 and result["from_ledger"] == 0
        (probe,) = [a for a in actions if not a["ok"]]
        assert (probe["action"], probe["endpoint"], probe["owed"]) == ("probe", "r2", 8)
        assert "ConnectionFailed" in probe["error"] or "Timeout" in probe["error"]
        assert len(mux.pending(BUCKET)) == 8

        pool[2].restart()
        assert mux.stats()["r2"].state == "open"  # for 30 s more
        result = mux.repair(BUCKET, "open/")
        print(f"repair with r2 back, its breaker still open: {result}")
        assert result == {
            "checked": 8,
            "copied": 8,
            "failed": 0,
            "from_ledger": 8,
            "unreachable": [],
        }
        assert mux.stats()["r2"].state == "closed"
        assert mux.pending() == []
    for key in keys:
        assert on_every_server(pool, key) == [key.encode() * 100] * 3, key


CRASHING_WRITER = textwrap.dedent(
    """
    import json, sys, time
    from s3kit import Multiplexer
    cfg = json.loads(sys.argv[1])
    mux = Multiplexer(
        cfg["endpoints"], replicas=cfg["names"], ledger_path=cfg["ledger"], **cfg["options"]
    )
    for i in range(cfg["n"]):
        result = mux.put_object(cfg["bucket"], f"crash/{i:03d}", (b"%d" % i) * 500)
        assert result["Pending"] == ["r2"], result
    print("written", flush=True)
    time.sleep(120)  # killed here, never closed
    """
)


@pytest.mark.faults  # longer: in make test-faults with the fault matrix
@pytest.mark.timeout(180)
def test_the_ledger_survives_a_killed_process(
    fresh_pool: Callable[[], S3ServerPool], tmp_path: Path
) -> None:
    pool = fresh_pool()
    ledger_path = str(tmp_path / "ledger.sqlite")
    pool[2].kill()
    cfg = {
        "endpoints": endpoints_for(pool.urls),
        "names": NAMES,
        "ledger": ledger_path,
        "options": FAST,
        "bucket": BUCKET,
        "n": 20,
    }
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WRITER, json.dumps(cfg)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "written"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    pool[2].restart()
    with Multiplexer(
        endpoints_for(pool.urls), replicas=NAMES, ledger_path=ledger_path, **FAST
    ) as mux:
        pending = mux.pending(BUCKET, "crash/")
        assert len(pending) == 20 and {e["endpoint"] for e in pending} == {"r2"}
        assert all(e["attempts"] >= 1 for e in pending)  # the failed leg was noted
        result = mux.repair(BUCKET, "crash/")
        print(f"\nrepair after a killed writer: {result}")
        assert result["from_ledger"] == 20 and result["copied"] == 20 and result["failed"] == 0
        assert mux.pending() == []
    first, second, third = listing(pool, "crash/")
    assert len(first) == 20 and first == second == third


@pytest.mark.faults  # longer: in make test-faults with the fault matrix
@pytest.mark.timeout(120)
def test_a_delete_while_a_replica_is_down_is_not_resurrected(
    fresh_pool: Callable[[], S3ServerPool], tmp_path: Path
) -> None:
    pool = fresh_pool()
    with Multiplexer(
        endpoints_for(pool.urls),
        replicas=NAMES,
        ledger_path=str(tmp_path / "ledger.sqlite"),
        **FAST,
    ) as mux:
        mux.put_object(BUCKET, "tomb/gone", b"short-lived", write_quorum="all")
        mux.put_object(BUCKET, "tomb/kept", b"kept", write_quorum="all")
        pool[2].kill()
        result = mux.delete_object(BUCKET, "tomb/gone")
        assert result["Pending"] == ["r2"]
        (entry,) = mux.pending(BUCKET)
        assert (entry["endpoint"], entry["key"], entry["op"]) == ("r2", "tomb/gone", "delete")
        pool[2].restart()
        assert on_every_server(pool, "tomb/gone") == [None, None, b"short-lived"]
        mux.check_health()
        dry = mux.repair(BUCKET, "tomb/", dry_run=True)
        assert dry["from_ledger"] == 1 and dry["copied"] == 0
        assert on_every_server(pool, "tomb/gone")[2] == b"short-lived"  # dry run: unchanged
        result = mux.repair(BUCKET, "tomb/")
        print(f"\nrepair with a tombstone: {result}")
        assert result == {
            "checked": 1,
            "copied": 0,
            "failed": 0,
            "from_ledger": 1,
            "unreachable": [],
        }
        assert mux.pending() == []
    assert on_every_server(pool, "tomb/gone") == [None, None, None]
    assert on_every_server(pool, "tomb/kept") == [b"kept"] * 3


# ------------------------------------------------------------------------ downloads
def _multipart_put(client: Any, key: str, data: bytes) -> str:
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    client.upload_fileobj(io.BytesIO(data), BUCKET, key, Config=config)
    etag: str = client.head_object(Bucket=BUCKET, Key=key)["ETag"]
    assert etag.endswith('-2"')  # multipart: the download's MD5 check cannot catch stitching
    return etag


@pytest.mark.timeout(120)
def test_a_download_never_mixes_two_replicas_versions(
    proxied: tuple[S3ServerPool, list[FaultProxy]], tmp_path: Path
) -> None:
    """r1 holds another version (overwritten behind s3kit's back, same size). A download cut
    mid-way on r0 continues on r1: the result is one whole version, never r0's head and r1's
    tail (nanio ignores If-Match, so the ETag is compared before resuming). 7 MiB: below the
    part size, so one stream (larger objects: the ranged tests below)."""
    pool, proxies = proxied
    key = f"mixed/{uuid.uuid4().hex}"
    v1, v2 = os.urandom(7 * MiB), os.urandom(7 * MiB)
    _multipart_put(client(pool[0]), key, v1)
    _multipart_put(client(pool[1]), key, v2)
    out = tmp_path / "out.bin"
    with proxied_mux(proxies, tmp_path, strategy="priority") as mux:
        proxies[0].set_mode("truncate", after_bytes=3 * MiB, count=1)
        try:
            result = mux.download_file(BUCKET, key, str(out))
        finally:
            proxies[0].set_mode("pass")
    data = out.read_bytes()
    assert data in (v1, v2)
    assert data == v2 and result["Endpoint"] == "r1"
    assert hashlib.md5(data).digest() == hashlib.md5(v2).digest()

    # Same version on r1: the download resumes there, pinned with Range and If-Match.
    _multipart_put(client(pool[1]), key, v1)
    with proxied_mux(proxies, tmp_path, strategy="priority") as mux:
        proxies[0].set_mode("truncate", after_bytes=3 * MiB, count=1)
        try:
            mux.download_file(BUCKET, key, str(out))
        finally:
            proxies[0].set_mode("pass")
    assert out.read_bytes() == v1
    gets = [
        r["headers"]
        for r in proxies[1].stats["recent_requests"]
        if r["method"] == "GET" and key in r["target"]
    ]
    assert gets and gets[-1].get("range", "").startswith("bytes=")
    assert "if-match" in gets[-1]


def ranged_gets(proxy: FaultProxy, key: str) -> list[dict[str, str]]:
    return [
        r["headers"]
        for r in proxy.stats["recent_requests"]
        if r["method"] == "GET" and key in r["target"] and "range" in r["headers"]
    ]


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.timeout(120)
def test_a_hedged_download_races_a_slow_replica(
    proxied: tuple[S3ServerPool, list[FaultProxy]], tmp_path: Path
) -> None:
    """r0 holds its answer for 2.5 s: after the hedge delay the download starts on r1 too, r1's
    complete copy wins, and r0's leg stops at its first chunk and removes its file."""
    pool, proxies = proxied
    key = f"hedge-dl/{uuid.uuid4().hex}"
    body = os.urandom(2 * MiB)
    for server in pool:
        client(server).put_object(Bucket=BUCKET, Key=key, Body=body)
    target = tmp_path / "dl"
    target.mkdir()
    out = target / "out.bin"
    counted: list[int] = []
    hedge = {"delay_s": 0.05, "max_extra": 1.0}
    with proxied_mux(proxies, tmp_path, strategy="priority", hedge=hedge) as mux:
        # Each member's client made and a connection open first: r0's leg sends its request at
        # once. (Without this, a loaded CI machine once started r0's leg so late that r1 had
        # already won, and r0's request then missed the held answer it was meant to get.)
        for name in NAMES:
            mux.head_object(BUCKET, key, endpoint=name)
        proxies[0].set_mode("latency", delay_s=2.5, count=1)  # back to "pass" after one
        try:
            result = mux.download_file(BUCKET, key, str(out), callback=counted.append)
            stats = mux.hedge_stats()["replicas"]
            assert result["Endpoint"] == "r1" and result["Path"] == str(out), (result, stats)
            assert out.read_bytes() == body and sum(counted) == len(body)
            hedged = (stats["hedges"], stats["hedge_wins"], stats["by_endpoint"])
            assert hedged == (1, 1, {"r1": 1}), stats
            # r0's answer was the held one; after 2.5 s its leg gives up at its first chunk and
            # removes its file
            wait_until(lambda: proxies[0].stats["faults_injected"]["latency"] == 1)
            wait_until(lambda: os.listdir(target) == ["out.bin"])
        finally:
            proxies[0].set_mode("pass")
    assert sum(counted) == len(body)  # the loser's bytes were never counted


@pytest.mark.timeout(120)
def test_a_large_download_is_spread_over_the_replicas(
    proxied: tuple[S3ServerPool, list[FaultProxy]], tmp_path: Path
) -> None:
    """20 MiB: three ranged parts, one per replica, each pinned with If-Match; a part whose
    connection is reset on r1 is fetched again from another replica."""
    pool, proxies = proxied
    key = f"ranged/{uuid.uuid4().hex}"
    data = os.urandom(20 * MiB + 123)
    for server in pool:
        client(server).put_object(Bucket=BUCKET, Key=key, Body=data)
    etag = client(pool[0]).head_object(Bucket=BUCKET, Key=key)["ETag"]
    out = tmp_path / "big.bin"
    counted: list[int] = []
    with proxied_mux(proxies, tmp_path, strategy="priority") as mux:
        result = mux.download_file(BUCKET, key, str(out), callback=counted.append)
        assert out.read_bytes() == data and sum(counted) == len(data)
        assert result["ETag"] == etag and result["ContentLength"] == len(data)
        assert sorted(result["Endpoints"]) == ["r0", "r1", "r2"]
        for proxy in proxies:
            (headers,) = ranged_gets(proxy, key)
            assert headers["if-match"] == etag

        out.unlink()
        proxies[1].set_mode("reset", after_bytes=1000, count=1)
        try:
            result = mux.download_file(BUCKET, key, str(out))
        finally:
            proxies[1].set_mode("pass")
        assert proxies[1].stats["faults_injected"]["reset"] == 1
        assert out.read_bytes() == data
        assert "r1" not in result["Endpoints"]

        # fsync=False (a scratch copy): the same parts, never fsynced
        synced: list[int] = []
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "fsync", synced.append)
            scratch = tmp_path / "scratch.bin"
            result = mux.download_file(BUCKET, key, str(scratch), fsync=False)
        assert synced == [] and scratch.read_bytes() == data
        assert sorted(result["Endpoints"]) == ["r0", "r1", "r2"]
        scratch.unlink()
    assert os.listdir(tmp_path) == ["big.bin"]  # no temp file left behind


@pytest.mark.timeout(120)
def test_a_replica_holding_an_older_version_is_never_stitched_in(
    proxied: tuple[S3ServerPool, list[FaultProxy]], tmp_path: Path
) -> None:
    """r1 holds another version of the same size (multipart: the MD5 cannot catch a mix).
    Its part answers with another ETag (nanio ignores If-Match): r1 is dropped for this
    download and its part comes from a replica holding the pinned version."""
    pool, proxies = proxied
    key = f"ranged-mixed/{uuid.uuid4().hex}"
    v1, v2 = os.urandom(9 * MiB), os.urandom(9 * MiB)
    for server in (pool[0], pool[2]):
        _multipart_put(client(server), key, v1)
    _multipart_put(client(pool[1]), key, v2)
    out = tmp_path / "out.bin"
    with proxied_mux(proxies, tmp_path, strategy="priority") as mux:
        result = mux.download_file(BUCKET, key, str(out))
    assert out.read_bytes() == v1
    assert result["Endpoint"] == "r0" and "r1" not in result["Endpoints"]
    assert ranged_gets(proxies[1], key), "r1 was asked for a part"


# ------------------------------------------------------------------ multipart uploads
@pytest.mark.timeout(180)
@pytest.mark.boto3_only("obstore reports upload progress only at the end: r0 cannot be cut mid-way")
def test_an_upload_cut_mid_multipart_fails_over_and_its_parts_are_aborted_later(
    proxied: tuple[S3ServerPool, list[FaultProxy]], tmp_path: Path
) -> None:
    """r0 stops answering once the first part is on its way: the multipart upload fails
    there (its abort too), the whole object is uploaded to r1, and the upload r0 still holds
    is aborted once r0 answers again (recorded in the ledger, so whatever its age)."""
    pool, proxies = proxied
    key = f"mpu/{uuid.uuid4().hex}"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * MiB))
    urls = [p.url for p in proxies]
    cut: list[int] = []

    def cut_r0(n: int) -> None:
        if not cut:
            cut.append(n)
            proxies[0].set_mode("refuse")

    with Multiplexer(
        endpoints_for(urls),
        strategy="priority",
        ledger_path=str(tmp_path / "ledger.sqlite"),
        **FAST,
    ) as mux:
        try:
            result = mux.upload_file(str(big), BUCKET, key, callback=cut_r0)
        finally:
            proxies[0].set_mode("pass")
        assert result["Endpoint"] == "r1"
        assert client(pool[1]).get_object(Bucket=BUCKET, Key=key)["Body"].read() == (
            big.read_bytes()
        )
        (row,) = [r for r in mux._ledger().failed_uploads(BUCKET) if r.key == key]
        assert row.endpoint == "r0"
        orphans = [u for u in mux.list_multipart_uploads(BUCKET, key)["Uploads"]]
        assert [u["Endpoint"] for u in orphans] == ["r0"], orphans
        mux.endpoint("r0").breaker.reset()

        plan = mux.abort_stale_uploads(BUCKET, key, dry_run=True)
        assert [u["UploadId"] for u in plan["Aborted"]] == [orphans[0]["UploadId"]]
        assert mux.list_multipart_uploads(BUCKET, key)["Uploads"] == orphans  # unchanged
        done = mux.abort_stale_uploads(BUCKET, key)  # younger than a day: from the ledger
        assert [u["UploadId"] for u in done["Aborted"]] == [orphans[0]["UploadId"]]
        assert done["Failed"] == {}
        assert mux.list_multipart_uploads(BUCKET, key)["Uploads"] == []
        assert [r for r in mux._ledger().failed_uploads(BUCKET) if r.key == key] == []


@pytest.mark.timeout(120)
def test_s3kit_cleanup_command(
    proxied: tuple[S3ServerPool, list[FaultProxy]], tmp_path: Path
) -> None:
    pool, _ = proxied
    prefix = f"cleanup-{uuid.uuid4().hex}/"
    old = client(pool[0]).create_multipart_upload(Bucket=BUCKET, Key=f"{prefix}old")
    fresh = client(pool[1]).create_multipart_upload(Bucket=BUCKET, Key=f"{prefix}new")
    config = tmp_path / "s3kit.toml"
    lines = [
        "[defaults]",
        f'access_key = "{ACCESS_KEY}"',
        f'secret_key = "{SECRET_KEY}"',
        "connect_timeout = 1",
        "[multiplexer]",
        f'ledger_path = "{tmp_path / "ledger.sqlite"}"',
    ]
    for name, url in zip(NAMES, pool.urls, strict=True):
        lines += [f"[endpoints.{name}]", f'url = "{url}"']
    config.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "S3KIT_CONFIG"}
    env["AWS_EC2_METADATA_DISABLED"] = "true"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "s3kit", "--config", str(config), "cleanup", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    listed = run(f"s3://{BUCKET}/{prefix}", "--older-than", "0s", "--dry-run", "--json")
    assert listed.returncode == 0, listed.stderr
    plan = json.loads(listed.stdout)
    assert plan["DryRun"] and plan["Failed"] == {}
    assert {(u["Endpoint"], u["Key"]) for u in plan["Aborted"]} == {
        ("r0", f"{prefix}old"),
        ("r1", f"{prefix}new"),
    }
    one = run(f"r0:{BUCKET}/{prefix}", "--older-than", "0")
    assert one.returncode == 0, one.stderr
    assert f"aborted: r0:{BUCKET}/{prefix}old upload {old['UploadId']}" in one.stdout
    assert "aborted 1 multipart upload(s)" in one.stdout
    uploads = {
        u["UploadId"]
        for server in pool
        for u in client(server).list_multipart_uploads(Bucket=BUCKET).get("Uploads") or []
        if u["Key"].startswith(prefix)
    }
    assert uploads == {fresh["UploadId"]}
    client(pool[1]).abort_multipart_upload(
        Bucket=BUCKET, Key=f"{prefix}new", UploadId=fresh["UploadId"]
    )


# ------------------------------------------------------------------------------ CLI
@pytest.mark.timeout(120)
def test_s3kit_repair_command(fresh_pool: Callable[[], S3ServerPool], tmp_path: Path) -> None:
    pool = fresh_pool()
    client(pool[0]).put_object(Bucket=BUCKET, Key="cli/a", Body=b"only on r0")
    client(pool[1]).put_object(Bucket=BUCKET, Key="cli/b", Body=b"only on r1")
    config = tmp_path / "s3kit.toml"
    lines = [
        "[defaults]",
        f'access_key = "{ACCESS_KEY}"',
        f'secret_key = "{SECRET_KEY}"',
        "connect_timeout = 1",
        "[multiplexer]",
        'replicas = ["r0", "r1", "r2"]',
        "write_quorum = 2",
        "hedge = { max_extra = 0.05 }",
        f'ledger_path = "{tmp_path / "ledger.sqlite"}"',
    ]
    for name, url in zip(NAMES, pool.urls, strict=True):
        lines += [f"[endpoints.{name}]", f'url = "{url}"']
    config.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "S3KIT_CONFIG"}
    env["AWS_EC2_METADATA_DISABLED"] = "true"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "s3kit", "--config", str(config), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    dry = run("repair", f"{BUCKET}/cli/", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["copied"] == 4 and planned["checked"] == 2 and planned["dry_run"]
    assert {(a["key"], a["endpoint"]) for a in planned["actions"]} == {
        ("cli/a", "r1"),
        ("cli/a", "r2"),
        ("cli/b", "r0"),
        ("cli/b", "r2"),
    }
    assert listing(pool, "cli/")[2] == {}
    done = run("repair", f"s3://{BUCKET}/cli/")
    assert done.returncode == 0, done.stderr
    assert "copy: s3://replica-bucket/cli/a r0 -> r1" in done.stdout
    assert "checked 2, copied 4" in done.stdout
    first, second, third = listing(pool, "cli/")
    assert len(first) == 2 and first == second == third
    again = run("repair", BUCKET, "--json")
    assert json.loads(again.stdout)["copied"] == 0
    bad = run("repair", BUCKET, "--group", "nope")
    assert bad.returncode == 2 and "unknown replica set" in bad.stderr
