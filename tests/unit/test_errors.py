"""The exception tree, messages, and map_boto_error (botocore → s3kit)."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest

from s3kit._errors import (
    AccessDenied,
    CircuitOpenError,
    ConfigError,
    ConnectionFailed,
    ConnectTimeout,
    EndpointError,
    EndpointSaturated,
    InvalidArgument,
    NoHealthyEndpoint,
    NotFound,
    PreconditionFailed,
    ReadTimeout,
    S3KitError,
    ServiceError,
    Throttled,
    TransportError,
)
from s3kit._outcome import ACCESS, BAD_CREDENTIALS, CLIENT, FAILURE, THROTTLE, classify
from s3kit._transport._boto3 import map_boto_error

EP = "minio-a"
OP = "get_object"


def client_error(
    code: str,
    status: int,
    *,
    message: str = "",
    headers: dict[str, str] | None = None,
    request_id: str | None = None,
) -> botocore.exceptions.ClientError:
    meta: dict[str, Any] = {"HTTPStatusCode": status, "HTTPHeaders": headers or {}}
    if request_id:
        meta["RequestId"] = request_id
    response: dict[str, Any] = {"Error": {"Code": code, "Message": message}}
    response["ResponseMetadata"] = meta
    return botocore.exceptions.ClientError(response, "GetObject")  # type: ignore[arg-type]


XML = {"content-type": "application/xml"}
HTML = {"content-type": "text/html; charset=utf-8"}

# (code, status, headers, exact class, normalised code, outcome)
ROWS = [
    pytest.param("NoSuchKey", 404, XML, NotFound, "NoSuchKey", CLIENT, id="NoSuchKey-404"),
    pytest.param("NoSuchBucket", 404, XML, NotFound, "NoSuchBucket", CLIENT, id="NoSuchBucket"),
    pytest.param("404", 404, {}, NotFound, "NotFound", CLIENT, id="bodiless-404"),
    pytest.param("403", 403, {}, AccessDenied, "AccessDenied", ACCESS, id="bodiless-403"),
    pytest.param("AccessDenied", 403, XML, AccessDenied, "AccessDenied", ACCESS, id="403"),
    pytest.param(
        "SignatureDoesNotMatch",
        403,
        XML,
        AccessDenied,
        "SignatureDoesNotMatch",
        BAD_CREDENTIALS,
        id="SignatureDoesNotMatch",
    ),
    pytest.param(
        "InvalidAccessKeyId",
        403,
        XML,
        AccessDenied,
        "InvalidAccessKeyId",
        BAD_CREDENTIALS,
        id="InvalidAccessKeyId",
    ),
    pytest.param("SlowDown", 503, XML, Throttled, "SlowDown", THROTTLE, id="SlowDown-503"),
    pytest.param(
        "503", 503, {}, Throttled, "ServiceUnavailable", THROTTLE, id="bodiless-503-throttle"
    ),
    pytest.param(
        "ServiceUnavailable", 503, XML, Throttled, "ServiceUnavailable", THROTTLE, id="xml-503"
    ),
    pytest.param(
        "503", 503, HTML, ServiceError, "ServiceUnavailable", FAILURE, id="html-503-failure"
    ),
    pytest.param("InternalError", 500, XML, ServiceError, "InternalError", FAILURE, id="500"),
    pytest.param("500", 500, {}, ServiceError, "InternalError", FAILURE, id="bodiless-500"),
    pytest.param("502", 502, HTML, ServiceError, "BadGateway", FAILURE, id="502"),
    pytest.param("429", 429, {}, Throttled, "TooManyRequests", THROTTLE, id="429"),
    pytest.param("TooManyRequests", 429, HTML, Throttled, "TooManyRequests", THROTTLE, id="429h"),
    pytest.param(
        "PreconditionFailed",
        412,
        XML,
        PreconditionFailed,
        "PreconditionFailed",
        CLIENT,
        id="412",
    ),
    pytest.param("412", 412, {}, PreconditionFailed, "PreconditionFailed", CLIENT, id="412-nb"),
    pytest.param("BadRequest", 400, XML, ServiceError, "BadRequest", CLIENT, id="400"),
]


@pytest.mark.parametrize(("code", "status", "headers", "cls", "norm", "outcome"), ROWS)
def test_map_client_error(
    code: str,
    status: int,
    headers: dict[str, str],
    cls: type[ServiceError],
    norm: str,
    outcome: int,
) -> None:
    err = map_boto_error(client_error(code, status, headers=headers), EP, OP)
    assert type(err) is cls
    assert isinstance(err, ServiceError)
    assert err.code == norm
    assert err.status == status
    assert err.endpoint == EP
    assert err.operation == OP
    assert classify(err) == outcome


def test_status_is_taken_from_numeric_code_when_metadata_lacks_it() -> None:
    exc = botocore.exceptions.ClientError({"Error": {"Code": "404"}}, "HeadObject")  # type: ignore[arg-type]
    err = map_boto_error(exc, EP, "head_object")
    assert isinstance(err, NotFound)
    assert (err.code, err.status) == ("NotFound", 404)


def test_request_id_from_headers_or_metadata() -> None:
    err = map_boto_error(
        client_error("NoSuchKey", 404, headers={"x-amz-request-id": "REQ-HDR"}), EP, OP
    )
    assert isinstance(err, ServiceError)
    assert err.request_id == "REQ-HDR"
    err2 = map_boto_error(client_error("NoSuchKey", 404, request_id="REQ-META"), EP, OP)
    assert isinstance(err2, ServiceError)
    assert err2.request_id == "REQ-META"
    assert str(err2).endswith("[request id REQ-META]")


def test_service_error_message_format() -> None:
    err = ServiceError(
        code="InternalError",
        status=500,
        message="We encountered an internal error.",
        endpoint=EP,
        operation="put_object",
    )
    assert str(err) == (
        "InternalError (HTTP 500) from minio-a during put_object: We encountered an internal error."
    )


def test_mapped_error_message_format() -> None:
    exc = client_error("NoSuchKey", 404, message="The specified key does not exist.")
    err = map_boto_error(exc, EP, OP)
    assert str(err) == (
        "NoSuchKey (HTTP 404) from minio-a during get_object: The specified key does not exist."
    )
    assert isinstance(err, ServiceError)
    assert err.server_message == "The specified key does not exist."


def test_message_falls_back_to_code_when_server_sent_none() -> None:
    err = map_boto_error(client_error("403", 403), EP, "head_object")
    assert str(err) == "AccessDenied (HTTP 403) from minio-a during head_object: AccessDenied"


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://h:9000"), ReadTimeout),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="http://h:9000"), ConnectTimeout),
        (
            botocore.exceptions.EndpointConnectionError(endpoint_url="http://h:9000"),
            ConnectionFailed,
        ),
        (
            botocore.exceptions.ConnectionClosedError(endpoint_url="http://h:9000"),
            ConnectionFailed,
        ),
        (ConnectionResetError("reset by peer"), ConnectionFailed),
    ],
)
def test_map_transport_errors(exc: Exception, cls: type[TransportError]) -> None:
    err = map_boto_error(exc, EP, OP)
    assert type(err) is cls
    assert isinstance(err, TransportError)
    assert err.endpoint == EP
    assert err.operation == OP
    assert EP in str(err)
    assert OP in str(err)
    assert classify(err) == FAILURE


def test_map_no_credentials() -> None:
    err = map_boto_error(botocore.exceptions.NoCredentialsError(), EP, OP)
    assert isinstance(err, AccessDenied)
    assert err.code == "NoCredentials"
    assert classify(err) == BAD_CREDENTIALS


def test_map_param_validation_error() -> None:
    exc = botocore.exceptions.ParamValidationError(report="Invalid bucket name")
    err = map_boto_error(exc, EP, OP)
    assert isinstance(err, InvalidArgument)


def test_unknown_exceptions_pass_through() -> None:
    original = RuntimeError("boom")
    assert map_boto_error(original, EP, OP) is original


# ------------------------------------------------------------------ other errors
def test_circuit_open_error_message() -> None:
    err = CircuitOpenError(endpoint="minio-b", operation="put_object", retry_after=12.34)
    text = str(err)
    assert "Circuit breaker is open" in text
    assert "minio-b" in text
    assert "12.3" in text
    assert err.retry_after == pytest.approx(12.34)
    assert err.attempt_count == 0
    assert (err.endpoint, err.operation) == ("minio-b", "put_object")
    assert isinstance(err, EndpointError)
    assert isinstance(err, S3KitError)


def test_circuit_open_error_clamps_negative_retry_after() -> None:
    err = CircuitOpenError(endpoint="x", operation="get_object", retry_after=-3.0)
    assert err.retry_after == 0.0
    assert "0.0" in str(err)


def test_endpoint_saturated() -> None:
    err = EndpointSaturated(endpoint="e", operation="put_object", waited=1.5, limit=4)
    assert err.attempt_count == 0
    assert "4" in str(err)
    assert "e" in str(err)


def test_exception_tree() -> None:
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, S3KitError)
    assert issubclass(InvalidArgument, ValueError) and issubclass(InvalidArgument, S3KitError)
    for cls in (NotFound, AccessDenied, Throttled, PreconditionFailed):
        assert issubclass(cls, ServiceError)
    for cls in (ConnectTimeout, ReadTimeout, ConnectionFailed):
        assert issubclass(cls, TransportError)
    assert issubclass(ServiceError, EndpointError)
    assert issubclass(TransportError, EndpointError)
    assert not issubclass(CircuitOpenError, TransportError)


def test_invalid_argument_names_the_argument() -> None:
    err = InvalidArgument("key", "must be a non-empty string")
    assert err.argument == "key"
    assert "'key'" in str(err)


def test_no_healthy_endpoint_lists_attempts() -> None:
    first = ReadTimeout("slow", endpoint="a")
    second = ServiceError(code="InternalError", status=500, endpoint="b")
    err = NoHealthyEndpoint("get_object", [("a", first), ("b", second)])
    assert err.attempts == [("a", first), ("b", second)]
    assert "get_object" in str(err)
    assert "ReadTimeout" in str(err) and "ServiceError" in str(err)
    assert "no endpoints" in str(NoHealthyEndpoint("get_object", []))
