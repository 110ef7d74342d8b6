"""Bulk sync between endpoints: sharded, parallel (local processes or Dask), resumable.

::

    from s3kit.bulk import sync

    counts = sync("primary:data/logs", "backup:data/logs", config="s3kit.toml", workers=4)
    # or on a Dask cluster (pip install "s3kit[dask]"):
    from distributed import Client
    counts = sync("primary:data", "backup:data", config="/shared/s3kit.toml",
                  client=Client("tcp://scheduler:8786"))

Paths are ``NAME:bucket/prefix`` with ``NAME`` an endpoint of the configuration file. A non-empty
prefix is a directory: ``primary:data/logs`` means the keys under ``logs/`` (as ``aws s3 sync``).

How it works:

* **Sharding.** The source is listed with delimiter ``/`` at the top of the prefix: each common
  prefix becomes a shard, and the keys directly under the prefix form range shards. A shard holding
  more than ``shard_size`` keys is split into ``StartAfter`` key ranges at page boundaries, so the
  shards (and their listings) run in parallel. With ``delete`` the destination's top level is
  listed too, so prefixes that only exist there are cleared.
* **A shard task** lists its range on both sides and compares key, size and ETag (the ETag only
  when both are single-part; a copy made here of a multipart object, or into one, carries the
  source's ETag in metadata ``s3kit-source-etag``, compared instead). It copies what is missing or
  stale: a server-side ``copy_object`` when source and destination are the same endpoint, else
  GET + PUT below 8 MiB and a download to a temporary file + multipart upload above (constant
  memory). With ``delete`` it deletes destination keys the source lacks.
* **Workers.** ``workers=1`` runs the shards in this process; ``workers=N`` in ``N`` spawned
  processes; ``client=`` a ``distributed.Client`` runs them as Dask tasks (``s3kit-sync-…`` in the
  dashboard). A task receives the configuration file's *path*, the two locations, the shard's
  bounds and the options - never a multiplexer or a secret: each worker process reads the file
  (and the ``${VAR}`` environment variables it names) and builds its own multiplexer, kept for the
  process's later tasks. So the file and the variables must exist on every worker. Each worker
  process keeps every endpoint's ``max_concurrent`` limit for all its tasks together.
* **Resumable.** Before the first shard runs, the plan is written to a SQLite state file
  (``state_path``, default ``$XDG_STATE_HOME/s3kit/sync.sqlite``) under a hash of the job (config,
  source, destination, options) - or, with ``state="s3"``, to objects under ``.s3kit-sync/`` in
  the destination (see :class:`_S3State`), so a driver on another machine resumes; a shard is
  recorded done once every copy and delete in it succeeded. A rerun of an unfinished job (a
  crash, Ctrl-C, failed copies) skips the done shards. Once every shard is done the job is
  marked finished, and the next run plans afresh (and copies nothing when nothing changed). A
  killed worker loses nothing: its shard runs again (Dask reschedules it; the local pool is
  rebuilt) and copies only what is still missing.
* **Retries.** Every request has its endpoint's retries; a shard that raised or had failed copies
  is run once more (Dask also retries a raising task twice). What still fails is counted in
  ``"failed"`` and left for the next run.

:func:`replicate` (one source, several destinations) and :func:`repair` (the members of a
replica set; each key's newest version wins) run on the same shards, workers and state.

``sync`` returns ``{"listed", "copied", "skipped", "deleted", "failed", "bytes", "shards",
"shards_skipped", "dry_run"}``: ``listed`` source objects compared in this run, ``bytes`` copied
(or that would be, with ``dry_run``), ``shards`` in the plan and ``shards_skipped`` done by an
earlier run. ``dry_run`` changes nothing (and leaves the state file alone): the counts and
``on_action`` report what would be done.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ._configfile import find_config, load_config
from ._errors import ConfigError, EndpointError, InvalidArgument, NotFound, S3KitError
from ._ops import READ, Op
from ._replica import SOURCE_ETAG  # metadata: the ETag of the object a copy was made from
from ._transport import next_token
from ._transport._boto3 import MULTIPART_THRESHOLD, map_boto_error

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._mux import Multiplexer

__all__ = [
    "COUNTS",
    "MANIFEST_PREFIX",
    "STATES",
    "Location",
    "Shard",
    "SyncJob",
    "bench_bulk",
    "cli_repair",
    "cli_replicate",
    "cli_sync",
    "compare",
    "default_state_path",
    "iter_listing",
    "parse_location",
    "plan_shard",
    "plan_shards",
    "repair",
    "replicate",
    "run_bench_bulk",
    "run_shard",
    "sync",
]

COUNTS = ("listed", "copied", "skipped", "deleted", "failed", "bytes", "shards", "shards_skipped")

MANIFEST_PREFIX = (
    ".s3kit-sync/"  # under a location's prefix: resume state (state="s3"), never synced
)
_PAGE = 1000  # keys per ListObjectsV2 request
_SMALL = MULTIPART_THRESHOLD  # below: GET + PUT in memory; above: temp file + multipart upload
_COPY_LIMIT = 5 * 2**30  # CopyObject's limit; larger objects are streamed
_PLAN_THREADS = 8  # concurrent prefix listings while planning
_MAX_ERRORS = 100  # error records a shard returns
_ATTEMPTS = 2  # runs of a shard that raised or had failed copies
_POOL_REBUILDS = 5  # local pool rebuilt at most this often after a worker died
_COPIED_FIELDS = (
    "ContentType",
    "CacheControl",
    "ContentDisposition",
    "ContentEncoding",
    "ContentLanguage",
)

_log = logging.getLogger("s3kit")

PageFn = Callable[[str, "str | None", "str | None", "str | None"], Mapping[str, Any]]
"""One ListObjectsV2 page: ``(prefix, start_after, delimiter, continuation_token) -> response``."""

Progress = Callable[[Mapping[str, int]], None]
Row = tuple[int, str]  # (size, ETag) of one listed object


# ------------------------------------------------------------------------------ locations
@dataclass(frozen=True)
class Location:
    """``NAME:bucket/prefix``: an endpoint's bucket and a prefix ("" or ending in ``/``)."""

    endpoint: str
    bucket: str
    prefix: str = ""

    @property
    def text(self) -> str:
        return f"{self.endpoint}:{self.bucket}/{self.prefix}"

    def key(self, rel: str) -> str:
        return self.prefix + rel


def parse_location(text: str) -> Location:
    """Parse ``NAME:bucket[/prefix]``; a non-empty prefix gets a trailing ``/`` (a directory)."""
    if not isinstance(text, str) or not text:
        raise InvalidArgument("location", "expected NAME:bucket[/prefix]")
    if text.startswith("s3://"):
        raise InvalidArgument(
            "location", f"{text!r}: sync needs NAME:bucket/prefix (a named endpoint), not s3://"
        )
    name, sep, rest = text.partition(":")
    if not sep or not name or "/" in name:
        raise InvalidArgument("location", f"{text!r}: expected NAME:bucket[/prefix]")
    bucket, _, prefix = rest.lstrip("/").partition("/")
    if not bucket:
        raise InvalidArgument("location", f"{text!r} names no bucket")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return Location(name, bucket, prefix)


def _overlap(a: Location, b: Location) -> bool:
    return (
        a.endpoint == b.endpoint
        and a.bucket == b.bucket
        and (a.prefix.startswith(b.prefix) or b.prefix.startswith(a.prefix))
    )


# --------------------------------------------------------------------------------- shards
@dataclass(frozen=True)
class Shard:
    """Keys ``prefix + k`` (relative to the location's prefix) with ``start_after < k <= end``.

    ``flat`` shards hold only keys with no ``/`` after ``prefix`` (a delimiter listing).
    ``objects``/``bytes`` are what the planner saw on the source (for progress only).
    """

    prefix: str = ""
    start_after: str | None = None
    end: str | None = None
    flat: bool = False
    objects: int = 0
    bytes: int = 0

    @property
    def id(self) -> str:
        text = json.dumps([self.prefix, self.start_after, self.end, self.flat])
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def contains(self, rel: str) -> bool:
        if not rel.startswith(self.prefix):
            return False
        if self.flat and "/" in rel[len(self.prefix) :]:
            return False
        if self.start_after is not None and rel <= self.start_after:
            return False
        return self.end is None or rel <= self.end

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Shard:
        return cls(**json.loads(text))


def iter_listing(
    page: PageFn,
    root: str,
    prefix: str = "",
    start_after: str | None = None,
    end: str | None = None,
    delimiter: str | None = None,
    prefixes: list[str] | None = None,
) -> Iterator[tuple[str, int, str]]:
    """``(relative key, size, ETag)`` under ``root + prefix`` in ``(start_after, end]``.

    Keys and bounds are relative to ``root``; common prefixes (with ``delimiter``) are appended to
    ``prefixes``, relative too.
    """
    for rel, obj in _iter_objects(page, root, prefix, start_after, end, delimiter, prefixes):
        yield rel, int(obj.get("Size") or 0), str(obj.get("ETag") or "")


