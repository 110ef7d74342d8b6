"""classify: each row of contract §3's outcome table, from constructed errors."""

from __future__ import annotations

import pytest

from s3kit._errors import (
    AccessDenied,
    CircuitOpenError,
    ConnectionFailed,
    ConnectTimeout,
    NotFound,
    PreconditionFailed,
    ReadTimeout,
    ServiceError,
    Throttled,
)
from s3kit._outcome import (
    ACCESS,
    BAD_CREDENTIALS,
    CLIENT,
    FAILURE,
    RETRYABLE,
    THROTTLE,
    TRANSIENT,
    classify,
)


def svc(cls: type[ServiceError], code: str, status: int) -> ServiceError:
    return cls(code=code, status=status, endpoint="ep", operation="get_object")


CASES = [
    # client error
    pytest.param(svc(NotFound, "NoSuchKey", 404), CLIENT, id="404-NoSuchKey"),
    pytest.param(svc(NotFound, "NoSuchBucket", 404), CLIENT, id="404-NoSuchBucket"),
    pytest.param(svc(NotFound, "NotFound", 404), CLIENT, id="404-bodiless"),
    pytest.param(svc(ServiceError, "BadRequest", 400), CLIENT, id="400"),
    pytest.param(svc(ServiceError, "BucketAlreadyExists", 409), CLIENT, id="409-exists"),
    pytest.param(svc(PreconditionFailed, "PreconditionFailed", 412), CLIENT, id="412"),
    pytest.param(svc(ServiceError, "InvalidRange", 416), CLIENT, id="416"),
    pytest.param(svc(ServiceError, "NotImplemented", 501), CLIENT, id="501"),
    # access denied
    pytest.param(svc(AccessDenied, "AccessDenied", 403), ACCESS, id="403-AccessDenied"),
    # bad credentials
    *[
        pytest.param(svc(AccessDenied, code, 403), BAD_CREDENTIALS, id=code)
        for code in (
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "InvalidToken",
            "AuthorizationHeaderMalformed",
            "RequestTimeTooSkewed",
        )
    ],
    pytest.param(svc(AccessDenied, "NoCredentials", 0), BAD_CREDENTIALS, id="no-credentials"),
    # throttle
    pytest.param(svc(Throttled, "SlowDown", 503), THROTTLE, id="503-SlowDown"),
    pytest.param(svc(Throttled, "ServiceUnavailable", 503), THROTTLE, id="503-bodiless"),
    pytest.param(svc(Throttled, "TooManyRequests", 429), THROTTLE, id="429"),
    # transient conflict
    pytest.param(svc(ServiceError, "OperationAborted", 409), TRANSIENT, id="409-aborted"),
    pytest.param(
        svc(ServiceError, "ConditionalRequestConflict", 409), TRANSIENT, id="409-conflict"
    ),
    pytest.param(svc(ServiceError, "RequestTimeout", 400), TRANSIENT, id="400-RequestTimeout"),
    # endpoint failure
    pytest.param(svc(ServiceError, "InternalError", 500), FAILURE, id="500"),
    pytest.param(svc(ServiceError, "BadGateway", 502), FAILURE, id="502"),
    pytest.param(svc(ServiceError, "GatewayTimeout", 504), FAILURE, id="504"),
    pytest.param(svc(ServiceError, "ServiceUnavailable", 503), FAILURE, id="503-html"),
    pytest.param(svc(ServiceError, "InternalError", 200), FAILURE, id="InternalError-code"),
    pytest.param(ConnectionFailed("refused", endpoint="ep"), FAILURE, id="refused"),
    pytest.param(ConnectTimeout("connect", endpoint="ep"), FAILURE, id="connect-timeout"),
    pytest.param(ReadTimeout("read", endpoint="ep"), FAILURE, id="read-timeout"),
]


@pytest.mark.parametrize(("error", "expected"), CASES)
def test_classify_contract_table(error: BaseException, expected: int) -> None:
    assert classify(error) == expected


def test_unknown_errors_are_client() -> None:
    assert classify(ValueError("x")) == CLIENT
    assert classify(KeyError("x")) == CLIENT


def test_circuit_open_is_not_an_endpoint_failure() -> None:
    err = CircuitOpenError(endpoint="ep", operation="get_object", retry_after=1.0)
    assert classify(err) not in RETRYABLE
    assert classify(err) != FAILURE


def test_retryable_classes() -> None:
    assert {THROTTLE, TRANSIENT, FAILURE} == set(RETRYABLE)
    assert CLIENT not in RETRYABLE
    assert ACCESS not in RETRYABLE
    assert BAD_CREDENTIALS not in RETRYABLE


def test_outcome_constants_are_distinct() -> None:
    values = [CLIENT, ACCESS, BAD_CREDENTIALS, THROTTLE, TRANSIENT, FAILURE]
    assert len(set(values)) == len(values)
