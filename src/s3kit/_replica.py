"""Replica sets: endpoints that hold the same data. Reads from any member, writes to all.

- **Reads** walk the members in strategy order and fail over like any routed read (endpoint
  failure, throttle, open breaker, and a 404 with ``read_fallback_on_missing=True``). With
  ``hedge=`` a GET/HEAD that has not been answered within the hedge delay is sent to a second
  member too; the first good answer wins (:func:`hedged_read`).
- **Downloads** that switch members mid-way keep the bytes received only when the new member
  holds the same version: the first answer's ETag is pinned (HEAD compared, and ``If-Match`` on
  the ranged GET); otherwise the download starts over on the new member. Never stitched.
  With ``hedge=`` a download not delivering within the hedge delay is raced on a second member
  (:func:`replica_download`); an object above ``PART_SIZE`` comes as ranged parts spread over
  the members, every part pinned to the first answer's ETag.
- **Writes** (and deletes, and copies) go to every member in parallel and return once
  ``write_quorum`` acknowledged; the rest finish in the background (:func:`replica_write`),
  recorded in the :class:`~s3kit._ledger.Ledger` until they do.
- **Repair** probes the members (a member still down is skipped, named), aborts what failed
  multipart uploads left on them, replays the ledger, then compares listings (:func:`repair`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hashlib
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from . import _ops, _uploads
from ._breaker import OPEN, PROBE, REJECT
from ._errors import (
    CircuitOpenError,
    ConnectionFailed,
    EndpointError,
    EndpointSaturated,
    InvalidArgument,
    NoHealthyEndpoint,
    NotFound,
    PreconditionFailed,
)
from ._events import logger
from ._ledger import DELETE, PUT, LedgerEntry
from ._outcome import ACCESS, BAD_CREDENTIALS, CLIENT, FAILURE, SUCCESS, THROTTLE, classify
from ._stats import LatencyWindow

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._mux import Multiplexer
    from ._routing import Router

__all__ = [
    "SOURCE_ETAG",
    "HedgeConfig",
    "ReplicaGroup",
    "check_quorum",
    "hedged_read",
    "parse_hedge",
    "probe_members",
    "repair",
    "replica_download",
    "replica_write",
    "resolve_quorum",
]

#: metadata key that copies made by s3kit carry: the source's ETag (so multipart copies converge)
SOURCE_ETAG = "s3kit-source-etag"
HEDGE_FLOOR_S = 0.02  # the smallest hedge delay when it follows the set's p95
HEDGE_COLD_S = 0.1  # the hedge delay before any read latency was measured
HEDGED_OPS = frozenset({"get_object", "head_object"})
PART_SIZE = 8 * 1024 * 1024  # objects above this come as ranged parts spread over the members
RANGED_WORKERS = 8  # parts in flight at once (each is read into memory: ≤ 8 x PART_SIZE)
HASH_CHUNK = 1024 * 1024  # the MD5 of a ranged download is computed in reads of this size
REJECTION_WAIT_S = 1.0  # a write refused by members waits this long for the others' answers
PROBE_PAUSE_S = 0.25  # repair(wait_s=...): the pause between probes of a member still down
PROBE_TIMEOUT_S = 5.0  # the longest a repair probe may take (capped by the read timeout)
_SINGLE_PART = re.compile(r'^"?[0-9a-fA-F]{32}"?$')


# ------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class HedgeConfig:
    """``delay_s=None``: the p95 of recent read latency across the set (floor 20 ms)."""

    delay_s: float | None = None
    max_extra: float = 0.1


def parse_hedge(value: object) -> HedgeConfig | None:
    """``hedge=`` of the Multiplexer: None/False (off), True (defaults) or a mapping."""
    if value is None or value is False:
        return None
    if value is True:
        return HedgeConfig()
    if not isinstance(value, Mapping):
        raise InvalidArgument("hedge", f"must be true, false or a mapping, got {value!r}")
    unknown = sorted(set(value) - {"delay_s", "max_extra"})
    if unknown:
        raise InvalidArgument("hedge", f"unknown keys {unknown}; expected delay_s, max_extra")
    delay = value.get("delay_s")
    if delay is not None and (
        isinstance(delay, bool) or not isinstance(delay, (int, float)) or not delay > 0
    ):
        raise InvalidArgument("hedge", f"delay_s must be None or seconds > 0, got {delay!r}")
    extra = value.get("max_extra", 0.1)
    if isinstance(extra, bool) or not isinstance(extra, (int, float)) or not 0 <= extra <= 1:
        raise InvalidArgument("hedge", f"max_extra must be within 0..1, got {extra!r}")
    return HedgeConfig(None if delay is None else float(delay), float(extra))


def check_quorum(value: object, argument: str = "write_quorum") -> int | str | None:
    """None, ``"all"`` or an int >= 1."""
    if value is None or value == "all":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(argument, f"must be None, 'all' or an int >= 1, got {value!r}")
    return value


def resolve_quorum(value: int | str | None, n: int) -> int:
    """Acknowledgements needed of ``n`` members: None → ⌈n/2⌉, "all" → n, W → W (≤ n)."""
    if value is None:
        return max(1, math.ceil(n / 2))
    if value == "all":
        return n
    assert isinstance(value, int)
    if value > n:
        raise InvalidArgument("write_quorum", f"{value} exceeds the {n} members of the set")
    return value


# ---------------------------------------------------------------------- the group
class ReplicaGroup:
    """A named replica set: member names, and its hedging state (latency window, budget)."""

    def __init__(self, name: str, members: Sequence[str], hedge: HedgeConfig | None) -> None:
        self.name = name
        self.members: tuple[str, ...] = tuple(members)
        self.hedge = hedge
        self._lock = threading.Lock()
        self._latency = LatencyWindow(512)
        self._samples = 0
        self._p95: float | None = None  # None until 16 samples were taken
        self._warm: set[str] = set()
        # Token bucket: each read deposits max_extra, each hedge spends 1. It starts empty, so
        # hedges can never exceed max_extra of the reads; the cap bounds a burst after calm.
        self._tokens = 0.0
        self._cap = max(1.0, 50.0 * hedge.max_extra) if hedge is not None else 0.0
        self.reads = 0
        self.hedges = 0
        self.hedge_wins = 0
        self.by_endpoint: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<ReplicaGroup {self.name!r} members={list(self.members)}>"

    # hedging
    def record_latency(self, endpoint: str, seconds: float) -> None:
        """One read's latency: the time the leg that served it took."""
        with self._lock:
            if endpoint not in self._warm:
                # A member's first answer pays for its connection (and client): not a sample.
                self._warm.add(endpoint)
                return
            self._latency.add(seconds)
            self._samples += 1
            if self._samples % 16 == 0:
                self._p95 = self._latency.percentiles(0.95)[0]

    def delay(self) -> float:
        cfg = self.hedge
        if cfg is not None and cfg.delay_s is not None:
            return cfg.delay_s
        p95 = self._p95
        return HEDGE_COLD_S if p95 is None else max(HEDGE_FLOOR_S, p95)

    def deposit(self) -> None:
        cfg = self.hedge
        with self._lock:
            self.reads += 1
            if cfg is not None:
                self._tokens = min(self._cap, self._tokens + cfg.max_extra)

    def try_spend(self, endpoint: str) -> bool:
        with self._lock:
            if self._tokens < 1.0 - 1e-9:  # ten deposits of 0.1 make one token
                return False
            self._tokens -= 1.0
            self.hedges += 1
            self.by_endpoint[endpoint] = self.by_endpoint.get(endpoint, 0) + 1
            return True

    def note_win(self) -> None:
        with self._lock:
            self.hedge_wins += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "members": list(self.members),
                "reads": self.reads,
                "hedges": self.hedges,
                "hedge_wins": self.hedge_wins,
                "extra": self.hedges / self.reads if self.reads else 0.0,
                "delay_s": self.delay() if self.hedge is not None else None,
                "by_endpoint": dict(self.by_endpoint),
            }


