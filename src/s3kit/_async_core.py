"""The asyncio core: an endpoint's leg and the multiplexer's routing as coroutines.

For endpoints on the obstore transport, the hot verbs (``get_object``, ``head_object``,
``put_object`` with a bytes body, ``delete_object``) run on obstore's ``*_async`` calls, with
the books kept exactly as :meth:`Endpoint.run` keeps them (the bookkeeping steps are the
endpoint's own methods: ``admit_leg``, ``record_success``, ``record_failure``,
``retry_delay``, ``readmit``): the same breaker verdicts, AIMD limiter, retry policy, budget
and backoff (``asyncio.sleep``), the same failover rounds and counters. A concurrency slot is
taken without blocking a thread: ``try_acquire``, then a bounded wait woken by the releases of
other coroutines (and polling for releases by threads).

A leg on an endpoint that cannot run an operation natively (the boto3 transport, or a key or
argument obstore cannot carry) runs :meth:`Endpoint.run` on the thread pool, so a multiplexer
that mixes transports keeps one set of semantics.

Cancellation: a cancelled task stops its request where it waits; the ``finally`` blocks give
back the concurrency slot and a half-open probe at once, and the attempt is not counted (it
has no outcome), so ``requests`` stays the sum of the outcome counters.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _ops
from ._endpoint import Endpoint
from ._errors import (
    CircuitOpenError,
    EndpointError,
    EndpointSaturated,
    NoHealthyEndpoint,
    ReadTimeout,
)
from ._limits import Limiter
from ._routing import Router
from ._transport._obstore import ObstoreTransport

if TYPE_CHECKING:
    from ._mux import Multiplexer

__all__ = ["AsyncOp", "Offload", "Waiters", "acquire", "run_leg", "run_routed"]

#: Runs a blocking call on the thread pool and awaits it.
Offload = Callable[[Callable[[], dict[str, Any]]], Awaitable[dict[str, Any]]]

# A waiter for a slot re-checks at least this often: a thread's release does not wake it.
POLL_S = 0.01


@dataclass(slots=True, eq=False)  # not frozen: its __init__ would cost a call per field
class AsyncOp:
    """An operation with a coroutine attempt, and the plain :class:`_ops.Op` it mirrors (for
    routing, and for legs that run on the thread pool)."""

    op: _ops.Op
    # Returns the awaitable of one attempt; head and get hand back the transport's coroutine
    # itself (one coroutine frame fewer to resume per obstore future).
    attempt: Callable[[Endpoint, float | None], Awaitable[dict[str, Any]]]
    native: Callable[[Endpoint], bool]

    @property
    def name(self) -> str:
        return self.op.name


def _obstore(ep: Endpoint) -> ObstoreTransport | None:
    transport = ep.transport
    return transport if isinstance(transport, ObstoreTransport) else None


def head_object(bucket: str, key: str, extra: Mapping[str, Any] | None) -> AsyncOp:
    def attempt(ep: Endpoint, timeout: float | None) -> Awaitable[dict[str, Any]]:
        transport = ep.transport
        assert isinstance(transport, ObstoreTransport)
        phys = ep.config.physical_bucket(bucket)
        return transport.head_object_async(phys, key, extra, timeout)

    def native(ep: Endpoint) -> bool:
        transport = _obstore(ep)
        return transport is not None and transport.native_async("head_object", key, extra)

    return AsyncOp(_ops.head_object(bucket, key, extra), attempt, native)


def get_object(
    bucket: str, key: str, range: str | None, extra: Mapping[str, Any] | None
) -> AsyncOp:
    def attempt(ep: Endpoint, timeout: float | None) -> Awaitable[dict[str, Any]]:
        transport = ep.transport
        assert isinstance(transport, ObstoreTransport)
        phys = ep.config.physical_bucket(bucket)
        return transport.get_object_async(phys, key, range, extra, timeout)

    def native(ep: Endpoint) -> bool:
        transport = _obstore(ep)
        return transport is not None and transport.native_async("get_object", key, extra, range)

    return AsyncOp(_ops.get_object(bucket, key, range, extra), attempt, native)


def put_object(bucket: str, key: str, body: Any, extra: Mapping[str, Any] | None) -> AsyncOp:
    async def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        transport = ep.transport
        assert isinstance(transport, ObstoreTransport)
        phys = ep.config.physical_bucket(bucket)
        resp = await transport.put_object_async(phys, key, body, extra, timeout)
        return {**resp, "Bucket": bucket, "Key": key}

    def native(ep: Endpoint) -> bool:
        transport = _obstore(ep)
        return transport is not None and transport.native_async("put_object", key, extra, body=body)

    return AsyncOp(_ops.put_object(bucket, key, body, extra), attempt, native)


def delete_object(bucket: str, key: str, extra: Mapping[str, Any] | None) -> AsyncOp:
    async def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        transport = ep.transport
        assert isinstance(transport, ObstoreTransport)
        phys = ep.config.physical_bucket(bucket)
        resp = await transport.delete_object_async(phys, key, extra, timeout)
        return {**resp, "Bucket": bucket, "Key": key}

    def native(ep: Endpoint) -> bool:
        transport = _obstore(ep)
        return transport is not None and transport.native_async("delete_object", key, extra)

    return AsyncOp(_ops.delete_object(bucket, key, extra), attempt, native)


# ----------------------------------------------------------------------- slots
class Waiters:
    """Coroutines waiting for a concurrency slot, per endpoint, woken in turn by releases."""

    __slots__ = ("_queues",)

    def __init__(self) -> None:
        self._queues: dict[int, collections.deque[asyncio.Future[None]]] = {}

    def queue(self, limiter: Limiter) -> collections.deque[asyncio.Future[None]]:
        queue = self._queues.get(id(limiter))
        if queue is None:
            queue = self._queues.setdefault(id(limiter), collections.deque())
        return queue

    def wake_one(self, limiter: Limiter) -> None:
        queue = self._queues.get(id(limiter))
        while queue:
            try:
                waiter = queue.popleft()
            except IndexError:  # another event loop's thread took the last one
                return
            if waiter.done():
                continue
            loop = waiter.get_loop()
            try:
                same = asyncio.get_running_loop() is loop
            except RuntimeError:
                same = False
            if same:
                waiter.set_result(None)
            else:  # a waiter of another event loop (in another thread)
                try:
                    loop.call_soon_threadsafe(_wake, waiter)
                except RuntimeError:  # that loop is closed: wake the next one
                    continue
            return


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def acquire(limiter: Limiter, waiters: Waiters, timeout: float) -> bool:
    """Take a slot, waiting up to ``timeout`` seconds without blocking the event loop."""
    if limiter.try_acquire():
        return True
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    queue = waiters.queue(limiter)
    while True:
        remaining = end - loop.time()
        if remaining <= 0:
            return False
        waiter: asyncio.Future[None] = loop.create_future()
        queue.append(waiter)
        timer = loop.call_later(min(remaining, POLL_S), _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if not waiter.done():
                waiter.cancel()  # cancelled while waiting: wake_one skips it
            with contextlib.suppress(ValueError):
                queue.remove(waiter)  # woken by the timer (or cancelled): still queued
        if limiter.try_acquire():
            return True


# ------------------------------------------------------------------------- a leg
async def run_leg(
    ep: Endpoint,
    aop: AsyncOp,
    waiters: Waiters,
    offload: Offload,
    *,
    retries: int | None = None,
    wait: bool = True,
    deadline: float | None = None,
    allow_probe: bool = True,
) -> dict[str, Any]:
    """:meth:`Endpoint.run` as a coroutine (the same arguments, results and errors)."""
    if not aop.native(ep):
        op = aop.op
        return await offload(
            lambda: ep.run(
                op, retries=retries, wait=wait, deadline=deadline, allow_probe=allow_probe
            )
        )
    name = aop.name
    clock = ep.clock
    probe = ep.admit_leg(name, allow_probe)
    max_retries = ep.leg_retries(probe, retries)
    limiter = ep.limiter
    resolved = False
    attempt = 0
    previous: EndpointError | None = None
    try:
        while True:
            # ---- a concurrency slot: never held while sleeping in backoff
            if not limiter.try_acquire():
                waited = ep.slot_wait(wait, deadline)
                if not (waited and await acquire(limiter, waiters, waited)):
                    raise ep.saturated_error(name, waited)
            timeout: float | None = None
            t0 = clock.monotonic()
            if deadline is not None:
                remaining = deadline - t0
                if remaining <= 0:
                    limiter.release()
                    waiters.wake_one(limiter)
                    if previous is not None:
                        break
                    raise ReadTimeout(
                        f"deadline passed before {name} on {ep.name} could start",
                        endpoint=ep.name,
                        operation=name,
                        attempt_count=0,
                    )
                timeout = remaining
            try:
                result = await aop.attempt(ep, timeout)
            except EndpointError as exc:
                error: EndpointError | None = exc
            else:
                error = None
            finally:
                limiter.release()  # also when cancelled: the slot is free at once
                waiters.wake_one(limiter)
            elapsed = clock.monotonic() - t0
            if error is None:
                ep.record_success(name, t0, elapsed, attempt, probe)
                resolved = True
                result["Endpoint"] = ep.name
                return result
            outcome = ep.record_failure(name, error, elapsed, attempt, previous)
            previous = error
            delay = ep.retry_delay(name, error, outcome, attempt, max_retries, deadline)
            if delay is None:
                break
            await asyncio.sleep(delay)
            attempt += 1
            stop = ep.readmit(name, outcome, probe, error)
            if stop is not None:
                resolved = True
                raise stop from error
        assert previous is not None
        ep.finish_leg(previous, probe)
        resolved = True
        raise previous
    finally:
        if probe and not resolved:
            ep.breaker.release_probe()  # cancelled (or an unexpected error): free the probe


# ------------------------------------------------------------------- routing
def run_routed(
    mux: Multiplexer,
    aop: AsyncOp,
    endpoint: str | None,
    strategy: str | Router | None,
    deadline: float | None,
    waiters: Waiters,
    offload: Offload,
) -> Coroutine[Any, Any, dict[str, Any]]:
    """``Multiplexer._run`` for calls outside replica sets: named, once, or with failover
    (the coroutine that does it: a plain function, so no frame of its own stays on the way)."""
    if endpoint is not None:
        return run_leg(mux._get(endpoint), aop, waiters, offload, deadline=deadline)
    if aop.op.kind == _ops.DELETE:
        return _run_once(mux, aop, strategy, deadline, waiters, offload)
    return _failover(mux, aop, strategy, deadline, waiters, offload)


async def _run_once(
    mux: Multiplexer,
    aop: AsyncOp,
    strategy: str | Router | None,
    deadline: float | None,
    waiters: Waiters,
    offload: Offload,
) -> dict[str, Any]:
    """The first available endpoint, with its own retries, never failed over."""
    attempts: list[tuple[str, BaseException]] = []
    saturated: list[Endpoint] = []
    for ep in mux.ranked(aop.op, strategy):
        try:
            return await run_leg(ep, aop, waiters, offload, wait=False, deadline=deadline)
        except CircuitOpenError as exc:
            attempts.append((ep.name, exc))
        except EndpointSaturated as exc:
            attempts.append((ep.name, exc))
            saturated.append(ep)
    if saturated:
        ep = min(saturated, key=lambda e: e.limiter.in_flight)
        return await run_leg(ep, aop, waiters, offload, wait=True, deadline=deadline)
    raise NoHealthyEndpoint(aop.name, attempts) from (attempts[-1][1] if attempts else None)


async def _failover(
    mux: Multiplexer,
    aop: AsyncOp,
    strategy: str | Router | None,
    deadline: float | None,
    waiters: Waiters,
    offload: Offload,
) -> dict[str, Any]:
    """``Multiplexer._failover`` with awaited legs and ``asyncio.sleep`` between rounds: the
    same plan (:meth:`Multiplexer._failover_plan`) drives both."""
    plan = mux._failover_plan(aop.op, strategy, deadline)
    try:
        step = next(plan)
        while True:
            if isinstance(step, float):
                await asyncio.sleep(step)
                step = next(plan)
                continue
            ep, wait = step
            try:
                return await run_leg(
                    ep, aop, waiters, offload, retries=0, wait=wait, deadline=deadline
                )
            except EndpointError as exc:
                step = plan.throw(exc)
    finally:
        plan.close()
