"""The verbs users look for (contract §12): lazy listings and batch deletes, on a handler and on
a multiplexer alike.

- :class:`ObjectIterator` yields listing entries one ListObjectsV2 page at a time; each page is a
  call of its own through the breaker, the limiter and the retries (or the multiplexer's
  failover). Where the next page comes from another endpoint than the last, it continues with
  ``StartAfter`` = the last name yielded instead of a continuation token, so a failover
  mid-way neither restarts nor repeats. Under ``key-hash`` the endpoints' listings are merged
  lazily in key order.
- :func:`delete_batches` splits a batch delete into DeleteObjects requests of ≤ 1000 keys, and
  :func:`replica_delete` sends each batch to every member of a replica set, with ledger
  tombstones for the keys a member may still hold.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import io
import itertools
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from . import _ops
from ._errors import EndpointError, EndpointSaturated, InvalidArgument, NoHealthyEndpoint
from ._events import logger
from ._ledger import DELETE
from ._replica import _Quorum, _rejected, resolve_quorum
from ._validate import MAX_PAGE

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._mux import Multiplexer
    from ._replica import ReplicaGroup

__all__ = [
    "ObjectIterator",
    "Spool",
    "batches",
    "delete_batches",
    "merge_deletes",
    "merged_pages",
    "paged",
    "replica_delete",
    "single",
]

RunPage = Callable[[_ops.Op], dict[str, Any]]


def _name(item: dict[str, Any]) -> str:
    return str(item["Key"] if "Key" in item else item["Prefix"])


def paged(
    run: RunPage, bucket: str, prefix: str | None, delimiter: str | None, page_size: int
) -> Iterator[dict[str, Any]]:
    """Entries of a listing, one page per ``run(op)``: Contents and (with a delimiter)
    CommonPrefixes, merged in key order, each yielded once."""
    cursor = _ops.ListCursor()
    while True:
        page = run(_ops.list_page(bucket, prefix, delimiter, page_size, cursor))
        contents = page.get("Contents") or []
        prefixes = page.get("CommonPrefixes") or []
        items: Iterator[dict[str, Any]] | list[dict[str, Any]]
        items = heapq.merge(contents, prefixes, key=_name) if prefixes else contents
        last = cursor.last
        for item in items:
            name = _name(item)
            if last is not None and name <= last:
                continue  # already yielded (a common prefix met again after StartAfter)
            cursor.last, cursor.last_is_prefix = name, "Key" not in item
            yield item
        if not page.get("IsTruncated"):
            return
        cursor.token = page.get("NextContinuationToken")
        cursor.token_endpoint = cursor.served


class ObjectIterator(Iterator[dict[str, Any]]):
    """A lazy listing: yields ``Contents`` dicts (``Key``, ``Size``, ``ETag``, ...) and, with a
    ``delimiter``, ``CommonPrefixes`` dicts (``{"Prefix": ...}``) in key order.

    ``endpoints`` names the endpoints that served pages so far; ``incomplete`` maps endpoints
    whose listing failed to their error (only a ``key-hash`` merge goes on without one; any
    other listing raises the error instead).
    """

    def __init__(self, source: Callable[[ObjectIterator], Iterator[dict[str, Any]]]) -> None:
        self.endpoints: list[str] = []
        self.incomplete: dict[str, BaseException] = {}
        self._it = source(self)

    def __iter__(self) -> ObjectIterator:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._it)

    def served(self, page: dict[str, Any]) -> dict[str, Any]:
        name = page.get("Endpoint")
        if name is not None and name not in self.endpoints:
            self.endpoints.append(name)
        return page

    def __repr__(self) -> str:
        return f"<ObjectIterator endpoints={self.endpoints} incomplete={sorted(self.incomplete)}>"


def single(
    run: RunPage, bucket: str, prefix: str | None, delimiter: str | None, page_size: int
) -> ObjectIterator:
    """One routed listing (a handler's, or a multiplexer's with failover between pages)."""
    return ObjectIterator(
        lambda it: paged(lambda op: it.served(run(op)), bucket, prefix, delimiter, page_size)
    )


def merged_pages(
    endpoints: Sequence[Endpoint],
    run: Callable[[Endpoint, _ops.Op], dict[str, Any]],
    bucket: str,
    prefix: str | None,
    delimiter: str | None,
    page_size: int,
) -> ObjectIterator:
    """Every endpoint's listing merged lazily in key order (``key-hash``: each holds a part).

    A key on several endpoints is yielded once, the newest ``LastModified`` winning. An endpoint
    that fails is recorded in ``incomplete`` and skipped from then on; when every one fails
    before listing anything, :class:`NoHealthyEndpoint` is raised.
    """

    def source(it: ObjectIterator) -> Iterator[dict[str, Any]]:
        def one(ep: Endpoint) -> Iterator[dict[str, Any]]:
            try:
                yield from paged(
                    lambda op: it.served(run(ep, op)), bucket, prefix, delimiter, page_size
                )
            except EndpointError as exc:
                it.incomplete[ep.name] = exc

        merged = heapq.merge(*(one(ep) for ep in endpoints), key=_name)
        for _, group in itertools.groupby(merged, key=_name):
            best: dict[str, Any] | None = None
            for item in group:
                if best is None or (
                    item.get("LastModified") is not None
                    and best.get("LastModified") is not None
                    and item["LastModified"] > best["LastModified"]
                ):
                    best = item
            assert best is not None
            yield best
        if not it.endpoints and it.incomplete:
            errors = list(it.incomplete.items())
            raise NoHealthyEndpoint("iter_objects", errors) from errors[-1][1]

    return ObjectIterator(source)


# ---------------------------------------------------------------------- batch delete
def batches(objects: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    return [objects[i : i + MAX_PAGE] for i in range(0, len(objects), MAX_PAGE)]


def delete_batches(
    run: Callable[[_ops.Op, list[dict[str, str]]], dict[str, Any]],
    bucket: str,
    objects: list[dict[str, str]],
    quiet: bool,
) -> dict[str, Any]:
    """DeleteObjects in batches of ≤ 1000 keys, one after another, each its own call.

    A batch that fails as a whole raises (the batches before it are done; deleting again is
    harmless). Per-key failures the server reports are collected in ``Errors``.
    """
    deleted: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    served: list[str] = []
    pending: set[str] = set()
    for batch in batches(objects):
        resp = run(_ops.delete_objects(bucket, batch, quiet), batch)
        if not quiet:  # some servers (moto, nanio) list what was deleted all the same
            deleted += resp.get("Deleted") or []
        errors += resp.get("Errors") or []
        pending.update(resp.get("Pending") or ())
        for name in resp.get("Endpoints") or [resp["Endpoint"]]:
            if name not in served:
                served.append(name)
    result: dict[str, Any] = {
        "Bucket": bucket,
        "Deleted": deleted,
        "Errors": errors,
        "Endpoint": served[0] if served else None,
        "Endpoints": served,
    }
    if pending:
        result["Pending"] = sorted(pending)
    return result


def merge_deletes(bucket: str, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result of several endpoints' batch deletes (``key-hash``: each key to its owner)."""
    served = [name for r in results for name in r["Endpoints"]]
    return {
        "Bucket": bucket,
        "Deleted": [d for r in results for d in r["Deleted"]],
        "Errors": [e for r in results for e in r["Errors"]],
        "Endpoint": served[0] if served else None,
        "Endpoints": list(dict.fromkeys(served)),
    }


