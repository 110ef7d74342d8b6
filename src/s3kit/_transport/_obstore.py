"""The obstore transport: Rust's ``object_store`` behind the same seam as boto3.

obstore is an optional extra (``s3kit[obstore]``), imported only when this transport is built.
Its defaults are adjusted like botocore's:

- ``RetryConfig(max_retries=0)``: s3kit owns retries, failover and the breaker.
- Timeouts are explicit: ``connect_timeout``; s3kit's ``read_timeout`` (idle time between bytes)
  maps to obstore's per-read timeout; obstore's whole-request ``timeout`` (30 s by default) is
  only a backstop: ``long_op_timeout`` for plain calls and a day for streamed bodies. Calls under
  a deadline use a store whose timeouts end by it (cached per rounded value, like boto3 clients).
- One ``S3Store`` per (physical bucket, timeouts), created lazily, shared by every thread and
  rebuilt after ``os.fork()``. Path-style addressing unless ``addressing_style`` asks otherwise;
  ``allow_http`` for ``http://`` URLs; credentials come from the endpoint's configuration through
  a credential provider (so ``AWS_*`` variables in the environment never mix in), or from
  botocore's default chain / ``profile`` when no keys are configured.

What obstore cannot do is delegated to a lazily created :class:`Boto3Transport` for the same
endpoint: bucket operations, cross-bucket copies, listings other than a ``/``-delimited one under a
directory-like prefix, ``extra`` arguments without an obstore equivalent, and keys that obstore's
path model would reject or silently rewrite (a leading or trailing ``/``, empty, ``.`` or ``..``
segments, control characters). After ``os.fork()`` in a process that already used obstore, its
Tokio runtime is unusable (the child would hang), so such a child sends everything through boto3.

Results carry the documented subset of boto3's keys: ``ContentLength``, ``ETag``,
``LastModified``, ``ContentType``, ``Metadata`` (and ``VersionId`` when the server sends one);
``copy_object`` within a bucket returns no ``CopyObjectResult`` (obstore reports none).
"""

from __future__ import annotations

import datetime
import html
import logging
import math
import os
import re
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TypeVar

from .. import _pid
from .._config import EndpointConfig
from .._errors import (
    AccessDenied,
    ConfigError,
    ConnectionFailed,
    ConnectTimeout,
    EndpointError,
    InvalidArgument,
    NotFound,
    PreconditionFailed,
    ReadTimeout,
    ServiceError,
)
from . import DownloadState, WriteBack, read_upto
from ._boto3 import (
    MULTIPART_THRESHOLD,
    Boto3Transport,
    version_changed,
)
from ._codes import service_error

if TYPE_CHECKING:
    from obstore import GetOptions, GetResult, ObjectMeta, OffsetRange, SuffixRange
    from obstore.store import ClientConfig, S3Config, S3Credential, S3Store

__all__ = ["ObstoreTransport", "map_obstore_error", "native_key"]

log = logging.getLogger("s3kit")
_T = TypeVar("_T")

STREAM_TIMEOUT_S = 24 * 3600.0  # whole-request backstop for streamed bodies
#: parts of a multipart upload in flight at once. obstore holds each in memory: a 256 MiB upload
#: grew RSS by about 10 MiB + 8 MiB per part (74.6 MiB at the boto3 transport's 8 parts; 56 MiB
#: at 5 in `s3kit bench`). Throughput on SeaweedFS and nanio was flat from 4 to 8 parts.
UPLOAD_CONCURRENCY = 5
_MAX_STORES = 64

_CALL = 0  # small requests: per-read timeout, whole request ≤ long_op_timeout
_STREAM = 1  # bodies of any size: per-read timeout, whole request ≤ a day
_LONG = 2  # server-side copy: the server may think for long before answering

# Keys obstore's Path model rejects or rewrites: empty, leading/trailing "/", "//", "." or ".."
# segments, ASCII control characters.
_NOT_NATIVE = re.compile(r"[\x00-\x1f\x7f]|(?:^|/)\.{0,2}(?:/|$)")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_PLAIN_MD5 = re.compile(r'^"?[0-9a-fA-F]{32}"?$')  # as in _ops: a single-part ETag

_ATTRIBUTES = {
    "ContentType": "Content-Type",
    "CacheControl": "Cache-Control",
    "ContentDisposition": "Content-Disposition",
    "ContentEncoding": "Content-Encoding",
    "ContentLanguage": "Content-Language",
}
_ATTRIBUTE_KEYS = {v: k for k, v in _ATTRIBUTES.items()}
_RESERVED_METADATA = frozenset(name.lower() for name in (*_ATTRIBUTE_KEYS, "Storage-Class"))
_HEAD: GetOptions = {"head": True}  # shared, never mutated: obstore only reads it
_SIGN_METHODS: dict[str, Literal["GET", "PUT", "HEAD"]] = {
    "GET": "GET",
    "PUT": "PUT",
    "HEAD": "HEAD",
}
_GET_OPTIONS = {
    "IfMatch": "if_match",
    "IfNoneMatch": "if_none_match",
    "IfModifiedSince": "if_modified_since",
    "IfUnmodifiedSince": "if_unmodified_since",
    "VersionId": "version",
}

