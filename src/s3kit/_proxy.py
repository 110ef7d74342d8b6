"""A TCP fault-injection proxy for tests: put it between a client and a local S3 server.

:class:`FaultProxy` listens on ``127.0.0.1`` and forwards to ``127.0.0.1:<upstream_port>``
(for instance an :class:`s3kit.testing.S3Server`). It understands just enough HTTP/1.1 to
find request and response boundaries on keep-alive connections, so faults are decided *per
request*; everything else is streamed through in chunks (no body is ever buffered whole).

Modes (:meth:`FaultProxy.set_mode`, thread-safe, effective for requests that arrive after it):

``pass``
    Forward both ways.
``latency`` (``delay_s``, ``fraction``)
    Hold the response of a ``fraction`` of requests for ``delay_s`` seconds.
``slow`` (``bytes_per_s``)
    Throttle the response bandwidth.
``blackhole``
    Accept connections and requests, never answer (until the client gives up or the proxy stops).
``reset`` (``after_bytes=100``)
    Forward the request, then reset the connection (RST) after ``after_bytes`` bytes of the
    response (status line and headers included). Shorter responses pass.
``truncate`` (``after_bytes``; default half the Content-Length, or 100 without one)
    Forward the response headers intact, cut the body after ``after_bytes`` bytes and close the
    connection cleanly (FIN): the client sees a short body. Shorter bodies pass.
``refuse``
    Close the listening socket (connects get ECONNREFUSED) and close idle client connections;
    the port stays reserved and any other mode re-opens it.
``error`` (``status=503``, ``code``, ``message``, ``html=False``, ``fraction``)
    Answer without contacting upstream: an S3 XML error (``SlowDown`` for 503, ``InternalError``
    for 500) with keep-alive, or with ``html=True`` a ``text/html`` page like a broken load
    balancer's. HEAD answers carry no body (but the Content-Length it would have).

Every per-request mode also takes ``fraction`` (0..1, the share of requests that get the
fault, drawn from ``random.Random(seed)``) and ``count`` (fault the next ``count`` requests,
then switch back to ``pass`` by itself). :attr:`FaultProxy.stats` counts connections, requests
and injected faults per mode, and keeps the request line and headers of recent requests.

The proxy is bounded: it stops by itself after ``max_lifetime_s`` (default 600 s), accepts at
most ``max_connections`` concurrent connections (others are closed at once), and runs its own
asyncio event loop in a daemon thread. Stop it with :meth:`FaultProxy.stop` (idempotent) or
use it as a context manager::

    with S3Server("moto") as server, FaultProxy(server.port) as proxy:
        client = make_client(proxy.url)
        proxy.set_mode("error", status=503)       # every request gets 503 SlowDown
        proxy.set_mode("truncate", count=1)       # the next response body is cut short
        proxy.set_mode("pass")

Only loopback is ever used: the proxy listens on and connects to ``127.0.0.1``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import email.utils
import random
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = ["MODES", "FaultProxy"]

MODES = ("pass", "latency", "slow", "blackhole", "reset", "truncate", "refuse", "error")
FAULT_MODES = tuple(m for m in MODES if m != "pass")

_LOOPBACK = "127.0.0.1"
_CHUNK = 256 * 1024  # bytes moved per read when streaming a body
_READER_LIMIT = 1024 * 1024  # StreamReader buffer limit, hence also the largest header block
_BACKLOG = 128
_STOP_WAIT = 5.0
_PER_REQUEST = ("fraction", "count")
_PARAMS: dict[str, frozenset[str]] = {
    "pass": frozenset(),
    "refuse": frozenset(),
    "latency": frozenset({"delay_s", *_PER_REQUEST}),
    "slow": frozenset({"bytes_per_s", *_PER_REQUEST}),
    "blackhole": frozenset(_PER_REQUEST),
    "reset": frozenset({"after_bytes", *_PER_REQUEST}),
    "truncate": frozenset({"after_bytes", *_PER_REQUEST}),
    "error": frozenset({"status", "code", "message", "html", *_PER_REQUEST}),
}
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection"})
_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Slow Down",
    504: "Gateway Timeout",
}
_S3_CODES = {
    429: ("TooManyRequests", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}


class _ProtocolError(Exception):
    """The byte stream is not HTTP/1.1 we understand, or ended mid-message."""


class _Cut(Exception):
    """A fault ended the client connection in the middle of a response."""


@dataclass(frozen=True)
class _Fault:
    mode: str
    delay_s: float = 0.0
    bytes_per_s: float = 0.0
    after_bytes: int | None = None
    status: int = 503
    code: str = "SlowDown"
    message: str = ""
    html: bool = False


# Body framing: ("none", 0), ("length", n), ("chunked", 0) or ("eof", 0).
_Framing = tuple[str, int]


@dataclass
class _Head:
    raw: bytes
    start: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name]
        return ", ".join(values) if values else None

    def tokens(self, name: str) -> set[str]:
        value = self.get(name) or ""
        return {t.strip().lower() for t in value.split(",") if t.strip()}


def _parse_head(raw: bytes) -> _Head:
    lines = raw.decode("latin-1").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise _ProtocolError(f"bad header line {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
    return _Head(raw, lines[0], headers)


def _content_length(head: _Head) -> int | None:
    value = head.get("content-length")
    if value is None:
        return None
    try:
        n = int(value.split(",")[0].strip())
    except ValueError:
        raise _ProtocolError(f"bad Content-Length {value!r}") from None
    if n < 0:
        raise _ProtocolError(f"bad Content-Length {value!r}")
    return n


def _request_framing(head: _Head) -> _Framing:
    if "chunked" in head.tokens("transfer-encoding"):
        return ("chunked", 0)
    n = _content_length(head)
    return ("length", n) if n else ("none", 0)


def _response_framing(head: _Head, status: int, method: str) -> _Framing:
    if method == "HEAD" or 100 <= status < 200 or status in (204, 304):
        return ("none", 0)
    if "chunked" in head.tokens("transfer-encoding"):
        return ("chunked", 0)
    n = _content_length(head)
    if n is None:
        return ("eof", 0)
    return ("length", n) if n else ("none", 0)


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """One request/response head, or None on a clean end of stream before its first byte."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise _ProtocolError("connection closed in the middle of a message head") from None
    except asyncio.LimitOverrunError:
        raise _ProtocolError("message head too large") from None


