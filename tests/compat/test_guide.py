"""The original multiplexing guide, run word for word against four real local S3 servers.

``guide.md`` beside this file is a verbatim copy of the design note. Its ```python blocks are
extracted at test time and run in order with ``exec()`` in one namespace, with only these
textual rewrites:

- ``from ipfs_accelerate_py.api_backends import s3_kit`` -> ``from s3kit import s3_kit``;
- the four endpoint URLs -> the URLs of four local servers (three moto, and a SigV4-checking
  nanio server for "minio-local").

Two variants: ``pasted`` runs the guide's own ``class S3EndpointMultiplexer``; ``builtin``
replaces that class definition (and only it) by ``from s3kit import S3EndpointMultiplexer``.
"""

from __future__ import annotations

import ast
import concurrent.futures
import hashlib
import os
import re
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

import s3kit
from s3kit.testing import S3Server

GUIDE = Path(__file__).with_name("guide.md")
GUIDE_SHA256 = "a5aebabb680e88611141b5f9dee8c09d6c766437dc63eed86cfcd0cef102d9cb"

VARIANTS = ("pasted", "builtin")
NAMES = ("aws-primary", "aws-secondary", "minio-local", "ceph-storage")

IMPORT_ORIGINAL = "from ipfs_accelerate_py.api_backends import s3_kit"
IMPORT_LOCAL = "from s3kit import s3_kit"
GUIDE_URLS = {
    "aws-primary": "https://s3.us-east-1.amazonaws.com",
    "aws-secondary": "https://s3.us-west-2.amazonaws.com",
    "minio-local": "http://localhost:9000",
    "ceph-storage": "https://ceph.example.com:7480",
}
BUILTIN_CLASS_IMPORT = "from s3kit import S3EndpointMultiplexer"

# Credentials: distinct per store, so a mix-up shows (nanio, for minio-local, checks SigV4).
CREDENTIALS = {
    "aws-primary": ("aws-test-access", "aws-test-secret"),
    "aws-secondary": ("aws-test-access", "aws-test-secret"),
    "minio-local": ("minio-test-access", "minio-test-secret"),
    "ceph-storage": ("ceph-test-access", "ceph-test-secret"),
}
KINDS = {"aws-primary": "moto", "aws-secondary": "moto", "minio-local": "nanio"}
ENV = {
    "AWS_ACCESS_KEY": CREDENTIALS["aws-primary"][0],
    "AWS_SECRET_KEY": CREDENTIALS["aws-primary"][1],
    "MINIO_ACCESS_KEY": CREDENTIALS["minio-local"][0],
    "MINIO_SECRET_KEY": CREDENTIALS["minio-local"][1],
    "CEPH_ACCESS_KEY": CREDENTIALS["ceph-storage"][0],
    "CEPH_SECRET_KEY": CREDENTIALS["ceph-storage"][1],
    "AWS_EC2_METADATA_DISABLED": "true",
}

BUCKETS = (
    "shared-bucket",
    "media-bucket",
    "dev-bucket",
    "prod-bucket",
    "backup-bucket",
    "health-check-bucket",
    "important-bucket",
    "upload-bucket",
)
MONTHLY_PDF = b"%PDF-1.4\n% s3kit compat test: monthly report\n" + bytes(range(256)) * 16
CRITICAL_FILE = b"critical file: the same on every endpoint\n"
IMPORTANT_FILE = b"important file: on aws-primary and aws-secondary\n"
CRITICAL_DB = b"SQLite format 3\x00" + bytes(range(256)) * 32
N_FILES = 100
N_LARGE = 3
CIRCUIT_BREAKER_THRESHOLD = 5  # the guide's default for aws-primary

# Calls the guide makes through the multiplexer (round-robin 10, least-loaded per large file,
# direct 2, replication 4, health 4 + 1 download, error handling 1, threads 100).
GUIDE_CALLS = 10 + N_LARGE + 2 + 4 + 4 + 1 + 1 + N_FILES


# --------------------------------------------------------------------- the guide's code
def guide_blocks() -> list[str]:
    """The ```python blocks of guide.md, in order, exactly as written."""
    text = GUIDE.read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    assert len(blocks) == 10, f"guide.md should have 10 python blocks, found {len(blocks)}"
    return blocks