# ------------------------------------------------------------------ hedged reads
def hedged_read(
    mux: Multiplexer,
    group: ReplicaGroup,
    members: Sequence[Endpoint],
    op: _ops.Op,
    router: Router,
    deadline: float | None,
) -> dict[str, Any]:
    """One GET/HEAD across the set: the first member, then a hedge after the delay.

    The first good answer wins; a leg that fails is replaced by the next member at once. The
    loser is not interrupted (``Endpoint.run`` is synchronous): it finishes on its worker thread,
    its answer is discarded and its slot released then. Rounds after a wholly failed first one
    are the ordinary failover's.
    """
    order = list(mux._rank(members, op, router))
    group.deposit()
    delay = group.delay()
    pool = mux._hedge_pool()
    attempts: list[tuple[str, BaseException]] = []
    pending: dict[concurrent.futures.Future[tuple[dict[str, Any], float]], tuple[Endpoint, bool]]
    pending = {}
    missing: list[NotFound] = []
    sent = 0
    hedge_decided = False
    started = time.monotonic()

    def leg(ep: Endpoint) -> tuple[dict[str, Any], float]:
        t0 = time.monotonic()
        result = ep.run(op, retries=0, wait=False, deadline=deadline)
        return result, time.monotonic() - t0

    def launch(is_hedge: bool) -> bool:
        nonlocal started
        while order:
            if is_hedge:
                # A hedge only goes to a member that can take it now.
                ep = next((e for e in order if e.breaker.state != OPEN), None)
                if ep is None or not group.try_spend(ep.name):
                    return False
                order.remove(ep)
            else:
                ep = order.pop(0)
            pending[pool.submit(leg, ep)] = (ep, is_hedge)
            started = time.monotonic()
            return True
        return False

    launch(False)
    while pending:
        timeout: float | None = None
        if not hedge_decided and len(pending) == 1 and order:
            timeout = max(0.0, started + delay - time.monotonic())
        done, _ = concurrent.futures.wait(
            pending, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED
        )
        if not done:
            hedge_decided = True  # one hedge per read at most
            launch(True)
            continue
        for future in done:
            ep, is_hedge = pending.pop(future)
            try:
                result, elapsed = future.result()
            except CircuitOpenError as exc:
                attempts.append((ep.name, exc))
            except EndpointSaturated as exc:
                attempts.append((ep.name, exc))
            except EndpointError as exc:
                mux._note_leg_failure(op, ep, exc, router, attempts)  # raises a client error
                sent += 1
                if isinstance(exc, NotFound):
                    missing.append(exc)
            else:
                # Only the answers that served a read feed the delay: a loser that ends late
                # is the slow tail hedging removes, and must not raise the delay.
                group.record_latency(ep.name, elapsed)
                if is_hedge:
                    group.note_win()
                return result
        if not pending:
            launch(False)
    if missing and len(missing) == sent:
        raise missing[-1]
    if not sent:
        # Every member was open or busy: the ordinary path waits for a slot where it can.
        return mux._failover(op, router, deadline, members=members)
    if max(ep.config.retries for ep in members) > 0:
        return mux._failover(
            op, router, deadline, members=members, first_round=1, attempts=attempts
        )
    raise NoHealthyEndpoint(op.name, attempts) from attempts[-1][1]


