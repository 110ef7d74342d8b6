"""The boto3 transport: one botocore client per endpoint, shared by every thread.

botocore's defaults are wrong for a library that owns retries and failover, so every one that
matters is set here explicitly:

- ``retries={"total_max_attempts": 1}``: botocore's hidden retries would multiply attempts under
  s3kit's own retry policy and hide failures from the breaker.
- ``connect_timeout`` 2 s / ``read_timeout`` 15 s instead of 60 s / 60 s: a stalled server must
  cost seconds, not minutes. Calls under a deadline use a client with a shorter read timeout
  (cached per rounded value, so the call without ``timeout=`` pays nothing).
- ``max_pool_connections`` ≥ ``max_concurrent`` × the transfer concurrency, so threads never
  queue on urllib3's pool behind s3kit's own limiter.
- For non-AWS endpoints: path-style addressing, checksums only when required (botocore ≥ 1.36
  sends CRC checksums that older servers reject), and no ``Expect: 100-continue`` (a server that
  answers a rejected PUT early and keeps the connection would poison the next request on it).
- Transfers use ``s3transfer.TransferManager`` directly, so the CRT client with its own retries
  is never switched in.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
import botocore.config
import botocore.exceptions
import botocore.handlers
from s3transfer.manager import TransferConfig, TransferManager
from s3transfer.subscribers import BaseSubscriber

from .. import _pid
from .._config import EndpointConfig
from .._errors import (
    AccessDenied,
    ConfigError,
    ConnectionFailed,
    ConnectTimeout,
    EndpointError,
    InvalidArgument,
    PreconditionFailed,
    ReadTimeout,
    ServiceError,
)
from . import DownloadState, Prefixed, next_token, read_upto
from ._codes import service_error

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

__all__ = ["Boto3Transport", "map_boto_error"]

MULTIPART_THRESHOLD = 8 * 1024 * 1024
TRANSFER_CONCURRENCY = 8
CHUNK = 1024 * 1024
DEADLINE_CHUNK = 64 * 1024  # under a deadline, check the clock at least this often
TRANSFER = "transfer"


def map_boto_error(exc: BaseException, endpoint: str, operation: str) -> Exception:
    """Map a botocore/urllib3 exception to s3kit's tree (returned, for ``raise … from exc``)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return _map_client_error(exc, endpoint, operation)
    text = f"{type(exc).__name__} from {endpoint} during {operation}: {exc}"
    if isinstance(exc, botocore.exceptions.ConnectTimeoutError):
        return ConnectTimeout(text, endpoint=endpoint, operation=operation)
    if isinstance(exc, botocore.exceptions.ReadTimeoutError):
        return ReadTimeout(text, endpoint=endpoint, operation=operation)
    if isinstance(
        exc,
        (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectionClosedError,
            botocore.exceptions.HTTPClientError,
            botocore.exceptions.ResponseStreamingError,
            botocore.exceptions.IncompleteReadError,
            ConnectionError,
            TimeoutError,
        ),
    ):
        return ConnectionFailed(text, endpoint=endpoint, operation=operation)
    if isinstance(
        exc, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)
    ):
        return AccessDenied(
            code="NoCredentials",
            status=0,
            message="no credentials found for this endpoint",
            endpoint=endpoint,
            operation=operation,
        )
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        return InvalidArgument("parameters", str(exc))
    if isinstance(exc, botocore.exceptions.ProfileNotFound):
        return ConfigError(f"endpoint {endpoint}: {exc}")
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        return ConnectionFailed(text, endpoint=endpoint, operation=operation)
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


def _map_client_error(
    exc: botocore.exceptions.ClientError, endpoint: str, operation: str
) -> ServiceError:
    response: Mapping[str, Any] = exc.response
    error = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    headers = meta.get("HTTPHeaders") or {}
    raw_code = str(error.get("Code") or "")
    status = int(meta.get("HTTPStatusCode") or (raw_code if raw_code.isdigit() else 0))
    return service_error(
        raw_code,
        status,
        message=str(error.get("Message") or ""),
        endpoint=endpoint,
        operation=operation,
        request_id=meta.get("RequestId") or headers.get("x-amz-request-id"),
        html="html" in str(headers.get("content-type", "")).lower(),
    )


def _strip(resp: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resp.items() if k != "Body"}