def replica_delete(
    mux: Multiplexer,
    group: ReplicaGroup,
    members: Sequence[Endpoint],
    op: _ops.Op,
    objects: list[dict[str, str]],
    deadline: float | None,
    quorum: int | str | None,
) -> dict[str, Any]:
    """One DeleteObjects batch to every member of a replica set; return at ``quorum`` acks.

    As with ``delete_object``: the ledger gets a tombstone per key and member first; a member's
    tombstone goes when it reported the key deleted, so :meth:`Multiplexer.repair` deletes the
    key again where it may survive and never copies it back. The result is the first
    acknowledging member's, with ``Endpoint``, ``Endpoints`` and ``Pending``.
    """
    if any("VersionId" in o for o in objects):
        raise InvalidArgument(
            "keys", "a replica set takes plain keys: version ids differ from member to member"
        )
    assert op.bucket is not None
    bucket = op.bucket
    keys = [o["Key"] for o in objects]
    names = [ep.name for ep in members]
    needed = resolve_quorum(quorum, len(members))
    token = uuid.uuid4().hex
    ledger = mux._ledger()
    ledger.record_keys(group.name, names, bucket, keys, DELETE, token)
    state = _Quorum(names, needed)
    pool = mux._write_pool()

    def done(ep: Endpoint, future: Any) -> None:
        error: BaseException | None = None
        result: dict[str, Any] | None = None
        if future.cancelled():
            error = EndpointError("cancelled", endpoint=ep.name, operation=op.name)
        else:
            error = future.exception()
            if error is None:
                result = future.result()
        try:
            if result is not None:
                failed = {e.get("Key") for e in result.get("Errors") or []}
                ok = [k for k in keys if k not in failed]
                ledger.resolve_keys(group.name, ep.name, bucket, ok, DELETE, token)
        except Exception:  # the ledger closed meanwhile: the rows stay, repair finds them
            logger.debug("replica ledger not updated for a batch delete on %s", ep.name)
        mux._leg_finished(future)
        state.finish(ep.name, result, error)

    for ep in members:
        try:
            future = mux._submit_leg(pool, ep, op, deadline)
        except (RuntimeError, EndpointSaturated) as exc:  # closing, or too far behind
            state.finish(ep.name, None, exc)
            continue
        future.add_done_callback(functools.partial(done, ep))

    if not state.wait_decided():
        state.wait_all(1.0)
        with state.cond:
            failed = dict(state.failed)
            any_ack = bool(state.acked)
        rejected = [e for e in failed.values() if _rejected(e)]
        if not any_ack and failed and len(rejected) == len(failed):
            # Every member refused the request itself: nothing was deleted, nothing is owed.
            for name in failed:
                with contextlib.suppress(Exception):
                    ledger.resolve_keys(group.name, name, bucket, keys, DELETE, token)
            raise rejected[0]
        errors = list(failed.items())
        raise NoHealthyEndpoint(op.name, errors) from (errors[-1][1] if errors else None)
    if mux._background_full():
        state.wait_all()
    with state.cond:
        acked = list(state.acked)
        first = dict(state.results[acked[0]])
    first["Endpoint"] = acked[0]
    first["Endpoints"] = acked
    first["Pending"] = [name for name in names if name not in acked]
    return first


# ------------------------------------------------------------- replica-set streams
class Spool:
    """A stream copied once into an unlinked temporary file, read by several legs at once.

    Each :meth:`reader` has its own position (``os.pread``), so the members of a replica set
    upload the same bytes concurrently and each can rewind for a retry. The file is closed when
    the last reader is garbage-collected (legs may finish after the call returned).
    """

    def __init__(self, source: Any) -> None:
        with tempfile.TemporaryFile(prefix="s3kit-spool-") as fh:
            shutil.copyfileobj(source, fh, 1024 * 1024)
            fh.flush()
            self.size = fh.tell()
            self.fd = os.dup(fh.fileno())
        weakref.finalize(self, os.close, self.fd)

    def reader(self) -> BinaryIO:
        return cast(BinaryIO, SpoolReader(self))


class SpoolReader(io.RawIOBase):
    def __init__(self, spool: Spool) -> None:
        super().__init__()
        self._spool = spool
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._spool.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = os.pread(self._spool.fd, len(view), self._pos)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def fileno(self) -> int:
        raise OSError("a spool reader has no file descriptor of its own")
