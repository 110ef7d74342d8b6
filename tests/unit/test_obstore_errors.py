"""obstore's exceptions mapped into s3kit's tree, with the same codes the boto3 transport gives.

Messages are obstore 0.12's own (captured from moto, nanio and canned answers); a few tests run
real obstore requests against an in-process socket server, so a change in obstore's message
format shows up here rather than as a silent misclassification.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import botocore.exceptions
import pytest

from s3kit._config import make_config
from s3kit._errors import (
    AccessDenied,
    ConfigError,
    ConnectionFailed,
    ConnectTimeout,
    InvalidArgument,
    NotFound,
    PreconditionFailed,
    ReadTimeout,
    ServiceError,
    Throttled,
    TransportError,
)
from s3kit._outcome import (
    ACCESS,
    BAD_CREDENTIALS,
    CLIENT,
    FAILURE,
    THROTTLE,
    TRANSIENT,
    classify,
)
from s3kit._transport import DownloadState
from s3kit._transport._boto3 import map_boto_error

oe = pytest.importorskip("obstore.exceptions")
from s3kit._transport._obstore import (  # noqa: E402
    ObstoreTransport,
    map_obstore_error,
    native_key,
)

EP = "ep1"
URL = "http://127.0.0.1:9/bkt/k"


def _status_text(method: str, status: str, body: str, prefix: str = "Generic S3 error: ") -> str:
    """obstore's message for an HTTP error answer (the Debug part abridged)."""
    code = status.split()[0]
    escaped = body.replace('"', '\\"')
    return (
        f"{prefix}Error performing {method} {URL} in 3.2ms - Server returned non-2xx status "
        f'code: {status}: {body}\n\nDebug source:\nGeneric {{\n    store: "S3",\n    source: '
        f"RetryError(\n        RetryErrorImpl {{\n            method: {method},\n            "
        f"retries: 0,\n            inner: Status {{\n                status: {code},\n"
        f'                body: Some(\n                    "{escaped}",\n                ),\n'
        "            },\n        },\n    ),\n}"
    )


def _xml(code: str, message: str, request_id: str = "RID-1") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
        f"{code}</Code><Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
    )


def _http_text(method: str, kind: str, source: str, summary: str) -> str:
    return (
        f"Generic S3 error: Error performing {method} {URL} in 1.0s - HTTP error: {summary}\n\n"
        'Debug source:\nGeneric {\n    store: "S3",\n    source: RetryError(\n        '
        "RetryErrorImpl {\n            inner: Http(\n                HttpError {\n"
        f"                    kind: {kind},\n                    source: {source}\n"
        "                },\n            ),\n        },\n    ),\n}"
    )


REFUSED = _http_text(
    "GET",
    "Connect",
    "reqwest::Error { kind: Request, source: hyper_util::client::legacy::Error(Connect, "
    'ConnectError("tcp connect error", 127.0.0.1:9, Os { code: 111, kind: ConnectionRefused, '
    'message: "Connection refused" })) }',
    "error sending request",
)
RESET = _http_text(
    "GET",
    "Interrupted",
    "reqwest::Error { kind: Request, source: hyper_util::client::legacy::Error(SendRequest, "
    'hyper::Error(Io, Os { code: 104, kind: ConnectionReset, message: "Connection reset by '
    'peer" })) }',
    "error sending request",
)
CLOSED = _http_text(
    "HEAD",
    "Request",
    "reqwest::Error { kind: Request, source: hyper_util::client::legacy::Error(SendRequest, "
    "hyper::Error(IncompleteMessage)) }",
    "error sending request",
)
STALLED = _http_text(
    "GET", "Timeout", "reqwest::Error { kind: Request, source: TimedOut }", "error sending request"
)
CONNECT_TIMEOUT = _http_text(
    "GET",
    "Timeout",
    "reqwest::Error { kind: Request, source: hyper_util::client::legacy::Error(Connect, "
    'ConnectError("tcp connect error", 127.0.0.1:9, Custom { kind: TimedOut, error: '
    "Elapsed(()) })) }",
    "error sending request",
)
TRUNCATED = (
    "Generic S3 error: HTTP error: request or response body error\n\nDebug source:\nGeneric {\n"
    '    store: "S3",\n    source: HttpError {\n        kind: Interrupted,\n        source: '
    "reqwest::Error {\n            kind: Body,\n            source: hyper::Error(Body, Custom "
    "{ kind: UnexpectedEof, error: IncompleteBody }),\n        },\n    },\n}"
)
BODY_STALLED = (
    "Generic S3 error: HTTP error: request or response body error\n\nDebug source:\nGeneric {\n"
    '    store: "S3",\n    source: HttpError {\n        kind: Timeout,\n        source: '
    "reqwest::Error {\n            kind: Body,\n            source: TimedOut,\n        },\n"
    "    },\n}"
)
HTML_503 = "<html><body><h1>503 Service Unavailable</h1>No server is available.</body></html>"
NOT_FOUND_GET = _status_text(
    "GET",
    "404 Not Found",
    _xml("NoSuchKey", "The specified key does not exist."),
    prefix="Object at location k not found: ",
)
NOT_FOUND_HEAD = _status_text(
    "HEAD", "404 Not Found", "", prefix="Object at location k not found: "
)


