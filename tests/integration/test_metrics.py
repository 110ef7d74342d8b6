"""Prometheus metrics, scraped over real HTTP and parsed, for a multiplexer on real servers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from s3kit import Multiplexer, NotFound
from s3kit.metrics import serve
from s3kit.testing import S3ServerPool, free_port

BUCKET = "metrics-bucket"


@pytest.fixture(scope="module")
def pool() -> Iterator[S3ServerPool]:
    with S3ServerPool(2, "moto", buckets=[BUCKET]) as p:
        yield p


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.mark.timeout(60)
def test_scraped_metrics_match_the_calls_made(pool: S3ServerPool) -> None:
    mux = Multiplexer(connect_timeout=0.5, read_timeout=2)
    for i, server in enumerate(pool):
        mux.add_endpoint(f"ep{i}", server.url, server.access_key, server.secret_key)
    for i in range(6):
        mux.put_object(BUCKET, f"m{i}", b"x", endpoint="ep0")
    mux.get_object(BUCKET, "m0", endpoint="ep0")
    with pytest.raises(NotFound):
        mux.head_object(BUCKET, "missing", endpoint="ep1")
    port = free_port()
    server = serve(mux, port, registry=CollectorRegistry())
    try:
        m = _scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        mux.close()
    ok = (("endpoint", "ep0"), ("operation", "put_object"), ("outcome", "success"))
    assert m["s3kit_requests_total", ok] == 6
    get_ok = (("endpoint", "ep0"), ("operation", "get_object"), ("outcome", "success"))
    assert m["s3kit_requests_total", get_ok] == 1
    miss = (("endpoint", "ep1"), ("operation", "head_object"), ("outcome", "client_error"))
    assert m["s3kit_requests_total", miss] == 1
    assert m["s3kit_breaker_state", (("endpoint", "ep0"),)] == 0
    assert m["s3kit_in_flight", (("endpoint", "ep1"),)] == 0
    assert m["s3kit_request_duration_seconds_count", (("endpoint", "ep0"),)] == 7
    inf = (("endpoint", "ep0"), ("le", "+Inf"))
    assert m["s3kit_request_duration_seconds_bucket", inf] == 7
    assert m["s3kit_request_duration_seconds_sum", (("endpoint", "ep0"),)] > 0
    assert m["s3kit_retries_total", (("endpoint", "ep1"),)] == 0
    assert m["s3kit_failovers_total", (("endpoint", "ep0"),)] == 0


@pytest.mark.timeout(90)
def test_cli_serve_metrics_shows_a_dead_endpoint_open(tmp_path: Path) -> None:
    with S3ServerPool(2, "moto", buckets=[BUCKET]) as pool:
        config = tmp_path / "s3kit.toml"
        lines = [
            "[defaults]",
            "connect_timeout = 0.5",
            "read_timeout = 1",
            "circuit_breaker_threshold = 2",
            "breaker_open_s = 30",
        ]
        for i, server in enumerate(pool):
            lines += [
                f"[endpoints.ep{i}]",
                f'url = "{server.url}"',
                f'access_key = "{server.access_key}"',
                f'secret_key = "{server.secret_key}"',
            ]
        config.write_text("\n".join(lines) + "\n")
        pool[1].kill()
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "s3kit", "--config", str(config), "serve-metrics",
             "--port", str(port), "--interval", "0.2", "--duration", "30"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"},
        )  # fmt: skip
        try:
            state = None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    m = _scrape(f"http://127.0.0.1:{port}/metrics")
                except OSError:
                    time.sleep(0.2)
                    continue
                state = m.get(("s3kit_breaker_state", (("endpoint", "ep1"),)))
                if state == 2:
                    break
                time.sleep(0.2)
            assert state == 2  # the health checks opened the dead endpoint's breaker
            assert m["s3kit_breaker_state", (("endpoint", "ep0"),)] == 0
        finally:
            proc.terminate()
            proc.wait(timeout=10)
