"""AsyncMultiplexer: the same semantics as coroutines, and cancellation that keeps counts exact."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from s3kit import (
    AsyncMultiplexer,
    CircuitOpenError,
    EndpointStats,
    NotFound,
    ReadTimeout,
    ServiceError,
)
from s3kit.testing import FaultProxy, S3Server, S3ServerPool

BUCKET = "async-bucket"
TEST_BUCKET = "test-bucket"  # the session servers' bucket (tests/conftest.py)
ACCESS_KEY = "testing-access"
SECRET_KEY = "testing-secret"
ServerFactory = Callable[..., S3Server]


@pytest.fixture(scope="module")
def pool() -> Iterator[S3ServerPool]:
    with S3ServerPool(3, "moto", buckets=[BUCKET]) as p:
        yield p


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    """Runs a test's coroutine on asyncio's default loop, and on uvloop (docs/asyncio.md
    recommends it for obstore: the native path must keep its semantics there too)."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run  # type: ignore[no-any-return]
    return asyncio.run


def _mux(pool: S3ServerPool, **options: object) -> AsyncMultiplexer:
    mux = AsyncMultiplexer(
        max_workers=32, connect_timeout=0.5, read_timeout=2, backoff_base_s=0.01, **options
    )
    for i, server in enumerate(pool):
        mux.add_endpoint(f"ep{i}", server.url, server.access_key, server.secret_key)
    return mux


@pytest.mark.timeout(60)
def test_async_verbs_route_and_roundtrip(pool: S3ServerPool) -> None:
    async def main() -> None:
        async with _mux(pool) as mux:
            puts = await asyncio.gather(
                *(mux.put_object(BUCKET, f"k{i}", f"v{i}".encode()) for i in range(9))
            )
            spread = collections.Counter(p["Endpoint"] for p in puts)
            assert spread == {"ep0": 3, "ep1": 3, "ep2": 3}
            for i, put in enumerate(puts):
                got = await mux.get_object(BUCKET, f"k{i}", endpoint=put["Endpoint"])
                assert got["Body"] == f"v{i}".encode()
                head = await mux.head_object(BUCKET, f"k{i}", endpoint=put["Endpoint"])
                assert head["ContentLength"] == len(f"v{i}")
            with pytest.raises(NotFound):
                await mux.head_object(BUCKET, "missing", endpoint="ep0")
            listing = await mux.list_objects(BUCKET, endpoint="ep0")
            assert listing["KeyCount"] == 3

    asyncio.run(main())


@pytest.mark.timeout(90)
def test_cancelled_calls_release_slots_and_keep_counters_exact(pool: S3ServerPool) -> None:
    async def main() -> None:
        mux = _mux(pool, max_concurrent=4)
        await mux.put_object(BUCKET, "slow", b"x", endpoint="ep2")
        pool[2].pause()  # every call to ep2 now hangs until its read timeout
        try:
            tasks = [
                asyncio.create_task(mux.get_object(BUCKET, "slow", endpoint="ep2"))
                for _ in range(8)
            ]
            await asyncio.sleep(0.3)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
        finally:
            pool[2].resume()
        await mux.close()  # waits for the abandoned requests to finish on their threads
        st = mux.stats()["ep2"]
        assert st.in_flight == 0
        assert st.requests == (
            st.successes + st.client_errors + st.access_errors + st.throttles + st.endpoint_failures
        )
        assert st.requests + st.saturated + st.rejected_open >= 1

    asyncio.run(main())


# ----------------------------------------------------------- native asyncio on obstore
def _obstore_mux(urls: list[str], **options: object) -> AsyncMultiplexer:
    settings: dict[str, object] = {
        "transport": "obstore",
        "connect_timeout": 0.5,
        "read_timeout": 2,
        "backoff_base_s": 0.01,
        "breaker_open_s": 0.2,
    }
    settings.update(options)
    mux = AsyncMultiplexer(max_workers=8, **settings)
    for i, url in enumerate(urls):
        mux.add_endpoint(f"ep{i}", url, ACCESS_KEY, SECRET_KEY)
    return mux


def _exact(st: EndpointStats) -> None:
    assert st.in_flight == 0
    assert st.requests == (
        st.successes + st.client_errors + st.access_errors + st.throttles + st.endpoint_failures
    )