# -------------------------------------------------------------------- downloads
class _PinnedDownload(_ops._Download):
    """A download that may continue on another member, but only on the same version.

    Switching members with bytes already received: the new member is asked (HEAD) for its ETag
    and the download resumes with ``Range`` + ``If-Match`` only when it equals the first
    answer's; a server that ignores ``If-Match`` is covered by the HEAD, one that honours it
    answers 412 and the transport starts over. Otherwise the download starts over from zero.
    """

    def attempt(self, ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        if self.fh is not None and self.endpoint is not ep:
            pinned = self.state.etag
            same = False
            if pinned and self.state.offset:
                head = ep.transport.head_object(
                    ep.config.physical_bucket(self.bucket), self.key, None, timeout
                )
                same = head.get("ETag") == pinned
            if same:
                self.endpoint = ep  # keep the bytes: the transport resumes, pinned
            else:
                self._fresh(ep)
        return super().attempt(ep, timeout)


# ------------------------------------------------------- replica-set downloads
class _Switch(Exception):
    """Raised from a leg's progress callback: stop this leg (it lost, its version is not the
    pinned one, or the download goes on as ranged parts). Not an endpoint failure: it passes
    ``Endpoint.run`` without touching the breaker or the counters."""


@dataclass(eq=False)
class _Leg:
    """One member's attempt at the whole download, into a file of its own."""

    ep: Endpoint
    path: str  # the leg's own file; the winner renames it into place
    is_hedge: bool
    dl: _PinnedDownload | None = None
    sent: int = 0  # bytes of this leg counted so far
    checked: str | None = None  # the ETag already compared with the pin


class _ReplicaDownload:
    """One ``download_file`` from a replica set.

    - **Hedged** (``hedge=`` on): a leg that has not delivered a byte within the hedge delay is
      raced by a leg on another member. The first answer's ETag is pinned: a leg answering with
      another ETag gives up, and the first *complete* leg with the pinned ETag wins. The loser
      stops at its next chunk and removes its file.
    - **Ranged** (an object larger than ``PART_SIZE``, more than one member): once the first
      answer gave the size and ETag, the rest comes as ranged GETs spread over the members,
      each with ``If-Match`` and its answer's ETag compared (servers that ignore ``If-Match``);
      a member holding another version is dropped, and a failed range is fetched from another.
    """

    def __init__(
        self,
        mux: Multiplexer,
        group: ReplicaGroup,
        members: Sequence[Endpoint],
        bucket: str,
        key: str,
        path: str,
        deadline: float | None,
        callback: Callable[[int], None] | None,
        router: Router,
        fsync: bool = True,
    ) -> None:
        self.mux = mux
        self.fsync = fsync
        self.group = group
        self.members = list(members)
        self.bucket = bucket
        self.key = key
        self.path = path
        self.dir = os.path.dirname(os.path.abspath(path))
        self.deadline = deadline
        self.callback = callback
        self.router = router
        self.lock = threading.Lock()
        self.pin: str | None = None
        self.size: int | None = None
        self.response: dict[str, Any] = {}
        self.first: Endpoint | None = None  # the member whose answer set the pin
        self.owner: _Leg | None = None  # the leg whose bytes the callback follows
        self.over = False  # a leg won, or the ranged parts took over: the others stop
        self.ranged = False
        self.delivered = threading.Event()

    # ----------------------------------------------------------------- progress
    def _check(self, state: Any, ep: Endpoint) -> None:
        """A leg's first bytes of a version: pin its ETag, or give up on another version;
        switch to ranged parts for a large object. Called under the lock."""
        etag = state.etag
        if self.pin is None:
            self.pin, self.size, self.first = etag, state.total, ep
            self.response = dict(state.response)
        elif etag != self.pin:
            raise _Switch(f"{ep.name} holds another version")
        big = (state.total or 0) > PART_SIZE
        if big and etag and len(self.members) > 1 and not self.ranged:
            self.ranged = self.over = True
            raise _Switch("ranged parts")

    def leg_progress(self, leg: _Leg, n: int) -> None:
        assert leg.dl is not None
        state = leg.dl.state
        with self.lock:
            if self.over:
                raise _Switch("another leg won")
            if n > 0 and state.etag != leg.checked:
                self._check(state, leg.ep)
                leg.checked = state.etag
            leg.sent += n
            if self.owner is None:
                self.owner = leg  # it takes over the callback with all its bytes so far
                report = leg.sent
            else:
                report = n if self.owner is leg else 0
        self.delivered.set()
        if report and self.callback is not None:
            self.callback(report)

    def _give_back(self, leg: _Leg) -> None:
        """A leg whose bytes the callback followed failed or lost: report them given up."""
        with self.lock:
            back = leg.sent if self.owner is leg else 0
            if self.owner is leg:
                self.owner = None
            leg.sent = 0
        if back and self.callback is not None:
            self.callback(-back)

    # ---------------------------------------------------------------------- legs
    def new_leg(self, ep: Endpoint, is_hedge: bool) -> _Leg:
        name = f".{os.path.basename(self.path)}.s3kit-leg-{uuid.uuid4().hex[:8]}"
        leg = _Leg(ep, os.path.join(self.dir, name), is_hedge)
        leg.dl = _PinnedDownload(
            self.bucket,
            self.key,
            leg.path,
            self.deadline,
            lambda n: self.leg_progress(leg, n),
            self.fsync,
        )
        return leg

    def run_leg(self, leg: _Leg) -> dict[str, Any]:
        assert leg.dl is not None
        op = _ops.Op("download_file", leg.dl.attempt, _ops.READ, self.bucket, self.key)
        try:
            result = leg.ep.run(op, retries=0, wait=False, deadline=self.deadline)
        except BaseException:
            leg.dl.cleanup()
            self._give_back(leg)
            raise
        with self.lock:
            won = not self.over and (self.pin is None or result.get("ETag") == self.pin)
            if won:
                self.over = True
                self.pin = self.pin or result.get("ETag")
                owner, self.owner = self.owner, leg
        if not won:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leg.path)
            self._give_back(leg)
            raise _Switch("another leg won")
        if self.callback is not None and owner is not leg:
            if owner is not None and owner.sent:
                self.callback(-owner.sent)
            if leg.sent:
                self.callback(leg.sent)
        os.replace(leg.path, self.path)
        result["Path"] = self.path
        return result

    def stop(self) -> None:
        with self.lock:
            self.over = True

    # ------------------------------------------------------------ single stream
    def single_op(self) -> _ops.Op:
        """The unhedged download: one member at a time (resuming only on the same version),
        switching to ranged parts for a large object."""
        holder: list[_PinnedDownload] = []

        def progress(n: int) -> None:
            state = holder[0].state
            with self.lock:
                if n > 0 and self.pin is None:
                    self._check(state, cast("Endpoint", holder[0].endpoint))
            if self.callback is not None:
                self.callback(n)

        dl = _PinnedDownload(self.bucket, self.key, self.path, self.deadline, progress, self.fsync)
        holder.append(dl)
        return _ops.Op("download_file", dl.attempt, _ops.READ, self.bucket, self.key, dl.cleanup)

    # ------------------------------------------------------------ ranged parts
    def ranged_download(self) -> dict[str, Any]:
        etag, total = self.pin, self.size
        assert etag is not None and total is not None and self.first is not None
        first = self.first
        # The member that answered first leads; then the others in routing order.
        ranked = self.mux._rank(self.members, _ops.head_object(self.bucket, self.key), self.router)
        usable = [first] + [ep for ep in ranked if ep is not first and ep.breaker.state != OPEN]
        other_version: set[str] = set()
        served: dict[str, int] = {}
        starts = list(range(0, total, PART_SIZE))
        name = f".{os.path.basename(self.path)}.s3kit-{uuid.uuid4().hex[:8]}"
        tmp = os.path.join(self.dir, name)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        lock = threading.Lock()
        reported = [0]

        def fetch(index: int, start: int) -> None:
            end = min(start + PART_SIZE, total) - 1
            op = _range_get(self.bucket, self.key, start, end, etag)
            tried: set[str] = set()
            attempts: list[tuple[str, BaseException]] = []
            while True:
                with lock:
                    candidates = [
                        ep for ep in usable if ep.name not in tried and ep.name not in other_version
                    ]
                if not candidates:
                    raise NoHealthyEndpoint("download_file", attempts) from (
                        attempts[-1][1] if attempts else None
                    )
                ep = candidates[index % len(candidates)]  # spread the parts over the members
                tried.add(ep.name)
                try:
                    resp = ep.run(op, retries=0, wait=True, deadline=self.deadline)
                except PreconditionFailed as exc:  # another version: never stitched in
                    with lock:
                        other_version.add(ep.name)
                    attempts.append((ep.name, exc))
                    continue
                except EndpointError as exc:
                    attempts.append((ep.name, exc))
                    ep.note_failover()
                    continue
                body = resp["Body"]
                os.pwrite(fd, body, start)
                with lock:
                    served[ep.name] = served.get(ep.name, 0) + 1
                    reported[0] += len(body)
                if self.callback is not None:
                    self.callback(len(body))
                return

        try:
            workers = min(RANGED_WORKERS, len(starts))
            with concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix="s3kit-ranged"
            ) as pool:
                futures = [pool.submit(fetch, i, start) for i, start in enumerate(starts)]
                errors = [e for f in futures if (e := f.exception()) is not None]
            if errors:
                raise errors[0]
            encrypted = (
                self.response.get("ServerSideEncryption") == "aws:kms"
                or "SSECustomerAlgorithm" in self.response
            )
            if _SINGLE_PART.match(etag) and not encrypted:
                digest = hashlib.md5()
                for pos in range(0, total, HASH_CHUNK):
                    digest.update(os.pread(fd, min(HASH_CHUNK, total - pos), pos))
                if digest.hexdigest() != etag.strip('"'):
                    raise ConnectionFailed(
                        f"MD5 mismatch in a ranged download of {self.key} across "
                        f"{', '.join(sorted(served))}",
                        endpoint=first.name,
                        operation="download_file",
                    )
            if self.fsync:
                os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, self.path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if self.callback is not None and reported[0]:
                self.callback(-reported[0])  # the bytes counted are given up
            raise
        return {
            "Bucket": self.bucket,
            "Key": self.key,
            "Path": self.path,
            "ContentLength": total,
            "ETag": etag,
            "Endpoint": first.name,
            "Endpoints": [ep.name for ep in usable if ep.name in served],
        }