def _boto(status: int, code: str | None, message: str = "", html: bool = False) -> Exception:
    """The botocore ClientError for the same answer (what the boto3 transport would see)."""
    response: Any = {
        "Error": {"Code": code if code is not None else str(status), "Message": message},
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "HTTPHeaders": {"content-type": "text/html" if html else "application/xml"},
        },
    }
    return botocore.exceptions.ClientError(response, "GetObject")


# (obstore exception, botocore equivalent or None, expected class, code, status, outcome)
ANSWERS: list[tuple[str, BaseException, Exception | None, type, str, int, int]] = [
    (
        "get-missing-key",
        FileNotFoundError(NOT_FOUND_GET),
        _boto(404, "NoSuchKey", "The specified key does not exist."),
        NotFound,
        "NoSuchKey",
        404,
        CLIENT,
    ),
    (
        "head-missing-key",
        FileNotFoundError(NOT_FOUND_HEAD),
        _boto(404, None, "Not Found"),
        NotFound,
        "NotFound",
        404,
        CLIENT,
    ),
    (
        "missing-bucket",
        FileNotFoundError(
            _status_text(
                "GET",
                "404 Not Found",
                _xml("NoSuchBucket", "The specified bucket does not exist"),
                prefix="Object at location k not found: ",
            )
        ),
        _boto(404, "NoSuchBucket"),
        NotFound,
        "NoSuchBucket",
        404,
        CLIENT,
    ),
    (
        "wrong-secret",
        oe.PermissionDeniedError(
            _status_text(
                "GET",
                "403 Forbidden",
                _xml(
                    "SignatureDoesNotMatch",
                    "The request signature we calculated does not match the signature you "
                    "provided.",
                ),
                prefix="The operation lacked the necessary privileges to complete for path k: ",
            )
        ),
        _boto(403, "SignatureDoesNotMatch"),
        AccessDenied,
        "SignatureDoesNotMatch",
        403,
        BAD_CREDENTIALS,
    ),
    (
        "unknown-key-id",
        oe.PermissionDeniedError(
            _status_text(
                "PUT",
                "403 Forbidden",
                _xml("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist."),
            )
        ),
        _boto(403, "InvalidAccessKeyId"),
        AccessDenied,
        "InvalidAccessKeyId",
        403,
        BAD_CREDENTIALS,
    ),
    (
        "head-forbidden-bodiless",
        oe.PermissionDeniedError(_status_text("HEAD", "403 Forbidden", "")),
        _boto(403, None, "Forbidden"),
        AccessDenied,
        "AccessDenied",
        403,
        ACCESS,
    ),
    (
        "policy-denied",
        oe.PermissionDeniedError(
            _status_text("GET", "403 Forbidden", _xml("AccessDenied", "Access Denied"))
        ),
        _boto(403, "AccessDenied"),
        AccessDenied,
        "AccessDenied",
        403,
        ACCESS,
    ),
    (
        "precondition",
        oe.PreconditionError(
            _status_text(
                "GET",
                "412 Precondition Failed",
                _xml("PreconditionFailed", "At least one of the pre-conditions failed"),
                prefix="Request precondition failure for path k: ",
            )
        ),
        _boto(412, "PreconditionFailed"),
        PreconditionFailed,
        "PreconditionFailed",
        412,
        CLIENT,
    ),
    (
        "not-modified",
        oe.NotModifiedError(
            _status_text(
                "GET", "304 Not Modified", "", prefix="Object at location k not modified: "
            )
        ),
        _boto(304, None),
        ServiceError,
        "NotModified",
        304,
        CLIENT,
    ),
    (
        "slow-down",
        oe.GenericError(
            _status_text(
                "GET",
                "503 Service Unavailable",
                _xml("SlowDown", "Please reduce your request rate."),
            )
        ),
        _boto(503, "SlowDown"),
        Throttled,
        "SlowDown",
        503,
        THROTTLE,
    ),
    (
        "503-bodiless-head",
        oe.GenericError(_status_text("HEAD", "503 Service Unavailable", "")),
        _boto(503, None),
        Throttled,
        "ServiceUnavailable",
        503,
        THROTTLE,
    ),
    (
        "503-html-proxy",
        oe.GenericError(_status_text("GET", "503 Service Unavailable", HTML_503)),
        _boto(503, None, html=True),
        ServiceError,
        "ServiceUnavailable",
        503,
        FAILURE,
    ),
    (
        "429",
        oe.GenericError(_status_text("GET", "429 Too Many Requests", "")),
        _boto(429, None),
        Throttled,
        "TooManyRequests",
        429,
        THROTTLE,
    ),
    (
        "500-internal",
        oe.GenericError(
            _status_text(
                "PUT",
                "500 Internal Server Error",
                _xml("InternalError", "We encountered an internal error."),
            )
        ),
        _boto(500, "InternalError"),
        ServiceError,
        "InternalError",
        500,
        FAILURE,
    ),
    (
        "502-bodiless",
        oe.GenericError(_status_text("GET", "502 Bad Gateway", "")),
        _boto(502, None),
        ServiceError,
        "BadGateway",
        502,
        FAILURE,
    ),
    (
        "504-bodiless",
        oe.GenericError(_status_text("GET", "504 Gateway Timeout", "")),
        _boto(504, None),
        ServiceError,
        "GatewayTimeout",
        504,
        FAILURE,
    ),
    (
        "400-invalid-argument",
        oe.GenericError(
            _status_text(
                "GET",
                "400 Bad Request",
                _xml("InvalidArgument", "invalid byte range 10-19 for size 5"),
            )
        ),
        _boto(400, "InvalidArgument"),
        ServiceError,
        "InvalidArgument",
        400,
        CLIENT,
    ),
    (
        "400-request-timeout",
        oe.GenericError(
            _status_text("PUT", "400 Bad Request", _xml("RequestTimeout", "Your socket..."))
        ),
        _boto(400, "RequestTimeout"),
        ServiceError,
        "RequestTimeout",
        400,
        TRANSIENT,
    ),
    (
        "409-operation-aborted",
        oe.AlreadyExistsError(
            _status_text(
                "PUT",
                "409 Conflict",
                _xml("OperationAborted", "A conflicting operation is in progress"),
                prefix="Object at location k already exists: ",
            )
        ),
        _boto(409, "OperationAborted"),
        ServiceError,
        "OperationAborted",
        409,
        TRANSIENT,
    ),
    (
        "416",
        oe.GenericError(
            _status_text(
                "GET",
                "416 Range Not Satisfiable",
                _xml("InvalidRange", "The requested range is not satisfiable"),
            )
        ),
        _boto(416, "InvalidRange"),
        ServiceError,
        "InvalidRange",
        416,
        CLIENT,
    ),
    (
        "501",
        oe.NotSupportedError(_status_text("GET", "501 Not Implemented", "")),
        _boto(501, None),
        ServiceError,
        "NotImplemented",
        501,
        CLIENT,
    ),
    (
        "418-unknown-status",
        oe.GenericError(_status_text("GET", "418 I'm a teapot", "")),
        _boto(418, None),
        ServiceError,
        "418",
        418,
        CLIENT,
    ),
]