def block_with(blocks: list[str], marker: str) -> int:
    """Index of the one block containing ``marker``."""
    found = [i for i, b in enumerate(blocks) if marker in b]
    assert len(found) == 1, f"expected one guide block containing {marker!r}, found {found}"
    return found[0]


def _replace_once(blocks: list[str], old: str, new: str) -> list[str]:
    assert sum(b.count(old) for b in blocks) == 1, f"{old!r} should occur once in the guide"
    return [b.replace(old, new) for b in blocks]


def _drop_class(block: str) -> str:
    """The block with ``class S3EndpointMultiplexer`` replaced by the built-in class's import."""
    tree = ast.parse(block)
    classes = [
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "S3EndpointMultiplexer"
    ]
    assert len(classes) == 1
    node = classes[0]
    assert node.end_lineno is not None
    lines = block.splitlines(keepends=True)
    start, end = node.lineno - 1, node.end_lineno
    return "".join([*lines[:start], BUILTIN_CLASS_IMPORT + "\n", *lines[end:]])


def prepared_blocks(variant: str, urls: dict[str, str]) -> list[str]:
    """The guide's blocks with only the allowed rewrites (see the module docstring)."""
    blocks = _replace_once(guide_blocks(), IMPORT_ORIGINAL, IMPORT_LOCAL)
    for name, guide_url in GUIDE_URLS.items():
        blocks = _replace_once(blocks, guide_url, urls[name])
    if variant == "builtin":
        i = block_with(blocks, "class S3EndpointMultiplexer")
        blocks[i] = _drop_class(blocks[i])
    return blocks


def run_block(source: str, ns: dict[str, Any], label: str) -> None:
    exec(compile(source, f"<guide.md {label}>", "exec"), ns)


# ------------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, S3Server]]:
    """Four server processes on 127.0.0.1 (moto, moto, nanio, moto), always stopped."""
    made = {
        name: S3Server(KINDS.get(name, "moto"), access_key=ak, secret_key=sk)
        for name, (ak, sk) in CREDENTIALS.items()
    }
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(made)) as ex:
            for f in [ex.submit(s.start) for s in made.values()]:
                f.result()
        yield made
    finally:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(made)) as ex:
            list(ex.map(lambda s: s.stop(), made.values()))
        assert not [s for s in made.values() if s.running], "a server process survived stop()"


@pytest.fixture(scope="module")
def clients(servers: dict[str, S3Server]) -> dict[str, Any]:
    """One raw boto3 client per server (bypasses s3kit); every guide bucket created on each."""
    made = {name: srv.client() for name, srv in servers.items()}
    for client in made.values():
        _create_buckets(client)
    return made


def _create_buckets(client: Any) -> None:
    for bucket in BUCKETS:
        try:
            client.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise


def _all_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def _get(client: Any, bucket: str, key: str) -> bytes:
    body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def _seed(name: str, client: Any) -> None:
    """Every guide bucket emptied, then the objects the guide downloads put back."""
    for bucket in BUCKETS:
        for key in _all_keys(client, bucket):
            client.delete_object(Bucket=bucket, Key=key)
    client.put_object(Bucket="important-bucket", Key="critical-file.txt", Body=CRITICAL_FILE)
    if name == "aws-primary":
        client.put_object(Bucket="prod-bucket", Key="reports/monthly.pdf", Body=MONTHLY_PDF)
    if name in ("aws-primary", "aws-secondary"):
        client.put_object(Bucket="shared-bucket", Key="important-file.txt", Body=IMPORTANT_FILE)


@dataclass
class GuideEnv:
    servers: dict[str, S3Server]
    clients: dict[str, Any]
    cwd: Path
    large_files: list[str]
    urls: dict[str, str] = field(default_factory=dict)

    def namespace(self) -> dict[str, Any]:
        return {"__name__": "s3kit_guide", "os": os, "large_files": list(self.large_files)}

    def copies(self, bucket: str, key: str) -> dict[str, bytes]:
        """``{endpoint: body}`` for every server holding ``bucket/key``."""
        out: dict[str, bytes] = {}
        for name, client in self.clients.items():
            if key in _all_keys(client, bucket, key):
                out[name] = _get(client, bucket, key)
        return out

    def count(self, bucket: str, keys: set[str]) -> dict[str, int]:
        """How many of ``keys`` each server holds in ``bucket``."""
        return {name: len(keys & set(_all_keys(c, bucket))) for name, c in self.clients.items()}


