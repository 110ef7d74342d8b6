"""The Multiplexer against real S3 servers (moto processes on 127.0.0.1).

Routing distribution, failover when a server is killed or stalled, replication byte-identity,
background health checks, counters under 32 threads and presigned alternates. Tests that only
read and write share one module-scoped pool of 4 servers; a test that kills, pauses or restarts
a server gets its own pool (``fresh_pool``), stopped in teardown even when the test fails.
Measured numbers are printed (``pytest -s``); time is only checked against generous bounds.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from s3kit import (
    BreakerStateChanged,
    ConfigError,
    EndpointError,
    Event,
    FailedOver,
    Multiplexer,
    NoHealthyEndpoint,
)
from s3kit.testing import S3ServerPool

BUCKET = "mux-bucket"
ACCESS_KEY = "testing-access"
SECRET_KEY = "testing-secret"

# Sub-second policies: a dead or stalled endpoint must cost milliseconds to ~1 s, not minutes.
FAST: dict[str, Any] = {
    "connect_timeout": 0.5,
    "read_timeout": 1.0,
    "backoff_base_s": 0.01,
    "backoff_cap_s": 0.2,
    "breaker_open_s": 0.5,
    "breaker_max_open_s": 1.0,
}

PoolFactory = Callable[[int], S3ServerPool]


def names_of(pool: S3ServerPool) -> list[str]:
    return [f"s{i}" for i in range(len(pool))]


def make_mux(pool: S3ServerPool, **options: Any) -> Multiplexer:
    endpoints = {
        f"s{i}": {"url": server.url, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
        for i, server in enumerate(pool)
    }
    return Multiplexer(endpoints, **{**FAST, **options})


def seed(pool: S3ServerPool, key: str, body: bytes) -> None:
    """Put the same object on every server directly (no s3kit involved)."""
    for server in pool:
        if server.running:
            server.client().put_object(Bucket=BUCKET, Key=key, Body=body)


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Poll until ``predicate()``; return the seconds it took. Fails after ``timeout``."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(step)
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def pool4() -> Iterator[S3ServerPool]:
    """Four moto servers with ``mux-bucket``, shared by tests that leave them healthy."""
    pool = S3ServerPool(4, buckets=[BUCKET], access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    try:
        yield pool.start()
    finally:
        pool.stop()


@pytest.fixture
def fresh_pool() -> Iterator[PoolFactory]:
    """``fresh_pool(n)``: a pool of the test's own, to kill or pause; always stopped."""
    pools: list[S3ServerPool] = []

    def factory(n: int) -> S3ServerPool:
        pool = S3ServerPool(n, buckets=[BUCKET], access_key=ACCESS_KEY, secret_key=SECRET_KEY)
        pools.append(pool)
        return pool.start()

    try:
        yield factory
    finally:
        for pool in pools:
            pool.stop()
        for pool in pools:
            assert all(not s.running for s in pool), "a server process was left running"


# ------------------------------------------------------------------ distribution
@pytest.mark.timeout(120)
def test_round_robin_distributes_10_puts_3_3_2_2(pool4: S3ServerPool) -> None:
    with make_mux(pool4) as mux:
        results = [
            mux.put_object(BUCKET, f"dist/{uuid.uuid4().hex}", f"body {i}".encode())
            for i in range(10)
        ]
    counts = Counter(r["Endpoint"] for r in results)
    print(f"\nround-robin, 10 puts over 4: {dict(counts)}")
    assert [counts[n] for n in names_of(pool4)] == [3, 3, 2, 2]
    assert [r["Endpoint"] for r in results[:4]] == names_of(pool4)
    # each object is on the server its result names, and only there
    held = {
        name: {
            o["Key"]
            for o in server.client()
            .list_objects_v2(Bucket=BUCKET, Prefix="dist/")
            .get("Contents", [])
        }
        for name, server in zip(names_of(pool4), pool4, strict=True)
    }
    for r in results:
        assert [name for name, keys in held.items() if r["Key"] in keys] == [r["Endpoint"]]
        assert r["ETag"]


