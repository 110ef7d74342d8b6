"""The asyncio core keeps the same books as Endpoint.run (no network: scripted attempts).

Each script of outcomes is driven once through the threaded ``Endpoint.run`` and once through
``_async_core.run_leg``; counters, breaker and AIMD limit must come out identical. Then the
asyncio-only parts: cancellation gives back the slot and the probe, slot waits are bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from s3kit import _async_core
from s3kit._async_core import AsyncOp, Waiters, acquire, run_leg
from s3kit._breaker import PROBE
from s3kit._clock import FakeClock
from s3kit._config import make_config
from s3kit._endpoint import Endpoint
from s3kit._errors import (
    CircuitOpenError,
    ConnectionFailed,
    EndpointError,
    EndpointSaturated,
    NoHealthyEndpoint,
    NotFound,
    Throttled,
)
from s3kit._limits import Limiter
from s3kit._mux import Multiplexer
from s3kit._ops import DELETE, READ, Op

Step = Callable[[], EndpointError] | None


def refused() -> EndpointError:
    return ConnectionFailed("refused", endpoint="ep", operation="get_object")


def slow_down() -> EndpointError:
    return Throttled(code="SlowDown", status=503, message="slow", endpoint="ep")


def missing() -> EndpointError:
    return NotFound(code="NoSuchKey", status=404, message="gone", endpoint="ep")


def make_endpoint(**options: Any) -> Endpoint:
    settings: dict[str, Any] = {
        "name": "ep",
        "circuit_breaker_threshold": 2,
        "breaker_open_s": 10.0,
        "retries": 3,
        "max_concurrent": 4,
    }
    settings.update(options)
    cfg = make_config("http://127.0.0.1:1", "ak", "sk", **settings)
    return Endpoint(cfg, clock=FakeClock(), transport=object(), rng=lambda: 0.0)  # type: ignore[arg-type]


def scripted(steps: list[Step]) -> tuple[Op, AsyncOp]:
    """The same script as a plain Op and as a native AsyncOp (each with its own cursor)."""

    def run(cursor: Iterator[Step]) -> dict[str, Any]:
        step = next(cursor)
        if step is None:
            return {"Body": b"ok"}
        raise step()

    sync_cursor, async_cursor = iter(steps), iter(steps)

    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        return run(sync_cursor)

    async def attempt_async(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        await asyncio.sleep(0)
        return run(async_cursor)

    op = Op("get_object", attempt, READ, "b", "k")
    return op, AsyncOp(op, attempt_async, lambda ep: True)


async def no_offload(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    raise AssertionError("a native leg must not use the thread pool")


def books(ep: Endpoint) -> tuple[Any, ...]:
    st = ep.stats()
    return (
        st.requests,
        st.successes,
        st.client_errors,
        st.throttles,
        st.endpoint_failures,
        st.retries,
        st.rejected_open,
        st.in_flight,
        st.state,
        st.concurrency_limit,
        ep.metrics_snapshot()[0],
    )


SCRIPTS: list[list[list[Step]]] = [
    [[None]],
    [[slow_down, slow_down, None]],
    [[refused, refused, refused, refused]],  # out of retries: the last error
    [[missing]],  # a client error: never retried
    [[refused] * 4, [refused] * 4, [None]],  # two failed legs open the breaker
    [[refused, None], [slow_down] * 4, [None]],
]


@pytest.mark.parametrize("legs", SCRIPTS)
def test_async_leg_keeps_the_same_books_as_endpoint_run(legs: list[list[Step]]) -> None:
    threaded, native = make_endpoint(), make_endpoint()
    outcomes: list[tuple[str, str]] = []
    for steps in legs:
        op, aop = scripted(steps)
        try:
            sync = f"ok {threaded.run(op)['Endpoint']}"
        except EndpointError as exc:
            sync = f"{type(exc).__name__} after {exc.attempt_count}"
        try:
            result = asyncio.run(run_leg(native, aop, Waiters(), no_offload))
            got = f"ok {result['Endpoint']}"
        except EndpointError as exc:
            got = f"{type(exc).__name__} after {exc.attempt_count}"
        outcomes.append((sync, got))
    assert all(sync == got for sync, got in outcomes), outcomes
    assert books(native) == books(threaded)


def test_cancelling_a_native_probe_gives_back_its_slot_and_the_probe() -> None:
    ep = make_endpoint(circuit_breaker_threshold=1, retries=0)
    failing, failing_async = scripted([refused])
    with pytest.raises(ConnectionFailed):
        ep.run(failing)
    assert ep.breaker.state == "open"
    assert isinstance(ep.clock, FakeClock)
    ep.clock.advance(20.0)  # past the open interval: the next call is the probe
    started = asyncio.Event()

    async def hang(e: Endpoint, timeout: float | None) -> dict[str, Any]:
        started.set()
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    async def main() -> None:
        aop = AsyncOp(failing_async.op, hang, lambda e: True)
        task = asyncio.create_task(run_leg(ep, aop, Waiters(), no_offload))
        await started.wait()
        assert ep.limiter.in_flight == 1
        with pytest.raises(CircuitOpenError):  # the probe is taken
            await run_leg(ep, aop, Waiters(), no_offload)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    st = ep.stats()
    assert st.in_flight == 0
    assert st.requests == st.successes + st.endpoint_failures == 1  # the cancelled one: uncounted
    assert ep.breaker.admit() == PROBE  # given back: the next call may probe


def test_a_waiter_gets_the_slot_a_native_leg_releases() -> None:
    limiter = Limiter(1)
    waiters = Waiters()

    async def main() -> None:
        assert limiter.try_acquire()
        waiting = asyncio.create_task(acquire(limiter, waiters, 30.0))
        await asyncio.sleep(0)
        assert not waiting.done()
        limiter.release()
        waiters.wake_one(limiter)
        assert await waiting
        assert limiter.in_flight == 1
        assert not await acquire(limiter, waiters, 0.05)  # bounded: then False
        assert not waiters.queue(limiter)  # its polls left nothing queued behind
        limiter.release()

    asyncio.run(main())
    assert limiter.in_flight == 0


def test_a_named_leg_that_finds_no_slot_raises_endpoint_saturated() -> None:
    ep = make_endpoint(max_concurrent=1, acquire_timeout=0.05)
    _, aop = scripted([None])
    assert ep.limiter.try_acquire()  # someone else holds the only slot
    with pytest.raises(EndpointSaturated):
        asyncio.run(run_leg(ep, aop, Waiters(), no_offload))
    with pytest.raises(EndpointSaturated):
        asyncio.run(run_leg(ep, aop, Waiters(), no_offload, wait=False))
    ep.limiter.release()
    assert ep.stats().saturated == 2 and ep.stats().requests == 0


def test_a_leg_that_is_not_native_runs_endpoint_run_on_the_pool() -> None:
    ep = make_endpoint()
    op, native = scripted([None])
    aop = AsyncOp(op, native.attempt, lambda e: False)
    offloaded: list[bool] = []

    async def offload(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        offloaded.append(True)
        return fn()

    result = asyncio.run(_async_core.run_leg(ep, aop, Waiters(), offload))
    assert result["Endpoint"] == "ep" and offloaded == [True]
    assert ep.stats().successes == 1


# ----------------------------------------------------------------------- routing
def make_mux(**options: Any) -> Multiplexer:
    mux = Multiplexer(backoff_base_s=0.001, backoff_cap_s=0.002, **options)
    for name in ("a", "b", "c"):
        mux.add_endpoint(name, "http://127.0.0.1:1", "ak", "sk")
    return mux


def per_endpoint(kind: str, script: dict[str, Step]) -> tuple[Op, AsyncOp]:
    """An operation whose answer depends on the endpoint (the same for both cores)."""

    def answer(ep: Endpoint) -> dict[str, Any]:
        step = script.get(ep.name)
        if step is None:
            return {"Body": ep.name.encode()}
        raise step()

    async def attempt_async(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        await asyncio.sleep(0)
        return answer(ep)

    op = Op("get_object", lambda ep, timeout: answer(ep), kind, "b", "k")
    return op, AsyncOp(op, attempt_async, lambda ep: True)


def outcome_of(call: Callable[[], dict[str, Any]]) -> str:
    try:
        return f"ok {call()['Endpoint']}"
    except NoHealthyEndpoint as exc:
        # (open breakers are listed soonest-retry first: their jittered intervals differ)
        return f"NoHealthyEndpoint {sorted(name for name, _ in exc.attempts)}"
    except EndpointError as exc:
        return f"{type(exc).__name__} from {exc.endpoint}"


ROUTED: list[tuple[str, dict[str, Step], str | None]] = [
    (READ, {"a": refused}, None),  # fails over to b
    (READ, {"a": refused, "b": slow_down}, None),  # to c
    (READ, {"a": refused, "b": refused, "c": refused}, None),  # rounds, then NoHealthyEndpoint
    (READ, {"a": missing}, None),  # a 404 is raised at once
    (DELETE, {"a": refused}, None),  # never failed over
    (READ, {"b": refused}, "b"),  # named: its own retries
]


@pytest.mark.parametrize(("kind", "script", "endpoint"), ROUTED)
def test_async_routing_matches_the_threaded_multiplexer(
    kind: str, script: dict[str, Step], endpoint: str | None
) -> None:
    threaded, native = make_mux(retries=2), make_mux(retries=2)
    results = []
    for _ in range(3):  # round-robin turns: the same order in both
        op, _ = per_endpoint(kind, script)
        sync = outcome_of(lambda op=op: threaded._run(op, endpoint, None, None))
        _, aop = per_endpoint(kind, script)

        def routed(aop: AsyncOp = aop) -> dict[str, Any]:
            return asyncio.run(
                _async_core.run_routed(native, aop, endpoint, None, None, Waiters(), no_offload)
            )

        results.append((sync, outcome_of(routed)))
    assert all(sync == got for sync, got in results), results
    for name in ("a", "b", "c"):
        mine, theirs = native.endpoint(name).stats(), threaded.endpoint(name).stats()
        assert (mine.requests, mine.endpoint_failures, mine.throttles, mine.failovers_away) == (
            theirs.requests,
            theirs.endpoint_failures,
            theirs.throttles,
            theirs.failovers_away,
        ), name
    threaded.close()
    native.close()