@pytest.mark.parametrize(
    ("exc", "boto", "cls", "code", "status", "outcome"),
    [case[1:] for case in ANSWERS],
    ids=[case[0] for case in ANSWERS],
)
def test_http_answers_map_like_boto3(
    exc: BaseException,
    boto: Exception | None,
    cls: type,
    code: str,
    status: int,
    outcome: int,
) -> None:
    mapped = map_obstore_error(exc, EP, "get_object")
    assert type(mapped) is cls
    assert isinstance(mapped, ServiceError)
    assert (mapped.code, mapped.status) == (code, status)
    assert (mapped.endpoint, mapped.operation) == (EP, "get_object")
    assert classify(mapped) == outcome
    assert str(mapped).startswith(f"{code} (HTTP {status}) from {EP} during get_object: ")
    if boto is not None:
        reference = map_boto_error(boto, EP, "get_object")
        assert isinstance(reference, ServiceError)
        assert type(reference) is type(mapped)
        assert (reference.code, reference.status) == (mapped.code, mapped.status)
        assert classify(reference) == classify(mapped)


def test_message_and_request_id_come_from_the_xml_body() -> None:
    exc = oe.GenericError(
        _status_text("GET", "503 Service Unavailable", _xml("SlowDown", "Slow &amp; steady", "R9"))
    )
    mapped = map_obstore_error(exc, EP, "get_object")
    assert isinstance(mapped, Throttled)
    assert mapped.server_message == "Slow & steady"
    assert mapped.request_id == "R9"
    assert "[request id R9]" in str(mapped)