def _pool_threads(mux: AsyncMultiplexer) -> int:
    return len(mux._executor._threads)


@pytest.mark.timeout(60)
def test_obstore_verbs_are_native_coroutines(
    nanio_server: S3Server, run: Callable[[Coroutine[Any, Any, None]], None]
) -> None:
    async def main() -> None:
        async with _obstore_mux([nanio_server.url]) as mux:
            put = await mux.put_object(TEST_BUCKET, "async/native", "héllo")
            assert put["Endpoint"] == "ep0" and put["ETag"]
            got = await mux.get_object(TEST_BUCKET, "async/native")
            assert got["Body"] == "héllo".encode() and got["ETag"] == put["ETag"]
            part = await mux.get_object(TEST_BUCKET, "async/native", range="bytes=1-2")
            assert part["Body"] == "héllo".encode()[1:3]
            head = await mux.head_object(TEST_BUCKET, "async/native")
            assert head["ContentLength"] == len("héllo".encode())
            await mux.delete_object(TEST_BUCKET, "async/native")
            with pytest.raises(NotFound):
                await mux.head_object(TEST_BUCKET, "async/native")
            # nothing of this went through the thread pool
            assert _pool_threads(mux) == 0
            # what obstore cannot carry natively (here an argument) takes the thread pool
            await mux.put_object(TEST_BUCKET, "async/pooled", b"x", {"StorageClass": "STANDARD"})
            assert (await mux.get_object(TEST_BUCKET, "async/pooled"))["Body"] == b"x"
            assert _pool_threads(mux) > 0
            st = mux.stats()["ep0"]
            _exact(st)
            assert st.successes >= 7 and st.client_errors == 1

    run(main())


@pytest.mark.timeout(120)
def test_obstore_async_failover_when_an_endpoint_dies(fresh_server: ServerFactory) -> None:
    servers = [fresh_server("nanio") for _ in range(3)]

    async def main() -> None:
        mux = _obstore_mux([s.url for s in servers], circuit_breaker_threshold=2)
        async with mux:
            keys = [f"fo/{i}" for i in range(12)]
            for key in keys:  # every endpoint holds every key (replicas, as documented)
                for name in ("ep0", "ep1", "ep2"):
                    await mux.put_object(TEST_BUCKET, key, key.encode(), endpoint=name)
            servers[1].kill()
            gets = await asyncio.gather(*(mux.get_object(TEST_BUCKET, k) for k in keys * 3))
            assert [g["Body"] for g in gets] == [k.encode() for k in keys * 3]
            assert "ep1" not in {g["Endpoint"] for g in gets}
            puts = await asyncio.gather(
                *(mux.put_object(TEST_BUCKET, f"fo/new{i}", b"n") for i in range(12))
            )
            assert "ep1" not in {p["Endpoint"] for p in puts}
            stats = mux.stats()
            assert stats["ep1"].endpoint_failures >= 1
            assert stats["ep1"].failovers_away == stats["ep1"].endpoint_failures
            assert stats["ep1"].state != "closed"  # opened (half-open once 0.2 s passed)
            for st in stats.values():
                _exact(st)
            assert _pool_threads(mux) == 0

    asyncio.run(main())


@pytest.mark.timeout(60)
def test_obstore_async_retries_throttles_like_the_threaded_core(nanio_server: S3Server) -> None:
    with FaultProxy(nanio_server.port) as proxy:

        async def main() -> None:
            async with _obstore_mux([proxy.url], retries=3) as mux:
                await mux.put_object(TEST_BUCKET, "async/retry", b"r")
                proxy.set_mode("error", status=503, count=2)
                got = await mux.get_object(TEST_BUCKET, "async/retry", endpoint="ep0")
                assert got["Body"] == b"r"
                st = mux.stats()["ep0"]
                assert (st.throttles, st.retries, st.successes) == (2, 2, 2)
                assert st.concurrency_limit < st.max_concurrent  # AIMD cut
                _exact(st)
                proxy.set_mode("error", status=500)
                with pytest.raises(ServiceError) as info:
                    await mux.get_object(TEST_BUCKET, "async/retry", endpoint="ep0")
                assert info.value.status == 500 and info.value.attempt_count == 4
                _exact(mux.stats()["ep0"])
                # timeout= is a deadline for the whole call, as in the threaded core
                proxy.set_mode("latency", delay_s=3.0)
                with pytest.raises(ReadTimeout):
                    await mux.get_object(TEST_BUCKET, "async/retry", endpoint="ep0", timeout=0.5)
                proxy.set_mode("pass")
                _exact(mux.stats()["ep0"])

        asyncio.run(main())


