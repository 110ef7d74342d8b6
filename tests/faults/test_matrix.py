"""The fault matrix: one fault at a time on one of four endpoints, under a mixed 8-thread load.

Four nanio servers (SigV4, data on disk), each behind its own FaultProxy, are used as one store
by a round-robin :class:`Multiplexer` with sub-second policies. Every test runs the same bounded
load in three phases: a warm-up (all healthy), the fault phase (one fault on ``ep1``) and a
recovery phase (fault cleared). The load mixes strategy-routed put_object, upload_file,
download_file (to a path that already holds old content), get_object, head_object and
list_objects with a few named head_object calls (``endpoint=``), and records for every call its
outcome, error, duration, serving endpoint and attempts per endpoint (counted by a wrapper around
each endpoint's transport). Then the invariants of the issue are checked:

1. every upload that returned success is readable, byte-identical, from the endpoint it reports;
2. no download leaves a partial or torn file at the target path (old content kept on failure);
3. no call lasts longer than (connect + read + slot wait) × attempts + backoff (generous bound);
4. a dead or stalled endpoint's breaker opens, the others stay closed, and it closes again
   through a single probe once the fault clears;
5. retries stay within the retry budget, attempts per call within ``retries + 1`` per endpoint,
   and a dead endpoint gets no retry storm;
6. throttling (SlowDown) slows the endpoint down and shifts load away without opening its breaker
   or failing user calls;
7. wrong credentials give AccessDenied at once, are not retried and do not open the breaker;
8. strategy-routed calls see no failure while at least one endpoint is healthy.

The four cheapest faults are the quick subset (``make test``); the rest carry the ``faults``
marker (``make test-faults``). Numbers are collected in ``matrix_rows`` (see conftest.py) and
become the table of docs/resilience.md via tests/faults/report.py.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from s3kit import (
    BreakerStateChanged,
    ConnectionFailed,
    Endpoint,
    EndpointError,
    Event,
    FailedOver,
    Multiplexer,
    NoHealthyEndpoint,
    RetryScheduled,
)

from .conftest import Cluster

# Sub-second policies, so a dead or stalled endpoint costs about a second, not minutes.
OPTIONS: dict[str, Any] = {
    "connect_timeout": 0.5,
    "read_timeout": 1.0,
    "acquire_timeout": 1.0,
    "breaker_open_s": 0.5,
    "breaker_max_open_s": 1.0,
    "backoff_base_s": 0.01,
    "backoff_cap_s": 0.2,
    "circuit_breaker_threshold": 3,
    "retries": 2,
    "max_concurrent": 5,
}
THREADS = 8
WARM_OPS = 24
FAULT_OPS = 160
RECOVERY_OPS = 24
FAULTED = 1  # the endpoint every fault hits: ep1
FAULTED_NAME = f"ep{FAULTED}"
WRONG_SECRET = "not-the-secret-of-ep1"
ATTEMPTS = OPTIONS["retries"] + 1
# Invariant 3: one attempt costs at most connect + read timeout (plus a slot wait for a named
# call); a call makes at most ATTEMPTS of them with backoff in between. Generous slack on top.
CALL_BOUND_S = (
    ATTEMPTS * (OPTIONS["connect_timeout"] + OPTIONS["read_timeout"] + OPTIONS["acquire_timeout"])
    + OPTIONS["retries"] * OPTIONS["backoff_cap_s"]
    + 2.0
)
RETRY_RATIO = 0.2  # the default retry_budget
RETRY_RESERVE = 10  # per 10 s window (RetryBudget's reserve)

KINDS = (
    ("put", 18),
    ("upload", 14),
    ("download", 20),
    ("get", 16),
    ("head", 14),
    ("list", 10),
    ("named_head", 8),
)
_NETWORK = frozenset(
    {
        "head_object",
        "get_object",
        "put_object",
        "delete_object",
        "copy_object",
        "list_objects",
        "upload_file",
        "download_into",
        "create_bucket",
        "delete_bucket",
        "list_buckets",
    }
)


# --------------------------------------------------------------------- attempt counting
class _Tally(threading.local):
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()


TALLY = _Tally()


class CountingTransport:
    """Wraps an endpoint's transport: counts, per thread, the attempts sent to each endpoint."""

    def __init__(self, inner: Any, endpoint: str) -> None:
        self._inner = inner
        self._endpoint = endpoint
        self.name = inner.name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if attr not in _NETWORK:
            return value
        endpoint = self._endpoint

        def counted(*args: Any, **kwargs: Any) -> Any:
            TALLY.counts[endpoint] += 1
            return value(*args, **kwargs)

        return counted