async def _copy_exact(
    reader: asyncio.StreamReader, n: int, emit: Callable[[bytes], Awaitable[None]]
) -> None:
    while n > 0:
        data = await reader.read(min(n, _CHUNK))
        if not data:
            raise _ProtocolError("connection closed in the middle of a body")
        n -= len(data)
        await emit(data)


async def _copy_body(
    reader: asyncio.StreamReader, framing: _Framing, emit: Callable[[bytes], Awaitable[None]]
) -> None:
    """Stream one message body (framing bytes included) from ``reader`` to ``emit``."""
    kind, length = framing
    try:
        if kind == "length":
            await _copy_exact(reader, length, emit)
        elif kind == "chunked":
            while True:
                line = await reader.readuntil(b"\r\n")
                await emit(line)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _ProtocolError(f"bad chunk size line {line[:40]!r}") from None
                if size == 0:
                    while True:  # optional trailers, then the empty line
                        trailer = await reader.readuntil(b"\r\n")
                        await emit(trailer)
                        if trailer == b"\r\n":
                            return
                await _copy_exact(reader, size + 2, emit)
        elif kind == "eof":
            while data := await reader.read(_CHUNK):
                await emit(data)
    except asyncio.IncompleteReadError:
        raise _ProtocolError("connection closed in the middle of a body") from None
    except asyncio.LimitOverrunError:
        raise _ProtocolError("chunk header too large") from None


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so the peer gets a RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _error_response(fault: _Fault, method: str, close: bool) -> bytes:
    status = fault.status
    if fault.html:
        reason = "Service Temporarily Unavailable" if status == 503 else _REASONS.get(status, "")
        title = f"{status} {reason}".strip()
        body = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        ).encode()
        ctype = "text/html"
        extra = "Server: nginx\r\n"
    else:
        reason = _REASONS.get(status, "Error")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{fault.code}</Code><Message>{fault.message}</Message>"
            "<RequestId>proxy</RequestId></Error>"
        ).encode()
        ctype = "application/xml"
        extra = "x-amz-request-id: proxy\r\nServer: s3kit-fault-proxy\r\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
        f"{extra}"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n"
        "\r\n"
    ).encode()
    return head if method == "HEAD" else head + body


