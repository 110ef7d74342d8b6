"""Every Python block of the README and docs/ runs against real local servers, so docs cannot rot.

Only the example endpoint URLs are rewritten to loopback servers; the names the examples take
as given (credentials, data, local files) are provided in the namespace.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3kit.testing import S3ServerPool

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
EXAMPLE_URLS = (
    "https://s3.eu-west-1.amazonaws.com",
    "http://minio.internal:9000",
    "http://localhost:9000",
    "https://s3.amazonaws.com",
)
BUCKETS = ["media", "backups", "docs", "test"]


def _blocks() -> list[tuple[str, int, str]]:
    out = []
    for path in DOCS:
        for i, match in enumerate(BLOCK.finditer(path.read_text(encoding="utf-8"))):
            out.append((path.name, i, match.group(1)))
    return out


@pytest.fixture(scope="module")
def servers() -> Iterator[S3ServerPool]:
    with S3ServerPool(len(EXAMPLE_URLS), "moto", buckets=BUCKETS) as pool:
        yield pool


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("doc", "index", "code"), _blocks(), ids=lambda v: str(v)[:20])
def test_doc_block_runs(
    doc: str,
    index: int,
    code: str,
    servers: S3ServerPool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    for url, server in zip(EXAMPLE_URLS, servers, strict=True):
        code = code.replace(url, server.url)
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "backup.db").write_bytes(os.urandom(4096))
    key, secret = servers[0].access_key, servers[0].secret_key
    namespace = {
        "__name__": f"doc_{doc}_{index}",
        "access_key": key,
        "secret_key": secret,
        "minio_key": key,
        "minio_secret": secret,
        "data": b"example bytes",
    }
    exec(compile(code, f"{doc}[block {index}]", "exec"), namespace)