def _count_attempts(ep: Endpoint) -> Endpoint:
    ep.transport = CountingTransport(ep.transport, ep.name)  # type: ignore[assignment]
    return ep


# ---------------------------------------------------------------------------- records
@dataclass
class OpRecord:
    index: int
    phase: str
    kind: str
    routed: bool
    ok: bool = False
    error: str | None = None
    code: str | None = None
    duration: float = 0.0
    endpoint: str | None = None
    target: str | None = None  # the endpoint a named call asked for
    attempt_count: int | None = None
    attempts: dict[str, int] = field(default_factory=dict)
    violation: str | None = None  # an integrity problem seen by the call itself
    key: str | None = None
    body: bytes | None = None
    torn: bool = False


@dataclass
class Fault:
    name: str
    apply: Callable[[Scenario], None]
    clear: Callable[[Scenario], None]
    opens_breaker: bool = False  # invariant 4 (the faulted endpoint's breaker must open)
    dead: bool = False  # nothing good comes back: attempts to it are bounded by the breaker
    throttle: bool = False  # invariant 6
    credentials: bool = False  # invariant 7
    midway: Callable[[Scenario], None] | None = None  # runs between the fault phase's halves


class Scenario:
    """One matrix run: the multiplexer, the load and everything observed."""

    def __init__(self, cluster: Cluster, fault: Fault, tmp: Path) -> None:
        self.cluster = cluster
        self.fault = fault
        self.tmp = tmp
        self.prefix = f"{fault.name}-{uuid.uuid4().hex[:8]}"
        self.bucket = cluster.bucket
        self.seed_keys = sorted(cluster.seeds)
        (tmp / "up").mkdir()
        (tmp / "dl").mkdir()
        self.mux = Multiplexer(cluster.endpoints(), strategy="round-robin", **OPTIONS)
        for ep in self.mux.endpoints.values():
            _count_attempts(ep)
        self.events: list[tuple[float, Event]] = []  # (time.time(), event)
        self._events_lock = threading.Lock()
        self.mux.on_event(self._on_event)
        self.records: list[OpRecord] = []
        self.t_start = time.monotonic()
        self.t_fault = 0.0
        self.t_clear: float | None = None
        self.burst_ended_by_itself: bool | None = None

    # -- plumbing
    def _on_event(self, event: Event) -> None:
        with self._events_lock:
            self.events.append((time.time(), event))

    @property
    def server(self) -> Any:
        return self.cluster.servers[FAULTED]

    @property
    def proxy(self) -> Any:
        return self.cluster.proxies[FAULTED]

    def faulted(self) -> Endpoint:
        return self.mux.endpoint(FAULTED_NAME)

    def swap_faulted(self, secret: str) -> Endpoint:
        """Replace ep1 by an endpoint with the same URL and ``secret`` (a redeploy)."""
        self.mux.remove_endpoint(FAULTED_NAME, drain_timeout=5)
        new = self.mux.add_endpoint(
            FAULTED_NAME,
            self.cluster.proxies[FAULTED].url,
            self.cluster.access_key,
            secret,
        )
        return _count_attempts(new)

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: s.as_dict() for name, s in self.mux.stats().items()}

    # -- the load
    def load(self, phase: str, n: int) -> list[OpRecord]:
        start = len(self.records)
        rng = random.Random(f"{self.fault.name}/{phase}/{start}")
        kinds = rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS], k=n)
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            done = list(
                pool.map(lambda ik: self.run_op(start + ik[0], phase, ik[1]), enumerate(kinds))
            )
        self.records.extend(done)
        return done

    def run_op(self, i: int, phase: str, kind: str) -> OpRecord:
        rec = OpRecord(i, phase, kind, routed=kind != "named_head")
        mux, bucket = self.mux, self.bucket
        seed_key = self.seed_keys[i % len(self.seed_keys)]
        seed = self.cluster.seeds[seed_key]
        body = random.Random(f"{self.prefix}/{i}").randbytes(512 + (i * 997) % 20000)
        target = self.tmp / "dl" / f"{i}.bin"
        old = f"old content of {i}".encode()
        result: dict[str, Any] = {}
        TALLY.counts.clear()
        t0 = time.monotonic()
        try:
            if kind == "put":
                rec.key, rec.body = f"{self.prefix}/put/{i}", body
                result = mux.put_object(bucket, rec.key, body)
            elif kind == "upload":
                rec.key, rec.body = f"{self.prefix}/upload/{i}", body
                src = self.tmp / "up" / f"{i}.bin"
                src.write_bytes(body)
                result = mux.upload_file(str(src), bucket, rec.key)
            elif kind == "download":
                target.write_bytes(old)
                result = mux.download_file(bucket, seed_key, str(target))
            elif kind == "get":
                result = mux.get_object(bucket, seed_key)
            elif kind == "head":
                result = mux.head_object(bucket, seed_key)
            elif kind == "list":
                result = mux.list_objects(bucket, prefix="seed/")
            else:
                rec.target = f"ep{i % len(self.cluster.proxies)}"
                result = mux.head_object(bucket, seed_key, endpoint=rec.target)
            rec.ok = True
            rec.endpoint = result.get("Endpoint")
        except Exception as exc:
            rec.error = type(exc).__name__
            rec.code = getattr(exc, "code", None)
            if isinstance(exc, EndpointError):
                rec.attempt_count = exc.attempt_count
            if isinstance(exc, NoHealthyEndpoint):
                rec.attempt_count = max(
                    (getattr(e, "attempt_count", 0) for _, e in exc.attempts), default=0
                )
        finally:
            rec.duration = time.monotonic() - t0
            rec.attempts = dict(TALLY.counts)
        # integrity as the call itself sees it
        if kind == "download":
            content = target.read_bytes()
            if rec.ok and content != seed:
                rec.violation = "downloaded file differs from the object"
            if not rec.ok and content != old:
                rec.torn = True
                rec.violation = f"failed download left {len(content)} bytes that are not the old"
        elif rec.ok and kind == "get" and result["Body"] != seed:
            rec.violation = "get_object body differs from the object"
        elif rec.ok and kind in ("head", "named_head"):
            if result.get("ContentLength") != len(seed):
                rec.violation = "head_object ContentLength differs"
        elif rec.ok and kind == "list":
            listed = {o["Key"] for o in result["Contents"]}
            if not set(self.seed_keys) <= listed:
                rec.violation = "list_objects misses seeded keys"
        elif rec.ok and kind in ("put", "upload"):
            assert rec.body is not None
            if (result.get("ETag") or "").strip('"') != hashlib.md5(rec.body).hexdigest():
                rec.violation = f"{kind} ETag is not the MD5 of the body sent"
        return rec

    def verify_uploads(self) -> list[str]:
        """Invariant 1, straight from each server (no proxy, no s3kit): problems found."""
        clients = {f"ep{i}": s.client() for i, s in enumerate(self.cluster.servers)}
        problems: list[str] = []

        def check(rec: OpRecord) -> str | None:
            assert rec.endpoint is not None and rec.key is not None
            try:
                got = clients[rec.endpoint].get_object(Bucket=self.bucket, Key=rec.key)
                data = got["Body"].read()
            except Exception as exc:
                return f"{rec.kind} {rec.key} on {rec.endpoint}: {type(exc).__name__}"
            if data != rec.body:
                return f"{rec.kind} {rec.key} on {rec.endpoint}: {len(data)} bytes differ"
            return None

        uploads = [r for r in self.records if r.ok and r.kind in ("put", "upload")]
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            problems = [p for p in pool.map(check, uploads) if p]
        return problems

    # -- breaker history of the faulted endpoint
    def breaker_events(self, name: str = FAULTED_NAME) -> list[tuple[float, BreakerStateChanged]]:
        with self._events_lock:
            return [
                (t, e)
                for t, e in self.events
                if isinstance(e, BreakerStateChanged) and e.endpoint == name
            ]


