"""Fixtures of the compatibility matrix: one real server per kind, results recorded as JSON.

Every test in this directory takes the session-scoped ``target`` fixture, parametrized over
``SERVER_KINDS``: moto, nanio and SeaweedFS run through :class:`s3kit.testing.S3Server`;
Ceph RGW (one monitor, one memstore OSD, two gateways) through ``scripts/ceph-up.sh`` when
``radosgw`` is installed. A kind that cannot run here is skipped with the reason.

Each test's outcome is recorded as one row ``(server, transport, feature, outcome, note)``
by :func:`pytest_runtest_makereport`; at the end of the session the rows are written as JSON
(to ``$S3KIT_MATRIX_JSON`` when set, else ``<pytest basetemp>/compatibility.json``) and a
summary is printed. ``tests/matrix/report.py`` turns them into docs/compatibility.md.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.handlers
import pytest

import s3kit
from s3kit import Endpoint
from s3kit.testing import S3Server, unavailable_reason

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

ROOT = Path(__file__).resolve().parents[2]
CEPH_UP = ROOT / "scripts" / "ceph-up.sh"
CEPH_DOWN = ROOT / "scripts" / "ceph-down.sh"

SERVER_KINDS = ("moto", "nanio", "seaweedfs", "ceph")
HEAVY_KINDS = ("seaweedfs", "ceph")
TRANSPORTS = ("boto3", "obstore")
BUCKET = "matrix"
ACCESS_KEY = "matrix-access"
SECRET_KEY = "matrix-secret-0123456789"

# What each feature test is called in the table (test function name -> label).
FEATURES = {
    "test_put_get_head_delete": "put / get / head / delete",
    "test_copy": "copy (same bucket)",
    "test_copy_etag": "copy result's ETag = the source's (quoted)",
    "test_list_prefix_delimiter": "list with prefix and delimiter",
    "test_list_after_delete": "'/'-delimited list after deleting a folder's last object",
    "test_pagination_over_1000_keys": "list > 1000 keys (1100, paginated)",
    "test_multipart_64mib": "multipart upload_file 64 MiB + download, byte-identical",
    "test_upload_file_etag": "multipart upload_file result's ETag = HEAD's",
    "test_range_get": "range GET",
    "test_conditional_get": "conditional GET (If-Match → 412, If-None-Match → 304)",
    "test_presigned_get_urllib": "presigned GET with plain HTTP (urllib)",
    "test_presigned_put_urllib": "presigned PUT and HEAD with plain HTTP (urllib)",
    "test_wrong_credentials": "wrong secret / unknown key → AccessDenied, bad credentials",
    "test_odd_keys": "key roundtrip",
    "test_failover": "2-endpoint Multiplexer failover (kill one)",
    "test_guide_compat": "guide: s3_kit + create_s3_endpoint_handler + handler(...)",
    "test_restart_keeps_data": "data survives a server restart",
}

_ROWS = pytest.StashKey[list[dict[str, Any]]]()
_OUT = pytest.StashKey[Path]()
_STARTS = pytest.StashKey[dict[str, float]]()


# ----------------------------------------------------------------------------- Ceph RGW
def ceph_unavailable() -> str | None:
    """Why the Ceph RGW target cannot run here, or None."""
    missing = [
        b for b in ("radosgw", "ceph-mon", "ceph-osd", "radosgw-admin") if not shutil.which(b)
    ]
    if missing:
        return (
            f"Ceph RGW is not installed ({', '.join(missing)} not on PATH): "
            "apt-get install radosgw ceph-mon ceph-osd ceph-common, or make ceph"
        )
    if not CEPH_UP.exists():
        return f"{CEPH_UP.relative_to(ROOT)} is missing"
    return None


class CephCluster:
    """One monitor + one memstore OSD + two RGW gateways, via scripts/ceph-up.sh.

    ``ceph-up.sh DIR`` prints ``KEY=VALUE`` lines (``RGW0_URL``, ``RGW1_URL``, ``ACCESS_KEY``,
    ``SECRET_KEY``, ``RGW0_PID``, ``RGW1_PID``); ``ceph-up.sh --rgw N DIR`` starts gateway N
    again; ``ceph-down.sh DIR`` stops every daemon it started and removes DIR.
    """

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="s3kit-ceph-")
        self.info: dict[str, str] = {}

    def _run(self, *args: str, timeout: float = 120) -> dict[str, str]:
        proc = subprocess.run(
            ["bash", str(CEPH_UP), *args, self.dir],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            # ceph-up.sh's watcher stops the cluster if this process dies without cleaning up.
            env={**os.environ, "S3KIT_CEPH_WATCH_PID": str(os.getpid())},
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"ceph-up.sh failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                f"{proc.stderr[-3000:]}"
            )
        info = {}
        for line in proc.stdout.splitlines():
            name, sep, value = line.partition("=")
            if sep and name.isupper():
                info[name] = value
        return info

    def start(self) -> CephCluster:
        self.info = self._run()
        return self

    @property
    def urls(self) -> list[str]:
        return [self.info["RGW0_URL"], self.info["RGW1_URL"]]

    def gateway_pid(self, index: int) -> int:
        return int(self.info[f"RGW{index}_PID"])

    def kill_gateway(self, index: int) -> None:
        """SIGKILL gateway ``index`` (a pid ceph-up.sh started and reported)."""
        pid = self.gateway_pid(index)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def start_gateway(self, index: int) -> None:
        self.info.update(self._run("--rgw", str(index)))

    def stop(self) -> None:
        if os.path.isdir(self.dir):
            subprocess.run(
                ["bash", str(CEPH_DOWN), self.dir], capture_output=True, timeout=60, check=False
            )
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- targets
@dataclass
class Target:
    """One server kind under test: its URLs (two for Ceph: two gateways of one cluster)."""

    kind: str
    urls: list[str]
    access_key: str
    secret_key: str
    checks_signatures: bool
    persistent: bool
    servers: list[S3Server] = field(default_factory=list)
    ceph: CephCluster | None = None
    bucket: str = BUCKET
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.urls[0]

    def handler(
        self,
        transport: str,
        *,
        url: str | None = None,
        secret_key: str | None = None,
        access_key: str | None = None,
        **options: Any,
    ) -> Endpoint:
        """An s3kit handler for this server (the guide's entry point), on ``transport``."""
        options.setdefault("retries", 1)
        options.setdefault("backoff_base_s", 0.01)
        options.setdefault("connect_timeout", 2.0)
        options.setdefault("read_timeout", 30.0)
        kit = s3kit.s3_kit(
            metadata={"s3cfg": {"accessKey": self.access_key, "secretKey": self.secret_key}}
        )
        return kit.create_s3_endpoint_handler(
            url or self.url,
            access_key,
            secret_key,
            transport=transport,
            name=f"{self.kind}-{transport}",
            **options,
        )

    def client(self, url: str | None = None) -> Any:
        """A raw boto3 client (for seeding data, bypassing s3kit)."""
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=url or self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=botocore.config.Config(
                s3={"addressing_style": "path"},
                retries={"total_max_attempts": 3},
                max_pool_connections=32,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        client.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)
        return client

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if self.ceph is not None:
            self.ceph.stop()


def unavailable(kind: str) -> str | None:
    if kind == "ceph":
        return ceph_unavailable()
    return unavailable_reason(kind)


def start_target(kind: str) -> Target:
    if kind == "ceph":
        cluster = CephCluster()
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        target = Target(
            kind,
            cluster.urls,
            cluster.info["ACCESS_KEY"],
            cluster.info["SECRET_KEY"],
            checks_signatures=True,
            persistent=True,
            ceph=cluster,
        )
        target.client().create_bucket(Bucket=BUCKET)
        return target
    server = S3Server(kind, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    try:
        server.start(timeout=60)
        server.create_bucket(BUCKET)
    except BaseException:
        server.stop()
        raise
    return Target(
        kind,
        [server.url],
        ACCESS_KEY,
        SECRET_KEY,
        checks_signatures=kind != "moto",
        persistent=kind != "moto",
        servers=[server],
    )


# moto and nanio run in `make test`; the slower servers only in `make test-matrix` (-m matrix).
_PARAMS = [
    pytest.param(kind, marks=pytest.mark.matrix) if kind in HEAVY_KINDS else kind
    for kind in SERVER_KINDS
]


@pytest.fixture(scope="session", params=_PARAMS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """A running server of each kind in turn, with bucket ``matrix`` (skipped if unavailable)."""
    kind: str = request.param
    reason = unavailable(kind)
    if reason is not None:
        pytest.skip(reason)
    t0 = time.monotonic()
    started = start_target(kind)
    request.config.stash[_STARTS][kind] = time.monotonic() - t0
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def handler(target: Target, transport: str) -> Iterator[Endpoint]:
    h = target.handler(transport)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def note(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``note(text)``: a remark for this test's cell in the compatibility table."""

    def add(text: str) -> None:
        request.node.user_properties.append(("note", text))

    return add


def unique(name: str = "") -> str:
    return f"m/{uuid.uuid4().hex[:10]}/{name}"


# ----------------------------------------------------------------------------- recording
def pytest_configure(config: pytest.Config) -> None:
    config.stash[_ROWS] = []
    config.stash[_STARTS] = {}
    config.addinivalue_line(
        "markers",
        "matrix: SeaweedFS and Ceph RGW cells of the compatibility matrix (make test-matrix)",
    )


@pytest.fixture(scope="session", autouse=True)
def _matrix_output(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = os.environ.get("S3KIT_MATRIX_JSON")
    path = Path(env) if env else tmp_path_factory.getbasetemp() / "compatibility.json"
    request.config.stash[_OUT] = path


def _summary(text: str, limit: int = 240) -> str:
    line = " ".join(text.strip().split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _failure_note(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return _summary(str(crash.message))
    return _summary(str(report.longrepr).strip().splitlines()[-1] if report.longrepr else "")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    if callspec is None or "target" not in callspec.params:
        return
    fn_name = getattr(item, "originalname", item.name)
    if fn_name not in FEATURES:
        return
    row: dict[str, Any] | None = None
    if report.when == "setup" and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        row = {"outcome": "skip", "note": _summary(reason.removeprefix("Skipped: "))}
    elif report.when == "setup" and report.failed:
        row = {"outcome": "fail", "note": "setup: " + _failure_note(report)}
    elif report.when == "call":
        if hasattr(report, "wasxfail"):
            if report.skipped:
                row = {"outcome": "xfail", "note": _summary(report.wasxfail)}
            else:  # a strict xfail that passed is reported as failed
                row = {"outcome": "fail", "note": "unexpectedly passed: " + report.wasxfail}
        elif report.skipped:
            reason = (
                report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            )
            row = {"outcome": "skip", "note": _summary(reason.removeprefix("Skipped: "))}
        elif report.failed:
            row = {"outcome": "fail", "note": _failure_note(report)}
        else:
            notes = [str(v) for k, v in item.user_properties if k == "note"]
            row = {"outcome": "pass", "note": _summary("; ".join(notes))}
    if row is None:
        return
    feature = FEATURES[fn_name]
    variant = callspec.params.get("variant")
    if variant is not None:
        feature = f"{feature}: {variant}"
    row.update(
        {
            "server": callspec.params["target"],
            "transport": callspec.params.get("transport", "-"),
            "feature": feature,
            "test": item.nodeid,
            "seconds": round(report.duration, 2),
        }
    )
    item.config.stash[_ROWS].append(row)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    rows = session.config.stash.get(_ROWS, [])
    path = session.config.stash.get(_OUT, None)
    if not rows or path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    starts = session.config.stash.get(_STARTS, {})
    payload = {"rows": rows, "server_start_seconds": {k: round(v, 2) for k, v in starts.items()}}
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    tr = terminalreporter
    tr.section("compatibility matrix")
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        per = counts.setdefault(row["server"], {})
        per[row["outcome"]] = per.get(row["outcome"], 0) + 1
    for server, per in counts.items():
        tr.write_line(f"{server:<10} " + ", ".join(f"{n} {o}" for o, n in sorted(per.items())))
    for row in rows:
        if row["outcome"] in ("fail", "xfail"):
            tr.write_line(
                f"  {row['outcome']:<5} {row['server']}/{row['transport']} {row['feature']}: "
                f"{row['note']}"
            )
    path = config.stash.get(_OUT, None)
    if path is not None:
        tr.write_line(f"rows written to {path}")


__all__ = [
    "BUCKET",
    "FEATURES",
    "TRANSPORTS",
    "CephCluster",
    "Target",
    "start_target",
    "unique",
]
