"""Multipart uploads left behind: list them, abort them, and remember the ones a dead endpoint
could not abort.

s3transfer aborts a multipart upload that fails, but the abort is one more request to the
endpoint that just failed: when that endpoint is down, the upload's parts stay there (and are
billed) until someone aborts it. So a multiplexer with a ledger records every large upload that
failed on an endpoint (:func:`tracked_upload`), and :func:`settle_failed` later aborts the
uploads of that key the endpoint still holds that were started within the failed attempt's
time window (``SKEW_S`` either side, for clock differences). Anything older is found by age:
:func:`stale_uploads` / ``s3kit cleanup --older-than``.

ListMultipartUploads and AbortMultipartUpload go through the endpoint's boto3 client (for the
obstore transport, the boto3 client it creates lazily), inside ``Endpoint.run``: breaker,
limiter and retries apply as to any call.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import _ops
from ._errors import EndpointError, NotFound, ServiceError
from ._events import logger
from ._outcome import ACCESS, BAD_CREDENTIALS, CLIENT, classify

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._ledger import FailedUpload, Ledger

__all__ = [
    "MULTIPART_THRESHOLD",
    "SKEW_S",
    "abort_upload",
    "list_uploads",
    "settle_failed",
    "tracked_upload",
]

MULTIPART_THRESHOLD = 8 * 1024 * 1024  # both transports upload larger files in parts
SKEW_S = 60.0  # clock difference tolerated between this machine and a server's "Initiated"


def _call(ep: Endpoint, operation: str, method: str, **params: Any) -> dict[str, Any]:
    from ._transport._boto3 import map_boto_error

    fn: Callable[..., dict[str, Any]] = getattr(ep.client, method)
    try:
        return fn(**params)
    except EndpointError:
        raise
    except Exception as exc:
        raise map_boto_error(exc, ep.name, operation) from exc


def list_uploads_op(bucket: str, prefix: str | None) -> _ops.Op:
    """ListMultipartUploads, every page: ``{"Bucket", "Uploads": [{Key, UploadId, Initiated}]}``
    (filtered by ``prefix`` here too: some servers ignore it)."""

    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        params: dict[str, Any] = {"Bucket": ep.config.physical_bucket(bucket)}
        if prefix:
            params["Prefix"] = prefix
        uploads: list[dict[str, Any]] = []
        for _ in range(10_000):  # bounded: a server that never stops paging is a bug
            page = _call(ep, "list_multipart_uploads", "list_multipart_uploads", **params)
            for upload in page.get("Uploads") or []:
                key = upload.get("Key", "")
                if prefix and not key.startswith(prefix):
                    continue
                uploads.append(
                    {
                        "Key": key,
                        "UploadId": upload.get("UploadId"),
                        "Initiated": upload.get("Initiated"),
                    }
                )
            key_marker, id_marker = page.get("NextKeyMarker"), page.get("NextUploadIdMarker")
            if not page.get("IsTruncated") or not (key_marker or id_marker):
                break
            params["KeyMarker"] = key_marker
            params["UploadIdMarker"] = id_marker
        return {"Bucket": bucket, "Uploads": uploads}

    return _ops.Op("list_multipart_uploads", attempt, _ops.READ, bucket)


def abort_upload_op(bucket: str, key: str, upload_id: str) -> _ops.Op:
    """AbortMultipartUpload; an upload that is already gone (NoSuchUpload) counts as aborted."""

    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        try:
            _call(
                ep,
                "abort_multipart_upload",
                "abort_multipart_upload",
                Bucket=ep.config.physical_bucket(bucket),
                Key=key,
                UploadId=upload_id,
            )
        except NotFound:
            pass
        except ServiceError as exc:
            if exc.code != "NoSuchUpload":
                raise
        return {"Bucket": bucket, "Key": key, "UploadId": upload_id}

    return _ops.Op("abort_multipart_upload", attempt, _ops.DELETE, bucket, key)


def list_uploads(
    ep: Endpoint, bucket: str, prefix: str | None = None, deadline: float | None = None
) -> list[dict[str, Any]]:
    return list(ep.run(list_uploads_op(bucket, prefix), deadline=deadline)["Uploads"])


def abort_upload(
    ep: Endpoint, bucket: str, key: str, upload_id: str, deadline: float | None = None
) -> None:
    ep.run(abort_upload_op(bucket, key, upload_id), deadline=deadline)


def _timestamp(value: object) -> float | None:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.timestamp()
    return None


def older_than(upload: dict[str, Any], seconds: float, now: float | None = None) -> bool:
    """Whether ``upload`` was initiated more than ``seconds`` ago (unknown time: yes)."""
    initiated = _timestamp(upload.get("Initiated"))
    now = time.time() if now is None else now
    return initiated is None or now - initiated >= seconds


# --------------------------------------------------------- failed uploads, remembered
def tracked_upload(op: _ops.Op, ledger: Callable[[], Ledger], file_path: str) -> _ops.Op:
    """``op`` (an upload_file) recording in the ledger each attempt of a multipart-sized file
    that failed on an endpoint other than by a refusal (a client or access error)."""
    if os.path.getsize(file_path) < MULTIPART_THRESHOLD:
        return op
    inner = op.attempt
    assert op.bucket is not None and op.key is not None
    bucket, key = op.bucket, op.key

    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        started = time.time()
        try:
            return inner(ep, timeout)
        except EndpointError as exc:
            if classify(exc) not in (CLIENT, ACCESS, BAD_CREDENTIALS):
                try:
                    ledger().record_upload(ep.name, bucket, key, started, time.time(), exc)
                except Exception:  # the ledger is closed or unwritable: say so, go on
                    logger.warning(
                        "a multipart upload of %s/%s failed on %s and could not be recorded; "
                        "'s3kit cleanup' finds what it left",
                        bucket, key, ep.name,
                    )  # fmt: skip
            raise

    return _ops.Op(op.name, attempt, op.kind, op.bucket, op.key, op.cleanup)


def settle_failed(
    ledger: Ledger,
    endpoints: Sequence[Endpoint],
    bucket: str,
    dry_run: bool = False,
    on_abort: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, BaseException]]:
    """Abort what the recorded failed uploads of ``bucket`` on ``endpoints`` left behind.

    For each row: list the endpoint's uploads of that key, abort those initiated within the
    failed attempt's window, then drop the row. An endpoint that cannot be listed keeps its
    rows. Returns (the uploads aborted, or to abort with ``dry_run``; errors by endpoint).
    """
    by_name = {ep.name: ep for ep in endpoints}
    rows: Iterable[FailedUpload] = [
        r for r in ledger.failed_uploads(bucket) if r.endpoint in by_name
    ]
    aborted: list[dict[str, Any]] = []
    failed: dict[str, BaseException] = {}
    listed: dict[tuple[str, str], list[dict[str, Any]]] = {}
    seen: set[tuple[str, str]] = set()
    for row in rows:
        ep = by_name[row.endpoint]
        if ep.name in failed:
            continue
        try:
            uploads = listed.get((ep.name, row.key))
            if uploads is None:
                uploads = listed[ep.name, row.key] = list_uploads(ep, bucket, row.key)
            for upload in uploads:
                initiated = _timestamp(upload.get("Initiated"))
                if upload["Key"] != row.key or initiated is None:
                    continue
                if not row.started - SKEW_S <= initiated <= row.failed + SKEW_S:
                    continue
                if (ep.name, upload["UploadId"]) in seen:
                    continue
                seen.add((ep.name, upload["UploadId"]))
                found = {**upload, "Endpoint": ep.name, "Bucket": bucket}
                if not dry_run:
                    abort_upload(ep, bucket, row.key, upload["UploadId"])
                aborted.append(found)
                if on_abort is not None:
                    on_abort(found)
            if not dry_run:
                ledger.resolve_upload(row)
        except EndpointError as exc:
            failed[ep.name] = exc
    return aborted, failed