# The pid of the process whose Tokio runtime obstore uses (set before its first request).
_runtime_pid: int | None = None
_runtime_lock = threading.Lock()


def native_key(key: str) -> bool:
    """True when obstore can address ``key`` exactly as given (else boto3 carries the call)."""
    return _NOT_NATIVE.search(key) is None


def _obstore_usable() -> bool:
    pid = _runtime_pid
    return pid is None or pid == _pid.current()


def _claim_runtime() -> bool:
    """Mark this process as obstore's; False if a parent already started its runtime."""
    global _runtime_pid
    with _runtime_lock:
        if _runtime_pid is None:
            _runtime_pid = _pid.current()
        return _runtime_pid == _pid.current()


# ----------------------------------------------------------------------------- errors
_STATUS = re.compile(
    r"(?:non-2xx status code|error with status|with status):? (\d{3})([^:\n]*):? ?(.*)", re.S
)
_DEBUG_STATUS = re.compile(r"\bstatus: (\d{3}),")
_HTTP_KIND = re.compile(r"HttpError \{\s*kind: (\w+)")


def _xml_field(body: str, tag: str) -> str | None:
    match = re.search(rf"<{tag}>(.*?)</{tag}>", body, re.S)
    return html.unescape(match.group(1)).strip() if match else None


def _service_error(
    status: int, reason: str, body: str, endpoint: str, operation: str
) -> ServiceError:
    """The same error :func:`map_boto_error` makes of this HTTP answer (class, code, status)."""
    lowered = body.lstrip()[:512].lower()
    return service_error(
        _xml_field(body, "Code") or "",
        status,
        message=_xml_field(body, "Message") or reason.strip(),
        endpoint=endpoint,
        operation=operation,
        request_id=_xml_field(body, "RequestId"),
        html=lowered.startswith("<!doctype html") or "<html" in lowered,
    )


def _is_obstore_error(exc: BaseException, first: str) -> bool:
    try:
        from obstore.exceptions import BaseError
    except ImportError:  # pragma: no cover - only reachable without the extra
        return False
    if isinstance(exc, BaseError):
        return True
    # obstore raises the builtin FileNotFoundError for a missing object.
    return isinstance(exc, FileNotFoundError) and first.startswith("Object at location")


def map_obstore_error(exc: BaseException, endpoint: str, operation: str) -> Exception:
    """Map an obstore exception to s3kit's tree (returned, for ``raise … from exc``).

    obstore keeps the HTTP answer only in its message ("Server returned non-2xx status code:
    503 Service Unavailable: <body>"), so status, S3 code, message and request id are parsed
    from it; the codes are normalised exactly as the boto3 transport normalises them.
    """
    if isinstance(exc, EndpointError):
        return exc
    text = str(exc)
    first = text.split("\n\nDebug source:", 1)[0]
    if not _is_obstore_error(exc, first):
        if isinstance(exc, ValueError) and "path" in text.lower():
            return InvalidArgument("key", first.splitlines()[0] if first else text)
        return exc if isinstance(exc, Exception) else RuntimeError(text)

    match = _STATUS.search(first)
    if match:
        return _service_error(
            int(match.group(1)), match.group(2), match.group(3), endpoint, operation
        )
    debug_status = _DEBUG_STATUS.search(text)
    if debug_status:
        status = int(debug_status.group(1))
        return _service_error(status, "", "", endpoint, operation)

    import obstore.exceptions as oe

    summary = first.splitlines()[0] if first else type(exc).__name__
    service: dict[str, Any] = {"endpoint": endpoint, "operation": operation, "message": summary}
    if isinstance(exc, (FileNotFoundError, oe.NotFoundError)):
        return NotFound(code="NoSuchKey", status=404, **service)
    if isinstance(exc, oe.PermissionDeniedError):
        return AccessDenied(code="AccessDenied", status=403, **service)
    if isinstance(exc, oe.UnauthenticatedError):
        return AccessDenied(code="AccessDenied", status=401, **service)
    if isinstance(exc, oe.PreconditionError):
        return PreconditionFailed(code="PreconditionFailed", status=412, **service)
    if isinstance(exc, oe.NotModifiedError):
        return ServiceError(code="NotModified", status=304, **service)
    if isinstance(exc, oe.UnknownConfigurationKeyError):
        return ConfigError(f"endpoint {endpoint}: {summary}")

    lowered = text.lower()
    kind_match = _HTTP_KIND.search(text)
    kind = kind_match.group(1) if kind_match else ""
    message = f"{type(exc).__name__} from {endpoint} during {operation}: {summary}"
    timed_out = kind == "Timeout" or "timedout" in lowered or "timed out" in lowered
    connecting = kind == "Connect" or "connecterror" in lowered or "tcp connect" in lowered
    if timed_out:
        cls: type[EndpointError] = ConnectTimeout if connecting else ReadTimeout
        return cls(message, endpoint=endpoint, operation=operation)
    if (
        kind
        or connecting
        or "error sending request" in lowered
        or "body error" in lowered
        or "connection" in lowered
        or "http error" in lowered
    ):
        return ConnectionFailed(message, endpoint=endpoint, operation=operation)
    # An answer obstore could not make sense of (e.g. a 200 with a malformed body).
    return ServiceError(code=type(exc).__name__, status=0, **service)