@pytest.fixture
def guide_env(
    servers: dict[str, S3Server],
    clients: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> GuideEnv:
    """Seeded servers, the guide's env vars, and a cwd holding the files the guide uploads."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(servers)) as ex:
        futures = [ex.submit(_seed, n, clients[n]) for n in servers]
        for f in futures:
            f.result()
    for var, value in ENV.items():
        monkeypatch.setenv(var, value)
    for i in range(N_FILES):
        (tmp_path / f"file_{i}.txt").write_bytes(f"file {i}: guide upload payload\n".encode())
    (tmp_path / "critical_data.db").write_bytes(CRITICAL_DB)
    media = tmp_path / "media"
    media.mkdir()
    large_files = []
    for i in range(N_LARGE):
        path = media / f"video_{i}.mp4"
        path.write_bytes(bytes([i]) * (32 * 1024 + i))
        large_files.append(str(path))
    monkeypatch.chdir(tmp_path)
    return GuideEnv(servers, clients, tmp_path, large_files, {n: s.url for n, s in servers.items()})


def _close(multiplexer: Any) -> None:
    if isinstance(multiplexer, s3kit.S3EndpointMultiplexer):
        multiplexer.close()
    else:  # the guide's class has no close(): release each handler's connection pool
        for handler in list(multiplexer.endpoint_handlers.values()):
            handler.close()


def endpoint_id(variant: str, name: str, urls: dict[str, str]) -> str:
    """What ``result["Endpoint"]`` names: the guide's class creates its handlers without a name,
    so they are named by URL; the built-in class names them as added."""
    return name if variant == "builtin" else urls[name]


def _say(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(text)


# --------------------------------------------------------------------------- tests
@pytest.mark.timeout(180)
def test_minio_local_server_checks_signatures(servers: dict[str, S3Server]) -> None:
    """The "minio-local" server rejects other credentials, so the guide's MINIO_* keys matter."""
    nanio = servers["minio-local"]
    nanio.client().list_buckets()
    aws_key, aws_secret = CREDENTIALS["aws-primary"]
    bad = boto3.session.Session().client(
        "s3",
        endpoint_url=nanio.url,
        aws_access_key_id=aws_key,
        aws_secret_access_key=aws_secret,
        region_name=nanio.region,
        config=botocore.config.Config(
            s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}
        ),
    )
    with pytest.raises(ClientError) as info:
        bad.list_buckets()
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


@pytest.mark.timeout(180)
def test_guide_copy_is_verbatim_apart_from_its_header() -> None:
    lines = GUIDE.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("<!--") and lines[0].endswith("-->")
    assert "verbatim" in lines[0].lower()
    assert lines[1] == "# S3 Kit Connection Multiplexing Guide"
    # sha256 of the original note: a reformat (e.g. `ruff format` on markdown) must not slip in.
    body = GUIDE.read_bytes().split(b"\n", 1)[1]
    assert hashlib.sha256(body).hexdigest() == GUIDE_SHA256


