"""Shared fixtures: real moto and nanio servers on 127.0.0.1 (see s3kit.testing).

Session-scoped servers are shared by tests that leave them healthy; a test that kills or
pauses a server asks ``fresh_server(kind)`` for its own, stopped in teardown even on failure.
"""

from __future__ import annotations

import os

# botocore's default credential chain would otherwise ask 169.254.169.254 (not loopback).
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

from collections.abc import Callable, Iterator

import pytest

import s3kit
from s3kit._config import default_transport
from s3kit.testing import S3Server

BUCKET = "test-bucket"
ACCESS_KEY = "testing-access"  # S3Server's defaults
SECRET_KEY = "testing-secret"

ServerFactory = Callable[..., S3Server]


def pytest_configure(config: pytest.Config) -> None:
    # Also declared in pyproject.toml; repeated so the marker is known under any rootdir.
    config.addinivalue_line("markers", "slow: longer fault tests")
    config.addinivalue_line(
        "markers",
        "boto3_only(reason): checks boto3-transport internals; skipped when S3KIT_TRANSPORT "
        "picks another default transport (make test-obstore)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``S3KIT_TRANSPORT=obstore`` skip the few tests marked ``boto3_only(reason)``."""
    transport = default_transport()
    if transport == "boto3":
        return
    for item in items:
        marker = item.get_closest_marker("boto3_only")
        if marker is None:
            continue
        if not marker.args or not isinstance(marker.args[0], str):
            raise pytest.UsageError(f"{item.nodeid}: boto3_only needs a reason string")
        item.add_marker(
            pytest.mark.skip(reason=f"boto3 transport only ({transport} default): {marker.args[0]}")
        )


def _started(server: S3Server, bucket: str | None) -> S3Server:
    server.start()
    if bucket:
        server.create_bucket(bucket)
    return server


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    """One moto server for the session, with bucket ``test-bucket``. Never kill or pause it."""
    server = S3Server("moto", access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    try:
        yield _started(server, BUCKET)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nanio_server() -> Iterator[S3Server]:
    """One nanio server (verifies SigV4) for the session, with bucket ``test-bucket``."""
    server = S3Server("nanio", access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    try:
        yield _started(server, BUCKET)
    finally:
        server.stop()


@pytest.fixture
def fresh_server() -> Iterator[ServerFactory]:
    """Factory ``fresh_server(kind="moto", bucket="test-bucket")``: a server of the test's own.

    Every server it made is stopped in teardown (also when the test failed, or left the server
    paused or killed).
    """
    servers: list[S3Server] = []

    def factory(kind: str = "moto", bucket: str | None = BUCKET) -> S3Server:
        server = S3Server(kind, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
        servers.append(server)
        return _started(server, bucket)

    try:
        yield factory
    finally:
        errors: list[BaseException] = []
        for server in servers:
            try:
                server.stop()
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def kit() -> s3kit.S3Kit:
    """The guide's entry point with the test servers' credentials (no default endpoint)."""
    return s3kit.s3_kit(metadata={"s3cfg": {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}})