def _range_get(bucket: str, key: str, start: int, end: int, etag: str) -> _ops.Op:
    """A ranged GET of one part, pinned to ``etag`` (``If-Match``, and the answer's ETag
    compared: some servers ignore ``If-Match``)."""

    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        resp = ep.transport.get_object(
            ep.config.physical_bucket(bucket),
            key,
            f"bytes={start}-{end}",
            {"IfMatch": etag},
            timeout,
        )
        if resp.get("ETag") != etag:
            raise PreconditionFailed(
                code="PreconditionFailed",
                status=412,
                message=f"holds ETag {resp.get('ETag')}, not the pinned {etag}",
                endpoint=ep.name,
                operation="download_file",
            )
        if len(resp["Body"]) != end - start + 1:
            raise ConnectionFailed(
                f"short range from {ep.name}: {len(resp['Body'])} of {end - start + 1} bytes",
                endpoint=ep.name,
                operation="download_file",
            )
        return resp

    return _ops.Op("download_file", attempt, _ops.READ, bucket, key)


def replica_download(
    mux: Multiplexer,
    group: ReplicaGroup,
    members: Sequence[Endpoint],
    bucket: str,
    key: str,
    path: str,
    deadline: float | None,
    callback: Callable[[int], None] | None,
    router: Router,
    fsync: bool = True,
) -> dict[str, Any]:
    """``download_file`` from a replica set: hedged when the set hedges, as ranged parts
    across members when the object is larger than ``PART_SIZE`` (see :class:`_ReplicaDownload`).
    """
    run = _ReplicaDownload(
        mux, group, members, bucket, key, path, deadline, callback, router, fsync
    )
    hedge = group.hedge
    if hedge is None or hedge.max_extra <= 0 or len(members) < 2:
        op = run.single_op()
        try:
            return mux._failover(op, router, deadline, members=members)
        except _Switch:
            if not run.ranged:
                raise
        finally:
            assert op.cleanup is not None
            op.cleanup()
        return run.ranged_download()
    return _hedged_download(mux, group, members, run, router, deadline)