@pytest.mark.timeout(120)
def test_least_loaded_and_key_hash_on_real_servers(pool4: S3ServerPool) -> None:
    with make_mux(pool4, strategy="least-loaded") as mux:
        served = Counter(mux.list_objects(BUCKET, prefix="none/")["Endpoint"] for _ in range(20))
        print(f"\nleast-loaded, 20 sequential lists: {dict(served)}")
        assert served == {n: 5 for n in names_of(pool4)}
    with make_mux(pool4, strategy="key-hash") as mux:
        for i in range(8):
            key = f"kh/{i}"
            put = mux.put_object(BUCKET, key, b"x" * i)
            # the key's owner serves it back, every time
            for _ in range(3):
                got = mux.get_object(BUCKET, key)
                assert got["Endpoint"] == put["Endpoint"]
                assert got["Body"] == b"x" * i
        # each endpoint holds part of the keys: a listing merges them all
        listing = mux.list_objects(BUCKET, prefix="kh/")
        assert [o["Key"] for o in listing["Contents"]] == [f"kh/{i}" for i in range(8)]
        assert listing["KeyCount"] == 8


@pytest.mark.timeout(120)
def test_check_health_returns_every_answering_endpoint(pool4: S3ServerPool) -> None:
    with make_mux(pool4) as mux:
        assert mux.check_health() == names_of(pool4)
        assert mux.check_health(bucket=BUCKET) == names_of(pool4)
        assert mux.healthy() == names_of(pool4)
        assert set(mux.stats()) == set(names_of(pool4))
        with pytest.raises(ConfigError, match="s0"):
            mux.get_object(BUCKET, "k", endpoint="nope")


# -------------------------------------------------------------------- failover
@pytest.mark.timeout(120)
def test_kill_one_of_three_routed_reads_never_fail(fresh_pool: PoolFactory) -> None:
    pool = fresh_pool(3)
    body = os.urandom(4096)
    seed(pool, "shared", body)
    # breaker_open_s long enough that no probe re-tries the dead server during the run
    with make_mux(pool, circuit_breaker_threshold=3, retries=3, breaker_open_s=60) as mux:
        events: list[tuple[float, Event]] = []
        mux.on_event(lambda e: events.append((time.monotonic(), e)))
        for _ in range(3):  # warm every connection pool
            assert mux.get_object(BUCKET, "shared")["Body"] == body

        pool[1].kill()
        t_kill = time.monotonic()
        failures: list[BaseException] = []
        served: Counter[str] = Counter()
        for _ in range(60):
            try:
                result = mux.get_object(BUCKET, "shared")
            except Exception as exc:  # counted, asserted below
                failures.append(exc)
            else:
                assert result["Body"] == body
                served[result["Endpoint"]] += 1
        elapsed = time.monotonic() - t_kill

        dead = mux.endpoint("s1").stats()
        opened = [
            t
            for t, e in events
            if isinstance(e, BreakerStateChanged) and e.endpoint == "s1" and e.new == "open"
        ]
        failed_over = [e for _, e in events if isinstance(e, FailedOver)]
        print(
            f"\nkill 1 of 3: {len(failures)} failed calls of 60 in {elapsed:.2f}s; "
            f"served {dict(served)}; failed attempts on the dead endpoint: "
            f"{dead.endpoint_failures}; breaker opened "
            f"{(opened[0] - t_kill) * 1000:.1f} ms after the kill; "
            f"rejected_open={dead.rejected_open}"
        )
        assert failures == []
        assert served["s1"] == 0
        assert dead.state == "open"
        assert mux.endpoint("s0").stats().state == "closed"
        assert mux.endpoint("s2").stats().state == "closed"
        assert len(opened) == 1
        assert dead.endpoint_failures == 3  # one attempt per leg, threshold legs
        assert dead.retries == 0
        assert dead.failovers_away == 3 == len(failed_over)
        assert dead.successes == 1  # the warm-up call it served
        assert mux.healthy() == ["s0", "s2"]
        ranked = [ep.name for ep in mux.ranked()]
        assert ranked[-1] == "s1"


