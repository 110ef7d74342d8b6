"""s3kit: many S3-compatible object stores used as one dependable store.

Each endpoint gets its own credentials, connection pool, concurrency limit, retry policy and
circuit breaker; a multiplexer routes, fails over, replicates and reports.
"""

from __future__ import annotations

from ._async import AsyncMultiplexer
from ._compat import S3EndpointMultiplexer, S3Kit, s3_kit
from ._config import EndpointConfig
from ._configfile import ConfigSpec, load_config
from ._endpoint import Endpoint
from ._errors import (
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
from ._events import (
    BreakerStateChanged,
    EndpointMisconfigured,
    EndpointSaturatedEvent,
    Event,
    FailedOver,
    RetryScheduled,
)
from ._extras import ObjectIterator
from ._fleet import FleetHealth, FleetStoreRestored, FleetStoreUnavailable
from ._mux import Multiplexer
from ._routing import STRATEGIES, Router
from ._stats import EndpointStats

__version__ = "0.1.0"

__all__ = [
    "STRATEGIES",
    "AccessDenied",
    "AsyncMultiplexer",
    "BreakerStateChanged",
    "CircuitOpenError",
    "ConfigError",
    "ConfigSpec",
    "ConnectTimeout",
    "ConnectionFailed",
    "Endpoint",
    "EndpointConfig",
    "EndpointError",
    "EndpointMisconfigured",
    "EndpointSaturated",
    "EndpointSaturatedEvent",
    "EndpointStats",
    "Event",
    "FailedOver",
    "FleetHealth",
    "FleetStoreRestored",
    "FleetStoreUnavailable",
    "InvalidArgument",
    "Multiplexer",
    "NoHealthyEndpoint",
    "NotFound",
    "ObjectIterator",
    "PreconditionFailed",
    "ReadTimeout",
    "RetryScheduled",
    "Router",
    "S3EndpointMultiplexer",
    "S3Kit",
    "S3KitError",
    "ServiceError",
    "Throttled",
    "TransportError",
    "__version__",
    "load_config",
    "s3_kit",
]