def _hedged_download(
    mux: Multiplexer,
    group: ReplicaGroup,
    members: Sequence[Endpoint],
    run: _ReplicaDownload,
    router: Router,
    deadline: float | None,
) -> dict[str, Any]:
    probe = _ops.head_object(run.bucket, run.key)
    order = list(mux._rank(members, probe, router))
    group.deposit()
    delay = group.delay()
    pool = mux._hedge_pool()
    attempts: list[tuple[str, BaseException]] = []
    pending: dict[concurrent.futures.Future[dict[str, Any]], _Leg] = {}
    missing: list[NotFound] = []
    sent = 0
    hedge_decided = False
    started = time.monotonic()

    def launch(is_hedge: bool) -> bool:
        nonlocal started
        while order:
            if is_hedge:
                ep = next((e for e in order if e.breaker.state != OPEN), None)
                if ep is None or not group.try_spend(ep.name):
                    return False
                order.remove(ep)
            else:
                ep = order.pop(0)
            leg = run.new_leg(ep, is_hedge)
            pending[pool.submit(run.run_leg, leg)] = leg
            started = time.monotonic()
            return True
        return False

    try:
        launch(False)
        while pending and not run.ranged:
            timeout: float | None = None
            if not hedge_decided and len(pending) == 1 and order:
                timeout = max(0.0, started + delay - time.monotonic())
            done, _ = concurrent.futures.wait(
                pending, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED
            )
            if not done:
                hedge_decided = True  # one hedge per download at most
                if not run.delivered.is_set():  # the first leg has not delivered a byte yet
                    launch(True)
                continue
            for future in done:
                leg = pending.pop(future)
                try:
                    result = future.result()
                except _Switch:
                    continue  # lost, another version, or the ranged parts take over
                except (CircuitOpenError, EndpointSaturated) as exc:
                    attempts.append((leg.ep.name, exc))
                except EndpointError as exc:
                    assert leg.dl is not None
                    op = _ops.Op("download_file", leg.dl.attempt, _ops.READ, run.bucket, run.key)
                    mux._note_leg_failure(op, leg.ep, exc, router, attempts)  # may raise
                    sent += 1
                    if isinstance(exc, NotFound):
                        missing.append(exc)
                else:
                    if leg.is_hedge:
                        group.note_win()
                    return result
            if not pending and not run.ranged:
                launch(False)
    except BaseException:
        run.stop()
        raise
    if run.ranged:
        return run.ranged_download()
    if missing and len(missing) == sent:
        raise missing[-1]
    # Every member failed or was busy: the ordinary failover (it waits for a slot, and runs
    # later rounds with backoff).
    op = run.single_op()
    run.pin = None
    try:
        if not sent:
            return mux._failover(op, router, deadline, members=members)
        if max(ep.config.retries for ep in members) > 0:
            return mux._failover(
                op, router, deadline, members=members, first_round=1, attempts=attempts
            )
    except _Switch:
        if not run.ranged:
            raise
        return run.ranged_download()
    finally:
        assert op.cleanup is not None
        op.cleanup()
    raise NoHealthyEndpoint("download_file", attempts) from attempts[-1][1]


# ------------------------------------------------------------------------ writes
class _Quorum:
    """Acknowledgements of one replica-set write, shared by its legs and its caller."""

    def __init__(self, names: Sequence[str], needed: int) -> None:
        self.names = list(names)
        self.needed = needed
        self.cond = threading.Condition()
        self.acked: list[str] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, BaseException] = {}

    def finish(self, name: str, result: dict[str, Any] | None, error: BaseException | None) -> None:
        with self.cond:
            if error is None:
                assert result is not None
                self.acked.append(name)
                self.results[name] = result
            else:
                self.failed[name] = error
            self.cond.notify_all()

    def outstanding(self) -> int:
        return len(self.names) - len(self.acked) - len(self.failed)

    def wait_decided(self) -> bool:
        """Block until the quorum is met (True) or can no longer be (False)."""
        with self.cond:
            while True:
                if len(self.acked) >= self.needed:
                    return True
                if len(self.acked) + self.outstanding() < self.needed:
                    return False
                self.cond.wait()

    def wait_all(self, timeout: float | None = None) -> None:
        end = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while self.outstanding():
                remaining = None if end is None else end - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                self.cond.wait(remaining)


def replica_write(
    mux: Multiplexer,
    group: ReplicaGroup,
    members: Sequence[Endpoint],
    ops: Sequence[_ops.Op],
    deadline: float | None,
    quorum: int | str | None,
) -> dict[str, Any]:
    """Send one write (or delete, or copy) to every member; return at ``quorum`` acks.

    The ledger gets a row per member first; a member's row goes when it acknowledged. The
    result is the first acknowledgement's, with ``Endpoint`` (first), ``Endpoints`` (all that
    acknowledged so far) and ``Pending`` (still being written, or failed and left in the ledger).
    """
    op = ops[0]
    assert op.bucket is not None and op.key is not None
    bucket, key = op.bucket, op.key
    names = [ep.name for ep in members]
    needed = resolve_quorum(quorum, len(members))
    kind = DELETE if op.name == "delete_object" else PUT
    token = uuid.uuid4().hex
    ledger = mux._ledger()
    ledger.record(group.name, names, bucket, key, kind, token)
    state = _Quorum(names, needed)
    pool = mux._write_pool()

    def done(ep: Endpoint, future: concurrent.futures.Future[dict[str, Any]]) -> None:
        error: BaseException | None
        result: dict[str, Any] | None = None
        if future.cancelled():
            error = concurrent.futures.CancelledError()
        else:
            error = future.exception()
            if error is None:
                result = future.result()
        try:
            if error is None:
                ledger.resolve(group.name, ep.name, bucket, key, kind, token)
            else:
                ledger.note_failure(group.name, ep.name, bucket, key, kind, token, error)
        except Exception:  # the ledger closed meanwhile: the row stays, repair finds it
            logger.debug("replica ledger not updated for %s/%s on %s", bucket, key, ep.name)
        mux._leg_finished(future)
        state.finish(ep.name, result, error)

    for ep, leg_op in zip(members, ops, strict=True):
        try:
            future = mux._submit_leg(pool, ep, leg_op, deadline)
        except (RuntimeError, EndpointSaturated) as exc:  # closing, or too far behind
            with contextlib.suppress(Exception):
                ledger.note_failure(group.name, ep.name, bucket, key, kind, token, exc)
            state.finish(ep.name, None, exc)
            continue
        future.add_done_callback(lambda f, ep=ep: done(ep, f))  # type: ignore[misc]

    if not state.wait_decided():
        with state.cond:
            refused = not state.acked and all(_rejected(e) for e in state.failed.values())
        if refused:
            # The members refuse the request itself: the others are likely to answer the same
            # at once; give them a moment so that nothing is owed to them either.
            state.wait_all(REJECTION_WAIT_S)
        with state.cond:
            failed = dict(state.failed)
            any_ack = bool(state.acked)
        rejected = [e for e in failed.values() if _rejected(e)]
        if not any_ack and failed and len(rejected) == len(failed):
            # Every member that answered refused the request itself (bad arguments, no such
            # bucket, access): nothing was written there, so nothing is owed to them. A leg
            # still running keeps its row until it ends, like any other.
            for name in failed:
                with contextlib.suppress(Exception):
                    ledger.resolve(group.name, name, bucket, key, kind, token)
            raise rejected[0]
        errors = list(failed.items())
        raise NoHealthyEndpoint(op.name, errors) from (errors[-1][1] if errors else None)
    if mux._background_full():
        state.wait_all()  # too much already runs in the background: this write waits for all
    with state.cond:
        acked = list(state.acked)
        first = dict(state.results[acked[0]])
    first["Endpoint"] = acked[0]
    first["Endpoints"] = acked
    first["Pending"] = [name for name in names if name not in acked]
    return first