@pytest.mark.faults  # longer: in make test-faults with the fault matrix
@pytest.mark.timeout(120)
def test_stall_one_of_three_costs_at_most_one_read_timeout(fresh_pool: PoolFactory) -> None:
    pool = fresh_pool(3)
    body = b"stall test body"
    seed(pool, "shared", body)
    with make_mux(pool, circuit_breaker_threshold=2, retries=3) as mux:
        for _ in range(3):
            mux.get_object(BUCKET, "shared")
        stalled = mux.endpoint("s0")

        pool[0].pause()
        durations: list[float] = []
        for _ in range(20):
            t0 = time.monotonic()
            result = mux.get_object(BUCKET, "shared")
            durations.append(time.monotonic() - t0)
            assert result["Body"] == body
            assert result["Endpoint"] != "s0"
            time.sleep(0.05)  # spread the calls past the open interval: probes happen too
        st = stalled.stats()
        slow = sum(1 for d in durations if d > 0.5)
        print(
            f"\nstall 1 of 3 (read_timeout=1): 20/20 calls ok, max call {max(durations):.2f}s, "
            f"{slow} calls paid the timeout, total {sum(durations):.2f}s; stalled endpoint: "
            f"{st.endpoint_failures} failed attempts, state {st.state}, "
            f"probes {stalled.breaker.probes}"
        )
        assert max(durations) < 8.0  # ~1 read_timeout plus the failover, never (retries+1)x
        assert st.endpoint_failures >= 2
        assert st.retries == 0
        assert st.successes == 1

        pool[0].resume()
        time.sleep(stalled.breaker.retry_after() + 0.1)
        assert stalled.breaker.state == "half_open"
        t0 = time.monotonic()
        served = []
        for _ in range(6):
            served.append(mux.get_object(BUCKET, "shared")["Endpoint"])
            if stalled.breaker.state == "closed":
                break
        print(
            f"resumed: breaker closed after {len(served)} calls "
            f"({time.monotonic() - t0:.2f}s), served {served}"
        )
        assert stalled.breaker.state == "closed"
        assert served[-1] == "s0"  # the probe itself was served by the recovered endpoint
        assert stalled.limiter.in_flight == 0