class Boto3Transport:
    name = "boto3"

    def __init__(self, config: EndpointConfig) -> None:
        self._cfg = config
        self._lock = threading.Lock()
        self._pid = _pid.current()
        # None: the shared client; a float: a shorter read timeout for deadline calls;
        # TRANSFER: the client s3transfer uses, which retries a part in place.
        self._clients: dict[float | str | None, S3Client] = {}
        self._session: boto3.session.Session | None = None
        self._transfer: TransferManager | None = None
        self._completed: dict[tuple[str, str], dict[str, Any]] = {}
        self._key_locks = tuple(threading.Lock() for _ in range(64))

    # ---------------------------------------------------------------- clients
    def _client(self, timeout: float | str | None = None) -> S3Client:
        if self._pid == _pid.current():
            client = self._clients.get(timeout)
            if client is not None:
                return client
        return self._make_client(timeout)

    def _make_client(self, timeout: float | str | None) -> S3Client:
        with self._lock:
            if self._pid != _pid.current():
                # A forked child must not share the parent's sockets: build everything anew.
                self._pid = _pid.current()
                self._clients = {}
                self._session = None
                self._transfer = None
            cached = self._clients.get(timeout)
            if cached is not None:
                return cached
            cfg = self._cfg
            if self._session is None:
                try:
                    self._session = boto3.session.Session(
                        aws_access_key_id=cfg.access_key,
                        aws_secret_access_key=cfg.secret_key,
                        aws_session_token=cfg.session_token,
                        profile_name=cfg.profile,
                    )
                except botocore.exceptions.ProfileNotFound:
                    raise ConfigError(
                        f"endpoint {cfg.name}: AWS profile {cfg.profile!r} not found"
                    ) from None
            read_timeout = (
                cfg.read_timeout if timeout is None or timeout == TRANSFER else float(timeout)
            )
            # Everywhere but inside a multipart transfer, s3kit's policy is the only retry. A
            # transfer holds one slot for the whole object and counts as one operation, so a
            # part is retried in place (≤ 3 attempts) instead of restarting a large object.
            attempts = 3 if timeout == TRANSFER else 1
            extra: dict[str, Any] = {}
            if not cfg.is_aws:
                extra["request_checksum_calculation"] = "when_required"
                extra["response_checksum_validation"] = "when_required"
            botocfg = botocore.config.Config(
                region_name=cfg.region,
                signature_version="s3v4",
                s3={"addressing_style": cfg.addressing_style},  # type: ignore[arg-type]
                retries={"total_max_attempts": attempts, "mode": "standard"},
                connect_timeout=min(cfg.connect_timeout, read_timeout),
                read_timeout=read_timeout,
                max_pool_connections=max(10, cfg.max_concurrent * TRANSFER_CONCURRENCY),
                tcp_keepalive=True,
                user_agent_extra="s3kit",
                **extra,
            )
            client: S3Client = self._session.client(
                "s3", endpoint_url=cfg.endpoint_url, config=botocfg, verify=cfg.verify
            )
            events = client.meta.events
            if not cfg.is_aws:
                events.unregister("before-call.s3", botocore.handlers.add_expect_header)
            events.register("before-parameter-build.s3.CompleteMultipartUpload", _remember_target)
            events.register("after-call.s3.CompleteMultipartUpload", self._capture_complete)
            self._clients[timeout] = client
            return client

    def client(self) -> S3Client:
        """The shared client (the escape hatch exposed as ``handler.client``)."""
        return self._client(None)

    def _client_for(self, timeout: float | None) -> S3Client:
        if timeout is None or timeout >= self._cfg.read_timeout:
            return self._client(None)
        # Round up to 0.25 s so deadline calls share a handful of cached clients.
        return self._client(max(0.25, math.ceil(timeout * 4) / 4.0))

    def _capture_complete(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        target = context.get("s3kit_target")
        if target is not None and "ETag" in parsed:
            with self._lock:
                self._completed[target] = _strip(parsed)

    def _manager(self) -> TransferManager:
        client = self._client(TRANSFER)  # rebuilds everything after a fork
        with self._lock:
            if self._transfer is None:
                self._transfer = TransferManager(
                    client,
                    TransferConfig(
                        multipart_threshold=MULTIPART_THRESHOLD,
                        multipart_chunksize=MULTIPART_THRESHOLD,
                        max_request_concurrency=TRANSFER_CONCURRENCY,
                        num_download_attempts=1,  # s3kit owns retries
                    ),
                )
            return self._transfer

    # ------------------------------------------------------------- operations
    def _call(self, operation: str, fn: Any, **params: Any) -> dict[str, Any]:
        try:
            return fn(**params)  # type: ignore[no-any-return]
        except EndpointError:
            raise
        except Exception as exc:
            raise map_boto_error(exc, self._cfg.name, operation) from exc

    def head_object(
        self, bucket: str, key: str, extra: Mapping[str, Any] | None, timeout: float | None
    ) -> dict[str, Any]:
        client = self._client_for(timeout)
        return self._call(
            "head_object", client.head_object, Bucket=bucket, Key=key, **(extra or {})
        )

    def get_object(
        self,
        bucket: str,
        key: str,
        range: str | None,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = dict(extra or {})
        if range is not None:
            params["Range"] = range
        client = self._client_for(timeout)
        ends = None if timeout is None else time.monotonic() + timeout
        try:
            resp = client.get_object(Bucket=bucket, Key=key, **params)
            body = resp["Body"]
            try:
                if ends is None:
                    data = body.read()  # verifies Content-Length: a cut body raises
                else:
                    parts = []
                    for chunk in body.iter_chunks(DEADLINE_CHUNK):  # also verifies length
                        parts.append(chunk)
                        if time.monotonic() > ends:
                            raise self._past_deadline("get_object")
                    data = b"".join(parts)
            finally:
                body.close()
        except EndpointError:
            raise
        except Exception as exc:
            raise map_boto_error(exc, self._cfg.name, "get_object") from exc
        result = _strip(resp)
        result["Body"] = data
        return result

    def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes | BinaryIO,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        client = self._client_for(timeout)
        return self._call(
            "put_object", client.put_object, Bucket=bucket, Key=key, Body=body, **(extra or {})
        )

    def delete_object(
        self, bucket: str, key: str, extra: Mapping[str, Any] | None, timeout: float | None
    ) -> dict[str, Any]:
        client = self._client_for(timeout)
        return self._call(
            "delete_object", client.delete_object, Bucket=bucket, Key=key, **(extra or {})
        )

    def copy_object(
        self,
        bucket: str,
        key: str,
        source_bucket: str,
        source_key: str,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        # A server-side copy may legitimately take long before answering; under a deadline the
        # client is one of a few cached per rounded budget (as in _client_for).
        if timeout is None or timeout >= self._cfg.long_op_timeout:
            client = self._client(float(self._cfg.long_op_timeout))
        else:
            client = self._client(max(0.25, math.ceil(timeout * 4) / 4.0))
        return self._call(
            "copy_object",
            client.copy_object,
            Bucket=bucket,
            Key=key,
            CopySource={"Bucket": source_bucket, "Key": source_key},
            **(extra or {}),
        )

    def list_objects(
        self,
        bucket: str,
        prefix: str | None,
        max_keys: int | None,
        delimiter: str | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        client = self._client_for(timeout)
        params: dict[str, Any] = {"Bucket": bucket}
        if prefix:
            params["Prefix"] = prefix
        if delimiter:
            params["Delimiter"] = delimiter
        contents: list[dict[str, Any]] = []
        prefixes: list[dict[str, Any]] = []
        truncated = False
        page: dict[str, Any] = {}
        while True:
            if max_keys is not None:
                params["MaxKeys"] = min(1000, max_keys - len(contents) - len(prefixes))
            page = self._call("list_objects", client.list_objects_v2, **params)
            contents.extend(page.get("Contents") or [])
            prefixes.extend(page.get("CommonPrefixes") or [])
            if not page.get("IsTruncated"):
                break
            if max_keys is not None and len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            params["ContinuationToken"] = next_token(
                page, params.get("ContinuationToken"), self._cfg.name
            )
        result = {
            k: v
            for k, v in page.items()
            if k not in ("ContinuationToken", "NextContinuationToken", "StartAfter")
        }
        result["Contents"] = contents
        if delimiter:
            result["CommonPrefixes"] = prefixes
        result["KeyCount"] = len(contents) + len(prefixes)
        result["IsTruncated"] = truncated
        result["Prefix"] = prefix or ""
        if max_keys is not None:
            result["MaxKeys"] = max_keys
        return result

    def upload_file(
        self,
        file_path: str,
        bucket: str,
        key: str,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        size = os.path.getsize(file_path)
        if size < MULTIPART_THRESHOLD:
            # Below the threshold send PutObject ourselves: s3transfer drops its response, and
            # with it the ETag the caller needs.
            with open(file_path, "rb") as fh:
                resp = self.put_object(bucket, key, fh, extra, timeout)
            if progress is not None:
                progress(size)
            return resp
        return self._multipart_upload(file_path, bucket, key, extra, progress, "upload_file")

    def _multipart_upload(
        self,
        source: str | BinaryIO,
        bucket: str,
        key: str,
        extra: Mapping[str, Any] | None,
        progress: Callable[[int], None] | None,
        operation: str,
    ) -> dict[str, Any]:
        """An s3transfer multipart upload of a path or a readable stream; returns the
        CompleteMultipartUpload answer (its ETag), which s3transfer itself drops."""
        manager = self._manager()
        target = (bucket, key)
        # The completion hook knows only bucket and key: uploads of the same key on this
        # endpoint take turns, so each one reads back its own CompleteMultipartUpload answer.
        with self._key_locks[hash(target) % len(self._key_locks)]:
            try:
                subscribers = [_Progress(progress)] if progress is not None else None
                future = manager.upload(
                    source, bucket, key, extra_args=dict(extra or {}), subscribers=subscribers
                )
                future.result()
            except EndpointError:
                raise
            except Exception as exc:
                raise map_boto_error(exc, self._cfg.name, operation) from exc
            finally:
                with self._lock:
                    completed = self._completed.pop(target, {})
        return completed

    def download_into(
        self, bucket: str, key: str, fileobj: BinaryIO, state: DownloadState, timeout: float | None
    ) -> None:
        self._stream_into(bucket, key, fileobj, state, timeout, "download_file")

    def _stream_into(
        self,
        bucket: str,
        key: str,
        fileobj: BinaryIO,
        state: DownloadState,
        timeout: float | None,
        operation: str,
    ) -> None:
        """The body of ``download_file`` and ``download_fileobj``: the object from
        ``state.offset`` on into ``fileobj``, every request pinned to the first answer's ETag.

        ``download_file`` owns a seekable temp file: it starts over from byte 0 when the object
        changed, and fetches a large object in ranged parts (``state.parts``) written in place.
        ``download_fileobj`` writes a caller's stream in order and cannot take bytes back: a
        changed object is :class:`PreconditionFailed` there.
        """
        client = self._client_for(timeout)
        try:
            if state.parts is None:  # else a retry of a large download: only the missing parts
                self._stream_body(client, bucket, key, fileobj, state, operation)
            if state.parts is not None:
                self._fetch_parts(client, bucket, key, fileobj, state)
        except EndpointError:
            raise
        except Exception as exc:
            raise map_boto_error(exc, self._cfg.name, operation) from exc

    def _stream_body(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        fileobj: BinaryIO,
        state: DownloadState,
        operation: str,
    ) -> None:
        """One GET from ``state.offset`` on, its body written to ``fileobj`` in order (of a
        large object on a fresh ``download_file``, only the first part: see ``state.parts``)."""
        restartable = operation == "download_file"
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if state.offset:
            params["Range"] = f"bytes={state.offset}-"
            if state.etag:
                # Never stitch two versions of the object together.
                params["IfMatch"] = state.etag
        try:
            resp = client.get_object(**params)
            if state.offset and state.etag and resp.get("ETag") != state.etag:
                # A server that ignores If-Match answered with another version.
                resp["Body"].close()
                raise version_changed(self._cfg.name, state.offset)
        except (botocore.exceptions.ClientError, PreconditionFailed) as exc:
            if not (restartable and state.offset and _changed(exc)):
                raise
            # The object changed since the first attempt: start over from byte 0.
            fileobj.seek(0)
            fileobj.truncate()
            state.restart()
            resp = client.get_object(Bucket=bucket, Key=key)
        body = resp["Body"]
        try:
            if not state.offset:
                state.etag = resp.get("ETag")
                state.total = resp.get("ContentLength")
                state.response = _strip(resp)
                if restartable and (state.total or 0) > MULTIPART_THRESHOLD:
                    # A large object: this answer serves the first part, ranged GETs the rest
                    # in parallel (as s3transfer does; one stream would cap the throughput).
                    state.parts = {}
                    self._stream_part(body, fileobj, 0, state)
                    return
            chunk_size = CHUNK if state.deadline is None else DEADLINE_CHUNK
            for chunk in body.iter_chunks(chunk_size):
                if state.take(fileobj, chunk):
                    raise self._past_deadline(operation)
        finally:
            body.close()

    def _stream_part(self, body: Any, fileobj: BinaryIO, start: int, state: DownloadState) -> None:
        """Write the body's bytes of the part at ``start`` (reading no further than its end)."""
        assert state.parts is not None and state.total is not None
        end = min(start + MULTIPART_THRESHOLD, state.total)
        fd = fileobj.fileno()
        done = state.parts.get(start, 0)
        while start + done < end:
            chunk = body.read(
                min(CHUNK if state.deadline is None else DEADLINE_CHUNK, end - start - done)
            )
            if not chunk:
                break  # the caller sees the short part and raises
            os.pwrite(fd, chunk, start + done)
            done += len(chunk)
            with self._lock:
                state.parts[start] = done
                state.offset += len(chunk)
            if state.progress is not None:
                state.progress(len(chunk))
            if state.deadline is not None and time.monotonic() > state.deadline:
                raise self._past_deadline("download_file")

    def _fetch_parts(
        self, client: S3Client, bucket: str, key: str, fileobj: BinaryIO, state: DownloadState
    ) -> None:
        assert state.parts is not None and state.total is not None
        total, parts = state.total, state.parts
        missing = [
            start
            for start in range(0, total, MULTIPART_THRESHOLD)
            if parts.get(start, 0) < min(MULTIPART_THRESHOLD, total - start)
        ]

        def fetch(start: int) -> None:
            done = parts.get(start, 0)
            end = min(start + MULTIPART_THRESHOLD, total) - 1
            params: dict[str, Any] = {"Bucket": bucket, "Key": key}
            params["Range"] = f"bytes={start + done}-{end}"
            if state.etag:
                params["IfMatch"] = state.etag  # every part from the same version
            resp = client.get_object(**params)
            body = resp["Body"]
            if state.etag and resp.get("ETag") != state.etag:
                body.close()  # a server that ignores If-Match answered with another version
                raise _VersionChanged
            try:
                self._stream_part(body, fileobj, start, state)
            finally:
                body.close()
            if parts.get(start, 0) < end + 1 - start:
                raise ConnectionFailed(
                    f"short part from {self._cfg.name} at byte {start}",
                    endpoint=self._cfg.name,
                    operation="download_file",
                )
            # Start writing the part back now, while other parts still arrive: the fsync
            # before the final rename then finds little left to write (on 256 MiB it was
            # as long as the whole transfer when all of it waited for the end).
            if state.durable:
                os.fdatasync(fileobj.fileno())

        if missing:
            workers = min(TRANSFER_CONCURRENCY, len(missing))
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                futures = [pool.submit(fetch, start) for start in missing]
                errors = [e for f in futures if (e := f.exception()) is not None]
            if errors:
                first = errors[0]
                if _changed(first):
                    # The object changed between parts: give the bytes up; a retry starts over.
                    fileobj.seek(0)
                    fileobj.truncate()
                    state.restart()
                    raise ConnectionFailed(
                        f"object changed during a ranged download from {self._cfg.name}",
                        endpoint=self._cfg.name,
                        operation="download_file",
                    ) from first
                raise first
        # The parts arrived out of order: hash the file once for the caller's MD5 check.
        if state.etag and "-" not in state.etag:
            digest = hashlib.md5()
            fd = fileobj.fileno()
            for pos in range(0, total, CHUNK):
                digest.update(os.pread(fd, min(CHUNK, total - pos), pos))
            state.md5 = digest

    def _past_deadline(self, operation: str) -> ReadTimeout:
        return ReadTimeout(
            f"deadline passed while reading the body from {self._cfg.name}",
            endpoint=self._cfg.name,
            operation=operation,
        )

    def presign(self, bucket: str, key: str, expiration: int, method: str) -> str:
        client_method = {"GET": "get_object", "PUT": "put_object", "HEAD": "head_object"}[method]
        try:
            return self._client(None).generate_presigned_url(
                client_method, Params={"Bucket": bucket, "Key": key}, ExpiresIn=expiration
            )
        except Exception as exc:
            raise map_boto_error(exc, self._cfg.name, "create_presigned_url") from exc

    def create_bucket(self, bucket: str, timeout: float | None) -> dict[str, Any]:
        params: dict[str, Any] = {"Bucket": bucket}
        if self._cfg.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self._cfg.region}
        return self._call("create_bucket", self._client_for(timeout).create_bucket, **params)

    def delete_bucket(self, bucket: str, timeout: float | None) -> dict[str, Any]:
        return self._call("delete_bucket", self._client_for(timeout).delete_bucket, Bucket=bucket)

    def list_buckets(self, timeout: float | None) -> dict[str, Any]:
        return self._call("list_buckets", self._client_for(timeout).list_buckets)

    def close(self) -> None:
        with self._lock:
            transfer, self._transfer = self._transfer, None
            clients, self._clients = list(self._clients.values()), {}
        if transfer is not None:
            transfer.shutdown()
        for client in clients:
            client.close()

    # ---------------------------------------------- extras (contract §12): one page, batches
    def list_page(
        self,
        bucket: str,
        prefix: str | None,
        delimiter: str | None,
        max_keys: int,
        start_after: str | None,
        token: str | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        """One ListObjectsV2 page, continued by ``token`` (this endpoint's) or ``start_after``."""
        params: dict[str, Any] = {"Bucket": bucket, "MaxKeys": max_keys}
        if prefix:
            params["Prefix"] = prefix
        if delimiter:
            params["Delimiter"] = delimiter
        if token:
            params["ContinuationToken"] = token
        elif start_after:
            params["StartAfter"] = start_after
        client = self._client_for(timeout)
        return _strip(self._call("iter_objects", client.list_objects_v2, **params))

    def delete_objects(
        self,
        bucket: str,
        objects: Sequence[Mapping[str, str]],
        quiet: bool,
        timeout: float | None,
    ) -> dict[str, Any]:
        """One DeleteObjects request (at most 1000 ``{"Key"[, "VersionId"]}``)."""
        client = self._client_for(timeout)
        resp = self._call(
            "delete_objects",
            client.delete_objects,
            Bucket=bucket,
            Delete={"Objects": [dict(o) for o in objects], "Quiet": quiet},
        )
        result = _strip(resp)
        result["Deleted"] = list(resp.get("Deleted") or [])
        result["Errors"] = list(resp.get("Errors") or [])
        return result

    def upload_fileobj(
        self,
        fileobj: BinaryIO,
        bucket: str,
        key: str,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Stream ``fileobj`` from its current position: PutObject below the multipart
        threshold (read into memory), else a multipart upload of threshold-sized parts."""
        head = read_upto(fileobj, MULTIPART_THRESHOLD)
        if len(head) < MULTIPART_THRESHOLD:
            resp = self.put_object(bucket, key, bytes(head), extra, timeout)
            if progress is not None:
                progress(len(head))
            return resp
        # read() is all s3transfer needs of the stream
        source = cast(BinaryIO, Prefixed(head, fileobj))
        return self._multipart_upload(source, bucket, key, extra, progress, "upload_fileobj")

    def download_stream(
        self, bucket: str, key: str, fileobj: BinaryIO, state: DownloadState, timeout: float | None
    ) -> None:
        """Write the object to ``fileobj`` in order, from ``state.offset`` on (a resume is a
        Range request pinned with If-Match: another version answers 412, never stitched)."""
        self._stream_into(bucket, key, fileobj, state, timeout, "download_fileobj")


def version_changed(endpoint: str, offset: int) -> PreconditionFailed:
    """A resumed download met another version of the object: the bytes written cannot be
    taken back from a stream, so the caller gets a 412 (a client error, not retried)."""
    return PreconditionFailed(
        code="PreconditionFailed",
        status=412,
        message=f"the object changed after {offset} bytes were written; not stitched",
        endpoint=endpoint,
        operation="download_fileobj",
    )


class _VersionChanged(Exception):
    """A resumed or ranged answer came from another version of the object."""


def _changed(exc: BaseException) -> bool:
    """Whether ``exc`` says the object is no longer the version a download is pinned to: a 412
    answer to If-Match, or an answer with another ETag from a server that ignores If-Match."""
    if isinstance(exc, (_VersionChanged, PreconditionFailed)):
        return True
    response = getattr(exc, "response", {})
    return bool(response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412)


class _Progress(BaseSubscriber):
    """Forwards s3transfer's byte counts (negative when a part is retried)."""

    def __init__(self, progress: Callable[[int], None]) -> None:
        self._progress = progress

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self._progress(bytes_transferred)


def _remember_target(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    context["s3kit_target"] = (params.get("Bucket"), params.get("Key"))
