"""Operations as values: what one attempt does on one endpoint.

A handler and the multiplexer build the same :class:`Op` and hand it to an endpoint's retry
loop, so an operation's meaning (bucket mapping, result shape, download safety) is written once.
An attempt is ``op.attempt(endpoint, timeout)``; it returns the result dict without ``Endpoint``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from ._errors import ConnectionFailed, InvalidArgument, ServiceError
from ._transport import DownloadState, Prefixed, next_token, read_upto

if TYPE_CHECKING:
    from ._endpoint import Endpoint

__all__ = ["ADMIN", "DELETE", "READ", "WRITE", "Op"]

READ = "read"
WRITE = "write"
DELETE = "delete"  # not failed over outside a replica set (a 204 for a missing key hides loss)
ADMIN = "admin"

Attempt = Callable[["Endpoint", "float | None"], dict[str, Any]]

_PLAIN_MD5 = re.compile(r'^"?[0-9a-fA-F]{32}"?$')


@dataclass(slots=True, eq=False)
class Op:
    name: str
    attempt: Attempt
    kind: str
    bucket: str | None = None
    key: str | None = None
    cleanup: Callable[[], None] | None = None


def head_object(bucket: str, key: str, extra: Mapping[str, Any] | None = None) -> Op:
    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        return ep.transport.head_object(ep.config.physical_bucket(bucket), key, extra, timeout)

    return Op("head_object", attempt, READ, bucket, key)


def get_object(
    bucket: str, key: str, range: str | None = None, extra: Mapping[str, Any] | None = None
) -> Op:
    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        phys = ep.config.physical_bucket(bucket)
        return ep.transport.get_object(phys, key, range, extra, timeout)

    return Op("get_object", attempt, READ, bucket, key)


def put_object(
    bucket: str, key: str, body: bytes | BinaryIO, extra: Mapping[str, Any] | None = None
) -> Op:
    start = body.tell() if not isinstance(body, (bytes, bytearray, memoryview)) else 0

    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        if not isinstance(body, (bytes, bytearray, memoryview)):
            body.seek(start)  # a retry resends the same bytes
        resp = ep.transport.put_object(ep.config.physical_bucket(bucket), key, body, extra, timeout)
        return {**resp, "Bucket": bucket, "Key": key}

    return Op("put_object", attempt, WRITE, bucket, key)


def delete_object(bucket: str, key: str, extra: Mapping[str, Any] | None = None) -> Op:
    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        resp = ep.transport.delete_object(ep.config.physical_bucket(bucket), key, extra, timeout)
        return {**resp, "Bucket": bucket, "Key": key}

    return Op("delete_object", attempt, DELETE, bucket, key)


def copy_object(
    bucket: str,
    key: str,
    source_bucket: str,
    source_key: str,
    extra: Mapping[str, Any] | None = None,
) -> Op:
    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        cfg = ep.config
        resp = ep.transport.copy_object(
            cfg.physical_bucket(bucket),
            key,
            cfg.physical_bucket(source_bucket),
            source_key,
            extra,
            timeout,
        )
        result = {**resp, "Bucket": bucket, "Key": key}
        etag = (resp.get("CopyObjectResult") or {}).get("ETag")
        if etag and not etag.startswith('"'):
            etag = f'"{etag}"'  # SeaweedFS and Ceph send it without the quotes of every ETag
        if etag and "ETag" not in result:
            result["ETag"] = etag
        return result

    return Op("copy_object", attempt, DELETE, bucket, key)


def list_objects(
    bucket: str, prefix: str | None, max_keys: int | None, delimiter: str | None
) -> Op:
    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        resp = ep.transport.list_objects(
            ep.config.physical_bucket(bucket), prefix, max_keys, delimiter, timeout
        )
        resp["Name"] = bucket
        return resp

    return Op("list_objects", attempt, READ, bucket)


def upload_file(
    file_path: str,
    bucket: str,
    key: str,
    extra: Mapping[str, Any] | None = None,
    callback: Callable[[int], None] | None = None,
) -> Op:
    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        phys = ep.config.physical_bucket(bucket)
        if callback is None:
            resp = ep.transport.upload_file(file_path, phys, key, extra, timeout)
            return _with_etag(ep, phys, key, timeout, {**resp, "Bucket": bucket, "Key": key})
        sent = 0

        def count(n: int) -> None:
            nonlocal sent
            sent += n
            callback(n)

        try:
            resp = ep.transport.upload_file(file_path, phys, key, extra, timeout, count)
        except BaseException:
            if sent:
                callback(-sent)  # this attempt's bytes are given up; a retry counts anew
            raise
        return _with_etag(ep, phys, key, timeout, {**resp, "Bucket": bucket, "Key": key})

    return Op("upload_file", attempt, WRITE, bucket, key)


def _with_etag(
    ep: Endpoint, phys: str, key: str, timeout: float | None, result: dict[str, Any]
) -> dict[str, Any]:
    """Ceph RGW 16 answers CompleteMultipartUpload with an empty ETag: only then, ask a HEAD
    (it could see a later writer's object, which is why it is never asked otherwise)."""
    if not result.get("ETag"):
        head = ep.transport.head_object(phys, key, None, timeout)
        result["ETag"] = head.get("ETag")
    return result


def create_bucket(bucket: str) -> Op:
    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        return ep.transport.create_bucket(ep.config.physical_bucket(bucket), timeout)

    return Op("create_bucket", attempt, ADMIN, bucket)


def delete_bucket(bucket: str) -> Op:
    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        return ep.transport.delete_bucket(ep.config.physical_bucket(bucket), timeout)

    return Op("delete_bucket", attempt, ADMIN, bucket)


def list_buckets() -> Op:
    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        return ep.transport.list_buckets(timeout)

    return Op("list_buckets", attempt, READ)


def _bad_digest(ep: Endpoint, state: DownloadState, operation: str) -> bool:
    """Check a finished download: a short body raises :class:`ConnectionFailed`; the answer is
    whether the MD5 of the bytes contradicts the ETag (checked only for a plain-MD5 ETag of an
    object that is not SSE-KMS or SSE-C encrypted: only there is the ETag the bytes' MD5)."""
    total = state.total
    if total is not None and state.offset != total:
        raise ConnectionFailed(
            f"short body from {ep.name}: {state.offset} of {total} bytes",
            endpoint=ep.name,
            operation=operation,
        )
    etag = state.etag or ""
    resp = state.response
    encrypted = resp.get("ServerSideEncryption") == "aws:kms" or "SSECustomerAlgorithm" in resp
    return (
        _PLAIN_MD5.match(etag) is not None
        and not encrypted
        and state.md5.hexdigest() != etag.strip('"')
    )


class _Download:
    """One download: a temp file beside the target, renamed into place only when complete.

    Attempts on the same endpoint resume with a Range request from the bytes already received
    (pinned to the first answer's ETag); a new endpoint starts over, since another store may hold
    another version. On failure the target keeps its old content. With ``fsync`` (the
    default) the temp file reaches the disk before the rename; without it (a scratch copy that
    is uploaded and deleted) the bytes may still sit in the page cache.
    """

    def __init__(
        self,
        bucket: str,
        key: str,
        path: str,
        deadline: float | None,
        callback: Callable[[int], None] | None = None,
        fsync: bool = True,
    ) -> None:
        self.callback = callback
        self.fsync = fsync
        self.bucket = bucket
        self.key = key
        self.path = path
        self.deadline = deadline
        self.dir = os.path.dirname(os.path.abspath(path))
        self.tmp: str | None = None
        self.fh: BinaryIO | None = None
        self.state = DownloadState(deadline=deadline, progress=callback, durable=fsync)
        self.endpoint: object = None

    def _fresh(self, ep: object) -> BinaryIO:
        self.state.restart()  # gives back the bytes counted so far, if any
        self.cleanup()
        name = os.path.join(
            self.dir, f".{os.path.basename(self.path)}.s3kit-{secrets.token_hex(4)}"
        )
        # os.open with 0o666 lets the umask decide the mode, like a plain open() would.
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)  # RDWR: MD5 re-read
        except OSError as exc:
            raise InvalidArgument(
                "file_path", f"cannot write beside {self.path!r}: {exc.strerror}"
            ) from None
        self.tmp = name
        self.fh = os.fdopen(fd, "wb")
        self.state = DownloadState(
            deadline=self.deadline, progress=self.callback, durable=self.fsync
        )
        self.endpoint = ep
        return self.fh

    def attempt(self, ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        fh = self.fh if (self.endpoint is ep and self.fh is not None) else self._fresh(ep)
        state = self.state
        ep.transport.download_into(
            ep.config.physical_bucket(self.bucket), self.key, fh, state, timeout
        )
        if _bad_digest(ep, state, "download_file"):
            self._fresh(ep)  # the bytes are wrong: a retry must start from zero
            raise ConnectionFailed(
                f"MD5 mismatch downloading from {ep.name}",
                endpoint=ep.name,
                operation="download_file",
            )
        fh.flush()
        if self.fsync:
            os.fsync(fh.fileno())
        fh.close()
        self.fh = None
        assert self.tmp is not None
        os.replace(self.tmp, self.path)
        self.tmp = None
        return {
            "Bucket": self.bucket,
            "Key": self.key,
            "Path": self.path,
            "ContentLength": state.offset,
            "ETag": state.etag,
        }

    def cleanup(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        if self.tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)
            self.tmp = None


def download_file(
    bucket: str,
    key: str,
    file_path: str,
    deadline: float | None = None,
    callback: Callable[[int], None] | None = None,
    fsync: bool = True,
) -> Op:
    dl = _Download(bucket, key, file_path, deadline, callback, fsync)
    return Op("download_file", dl.attempt, READ, bucket, key, cleanup=dl.cleanup)


# ------------------------------------------------------------------ extras (contract §12)
#: a non-seekable upload stream that ends within this many bytes is kept in memory (retryable)
SMALL_UPLOAD = 8 * 1024 * 1024
#: StartAfter for a common prefix ``p``: past every key under it (``p`` + the last code point)
_PAST_PREFIX = "\U0010ffff"


@dataclass
class ListCursor:
    """Where a lazy listing stands: the last name yielded (a key, or a common prefix) and the
    continuation token of the endpoint that served the last page. That endpoint continues with
    its token; any other one with ``StartAfter`` (tokens are opaque and per server)."""

    last: str | None = None
    last_is_prefix: bool = False
    token: str | None = None
    token_endpoint: object = None
    served: object = None

    def start_after(self) -> str | None:
        if self.last is None:
            return None
        return self.last + _PAST_PREFIX if self.last_is_prefix else self.last


def list_page(
    bucket: str, prefix: str | None, delimiter: str | None, page_size: int, cursor: ListCursor
) -> Op:
    """One ListObjectsV2 page from where ``cursor`` stands (a request of its own)."""

    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        token = cursor.token if cursor.token_endpoint is ep else None
        resp = ep.transport.list_page(
            ep.config.physical_bucket(bucket),
            prefix,
            delimiter,
            page_size,
            None if token else cursor.start_after(),
            token,
            timeout,
        )
        next_token(resp, token, ep.name)  # a page that would loop fails here, on its endpoint
        cursor.served = ep
        resp["Name"] = bucket
        return resp

    return Op("iter_objects", attempt, READ, bucket)


def delete_objects(bucket: str, objects: list[dict[str, str]], quiet: bool) -> Op:
    """One DeleteObjects request (≤ 1000 keys). A write: not failed over once sent."""

    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        resp = ep.transport.delete_objects(
            ep.config.physical_bucket(bucket), objects, quiet, timeout
        )
        return {**resp, "Bucket": bucket}

    return Op("delete_objects", attempt, DELETE, bucket)


def seekable(fileobj: Any) -> bool:
    try:
        if not fileobj.seekable():
            return False
        fileobj.tell()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def upload_fileobj(
    fileobj: BinaryIO,
    bucket: str,
    key: str,
    extra: Mapping[str, Any] | None = None,
    callback: Callable[[int], None] | None = None,
) -> Op:
    """Upload from ``fileobj``'s position. A seekable one is rewound for each attempt. Of a
    non-seekable one the first 8 MiB are read ahead: a stream that ends within them is kept
    in memory and retried like bytes; a longer one is read once, so it is not sent twice."""
    source: BinaryIO = fileobj
    rewind = seekable(fileobj)
    start = fileobj.tell() if rewind else 0
    failed: list[BaseException] = []

    def attempt(ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        nonlocal source, rewind
        if rewind:
            source.seek(start)
        elif failed:
            raise InvalidArgument(
                "fileobj",
                "is not seekable and longer than 8 MiB, so the upload that failed (see "
                "__cause__) cannot be sent again; pass a seekable file object to have "
                "failures retried",
            ) from failed[-1]
        elif source is fileobj:
            head = read_upto(fileobj, SMALL_UPLOAD)
            if len(head) < SMALL_UPLOAD:
                source, rewind = io.BytesIO(head), True  # all of it: retried like bytes
            else:
                source = cast(BinaryIO, Prefixed(head, fileobj))
        phys = ep.config.physical_bucket(bucket)
        sent = 0

        def count(n: int) -> None:
            nonlocal sent
            sent += n
            if callback is not None:
                callback(n)

        try:
            resp = ep.transport.upload_fileobj(source, phys, key, extra, timeout, count)
        except BaseException as exc:
            failed.append(exc)
            if sent and callback is not None:
                callback(-sent)  # this attempt's bytes are given up; a retry counts anew
            raise
        return _with_etag(ep, phys, key, timeout, {**resp, "Bucket": bucket, "Key": key})

    return Op("upload_fileobj", attempt, WRITE, bucket, key)


class _StreamDownload:
    """A download into a caller's file object, written in order and never rewound.

    A retry (or, on a multiplexer, another endpoint) resumes with ``Range`` from the bytes
    written, pinned with ``If-Match`` to the first answer's ETag: another version of the object
    answers 412 and :class:`PreconditionFailed` is raised, since the bytes already written
    cannot be taken back. An MD5 mismatch raises ``BadDigest`` for the same reason.
    """

    def __init__(
        self,
        bucket: str,
        key: str,
        fileobj: BinaryIO,
        deadline: float | None,
        callback: Callable[[int], None] | None,
    ) -> None:
        self.bucket = bucket
        self.key = key
        self.fileobj = fileobj
        self.state = DownloadState(deadline=deadline, progress=callback)

    def attempt(self, ep: Endpoint, timeout: float | None) -> dict[str, Any]:
        state = self.state
        if state.total is None or state.offset < state.total or not state.offset:
            ep.transport.download_stream(
                ep.config.physical_bucket(self.bucket), self.key, self.fileobj, state, timeout
            )
        if _bad_digest(ep, state, "download_fileobj"):
            raise ServiceError(
                code="BadDigest",
                status=0,
                message=f"MD5 of the {state.offset} bytes written does not match the ETag",
                endpoint=ep.name,
                operation="download_fileobj",
            )
        return {
            "Bucket": self.bucket,
            "Key": self.key,
            "ContentLength": state.offset,
            "ETag": state.etag,
        }


def download_fileobj(
    bucket: str,
    key: str,
    fileobj: BinaryIO,
    deadline: float | None = None,
    callback: Callable[[int], None] | None = None,
) -> Op:
    dl = _StreamDownload(bucket, key, fileobj, deadline, callback)
    return Op("download_fileobj", dl.attempt, READ, bucket, key)
