"""The s3kit exception tree. Every failure is raised, never returned as an error dict.

::

    S3KitError
    ├── ConfigError (ValueError)         unknown endpoint, strategy, operation or option
    ├── InvalidArgument (ValueError)     a bad argument, named; raised before anything is sent
    ├── NoHealthyEndpoint                .attempts: [(endpoint, error)]; the last error as __cause__
    └── EndpointError                    .endpoint, .operation, .attempt_count
        ├── CircuitOpenError             message contains "Circuit breaker is open"; .retry_after
        ├── EndpointSaturated            no concurrency slot within acquire_timeout
        ├── TransportError               the request did not get an S3 answer
        │   ├── ConnectTimeout
        │   ├── ReadTimeout
        │   └── ConnectionFailed         refused, reset, truncated body
        └── ServiceError                 an S3 error answer; .code, .status, .request_id
            ├── NotFound                 404, NoSuchKey, NoSuchBucket
            ├── AccessDenied             403 and the bad-credential codes
            ├── Throttled                SlowDown, 503, 429
            └── PreconditionFailed       412

Messages never contain credentials.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AccessDenied",
    "CircuitOpenError",
    "ConfigError",
    "ConnectTimeout",
    "ConnectionFailed",
    "EndpointError",
    "EndpointSaturated",
    "InvalidArgument",
    "NoHealthyEndpoint",
    "NotFound",
    "PreconditionFailed",
    "ReadTimeout",
    "S3KitError",
    "ServiceError",
    "Throttled",
    "TransportError",
]


class S3KitError(Exception):
    """Base class of every error s3kit raises."""


class ConfigError(S3KitError, ValueError):
    """An unknown endpoint, strategy, operation or option, or an invalid configuration value."""


class InvalidArgument(S3KitError, ValueError):
    """A bad argument to an operation; raised before anything is sent. ``.argument`` names it."""

    def __init__(self, argument: str, problem: str) -> None:
        self.argument = argument
        super().__init__(f"invalid argument {argument!r}: {problem}")


class EndpointError(S3KitError):
    """A failure that belongs to one endpoint."""

    def __init__(
        self, message: str, *, endpoint: str = "", operation: str = "", attempt_count: int = 1
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.operation = operation
        self.attempt_count = attempt_count
        #: the error of the attempt before this one on the same endpoint, if it was retried
        self.previous: EndpointError | None = None


class CircuitOpenError(EndpointError):
    """The endpoint's circuit breaker is open; nothing was sent. ``.retry_after`` is in seconds."""

    def __init__(self, *, endpoint: str, operation: str, retry_after: float) -> None:
        self.retry_after = max(0.0, retry_after)
        super().__init__(
            f"Circuit breaker is open for endpoint {endpoint!r} during {operation}; "
            f"next probe in {self.retry_after:.1f}s",
            endpoint=endpoint,
            operation=operation,
            attempt_count=0,
        )


class EndpointSaturated(EndpointError):
    """No concurrency slot became free within ``acquire_timeout``; nothing was sent."""

    def __init__(self, *, endpoint: str, operation: str, waited: float, limit: int) -> None:
        self.waited = waited
        self.limit = limit
        super().__init__(
            f"endpoint {endpoint!r} saturated during {operation}: no slot of {limit} "
            f"free within {waited:.2f}s",
            endpoint=endpoint,
            operation=operation,
            attempt_count=0,
        )


class TransportError(EndpointError):
    """The request got no S3 answer: refused, reset, timed out or cut short."""


class ConnectTimeout(TransportError):
    """Connecting to the endpoint timed out."""


class ReadTimeout(TransportError):
    """The endpoint accepted the request but sent nothing within the read timeout."""


class ConnectionFailed(TransportError):
    """Connection refused or reset, or the body was cut short."""


class ServiceError(EndpointError):
    """The server answered with an S3 error. ``.code`` is normalised across transports."""

    def __init__(
        self,
        *,
        code: str,
        status: int,
        message: str = "",
        endpoint: str = "",
        operation: str = "",
        request_id: str | None = None,
        attempt_count: int = 1,
    ) -> None:
        self.code = code
        self.status = status
        self.request_id = request_id
        self.server_message = message
        text = f"{code} (HTTP {status}) from {endpoint} during {operation}: {message or code}"
        if request_id:
            text += f" [request id {request_id}]"
        super().__init__(text, endpoint=endpoint, operation=operation, attempt_count=attempt_count)


class NotFound(ServiceError):
    """404: NoSuchKey, NoSuchBucket, NotFound."""


class AccessDenied(ServiceError):
    """403 AccessDenied, or credentials the server rejects (bad key, bad signature, expired)."""


class Throttled(ServiceError):
    """The server asks to slow down: SlowDown, 503 ServiceUnavailable, 429."""


class PreconditionFailed(ServiceError):
    """412: an If-Match / If-None-Match condition failed."""


class NoHealthyEndpoint(S3KitError):
    """Every candidate endpoint failed or was unavailable.

    ``.attempts`` lists ``(endpoint_name, error)`` in the order tried; the last error is the
    ``__cause__``.
    """

    def __init__(self, operation: str, attempts: Sequence[tuple[str, BaseException]]) -> None:
        self.operation = operation
        self.attempts = list(attempts)
        if self.attempts:
            detail = "; ".join(f"{name}: {type(err).__name__}" for name, err in self.attempts)
        else:
            detail = "no endpoints"
        super().__init__(f"no healthy endpoint for {operation} ({detail})")
