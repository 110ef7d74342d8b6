"""``callback=`` on transfers: byte counts add up to the object, across retries and resumes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3kit import s3_kit
from s3kit.testing import FaultProxy, S3Server

BUCKET = "callback-bucket"


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with S3Server("moto") as srv:
        srv.create_bucket(BUCKET)
        yield srv


@pytest.mark.timeout(90)
@pytest.mark.parametrize("transport", ["boto3", "obstore"])
@pytest.mark.parametrize("size", [3000, 9 * 1024 * 1024 + 17])
def test_callbacks_sum_to_the_size(
    server: S3Server, tmp_path: Path, transport: str, size: int
) -> None:
    handler = s3_kit().create_s3_endpoint_handler(
        server.url, server.access_key, server.secret_key, transport=transport
    )
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(size))
    sent: list[int] = []
    handler.upload_file(str(src), BUCKET, f"cb/{transport}/{size}", callback=sent.append)
    assert sum(sent) == size
    got: list[int] = []
    out = tmp_path / "out.bin"
    handler.download_file(BUCKET, f"cb/{transport}/{size}", str(out), callback=got.append)
    assert sum(got) == size
    assert out.read_bytes() == src.read_bytes()
    handler.close()


@pytest.mark.timeout(90)
def test_download_callback_counts_a_resumed_body_once(server: S3Server, tmp_path: Path) -> None:
    size = 4 * 1024 * 1024
    data = os.urandom(size)
    server.client().put_object(Bucket=BUCKET, Key="cb/resume", Body=data)
    with FaultProxy(server.port) as proxy:
        handler = s3_kit().create_s3_endpoint_handler(
            proxy.url, server.access_key, server.secret_key, retries=2, backoff_base_s=0.01
        )
        proxy.set_mode("truncate", after_bytes=1024 * 1024, count=1)
        got: list[int] = []
        out = tmp_path / "resumed.bin"
        handler.download_file(BUCKET, "cb/resume", str(out), callback=got.append)
        assert out.read_bytes() == data
        assert sum(got) == size
        assert handler.stats().retries == 1
        handler.close()


@pytest.mark.timeout(90)
def test_large_download_fetches_ranged_parts_and_resumes_a_cut_one(
    server: S3Server, tmp_path: Path
) -> None:
    size = 20 * 1024 * 1024 + 5  # three 8 MiB parts
    data = os.urandom(size)
    server.client().put_object(Bucket=BUCKET, Key="cb/large", Body=data)
    with FaultProxy(server.port) as proxy:
        handler = s3_kit().create_s3_endpoint_handler(
            proxy.url, server.access_key, server.secret_key, retries=2, backoff_base_s=0.01
        )
        proxy.set_mode("truncate", after_bytes=1024 * 1024, count=1)  # cut the first answer
        got: list[int] = []
        out = tmp_path / "large.bin"
        result = handler.download_file(BUCKET, "cb/large", str(out), callback=got.append)
        assert out.read_bytes() == data
        assert result["ContentLength"] == size
        assert sum(got) == size
        assert handler.stats().retries == 1
        gets = [r for r in proxy.stats["recent_requests"] if r["method"] == "GET"]
        ranged = [r["headers"].get("range") for r in gets[1:]]
        assert all("if-match" in r["headers"] for r in gets[1:])  # pinned to the first ETag
        if handler.transport.name == "obstore":
            # obstore streams one GET (fast enough alone); the retry resumes where it was cut
            assert ranged == ["bytes=1048576-"]
        else:
            # the rest came as bounded ranges, the cut part resumed where it stopped
            assert "bytes=1048576-8388607" in ranged
            assert "bytes=8388608-16777215" in ranged
            assert f"bytes=16777216-{size - 1}" in ranged
        handler.close()
