"""Outcome classes: what an error says about the endpoint that produced it (contract §3).

| class           | retried here | breaker   | strategy routing                           |
|-----------------|--------------|-----------|--------------------------------------------|
| CLIENT          | no           | no effect | raised at once                             |
| ACCESS          | no           | no effect | reads fail over, writes raise              |
| BAD_CREDENTIALS | no           | no effect | fail over; endpoint marked misconfigured   |
| THROTTLE        | yes, longer  | never     | fail over; AIMD limit halves               |
| TRANSIENT       | yes          | no effect | fail over                                  |
| FAILURE         | yes          | counts    | fail over                                  |
"""

from __future__ import annotations

from ._errors import AccessDenied, ServiceError, Throttled, TransportError

__all__ = [
    "ACCESS",
    "BAD_CREDENTIALS",
    "BAD_CREDENTIAL_CODES",
    "CLIENT",
    "FAILURE",
    "RETRYABLE",
    "SUCCESS",
    "THROTTLE",
    "TRANSIENT",
    "classify",
]

SUCCESS = 0
CLIENT = 1
ACCESS = 2
BAD_CREDENTIALS = 3
THROTTLE = 4
TRANSIENT = 5
FAILURE = 6

RETRYABLE = frozenset({THROTTLE, TRANSIENT, FAILURE})

BAD_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
        "RequestTimeTooSkewed",
        "NoCredentials",
    }
)
TRANSIENT_CODES = frozenset({"OperationAborted", "ConditionalRequestConflict", "RequestTimeout"})
FAILURE_STATUSES = frozenset({500, 502, 503, 504})


def classify(exc: BaseException) -> int:
    """The outcome class of an error raised by a transport. Unknown errors are CLIENT."""
    if isinstance(exc, TransportError):
        return FAILURE
    if isinstance(exc, Throttled):
        return THROTTLE
    if isinstance(exc, AccessDenied):
        return BAD_CREDENTIALS if exc.code in BAD_CREDENTIAL_CODES else ACCESS
    if isinstance(exc, ServiceError):
        if exc.code in TRANSIENT_CODES:
            return TRANSIENT
        if exc.status in FAILURE_STATUSES or exc.code == "InternalError":
            return FAILURE
        return CLIENT
    return CLIENT
