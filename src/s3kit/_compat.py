"""The guide's entry point: ``s3_kit(metadata={"s3cfg": ...}).create_s3_endpoint_handler(...)``.

Code written for the original multiplexing guide runs unchanged but for its import line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ._config import make_config
from ._endpoint import Endpoint
from ._errors import ConfigError
from ._stats import EndpointStats

__all__ = ["S3EndpointMultiplexer", "S3Kit", "s3_kit"]


class S3Kit:
    """Holds default credentials and endpoint (``metadata["s3cfg"]``) and makes handlers.

    ``s3cfg`` keys: ``accessKey``, ``secretKey``, ``endpoint``. A handler created with ``None``
    credentials or URL takes them from here; without them botocore's default chain applies.
    """

    def __init__(self, resources: Any = None, metadata: Mapping[str, Any] | None = None) -> None:
        self.resources = resources
        metadata = dict(metadata or {})
        s3cfg = metadata.get("s3cfg") or {}
        if not isinstance(s3cfg, Mapping):
            raise ConfigError("metadata['s3cfg'] must be a mapping")
        self._access_key: str | None = s3cfg.get("accessKey")
        self._secret_key: str | None = s3cfg.get("secretKey")
        self.default_endpoint: str | None = s3cfg.get("endpoint")
        # What we show: everything but the secret.
        shown = {k: v for k, v in s3cfg.items() if k not in ("secretKey", "secret_key")}
        self.metadata: dict[str, Any] = {**metadata, "s3cfg": shown}

    def __repr__(self) -> str:
        return f"<S3Kit endpoint={self.default_endpoint!r}>"

    def default_credentials(self) -> tuple[str | None, str | None]:
        return self._access_key, self._secret_key

    def create_s3_endpoint_handler(
        self,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        max_concurrent: int = 5,
        circuit_breaker_threshold: int = 5,
        retries: int = 3,
        **options: Any,
    ) -> Endpoint:
        """An endpoint handler: ``handler(operation, **kwargs)`` plus one method per operation.

        Makes no network call. Options are those of the configuration table (README).
        """
        if endpoint_url is None:
            endpoint_url = self.default_endpoint
        if access_key is None:
            access_key = self._access_key
        if secret_key is None:
            secret_key = self._secret_key
        name = options.pop("name", None)
        config = make_config(
            endpoint_url,
            access_key,
            secret_key,
            name=name,
            max_concurrent=max_concurrent,
            circuit_breaker_threshold=circuit_breaker_threshold,
            retries=retries,
            **options,
        )
        return Endpoint(config)


s3_kit = S3Kit


class _LiveView(Mapping[str, Any]):
    """A read-only live mapping ``name -> endpoint.<attr>`` (no global lock on the hot path)."""

    def __init__(self, endpoints: Mapping[str, Endpoint], attr: str) -> None:
        self._endpoints = endpoints
        self._attr = attr

    def __getitem__(self, name: str) -> Any:
        return getattr(self._endpoints[name], self._attr)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._endpoints))

    def __len__(self) -> int:
        return len(self._endpoints)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


class S3EndpointMultiplexer:
    """The guide's class, built in: same constructor, methods and attributes, over Multiplexer.

    Differences from the guide's own code, all deliberate:

    - ``round-robin`` is a true rotation in the order endpoints were added (the guide picks the
      least recently used by timestamp, which ties and repeats under threads);
    - ``least-loaded`` means fewest requests in flight now, ties by fewest so far;
    - without ``endpoint_name`` a call fails over to the next healthy endpoint on an endpoint
      failure, throttle or open breaker (the guide promises this; its class does not do it);
    - an unknown ``endpoint_name`` or strategy raises :class:`ConfigError` instead of silently
      using another endpoint; a named endpoint whose breaker is open raises
      :class:`CircuitOpenError` ("Circuit breaker is open" in its message);
    - ``requests_per_endpoint`` and ``last_used`` are read-only live views: they count each
      ``get_endpoint()`` and each call sent to the endpoint.
    """

    def __init__(self, s3_kit_instance: S3Kit | None = None, **multiplexer_options: Any) -> None:
        from ._mux import Multiplexer

        self.s3_kit = s3_kit_instance if s3_kit_instance is not None else S3Kit()
        self.multiplexer = Multiplexer(**multiplexer_options)
        self.endpoints_lock = self.multiplexer._lock
        self.endpoint_handlers: Mapping[str, Endpoint] = self.multiplexer.endpoints
        self.last_used: Mapping[str, float] = _LiveView(self.endpoint_handlers, "last_used")
        self.requests_per_endpoint: Mapping[str, int] = _LiveView(self.endpoint_handlers, "legs")

    def add_endpoint(
        self,
        name: str,
        endpoint_url: str,
        access_key: str | None,
        secret_key: str | None,
        max_concurrent: int = 5,
        circuit_breaker_threshold: int = 5,
        retries: int = 3,
        **options: Any,
    ) -> Endpoint:
        """Add a new S3 endpoint with its own configuration (no network call)."""
        default_access, default_secret = self.s3_kit.default_credentials()
        return self.multiplexer.add_endpoint(
            name,
            endpoint_url,
            access_key if access_key is not None else default_access,
            secret_key if secret_key is not None else default_secret,
            max_concurrent=max_concurrent,
            circuit_breaker_threshold=circuit_breaker_threshold,
            retries=retries,
            **options,
        )

    def get_endpoint(self, name: str | None = None, strategy: str = "round-robin") -> Endpoint:
        """The named endpoint, or the one the strategy picks (healthy first)."""
        if name:
            endpoint = self.multiplexer.endpoint(name)
        else:
            endpoint = self.multiplexer.ranked(None, strategy)[0]
        endpoint.note_selected()
        return endpoint

    def upload_file(
        self,
        file_path: str,
        bucket: str,
        key: str,
        endpoint_name: str | None = None,
        strategy: str = "round-robin",
    ) -> dict[str, Any]:
        return self.multiplexer.upload_file(
            file_path, bucket, key, endpoint=endpoint_name, strategy=strategy
        )

    def download_file(
        self,
        bucket: str,
        key: str,
        file_path: str,
        endpoint_name: str | None = None,
        strategy: str = "round-robin",
    ) -> dict[str, Any]:
        return self.multiplexer.download_file(
            bucket, key, file_path, endpoint=endpoint_name, strategy=strategy
        )

    def list_objects(
        self,
        bucket: str,
        prefix: str | None = None,
        endpoint_name: str | None = None,
        strategy: str = "round-robin",
    ) -> dict[str, Any]:
        return self.multiplexer.list_objects(
            bucket, prefix, endpoint=endpoint_name, strategy=strategy
        )

    def delete_object(
        self,
        bucket: str,
        key: str,
        endpoint_name: str | None = None,
        strategy: str = "round-robin",
    ) -> dict[str, Any]:
        return self.multiplexer.delete_object(
            bucket, key, endpoint=endpoint_name, strategy=strategy
        )

    def head_object(
        self,
        bucket: str,
        key: str,
        endpoint_name: str | None = None,
        strategy: str = "round-robin",
    ) -> dict[str, Any]:
        return self.multiplexer.head_object(bucket, key, endpoint=endpoint_name, strategy=strategy)

    def create_presigned_url(
        self,
        bucket: str,
        key: str,
        expiration: int = 3600,
        endpoint_name: str | None = None,
        strategy: str = "round-robin",
    ) -> str:
        return self.multiplexer.create_presigned_url(
            bucket, key, expiration, endpoint=endpoint_name, strategy=strategy
        )

    # Beyond the guide: the multiplexer's own tools, under the guide's names where it has them.
    def replicate(
        self,
        file_path: str,
        bucket: str,
        key: str,
        endpoints: Iterable[str] | None = None,
        min_success: int | None = None,
    ) -> dict[str, dict[str, Any]]:
        return self.multiplexer.replicate(file_path, bucket, key, endpoints, min_success)

    def check_health(self, bucket: str | None = None, timeout: float = 5.0) -> list[str]:
        return self.multiplexer.check_health(bucket, timeout)

    def stats(self) -> dict[str, EndpointStats]:
        return self.multiplexer.stats()

    def close(self) -> None:
        self.multiplexer.close()

    def __enter__(self) -> S3EndpointMultiplexer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<S3EndpointMultiplexer {self.multiplexer!r}>"