@pytest.mark.timeout(180)
@pytest.mark.parametrize("variant", VARIANTS)
def test_guide_runs_word_for_word(
    variant: str, guide_env: GuideEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    env = guide_env
    blocks = prepared_blocks(variant, env.urls)
    ns = env.namespace()
    error_block = block_with(blocks, '"Circuit breaker is open" in str(e)')
    after: dict[int, Any] = {}  # the guide's `result` after each block (later blocks reuse it)
    t0 = time.perf_counter()
    try:
        for i, source in enumerate(blocks):
            run_block(source, ns, f"block {i + 1} ({variant})")
            after[i] = ns.get("result")
        elapsed = time.perf_counter() - t0
        out = capsys.readouterr().out
        mux = ns["multiplexer"]
        if variant == "builtin":
            assert isinstance(mux, s3kit.S3EndpointMultiplexer)
        else:
            assert type(mux).__module__ == "s3kit_guide"
        assert list(mux.endpoint_handlers) == list(NAMES)

        # Round-robin: data/file_{i}.txt across the four servers, each copy byte-identical.
        rr_keys = {f"data/file_{i}.txt" for i in range(10)}
        for i in range(10):
            copies = env.copies("shared-bucket", f"data/file_{i}.txt")
            assert copies, f"data/file_{i}.txt is on no server"
            local = (env.cwd / f"file_{i}.txt").read_bytes()
            assert all(body == local for body in copies.values()), copies.keys()
        distribution = env.count("shared-bucket", rr_keys)
        assert sum(distribution.values()) == 10
        _say(capsys, f"\n[{variant}] round-robin distribution of 10 uploads: {distribution}")
        if variant == "builtin":
            assert distribution == {
                "aws-primary": 3,
                "aws-secondary": 3,
                "minio-local": 2,
                "ceph-storage": 2,
            }

        # Least-loaded: media-bucket/videos/<basename>.
        for path in env.large_files:
            key = f"videos/{os.path.basename(path)}"
            copies = env.copies("media-bucket", key)
            assert copies, f"{key} is on no server"
            assert all(body == Path(path).read_bytes() for body in copies.values())

        # Direct selection: the listing ran on minio-local; the report came from aws-primary.
        assert (env.cwd / "monthly_report.pdf").read_bytes() == MONTHLY_PDF

        # Replication: all four succeeded and each server holds the same bytes.
        results = ns["replication_results"]
        assert set(results) == set(NAMES)
        assert all(r["success"] is True for r in results.values()), results
        backup = env.copies("backup-bucket", "backups/critical_data_20250301.db")
        assert set(backup) == set(NAMES)
        assert all(body == CRITICAL_DB for body in backup.values())

        # Health check: every endpoint healthy.
        assert ns["healthy_endpoints"] == list(NAMES)
        assert "failed health check" not in out

        # Error handling, normal path: the named endpoint answered; local-copy.txt is its file.
        assert after[error_block]["Endpoint"] == endpoint_id(variant, "aws-primary", env.urls)
        assert (env.cwd / "local-copy.txt").read_bytes() == IMPORTANT_FILE

        # Threads: all 100 uploads, each exactly once across the servers.
        batch = {f"batch/file_{i}.txt" for i in range(N_FILES)}
        per_server = env.count("upload-bucket", batch)
        held = set().union(
            *(set(_all_keys(c, "upload-bucket", "batch/")) for c in env.clients.values())
        )
        assert held == batch
        assert sum(per_server.values()) == N_FILES, per_server
        assert out.count("Upload successful:") == N_FILES
        assert "Upload failed" not in out
        _say(capsys, f"[{variant}] threads block (least-loaded) uploads per server: {per_server}")

        # Monitoring.
        ns["print_endpoint_stats"]()
        stats_out = capsys.readouterr().out
        assert "=== Endpoint Usage Statistics ===" in stats_out
        for name in NAMES:
            assert f"Endpoint: {name}" in stats_out
            assert f"URL: {env.urls[name]}" in stats_out
        counts = dict(mux.requests_per_endpoint)
        assert set(counts) == set(NAMES)
        assert all(c > 0 for c in counts.values()), counts
        for name, c in counts.items():
            assert f"Endpoint: {name}\n  Requests: {c}\n" in stats_out
        if variant == "builtin":
            assert sum(counts.values()) >= GUIDE_CALLS, counts
        else:  # the guide's class counts each get_endpoint(): exactly one per call
            assert sum(counts.values()) == GUIDE_CALLS, counts
        _say(
            capsys,
            f"[{variant}] requests_per_endpoint={counts} (calls made: {GUIDE_CALLS}); "
            f"guide blocks ran in {elapsed:.2f}s",
        )
    finally:
        if "multiplexer" in ns:
            _close(ns["multiplexer"])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("variant", VARIANTS)
def test_dead_named_endpoint_opens_breaker_and_guide_fallback_works(
    variant: str, guide_env: GuideEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    env = guide_env
    blocks = prepared_blocks(variant, env.urls)
    ns = env.namespace()
    setup = block_with(guide_blocks(), "class S3EndpointMultiplexer")  # same index in both
    run_block(blocks[setup], ns, f"block {setup + 1} ({variant})")
    fallback_block = blocks[block_with(blocks, '"Circuit breaker is open" in str(e)')]

    # A dedicated aws-primary, so killing it leaves the shared servers alone.
    ak, sk = CREDENTIALS["aws-primary"]
    victim = S3Server("moto", access_key=ak, secret_key=sk)
    mux = ns["S3EndpointMultiplexer"](ns["s3_kit_api"])
    try:
        victim.start()
        victim_client = victim.client()
        _create_buckets(victim_client)
        _seed("aws-primary", victim_client)
        fast: dict[str, Any] = {"retries": 1}
        if variant == "builtin":
            fast.update(backoff_base_s=0.01, connect_timeout=0.5)
        env_keys = {
            "aws-primary": ("AWS_ACCESS_KEY", "AWS_SECRET_KEY"),
            "aws-secondary": ("AWS_ACCESS_KEY", "AWS_SECRET_KEY"),
            "minio-local": ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"),
            "ceph-storage": ("CEPH_ACCESS_KEY", "CEPH_SECRET_KEY"),
        }
        for name in NAMES:
            url = victim.url if name == "aws-primary" else env.urls[name]
            ak_var, sk_var = env_keys[name]
            mux.add_endpoint(
                name=name,
                endpoint_url=url,
                access_key=os.environ.get(ak_var),
                secret_key=os.environ.get(sk_var),
                circuit_breaker_threshold=CIRCUIT_BREAKER_THRESHOLD,
                **fast,
            )

        def named_download(target: str = "local-copy.txt") -> Any:
            return mux.download_file(
                bucket="shared-bucket",
                key="important-file.txt",
                file_path=target,
                endpoint_name="aws-primary",
            )

        urls = {**env.urls, "aws-primary": victim.url}
        got = named_download("before-kill.txt")
        assert got["Endpoint"] == endpoint_id(variant, "aws-primary", urls)
        victim.kill()

        # Failing calls on the dead endpoint, until its breaker rejects.
        t_kill = time.perf_counter()
        errors: list[BaseException] = []
        for _ in range(CIRCUIT_BREAKER_THRESHOLD + 1):
            try:
                named_download()
            except Exception as exc:
                errors.append(exc)
                if isinstance(exc, s3kit.CircuitOpenError):
                    break
            else:
                pytest.fail("a call to the killed server succeeded")
        to_open = time.perf_counter() - t_kill
        failing = errors[:-1]
        assert isinstance(errors[-1], s3kit.CircuitOpenError), [type(e) for e in errors]
        assert "Circuit breaker is open" in str(errors[-1])
        assert 1 <= len(failing) <= CIRCUIT_BREAKER_THRESHOLD
        assert all(
            isinstance(e, s3kit.EndpointError) and not isinstance(e, s3kit.CircuitOpenError)
            for e in failing
        ), failing
        assert mux.endpoint_handlers["aws-primary"].breaker.state == "open"

        # The guide's "Error Handling" block: falls back to aws-secondary.
        ns["multiplexer"] = mux
        ns.pop("result", None)
        run_block(fallback_block, ns, f"error handling block ({variant})")
        assert ns["result"]["Endpoint"] == endpoint_id(variant, "aws-secondary", urls)
        assert (env.cwd / "local-copy.txt").read_bytes() == IMPORTANT_FILE

        if variant == "builtin":
            # Strategy-routed calls fail over past the open breaker (the guide's promise).
            for _ in range(len(NAMES)):
                got = mux.download_file(
                    bucket="important-bucket", key="critical-file.txt", file_path="rr-copy.txt"
                )
                assert got["Endpoint"] != "aws-primary"
                assert (env.cwd / "rr-copy.txt").read_bytes() == CRITICAL_FILE

        # Latency of calls rejected by the open breaker (nothing is sent).
        samples: list[float] = []
        for _ in range(200):
            t = time.perf_counter()
            try:
                named_download()
            except s3kit.CircuitOpenError:
                samples.append(time.perf_counter() - t)
            else:
                pytest.fail("a call through the open breaker succeeded")
        samples.sort()
        median_us = statistics.median(samples) * 1e6
        p99_us = samples[int(0.99 * len(samples)) - 1] * 1e6
        _say(
            capsys,
            f"\n[{variant}] killed aws-primary: {len(failing)} failing call(s) "
            f"({', '.join(sorted({type(e).__name__ for e in failing}))}) in {to_open:.2f}s, "
            f"then CircuitOpenError; open-breaker rejection over 200 calls: "
            f"median {median_us:.1f} µs, p99 {p99_us:.1f} µs",
        )
        assert median_us < 5000  # a sanity bound only
    finally:
        _close(mux)
        victim.stop()