def _iter_objects(
    page: PageFn,
    root: str,
    prefix: str = "",
    start_after: str | None = None,
    end: str | None = None,
    delimiter: str | None = None,
    prefixes: list[str] | None = None,
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(relative key, listing entry)``: :func:`iter_listing` with the whole entry."""
    first = root + start_after if start_after is not None else None
    last = root + end if end is not None else None
    cut = len(root)
    token: str | None = None
    while True:
        resp = page(root + prefix, first if token is None else None, delimiter, token)
        if prefixes is not None:
            prefixes.extend(cp["Prefix"][cut:] for cp in resp.get("CommonPrefixes") or [])
        for obj in resp.get("Contents") or []:
            key = obj["Key"]
            if last is not None and key > last:
                return
            yield key[cut:], obj
        if not resp.get("IsTruncated"):
            return
        token = str(resp["NextContinuationToken"])  # vetted by next_token in _list_page


def _chunk(
    rows: Iterator[tuple[str, int, str]], shard_size: int, prefix: str, flat: bool
) -> list[Shard]:
    """Range shards of at most ``shard_size`` keys; the first and last are open-ended."""
    shards: list[Shard] = []
    start: str | None = None
    count = size = 0
    last: str | None = None
    for key, nbytes, _ in rows:
        if count == shard_size:
            shards.append(Shard(prefix, start, last, flat, count, size))
            start, count, size = last, 0, 0
        count += 1
        size += nbytes
        last = key
    shards.append(Shard(prefix, start, None, flat, count, size))  # open-ended (maybe empty)
    return shards


def plan_shards(
    src_page: PageFn,
    src_root: str,
    shard_size: int,
    *,
    dst_page: PageFn | None = None,
    dst_root: str = "",
    threads: int = _PLAN_THREADS,
    others: Sequence[tuple[PageFn, str]] = (),
) -> list[Shard]:
    """The shards of a sync: one (or more, ``shard_size`` keys each) per top-level common prefix
    of the source, range shards for the keys directly under the root, and - when ``dst_page`` is
    given (``delete``), or ``others`` (more ``(page, root)`` locations, e.g. a repair's other
    members) - one per common prefix only those have. Together they cover every key under all
    roots exactly once. The manifest prefix (``.s3kit-sync/``) is never part of a shard."""
    prefixes: list[str] = []
    flat = _chunk(iter_listing(src_page, src_root, "", delimiter="/", prefixes=prefixes),
                  shard_size, "", True)  # fmt: skip
    prefixes = [p for p in prefixes if p != MANIFEST_PREFIX]
    extra = list(others)
    if dst_page is not None:
        extra.insert(0, (dst_page, dst_root))
    shards = [s for s in flat if s.objects or extra]

    def one(prefix: str) -> list[Shard]:
        return _chunk(iter_listing(src_page, src_root, prefix), shard_size, prefix, False)

    if prefixes:
        with concurrent.futures.ThreadPoolExecutor(max(1, min(threads, len(prefixes)))) as pool:
            for part in pool.map(one, prefixes):
                shards.extend(part)
    seen = set(prefixes) | {MANIFEST_PREFIX}
    for page, root in extra:
        theirs: list[str] = []
        for _ in iter_listing(page, root, "", delimiter="/", prefixes=theirs):
            pass
        for p in theirs:
            if p not in seen:
                seen.add(p)
                shards.append(Shard(p))
    return shards


# ------------------------------------------------------------------------------- compare
def _single_part(etag: str) -> bool:
    text = etag.strip('"')
    return len(text) == 32 and all(c in "0123456789abcdefABCDEF" for c in text)


def compare(src: Row, dst: Row | None, dst_source_etag: str | None = None) -> str:
    """``"missing"``, ``"same"``, ``"stale"`` or ``"check"`` (a HEAD of the destination is needed
    to read its ``s3kit-source-etag``; pass it as ``dst_source_etag``)."""
    if dst is None:
        return "missing"
    if src[0] != dst[0]:
        return "stale"
    if src[1] == dst[1]:
        return "same"
    if _single_part(src[1]) and _single_part(dst[1]):
        return "stale"
    if dst_source_etag is None:
        return "check"
    return "same" if dst_source_etag == src[1] else "stale"


@dataclass
class ShardPlan:
    copy: list[tuple[str, int, str, str]] = field(default_factory=list)  # key, size, etag, why
    check: list[tuple[str, int, str]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    same: int = 0


def plan_shard(src: Mapping[str, Row], dst: Mapping[str, Row], delete: bool) -> ShardPlan:
    """What one shard needs: copies (missing or stale), HEAD checks, deletes, and how many match."""
    plan = ShardPlan()
    for key in sorted(src):
        row = src[key]
        verdict = compare(row, dst.get(key))
        if verdict == "same":
            plan.same += 1
        elif verdict == "check":
            plan.check.append((key, row[0], row[1]))
        else:
            plan.copy.append((key, row[0], row[1], verdict))
    if delete:
        plan.delete = sorted(k for k in dst if k not in src)
    return plan


# ---------------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class SyncJob:
    """What a shard task gets: references and options only (no multiplexer, no secret).

    A sync copies ``src`` to ``dst``; a replicate copies ``src`` to ``dst`` and each of ``more``;
    a repair (``newest``) treats ``src``, ``dst`` and ``more`` as the members of a replica set
    and copies each key's newest version to the members that lack it or hold another one.
    """

    config: str  # absolute path of the configuration file, read by each worker
    src: Location
    dst: Location
    delete: bool = False
    dry_run: bool = False
    copy_threads: int = 0  # per shard; 0: the largest max_concurrent of the endpoints
    more: tuple[Location, ...] = ()  # further destinations (replicate) or members (repair)
    newest: bool = False  # repair: no fixed source; a key's newest version wins
    skip: frozenset[str] = frozenset()  # relative keys left alone (repair: owed in the ledger)
    kind: str = "sync"  # "replicate" and "repair" name the endpoints in actions and errors

    @property
    def same_endpoint(self) -> bool:
        return self.src.endpoint == self.dst.endpoint

    @property
    def dsts(self) -> tuple[Location, ...]:
        return (self.dst, *self.more)

    @property
    def locations(self) -> tuple[Location, ...]:
        return (self.src, self.dst, *self.more)


class _Worker:
    """One process's multiplexer for a configuration file, with per-endpoint slots."""

    def __init__(self, config: str) -> None:
        from ._mux import Multiplexer

        self.mux: Multiplexer = Multiplexer.from_config(config, health_interval=None)
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def slot(self, endpoint: str) -> threading.BoundedSemaphore:
        """At most ``max_concurrent`` bulk requests per endpoint in this process (waits freely,
        so a long transfer never makes the endpoint's limiter raise EndpointSaturated)."""
        sem = self._slots.get(endpoint)
        if sem is None:
            limit = self.mux.endpoint(endpoint).config.max_concurrent
            with self._lock:
                sem = self._slots.setdefault(endpoint, threading.BoundedSemaphore(max(1, limit)))
        return sem

    def page_fn(self, endpoint: str, bucket: str) -> PageFn:
        ep = self.mux.endpoint(endpoint)
        sem = self.slot(endpoint)

        def page(
            prefix: str, start_after: str | None, delimiter: str | None, token: str | None
        ) -> Mapping[str, Any]:
            with sem:
                return _list_page(ep, bucket, prefix, start_after, delimiter, token)

        return page


_workers: dict[tuple[str, int, float], _Worker] = {}
_workers_lock = threading.Lock()


def _worker(config: str) -> _Worker:
    """This process's worker for ``config`` (rebuilt after a fork or when the file changed)."""
    try:
        mtime = os.stat(config).st_mtime
    except OSError:
        mtime = 0.0
    key = (config, os.getpid(), mtime)
    worker = _workers.get(key)
    if worker is None:
        with _workers_lock:
            worker = _workers.get(key)
            if worker is None:
                worker = _Worker(config)
                _workers[key] = worker
    return worker


def _drop_worker(config: str) -> None:
    with _workers_lock:
        for key in [k for k in _workers if k[0] == config and k[1] == os.getpid()]:
            with contextlib.suppress(Exception):
                _workers.pop(key).mux.close(timeout=5)


def _list_page(
    ep: Endpoint,
    bucket: str,
    prefix: str,
    start_after: str | None,
    delimiter: str | None,
    token: str | None,
) -> dict[str, Any]:
    """One ListObjectsV2 page (the transport's list_objects merges every page), sent through the
    endpoint's breaker, limiter and retries, with the boto3 client (``handler.client``)."""
    params: dict[str, Any] = {"Bucket": ep.config.physical_bucket(bucket), "MaxKeys": _PAGE}
    if prefix:
        params["Prefix"] = prefix
    if start_after:
        params["StartAfter"] = start_after
    if delimiter:
        params["Delimiter"] = delimiter
    if token:
        params["ContinuationToken"] = token

    def attempt(endpoint: Endpoint, timeout: float | None) -> dict[str, Any]:
        try:
            resp = dict(endpoint.client.list_objects_v2(**params))
        except EndpointError:
            raise
        except Exception as exc:
            raise map_boto_error(exc, endpoint.name, "list_objects") from exc
        next_token(resp, token, endpoint.name)  # a page that would loop fails on its endpoint
        return resp

    return ep.run(Op("list_objects", attempt, READ, bucket))


def _rows(page: PageFn, loc: Location, shard: Shard) -> dict[str, Row]:
    return {rel: (size, etag) for rel, (size, etag, _) in _entries(page, loc, shard).items()}


def _entries(page: PageFn, loc: Location, shard: Shard) -> dict[str, tuple[int, str, Any]]:
    """``rel -> (size, ETag, LastModified)`` of one location's part of ``shard``."""
    rows: dict[str, tuple[int, str, Any]] = {}
    delimiter = "/" if shard.flat else None
    for rel, obj in _iter_objects(
        page, loc.prefix, shard.prefix, shard.start_after, shard.end, delimiter
    ):
        if not rel.startswith(MANIFEST_PREFIX):
            rows[rel] = (
                int(obj.get("Size") or 0),
                str(obj.get("ETag") or ""),
                obj.get("LastModified"),
            )
    return rows


def _extra(head: Mapping[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {name: head[name] for name in _COPIED_FIELDS if head.get(name)}
    extra["Metadata"] = dict(head.get("Metadata") or {})
    return extra


def _effective(head: Mapping[str, Any]) -> str:
    """The ETag a version is known by: its own when single-part, else the source ETag an s3kit
    copy carries (a multipart original: its own)."""
    etag = str(head.get("ETag") or "")
    if _single_part(etag):
        return etag
    return str((head.get("Metadata") or {}).get(SOURCE_ETAG) or etag)


def _later(a: Any, b: Any) -> bool:
    try:
        return bool(a is not None and (b is None or a > b))
    except TypeError:
        return False


Copy = tuple[Location, Location, str, int, str, str]  # src, dst, key, size, ETag, why


class _ShardRun:
    def __init__(self, job: SyncJob, shard: Shard) -> None:
        self.job = job
        self.shard = shard
        self.worker = _worker(job.config)
        self.mux = self.worker.mux
        self.lock = threading.Lock()
        self.result: dict[str, Any] = {
            "shard": shard.id,
            "listed": 0,
            "copied": 0,
            "skipped": 0,
            "deleted": 0,
            "failed": 0,
            "bytes": 0,
            "errors": [],
            "actions": [],
        }
        self.tmpdir: str | None = None

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.result[name] += n

    def fail(self, action: str, key: str, exc: BaseException, **detail: Any) -> None:
        with self.lock:
            self.result["failed"] += 1
            if len(self.result["errors"]) < _MAX_ERRORS:
                self.result["errors"].append(
                    {
                        "action": action,
                        "key": key,
                        "error": f"{type(exc).__name__}: {exc}",
                        **detail,
                    }
                )

    def run(self) -> dict[str, Any]:
        job, shard, w = self.job, self.shard, self.worker
        locs = job.locations
        with concurrent.futures.ThreadPoolExecutor(len(locs)) as pool:
            futures = [
                pool.submit(_entries, w.page_fn(loc.endpoint, loc.bucket), loc, shard)
                for loc in locs
            ]
            listings = [f.result() for f in futures]
        for listing in listings:
            for rel in job.skip.intersection(listing):
                del listing[rel]
        copies: list[Copy] = []
        checks: list[tuple[Location, str, int, str]] = []
        deletes: list[tuple[Location, str]] = []
        if job.newest:
            keys = set().union(*(set(listing) for listing in listings))
            self.result["listed"] = len(keys)
            copies = self._plan_newest(listings)
        else:
            src = {k: (size, etag) for k, (size, etag, _) in listings[0].items()}
            self.result["listed"] = len(src)
            for dst_loc, listing in zip(job.dsts, listings[1:], strict=True):
                theirs = {k: (size, etag) for k, (size, etag, _) in listing.items()}
                plan = plan_shard(src, theirs, job.delete)
                self.result["skipped"] += plan.same
                copies += [(job.src, dst_loc, *item) for item in plan.copy]
                checks += [(dst_loc, *item) for item in plan.check]
                deletes += [(dst_loc, key) for key in plan.delete]
        threads = job.copy_threads or max(
            self.mux.endpoint(loc.endpoint).config.max_concurrent for loc in locs
        )
        threads = max(1, min(64, threads))
        try:
            with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                checked = list(pool.map(self._check, checks))
                copies += [
                    (job.src, dst, k, size, e, "stale")
                    for (dst, k, size, e), same in zip(checks, checked, strict=True)
                    if not same
                ]
                self.add("skipped", sum(1 for same in checked if same))
                for item in copies:
                    pool.submit(self._copy, *item)
                for dst, key in deletes:
                    pool.submit(self._delete, dst, key)
        finally:
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
        return self.result

    def _plan_newest(self, listings: Sequence[Mapping[str, tuple[int, str, Any]]]) -> list[Copy]:
        """A repair's copies: for each key, its newest version (by LastModified; the first
        member on a tie) to every member that lacks it or holds another version."""
        job = self.job
        locs = job.locations
        keys = sorted(set().union(*(set(listing) for listing in listings)))
        copies: list[Copy] = []
        checks: list[tuple[int, int, str]] = []  # (source index, member index, key)
        for key in keys:
            best = -1
            for i, listing in enumerate(listings):
                row = listing.get(key)
                if row is not None and (best < 0 or _later(row[2], listings[best][key][2])):
                    best = i
            size, etag, _ = listings[best][key]
            for i, listing in enumerate(listings):
                if i == best:
                    continue
                row = listing.get(key)
                verdict = compare((size, etag), None if row is None else (row[0], row[1]))
                if verdict == "same":
                    self.result["skipped"] += 1
                elif verdict == "check":
                    checks.append((best, i, key))
                else:
                    copies.append((locs[best], locs[i], key, size, etag, verdict))
        for best, i, key in checks:  # one side multipart: compare what the versions are known by
            try:
                heads = [self._head(locs[best], key), self._head(locs[i], key)]
            except S3KitError as exc:
                self.fail("compare", key, exc, endpoint=locs[i].endpoint)
                continue
            if heads[0] is None:
                continue  # deleted meanwhile
            size, etag, _ = listings[best][key]
            if heads[1] is not None and _effective(heads[0]) == _effective(heads[1]):
                self.result["skipped"] += 1
            else:
                copies.append((locs[best], locs[i], key, size, etag, "stale"))
        return copies

    def _head(self, loc: Location, key: str) -> dict[str, Any] | None:
        try:
            with self.worker.slot(loc.endpoint):
                return self.mux.head_object(loc.bucket, loc.key(key), endpoint=loc.endpoint)
        except NotFound:
            return None

    # ---------------------------------------------------------------- one object
    def _check(self, item: tuple[Location, str, int, str]) -> bool:
        """Whether the destination's copy carries the source's ETag (``s3kit-source-etag``)."""
        dst, key, size, etag = item
        try:
            with self.worker.slot(dst.endpoint):
                head = self.mux.head_object(dst.bucket, dst.key(key), endpoint=dst.endpoint)
        except S3KitError:
            return False  # gone or unreadable: copy it again
        meta = head.get("Metadata") or {}
        dst_row = (int(head.get("ContentLength") or 0), str(head.get("ETag") or ""))
        return compare((size, etag), dst_row, str(meta.get(SOURCE_ETAG) or "")) == "same"

    def _copy(self, src: Location, dst: Location, key: str, size: int, etag: str, why: str) -> None:
        job = self.job
        detail = {"source": src.endpoint, "endpoint": dst.endpoint} if job.kind != "sync" else {}
        if job.dry_run:
            with self.lock:
                self.result["copied"] += 1
                self.result["bytes"] += size
                self.result["actions"].append(
                    {"action": "copy", "key": key, "size": size, "reason": why, **detail}
                )
            return
        try:
            if not dst.key(key):
                raise InvalidArgument("key", f"{src.key(key)!r} maps to an empty key")
            if src.endpoint == dst.endpoint and size <= _COPY_LIMIT:
                self._server_side(src, dst, key, etag)
            elif size < _SMALL:
                self._small(src, dst, key)
            else:
                self._large(src, dst, key)
        except Exception as exc:  # counted; the shard is not recorded done
            self.fail("copy", key, exc, **detail)
            return
        with self.lock:
            self.result["copied"] += 1
            self.result["bytes"] += size

    def _tag(self, head: Mapping[str, Any]) -> str:
        """The ``s3kit-source-etag`` a copy of ``head``'s version carries: a sync tags its
        source's ETag, a repair what the version is known by (so members converge)."""
        return _effective(head) if self.job.newest else str(head.get("ETag") or "")

    def _server_side(self, src: Location, dst: Location, key: str, etag: str) -> None:
        mux = self.mux
        name = src.endpoint
        extra: dict[str, Any] | None = None
        with self.worker.slot(name):
            if not _single_part(etag):
                # The copy gets another ETag: tag it with the source's, keeping the metadata.
                head = mux.head_object(src.bucket, src.key(key), endpoint=name)
                extra = _extra(head)
                extra["Metadata"][SOURCE_ETAG] = self._tag(head) or etag
                extra["MetadataDirective"] = "REPLACE"
            mux.copy_object(
                dst.bucket, dst.key(key), src.bucket, src.key(key), extra, endpoint=name
            )

    def _small(self, src: Location, dst: Location, key: str) -> None:
        mux = self.mux
        with self.worker.slot(src.endpoint):
            got = mux.get_object(src.bucket, src.key(key), endpoint=src.endpoint)
        extra = _extra(got)
        if not _single_part(str(got.get("ETag") or "")):
            extra["Metadata"][SOURCE_ETAG] = self._tag(got)
        with self.worker.slot(dst.endpoint):
            mux.put_object(dst.bucket, dst.key(key), got["Body"], extra, endpoint=dst.endpoint)

    def _large(self, src: Location, dst: Location, key: str) -> None:
        mux = self.mux
        with self.lock:
            if self.tmpdir is None:
                self.tmpdir = tempfile.mkdtemp(prefix="s3kit-sync-")
            path = os.path.join(self.tmpdir, uuid.uuid4().hex)
        try:
            with self.worker.slot(src.endpoint):
                head = mux.head_object(src.bucket, src.key(key), endpoint=src.endpoint)
                # A scratch copy, uploaded and deleted: no fsync.
                got = mux.download_file(
                    src.bucket, src.key(key), path, endpoint=src.endpoint, fsync=False
                )
            extra = _extra(head)
            # The upload is multipart: its ETag differs, the source's goes into metadata.
            copied = {**head, "ETag": got.get("ETag") or head.get("ETag")}
            extra["Metadata"][SOURCE_ETAG] = self._tag(copied)
            with self.worker.slot(dst.endpoint):
                mux.upload_file(path, dst.bucket, dst.key(key), extra, endpoint=dst.endpoint)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _delete(self, dst: Location, key: str) -> None:
        job = self.job
        detail = {"endpoint": dst.endpoint} if job.kind != "sync" else {}
        if job.dry_run:
            with self.lock:
                self.result["deleted"] += 1
                self.result["actions"].append({"action": "delete", "key": key, **detail})
            return
        try:
            with self.worker.slot(dst.endpoint):
                self.mux.delete_object(dst.bucket, dst.key(key), endpoint=dst.endpoint)
        except Exception as exc:
            self.fail("delete", key, exc, **detail)
            return
        self.add("deleted")


def run_shard(job: SyncJob, shard: Shard) -> dict[str, Any]:
    """One shard task (local pool, Dask or in process): compare and copy one key range.

    Returns counts (``listed``, ``copied``, ``skipped``, ``deleted``, ``failed``, ``bytes``),
    ``errors`` (up to 100) and, with ``dry_run``, ``actions``. Idempotent: a rerun copies only
    what is still missing or stale. A listing that fails raises (the shard is run again).
    """
    return _ShardRun(job, shard).run()


# --------------------------------------------------------------------------------- state
def default_state_path() -> str:
    """``$XDG_STATE_HOME/s3kit/sync.sqlite``, else ``~/.local/state/s3kit/sync.sqlite``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "s3kit", "sync.sqlite")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job TEXT PRIMARY KEY,
    src TEXT NOT NULL,
    dst TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    finished INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS shards (
    job TEXT NOT NULL,
    shard TEXT NOT NULL,
    spec TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    PRIMARY KEY (job, shard)
);
"""


class _State:
    """The sync state file: each unfinished job's plan and which of its shards are done."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path or default_state_path())))
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.executescript(_SCHEMA)

    def resume(self, job: str) -> list[tuple[Shard, bool]] | None:
        row = self.conn.execute("SELECT finished FROM jobs WHERE job = ?", (job,)).fetchone()
        if row is None or row[0]:
            return None
        rows = self.conn.execute(
            "SELECT spec, done FROM shards WHERE job = ? ORDER BY rowid", (job,)
        ).fetchall()
        return [(Shard.from_json(spec), bool(done)) for spec, done in rows] or None

    def save_plan(self, job: str, src: str, dst: str, shards: Sequence[Shard]) -> None:
        now = time.time()
        with self._tx() as c:
            c.execute("DELETE FROM shards WHERE job = ?", (job,))
            c.execute(
                "INSERT OR REPLACE INTO jobs (job, src, dst, created, updated, finished) "
                "VALUES (?, ?, ?, ?, ?, 0)",
                (job, src, dst, now, now),
            )
            c.executemany(
                "INSERT OR REPLACE INTO shards (job, shard, spec) VALUES (?, ?, ?)",
                [(job, s.id, s.to_json()) for s in shards],
            )

    def done(self, job: str, shard: Shard, result: Mapping[str, Any]) -> None:
        counts = {k: result.get(k, 0) for k in COUNTS}
        with self._tx() as c:
            c.execute(
                "UPDATE shards SET done = 1, result = ? WHERE job = ? AND shard = ?",
                (json.dumps(counts), job, shard.id),
            )
            c.execute("UPDATE jobs SET updated = ? WHERE job = ?", (time.time(), job))

    def finish(self, job: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM shards WHERE job = ?", (job,))
            c.execute("UPDATE jobs SET finished = 1, updated = ? WHERE job = ?", (time.time(), job))

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class _S3State:
    """Resume state kept as objects next to the data, so a driver on another machine resumes.

    Under ``<location prefix>.s3kit-sync/<job>/``: ``plan.json`` (the shards and a run id) and,
    per finished shard, a small done marker ``<run>/<shard id>.json`` (its counts). Each marker
    is its own object, so drivers never rewrite a shared file; only the plan is ever replaced
    (a new run id), which orphans the old run's markers instead of mixing them in. Finishing a
    job deletes the plan first, then every object under the job's prefix. Listings and
    comparisons skip ``.s3kit-sync/``.
    """

    def __init__(self, mux: Multiplexer, loc: Location) -> None:
        self.mux = mux  # the driver's (closed by its owner)
        self.loc = loc
        self.path = f"{loc.text}{MANIFEST_PREFIX}"
        self.runs: dict[str, str] = {}

    def _key(self, *parts: str) -> str:
        return self.loc.key(MANIFEST_PREFIX + "/".join(parts))

    def _put(self, key: str, doc: Mapping[str, Any]) -> None:
        body = json.dumps(doc, separators=(",", ":")).encode()
        self.mux.put_object(self.loc.bucket, key, body, {"ContentType": "application/json"},
                            endpoint=self.loc.endpoint)  # fmt: skip

    def _keys(self, prefix: str) -> list[str]:
        got = self.mux.list_objects(self.loc.bucket, prefix, endpoint=self.loc.endpoint)
        return [str(obj["Key"]) for obj in got.get("Contents") or []]

    def resume(self, job: str) -> list[tuple[Shard, bool]] | None:
        try:
            got = self.mux.get_object(
                self.loc.bucket, self._key(job, "plan.json"), endpoint=self.loc.endpoint
            )
        except NotFound:
            return None
        try:
            plan = json.loads(got["Body"])
            run = str(plan["run"])
            shards = [Shard(**spec) for spec in plan["shards"]]
        except (ValueError, TypeError, KeyError) as exc:
            _log.warning("s3kit sync: unreadable plan under %s (%s); planning afresh", self.path,
                         type(exc).__name__)  # fmt: skip
            return None
        self.runs[job] = run
        marker_dir = self._key(job, run, "")
        done = {k[len(marker_dir) :].removesuffix(".json") for k in self._keys(marker_dir)}
        return [(shard, shard.id in done) for shard in shards] or None

    def save_plan(self, job: str, src: str, dst: str, shards: Sequence[Shard]) -> None:
        run = uuid.uuid4().hex[:12]
        doc = {
            "version": 1,
            "job": job,
            "run": run,
            "src": src,
            "dst": dst,
            "created": time.time(),
            "shards": [asdict(shard) for shard in shards],
        }
        self._put(self._key(job, "plan.json"), doc)
        self.runs[job] = run

    def done(self, job: str, shard: Shard, result: Mapping[str, Any]) -> None:
        counts = {k: result.get(k, 0) for k in COUNTS}
        try:
            self._put(self._key(job, self.runs[job], f"{shard.id}.json"), counts)
        except S3KitError as exc:  # not fatal: the shard runs again next time, copying nothing
            _log.warning("s3kit sync: could not record shard %s done under %s: %s", shard.id,
                         self.path, exc)  # fmt: skip

    def finish(self, job: str) -> None:
        try:
            self.mux.delete_object(
                self.loc.bucket, self._key(job, "plan.json"), endpoint=self.loc.endpoint
            )
            for key in self._keys(self._key(job, "")):
                self.mux.delete_object(self.loc.bucket, key, endpoint=self.loc.endpoint)
        except S3KitError as exc:  # leftovers of a finished job are ignored by the next run
            _log.warning("s3kit sync: could not clear %s: %s", self.path, exc)

    def close(self) -> None:
        pass


StateStore = _State | _S3State


def _job_id(config: str, src: Location, dst: Location, delete: bool, shard_size: int) -> str:
    text = json.dumps([config, src.text, dst.text, delete, shard_size])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# -------------------------------------------------------------------------------- driver
class _Tally:
    """The driver's running totals; calls ``progress`` after each shard."""

    def __init__(
        self,
        shards: Sequence[Shard],
        skipped: Sequence[Shard],
        progress: Progress | None,
        on_action: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.counts = dict.fromkeys(COUNTS, 0)
        self.counts["shards"] = len(shards) + len(skipped)
        self.counts["shards_skipped"] = len(skipped)
        self.objects_total = sum(s.objects for s in shards) + sum(s.objects for s in skipped)
        self.bytes_total = sum(s.bytes for s in shards) + sum(s.bytes for s in skipped)
        self.objects_done = sum(s.objects for s in skipped)
        self.bytes_done = sum(s.bytes for s in skipped)
        self.shards_done = len(skipped)
        self.progress = progress
        self.on_action = on_action

    def report(self) -> None:
        if self.progress is not None:
            self.progress(
                {
                    **self.counts,
                    "objects_done": self.objects_done,
                    "objects_total": self.objects_total,
                    "bytes_done": self.bytes_done,
                    "bytes_total": self.bytes_total,
                    "shards_done": self.shards_done,
                }
            )

    def add(self, shard: Shard, result: Mapping[str, Any], final: bool) -> None:
        """A shard's run ended (``final``: it will not run again in this job)."""
        for name in ("listed", "copied", "skipped", "deleted", "bytes"):
            self.counts[name] += int(result.get(name, 0))
        if final:
            self.counts["failed"] += int(result.get("failed", 0))
            self.shards_done += 1
            self.objects_done += shard.objects
            self.bytes_done += shard.bytes
        if self.on_action is not None:
            for action in result.get("actions") or []:
                self.on_action({**action, "ok": True, "dry_run": True})
            if final:
                for error in result.get("errors") or []:
                    self.on_action({**error, "ok": False, "dry_run": False})
        self.report()


def _failed_result(shard: Shard, exc: BaseException) -> dict[str, Any]:
    return {
        "shard": shard.id,
        "failed": max(1, shard.objects),
        "errors": [
            {"action": "shard", "key": shard.prefix, "error": f"{type(exc).__name__}: {exc}"}
        ],
    }


class _Driver:
    """Runs shards (in process, local pool or Dask), retries them, records them done."""

    def __init__(
        self,
        job: SyncJob,
        job_id: str,
        state: StateStore | None,
        tally: _Tally,
        kind: str = "sync",
    ) -> None:
        self.job = job
        self.job_id = job_id
        self.state = state
        self.tally = tally
        self.kind = kind
        self.attempts: dict[str, int] = {}
        self._jobs: dict[str, SyncJob] = {}

    def job_for(self, shard: Shard) -> SyncJob:
        """The job as ``shard``'s task gets it: only the skipped keys that fall in the shard."""
        if not self.job.skip:
            return self.job
        job = self._jobs.get(shard.id)
        if job is None:
            skip = frozenset(k for k in self.job.skip if shard.contains(k))
            job = self._jobs[shard.id] = replace(self.job, skip=skip)
        return job

    def finished(
        self, shard: Shard, result: Mapping[str, Any] | None, exc: BaseException | None
    ) -> bool:
        """Account for one run of ``shard``; True when it should run again."""
        n = self.attempts.get(shard.id, 0) + 1
        self.attempts[shard.id] = n
        if result is None:
            result = _failed_result(shard, exc or RuntimeError("shard failed"))
            ok = False
        else:
            ok = not result.get("failed")
        again = not ok and n < _ATTEMPTS
        if ok and self.state is not None:
            self.state.done(self.job_id, shard, result)  # before progress, which may raise
        # A shard that ran and is run again has its work counted twice otherwise: only the
        # final run's copies count (earlier runs' copies are then found "same" and skipped).
        self.tally.add(shard, result if not again else {}, final=not again)
        return again

    # ---------------------------------------------------------------- in process
    def run_here(self, shards: Sequence[Shard]) -> None:
        queue = list(shards)
        while queue:
            shard = queue.pop(0)
            try:
                result: dict[str, Any] | None = run_shard(self.job_for(shard), shard)
                exc: BaseException | None = None
            except Exception as error:  # run again once, then counted as failed
                result, exc = None, error
            if self.finished(shard, result, exc):
                queue.append(shard)

    # ---------------------------------------------------------------- local pool
    def run_pool(self, shards: Sequence[Shard], workers: int) -> None:
        pending = list(shards)
        rebuilds = 0
        ctx = multiprocessing.get_context("spawn")
        while pending:
            pending, broken = self._pool_round(pending, workers, ctx)
            if broken:
                rebuilds += 1
                if rebuilds > _POOL_REBUILDS:
                    for shard in pending:
                        failure = _failed_result(shard, RuntimeError("worker processes kept dying"))
                        self.tally.add(shard, failure, final=True)
                    return

    def _pool_round(
        self, queue: Sequence[Shard], workers: int, ctx: Any
    ) -> tuple[list[Shard], bool]:
        """Run ``queue`` in one process pool; returns what must run again in a new pool (its
        worker died: the shards in flight then, not counted as an attempt) and whether it broke."""
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx)
        live: dict[concurrent.futures.Future[dict[str, Any]], Shard] = {}
        pending: list[Shard] = []
        broken = False

        def submit(shard: Shard) -> None:
            nonlocal broken
            if not broken:
                try:
                    live[pool.submit(run_shard, self.job_for(shard), shard)] = shard
                    return
                except BrokenProcessPool:
                    broken = True
            pending.append(shard)

        try:
            for shard in queue:
                submit(shard)
            while live:
                done, _ = concurrent.futures.wait(
                    live, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in done:
                    shard = live.pop(future)
                    try:
                        result: dict[str, Any] | None = future.result()
                        exc: BaseException | None = None
                    except BrokenProcessPool:
                        broken = True
                        pending.append(shard)
                        continue
                    except Exception as error:
                        result, exc = None, error
                    if self.finished(shard, result, exc):
                        submit(shard)
                if broken:
                    pending.extend(live.values())
                    live.clear()
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)
        return pending, broken

    # ---------------------------------------------------------------------- Dask
    def run_dask(self, shards: Sequence[Shard], client: Any) -> None:
        from distributed import as_completed

        nonce = uuid.uuid4().hex[:6]

        def submit(shard: Shard) -> Any:
            n = self.attempts.get(shard.id, 0)
            return client.submit(
                run_shard,
                self.job_for(shard),
                shard,
                key=f"s3kit-{self.kind}-{nonce}-{shard.id}-{n}",
                retries=2,
                pure=False,
            )

        futures = {submit(s): s for s in shards}
        queue = as_completed(list(futures))  # type: ignore[no-untyped-call]
        try:
            for future in queue:
                shard = futures.pop(future)
                try:
                    result: dict[str, Any] | None = future.result()
                    exc: BaseException | None = None
                except Exception as error:  # KilledWorker, or the task raised 3 times
                    result, exc = None, error
                future.release()
                if self.finished(shard, result, exc):
                    again = submit(shard)
                    futures[again] = shard
                    queue.add(again)  # type: ignore[no-untyped-call]
        except BaseException:
            client.cancel(list(futures))
            raise


STATES = ("sqlite", "s3")


def _load(config: str | os.PathLike[str] | None, locs: Sequence[Location]) -> str:
    """The configuration file's absolute path, checked to name every location's endpoint."""
    config_path = os.path.abspath(find_config(config))
    spec = load_config(config_path)
    for loc in locs:
        if loc.endpoint not in spec.endpoints:
            known = ", ".join(spec.endpoints)
            raise ConfigError(
                f"{config_path}: unknown endpoint {loc.endpoint!r} in {loc.text!r}; "
                f"known endpoints: {known}"
            )
    return config_path


def _check_options(workers: int, shard_size: int, copy_threads: int | None, state: str) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidArgument("workers", "must be an integer >= 1")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise InvalidArgument("shard_size", "must be an integer >= 1")
    if copy_threads is not None and (not isinstance(copy_threads, int) or copy_threads < 1):
        raise InvalidArgument("copy_threads", "must be an integer >= 1 or None")
    if state not in STATES:
        raise InvalidArgument("state", f"{state!r}: expected 'sqlite' or 's3'")


@dataclass
class _Run:
    """How to run one job: workers, state, callbacks (the options every bulk verb shares)."""

    workers: int = 1
    client: Any = None
    state: str = "sqlite"
    state_path: str | os.PathLike[str] | None = None
    shard_size: int = 1000
    progress: Progress | None = None
    on_action: Callable[[dict[str, Any]], None] | None = None


def _run_job(
    job: SyncJob,
    run: _Run,
    kind: str,
    plan: Callable[[_Worker], list[Shard]],
    state_loc: Location,
) -> dict[str, int]:
    """Plan (or resume) ``job``, run its shards, record them; the counts of :data:`COUNTS`."""
    # With state="s3" the job is named by its locations only (another machine's file path
    # differs); a local state file also tells apart configuration files.
    key_config = job.config if run.state == "sqlite" else ""
    if kind == "sync":
        job_id = _job_id(key_config, job.src, job.dst, job.delete, run.shard_size)
    else:
        text = json.dumps([kind, key_config, [loc.text for loc in job.locations], job.delete,
                           run.shard_size])  # fmt: skip
        job_id = hashlib.sha256(text.encode()).hexdigest()[:24]
    state: StateStore | None = None
    # The driver's own worker (this process's cached one) plans, keeps the s3 state and, with
    # workers=1, runs the shards; the public verbs drop it when they return.
    here = _worker(job.config)
    if not job.dry_run:
        state = _S3State(here.mux, state_loc) if run.state == "s3" else _State(run.state_path)
    try:
        resumed = state.resume(job_id) if state is not None else None
        if resumed is None:
            shards = plan(here)
            if state is not None:
                state.save_plan(job_id, job.src.text, " ".join(d.text for d in job.dsts), shards)
            resumed = [(shard, False) for shard in shards]
        todo = [shard for shard, done in resumed if not done]
        skipped = [shard for shard, done in resumed if done]
        tally = _Tally(todo, skipped, run.progress, run.on_action)
        tally.report()
        driver = _Driver(job, job_id, state, tally, kind)
        if run.client is not None:
            driver.run_dask(todo, run.client)
        elif run.workers > 1 and len(todo) > 1:
            driver.run_pool(todo, min(run.workers, len(todo)))
        else:
            driver.run_here(todo)
        counts = dict(tally.counts)
        if state is not None and tally.shards_done == len(resumed) and not counts["failed"]:
            state.finish(job_id)
        counts["dry_run"] = int(job.dry_run)
        return counts
    finally:
        if state is not None:
            state.close()


def sync(
    src: str,
    dst: str,
    *,
    config: str | os.PathLike[str] | None = None,
    delete: bool = False,
    dry_run: bool = False,
    workers: int = 1,
    client: Any = None,
    state: str = "sqlite",
    state_path: str | os.PathLike[str] | None = None,
    shard_size: int = 1000,
    progress: Progress | None = None,
    on_action: Callable[[dict[str, Any]], None] | None = None,
    copy_threads: int | None = None,
) -> dict[str, int]:
    """Make ``dst`` (``NAME:bucket/prefix``) hold what ``src`` holds; see the module docstring.

    ``workers`` local processes (1: this process) or ``client`` a ``distributed.Client``.
    ``state="sqlite"`` keeps the resume state in ``state_path`` (a local SQLite file);
    ``state="s3"`` keeps it in the destination under ``.s3kit-sync/`` (any driver resumes).
    ``progress(info)`` is called after planning and after each shard with the counts plus
    ``objects_done``/``objects_total``, ``bytes_done``/``bytes_total`` and ``shards_done``
    (source objects and bytes of the finished shards, for a progress bar). ``on_action(dict)``
    gets each planned copy/delete with ``dry_run`` and each failure (``ok`` False).
    Raises ConfigError/InvalidArgument for a bad file, location or option.
    """
    s, d = parse_location(src), parse_location(dst)
    config_path = _load(config, (s, d))
    if _overlap(s, d):
        raise InvalidArgument("dst", f"{d.text!r} overlaps the source {s.text!r}")
    _check_options(workers, shard_size, copy_threads, state)
    job = SyncJob(config_path, s, d, bool(delete), bool(dry_run), copy_threads or 0)
    run = _Run(workers, client, state, state_path, shard_size, progress, on_action)

    def plan(planner: _Worker) -> list[Shard]:
        return plan_shards(
            planner.page_fn(s.endpoint, s.bucket),
            s.prefix,
            shard_size,
            dst_page=planner.page_fn(d.endpoint, d.bucket) if delete else None,
            dst_root=d.prefix,
        )

    try:
        return _run_job(job, run, "sync", plan, d)
    finally:
        _drop_worker(config_path)


def replicate(
    src: str,
    *,
    to: Sequence[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    workers: int = 1,
    client: Any = None,
    state: str = "sqlite",
    state_path: str | os.PathLike[str] | None = None,
    shard_size: int = 1000,
    progress: Progress | None = None,
    on_action: Callable[[dict[str, Any]], None] | None = None,
    copy_threads: int | None = None,
) -> dict[str, int]:
    """Copy ``src`` (``NAME:bucket/prefix``) to the same bucket and prefix on every other
    endpoint of the configuration, or on the endpoints named in ``to``.

    One job: each shard lists the source once and every destination, and copies what a
    destination lacks or holds stale (as :func:`sync`, never deleting). The options are
    :func:`sync`'s; ``state="s3"`` keeps the state on the first destination. ``copied``,
    ``skipped`` and ``bytes`` count per destination (a key copied to 2 endpoints counts 2);
    ``listed`` counts source objects; actions and errors name their ``endpoint``.
    """
    s = parse_location(src)
    config_path = _load(config, (s,))
    if to is None:
        names = [n for n in load_config(config_path).endpoints if n != s.endpoint]
    elif isinstance(to, str) or not all(isinstance(n, str) and n for n in to):
        raise InvalidArgument("to", "expected a list of endpoint names")
    else:
        names = list(dict.fromkeys(to))
    if s.endpoint in names:
        raise InvalidArgument("to", f"{s.endpoint!r} is the source")
    if not names:
        raise InvalidArgument("to", "no destination: the configuration has one endpoint")
    dsts = [Location(n, s.bucket, s.prefix) for n in names]
    _load(config_path, dsts)
    _check_options(workers, shard_size, copy_threads, state)
    job = SyncJob(config_path, s, dsts[0], False, bool(dry_run), copy_threads or 0,
                  more=tuple(dsts[1:]), kind="replicate")  # fmt: skip
    run = _Run(workers, client, state, state_path, shard_size, progress, on_action)

    def plan(planner: _Worker) -> list[Shard]:
        return plan_shards(planner.page_fn(s.endpoint, s.bucket), s.prefix, shard_size)

    try:
        return _run_job(job, run, "replicate", plan, dsts[0])
    finally:
        _drop_worker(config_path)


def repair(
    path: str,
    *,
    config: str | os.PathLike[str] | None = None,
    group: str | None = None,
    members: Sequence[str] | None = None,
    dry_run: bool = False,
    workers: int = 1,
    client: Any = None,
    state: str = "sqlite",
    state_path: str | os.PathLike[str] | None = None,
    shard_size: int = 1000,
    progress: Progress | None = None,
    on_action: Callable[[dict[str, Any]], None] | None = None,
    copy_threads: int | None = None,
) -> dict[str, Any]:
    """Bring a replica set's members level for ``path`` (``bucket[/prefix]``), shard by shard.

    The members are ``members`` (endpoint names), else those of the configuration's replica
    set ``group``, else of every replica set in turn. For a replica set the ledger is replayed
    first, in this process, as :meth:`Multiplexer.repair` does; keys still owed in it are left
    alone. Then each shard lists every member's key range and copies each key's newest version
    (by LastModified) to the members that lack it or hold another one - staleness as contract
    §11: size, plus ETag when both are single-part, else the ETag a copy carries in
    ``s3kit-source-etag``. Nothing is deleted. The options are :func:`sync`'s;
    ``state="s3"`` keeps the state on the first member (that answers).

    Every member is probed first (a one-key listing of the bucket, as
    :meth:`Multiplexer.repair`): one that does not answer is left out of the set, named in
    ``"unreachable"``, counted once in ``"failed"`` and reported as a ``"probe"`` action; its
    ledger rows stay for the next run. A set with fewer than two members answering is skipped.

    Returns :func:`sync`'s counts (``listed``: keys compared; ``copied``/``skipped``: per
    member that needed or did not need a copy) plus ``from_ledger`` and ``unreachable`` (a
    list of member names).
    """
    if not isinstance(path, str) or not path:
        raise InvalidArgument("path", "expected bucket[/prefix]")
    text = path[5:] if path.startswith("s3://") else path
    bucket, _, prefix = text.lstrip("/").partition("/")
    if not bucket:
        raise InvalidArgument("path", f"{path!r} names no bucket; expected bucket[/prefix]")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    _check_options(workers, shard_size, copy_threads, state)
    config_path = _load(config, ())
    mux = _worker(config_path).mux  # dropped (closed) on return
    totals: dict[str, int] = {**dict.fromkeys(COUNTS, 0), "from_ledger": 0}
    unreachable: list[str] = []
    try:
        if members is not None:
            if isinstance(members, str) or len(set(members)) < 2:
                raise InvalidArgument("members", "expected two or more endpoint names")
            sets: list[tuple[str | None, list[str]]] = [(None, list(dict.fromkeys(members)))]
        else:
            groups = dict(mux.replica_groups)
            if group is not None:
                if group not in groups:
                    known = ", ".join(groups) or "none"
                    raise ConfigError(f"unknown replica set {group!r}; replica sets: {known}")
                groups = {group: groups[group]}
            if not groups:
                raise ConfigError(
                    f"{config_path}: repair needs a replica set (replicas = [...] in the "
                    "[multiplexer] table) or members="
                )
            sets = [(name, list(names)) for name, names in groups.items()]
        for name, names in sets:
            locs = [Location(n, bucket, prefix) for n in names]
            _load(config_path, locs)
            down = _probe_members(mux, name, names, bucket, bool(dry_run), on_action)
            totals["failed"] += len(down)  # once per member, not per key it is owed
            unreachable += down
            locs = [loc for loc in locs if loc.endpoint not in down]
            if len(locs) < 2:
                continue  # nothing to compare among the members that answered
            skip: frozenset[str] = frozenset()
            if name is not None:
                skip = _replay_ledger(mux, name, bucket, prefix, bool(dry_run), totals,
                                      on_action, down)  # fmt: skip
            job = SyncJob(
                config_path, locs[0], locs[1], False, bool(dry_run), copy_threads or 0,
                more=tuple(locs[2:]), newest=True, skip=skip, kind="repair",
            )  # fmt: skip
            run = _Run(workers, client, state, state_path, shard_size, progress, on_action)

            def plan(planner: _Worker, locs: list[Location] = locs) -> list[Shard]:
                pages = [(planner.page_fn(loc.endpoint, loc.bucket), loc.prefix) for loc in locs]
                first = _busiest(pages)
                rest = [p for i, p in enumerate(pages) if i != first]
                return plan_shards(*pages[first], shard_size, others=rest)

            for count, value in _run_job(job, run, "repair", plan, locs[0]).items():
                totals[count] = totals.get(count, 0) + value
        totals["dry_run"] = int(bool(dry_run))
        return {**totals, "unreachable": unreachable}
    finally:
        _drop_worker(config_path)


def _probe_members(
    mux: Multiplexer,
    group: str | None,
    names: Sequence[str],
    bucket: str,
    dry_run: bool,
    on_action: Callable[[dict[str, Any]], None] | None,
) -> list[str]:
    """Probe each member once (``Multiplexer.repair``'s probe); the names of those that did
    not answer, each logged and reported as a failed ``"probe"`` action."""
    from . import _replica

    down = _replica.probe_members(mux, [mux.endpoint(n) for n in names], bucket)
    for member, error in down.items():
        _log.warning("s3kit repair: %s did not answer and was skipped: %s", member, error)
        if on_action is not None:
            on_action({"action": "probe", "key": "", "endpoint": member, "replica_set": group,
                       "ok": False, "dry_run": dry_run,
                       "error": f"{type(error).__name__}: {error}"})  # fmt: skip
    return [n for n in names if n in down]


def _busiest(pages: Sequence[tuple[PageFn, str]]) -> int:
    """The location whose first top-level page holds the most entries: the repair's planner
    source (a member that is new or was wiped would make few, huge shards)."""
    sizes = []
    for page, root in pages:
        resp = page(root, None, "/", None)
        sizes.append(len(resp.get("Contents") or []) + len(resp.get("CommonPrefixes") or []))
    return max(range(len(sizes)), key=sizes.__getitem__)


def _replay_ledger(
    mux: Multiplexer,
    group: str,
    bucket: str,
    prefix: str,
    dry_run: bool,
    totals: dict[str, int],
    on_action: Callable[[dict[str, Any]], None] | None,
    unreachable: Sequence[str] = (),
) -> frozenset[str]:
    """Replay the replica ledger's rows for ``bucket``/``prefix`` (as ``Multiplexer.repair``;
    rows owed to an ``unreachable`` member stay); returns the keys (relative to ``prefix``)
    still owed, which the shards must leave alone."""
    from . import _replica

    counts = {"checked": 0, "copied": 0, "failed": 0, "from_ledger": 0}
    ledger = mux._ledger()

    def report(action: dict[str, Any]) -> None:
        # As the shards report: failures, and with dry_run what would be done.
        if on_action is not None and (action.get("dry_run") or not action.get("ok")):
            key = str(action.get("key") or "")
            on_action({**action, "key": key[len(prefix) :], "reason": "ledger"})

    entries = ledger.entries(group, bucket, prefix)
    if entries:
        mux.wait_for_writes()
        tmpdir = tempfile.mkdtemp(prefix="s3kit-repair-")
        try:
            run = _replica._Repair(mux, mux._groups[group], bucket, prefix, dry_run, counts,
                                   None, report, tmpdir, unreachable)  # fmt: skip
            run.replay(entries, [0], len(entries))
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    totals["from_ledger"] += counts["from_ledger"]
    totals["copied"] += counts["copied"]
    totals["failed"] += counts["failed"]
    owed = entries if dry_run else ledger.entries(group, bucket, prefix)
    return frozenset(e.key[len(prefix) :] for e in owed)


# ----------------------------------------------------------------------------------- CLI
def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


class _RichProgress:
    """A rich progress display: objects and bytes (done/total, rate, ETA), then the counts."""

    def __init__(self, console: Any = None) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.text import Text

        status = self.status = Text("planning…")

        class _Progress(Progress):
            def get_renderables(self) -> Iterator[Any]:
                yield self.make_tasks_table(self.tasks)
                yield status

        self.progress = _Progress(
            TextColumn("[bold]{task.description:>7}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[amount]:>21}"),
            TextColumn("{task.fields[rate]:>13}"),
            TimeRemainingColumn(),
            console=console,
        )
        self.objects = self.progress.add_task("objects", total=None, amount="", rate="")
        self.bytes = self.progress.add_task("bytes", total=None, amount="", rate="")
        self.t0 = time.monotonic()

    def __enter__(self) -> _RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def print(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)

    def update(self, info: Mapping[str, int]) -> None:
        elapsed = max(1e-6, time.monotonic() - self.t0)
        objects, bytes_ = info["objects_done"], info["bytes_done"]
        self.status.plain = (
            f"copied {info['copied']:,}  skipped {info['skipped']:,}  "
            f"deleted {info['deleted']:,}  failed {info['failed']:,}  "
            f"shards {info['shards_done']:,}/{info['shards']:,}"
        )
        self.progress.update(
            self.objects,
            total=info["objects_total"] or None,
            completed=objects,
            amount=f"{objects:,}/{info['objects_total']:,}",
            rate=f"{objects / elapsed:,.0f} obj/s",
        )
        self.progress.update(
            self.bytes,
            total=info["bytes_total"] or None,
            completed=bytes_,
            amount=f"{_human(bytes_)}/{_human(info['bytes_total'])}",
            rate=f"{_human(bytes_ / elapsed)}/s",
        )


def _start_dask(address: str, workers: int) -> tuple[Any, Any]:
    """A ``distributed.Client`` for ``address`` (``local``: a LocalCluster of ``workers``)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("--dask needs pip install 's3kit[dask]'") from None
    if address == "local":
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=max(1, workers), threads_per_worker=2, processes=True, host="127.0.0.1"
        )
        return Client(cluster), cluster  # type: ignore[no-untyped-call]
    return Client(address), None  # type: ignore[no-untyped-call]


def cli_sync(args: Any, config_path: str | None) -> int:
    """``s3kit sync SRC DST [--delete] [--dry-run] [--workers N | --dask ADDR|local]``.

    ``args`` is the parsed namespace (``src``, ``dst``, ``delete``, ``dry_run``, ``workers``,
    ``dask``, and optionally ``json``, ``state``, ``shard_size``). Exit codes: 0 done, 1 some
    objects failed (a rerun resumes), 2 usage or configuration error, 130 interrupted.
    """

    def call(**kw: Any) -> dict[str, int]:
        return sync(args.src, args.dst, delete=bool(getattr(args, "delete", False)), **kw)

    def summary(result: Mapping[str, int], dry_run: bool) -> str:
        gone = "would delete" if dry_run else "deleted"
        return (
            f"sync {args.src} -> {args.dst}: {_summary(result, dry_run)}, "
            f"{gone} {result['deleted']:,}, failed {result['failed']:,}; {_shards(result)}"
        )

    return _cli_bulk(args, config_path, call, summary)


def cli_replicate(args: Any, config_path: str | None) -> int:
    """``s3kit replicate NAME:bucket[/prefix] [--to NAME ...] [--workers N | --dask ADDR]``:
    :func:`replicate` (``args.file`` is the source location; ``targets`` the ``--to`` names)."""

    def call(**kw: Any) -> dict[str, int]:
        return replicate(args.file, to=getattr(args, "targets", None), **kw)

    def summary(result: Mapping[str, int], dry_run: bool) -> str:
        return (
            f"replicate {args.file}: {_summary(result, dry_run)}, "
            f"failed {result['failed']:,}; {_shards(result)}"
        )

    return _cli_bulk(args, config_path, call, summary)


def cli_repair(args: Any, config_path: str | None) -> int:
    """``s3kit repair BUCKET[/PREFIX] --workers N | --dask ADDR [--group NAME]``: :func:`repair`."""

    def call(**kw: Any) -> dict[str, Any]:
        return repair(args.path, group=getattr(args, "group", None), **kw)

    def summary(result: Mapping[str, Any], dry_run: bool) -> str:
        down = result.get("unreachable") or []
        return (
            f"repair {args.path}: {_summary(result, dry_run)}, from the ledger "
            f"{result['from_ledger']:,}, failed {result['failed']:,}; {_shards(result)}"
            + (f"; unreachable (skipped): {', '.join(down)}" if down else "")
        )

    return _cli_bulk(args, config_path, call, summary)


def _summary(result: Mapping[str, int], dry_run: bool) -> str:
    verb = "would copy" if dry_run else "copied"
    return (
        f"listed {result['listed']:,}, {verb} {result['copied']:,} "
        f"({_human(result['bytes'])}), skipped {result['skipped']:,}"
    )


def _shards(result: Mapping[str, int]) -> str:
    return f"shards {result['shards']} ({result['shards_skipped']} done before)"


def _action_line(action: Mapping[str, Any]) -> str:
    if action["action"] == "probe":
        return f"s3kit: error: {action.get('endpoint')} did not answer, skipped: {action['error']}"
    where = ""
    if action.get("source"):
        where += f" {action['source']} ->"
    if action.get("endpoint"):
        where += f" {action['endpoint']}"
    if not action.get("ok"):
        return f"s3kit: error: {action['action']} {action['key']}{where}: {action.get('error')}"
    if action["action"] == "copy":
        detail = [_human(action["size"])] if "size" in action else []
        detail += [str(action["reason"])] if action.get("reason") else []
        return f"would copy {action['key']}{where} ({', '.join(detail)})"
    return f"would {action['action']} {action['key']}{where}"


def _cli_bulk(
    args: Any,
    config_path: str | None,
    call: Callable[..., Mapping[str, Any]],
    summary: Callable[[Mapping[str, Any], bool], str],
) -> int:
    """Run one bulk verb for the CLI: workers or Dask, progress bar, JSON, exit codes."""
    as_json = bool(getattr(args, "json", False))
    dask_addr: str | None = getattr(args, "dask", None)
    workers = getattr(args, "workers", None)
    dry_run = bool(getattr(args, "dry_run", False))
    state_arg: str | None = getattr(args, "state", None)
    state, state_path = ("s3", None) if state_arg == "s3" else ("sqlite", state_arg)
    if state_path == "sqlite":
        state_path = None
    actions: list[dict[str, Any]] = []
    show = not as_json and sys.stdout.isatty() and _have_rich()
    bar = _RichProgress() if show else None

    def say(text: str, err: bool = False) -> None:
        if bar is not None and not err:
            bar.print(text)
        else:
            print(text, file=sys.stderr if err else sys.stdout, flush=True)

    def on_action(action: dict[str, Any]) -> None:
        actions.append(action)
        if not as_json:
            say(_action_line(action), err=not action.get("ok"))

    client = cluster = None
    try:
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise InvalidArgument("--workers", "must be an integer >= 1")
        if dask_addr:
            client, cluster = _start_dask(dask_addr, workers or 2)
            link = getattr(client, "dashboard_link", None)
            if link and not as_json:
                print(f"dask dashboard: {link}", file=sys.stderr, flush=True)
        with bar if bar is not None else contextlib.nullcontext():
            result = call(
                config=config_path,
                dry_run=dry_run,
                workers=workers or 1,
                client=client,
                state=state,
                state_path=state_path,
                shard_size=getattr(args, "shard_size", None) or 1000,
                progress=bar.update if bar is not None else None,
                on_action=on_action,
            )
    except (ConfigError, InvalidArgument) as exc:
        print(f"s3kit: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except (S3KitError, OSError) as exc:
        print(f"s3kit: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("s3kit: error: interrupted (run again to resume)", file=sys.stderr)
        return 130
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()
    if as_json:
        out: dict[str, Any] = {**result, "dry_run": dry_run}
        if dry_run or result["failed"]:
            out["actions"] = actions
        print(json.dumps(out, indent=2))
    else:
        print(summary(result, dry_run))
    return 1 if result["failed"] else 0


def _have_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------------- bench
BENCH_VARIANTS = ("boto3", "workers=1", "workers=2", "dask")


def bench_bulk(
    objects: int = 5000,
    server: str = "moto",
    variants: Sequence[str] = BENCH_VARIANTS,
    size: int = 1024,
    shard_size: int = 500,
) -> list[dict[str, Any]]:
    """Sync ``objects`` objects (``size`` bytes on average) between two local servers, once per
    variant, each on a fresh pair of servers: ``boto3`` (one process, rclone-style: list both
    sides, copy what is missing with 4 transfers), ``workers=1``, ``workers=2`` and ``dask``
    (a LocalCluster of 2 worker processes, started before the clock starts; skipped without
    ``distributed``). Returns one row per variant: objects, bytes, seconds, objects/s, MB/s."""
    from .testing import S3ServerPool

    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    rows: list[dict[str, Any]] = []
    client = cluster = None
    if "dask" in variants:
        try:
            client, cluster = _start_dask_quiet()
        except ImportError:
            variants = [v for v in variants if v != "dask"]
    try:
        with tempfile.TemporaryDirectory(prefix="s3kit-bench-bulk-") as tmp:
            for variant in variants:
                with S3ServerPool(2, server, buckets=["src", "dst"]) as pool:
                    config = _bench_config(tmp, pool)
                    nbytes = _bench_seed(pool, objects, size)
                    t0 = time.perf_counter()
                    if variant == "boto3":
                        copied = _bench_boto3(pool)
                    else:
                        options: dict[str, Any] = (
                            {"client": client}
                            if variant == "dask"
                            else {"workers": int(variant.partition("=")[2])}
                        )
                        result = sync(
                            "a:src/data",
                            "b:dst/data",
                            config=config,
                            state_path=os.path.join(tmp, f"{variant}.sqlite"),
                            shard_size=shard_size,
                            **options,
                        )
                        copied = result["copied"]
                    seconds = time.perf_counter() - t0
                if copied != objects:
                    raise RuntimeError(f"bench {variant}: copied {copied} of {objects}")
                rows.append(
                    {
                        "variant": variant,
                        "objects": objects,
                        "bytes": nbytes,
                        "seconds": round(seconds, 3),
                        "objects_per_s": round(objects / seconds, 1),
                        "mb_per_s": round(nbytes / seconds / 1e6, 3),
                    }
                )
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    return rows


def run_bench_bulk(
    objects: int = 5000, server: str = "moto", as_json: bool = False, size: int = 1024
) -> int:
    """``s3kit bench bulk``: print :func:`bench_bulk`'s rows (a table, or JSON)."""
    rows = bench_bulk(objects, server, size=size)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"bulk sync of {objects:,} objects between two local {server} servers")
    print(f"{'variant':<12}{'seconds':>10}{'objects/s':>12}{'MB/s':>10}")
    for row in rows:
        print(
            f"{row['variant']:<12}{row['seconds']:>10.2f}{row['objects_per_s']:>12.1f}"
            f"{row['mb_per_s']:>10.3f}"
        )
    return 0


def _start_dask_quiet() -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    client = Client(cluster)  # type: ignore[no-untyped-call]
    client.run(_import, "s3kit.bulk")  # warm the workers' imports
    return client, cluster


def _import(name: str) -> None:
    """Import ``name`` (run on Dask workers before a benchmark)."""
    __import__(name)


def _bench_config(tmp: str, pool: Any) -> str:
    path = os.path.join(tmp, "s3kit.toml")
    with open(path, "w", encoding="utf-8") as fh:
        for name, srv in zip("ab", pool, strict=False):
            fh.write(
                f'[endpoints.{name}]\nurl = "{srv.url}"\naccess_key = "{srv.access_key}"\n'
                f'secret_key = "{srv.secret_key}"\nmax_concurrent = 8\n'
            )
    return path


def _bench_seed(pool: Any, objects: int, size: int) -> int:
    client = pool[0].client(max_pool_connections=32)
    sizes = [max(1, size // 2 + (i * 7919) % max(1, size)) for i in range(objects)]

    def put(i: int) -> None:
        client.put_object(Bucket="src", Key=f"data/p{i % 8}/obj-{i:06d}", Body=os.urandom(sizes[i]))

    with concurrent.futures.ThreadPoolExecutor(16) as pool_:
        list(pool_.map(put, range(objects)))
    return sum(sizes)


def _bench_boto3(pool: Any, transfers: int = 4) -> int:
    src, dst = pool[0].client(max_pool_connections=32), pool[1].client(max_pool_connections=32)

    def listing(client: Any, bucket: str) -> dict[str, tuple[int, str]]:
        out: dict[str, tuple[int, str]] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents") or []:
                out[obj["Key"]] = (obj["Size"], obj["ETag"])
        return out

    have = listing(dst, "dst")
    todo = [k for k, row in listing(src, "src").items() if have.get(k) != row]

    def copy(key: str) -> None:
        body = src.get_object(Bucket="src", Key=key)["Body"].read()
        dst.put_object(Bucket="dst", Key=key, Body=body)

    with concurrent.futures.ThreadPoolExecutor(transfers) as pool_:
        list(pool_.map(copy, todo))
    return len(todo)
