"""The Transport seam: how the endpoint core talks to one S3 server.

The core (breaker, retry, limiter, routing) never imports boto3; it calls a :class:`Transport`.
Each implementation maps its own exceptions into s3kit's tree at this boundary, once, so the core
classifies outcomes the same way whatever library carried the request.

Every method takes the *physical* bucket name and an optional ``timeout``: a shorter read
timeout for calls under a deadline (``None`` means the endpoint's configured timeouts).
Results are plain dicts in boto3's shapes, without ``"Endpoint"`` (the core adds it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from .._config import EndpointConfig
from .._errors import ConnectionFailed

__all__ = [
    "DownloadState",
    "Prefixed",
    "Transport",
    "WriteBack",
    "make_transport",
    "next_token",
    "read_upto",
]


def next_token(page: Mapping[str, Any], sent: str | None, endpoint: str) -> str | None:
    """The continuation token of a ListObjectsV2 page, None after the last page.

    A truncated page whose token is missing, or is the token just sent, is a server bug that
    would make the listing loop forever: ``ConnectionFailed`` (an endpoint failure, as for a
    corrupt body), so the listing is retried or goes on at another endpoint.
    """
    if not page.get("IsTruncated"):
        return None
    token = page.get("NextContinuationToken")
    if not token or token == sent:
        problem = "no continuation token" if not token else "the continuation token it was sent"
        raise ConnectionFailed(
            f"endpoint {endpoint!r} answered list_objects with a truncated page and {problem}: "
            "the listing would never end",
            endpoint=endpoint,
            operation="list_objects",
        )
    return str(token)


@dataclass
class DownloadState:
    """Progress of one download across attempts, so a retry resumes with a Range request."""

    offset: int = 0
    etag: str | None = None
    total: int | None = None
    md5: Any = field(default_factory=hashlib.md5)
    response: dict[str, Any] = field(default_factory=dict)
    deadline: float | None = None  # monotonic time; checked between body chunks
    progress: Callable[[int], None] | None = None  # called with each chunk's size (and minus
    # the bytes given up when a download starts over, as s3transfer does)
    #: ranged-parts mode for large objects: part start -> bytes of it written (None: one stream)
    parts: dict[int, int] | None = None

    #: whether chunks are hashed: decided at the first chunk, when the ETag is known (only a
    #: single-part object's ETag is the MD5 of its bytes; hashing a multipart one is wasted CPU)
    hashing: bool | None = None
    #: download_file will fsync its temp file before the rename: transports start writing it
    #: back to disk while bytes still arrive (False for ``download_file(fsync=False)``)
    durable: bool = True

    def take(self, fileobj: BinaryIO, chunk: bytes) -> bool:
        """Write one body chunk; returns True once the deadline has passed."""
        fileobj.write(chunk)
        hashing = self.hashing
        if hashing is None:
            etag = self.etag
            hashing = self.hashing = etag is None or "-" not in etag
        if hashing:
            self.md5.update(chunk)
        self.offset += len(chunk)
        if self.progress is not None:
            self.progress(len(chunk))
        return self.deadline is not None and time.monotonic() > self.deadline

    def restart(self) -> None:
        """Forget the progress (the object changed, or the bytes were bad)."""
        if self.progress is not None and self.offset:
            self.progress(-self.offset)
        self.offset = 0
        self.etag = None
        self.total = None
        self.md5 = hashlib.md5()
        self.hashing = None
        self.response = {}
        self.parts = None


class WriteBack:
    """Write a streamed download back to disk while it still arrives.

    ``download_file`` makes its temp file durable (fsync) before the rename. Left to the end, that
    fsync writes the whole object at once: for 256 MiB about as long as the transfer itself on
    this project's test machine. Every ``step`` bytes a background ``fdatasync`` starts (one at a
    time), so the final fsync finds little left. :meth:`close` waits for the one in progress
    (the file must not be closed under it).
    """

    STEP = 8 * 1024 * 1024

    def __init__(self, fileobj: BinaryIO, step: int = STEP) -> None:
        self._fileobj = fileobj
        self._step = step
        self._next = step
        self._thread: threading.Thread | None = None

    def written(self, offset: int) -> None:
        """Note that the file now holds ``offset`` bytes."""
        if offset < self._next:
            return
        thread = self._thread
        if thread is not None and thread.is_alive():
            return  # the previous write-back is still running: the next one covers this too
        self._next = offset + self._step
        self._fileobj.flush()  # the buffered tail, so fdatasync sees every byte written so far
        fd = self._fileobj.fileno()
        self._thread = threading.Thread(target=_fdatasync, args=(fd,), name="s3kit-writeback")
        self._thread.start()

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()


def _fdatasync(fd: int) -> None:
    # Only a head start: the download's own fsync reports what matters.
    with contextlib.suppress(OSError):
        os.fdatasync(fd)


def read_upto(fileobj: BinaryIO, size: int) -> bytearray:
    """Read up to ``size`` bytes (fewer only at the end of the stream)."""
    buf = bytearray()
    while len(buf) < size:
        chunk = fileobj.read(size - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


class Prefixed:
    """A read-only stream: ``head`` (bytes already read from ``tail``), then the rest of it."""

    def __init__(self, head: bytes | bytearray, tail: BinaryIO) -> None:
        self._head = memoryview(head)
        self._pos = 0
        self._tail = tail

    def read(self, size: int | None = -1) -> bytes:
        left = len(self._head) - self._pos
        if left <= 0:
            return self._tail.read(-1 if size is None else size)
        whole = size is None or size < 0
        n = left if whole else min(size or 0, left)
        out = bytes(self._head[self._pos : self._pos + n])
        self._pos += n
        return out + self._tail.read() if whole else out


class Transport(Protocol):
    name: str

    def head_object(
        self, bucket: str, key: str, extra: Mapping[str, Any] | None, timeout: float | None
    ) -> dict[str, Any]: ...

    def get_object(
        self,
        bucket: str,
        key: str,
        range: str | None,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> dict[str, Any]: ...

    def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes | BinaryIO,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> dict[str, Any]: ...

    def delete_object(
        self, bucket: str, key: str, extra: Mapping[str, Any] | None, timeout: float | None
    ) -> dict[str, Any]: ...

    def copy_object(
        self,
        bucket: str,
        key: str,
        source_bucket: str,
        source_key: str,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> dict[str, Any]: ...

    def list_objects(
        self,
        bucket: str,
        prefix: str | None,
        max_keys: int | None,
        delimiter: str | None,
        timeout: float | None,
    ) -> dict[str, Any]: ...

    def upload_file(
        self,
        file_path: str,
        bucket: str,
        key: str,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]: ...

    def download_into(
        self, bucket: str, key: str, fileobj: BinaryIO, state: DownloadState, timeout: float | None
    ) -> None: ...

    def presign(self, bucket: str, key: str, expiration: int, method: str) -> str: ...

    def create_bucket(self, bucket: str, timeout: float | None) -> dict[str, Any]: ...

    def delete_bucket(self, bucket: str, timeout: float | None) -> dict[str, Any]: ...

    def list_buckets(self, timeout: float | None) -> dict[str, Any]: ...

    def close(self) -> None: ...

    # extras (contract §12): one listing page, one DeleteObjects batch, streams
    def list_page(
        self,
        bucket: str,
        prefix: str | None,
        delimiter: str | None,
        max_keys: int,
        start_after: str | None,
        token: str | None,
        timeout: float | None,
    ) -> dict[str, Any]: ...

    def delete_objects(
        self,
        bucket: str,
        objects: Sequence[Mapping[str, str]],
        quiet: bool,
        timeout: float | None,
    ) -> dict[str, Any]: ...

    def upload_fileobj(
        self,
        fileobj: BinaryIO,
        bucket: str,
        key: str,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]: ...

    def download_stream(
        self, bucket: str, key: str, fileobj: BinaryIO, state: DownloadState, timeout: float | None
    ) -> None: ...


def make_transport(config: EndpointConfig) -> Transport:
    """The transport named by ``config.transport``."""
    if config.transport == "boto3":
        from ._boto3 import Boto3Transport

        return Boto3Transport(config)
    if config.transport == "obstore":
        from ._obstore import ObstoreTransport

        return ObstoreTransport(config)
    from .._errors import ConfigError

    raise ConfigError(f"unknown transport {config.transport!r}")