# ------------------------------------------------------------------------------ faults
def _set(mode: str, **params: Any) -> Callable[[Scenario], None]:
    def apply(sc: Scenario) -> None:
        sc.proxy.set_mode(mode, **params)

    return apply


def _pass(sc: Scenario) -> None:
    sc.proxy.set_mode("pass")


def _kill(sc: Scenario) -> None:
    sc.server.kill()


def _start(sc: Scenario) -> None:
    sc.server.start()


def _pause(sc: Scenario) -> None:
    sc.server.pause()


def _resume(sc: Scenario) -> None:
    sc.server.resume()


def _restart(sc: Scenario) -> None:
    """Midway through the fault phase: start the killed server again (its data is on disk)."""
    sc.server.start()
    sc.t_clear = time.time()


def _nothing(sc: Scenario) -> None:
    return None


def _let_burst_end(sc: Scenario) -> None:
    """Midway: health checks (which take the half-open probe like a call) until the proxy has
    sent the whole burst; the burst clears by itself when its last 500 went out."""
    ep = sc.faulted()
    give_up = time.monotonic() + 20
    while sc.proxy.mode != "pass" and time.monotonic() < give_up:
        time.sleep(ep.breaker.retry_after() + 0.02)
        sc.mux.check_health(timeout=2)
    sc.burst_ended_by_itself = sc.proxy.mode == "pass"
    errors = [r["time"] for r in sc.proxy.stats["recent_requests"] if r["fault"] == "error"]
    sc.t_clear = max(errors) if errors else time.time()