def _rejected(error: BaseException) -> bool:
    if isinstance(error, EndpointError):
        return classify(error) in (CLIENT, ACCESS)
    return not isinstance(error, (concurrent.futures.CancelledError, RuntimeError))


# ------------------------------------------------------------------------ repair
@dataclass
class _Version:
    size: int | None
    etag: str
    modified: Any
    source_etag: str | None = None  # from a HEAD, when one was needed


def _single_part(etag: str) -> bool:
    return bool(_SINGLE_PART.match(etag))


class _Repair:
    """One repair run over one replica set (see :func:`repair`)."""

    def __init__(
        self,
        mux: Multiplexer,
        group: ReplicaGroup,
        bucket: str,
        prefix: str,
        dry_run: bool,
        totals: dict[str, int],
        progress: Callable[[str, int, int], None] | None,
        on_action: Callable[[dict[str, Any]], None] | None,
        tmpdir: str,
        unreachable: Iterable[str] = (),
    ) -> None:
        self.mux = mux
        self.group = group
        # Members that did not answer the probe are left out: not asked, not copied to, and
        # their ledger rows stay for the next run.
        self.unreachable = frozenset(unreachable)
        self.members = [ep for ep in mux._members(group) if ep.name not in self.unreachable]
        self.by_name = {ep.name: ep for ep in self.members}
        self.bucket = bucket
        self.prefix = prefix
        self.dry_run = dry_run
        self.totals = totals
        self.progress = progress
        self.on_action = on_action
        self.tmpdir = tmpdir
        self.ledger = mux._ledger()

    # ----------------------------------------------------------------- helpers
    def _report(self, action: str, key: str, ok: bool, **detail: Any) -> None:
        if self.on_action is not None:
            self.on_action(
                {
                    "action": action,
                    "replica_set": self.group.name,
                    "bucket": self.bucket,
                    "key": key,
                    "dry_run": self.dry_run,
                    "ok": ok,
                    **detail,
                }
            )

    def _head(self, ep: Endpoint, key: str) -> dict[str, Any] | None:
        """The member's HEAD of ``key``, None if it has none; endpoint errors propagate."""
        try:
            return ep.run(_ops.head_object(self.bucket, key))
        except NotFound:
            return None

    @staticmethod
    def _effective(head: Mapping[str, Any]) -> str:
        etag = str(head.get("ETag") or "")
        if _single_part(etag):
            return etag
        meta = head.get("Metadata") or {}
        return str(meta.get(SOURCE_ETAG) or etag)

    def _same(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        """Two HEADs (or listing rows with ``Metadata`` filled) of one key hold one version."""
        size_a = a.get("ContentLength", a.get("Size"))
        size_b = b.get("ContentLength", b.get("Size"))
        if size_a != size_b:
            return False
        etag_a, etag_b = str(a.get("ETag") or ""), str(b.get("ETag") or "")
        if etag_a == etag_b:
            return True
        if _single_part(etag_a) and _single_part(etag_b):
            return False
        return self._effective(a) == self._effective(b)

    def copy(self, src: Endpoint, dst: Endpoint, key: str, head: Mapping[str, Any]) -> None:
        """Copy ``key`` from ``src`` to ``dst`` through a local temp file, tagged with its ETag."""
        path = os.path.join(self.tmpdir, uuid.uuid4().hex)
        # A scratch copy, uploaded and deleted: fsyncing it would only slow the repair down.
        op = _ops.download_file(self.bucket, key, path, fsync=False)
        try:
            got = src.run(op)
            if got.get("ETag") != head.get("ETag"):
                raise ConnectionFailed(
                    f"{key} changed on {src.name} while it was copied",
                    endpoint=src.name,
                    operation="repair",
                )
            meta = dict(head.get("Metadata") or {})
            meta[SOURCE_ETAG] = self._effective(head)
            extra: dict[str, Any] = {"Metadata": meta}
            for name in (
                "ContentType",
                "CacheControl",
                "ContentDisposition",
                "ContentEncoding",
                "ContentLanguage",
            ):
                if head.get(name):
                    extra[name] = head[name]
            dst.run(_ops.upload_file(path, self.bucket, key, extra))
        finally:
            if op.cleanup is not None:
                op.cleanup()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _newest(
        self, heads: Mapping[str, Mapping[str, Any] | None]
    ) -> tuple[Endpoint, Mapping[str, Any]] | None:
        best: tuple[Endpoint, Mapping[str, Any]] | None = None
        for ep in self.members:
            head = heads.get(ep.name)
            if head is None:
                continue
            if best is None or _later(head.get("LastModified"), best[1].get("LastModified")):
                best = (ep, head)
        return best

    # ------------------------------------------------------- phase 1: the ledger
    def replay(self, entries: Sequence[LedgerEntry], done: list[int], total: int) -> None:
        by_key: dict[str, list[LedgerEntry]] = {}
        owed: dict[str, set[str]] = {}  # every member owed something, reachable or not
        for entry in entries:
            owed.setdefault(entry.key, set()).add(entry.endpoint)
            if entry.endpoint in self.by_name:
                by_key.setdefault(entry.key, []).append(entry)
        for key, rows in by_key.items():
            try:
                self._replay_key(key, rows, owed[key])
            except EndpointError as exc:
                # The sources could not be asked: every row of the key stays for next time.
                self.totals["failed"] += len(rows)
                self._report("replay", key, False, error=f"{type(exc).__name__}: {exc}")
            done[0] += len(rows)
            if self.progress is not None:
                self.progress("ledger", done[0], total)

    def _replay_key(self, key: str, rows: Sequence[LedgerEntry], owed: set[str]) -> None:
        tombstones = [r for r in rows if r.op == DELETE]
        puts = [r for r in rows if r.op == PUT]
        for row in tombstones:
            ep = self.by_name[row.endpoint]
            if self.dry_run:
                self.totals["from_ledger"] += 1
                self._report("delete", key, True, endpoint=ep.name)
                continue
            try:
                ep.run(_ops.delete_object(self.bucket, key))
            except EndpointError as exc:
                self._failed(row, exc, "delete", key, endpoint=ep.name)
                continue
            self.ledger.resolve(self.group.name, row.endpoint, self.bucket, key, row.op, row.token)
            self.totals["from_ledger"] += 1
            self._report("delete", key, True, endpoint=ep.name)
        if not puts:
            return
        lagging = owed
        good = [ep for ep in self.members if ep.name not in lagging]
        heads: dict[str, Mapping[str, Any] | None] = {}
        errors: list[EndpointError] = []
        for ep in good:
            try:
                heads[ep.name] = self._head(ep, key)
            except EndpointError as exc:
                errors.append(exc)
        source = self._newest(heads)
        if source is None and self.unreachable - lagging:
            return  # only a member that cannot be reached now acknowledged it: next time
        if source is None:
            if errors:
                raise errors[-1]  # a good member may hold it: decide next time
            # No member that acknowledged holds it (the write reached none, or was superseded):
            # take the newest version any member holds.
            for row in puts:
                try:
                    heads[row.endpoint] = self._head(self.by_name[row.endpoint], key)
                except EndpointError as exc:
                    errors.append(exc)
            source = self._newest(heads)
            if source is None and errors:
                raise errors[-1]
        for row in puts:
            self._replay_put(key, row, source, heads)

    def _replay_put(
        self,
        key: str,
        row: LedgerEntry,
        source: tuple[Endpoint, Mapping[str, Any]] | None,
        heads: dict[str, Mapping[str, Any] | None],
    ) -> None:
        dst = self.by_name[row.endpoint]
        need_copy = False
        if source is not None and source[0] is not dst:
            try:
                target = heads[dst.name] if dst.name in heads else self._head(dst, key)
            except EndpointError as exc:
                self._failed(row, exc, "copy", key, source=source[0].name, endpoint=dst.name)
                return
            need_copy = target is None or not self._same(source[1], target)
        if need_copy:
            assert source is not None
            if not self.dry_run:
                try:
                    self.copy(source[0], dst, key, source[1])
                except EndpointError as exc:
                    self._failed(row, exc, "copy", key, source=source[0].name, endpoint=dst.name)
                    return
            self.totals["copied"] += 1
            self._report("copy", key, True, source=source[0].name, endpoint=dst.name)
        if not self.dry_run:
            self.ledger.resolve(self.group.name, row.endpoint, self.bucket, key, row.op, row.token)
        self.totals["from_ledger"] += 1

    def _failed(
        self, row: LedgerEntry, exc: BaseException, action: str, key: str, **kw: Any
    ) -> None:
        self.totals["failed"] += 1
        with contextlib.suppress(Exception):
            self.ledger.note_failure(
                self.group.name, row.endpoint, self.bucket, key, row.op, row.token, exc
            )
        self._report(action, key, False, error=f"{type(exc).__name__}: {exc}", **kw)

    # -------------------------------------------------- phase 2: the listings
    def compare(self, skip: set[str], done: list[int], total: int) -> None:
        listings: dict[str, dict[str, dict[str, Any]]] = {}
        op = _ops.list_objects(self.bucket, self.prefix or None, None, None)
        for ep in self.members:
            try:
                page = ep.run(op)
            except EndpointError as exc:
                self.totals["failed"] += 1
                self._report("list", "", False, endpoint=ep.name, error=f"{type(exc).__name__}")
                continue
            listings[ep.name] = {obj["Key"]: obj for obj in page.get("Contents") or []}
        if len(listings) < 2:
            return
        listed = set().union(*(set(rows) for rows in listings.values()))
        keys = sorted(listed - skip)
        if self.dry_run:
            # Keys the ledger replay would have settled count as checked, as in a real run.
            self.totals["checked"] += len(listed & skip)
        total += len(keys)
        for key in keys:
            self.totals["checked"] += 1
            try:
                self._compare_key(key, listings)
            except EndpointError as exc:
                self.totals["failed"] += 1
                self._report("compare", key, False, error=f"{type(exc).__name__}: {exc}")
            done[0] += 1
            if self.progress is not None:
                self.progress("compare", done[0], total)

    def _compare_key(self, key: str, listings: Mapping[str, Mapping[str, dict[str, Any]]]) -> None:
        rows = {name: listing.get(key) for name, listing in listings.items()}
        present = {name: row for name, row in rows.items() if row is not None}
        newest = self._newest(present)
        assert newest is not None
        src, src_row = newest
        stale: list[Endpoint] = []
        src_head: Mapping[str, Any] | None = None
        for name, row in rows.items():
            ep = self.by_name[name]
            if ep is src:
                continue
            if row is not None and row.get("Size") == src_row.get("Size"):
                etag_a, etag_b = str(src_row.get("ETag") or ""), str(row.get("ETag") or "")
                if etag_a == etag_b:
                    continue
                if not (_single_part(etag_a) and _single_part(etag_b)):
                    # Same size, one side multipart: compare the source ETags s3kit's copies
                    # carry in their metadata (a HEAD each).
                    src_head = src_head or self._head(src, key)
                    other = self._head(ep, key)
                    if src_head is None or (other is not None and self._same(src_head, other)):
                        continue
            stale.append(ep)
        if not stale:
            return
        if src_head is None:
            src_head = self._head(src, key)
            if src_head is None:
                return  # deleted meanwhile
        for dst in stale:
            if not self.dry_run:
                try:
                    self.copy(src, dst, key, src_head)
                except EndpointError as exc:
                    self.totals["failed"] += 1
                    self._report(
                        "copy", key, False, source=src.name, endpoint=dst.name,
                        error=f"{type(exc).__name__}: {exc}",
                    )  # fmt: skip
                    continue
            self.totals["copied"] += 1
            self._report("copy", key, True, source=src.name, endpoint=dst.name)


def _later(a: Any, b: Any) -> bool:
    try:
        return bool(a is not None and (b is None or a > b))
    except TypeError:
        return False


def _probe(ep: Endpoint, bucket: str) -> BaseException | None:
    """One probe of a member for repair: a one-key listing of ``bucket``. None if it answered.

    It takes the half-open probe when one is due (like ``check_health``); unlike a health
    check it does not wait for an open breaker's interval: repair is an explicit request, and
    a member that answers gets its breaker closed so the copies to it can run now.
    """
    breaker = ep.breaker
    verdict = breaker.admit()
    is_probe = verdict == PROBE
    timeout = min(PROBE_TIMEOUT_S, ep.config.read_timeout)
    error: BaseException | None = None
    try:
        ep.transport.list_objects(ep.config.physical_bucket(bucket), None, 1, None, timeout)
        outcome = SUCCESS
    except EndpointError as exc:
        error, outcome = exc, classify(exc)
    except Exception as exc:  # not an answer we understand: treat it as no answer
        logger.warning("repair probe of %s failed unexpectedly: %r", ep.name, exc)
        if is_probe:
            breaker.release_probe()
        return exc
    down = outcome in (FAILURE, BAD_CREDENTIALS)
    if verdict == REJECT:
        if not down:
            breaker.reset()  # it answers: close it now rather than after its interval
    elif outcome == FAILURE:
        breaker.on_failure(is_probe)
    elif outcome == THROTTLE:
        breaker.on_throttle(is_probe)
    else:
        breaker.on_success(is_probe)
    return error if down else None


def probe_members(
    mux: Multiplexer, members: Sequence[Endpoint], bucket: str, wait_s: float = 0.0
) -> dict[str, BaseException]:
    """Probe every member in parallel; those that did not answer are probed again every
    ``PROBE_PAUSE_S`` until ``wait_s`` has passed. Returns ``{name: last error}`` of the
    members still down (an empty dict when all answered)."""
    clock = mux._clock
    end = clock.monotonic() + max(0.0, wait_s)
    pending = list(members)
    down: dict[str, BaseException] = {}
    if not pending:
        return down
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=len(pending), thread_name_prefix="s3kit-repair-probe"
    ) as pool:
        while True:
            errors = list(pool.map(lambda ep: _probe(ep, bucket), pending))
            down = {ep.name: e for ep, e in zip(pending, errors, strict=True) if e is not None}
            pending = [ep for ep in pending if ep.name in down]
            if not pending or clock.monotonic() + PROBE_PAUSE_S > end:
                return down
            clock.sleep(PROBE_PAUSE_S)