def test_bodiless_answer_keeps_the_reason_phrase() -> None:
    mapped = map_obstore_error(FileNotFoundError(NOT_FOUND_HEAD), EP, "head_object")
    assert isinstance(mapped, NotFound)
    assert mapped.server_message == "Not Found"
    assert mapped.request_id is None


@pytest.mark.parametrize(
    ("text", "cls"),
    [
        (REFUSED, ConnectionFailed),
        (RESET, ConnectionFailed),
        (CLOSED, ConnectionFailed),
        (TRUNCATED, ConnectionFailed),
        (STALLED, ReadTimeout),
        (BODY_STALLED, ReadTimeout),
        (CONNECT_TIMEOUT, ConnectTimeout),
    ],
    ids=["refused", "reset", "closed", "truncated", "stalled", "body-stalled", "connect-timeout"],
)
def test_transport_failures(text: str, cls: type) -> None:
    mapped = map_obstore_error(oe.GenericError(text), EP, "download_file")
    assert type(mapped) is cls
    assert isinstance(mapped, TransportError)
    assert classify(mapped) == FAILURE
    assert (mapped.endpoint, mapped.operation) == (EP, "download_file")
    assert "Debug source" not in str(mapped)
    assert str(mapped).startswith(f"GenericError from {EP} during download_file: ")


@pytest.mark.parametrize(
    ("exc", "cls", "code", "status"),
    [
        (oe.NotFoundError("Object at location k not found"), NotFound, "NoSuchKey", 404),
        (FileNotFoundError("Object at location k not found"), NotFound, "NoSuchKey", 404),
        (oe.PermissionDeniedError("denied"), AccessDenied, "AccessDenied", 403),
        (oe.UnauthenticatedError("who are you"), AccessDenied, "AccessDenied", 401),
        (oe.PreconditionError("precondition"), PreconditionFailed, "PreconditionFailed", 412),
        (oe.NotModifiedError("not modified"), ServiceError, "NotModified", 304),
    ],
    ids=["not-found", "builtin-not-found", "denied", "unauthenticated", "412", "304"],
)
def test_typed_errors_without_a_status(
    exc: BaseException, cls: type, code: str, status: int
) -> None:
    mapped = map_obstore_error(exc, EP, "head_object")
    assert type(mapped) is cls
    assert isinstance(mapped, ServiceError)
    assert (mapped.code, mapped.status) == (code, status)


def test_unparseable_answer_is_a_service_error() -> None:
    mapped = map_obstore_error(oe.GenericError("Generic S3 error: Error parsing XML"), EP, "x")
    assert type(mapped) is ServiceError
    assert mapped.code == "GenericError"
    assert classify(mapped) == CLIENT


def test_configuration_key_error_is_config_error() -> None:
    mapped = map_obstore_error(oe.UnknownConfigurationKeyError("bad key"), EP, "x")
    assert isinstance(mapped, ConfigError)


def test_foreign_exceptions_pass_through() -> None:
    local = FileNotFoundError("/tmp/gone")  # a local file, not an object
    assert map_obstore_error(local, EP, "upload_file") is local
    err = KeyError("x")
    assert map_obstore_error(err, EP, "x") is err
    bad_path = ValueError('Could not parse path: Path "a//b" contained empty path segment')
    assert isinstance(map_obstore_error(bad_path, EP, "put_object"), InvalidArgument)
    already = ReadTimeout("t", endpoint=EP, operation="x")
    assert map_obstore_error(already, EP, "y") is already