# ------------------------------------------------------------------- replication
@pytest.mark.timeout(120)
@pytest.mark.parametrize("size", [100_000, 9 * 1024 * 1024], ids=["single", "multipart"])
def test_replicate_writes_byte_identical_copies(
    pool4: S3ServerPool, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    key = f"replica/{size}/{uuid.uuid4().hex}"
    with make_mux(pool4) as mux:
        t0 = time.monotonic()
        results = mux.replicate(str(path), BUCKET, key)
        elapsed = time.monotonic() - t0
    print(f"\nreplicate {size} bytes to 4 servers: {elapsed:.2f}s")
    assert set(results) == set(names_of(pool4))
    for name, server in zip(names_of(pool4), pool4, strict=True):
        assert results[name]["success"] is True, results[name]
        assert results[name]["result"]["Endpoint"] == name
        assert results[name]["result"]["Key"] == key
        got = server.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert len(got) == size
        assert got == data


@pytest.mark.faults  # longer: in make test-faults with the fault matrix
@pytest.mark.timeout(120)
def test_replicate_min_success_with_one_server_killed(
    fresh_pool: PoolFactory, tmp_path: Path
) -> None:
    pool = fresh_pool(4)
    data = os.urandom(50_000)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    with make_mux(pool) as mux:
        pool[2].kill()
        with pytest.raises(NoHealthyEndpoint) as err:
            mux.replicate(str(path), BUCKET, "k1", min_success=4)
        assert [name for name, _ in err.value.attempts] == ["s2"]
        assert isinstance(err.value.attempts[0][1], EndpointError)
        assert err.value.__cause__ is err.value.attempts[0][1]
        # the live servers got their copies all the same
        for i in (0, 1, 3):
            assert pool[i].client().get_object(Bucket=BUCKET, Key="k1")["Body"].read() == data

        results = mux.replicate(str(path), BUCKET, "k2", min_success=3)
        print(
            "\nreplicate with s2 killed: "
            + ", ".join(
                f"{n}={'ok' if r['success'] else type(r['error']).__name__}"
                for n, r in results.items()
            )
        )
        assert {n for n, r in results.items() if r["success"]} == {"s0", "s1", "s3"}
        assert results["s2"]["success"] is False
        assert isinstance(results["s2"]["error"], EndpointError)
        for i in (0, 1, 3):
            assert pool[i].client().get_object(Bucket=BUCKET, Key="k2")["Body"].read() == data

        subset = mux.replicate(str(path), BUCKET, "k3", endpoints=["s0", "s3"], min_success=2)
        assert set(subset) == {"s0", "s3"}


@pytest.mark.faults  # longer: in make test-faults with the fault matrix
# ---------------------------------------------------------------- health checks
@pytest.mark.timeout(120)
def test_background_health_checks_open_and_close_the_breaker(fresh_pool: PoolFactory) -> None:
    pool = fresh_pool(3)
    with make_mux(pool, circuit_breaker_threshold=2) as mux:
        assert mux.check_health() == ["s0", "s1", "s2"]
        victim = mux.endpoint("s1")

        pool[1].kill()
        t_kill = time.monotonic()
        mux.start_health_checks(interval=0.3)
        thread = mux._health_thread
        assert thread is not None and thread.is_alive()
        mux.start_health_checks(interval=0.3)  # idempotent: still one thread
        assert mux._health_thread is thread

        to_open = wait_for(lambda: victim.breaker.state != "closed", timeout=10)
        assert victim.stats().state in ("open", "half_open")
        assert mux.check_health() == ["s0", "s2"]
        # no user call was needed, and routed calls now skip it
        assert victim.stats().requests == 0
        assert mux.list_objects(BUCKET)["Endpoint"] != "s1"

        pool[1].restart()
        t_restart = time.monotonic()
        to_close = wait_for(lambda: victim.breaker.state == "closed", timeout=20)
        print(
            f"\nhealth checks every 0.3s: breaker open {to_open:.2f}s after the kill "
            f"(t={time.monotonic() - t_kill:.2f}s), closed {to_close:.2f}s after the restart "
            f"({time.monotonic() - t_restart:.2f}s)"
        )
        assert mux.check_health() == ["s0", "s1", "s2"]

        mux.close()
        assert not thread.is_alive()
        assert mux._health_thread is None


# -------------------------------------------------------------- concurrency
@pytest.mark.timeout(120)
def test_counters_add_up_exactly_under_32_threads(pool4: S3ServerPool) -> None:
    body = b"concurrent seed body"
    seed(pool4, "conc/seed", body)
    threads, per_thread = 32, 25
    with make_mux(pool4, read_timeout=10) as mux:
        start = threading.Barrier(threads)
        errors: list[BaseException] = []
        done = Counter[str]()
        lock = threading.Lock()

        def worker(t: int) -> None:
            start.wait()
            for i in range(per_thread):
                kind = ("put", "get", "head", "list")[(t + i) % 4]
                try:
                    if kind == "put":
                        mux.put_object(BUCKET, f"conc/{t}/{i}", b"v" * (i + 1))
                    elif kind == "get":
                        assert mux.get_object(BUCKET, "conc/seed")["Body"] == body
                    elif kind == "head":
                        mux.head_object(BUCKET, "conc/seed")
                    else:
                        mux.list_objects(BUCKET, prefix="conc/seed")
                except BaseException as exc:
                    with lock:
                        errors.append(exc)
                else:
                    with lock:
                        done[kind] += 1

        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=threads) as ex:
            list(ex.map(worker, range(threads)))
        elapsed = time.monotonic() - t0

        stats = mux.stats()
        total = threads * per_thread
        requests = sum(s.requests for s in stats.values())
        successes = sum(s.successes for s in stats.values())
        legs = sum(ep.legs for ep in mux.endpoints.values())
        print(
            f"\n{threads} threads x {per_thread} ops in {elapsed:.2f}s: "
            + ", ".join(
                f"{n}: {s.requests} req/{s.saturated} saturated/{s.failovers_away} failovers"
                for n, s in stats.items()
            )
            + f"; ops {dict(done)}"
        )
        assert errors == []
        assert sum(done.values()) == total
        assert requests == total == successes
        assert legs == total
        for s in stats.values():
            assert s.in_flight == 0
            assert s.state == "closed"
            assert (s.client_errors, s.access_errors, s.throttles, s.endpoint_failures) == (
                0,
                0,
                0,
                0,
            )
            assert s.retries == 0
            assert s.requests > 0  # every endpoint took a share
            assert s.requests == (
                s.successes + s.client_errors + s.access_errors + s.throttles + s.endpoint_failures
            )


