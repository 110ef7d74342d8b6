"""The checks that end a download attempt, shared by ``download_file`` and ``download_fileobj``:
a short body is a :class:`ConnectionFailed`; bytes whose MD5 contradicts a plain ETag are
started over by ``download_file`` and a ``BadDigest`` for ``download_fileobj`` (which cannot take
written bytes back). Multipart and SSE-KMS / SSE-C ETags are not MD5s and are not compared.

The transport is a fake that writes a scripted answer through :class:`DownloadState`.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO

import pytest

from s3kit import ConnectionFailed, ServiceError
from s3kit._ops import Op, download_file, download_fileobj
from s3kit._transport import DownloadState

BODY = bytes(range(256)) * 4
GOOD = f'"{hashlib.md5(BODY).hexdigest()}"'
WRONG = '"' + "0" * 32 + '"'


class FakeTransport:
    """Answers every download with ``BODY`` under the given ETag, size and headers."""

    def __init__(
        self, etag: str, total: int = len(BODY), response: dict[str, Any] | None = None
    ) -> None:
        self.etag = etag
        self.total = total
        self.response = response or {}
        self.offsets: list[int] = []  # state.offset at each call: 0 means from the start

    def download_into(
        self, bucket: str, key: str, fileobj: BinaryIO, state: DownloadState, timeout: Any
    ) -> None:
        self.offsets.append(state.offset)
        if not state.offset:
            state.etag, state.total = self.etag, self.total
            state.response = dict(self.response)
        state.take(fileobj, BODY[state.offset :])

    download_stream = download_into


def _endpoint(transport: FakeTransport) -> Any:
    config = SimpleNamespace(physical_bucket=lambda bucket: bucket)
    return SimpleNamespace(name="ep1", transport=transport, config=config)


def _op(kind: str, tmp_path: Path) -> Op:
    if kind == "download_file":
        return download_file("bk", "k", str(tmp_path / "out.bin"))
    return download_fileobj("bk", "k", io.BytesIO())


@pytest.mark.parametrize("kind", ["download_file", "download_fileobj"])
def test_a_short_body_is_a_connection_failure(kind: str, tmp_path: Path) -> None:
    op = _op(kind, tmp_path)
    with pytest.raises(ConnectionFailed, match="short body from ep1: 1024 of 2000 bytes") as err:
        op.attempt(_endpoint(FakeTransport(GOOD, total=2000)), None)
    assert (err.value.endpoint, err.value.operation) == ("ep1", kind)


def test_download_file_starts_over_after_an_md5_mismatch(tmp_path: Path) -> None:
    op = _op("download_file", tmp_path)
    transport = FakeTransport(WRONG)
    ep = _endpoint(transport)
    for _ in range(2):
        with pytest.raises(ConnectionFailed, match="MD5 mismatch downloading from ep1") as err:
            op.attempt(ep, None)
        assert err.value.operation == "download_file"
    assert transport.offsets == [0, 0]  # the retry on the same endpoint did not resume
    assert not (tmp_path / "out.bin").exists()
    assert op.cleanup is not None
    op.cleanup()
    assert list(tmp_path.iterdir()) == []


def test_download_fileobj_reports_bad_digest(tmp_path: Path) -> None:
    op = _op("download_fileobj", tmp_path)
    with pytest.raises(ServiceError, match="MD5 of the 1024 bytes written") as err:
        op.attempt(_endpoint(FakeTransport(WRONG)), None)
    assert not isinstance(err.value, ConnectionFailed)
    assert (err.value.code, err.value.operation) == ("BadDigest", "download_fileobj")


@pytest.mark.parametrize("kind", ["download_file", "download_fileobj"])
@pytest.mark.parametrize(
    ("etag", "response"),
    [
        (GOOD, {}),
        ('"' + "0" * 32 + '-2"', {}),  # multipart: not an MD5 of the bytes
        (WRONG, {"ServerSideEncryption": "aws:kms"}),
        (WRONG, {"SSECustomerAlgorithm": "AES256"}),
    ],
)
def test_etags_that_are_not_an_md5_are_not_compared(
    kind: str, etag: str, response: dict[str, Any], tmp_path: Path
) -> None:
    result = _op(kind, tmp_path).attempt(_endpoint(FakeTransport(etag, response=response)), None)
    assert (result["ContentLength"], result["ETag"]) == (len(BODY), etag)
    if kind == "download_file":
        assert (tmp_path / "out.bin").read_bytes() == BODY