# ----------------------------------------------------------------------------- shapes
def _head_shape(meta: ObjectMeta, attributes: Mapping[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ContentLength": meta["size"],
        "ETag": meta["e_tag"],
        "LastModified": meta["last_modified"],
    }
    metadata: dict[str, str] = {}
    for name, value in attributes.items():
        field = _ATTRIBUTE_KEYS.get(name)
        if field is not None:
            result[field] = value
        elif name == "Storage-Class":
            result["StorageClass"] = value
        else:
            metadata[name] = value
    result["Metadata"] = metadata
    if meta["version"] is not None:
        result["VersionId"] = meta["version"]
    return result


def _get_shape(
    result: GetResult,
    meta: ObjectMeta,
    attributes: Mapping[str, str],
    data: bytes,
    ranged: bool,
) -> dict[str, Any]:
    """A GetObject result (boto3's shape) for ``data``, the body read from ``result``."""
    shape = _head_shape(meta, attributes)
    shape["ContentLength"] = len(data)
    if ranged:
        start, stop = result.range
        shape["ContentRange"] = f"bytes {start}-{stop - 1}/{meta['size']}"
    shape["Body"] = data
    return shape


def _put_shape(put: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"ETag": put["e_tag"]}
    if put.get("version") is not None:
        result["VersionId"] = put["version"]
    return result


def _attributes(extra: Mapping[str, Any] | None) -> dict[str, str] | None:
    """obstore attributes for a write's ``extra`` arguments; None if some have no equivalent."""
    attributes: dict[str, str] = {}
    if not extra:
        return attributes
    for name, value in extra.items():
        if name in _ATTRIBUTES and isinstance(value, str):
            attributes[_ATTRIBUTES[name]] = value
        elif name == "Metadata" and isinstance(value, Mapping):
            for meta_key, meta_value in value.items():
                if (
                    not isinstance(meta_key, str)
                    or not isinstance(meta_value, str)
                    or meta_key.lower() in _RESERVED_METADATA
                    or not (meta_key + meta_value).isascii()
                ):
                    return None
                attributes[meta_key] = meta_value
        else:
            return None
    return attributes


def _get_options(extra: Mapping[str, Any] | None) -> GetOptions | None:
    """obstore get options for a read's ``extra`` arguments; None if some have no equivalent."""
    options: dict[str, Any] = {}
    for name, value in (extra or {}).items():
        option = _GET_OPTIONS.get(name)
        if option is None:
            return None
        options[option] = value
    return options  # type: ignore[return-value]


def _parse_range(spec: str) -> tuple[int, int] | OffsetRange | SuffixRange | None:
    """``bytes=a-b`` → obstore's range option (end exclusive); None for anything else."""
    match = _RANGE.match(spec.strip())
    if not match:
        return None
    start, end = match.groups()
    if start and end:
        return (int(start), int(end) + 1) if int(end) >= int(start) else None
    if start:
        return {"offset": int(start)}
    if end and int(end) > 0:
        return {"suffix": int(end)}
    return None


def _remaining(body: bytes | BinaryIO) -> int | None:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return len(body)
    try:
        return os.fstat(body.fileno()).st_size - body.tell()
    except (AttributeError, OSError, ValueError):
        pass
    try:
        pos = body.tell()
        end = body.seek(0, os.SEEK_END)
        body.seek(pos)
        return end - pos
    except (AttributeError, OSError, ValueError):
        return None


def _seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


class _Credentials:
    """obstore credential provider: the endpoint's keys, or botocore's chain (never logged)."""

    def __init__(self, config: EndpointConfig) -> None:
        self._cfg = config
        self._resolved: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "<s3kit credentials>"

    def resolve(self) -> None:
        """Resolve the default chain now (raises :class:`AccessDenied` if there is nothing)."""
        cfg = self._cfg
        if cfg.access_key is not None and cfg.secret_key is not None:
            return
        with self._lock:
            if self._resolved is not None:
                return
            import boto3
            import botocore.exceptions

            try:
                session = boto3.session.Session(
                    aws_access_key_id=cfg.access_key,
                    aws_secret_access_key=cfg.secret_key,
                    aws_session_token=cfg.session_token,
                    profile_name=cfg.profile,
                )
            except botocore.exceptions.ProfileNotFound:
                raise ConfigError(
                    f"endpoint {cfg.name}: AWS profile {cfg.profile!r} not found"
                ) from None
            try:
                creds = session.get_credentials()
            except (
                botocore.exceptions.NoCredentialsError,
                botocore.exceptions.PartialCredentialsError,
            ):
                creds = None
            if creds is None:
                raise AccessDenied(
                    code="NoCredentials",
                    status=0,
                    message="no credentials found for this endpoint",
                    endpoint=cfg.name,
                )
            self._resolved = creds

    def __call__(self) -> S3Credential:
        cfg = self._cfg
        if cfg.access_key is not None and cfg.secret_key is not None:
            return {
                "access_key_id": cfg.access_key,
                "secret_access_key": cfg.secret_key,
                "token": cfg.session_token,
                "expires_at": None,
            }
        self.resolve()
        frozen = self._resolved.get_frozen_credentials()
        # Ask again in a few minutes: botocore refreshes temporary credentials itself.
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": expires,
        }