@pytest.mark.timeout(60)
def test_obstore_async_cancellation_releases_slots_and_probe(
    nanio_server: S3Server, run: Callable[[Coroutine[Any, Any, None]], None]
) -> None:
    with FaultProxy(nanio_server.port) as proxy:

        async def main() -> None:
            mux = _obstore_mux(
                [proxy.url],
                max_concurrent=2,
                circuit_breaker_threshold=1,
                read_timeout=5,
                retries=0,
            )
            async with mux:
                await mux.put_object(TEST_BUCKET, "async/slow", b"s")
                proxy.set_mode("latency", delay_s=3.0)
                tasks = [
                    asyncio.create_task(mux.get_object(TEST_BUCKET, "async/slow")) for _ in range(6)
                ]
                await asyncio.sleep(0.3)
                assert mux.stats()["ep0"].in_flight == 2  # two sent, four wait for a slot
                for task in tasks:
                    task.cancel()
                results = await asyncio.gather(*tasks, return_exceptions=True)
                assert all(isinstance(r, asyncio.CancelledError) for r in results)
                st = mux.stats()["ep0"]
                _exact(st)  # at once: no thread still holds a slot
                # the four that found no free slot were counted, as the threaded core does
                assert st.requests == 1 and st.saturated == 4

                # A half-open probe that is cancelled is given back: the next call probes.
                proxy.set_mode("error", status=500, count=1)
                with pytest.raises(ServiceError):
                    await mux.get_object(TEST_BUCKET, "async/slow", endpoint="ep0")
                await asyncio.sleep(0.3)  # past breaker_open_s (with its jitter)
                endpoint = mux.multiplexer.endpoint("ep0")
                probes = endpoint.breaker.probes
                proxy.set_mode("latency", delay_s=3.0)
                probe = asyncio.create_task(
                    mux.get_object(TEST_BUCKET, "async/slow", endpoint="ep0")
                )
                await asyncio.sleep(0.3)
                assert endpoint.breaker.probes == probes + 1
                with pytest.raises(CircuitOpenError):  # one probe at a time
                    await mux.head_object(TEST_BUCKET, "async/slow", endpoint="ep0")
                probe.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await probe
                proxy.set_mode("pass")
                got = await mux.get_object(TEST_BUCKET, "async/slow", endpoint="ep0")
                assert got["Body"] == b"s"
                assert endpoint.breaker.state == "closed"
                _exact(mux.stats()["ep0"])

        run(main())


@pytest.mark.timeout(60)
def test_mixed_transports_fail_over_between_pool_and_native_legs(
    nanio_server: S3Server,
) -> None:
    async def main() -> None:
        mux = AsyncMultiplexer(
            max_workers=4, connect_timeout=0.5, read_timeout=2, backoff_base_s=0.01
        )
        # nothing listens on port 9: every leg on "dead" (boto3, on the pool) is refused
        mux.add_endpoint("dead", "http://127.0.0.1:9", ACCESS_KEY, SECRET_KEY, transport="boto3")
        mux.add_endpoint("fast", nanio_server.url, ACCESS_KEY, SECRET_KEY, transport="obstore")
        async with mux:
            await mux.put_object(TEST_BUCKET, "async/mixed", b"m", endpoint="fast")
            gets = await asyncio.gather(
                *(mux.get_object(TEST_BUCKET, "async/mixed") for _ in range(6))
            )
            assert {g["Endpoint"] for g in gets} == {"fast"}
            assert _pool_threads(mux) > 0  # the boto3 legs ran on the pool
            stats = mux.stats()
            assert stats["dead"].endpoint_failures >= 1
            assert stats["dead"].failovers_away == stats["dead"].endpoint_failures
            for st in stats.values():
                _exact(st)

    asyncio.run(main())
