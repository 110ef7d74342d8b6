"""One mapping from an S3 error answer to s3kit's exception, shared by every transport.

Each transport extracts (raw code, HTTP status, message, request id, whether the body was HTML)
its own way; this module normalises the code and picks the class, so the same answer gives the
same ``.code`` and class whatever library carried it.
"""

from __future__ import annotations

from .._errors import AccessDenied, NotFound, PreconditionFailed, ServiceError, Throttled
from .._outcome import BAD_CREDENTIAL_CODES

__all__ = ["NOT_FOUND_CODES", "NUMERIC_CODES", "THROTTLE_CODES", "service_error"]

# What a bodiless answer (HEAD, or a proxy's empty page) is called, by status.
NUMERIC_CODES = {
    "304": "NotModified",
    "400": "BadRequest",
    "403": "AccessDenied",
    "404": "NotFound",
    "405": "MethodNotAllowed",
    "409": "Conflict",
    "412": "PreconditionFailed",
    "416": "InvalidRange",
    "429": "TooManyRequests",
    "500": "InternalError",
    "501": "NotImplemented",
    "502": "BadGateway",
    "503": "ServiceUnavailable",
    "504": "GatewayTimeout",
}
NOT_FOUND_CODES = frozenset(
    {"NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchUpload", "NoSuchVersion"}
)
THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "RequestThrottled",
        "ServiceUnavailable",
    }
)


def service_error(
    raw_code: str,
    status: int,
    *,
    message: str,
    endpoint: str,
    operation: str,
    request_id: str | None,
    html: bool,
) -> ServiceError:
    """The s3kit error for one S3 error answer."""
    code = NUMERIC_CODES.get(raw_code, raw_code) or NUMERIC_CODES.get(str(status), str(status))
    cls: type[ServiceError]
    if status == 404 or code in NOT_FOUND_CODES:
        cls = NotFound
    elif status == 403 or code in BAD_CREDENTIAL_CODES or code == "AccessDenied":
        cls = AccessDenied
    elif status == 429 or (code in THROTTLE_CODES and not html):
        # A 503 with an HTML body is a proxy or load balancer in trouble, not S3 asking us to
        # slow down: it stays a plain ServiceError and counts as an endpoint failure. A bodiless
        # 503 (HEAD) is a throttle.
        cls = Throttled
    elif status == 412 or code == "PreconditionFailed":
        cls = PreconditionFailed
    else:
        cls = ServiceError
    return cls(
        code=code,
        status=status,
        message=message,
        endpoint=endpoint,
        operation=operation,
        request_id=request_id,
    )