def _wrong_secret(sc: Scenario) -> None:
    sc.swap_faulted(WRONG_SECRET)


def _right_secret(sc: Scenario) -> None:
    sc.swap_faulted(sc.cluster.secret_key)


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("kill", _kill, _start, opens_breaker=True, dead=True),
        Fault("stall", _pause, _resume, opens_breaker=True, dead=True),
        Fault("reset", _set("reset", after_bytes=100), _pass, opens_breaker=True, dead=True),
        Fault("blackhole", _set("blackhole"), _pass, opens_breaker=True, dead=True),
        Fault("truncate", _set("truncate"), _pass),
        Fault("slowdown_storm", _set("error", status=503, code="SlowDown"), _pass, throttle=True),
        Fault(
            "error500_burst",
            _set("error", status=500, count=6),
            _pass,
            opens_breaker=True,
            midway=_let_burst_end,
        ),
        Fault("slow_link", _set("slow", bytes_per_s=100_000), _pass),
        Fault("wrong_credentials", _wrong_secret, _right_secret, credentials=True),
        Fault("restarted", _kill, _nothing, opens_breaker=True, midway=_restart),
    )
}
QUICK = ("kill", "slowdown_storm", "wrong_credentials", "truncate")
FULL = ("stall", "reset", "blackhole", "error500_burst", "slow_link", "restarted")