# ------------------------------------------------------------------ presigning
@pytest.mark.timeout(120)
def test_presign_all_urls_work_and_open_endpoint_goes_last(pool4: S3ServerPool) -> None:
    body = b"presigned body"
    seed(pool4, "presign/obj", body)
    with make_mux(pool4) as mux:
        urls = mux.presign_all(BUCKET, "presign/obj", expiration=300)
        assert len(urls) == 4
        assert {u.split("/" + BUCKET)[0] for u in urls} == set(pool4.urls)
        for url in urls:
            with urllib.request.urlopen(url, timeout=5) as resp:
                assert resp.status == 200
                assert resp.read() == body
            assert "X-Amz-Signature=" in url

        mux.endpoint("s1").breaker.force_open(30)
        for _ in range(4):
            urls = mux.presign_all(BUCKET, "presign/obj")
            assert urls[-1].startswith(pool4[1].url + "/")
            assert not mux.create_presigned_url(BUCKET, "presign/obj").startswith(pool4[1].url)
        named = mux.create_presigned_url(BUCKET, "presign/obj", endpoint="s1")
        assert named.startswith(pool4[1].url + "/")  # a named URL is signed locally anyway


# ------------------------------------------------------------------ membership
@pytest.mark.timeout(120)
def test_remove_endpoint_drains_an_in_flight_call(fresh_pool: PoolFactory) -> None:
    pool = fresh_pool(2)
    seed(pool, "drain", b"d")
    with make_mux(pool, retries=0) as mux:
        mux.get_object(BUCKET, "drain", endpoint="s0")  # warm the connection
        pool[0].pause()
        outcome: list[object] = []

        def slow_call() -> None:
            try:
                outcome.append(mux.get_object(BUCKET, "drain", endpoint="s0"))
            except Exception as exc:
                outcome.append(exc)

        caller = threading.Thread(target=slow_call)
        caller.start()
        leaving = mux.endpoint("s0")
        wait_for(lambda: leaving.limiter.in_flight == 1, timeout=5, step=0.01)
        t0 = time.monotonic()
        mux.remove_endpoint("s0", drain_timeout=10)
        drained = time.monotonic() - t0
        caller.join(10)
        print(f"\nremove_endpoint waited {drained:.2f}s for the stalled call to end")
        assert not caller.is_alive()
        assert leaving.limiter.in_flight == 0
        assert leaving.closed
        assert 0.3 < drained < 8.0  # it waited for the call (~1 read_timeout), bounded
        assert isinstance(outcome[0], EndpointError)
        assert list(mux.endpoints) == ["s1"]
        assert all(mux.get_object(BUCKET, "drain")["Endpoint"] == "s1" for _ in range(3))
        with pytest.raises(ConfigError):
            mux.get_object(BUCKET, "drain", endpoint="s0")
        pool[0].resume()
