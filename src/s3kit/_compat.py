"""The guide's entry point: ``s3_kit(metadata={"s3cfg": ...}).create_s3_endpoint_handler(...)``.

Code written for the original multiplexing guide runs unchanged but for its import line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._config import make_config
from ._endpoint import Endpoint
from ._errors import ConfigError

__all__ = ["S3Kit", "s3_kit"]


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
