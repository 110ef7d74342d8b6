"""AsyncMultiplexer: the same semantics as coroutines, and cancellation that keeps counts exact."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator

import pytest

from s3kit import AsyncMultiplexer, NotFound
from s3kit.testing import S3ServerPool

BUCKET = "async-bucket"


@pytest.fixture(scope="module")
def pool() -> Iterator[S3ServerPool]:
    with S3ServerPool(3, "moto", buckets=[BUCKET]) as p:
        yield p


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
