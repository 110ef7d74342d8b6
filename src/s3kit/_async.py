"""``AsyncMultiplexer``: the multiplexer's verbs as coroutines.

On endpoints with the obstore transport, ``get_object``, ``head_object``, ``put_object`` (a
bytes or str body) and ``delete_object`` are native coroutines on obstore's async API, routed,
guarded and failed over by :mod:`s3kit._async_core` with the same books as the threaded core.
Everything else (boto3 endpoints, files, copies, listings, buckets, replica sets with their
quorum writes and hedged reads) runs the same code as :class:`Multiplexer` on a dedicated
thread pool, so the semantics are identical by construction.

Cancellation: a native call stops where it waits and gives back its concurrency slot (and a
half-open probe) at once; the interrupted attempt is not counted. A pooled call's request
finishes on its thread, releases its slot and records its outcome. Either way counters and
limits stay exact.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from typing import Any, BinaryIO, TypeVar

from . import _async_core
from ._async_core import AsyncOp
from ._endpoint import Endpoint
from ._events import Event
from ._mux import Multiplexer
from ._routing import Router
from ._stats import EndpointStats
from ._transport._obstore import ObstoreTransport
from ._validate import check_body, check_bucket, check_key, check_optional_str, check_timeout

__all__ = ["AsyncMultiplexer"]

T = TypeVar("T")


class AsyncMultiplexer:
    """Asyncio front of a :class:`Multiplexer` (``async with AsyncMultiplexer(...) as mux``).

    ``max_workers`` bounds the requests on the thread pool (the calls that are not native);
    keep it at least the sum of the endpoints' ``max_concurrent`` so the endpoints' own limits
    are what shapes the load.
    """

    def __init__(
        self,
        endpoints: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        max_workers: int = 64,
        multiplexer: Multiplexer | None = None,
        **options: Any,
    ) -> None:
        self.multiplexer = (
            multiplexer if multiplexer is not None else Multiplexer(endpoints, **options)
        )
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="s3kit-async"
        )
        self._waiters = _async_core.Waiters()
        self._native_cache: tuple[tuple[Endpoint, ...] | None, bool] = (None, False)

    async def _offload(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _native(self, endpoint: str | None) -> bool:
        """True when a call routed to ``endpoint`` (None: by strategy) may run natively: some
        candidate is on obstore and no replica set takes the call."""
        mux = self.multiplexer
        if mux._groups and mux._group_for(endpoint) is not None:
            return False
        if endpoint is not None:
            ep = mux.endpoints.get(endpoint)
            return ep is None or isinstance(ep.transport, ObstoreTransport)
        # _ordered is a new tuple whenever an endpoint is added or removed; one tuple holds
        # the answer with what it was computed for, so threads never see half an update
        ordered, any_native = self._native_cache
        if ordered is not mux._ordered:
            ordered = mux._ordered
            any_native = any(isinstance(ep.transport, ObstoreTransport) for ep in ordered)
            self._native_cache = (ordered, any_native)
        return any_native

    def _route(
        self, aop: AsyncOp, endpoint: str | None, strategy: str | Router | None, timeout: Any
    ) -> Coroutine[Any, Any, dict[str, Any]]:
        """The routed call's coroutine (checked here, at once: a plain function)."""
        t = check_timeout(timeout)
        deadline = None if t is None else self.multiplexer._clock.monotonic() + t
        return _async_core.run_routed(
            self.multiplexer, aop, endpoint, strategy, deadline, self._waiters, self._offload
        )

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    # membership and monitoring: no I/O, plain methods
    def add_endpoint(self, name: str, endpoint_url: str, *args: Any, **kwargs: Any) -> Endpoint:
        return self.multiplexer.add_endpoint(name, endpoint_url, *args, **kwargs)

    def stats(self) -> dict[str, EndpointStats]:
        return self.multiplexer.stats()

    def on_event(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        return self.multiplexer.on_event(callback)

    def start_health_checks(self, interval: float = 10.0) -> None:
        self.multiplexer.start_health_checks(interval)

    def pending(self, bucket: str | None = None, prefix: str = "") -> list[dict[str, Any]]:
        return self.multiplexer.pending(bucket, prefix)

    def hedge_stats(self) -> dict[str, dict[str, Any]]:
        return self.multiplexer.hedge_stats()

    # replica sets
    async def add_replica_group(self, name: str, endpoints: Iterable[str]) -> None:
        """Declare a replica set (no network call; a coroutine like the other verbs)."""
        self.multiplexer.add_replica_group(name, endpoints)

    async def repair(
        self,
        bucket: str,
        prefix: str = "",
        dry_run: bool = False,
        **kw: Any,
    ) -> dict[str, Any]:
        return await self._call(self.multiplexer.repair, bucket, prefix, dry_run, **kw)

    # the verbs
    async def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes | str | BinaryIO,
        extra_args: Mapping[str, Any] | None = None,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        if not kw and self._native(endpoint):
            bucket, key, data = check_bucket(bucket), check_key(key), check_body(body)
            if isinstance(data, (bytes, bytearray, memoryview)):
                aop = _async_core.put_object(bucket, key, data, extra_args)
                return await self._route(aop, endpoint, strategy, timeout)
        return await self._call(
            self.multiplexer.put_object,
            bucket,
            key,
            body,
            extra_args,
            endpoint=endpoint,
            strategy=strategy,
            timeout=timeout,
            **kw,
        )

    async def get_object(
        self,
        bucket: str,
        key: str,
        range: str | None = None,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        if self._native(endpoint):
            aop = _async_core.get_object(
                check_bucket(bucket),
                check_key(key),
                check_optional_str(range, "range"),
                extra or None,
            )
            return await self._route(aop, endpoint, strategy, timeout)
        return await self._call(
            self.multiplexer.get_object,
            bucket,
            key,
            range,
            endpoint=endpoint,
            strategy=strategy,
            timeout=timeout,
            **extra,
        )

    async def head_object(
        self,
        bucket: str,
        key: str,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        if self._native(endpoint):
            aop = _async_core.head_object(check_bucket(bucket), check_key(key), extra or None)
            return await self._route(aop, endpoint, strategy, timeout)
        return await self._call(
            self.multiplexer.head_object,
            bucket,
            key,
            endpoint=endpoint,
            strategy=strategy,
            timeout=timeout,
            **extra,
        )

    async def delete_object(
        self,
        bucket: str,
        key: str,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        if "write_quorum" not in extra and self._native(endpoint):
            aop = _async_core.delete_object(check_bucket(bucket), check_key(key), extra or None)
            return await self._route(aop, endpoint, strategy, timeout)
        return await self._call(
            self.multiplexer.delete_object,
            bucket,
            key,
            endpoint=endpoint,
            strategy=strategy,
            timeout=timeout,
            **extra,
        )

    async def copy_object(
        self, bucket: str, key: str, source_bucket: str, source_key: str, **kw: Any
    ) -> dict[str, Any]:
        return await self._call(
            self.multiplexer.copy_object, bucket, key, source_bucket, source_key, **kw
        )

    async def list_objects(
        self, bucket: str, prefix: str | None = None, max_keys: int | None = None, **kw: Any
    ) -> dict[str, Any]:
        return await self._call(self.multiplexer.list_objects, bucket, prefix, max_keys, **kw)

    async def upload_file(
        self,
        file_path: str,
        bucket: str,
        key: str,
        extra_args: Mapping[str, Any] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        return await self._call(
            self.multiplexer.upload_file, file_path, bucket, key, extra_args, **kw
        )

    async def download_file(
        self, bucket: str, key: str, file_path: str, **kw: Any
    ) -> dict[str, Any]:
        return await self._call(self.multiplexer.download_file, bucket, key, file_path, **kw)

    async def create_presigned_url(
        self, bucket: str, key: str, expiration: int = 3600, **kw: Any
    ) -> str:
        return self.multiplexer.create_presigned_url(bucket, key, expiration, **kw)

    async def presign_all(
        self, bucket: str, key: str, expiration: int = 3600, *, strategy: str | Router | None = None
    ) -> list[str]:
        return self.multiplexer.presign_all(bucket, key, expiration, strategy=strategy)

    async def create_bucket(self, bucket: str, **kw: Any) -> dict[str, Any]:
        return await self._call(self.multiplexer.create_bucket, bucket, **kw)

    async def delete_bucket(self, bucket: str, **kw: Any) -> dict[str, Any]:
        return await self._call(self.multiplexer.delete_bucket, bucket, **kw)

    async def list_buckets(self, **kw: Any) -> dict[str, Any]:
        return await self._call(self.multiplexer.list_buckets, **kw)

    async def replicate(
        self,
        file_path: str,
        bucket: str,
        key: str,
        endpoints: Iterable[str] | None = None,
        min_success: int | None = None,
    ) -> dict[str, dict[str, Any]]:
        return await self._call(
            self.multiplexer.replicate, file_path, bucket, key, endpoints, min_success
        )

    async def check_health(self, bucket: str | None = None, timeout: float = 5.0) -> list[str]:
        return await self._call(self.multiplexer.check_health, bucket, timeout)

    async def remove_endpoint(self, name: str, drain_timeout: float = 30.0) -> None:
        await self._call(self.multiplexer.remove_endpoint, name, drain_timeout)

    async def close(self) -> None:
        """Wait for requests still running on the pool, then release every connection (after
        the replica-set writes still running in the background, up to 30 s)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, functools.partial(self._executor.shutdown, wait=True))
        await loop.run_in_executor(None, self.multiplexer.close)

    async def __aenter__(self) -> AsyncMultiplexer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncMultiplexer {self.multiplexer!r}>"

    # ------------------------------------- extras (contract §12): thin wrappers, in threads
    async def iter_objects(
        self, bucket: str, prefix: str | None = None, **kw: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """``async for entry in mux.iter_objects(...)``: the lazy listing of
        :meth:`Multiplexer.iter_objects`, its pages fetched on the pool."""
        entries = self.multiplexer.iter_objects(bucket, prefix, **kw)
        size = int(kw.get("page_size", 1000))
        while True:
            batch = await self._call(lambda: list(itertools.islice(entries, size)))
            if not batch:
                return
            for entry in batch:
                yield entry

    async def upload_fileobj(
        self,
        fileobj: BinaryIO,
        bucket: str,
        key: str,
        extra_args: Mapping[str, Any] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        return await self._call(
            self.multiplexer.upload_fileobj, fileobj, bucket, key, extra_args, **kw
        )

    async def download_fileobj(
        self, bucket: str, key: str, fileobj: BinaryIO, **kw: Any
    ) -> dict[str, Any]:
        return await self._call(self.multiplexer.download_fileobj, bucket, key, fileobj, **kw)

    async def delete_objects(self, bucket: str, keys: Iterable[Any], **kw: Any) -> dict[str, Any]:
        return await self._call(self.multiplexer.delete_objects, bucket, keys, **kw)