# ------------------------------------------------------------------------------ the run
def run_matrix(cluster: Cluster, fault: Fault, tmp: Path) -> tuple[dict[str, Any], dict]:
    sc = Scenario(cluster, fault, tmp)
    with sc.mux:
        sc.load("warm", WARM_OPS)
        before = sc.stats()
        sc.t_fault = time.time()
        fault.apply(sc)
        at_fault = sc.stats()
        if fault.midway is None:
            sc.load("fault", FAULT_OPS)
        else:
            sc.load("fault", FAULT_OPS // 2)
            fault.midway(sc)
            sc.load("fault", FAULT_OPS - FAULT_OPS // 2)
        after = sc.stats()
        faulted_during = sc.faulted().stats().as_dict()
        fault.clear(sc)
        if sc.t_clear is None:
            sc.t_clear = time.time()
        # Recovery: let the open interval pass, then the same load (routed calls probe).
        ep = sc.faulted()
        time.sleep(ep.breaker.retry_after() + 0.05)
        sc.load("recovery", RECOVERY_OPS)
        give_up = time.monotonic() + 10
        while ep.breaker.state != "closed" and time.monotonic() < give_up:
            time.sleep(ep.breaker.retry_after() + 0.02)
            sc.load("recovery", 4)
        final_state = ep.breaker.state
        final = sc.stats()
        elapsed = time.monotonic() - sc.t_start
        upload_problems = sc.verify_uploads()
    leftovers = sorted(p.name for p in (tmp / "dl").iterdir() if ".s3kit-" in p.name)
    return _evaluate(
        sc,
        before=before,
        at_fault=at_fault,
        after=after,
        final=final,
        faulted_during=faulted_during,
        final_state=final_state,
        elapsed=elapsed,
        upload_problems=upload_problems,
        leftovers=leftovers,
    )


def _evaluate(
    sc: Scenario,
    *,
    before: dict[str, dict[str, Any]],
    at_fault: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    final: dict[str, dict[str, Any]],
    faulted_during: dict[str, Any],
    final_state: str,
    elapsed: float,
    upload_problems: list[str],
    leftovers: list[str],
) -> tuple[dict[str, Any], dict]:
    fault = sc.fault
    recs = sc.records
    routed = [r for r in recs if r.routed]
    named = [r for r in recs if not r.routed]
    fault_recs = [r for r in recs if r.phase == "fault"]
    assert sc.t_clear is not None

    # breaker history of ep1
    history = sc.breaker_events()
    opens = [t for t, e in history if e.new == "open" and t >= sc.t_fault]
    time_to_open_ms = (opens[0] - sc.t_fault) * 1000 if opens else None
    state_at_clear = "closed"
    for t, e in history:
        if t <= sc.t_clear:
            state_at_clear = e.new
    closes = [t for t, e in history if e.new == "closed" and t >= sc.t_clear]
    probes_to_close: int | None = None
    if state_at_clear != "closed" and closes:
        half_opens = [
            t for t, e in history if e.new == "half_open" and sc.t_clear <= t <= closes[0]
        ]
        probes_to_close = max(1, len(half_opens))  # 0: the probe in flight at clear closed it
    probes_during_fault = sum(
        1 for t, e in history if e.new == "half_open" and sc.t_fault <= t <= sc.t_clear
    )
    others_opened = sorted(
        {
            e.endpoint
            for _, e in sc.events
            if isinstance(e, BreakerStateChanged) and e.endpoint != FAULTED_NAME
        }
    )

    # Why another endpoint opened, when one did: the errors its calls met (timeouts on an
    # overloaded server read differently from errors that should have stayed on ep1).
    others_errors = {
        name: dict(
            Counter(
                e.error
                for _, e in sc.events
                if isinstance(e, (RetryScheduled, FailedOver)) and e.endpoint == name
            )
        )
        for name in others_opened
    }
    faulted_requests = after[FAULTED_NAME]["requests"] - at_fault[FAULTED_NAME]["requests"]
    per_call = [sum(r.attempts.values()) for r in recs]
    per_call_faulted = [r.attempts.get(FAULTED_NAME, 0) for r in recs]
    retries = sum(s["retries"] for s in final.values())
    if fault.credentials:  # ep1 was replaced twice: add the retired endpoints' counters
        retries += faulted_during["retries"]
    windows = math.ceil(elapsed / 10.0) + 1
    budget_ok = all(
        s["retries"] <= RETRY_RATIO * s["requests"] + RETRY_RESERVE * windows
        for s in [*final.values(), faulted_during]
    )
    bad_attempt_counts = [
        r.attempt_count for r in recs if r.attempt_count is not None and r.attempt_count > ATTEMPTS
    ]
    storm_bound = (OPTIONS["circuit_breaker_threshold"] + THREADS) * ATTEMPTS + probes_during_fault

    violations = [f"#{r.index} {r.kind}: {r.violation}" for r in recs if r.violation]
    torn = [r for r in recs if r.torn]
    downloads = [r for r in recs if r.kind == "download"]
    user_failures = [f"#{r.index} {r.phase} {r.kind}: {r.error}" for r in routed if not r.ok]
    max_call = max(r.duration for r in recs)

    checks: dict[int, tuple[bool, str]] = {}
    n_uploads = sum(1 for r in recs if r.ok and r.kind in ("put", "upload"))
    checks[1] = (
        not upload_problems and not [v for v in violations if "put" in v or "upload" in v],
        f"{n_uploads} uploads read back byte-identical from their endpoint; "
        f"problems: {upload_problems[:5]}",
    )
    checks[2] = (
        not torn and not leftovers and not [v for v in violations if "download" in v],
        f"{len(downloads)} downloads, {sum(not r.ok for r in downloads)} failed with old content "
        f"kept; torn: {len(torn)}; temp files left: {leftovers[:5]}",
    )
    checks[3] = (max_call <= CALL_BOUND_S, f"max call {max_call:.2f}s, bound {CALL_BOUND_S:.1f}s")
    if fault.opens_breaker:
        checks[4] = (
            time_to_open_ms is not None
            and not others_opened
            and final_state == "closed"
            and probes_to_close == 1,
            f"opened after {time_to_open_ms} ms; others opened: {others_opened} "
            f"{others_errors}; final state "
            f"{final_state}; probes to close {probes_to_close}",
        )
    else:
        checks[4] = (
            not others_opened,
            f"others opened: {others_opened} {others_errors} (ep1 not required)",
        )
    storm_ok = not fault.dead or faulted_requests <= storm_bound
    checks[5] = (
        budget_ok
        and not bad_attempt_counts
        and max(per_call_faulted) <= ATTEMPTS
        and max(per_call) <= ATTEMPTS * len(sc.cluster.proxies)
        and storm_ok,
        f"retries {retries}; attempts per call max {max(per_call)} (ep1: "
        f"{max(per_call_faulted)}); attempt_count > {ATTEMPTS}: {bad_attempt_counts}; ep1 "
        f"requests during fault {faulted_requests} (storm bound "
        f"{storm_bound if fault.dead else '-'})",
    )
    if fault.throttle:
        fair_share = FAULT_OPS / len(sc.cluster.proxies)
        limit = faulted_during["concurrency_limit"]
        checks[6] = (
            not user_failures
            and not opens
            and faulted_during["throttles"] > 0
            and limit < OPTIONS["max_concurrent"]
            and faulted_requests <= fair_share / 2,
            f"ep1 throttled {faulted_during['throttles']}x, limit {limit}/"
            f"{OPTIONS['max_concurrent']}, {faulted_requests} requests during the fault "
            f"(fair share {fair_share:.0f}); breaker opened: {bool(opens)}",
        )
    if fault.credentials:
        denied = [r for r in fault_recs if r.target == FAULTED_NAME]
        immediate = all(
            not r.ok and r.error == "AccessDenied" and r.attempt_count == 1 and r.duration < 1.0
            for r in denied
        )
        checks[7] = (
            bool(denied)
            and immediate
            and faulted_during["retries"] == 0
            and faulted_during["endpoint_failures"] == 0
            and faulted_during["access_errors"] > 0
            and faulted_during["misconfigured"]
            and faulted_during["state"] == "closed"
            and not opens,
            f"{len(denied)} named calls denied at once (max "
            f"{max((r.duration for r in denied), default=0):.3f}s); ep1 retries "
            f"{faulted_during['retries']}, access errors {faulted_during['access_errors']}, "
            f"breaker {faulted_during['state']}",
        )
    checks[8] = (not user_failures, f"{len(routed)} routed calls, failures: {user_failures[:5]}")

    row = {
        "kind": "matrix",
        "fault": fault.name,
        "ops": len(recs),
        "fault_ops": len(fault_recs),
        "routed_ops": len(routed),
        "named_ops": len(named),
        "user_failures": len(user_failures),
        "named_failures": sum(not r.ok for r in named),
        "named_failure_types": dict(Counter(r.error for r in named if not r.ok)),
        "time_to_open_ms": None if time_to_open_ms is None else round(time_to_open_ms, 1),
        "probes_to_close": probes_to_close,
        "probes_during_fault": probes_during_fault,
        "max_call_s": round(max_call, 3),
        "max_call_by_phase": {
            phase: round(max(r.duration for r in recs if r.phase == phase), 3)
            for phase in ("warm", "fault", "recovery")
        },
        "slowest": [
            f"{r.phase} {r.kind} {r.duration:.2f}s {r.error or r.endpoint}"
            for r in sorted(recs, key=lambda r: -r.duration)[:3]
        ],
        "max_attempts_per_call": max(per_call),
        "max_faulted_attempts_per_call": max(per_call_faulted),
        "faulted_requests_during_fault": faulted_requests,
        "retries": retries,
        "requests": sum(s["requests"] for s in final.values()),
        "served_during_fault": dict(Counter(r.endpoint for r in fault_recs if r.ok)),
        "faulted_throttles": faulted_during["throttles"],
        "faulted_concurrency_limit": faulted_during["concurrency_limit"],
        "others_opened": others_opened,
        "elapsed_s": round(elapsed, 1),
        "burst_ended_by_itself": sc.burst_ended_by_itself,
        "checks": {
            str(k): {"ok": ok, "detail": detail, "partial": k == 4 and not fault.opens_breaker}
            for k, (ok, detail) in checks.items()
        },
        "before_fault_requests": sum(s["requests"] for s in before.values()),
    }
    return row, checks


def _assert_checks(fault: str, checks: dict[int, tuple[bool, str]]) -> None:
    failed = {k: detail for k, (ok, detail) in checks.items() if not ok}
    assert not failed, f"{fault}: invariants violated: {failed}"


def _params() -> list[Any]:
    out = [pytest.param(name, id=name) for name in QUICK]
    out += [pytest.param(name, id=name, marks=pytest.mark.faults) for name in FULL]
    return out


@pytest.mark.timeout(150)
@pytest.mark.parametrize("fault_name", _params())
def test_fault_matrix(
    fault_name: str,
    healed_cluster: Cluster,
    tmp_path: Path,
    matrix_rows: list[dict[str, Any]],
) -> None:
    t0 = time.monotonic()
    row, checks = run_matrix(healed_cluster, FAULTS[fault_name], tmp_path)
    row["test_s"] = round(time.monotonic() - t0, 1)
    matrix_rows.append(row)
    print(f"\n{fault_name}: {row}")
    _assert_checks(fault_name, checks)


# ------------------------------------------------------------------- download integrity
def _gets_of(proxy: Any, key: str, since: float) -> list[dict[str, Any]]:
    return [
        r
        for r in proxy.stats["recent_requests"]
        if r["method"] == "GET" and r["target"].split("?")[0].endswith(key) and r["time"] >= since
    ]


@pytest.mark.timeout(60)
def test_truncated_download_resumes_with_range(
    healed_cluster: Cluster, tmp_path: Path, matrix_rows: list[dict[str, Any]]
) -> None:
    """A body cut short is resumed with ``Range: bytes=<received>-`` pinned by If-Match."""
    cluster = healed_cluster
    key = max(cluster.seeds, key=lambda k: len(cluster.seeds[k]))
    seed = cluster.seeds[key]
    target = tmp_path / "resumed.bin"
    target.write_bytes(b"old")
    proxy = cluster.proxies[FAULTED]
    with Multiplexer(cluster.endpoints(), **OPTIONS) as mux:
        since = time.time()
        proxy.set_mode("truncate", count=1)  # the next response body is cut in half
        result = mux.download_file(cluster.bucket, key, str(target), endpoint=FAULTED_NAME)
        stats = mux.endpoint(FAULTED_NAME).stats()
    gets = _gets_of(proxy, key, since)
    assert result["ContentLength"] == len(seed)
    assert target.read_bytes() == seed
    assert [g["fault"] for g in gets] == ["truncate", "pass"]
    assert "range" not in gets[0]["headers"]
    half = len(seed) // 2
    assert gets[1]["headers"]["range"] == f"bytes={half}-"
    assert gets[1]["headers"]["if-match"].strip('"') == hashlib.md5(seed).hexdigest()
    assert (stats.endpoint_failures, stats.retries, stats.successes) == (1, 1, 1)
    assert not [p for p in tmp_path.iterdir() if ".s3kit-" in p.name]
    matrix_rows.append(
        {
            "kind": "integrity",
            "check": "range resume",
            "detail": f"{len(seed)}-byte body cut at {half}; retry sent Range bytes={half}- "
            f"with If-Match; {len(gets)} GETs; file byte-identical",
        }
    )


@pytest.mark.timeout(60)
def test_bit_rot_is_caught_by_md5_and_routed_download_fails_over(
    healed_cluster: Cluster, tmp_path: Path, matrix_rows: list[dict[str, Any]]
) -> None:
    """One replica's bytes rot on disk (same size, stored ETag unchanged): the MD5 check catches
    it, each retry starts over from byte 0, the target keeps its old content, and a routed
    download is served by a healthy replica."""
    cluster = healed_cluster
    bucket = cluster.bucket
    key = f"rot/{uuid.uuid4().hex[:8]}"
    body = random.Random(7).randbytes(30_000)
    for server in cluster.servers:
        server.client().put_object(Bucket=bucket, Key=key, Body=body)
    rotten = cluster.servers[2]
    assert rotten.data_dir is not None
    path = Path(rotten.data_dir) / bucket / key
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))

    target = tmp_path / "rot.bin"
    target.write_bytes(b"old")
    proxy = cluster.proxies[2]
    with Multiplexer(cluster.endpoints(), **OPTIONS) as mux:
        since = time.time()
        with pytest.raises(ConnectionFailed, match="MD5 mismatch") as err:
            mux.download_file(bucket, key, str(target), endpoint="ep2")
        assert err.value.attempt_count == ATTEMPTS
        assert target.read_bytes() == b"old"
        gets = _gets_of(proxy, key, since)
        assert len(gets) == ATTEMPTS
        assert all("range" not in g["headers"] for g in gets)  # bad bytes: start over
        served = []
        for i in range(4):  # round-robin: one of these tries ep2 first and fails over
            out = tmp_path / f"routed-{i}.bin"
            out.write_bytes(b"old")
            served.append(mux.download_file(bucket, key, str(out))["Endpoint"])
            assert out.read_bytes() == body
        failovers = mux.endpoint("ep2").stats().failovers_away
    assert "ep2" not in served and failovers >= 1
    assert not [p for p in tmp_path.iterdir() if ".s3kit-" in p.name]
    matrix_rows.append(
        {
            "kind": "integrity",
            "check": "MD5 (bit rot)",
            "detail": f"named download from the rotten replica: ConnectionFailed after "
            f"{ATTEMPTS} full GETs, old file kept; routed downloads served by {sorted(served)}",
        }
    )


def test_fault_table_is_complete() -> None:
    assert set(QUICK) | set(FULL) == set(FAULTS)
    assert not set(QUICK) & set(FULL)
