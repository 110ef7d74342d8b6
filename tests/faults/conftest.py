"""Fixtures of the fault matrix: four nanio servers, each behind its own FaultProxy.

The servers verify SigV4 and keep their data on disk (a killed or restarted endpoint comes back
with its objects), and every endpoint has its own proxy, so a network fault hits exactly one
endpoint. The cluster is module-scoped; ``healed_cluster`` puts every proxy back in ``pass`` mode
and every server back up after each test, whatever the test did to them.

Each matrix test appends one row of observed numbers to ``matrix_rows``. At the end of the
session the rows are written as JSON (to ``$S3KIT_FAULTS_JSON`` when set, else to
``<pytest basetemp>/resilience.json``) and printed in the terminal summary;
``tests/faults/report.py`` turns them into the table of ``docs/resilience.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from s3kit.testing import FaultProxy, S3ServerPool

BUCKET = "faults"
ACCESS_KEY = "faults-access"
SECRET_KEY = "faults-secret-0123456789"
N_ENDPOINTS = 4
SEED_SIZES = (1024, 4096, 9000, 16 * 1024, 24 * 1024, 40 * 1024)
N_SEEDS = 12

_ROWS = pytest.StashKey[list[dict[str, Any]]]()
_WRITTEN = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_ROWS] = []


def report_path(basetemp: Path) -> Path:
    env = os.environ.get("S3KIT_FAULTS_JSON")
    return Path(env) if env else basetemp / "resilience.json"


@pytest.fixture(scope="session")
def matrix_rows(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[dict[str, Any]]]:
    """Rows of observed numbers, one per matrix test; written as JSON at session end."""
    rows = request.config.stash[_ROWS]
    yield rows
    if rows:
        path = report_path(tmp_path_factory.getbasetemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rows": rows}, indent=2, sort_keys=True) + "\n")
        request.config.stash[_WRITTEN] = path


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    tr = terminalreporter
    tr.section("fault matrix: observed numbers")
    head = (
        f"{'fault':<18}{'ops':>5}{'user fail':>10}{'named fail':>11}{'to open ms':>11}"
        f"{'probes':>7}{'max call s':>11}{'max tries':>10}{'ep1 reqs':>9}{'retries':>8}"
    )
    tr.write_line(head)
    for r in rows:
        if r.get("kind") != "matrix":
            continue
        to_open = "-" if r["time_to_open_ms"] is None else f"{r['time_to_open_ms']:.0f}"
        probes = "-" if r["probes_to_close"] is None else str(r["probes_to_close"])
        tr.write_line(
            f"{r['fault']:<18}{r['ops']:>5}{r['user_failures']:>10}{r['named_failures']:>11}"
            f"{to_open:>11}{probes:>7}{r['max_call_s']:>11.2f}{r['max_attempts_per_call']:>10}"
            f"{r['faulted_requests_during_fault']:>9}{r['retries']:>8}"
        )
    for r in rows:
        if r.get("kind") == "integrity":
            tr.write_line(f"integrity {r['check']}: {r['detail']}")
    path = config.stash.get(_WRITTEN, None)
    if path is not None:
        tr.write_line(f"rows written to {path}")


@dataclass
class Cluster:
    """Four nanio servers (``servers[i]``) behind four proxies (``proxies[i]``)."""

    pool: S3ServerPool
    proxies: list[FaultProxy]
    seeds: dict[str, bytes]
    bucket: str = BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    @property
    def servers(self) -> list[Any]:
        return self.pool.servers

    def names(self) -> list[str]:
        return [f"ep{i}" for i in range(len(self.proxies))]

    def endpoints(self, secret_for: dict[int, str] | None = None) -> dict[str, dict[str, Any]]:
        """Multiplexer endpoint options: ``epN`` talks to ``proxies[N]``."""
        secret_for = secret_for or {}
        return {
            f"ep{i}": {
                "url": proxy.url,
                "access_key": ACCESS_KEY,
                "secret_key": secret_for.get(i, SECRET_KEY),
            }
            for i, proxy in enumerate(self.proxies)
        }

    def heal(self) -> None:
        """Every proxy in pass mode, every server running and not paused."""
        for proxy in self.proxies:
            proxy.set_mode("pass")
        for server in self.servers:
            if server.paused:
                server.resume()
            if not server.running:
                server.start()


def _seed(cluster_pool: S3ServerPool) -> dict[str, bytes]:
    rng = random.Random(20240601)
    seeds = {
        f"seed/{i:02d}": rng.randbytes(SEED_SIZES[i % len(SEED_SIZES)]) for i in range(N_SEEDS)
    }

    def put_all(server: Any) -> None:
        client = server.client()
        for key, body in seeds.items():
            resp = client.put_object(Bucket=BUCKET, Key=key, Body=body)
            assert resp["ETag"].strip('"') == hashlib.md5(body).hexdigest()

    with ThreadPoolExecutor(max_workers=len(cluster_pool)) as ex:
        list(ex.map(put_all, cluster_pool.servers))
    return seeds


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Four nanio servers with bucket ``faults``, each behind a FaultProxy; seeded replicas."""
    pool = S3ServerPool(
        N_ENDPOINTS, "nanio", buckets=[BUCKET], access_key=ACCESS_KEY, secret_key=SECRET_KEY
    )
    proxies: list[FaultProxy] = []
    try:
        pool.start()
        for i, server in enumerate(pool.servers):
            proxy = FaultProxy(server.port, seed=1000 + i, max_lifetime_s=1800, record_requests=400)
            proxies.append(proxy)
            proxy.start()
        yield Cluster(pool, proxies, _seed(pool))
    finally:
        for proxy in proxies:
            proxy.stop()
        pool.stop()
        assert not any(p.running for p in proxies), "a proxy was left running"
        assert not any(s.running for s in pool.servers), "a server process was left running"


@pytest.fixture
def healed_cluster(cluster: Cluster) -> Iterator[Cluster]:
    """The module's cluster, healed before and after the test (also when it failed)."""
    cluster.heal()
    try:
        yield cluster
    finally:
        cluster.heal()