@pytest.mark.parametrize(
    ("key", "native"),
    [
        ("a/b.txt", True),
        ("with space/ü é+%41?#*~", True),
        ("a\\b", True),
        ("...", True),
        ("a/.hidden", True),
        ("", False),
        ("/lead", False),
        ("trail/", False),
        ("a//b", False),
        ("a/./b", False),
        ("a/../b", False),
        ("..", False),
        (".", False),
        ("tab\tkey", False),
        ("del\x7f", False),
    ],
)
def test_native_keys(key: str, native: bool) -> None:
    assert native_key(key) is native


# --------------------------------------------------------------- real obstore, canned answers
Handler = Callable[[socket.socket], None]


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk


def _answer(status: str, body: bytes, headers: str = "") -> Handler:
    def handle(conn: socket.socket) -> None:
        _read_request(conn)
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
        conn.sendall(head.encode() + body)

    return handle


def _truncated(conn: socket.socket) -> None:
    _read_request(conn)
    conn.sendall(
        b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nETag: "abc"\r\n'
        b"Last-Modified: Wed, 25 Nov 2026 21:13:50 GMT\r\n\r\nhello"
    )


def _stall(conn: socket.socket) -> None:
    _read_request(conn)
    time.sleep(3)


@pytest.fixture
def canned() -> Iterator[Callable[[Handler], str]]:
    """``canned(handler)`` → URL of a socket server answering every request with ``handler``."""
    sockets: list[socket.socket] = []

    def start(handler: Handler) -> str:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        sockets.append(srv)

        def loop() -> None:
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return

                def serve(c: socket.socket = conn) -> None:
                    with c:
                        try:
                            handler(c)
                            time.sleep(0.1)
                        except OSError:
                            pass

                threading.Thread(target=serve, daemon=True).start()

        threading.Thread(target=loop, daemon=True).start()
        return f"http://127.0.0.1:{srv.getsockname()[1]}"

    try:
        yield start
    finally:
        for srv in sockets:
            srv.close()


def _transport(url: str) -> ObstoreTransport:
    cfg = make_config(url, "AKIDEXAMPLE", "s3kit-unit-secret", name="canned", read_timeout=0.5)
    return ObstoreTransport(cfg)


def test_live_slow_down_is_throttled(canned: Callable[[Handler], str]) -> None:
    body = _xml("SlowDown", "Please reduce your request rate.").encode()
    transport = _transport(canned(_answer("503 Service Unavailable", body)))
    with pytest.raises(Throttled) as info:
        transport.get_object("bkt", "k", None, None, None)
    assert (info.value.code, info.value.status, info.value.request_id) == ("SlowDown", 503, "RID-1")
    assert info.value.operation == "get_object"
    assert "s3kit-unit-secret" not in str(info.value)
    transport.close()


def test_live_html_503_counts_as_failure(canned: Callable[[Handler], str]) -> None:
    answer = _answer("503 Service Unavailable", HTML_503.encode(), "Content-Type: text/html\r\n")
    transport = _transport(canned(answer))
    with pytest.raises(ServiceError) as info:
        transport.get_object("bkt", "k", None, None, None)
    assert type(info.value) is ServiceError
    assert classify(info.value) == FAILURE
    transport.close()


def test_live_refused_truncated_and_stalled(canned: Callable[[Handler], str]) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    refused = _transport(f"http://127.0.0.1:{port}")
    with pytest.raises(ConnectionFailed):
        refused.head_object("bkt", "k", None, None)

    truncated = _transport(canned(_truncated))
    with pytest.raises(ConnectionFailed):
        truncated.get_object("bkt", "k", None, None, None)
    with open("/dev/null", "wb") as sink, pytest.raises(ConnectionFailed):
        truncated.download_into("bkt", "k", sink, DownloadState(), None)

    stalled = _transport(canned(_stall))
    t0 = time.monotonic()
    with pytest.raises(ReadTimeout):
        stalled.head_object("bkt", "k", None, None)
    assert time.monotonic() - t0 < 2.5  # read_timeout=0.5, no retries inside obstore
    for transport in (refused, truncated, stalled):
        transport.close()
