"""Frozen endpoint configuration: one set of option names everywhere (handlers, multiplexer, guide).

Policies are immutable; live state (counters, breaker) lives on the Endpoint.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from ._errors import ConfigError, InvalidArgument

__all__ = ["OPTION_DEFAULTS", "TRANSPORT_ENV", "EndpointConfig", "default_transport", "make_config"]

_AWS_REGION_HOST = re.compile(
    r"(?:^|\.)s3[.-](?:dualstack\.)?([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$"
)


@dataclass(frozen=True)
class EndpointConfig:
    """Everything that describes one endpoint. Secrets are kept out of ``repr``."""

    name: str
    endpoint_url: str
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    profile: str | None = None
    max_concurrent: int = 5
    circuit_breaker_threshold: int = 5
    retries: int = 3
    region: str = "us-east-1"
    transport: str = "boto3"
    connect_timeout: float = 2.0
    read_timeout: float = 15.0
    long_op_timeout: float = 300.0
    acquire_timeout: float = 30.0
    breaker_open_s: float = 30.0
    breaker_max_open_s: float = 300.0
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 5.0
    retry_budget: float = 0.2
    weight: float = 1.0
    priority: int = 0
    buckets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    addressing_style: str = "path"
    verify: bool | str = True

    @property
    def is_aws(self) -> bool:
        host = urlsplit(self.endpoint_url).hostname or ""
        return host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")

    def physical_bucket(self, bucket: str) -> str:
        """The bucket's name on this endpoint (``buckets`` maps logical to physical names)."""
        return self.buckets.get(bucket, bucket)

    def with_credentials(self, access_key: str | None, secret_key: str | None) -> EndpointConfig:
        return replace(self, access_key=access_key, secret_key=secret_key)


# The options a caller may pass as **options (name and endpoint_url are positional elsewhere).
_OPTION_FIELDS = {
    f.name: f
    for f in fields(EndpointConfig)
    if f.name not in ("endpoint_url", "access_key", "secret_key")
}
OPTION_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {name: f.default for name, f in _OPTION_FIELDS.items() if f.default is not MISSING}
)

_TRANSPORTS = ("boto3", "obstore")
#: Environment variable naming the transport for endpoints configured without one.
TRANSPORT_ENV = "S3KIT_TRANSPORT"
_POSITIVE_TIMEOUTS = (
    "connect_timeout",
    "read_timeout",
    "long_op_timeout",
    "acquire_timeout",
    "breaker_open_s",
    "breaker_max_open_s",
    "backoff_cap_s",
)


def _region_from_url(url: str) -> str:
    host = urlsplit(url).hostname or ""
    match = _AWS_REGION_HOST.search(host)
    return match.group(1) if match else "us-east-1"


def default_transport() -> str:
    """The transport for an endpoint that names none: ``$S3KIT_TRANSPORT``, else ``"boto3"``.

    Read at each call (no caching), so a test or a process can switch it. An explicit
    ``transport=`` option (or a config file's) always wins over the variable.
    """
    value = os.environ.get(TRANSPORT_ENV, "").strip()
    if not value:
        return "boto3"
    if value not in _TRANSPORTS:
        raise ConfigError(
            f"environment variable {TRANSPORT_ENV}={value!r} is not a transport; "
            f"valid: {', '.join(_TRANSPORTS)}"
        )
    return value


def _check_url(url: object) -> str:
    if not isinstance(url, str) or not url:
        raise InvalidArgument("endpoint_url", "must be a non-empty string like 'http://host:port'")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument("endpoint_url", "must start with http:// or https:// and name a host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidArgument("endpoint_url", "has an invalid port") from exc
    return url


def _number(name: str, value: object, *, integer: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if integer else "a number"
        raise InvalidArgument(name, f"must be {kind}, got {type(value).__name__}")
    if integer and not isinstance(value, int):
        raise InvalidArgument(name, f"must be an integer, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(name, "must be finite")
    return value


def make_config(
    endpoint_url: object,
    access_key: str | None = None,
    secret_key: str | None = None,
    *,
    name: str | None = None,
    **options: Any,
) -> EndpointConfig:
    """Build and validate an :class:`EndpointConfig`.

    Unknown options raise :class:`ConfigError` naming them; bad values raise
    :class:`InvalidArgument` naming the option. No network call is made.
    """
    url = _check_url(endpoint_url)
    unknown = sorted(set(options) - set(_OPTION_FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(map(repr, unknown))}; valid options: "
            f"{', '.join(sorted(_OPTION_FIELDS))}"
        )
    for key_name, key in (("access_key", access_key), ("secret_key", secret_key)):
        if key is not None and not isinstance(key, str):
            raise InvalidArgument(key_name, "must be a string or None")
    if name is None:
        name = url
    if not isinstance(name, str) or not name:
        raise InvalidArgument("name", "must be a non-empty string")

    for opt in ("max_concurrent", "circuit_breaker_threshold"):
        if opt in options and _number(opt, options[opt], integer=True) < 1:
            raise InvalidArgument(opt, f"must be >= 1, got {options[opt]!r}")
    if "retries" in options and _number("retries", options["retries"], integer=True) < 0:
        raise InvalidArgument("retries", f"must be >= 0, got {options['retries']!r}")
    if "priority" in options:
        _number("priority", options["priority"], integer=True)
    for opt in _POSITIVE_TIMEOUTS:
        if opt in options and _number(opt, options[opt], integer=False) <= 0:
            raise InvalidArgument(opt, f"must be > 0, got {options[opt]!r}")
    if (
        "backoff_base_s" in options
        and _number("backoff_base_s", options["backoff_base_s"], integer=False) < 0
    ):
        raise InvalidArgument("backoff_base_s", "must be >= 0")
    if "retry_budget" in options and not (
        0 <= _number("retry_budget", options["retry_budget"], integer=False) <= 10
    ):
        raise InvalidArgument("retry_budget", "must be between 0 and 10")
    if "weight" in options and _number("weight", options["weight"], integer=False) <= 0:
        raise InvalidArgument("weight", "must be > 0")
    transport = options.get("transport")
    if transport is None:
        options["transport"] = transport = default_transport()
    elif transport not in _TRANSPORTS:
        raise ConfigError(f"unknown transport {transport!r}; valid: {', '.join(_TRANSPORTS)}")
    buckets = options.pop("buckets", None) or {}
    if not isinstance(buckets, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in buckets.items()
    ):
        raise InvalidArgument("buckets", "must map logical bucket names to physical names")
    style = options.get("addressing_style")
    if style is not None and style not in ("path", "virtual", "auto"):
        raise InvalidArgument("addressing_style", "must be 'path', 'virtual' or 'auto'")
    for opt in ("session_token", "profile", "region"):
        if options.get(opt) is not None and not isinstance(options[opt], str):
            raise InvalidArgument(opt, "must be a string")

    if options.get("region") is None:
        options["region"] = _region_from_url(url)
    cfg = EndpointConfig(
        name=name,
        endpoint_url=url,
        access_key=access_key,
        secret_key=secret_key,
        buckets=MappingProxyType(dict(buckets)),
        **{k: v for k, v in options.items() if v is not None or k in ("session_token", "profile")},
    )
    if style is None:
        cfg = replace(cfg, addressing_style="auto" if cfg.is_aws else "path")
    if cfg.breaker_max_open_s < cfg.breaker_open_s:
        cfg = replace(cfg, breaker_max_open_s=cfg.breaker_open_s)
    if cfg.backoff_cap_s < cfg.backoff_base_s:
        raise InvalidArgument("backoff_cap_s", "must be >= backoff_base_s")
    return cfg