class ObstoreTransport:
    name = "obstore"

    def __init__(self, config: EndpointConfig) -> None:
        try:
            import obstore
        except ImportError:
            raise ConfigError(
                f"endpoint {config.name}: transport 'obstore' needs the optional extra "
                "(pip install 's3kit[obstore]')"
            ) from None
        self._cfg = config
        self._lock = threading.Lock()
        self._pid = _pid.current()
        self._stores: dict[tuple[str, int, float | None], S3Store] = {}
        self._credentials = _Credentials(config)
        self._delegate: Boto3Transport | None = None
        self._fork_warned = False
        self._get = obstore.get
        self._get_async = obstore.get_async

    # ----------------------------------------------------------------- stores
    def _store(self, bucket: str, kind: int, timeout: float | None) -> S3Store:
        if timeout is not None:
            limit = self._cfg.long_op_timeout if kind == _LONG else self._cfg.read_timeout
            # Round up to 0.25 s so deadline calls share a handful of cached stores.
            timeout = max(0.25, math.ceil(timeout * 4) / 4) if timeout < limit else None
        key = (bucket, kind, timeout)
        if self._pid == _pid.current():
            store = self._stores.get(key)
            if store is not None:
                return store
        return self._make_store(key)

    def _make_store(self, key: tuple[str, int, float | None]) -> S3Store:
        from obstore.store import S3Store

        bucket, kind, deadline = key
        self._credentials.resolve()
        with self._lock:
            if self._pid != _pid.current():
                # A forked child must not share the parent's connections: build anew.
                self._pid = _pid.current()
                self._stores = {}
                self._delegate = None
            cached = self._stores.get(key)
            if cached is not None:
                return cached
            cfg = self._cfg
            if deadline is not None:
                read_timeout = total = deadline
                if kind != _LONG:
                    read_timeout = min(cfg.read_timeout, deadline)
            elif kind == _LONG:
                read_timeout = total = max(cfg.long_op_timeout, cfg.read_timeout)
            elif kind == _STREAM:
                read_timeout, total = cfg.read_timeout, STREAM_TIMEOUT_S
            else:
                read_timeout, total = cfg.read_timeout, max(cfg.long_op_timeout, cfg.read_timeout)
            client: ClientConfig = {
                "connect_timeout": _seconds(min(cfg.connect_timeout, read_timeout)),
                "read_timeout": _seconds(read_timeout),
                "timeout": _seconds(total),
            }
            url = cfg.endpoint_url.rstrip("/")
            https = url.lower().startswith("https://")
            if not https:
                client["allow_http"] = True
            if cfg.verify is False:
                client["allow_invalid_certificates"] = True
            elif isinstance(cfg.verify, str):
                with open(cfg.verify, "rb") as fh:
                    client["root_certificate"] = fh.read()
            virtual = cfg.addressing_style == "virtual" or (
                cfg.addressing_style == "auto" and cfg.is_aws and "." not in bucket
            )
            if virtual:
                scheme, _, host = url.partition("://")
                url = f"{scheme}://{bucket}.{host}"
            s3config: S3Config = {
                "endpoint": url,
                "region": cfg.region,
                "virtual_hosted_style_request": virtual,
                "skip_signature": False,
                # As botocore: sign the payload over plain HTTP only.
                "unsigned_payload": https,
            }
            _claim_runtime()
            if deadline is not None and len(self._stores) >= _MAX_STORES:
                # Deadline stores are cheap to rebuild; never let them pile up.
                self._stores = {k: v for k, v in self._stores.items() if k[2] is None}
            store = S3Store(
                bucket,
                config=s3config,
                client_options=client,
                retry_config={"max_retries": 0},
                credential_provider=self._credentials,
            )
            self._stores[key] = store
            return store

    def _boto(self) -> Boto3Transport:
        delegate = self._delegate
        if delegate is not None and self._pid == _pid.current():
            return delegate
        with self._lock:
            if self._pid != _pid.current():
                self._pid = _pid.current()
                self._stores = {}
                self._delegate = None
            if self._delegate is None:
                self._delegate = Boto3Transport(self._cfg)
            return self._delegate

    def client(self) -> Any:
        """The boto3 client of the delegate (the escape hatch exposed as ``handler.client``)."""
        return self._boto().client()

    def _native(self, key: str) -> bool:
        if _NOT_NATIVE.search(key) is not None:
            return False
        if _obstore_usable():
            return True
        if not self._fork_warned:
            self._fork_warned = True
            log.warning(
                "endpoint %s: obstore is not fork-safe and was used before this process "
                "forked; using boto3 here",
                self._cfg.name,
            )
        return False

    def _map(self, exc: BaseException, operation: str) -> Exception:
        return map_obstore_error(exc, self._cfg.name, operation)

    def _call(self, operation: str, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except EndpointError as exc:
            exc.operation = exc.operation or operation
            raise
        except Exception as exc:
            raise self._map(exc, operation) from exc

    # ------------------------------------------------------------- operations
    def head_object(
        self, bucket: str, key: str, extra: Mapping[str, Any] | None, timeout: float | None
    ) -> dict[str, Any]:
        # The hot path is written out (no closures, no option dict for a plain call): with a
        # ~0.3 ms transport every microsecond of Python here is visible (issue 9).
        if extra is None:
            options: GetOptions | None = _HEAD
        else:
            options = _get_options(extra)
            if options is not None:
                options["head"] = True
        if options is None or not self._native(key):
            return self._boto().head_object(bucket, key, extra, timeout)
        try:
            # get(head=True) rather than head(): head() drops Content-Type and metadata.
            result = self._get(self._store(bucket, _CALL, timeout), key, options=options)
            meta, attributes = result.meta, result.attributes
        except EndpointError as exc:  # from building the store (credentials)
            exc.operation = exc.operation or "head_object"
            raise
        except Exception as exc:
            raise self._map(exc, "head_object") from exc
        return _head_shape(meta, attributes)

    def get_object(
        self,
        bucket: str,
        key: str,
        range: str | None,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        options = None if extra is None else _get_options(extra)
        byte_range = None if range is None else _parse_range(range)
        if (
            (options is None and extra is not None)
            or (range is not None and byte_range is None)
            or not self._native(key)
        ):
            return self._boto().get_object(bucket, key, range, extra, timeout)
        if byte_range is not None:
            options = {**(options or {}), "range": byte_range}
        try:
            result = self._get(self._store(bucket, _STREAM, timeout), key, options=options)
            data = bytes(result.bytes())  # a cut body raises
            meta, attributes = result.meta, result.attributes
        except EndpointError as exc:  # from building the store (credentials)
            exc.operation = exc.operation or "get_object"
            raise
        except Exception as exc:
            raise self._map(exc, "get_object") from exc
        return _get_shape(result, meta, attributes, data, byte_range is not None)

    def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes | BinaryIO,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        attributes = _attributes(extra)
        if attributes is None or not self._native(key):
            return self._boto().put_object(bucket, key, body, extra, timeout)
        import obstore

        size = _remaining(body)
        kind = _CALL if size is not None and size < MULTIPART_THRESHOLD else _STREAM
        put = self._call(
            "put_object",
            lambda: obstore.put(
                self._store(bucket, kind, timeout),
                key,
                body,
                attributes=attributes or None,
                use_multipart=False,  # PutObject, as with boto3: one request, an MD5 ETag
            ),
        )
        return _put_shape(put)

    def delete_object(
        self, bucket: str, key: str, extra: Mapping[str, Any] | None, timeout: float | None
    ) -> dict[str, Any]:
        if extra or not self._native(key):
            return self._boto().delete_object(bucket, key, extra, timeout)
        import obstore

        self._call(
            "delete_object", lambda: obstore.delete(self._store(bucket, _CALL, timeout), key)
        )
        return {}

    def copy_object(
        self,
        bucket: str,
        key: str,
        source_bucket: str,
        source_key: str,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        if (
            extra
            or bucket != source_bucket
            or not self._native(key)
            or not self._native(source_key)
        ):
            return self._boto().copy_object(bucket, key, source_bucket, source_key, extra, timeout)
        import obstore

        self._call(
            "copy_object",
            lambda: obstore.copy(self._store(bucket, _LONG, timeout), source_key, key),
        )
        return {}

    def list_objects(
        self,
        bucket: str,
        prefix: str | None,
        max_keys: int | None,
        delimiter: str | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        # obstore lists by path segment and rewrites keys with a leading or trailing "/" (a
        # "folder/" marker would come back as "folder"), so only a "/"-delimited listing under
        # "" or a prefix ending in "/" maps exactly onto ListObjectsV2; anything else (and any
        # listing obstore refuses) goes through boto3.
        prefix = prefix or ""
        if (
            delimiter != "/"
            or (prefix and (not prefix.endswith("/") or not self._native(prefix[:-1])))
            or not _obstore_usable()
        ):
            return self._boto().list_objects(bucket, prefix, max_keys, delimiter, timeout)
        import obstore

        try:
            listing = self._call(
                "list_objects",
                lambda: obstore.list_with_delimiter(
                    self._store(bucket, _CALL, timeout), prefix[:-1] if prefix else None
                ),
            )
        except InvalidArgument:
            # A key under the prefix that obstore's path model refuses ("a//b", "./x", ...).
            return self._boto().list_objects(bucket, prefix, max_keys, delimiter, timeout)
        marker = prefix[:-1]
        contents = []
        for meta in listing["objects"]:
            path = meta["path"]
            contents.append(
                {
                    # obstore strips the trailing "/" of a marker object named like the prefix.
                    "Key": prefix if prefix and path == marker else path,
                    "LastModified": meta["last_modified"],
                    "ETag": meta["e_tag"],
                    "Size": meta["size"],
                }
            )
        prefixes = [{"Prefix": f"{p}/" if p else "/"} for p in listing["common_prefixes"]]
        contents.sort(key=lambda item: str(item["Key"]))
        prefixes.sort(key=lambda item: item["Prefix"])
        truncated = False
        if max_keys is not None and len(contents) + len(prefixes) > max_keys:
            # S3 counts keys and common prefixes together, in key order.
            merged = sorted(
                [(str(c["Key"]), 0, i) for i, c in enumerate(contents)]
                + [(p["Prefix"], 1, i) for i, p in enumerate(prefixes)]
            )[:max_keys]
            contents = [contents[i] for _, which, i in merged if which == 0]
            prefixes = [prefixes[i] for _, which, i in merged if which == 1]
            truncated = True
        result: dict[str, Any] = {
            "Contents": contents,
            "CommonPrefixes": prefixes,
            "KeyCount": len(contents) + len(prefixes),
            "IsTruncated": truncated,
            "Prefix": prefix,
            "Delimiter": delimiter,
            "Name": bucket,
        }
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
        attributes = _attributes(extra)
        if attributes is None or not self._native(key):
            return self._boto().upload_file(file_path, bucket, key, extra, timeout, progress)
        import obstore

        multipart = os.path.getsize(file_path) >= MULTIPART_THRESHOLD
        # Each part is its own request, so the plain call timeouts fit a multipart upload.
        put = self._call(
            "upload_file",
            lambda: obstore.put(
                self._store(bucket, _CALL, timeout),
                key,
                Path(file_path),
                attributes=attributes or None,
                use_multipart=multipart,
                chunk_size=MULTIPART_THRESHOLD,
                max_concurrency=UPLOAD_CONCURRENCY,
            ),
        )
        if progress is not None:  # obstore reports no progress: all at once when done
            progress(os.path.getsize(file_path))
        return _put_shape(put)

    def download_into(
        self, bucket: str, key: str, fileobj: BinaryIO, state: DownloadState, timeout: float | None
    ) -> None:
        if not self._native(key):
            return self._boto().download_into(bucket, key, fileobj, state, timeout)
        self._stream_into(bucket, key, fileobj, state, timeout, "download_file")
        return None

    def _stream_into(
        self,
        bucket: str,
        key: str,
        fileobj: BinaryIO,
        state: DownloadState,
        timeout: float | None,
        operation: str,
    ) -> None:
        """Stream the object (from ``state.offset``, pinned to ``state.etag``) into ``fileobj``.

        ``download_file`` writes a seekable temp file: when the object changed since the first
        attempt, it starts over from byte 0. ``download_fileobj`` cannot take written bytes back
        from a stream: there the change is a :class:`PreconditionFailed` (not stitched).
        """
        import obstore

        restartable = operation == "download_file"
        # download_file's temp file is fsynced before its rename: start that while bytes arrive.
        writeback = WriteBack(fileobj) if restartable and state.durable else None
        options: GetOptions = {}
        if state.offset:
            options["range"] = {"offset": state.offset}
            if state.etag:
                # Never stitch two versions of the object together.
                options["if_match"] = state.etag
        try:
            store = self._store(bucket, _STREAM, timeout)
            result: GetResult
            try:
                result = obstore.get(store, key, options=options)
                if state.offset and state.etag and result.meta["e_tag"] != state.etag:
                    # A server that ignores If-Match answered with another version.
                    raise version_changed(self._cfg.name, state.offset)
            except Exception as exc:
                mapped = self._map(exc, operation)
                if restartable and state.offset and isinstance(mapped, PreconditionFailed):
                    # The object changed since the first attempt: start over from byte 0.
                    fileobj.seek(0)
                    fileobj.truncate()
                    state.restart()
                    result = obstore.get(store, key)
                elif mapped is exc:
                    raise
                else:
                    raise mapped from exc
            if not state.offset:
                state.etag = result.meta["e_tag"]
                state.total = result.meta["size"]
                state.response = _head_shape(result.meta, result.attributes)
            # Chunks as they arrive (hyper hands over ~400 KiB at a time on a fast link): a
            # min_chunk_size buffer would be lost with a cut body, and the retry could not
            # resume at the byte where the cut happened.
            for chunk in result.stream(min_chunk_size=0):
                if state.take(fileobj, chunk):
                    raise ReadTimeout(
                        f"deadline passed while downloading from {self._cfg.name}",
                        endpoint=self._cfg.name,
                        operation=operation,
                    )
                if writeback is not None:
                    writeback.written(state.offset)
        except EndpointError:
            raise
        except Exception as exc:
            raise self._map(exc, operation) from exc
        finally:
            if writeback is not None:
                writeback.close()
        etag = state.etag or ""
        if (
            state.offset == state.total
            and _PLAIN_MD5.match(etag)
            and state.md5.hexdigest() != etag.strip('"')
        ):
            self._note_encryption(bucket, key, state, timeout)

    def _note_encryption(
        self, bucket: str, key: str, state: DownloadState, timeout: float | None
    ) -> None:
        """Copy the encryption headers obstore does not report into ``state.response``.

        An SSE-KMS or SSE-C object's ETag is not the MD5 of its bytes, and the download check
        only skips the MD5 comparison when the response says the object is encrypted. So on a
        mismatch (rare: encryption or corruption) ask boto3 with a HEAD pinned to the same ETag.
        """
        try:
            head = self._boto().head_object(bucket, key, {"IfMatch": state.etag}, timeout)
        except EndpointError:
            return  # the object changed, or the endpoint failed: the mismatch stands
        for name in ("ServerSideEncryption", "SSECustomerAlgorithm", "SSEKMSKeyId"):
            if name in head:
                state.response[name] = head[name]

    def presign(self, bucket: str, key: str, expiration: int, method: str) -> str:
        if not self._native(key):
            return self._boto().presign(bucket, key, expiration, method)
        import obstore

        return self._call(
            "create_presigned_url",
            lambda: obstore.sign(
                self._store(bucket, _CALL, None),
                _SIGN_METHODS[method],
                key,
                datetime.timedelta(seconds=expiration),
            ),
        )

    def create_bucket(self, bucket: str, timeout: float | None) -> dict[str, Any]:
        return self._boto().create_bucket(bucket, timeout)

    def delete_bucket(self, bucket: str, timeout: float | None) -> dict[str, Any]:
        return self._boto().delete_bucket(bucket, timeout)

    def list_buckets(self, timeout: float | None) -> dict[str, Any]:
        return self._boto().list_buckets(timeout)

    def close(self) -> None:
        with self._lock:
            self._stores = {}
            delegate, self._delegate = self._delegate, None
        if delegate is not None:
            delegate.close()

    # ---------------------------------------------- extras (contract §12): one page, batches
    # Listing pages and DeleteObjects batches go through boto3 (obstore lists by path segment
    # and reports no per-key delete errors); streams go natively when obstore can address the
    # key and express the extra arguments, like put_object and download_file.
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
        return self._boto().list_page(
            bucket, prefix, delimiter, max_keys, start_after, token, timeout
        )

    def delete_objects(
        self,
        bucket: str,
        objects: Sequence[Mapping[str, str]],
        quiet: bool,
        timeout: float | None,
    ) -> dict[str, Any]:
        return self._boto().delete_objects(bucket, objects, quiet, timeout)

    def upload_fileobj(
        self,
        fileobj: BinaryIO,
        bucket: str,
        key: str,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        attributes = _attributes(extra)
        if attributes is None or not self._native(key):
            return self._boto().upload_fileobj(fileobj, bucket, key, extra, timeout, progress)
        import obstore

        head = read_upto(fileobj, MULTIPART_THRESHOLD)
        if len(head) < MULTIPART_THRESHOLD:
            put = self._call(
                "upload_fileobj",
                lambda: obstore.put(
                    self._store(bucket, _CALL, timeout),
                    key,
                    bytes(head),
                    attributes=attributes or None,
                    use_multipart=False,
                ),
            )
            if progress is not None:
                progress(len(head))
            return _put_shape(put)

        def chunks() -> Iterator[bytes]:
            # Parts of the threshold's size: obstore buffers at most max_concurrency of them.
            yield bytes(head)
            if progress is not None:
                progress(len(head))
            while True:
                chunk = bytes(read_upto(fileobj, MULTIPART_THRESHOLD))
                if not chunk:
                    return
                yield chunk
                if progress is not None:
                    progress(len(chunk))

        put = self._call(
            "upload_fileobj",
            lambda: obstore.put(
                self._store(bucket, _CALL, timeout),
                key,
                chunks(),
                attributes=attributes or None,
                use_multipart=True,
                chunk_size=MULTIPART_THRESHOLD,
                max_concurrency=UPLOAD_CONCURRENCY,
            ),
        )
        return _put_shape(put)

    def download_stream(
        self, bucket: str, key: str, fileobj: BinaryIO, state: DownloadState, timeout: float | None
    ) -> None:
        if not self._native(key):
            return self._boto().download_stream(bucket, key, fileobj, state, timeout)
        self._stream_into(bucket, key, fileobj, state, timeout, "download_fileobj")
        return None

    # ------------------------------------------------- asyncio (obstore's *_async calls)
    # The hot verbs as coroutines, for the asyncio core (``s3kit._async_core``). A caller asks
    # :meth:`native_async` first: what obstore cannot carry natively (keys its path model
    # rejects, ``extra`` without an equivalent, file bodies, ...) goes through the thread pool
    # and the synchronous methods above, so a coroutine here never blocks on boto3.
    def native_async(
        self,
        operation: str,
        key: str,
        extra: Mapping[str, Any] | None = None,
        range: str | None = None,
        body: object = None,
    ) -> bool:
        """True when ``operation`` on ``key`` runs as one of the coroutines below."""
        if not self._native(key):
            return False
        if not extra and range is None and body is None:
            return operation in ("head_object", "get_object", "delete_object")
        if operation == "head_object":
            return _get_options(extra) is not None
        if operation == "get_object":
            return _get_options(extra) is not None and (
                range is None or _parse_range(range) is not None
            )
        if operation == "put_object":
            return isinstance(body, (bytes, bytearray, memoryview)) and (
                _attributes(extra) is not None
            )
        if operation == "delete_object":
            return not extra
        return False

    async def _acall(self, operation: str, call: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await call()
        except EndpointError as exc:
            exc.operation = exc.operation or operation
            raise
        except Exception as exc:
            raise self._map(exc, operation) from exc

    # head and get are written out like their sync twins (no closures, no _acall): each
    # coroutine frame here is resumed once per obstore future, twice for a GET (issue 9).
    async def head_object_async(
        self, bucket: str, key: str, extra: Mapping[str, Any] | None, timeout: float | None
    ) -> dict[str, Any]:
        options: GetOptions = _HEAD
        if extra:
            options = _get_options(extra) or {}
            options["head"] = True
        try:
            store = self._store(bucket, _CALL, timeout)
            result = await self._get_async(store, key, options=options)
        except EndpointError as exc:  # from building the store (credentials)
            exc.operation = exc.operation or "head_object"
            raise
        except Exception as exc:
            raise self._map(exc, "head_object") from exc
        return _head_shape(result.meta, result.attributes)

    async def get_object_async(
        self,
        bucket: str,
        key: str,
        range: str | None,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        options: GetOptions | None = (_get_options(extra) or {}) if extra else None
        byte_range = None if range is None else _parse_range(range)
        if byte_range is not None:
            options = {**(options or {}), "range": byte_range}
        try:
            store = self._store(bucket, _STREAM, timeout)
            result = await self._get_async(store, key, options=options)
            data = bytes(await result.bytes_async())  # a cut body raises
        except EndpointError as exc:  # from building the store (credentials)
            exc.operation = exc.operation or "get_object"
            raise
        except Exception as exc:
            raise self._map(exc, "get_object") from exc
        return _get_shape(result, result.meta, result.attributes, data, byte_range is not None)

    async def put_object_async(
        self,
        bucket: str,
        key: str,
        body: bytes | bytearray | memoryview,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        import obstore

        attributes = _attributes(extra) or None
        kind = _CALL if len(body) < MULTIPART_THRESHOLD else _STREAM
        put = await self._acall(
            "put_object",
            lambda: obstore.put_async(
                self._store(bucket, kind, timeout),
                key,
                body,
                attributes=attributes,
                use_multipart=False,  # PutObject, as with boto3: one request, an MD5 ETag
            ),
        )
        return _put_shape(put)

    async def delete_object_async(
        self, bucket: str, key: str, extra: Mapping[str, Any] | None, timeout: float | None
    ) -> dict[str, Any]:
        import obstore

        await self._acall(
            "delete_object",
            lambda: obstore.delete_async(self._store(bucket, _CALL, timeout), key),
        )
        return {}