def _report_abort(run: _Repair, upload: Mapping[str, Any]) -> None:
    run._report(
        "abort", upload["Key"], True, endpoint=upload["Endpoint"], upload_id=upload["UploadId"]
    )


def repair(
    mux: Multiplexer,
    groups: Iterable[ReplicaGroup],
    bucket: str,
    prefix: str = "",
    dry_run: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    on_action: Callable[[dict[str, Any]], None] | None = None,
    wait_s: float = 0.0,
) -> dict[str, Any]:
    """Probe the members, replay the ledger, then compare the members' listings; see
    ``Multiplexer.repair``."""
    totals: dict[str, int] = {"checked": 0, "copied": 0, "failed": 0, "from_ledger": 0}
    unreachable: list[str] = []
    tmpdir = tempfile.mkdtemp(prefix="s3kit-repair-")
    try:
        for group in groups:
            down = probe_members(mux, mux._members(group), bucket, wait_s)
            run = _Repair(
                mux, group, bucket, prefix, dry_run, totals, progress, on_action, tmpdir, down
            )
            entries = run.ledger.entries(group.name, bucket, prefix)
            for name, error in down.items():
                # One failure for the member, not one per object it is owed.
                owed = sum(1 for e in entries if e.endpoint == name)
                totals["failed"] += 1
                unreachable.append(name)
                logger.warning(
                    "repair: %s (replica set %s) did not answer and was skipped; %d ledger "
                    "rows stay owed to it: %s",
                    name, group.name, owed, error,
                )  # fmt: skip
                run._report(
                    "probe", "", False, endpoint=name, owed=owed,
                    error=f"{type(error).__name__}: {error}",
                )  # fmt: skip
            # Multipart uploads that failed on a member (whose abort failed too): abort what
            # they left, now that the member answers.
            members = [ep for ep in mux._members(group) if ep.name not in down]
            _aborted, abort_errors = _uploads.settle_failed(
                run.ledger,
                members,
                bucket,
                dry_run,
                functools.partial(_report_abort, run),
            )
            for name, error in abort_errors.items():
                totals["failed"] += 1
                run._report(
                    "abort", "", False, endpoint=name, error=f"{type(error).__name__}: {error}"
                )
            reachable = [e for e in entries if e.endpoint not in down]
            done = [0]
            run.replay(entries, done, len(reachable))
            if dry_run:
                skip = {e.key for e in entries}
            else:
                skip = {e.key for e in run.ledger.entries(group.name, bucket, prefix)}
            # Keys still owed something are not compared: a tombstone not yet replayed must
            # not be undone by copying the key back from the member that missed the delete.
            run.compare(skip, done, len(reachable))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return {**totals, "unreachable": unreachable}