class _Sink:
    """Writes one response to the client, applying a slow/reset/truncate fault on the way."""

    def __init__(self, writer: asyncio.StreamWriter, fault: _Fault | None) -> None:
        self.writer = writer
        self.mode = fault.mode if fault is not None else "pass"
        self.rate = fault.bytes_per_s if fault is not None and self.mode == "slow" else 0.0
        self.after = fault.after_bytes if fault is not None else None
        self.sent = 0  # response bytes, head included
        self.body_sent = 0
        self.body_limit: int | None = None  # truncate: body bytes allowed through
        self._t0: float | None = None
        self._throttled = 0

    def set_body_length(self, length: int | None) -> None:
        if self.mode == "truncate":
            if self.after is not None:
                self.body_limit = self.after
            else:
                self.body_limit = length // 2 if length is not None else 100

    async def head(self, data: bytes) -> None:
        await self._write(data, body=False)

    async def body(self, data: bytes) -> None:
        await self._write(data, body=True)

    async def _write(self, data: bytes, *, body: bool) -> None:
        cut = False
        if self.mode == "reset":
            limit = 100 if self.after is None else self.after
            if self.sent + len(data) > limit:
                data, cut = data[: max(0, limit - self.sent)], True
        elif (
            self.mode == "truncate"
            and body
            and self.body_limit is not None
            and self.body_sent + len(data) > self.body_limit
        ):
            data, cut = data[: max(0, self.body_limit - self.body_sent)], True
        if data:
            if self.rate > 0:
                await self._throttle(data)
            else:
                self.writer.write(data)
                await self.writer.drain()
            self.sent += len(data)
            if body:
                self.body_sent += len(data)
        if cut:
            await self._cut()

    async def _throttle(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        piece = max(1, int(self.rate / 20))
        view = memoryview(data)
        for i in range(0, len(view), piece):
            if self._t0 is None:
                self._t0 = loop.time()
            delay = self._t0 + self._throttled / self.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = view[i : i + piece]
            self.writer.write(chunk)
            await self.writer.drain()
            self._throttled += len(chunk)

    async def _cut(self) -> None:
        writer = self.writer
        # Let what was allowed through reach the kernel before ending the connection.
        for _ in range(100):
            if writer.transport.is_closing() or not writer.transport.get_write_buffer_size():
                break
            await asyncio.sleep(0.01)
        if self.mode == "reset":
            _abort_with_rst(writer)
        else:
            writer.close()  # a FIN after the buffered bytes
        raise _Cut


class _Conn:
    """One client connection and the upstream connection currently paired with it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.up_reader: asyncio.StreamReader | None = None
        self.up_writer: asyncio.StreamWriter | None = None
        self.idle = True

    def close_upstream(self) -> None:
        if self.up_writer is not None:
            self.up_writer.transport.abort()
        self.up_reader = self.up_writer = None

    def close(self, *, rst: bool = False) -> None:
        self.close_upstream()
        if rst:
            _abort_with_rst(self.writer)
        else:
            self.writer.close()


class FaultProxy:
    """A loopback TCP proxy in front of ``127.0.0.1:upstream_port`` that injects faults.

    ``port=0`` picks a free port at :meth:`start`. ``seed`` seeds the draws for ``fraction``.
    See the module documentation for the modes.
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        host: str = _LOOPBACK,
        port: int = 0,
        max_lifetime_s: float = 600.0,
        seed: int | None = None,
        max_connections: int = 128,
        record_requests: int = 100,
    ) -> None:
        if host != _LOOPBACK:
            raise ValueError(f"FaultProxy only listens on {_LOOPBACK}, not {host!r}")
        if not 0 < upstream_port < 65536:
            raise ValueError(f"bad upstream_port {upstream_port!r}")
        if not 0 <= port < 65536:
            raise ValueError(f"bad port {port!r}")
        if not max_lifetime_s > 0:
            raise ValueError("max_lifetime_s must be > 0")
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.host = host
        self.upstream_port = upstream_port
        self.max_lifetime_s = float(max_lifetime_s)
        self.max_connections = max_connections
        self._requested_port = port
        self._port = port
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # mode and counters
        self._op_lock = threading.Lock()  # start/stop/listener changes
        self._mode = "pass"
        self._fault = _Fault("pass")
        self._fraction = 1.0
        self._remaining: int | None = None
        self._connections = 0
        self._rejected = 0
        self._requests = 0
        self._faults = dict.fromkeys(FAULT_MODES, 0)
        self._recent: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=max(0, record_requests)
        )
        # Owned by the event-loop thread once started:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._listening = False
        self._stopping = False
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False

    # ------------------------------------------------------------------ properties
    @property
    def port(self) -> int:
        """The listening port (known once started, or when given to the constructor)."""
        if not self._port:
            raise RuntimeError("FaultProxy has no port before start() when port=0")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def upstream_url(self) -> str:
        return f"http://{_LOOPBACK}:{self.upstream_port}"

    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode

    @property
    def running(self) -> bool:
        """True while the proxy's thread runs (it may be in ``refuse`` mode)."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopping

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot: connections, requests, faults_injected per mode, recent_requests."""
        with self._lock:
            return {
                "mode": self._mode,
                "connections": self._connections,
                "active_connections": len(self._conns),
                "rejected_connections": self._rejected,
                "requests": self._requests,
                "faults_injected": dict(self._faults),
                "recent_requests": [{**r, "headers": dict(r["headers"])} for r in self._recent],
            }

    def __repr__(self) -> str:
        port = self._port or "?"
        return (
            f"<FaultProxy 127.0.0.1:{port} -> {self.upstream_url} mode={self._mode!r} "
            f"{'running' if self.running else 'stopped'}>"
        )

    # ------------------------------------------------------------------- lifecycle
    def start(self) -> FaultProxy:
        """Bind, start the event-loop thread and listen (unless in ``refuse`` mode)."""
        with self._op_lock:
            if self._started:
                if self.running:
                    return self
                raise RuntimeError("a stopped FaultProxy cannot be restarted; make a new one")
            self._started = True
            self._sock = self._bind(self._requested_port)
            self._port = int(self._sock.getsockname()[1])
            loop = asyncio.new_event_loop()
            self._loop = loop
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._thread = threading.Thread(
                target=self._run, args=(loop, ready), name=f"FaultProxy-{self._port}", daemon=True
            )
            self._thread.start()
        try:
            ready.result(timeout=_STOP_WAIT)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop listening, close every connection and end the thread. Idempotent."""
        with self._op_lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            if thread is not threading.current_thread():
                with contextlib.suppress(RuntimeError):  # the loop already closed
                    loop.call_soon_threadsafe(self._begin_shutdown)
                thread.join(_STOP_WAIT)
            else:
                self._begin_shutdown()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @staticmethod
    def _bind(port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((_LOOPBACK, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _run(self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[None]) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                self._sync_listener()
                loop.call_later(self.max_lifetime_s, self._begin_shutdown)
            except BaseException as exc:
                ready.set_exception(exc)
                self._begin_shutdown()
            else:
                ready.set_result(None)
            loop.run_forever()
        finally:
            self._stopping = True
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                self._close_listener(reserve=False)
                for conn in list(self._conns):
                    with contextlib.suppress(Exception):
                        conn.close(rst=True)
                loop.close()

    def _begin_shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._close_listener(reserve=False)
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                conn.close(rst=True)
        for task in list(self._tasks):
            task.cancel()
        loop = self._loop
        assert loop is not None

        async def _finish() -> None:
            tasks = [t for t in self._tasks if not t.done()]
            if tasks:
                await asyncio.wait(tasks, timeout=_STOP_WAIT)
            loop.stop()

        loop.create_task(_finish())

    # -------------------------------------------------------------------- listener
    def _sync_listener(self) -> None:
        """In the loop thread: listen unless in refuse mode, else keep the port reserved."""
        if self._stopping:
            return
        want = self.mode != "refuse"
        if want and not self._listening:
            if self._sock is None:
                self._sock = self._bind(self._port)
            self._sock.listen(_BACKLOG)
            assert self._loop is not None
            self._loop.add_reader(self._sock.fileno(), self._on_accept_ready)
            self._listening = True
        elif not want and self._listening:
            self._close_listener(reserve=True)
            for conn in list(self._conns):
                if conn.idle:
                    conn.close()

    def _close_listener(self, *, reserve: bool) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._listening and self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(sock.fileno())
            sock.close()
        self._listening = False
        if reserve:
            # Bound but not listening: the kernel answers SYNs with RST (ECONNREFUSED), and
            # nobody else can listen on the port meanwhile.
            self._sock = self._bind(self._port)

    def _on_accept_ready(self) -> None:
        sock = self._sock
        for _ in range(64):
            if sock is None or not self._listening:
                return
            try:
                client, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            with self._lock:
                full = len(self._tasks) >= self.max_connections
                if full:
                    self._rejected += 1
                else:
                    self._connections += 1
            if full or self._stopping:
                with contextlib.suppress(OSError):
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            client.setblocking(False)
            self._spawn(self._serve(client))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task: asyncio.Task[None] = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _in_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the loop thread and wait for it (no-op when not running)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        if thread is threading.current_thread():
            fn()
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def call() -> None:
            try:
                fn()
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        try:
            loop.call_soon_threadsafe(call)
        except RuntimeError:
            return  # the loop closed meanwhile
        deadline = time.monotonic() + _STOP_WAIT
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                done.result(timeout=0.05)
                return
            except concurrent.futures.TimeoutError:
                continue
        if thread.is_alive() and not done.done():
            raise RuntimeError("FaultProxy event loop did not answer")

    # ------------------------------------------------------------------------ modes
    def set_mode(self, mode: str, **params: Any) -> None:
        """Switch mode; see the module documentation for each mode's parameters.

        Takes effect for requests (and connections) that arrive afterwards. ``fraction`` and
        ``count`` apply to every per-request mode.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        unknown = set(params) - _PARAMS[mode]
        if unknown:
            raise ValueError(
                f"mode {mode!r} takes {sorted(_PARAMS[mode]) or 'no parameters'}, "
                f"not {sorted(unknown)}"
            )
        fraction = float(params.get("fraction", 1.0))
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be within 0..1")
        count = params.get("count")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError("count must be a positive int or None")
        fault = self._make_fault(mode, params)
        with self._op_lock:
            with self._lock:
                self._mode = mode
                self._fault = fault
                self._fraction = fraction
                self._remaining = count
            self._in_loop(self._sync_listener)

    @staticmethod
    def _make_fault(mode: str, params: dict[str, Any]) -> _Fault:
        if mode == "latency":
            delay = float(params.get("delay_s", 1.0))
            if delay < 0:
                raise ValueError("delay_s must be >= 0")
            return _Fault(mode, delay_s=delay)
        if mode == "slow":
            rate = float(params.get("bytes_per_s", 100_000))
            if not rate > 0:
                raise ValueError("bytes_per_s must be > 0")
            return _Fault(mode, bytes_per_s=rate)
        if mode in ("reset", "truncate"):
            after = params.get("after_bytes", 100 if mode == "reset" else None)
            if after is not None and (not isinstance(after, int) or after < 0):
                raise ValueError("after_bytes must be an int >= 0")
            return _Fault(mode, after_bytes=after)
        if mode == "error":
            status = int(params.get("status", 503))
            if not 400 <= status <= 599:
                raise ValueError("status must be an HTTP error status (400-599)")
            default_code, default_message = _S3_CODES.get(
                status, ("ServiceUnavailable", "Please try again.")
            )
            code = str(params.get("code", default_code))
            message = str(params.get("message", default_message))
            for text in (code, message):
                if any(c in text for c in "<>&\r\n"):
                    raise ValueError("code and message must not contain <, >, & or newlines")
            return _Fault(
                mode,
                status=status,
                code=code,
                message=message,
                html=bool(params.get("html", False)),
            )
        return _Fault(mode)

    def _decide(self, method: str, target: str, version: str, head: _Head) -> _Fault | None:
        record: dict[str, Any] = {
            "method": method,
            "target": target,
            "version": version,
            "headers": {},
            "time": time.time(),
        }
        for name, value in head.headers:
            key = name.lower()
            prev = record["headers"].get(key)
            record["headers"][key] = value if prev is None else f"{prev}, {value}"
        with self._lock:
            self._requests += 1
            fault: _Fault | None = None
            if self._mode != "pass" and (
                self._fraction >= 1.0 or self._rng.random() < self._fraction
            ):
                fault = self._fault
                self._faults[fault.mode] += 1
                if self._remaining is not None:
                    self._remaining -= 1
                    if self._remaining <= 0:
                        self._mode, self._fault = "pass", _Fault("pass")
                        self._fraction, self._remaining = 1.0, None
            record["fault"] = fault.mode if fault is not None else "pass"
            self._recent.append(record)
        return fault

    # ------------------------------------------------------------------ connections
    async def _serve(self, client: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=client, limit=_READER_LIMIT)
        except OSError:
            client.close()
            return
        conn = _Conn(reader, writer)
        with self._lock:
            self._conns.add(conn)
        try:
            keep = True
            while keep and not self._stopping:
                conn.idle = True
                raw = await _read_head(reader)
                conn.idle = False
                if raw is None:
                    break
                keep = await self._handle(conn, _parse_head(raw))
        except (_Cut, _ProtocolError, ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    async def _handle(self, conn: _Conn, req: _Head) -> bool:
        """Serve one request. Returns whether the client connection stays open."""
        parts = req.start.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _ProtocolError(f"bad request line {req.start[:80]!r}")
        method, target, version = parts
        framing = _request_framing(req)
        expect = "100-continue" in req.tokens("expect")
        keep_alive = version == "HTTP/1.1" and "close" not in req.tokens("connection")
        fault = self._decide(method, target, version, req)
        mode = fault.mode if fault is not None else "pass"
        if mode == "refuse":  # a request on a connection made before refuse mode began
            conn.close(rst=True)
            return False
        if mode == "blackhole":
            conn.close_upstream()
            while await conn.reader.read(_CHUNK):
                pass
            return False
        if mode == "error":
            assert fault is not None
            close = not keep_alive or (expect and framing[0] != "none")
            if not close:
                await _copy_body(conn.reader, framing, _discard)
            conn.writer.write(_error_response(fault, method, close))
            await conn.writer.drain()
            return not close
        return await self._forward(conn, req, method, framing, expect, keep_alive, fault)

    async def _upstream(self, conn: _Conn) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if conn.up_reader is not None and conn.up_writer is not None:
            await asyncio.sleep(0)  # let a pending FIN from an idle upstream arrive
            if not conn.up_reader.at_eof() and not conn.up_writer.transport.is_closing():
                return conn.up_reader, conn.up_writer
            conn.close_upstream()
        reader, writer = await asyncio.open_connection(
            _LOOPBACK, self.upstream_port, limit=_READER_LIMIT
        )
        conn.up_reader, conn.up_writer = reader, writer
        return reader, writer

    async def _forward(
        self,
        conn: _Conn,
        req: _Head,
        method: str,
        framing: _Framing,
        expect: bool,
        keep_alive: bool,
        fault: _Fault | None,
    ) -> bool:
        # A kept-alive upstream connection may have been closed by the server just now: a
        # request without a body is then sent again once on a new connection.
        retry_ok = conn.up_writer is not None and framing[0] == "none"
        try:
            up_reader, up_writer = await self._upstream(conn)
        except OSError:
            conn.close(rst=True)  # upstream down: the client sees its connection reset
            return False

        async def to_upstream(data: bytes) -> None:
            up_writer.write(data)
            await up_writer.drain()

        up_writer.write(req.raw)
        body_task = asyncio.create_task(_copy_body(conn.reader, framing, to_upstream))
        body_task.add_done_callback(_retrieve)
        sink = _Sink(conn.writer, fault)
        try:
            if fault is not None and fault.mode == "latency":
                await asyncio.sleep(fault.delay_s)
            saw_continue = False
            while True:
                try:
                    raw = await _read_head(up_reader)
                except ConnectionError:
                    raw = None
                if raw is None:
                    if not (retry_ok and sink.sent == 0):
                        raise _ProtocolError("upstream closed before answering")
                    retry_ok = False
                    conn.close_upstream()
                    up_reader, up_writer = await self._upstream(conn)
                    up_writer.write(req.raw)
                    continue
                resp = _parse_head(raw)
                status_parts = resp.start.split(" ", 2)
                if len(status_parts) < 2 or not status_parts[0].startswith("HTTP/"):
                    raise _ProtocolError(f"bad status line {resp.start[:80]!r}")
                try:
                    status = int(status_parts[1])
                except ValueError:
                    raise _ProtocolError(f"bad status line {resp.start[:80]!r}") from None
                if 100 <= status < 200:
                    if status == 101:
                        raise _ProtocolError("protocol upgrades are not supported")
                    saw_continue = saw_continue or status == 100
                    await sink.head(raw)
                    continue
                break
            must_close = False
            if not body_task.done():
                if expect and not saw_continue:
                    must_close = True  # the client will not send the body it announced
                else:
                    await asyncio.wait({body_task}, timeout=1.0)
                    must_close = not body_task.done()
            if body_task.done() and (body_task.cancelled() or body_task.exception() is not None):
                must_close = True
            resp_framing = _response_framing(resp, status, method)
            up_close = (
                status_parts[0] != "HTTP/1.1"
                or "close" in resp.tokens("connection")
                or resp_framing[0] == "eof"
                or must_close
            )
            client_close = not keep_alive or must_close or resp_framing[0] == "eof"
            lines = [resp.start]
            lines += [f"{k}: {v}" for k, v in resp.headers if k.lower() not in _HOP_BY_HOP]
            if client_close:
                lines.append("Connection: close")
            await sink.head(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            sink.set_body_length(resp_framing[1] if resp_framing[0] == "length" else None)
            if resp_framing[0] == "none":
                sink.set_body_length(0)
            await _copy_body(up_reader, resp_framing, sink.body)
            if up_close:
                conn.close_upstream()
            return not client_close
        except BaseException:
            conn.close_upstream()
            raise
        finally:
            if not body_task.done():
                body_task.cancel()
                await asyncio.wait({body_task})


async def _discard(data: bytes) -> None:
    return None


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a task's exception as seen (the request side fails with the response side)."""
    if not task.cancelled():
        task.exception()
