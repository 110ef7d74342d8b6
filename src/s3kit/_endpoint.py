"""Endpoint: guards one S3 store with a limiter, a breaker, a retry policy and counters.

An :class:`Endpoint` is what ``create_s3_endpoint_handler`` returns: callable as
``handler(operation, **kwargs)`` (the guide's form) and with one method per operation.

Per call: admit through the breaker (no lock while closed), take a concurrency slot, run one
attempt unlocked, record the outcome under one short lock. A failed *leg* (this endpoint's
attempts within one call) counts once against the breaker, whatever the number of retries.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

from . import _extras, _ops
from ._breaker import PROBE, REJECT, CircuitBreaker
from ._clock import SYSTEM_CLOCK, Clock
from ._config import EndpointConfig
from ._errors import (
    CircuitOpenError,
    ConfigError,
    EndpointError,
    EndpointSaturated,
    InvalidArgument,
    ReadTimeout,
)
from ._events import (
    BreakerStateChanged,
    EndpointMisconfigured,
    EndpointSaturatedEvent,
    EventBus,
    RetryScheduled,
)
from ._limits import Limiter
from ._outcome import (
    ACCESS,
    BAD_CREDENTIALS,
    CLIENT,
    FAILURE,
    RETRYABLE,
    SUCCESS,
    THROTTLE,
    TRANSIENT,
    classify,
)
from ._retry import RetryBudget, backoff_delay
from ._stats import EndpointStats, LatencyWindow
from ._transport import Transport, make_transport
from ._validate import (
    check_body,
    check_bucket,
    check_callback,
    check_delete_keys,
    check_download_target,
    check_expiration,
    check_flag,
    check_key,
    check_max_keys,
    check_optional_str,
    check_page_size,
    check_readable,
    check_timeout,
    check_upload_source,
    check_writable,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from ._extras import ObjectIterator

__all__ = ["OPERATIONS", "Endpoint"]

OPERATIONS = (
    "upload_file",
    "download_file",
    "list_objects",
    "delete_object",
    "head_object",
    "create_presigned_url",
    "put_object",
    "get_object",
    "copy_object",
    "create_bucket",
    "delete_bucket",
    "list_buckets",
    "iter_objects",
    "upload_fileobj",
    "download_fileobj",
    "delete_objects",
)


class Endpoint:
    """One guarded S3 endpoint. Thread-safe; share one per store across all threads."""

    def __init__(
        self,
        config: EndpointConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        events: EventBus | None = None,
        transport: Transport | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.name = config.name
        self.url = config.endpoint_url
        self._clock = clock
        self._rng = rng
        self.events = events if events is not None else EventBus()
        self.transport: Transport = transport if transport is not None else make_transport(config)
        self.breaker = CircuitBreaker(
            config.circuit_breaker_threshold,
            config.breaker_open_s,
            config.breaker_max_open_s,
            clock=clock,
            rng=rng,
            on_transition=self._on_transition,
        )
        self.limiter = Limiter(config.max_concurrent, clock=clock)
        self._budget = RetryBudget(config.retry_budget, clock=clock)
        self._lock = threading.Lock()
        self._latency = LatencyWindow()
        self._by_op: dict[tuple[str, int], int] = {}  # (operation, outcome class) -> attempts
        self.requests = 0
        self.successes = 0
        self.client_errors = 0
        self.access_errors = 0
        self.throttles = 0
        self.endpoint_failures = 0
        self.retries = 0
        self.failovers_away = 0
        self.rejected_open = 0
        self.saturated = 0
        self.legs = 0  # calls that reached this endpoint (the guide's requests_per_endpoint)
        self.last_used = 0.0  # wall-clock time.time() of the latest leg
        self.misconfigured = False
        self.closed = False
        self.metadata: dict[str, Any] = {
            "name": config.name,
            "endpoint_url": config.endpoint_url,
            "region": config.region,
            "transport": config.transport,
            "max_concurrent": config.max_concurrent,
            "circuit_breaker_threshold": config.circuit_breaker_threshold,
            "retries": config.retries,
            "connect_timeout": config.connect_timeout,
            "read_timeout": config.read_timeout,
            "breaker_open_s": config.breaker_open_s,
        }

    # ------------------------------------------------------------------ dunder
    def __repr__(self) -> str:
        return (
            f"<Endpoint {self.name!r} url={self.url!r} state={self.breaker.state} "
            f"in_flight={self.limiter.in_flight}/{self.limiter.limit}>"
        )

    def __call__(self, operation: str, **kwargs: Any) -> Any:
        """The guide's form: ``handler("upload_file", file_path=..., bucket=..., key=...)``."""
        if operation not in OPERATIONS:
            raise ConfigError(
                f"unknown operation {operation!r}; valid operations: {', '.join(OPERATIONS)}"
            )
        method: Callable[..., Any] = getattr(self, operation)
        return method(**kwargs)

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def client(self) -> S3Client:
        """The underlying boto3 client (an escape hatch; it bypasses breaker and retries)."""
        client_fn = getattr(self.transport, "client", None)
        if client_fn is None:
            raise ConfigError(f"transport {self.transport.name!r} has no boto3 client")
        return client_fn()  # type: ignore[no-any-return]

    # ---------------------------------------------------------------- the core
    def _on_transition(self, old: str, new: str, retry_after: float) -> None:
        level = logging.WARNING if new == "open" else logging.INFO
        self.events.emit(BreakerStateChanged(self.name, old, new, retry_after), level)

    def run(
        self,
        op: _ops.Op,
        *,
        retries: int | None = None,
        wait: bool = True,
        deadline: float | None = None,
        allow_probe: bool = True,
    ) -> dict[str, Any]:
        """Run ``op`` on this endpoint with its breaker, limiter and retry policy (one leg).

        ``retries`` overrides the endpoint's own (a multiplexer's failover legs use 0);
        ``wait=False`` raises :class:`EndpointSaturated` at once when no slot is free;
        ``deadline`` is a monotonic time by which the call must end.
        """
        if self.closed:
            raise ConfigError(f"endpoint {self.name!r} is closed")
        clock = self._clock
        breaker = self.breaker
        verdict = breaker.admit(allow_probe=allow_probe)
        if verdict == REJECT:
            with self._lock:
                self.rejected_open += 1
            raise CircuitOpenError(
                endpoint=self.name, operation=op.name, retry_after=breaker.retry_after()
            )
        probe = verdict == PROBE
        max_retries = 0 if probe else (self.config.retries if retries is None else retries)
        limiter = self.limiter
        resolved = False
        attempt = 0
        previous: EndpointError | None = None
        try:
            while True:
                # ---- a concurrency slot: never held while sleeping in backoff
                if not limiter.try_acquire():
                    waited = 0.0
                    if wait:
                        waited = self.config.acquire_timeout
                        if deadline is not None:
                            waited = max(0.0, min(waited, deadline - clock.monotonic()))
                    if not (waited and limiter.acquire(waited)):
                        with self._lock:
                            self.saturated += 1
                        self.events.emit(
                            EndpointSaturatedEvent(self.name, op.name, limiter.limit),
                            logging.DEBUG,
                        )
                        raise EndpointSaturated(
                            endpoint=self.name,
                            operation=op.name,
                            waited=waited,
                            limit=limiter.limit,
                        )
                timeout: float | None = None
                t0 = clock.monotonic()
                if deadline is not None:
                    remaining = deadline - t0
                    if remaining <= 0:
                        limiter.release()
                        if previous is not None:
                            break
                        raise ReadTimeout(
                            f"deadline passed before {op.name} on {self.name} could start",
                            endpoint=self.name,
                            operation=op.name,
                            attempt_count=0,
                        )
                    # The attempt's budget: transports shorten their read timeout to it and
                    # check it between body chunks (a trickling server resets the read
                    # timeout on every byte).
                    timeout = remaining
                try:
                    result = op.attempt(self, timeout)
                except EndpointError as exc:
                    error: EndpointError | None = exc
                else:
                    error = None
                finally:
                    limiter.release()
                now = clock.monotonic()
                elapsed = now - t0
                if error is None:
                    with self._lock:
                        self.requests += 1
                        self.successes += 1
                        self._latency.add(elapsed, now)
                        by_op = self._by_op
                        by_op[op.name, SUCCESS] = by_op.get((op.name, SUCCESS), 0) + 1
                        self._budget.record_request(now)
                        self.misconfigured = False
                        if not attempt:
                            self.legs += 1
                            self.last_used = time.time()
                    limiter.on_success()
                    breaker.on_success(probe)
                    resolved = True
                    result["Endpoint"] = self.name
                    return result

                outcome = classify(error)
                self._count_failure(op.name, outcome, elapsed, attempt)
                if outcome == THROTTLE:
                    limiter.on_throttle()
                elif outcome == BAD_CREDENTIALS:
                    self._mark_misconfigured(op.name, error)
                error.attempt_count = attempt + 1
                error.previous = previous
                previous = error
                if outcome not in RETRYABLE or attempt >= max_retries:
                    break
                with self._lock:
                    allowed = self._budget.try_retry()
                if not allowed:
                    break
                delay = backoff_delay(
                    attempt,
                    self.config.backoff_base_s,
                    self.config.backoff_cap_s,
                    throttled=outcome == THROTTLE,
                    rng=self._rng,
                )
                if deadline is not None and clock.monotonic() + delay >= deadline:
                    break
                with self._lock:
                    self.retries += 1
                self.events.emit(
                    RetryScheduled(self.name, op.name, attempt + 1, delay, type(error).__name__),
                    logging.DEBUG,
                )
                clock.sleep(delay)
                attempt += 1
                if breaker.admit(allow_probe=False) == REJECT:
                    # Others opened the breaker while we slept: stop here.
                    self._finish_leg(outcome, probe)
                    resolved = True
                    with self._lock:
                        self.rejected_open += 1
                    raise CircuitOpenError(
                        endpoint=self.name, operation=op.name, retry_after=breaker.retry_after()
                    ) from error

            assert previous is not None
            self._finish_leg(classify(previous), probe)
            resolved = True
            raise previous
        finally:
            if probe and not resolved:
                breaker.release_probe()

    def _finish_leg(self, outcome: int, probe: bool) -> None:
        if outcome == FAILURE:
            self.breaker.on_failure(probe)
        elif outcome == THROTTLE:
            self.breaker.on_throttle(probe)
        else:
            self.breaker.on_neutral(probe)

    def _count_failure(self, operation: str, outcome: int, elapsed: float, attempt: int) -> None:
        with self._lock:
            self._by_op[operation, outcome] = self._by_op.get((operation, outcome), 0) + 1
            if not attempt:
                self.legs += 1
                self.last_used = time.time()
            self.requests += 1
            self._budget.record_request()
            self._latency.add(elapsed, self._clock.monotonic())
            if outcome == CLIENT:
                self.client_errors += 1
            elif outcome in (ACCESS, BAD_CREDENTIALS):
                self.access_errors += 1
            elif outcome == THROTTLE:
                self.throttles += 1
            elif outcome in (FAILURE, TRANSIENT):
                self.endpoint_failures += 1

    def _mark_misconfigured(self, operation: str, error: EndpointError) -> None:
        with self._lock:
            first = not self.misconfigured
            self.misconfigured = True
        if first:
            code = getattr(error, "code", type(error).__name__)
            self.events.emit(EndpointMisconfigured(self.name, operation, code), logging.ERROR)

    def note_selected(self) -> None:
        """Count a selection (the guide's ``get_endpoint``) in ``legs`` and ``last_used``."""
        with self._lock:
            self.legs += 1
            self.last_used = time.time()

    def note_failover(self) -> None:
        with self._lock:
            self.failovers_away += 1

    def _execute(self, op: _ops.Op, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else self._clock.monotonic() + timeout
        try:
            return self.run(op, deadline=deadline)
        finally:
            if op.cleanup is not None:
                op.cleanup()

    # -------------------------------------------------------------- operations
    def upload_file(
        self,
        file_path: str,
        bucket: str,
        key: str,
        extra_args: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        callback: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Upload a local file (multipart above 8 MiB). Returns Bucket, Key, ETag, Endpoint.

        ``callback(n)`` is called with byte counts as they are sent (negative when an attempt's
        bytes are given up), like boto3's ``Callback``.
        """
        path = check_upload_source(file_path)
        op = _ops.upload_file(
            path, check_bucket(bucket), check_key(key), extra_args, check_callback(callback)
        )
        return self._execute(op, check_timeout(timeout))

    def download_file(
        self,
        bucket: str,
        key: str,
        file_path: str,
        *,
        timeout: float | None = None,
        callback: Callable[[int], None] | None = None,
        fsync: bool = True,
    ) -> dict[str, Any]:
        """Download to ``file_path`` atomically: a temp file beside it, renamed when complete.

        ``callback(n)`` is called with byte counts as they arrive (negative when a download
        starts over), like boto3's ``Callback``; for large objects, fetched in parallel ranged
        parts, it is called from several threads. The file is fsynced before the rename, so
        it survives a crash once this returns; ``fsync=False`` skips that (a scratch copy
        gains the time the disk takes to write it).
        """
        path = check_download_target(file_path)
        t = check_timeout(timeout)
        deadline = None if t is None else self._clock.monotonic() + t
        op = _ops.download_file(
            check_bucket(bucket),
            check_key(key),
            path,
            deadline,
            check_callback(callback),
            check_flag(fsync, "fsync"),
        )
        return self._execute(op, t)

    def list_objects(
        self,
        bucket: str,
        prefix: str | None = None,
        max_keys: int | None = None,
        *,
        delimiter: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """ListObjectsV2 with every page merged (``Contents`` always present)."""
        op = _ops.list_objects(
            check_bucket(bucket),
            check_optional_str(prefix, "prefix"),
            check_max_keys(max_keys),
            check_optional_str(delimiter, "delimiter"),
        )
        return self._execute(op, check_timeout(timeout))

    def delete_object(
        self, bucket: str, key: str, *, timeout: float | None = None, **extra: Any
    ) -> dict[str, Any]:
        op = _ops.delete_object(check_bucket(bucket), check_key(key), extra or None)
        return self._execute(op, check_timeout(timeout))

    def head_object(
        self, bucket: str, key: str, *, timeout: float | None = None, **extra: Any
    ) -> dict[str, Any]:
        op = _ops.head_object(check_bucket(bucket), check_key(key), extra or None)
        return self._execute(op, check_timeout(timeout))

    def get_object(
        self,
        bucket: str,
        key: str,
        range: str | None = None,
        *,
        timeout: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """GET with the whole body read (as bytes) inside the retry and the concurrency slot."""
        op = _ops.get_object(
            check_bucket(bucket), check_key(key), check_optional_str(range, "range"), extra or None
        )
        return self._execute(op, check_timeout(timeout))

    def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes | str | BinaryIO,
        extra_args: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        op = _ops.put_object(check_bucket(bucket), check_key(key), check_body(body), extra_args)
        return self._execute(op, check_timeout(timeout))

    def copy_object(
        self,
        bucket: str,
        key: str,
        source_bucket: str,
        source_key: str,
        extra_args: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        op = _ops.copy_object(
            check_bucket(bucket),
            check_key(key),
            check_bucket(source_bucket),
            check_key(source_key, "source_key"),
            extra_args,
        )
        return self._execute(op, check_timeout(timeout))

    def create_bucket(self, bucket: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self._execute(_ops.create_bucket(check_bucket(bucket)), check_timeout(timeout))

    def delete_bucket(self, bucket: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self._execute(_ops.delete_bucket(check_bucket(bucket)), check_timeout(timeout))

    def list_buckets(self, *, timeout: float | None = None) -> dict[str, Any]:
        return self._execute(_ops.list_buckets(), check_timeout(timeout))

    # ------------------------------------------- extras (contract §12; see docs/extras.md)
    def iter_objects(
        self,
        bucket: str,
        prefix: str | None = None,
        *,
        delimiter: str | None = None,
        page_size: int = 1000,
        timeout: float | None = None,
    ) -> ObjectIterator:
        """A lazy listing: ``Contents`` dicts (and, with ``delimiter``, ``CommonPrefixes``
        dicts) in key order, fetched one page per request as the iteration goes.

        Each page is a call of its own (breaker, slot, retries); ``timeout`` bounds each page.
        """
        bucket = check_bucket(bucket)
        prefix = check_optional_str(prefix, "prefix")
        delimiter = check_optional_str(delimiter, "delimiter")
        size = check_page_size(page_size)
        t = check_timeout(timeout)
        return _extras.single(
            lambda op: self._execute(op, t), bucket, prefix or None, delimiter or None, size
        )

    def upload_fileobj(
        self,
        fileobj: BinaryIO,
        bucket: str,
        key: str,
        extra_args: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        callback: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Upload a binary file object from its current position, streamed (multipart above
        8 MiB). A seekable one is rewound for a retry; a non-seekable one is sent once."""
        op = _ops.upload_fileobj(
            check_readable(fileobj),
            check_bucket(bucket),
            check_key(key),
            extra_args,
            check_callback(callback),
        )
        return self._execute(op, check_timeout(timeout))

    def download_fileobj(
        self,
        bucket: str,
        key: str,
        fileobj: BinaryIO,
        *,
        timeout: float | None = None,
        callback: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Write the object into a binary file object, in order, in constant memory.

        A retry resumes with a Range request at the bytes already written, pinned to the
        first answer's ETag; if the object changed meanwhile, PreconditionFailed is raised.
        """
        t = check_timeout(timeout)
        deadline = None if t is None else self._clock.monotonic() + t
        op = _ops.download_fileobj(
            check_bucket(bucket),
            check_key(key),
            check_writable(fileobj),
            deadline,
            check_callback(callback),
        )
        return self._execute(op, t)

    def delete_objects(
        self,
        bucket: str,
        keys: Iterable[str | Mapping[str, str]],
        *,
        quiet: bool = False,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """DeleteObjects in batches of 1000 keys: ``{"Deleted", "Errors", "Endpoint"}``.

        ``keys`` are strs or ``{"Key": ..., "VersionId": ...}``; ``timeout`` bounds each batch.
        A batch that fails as a whole raises its error (the batches before it are done).
        """
        bucket = check_bucket(bucket)
        objects = check_delete_keys(keys)
        t = check_timeout(timeout)
        result = _extras.delete_batches(
            lambda op, _batch: self._execute(op, t), bucket, objects, quiet
        )
        result.pop("Endpoints", None)
        result["Endpoint"] = self.name
        return result

    def create_presigned_url(
        self, bucket: str, key: str, expiration: int = 3600, *, method: str = "GET"
    ) -> str:
        """A SigV4 presigned URL, signed locally (no network call, no breaker)."""
        bucket = check_bucket(bucket)
        key = check_key(key)
        expiration = check_expiration(expiration)
        if method not in ("GET", "PUT", "HEAD"):
            raise InvalidArgument("method", "must be 'GET', 'PUT' or 'HEAD'")
        return self.transport.presign(self.config.physical_bucket(bucket), key, expiration, method)

    # -------------------------------------------------------------- monitoring
    def stats(self) -> EndpointStats:
        with self._lock:
            p50, p95, p99 = self._latency.percentiles(0.5, 0.95, 0.99)
            return EndpointStats(
                name=self.name,
                url=self.url,
                state=self.breaker.state,
                requests=self.requests,
                in_flight=self.limiter.in_flight,
                successes=self.successes,
                client_errors=self.client_errors,
                access_errors=self.access_errors,
                throttles=self.throttles,
                endpoint_failures=self.endpoint_failures,
                retries=self.retries,
                failovers_away=self.failovers_away,
                rejected_open=self.rejected_open,
                saturated=self.saturated,
                concurrency_limit=self.limiter.limit,
                max_concurrent=self.config.max_concurrent,
                misconfigured=self.misconfigured,
                latency_ewma_ms=self._latency.ewma * 1000.0,
                p50_ms=p50 * 1000.0,
                p95_ms=p95 * 1000.0,
                p99_ms=p99 * 1000.0,
            )

    def metrics_snapshot(self) -> tuple[dict[tuple[str, int], int], list[int], float]:
        """Attempts by (operation, outcome class), and the latency histogram's bucket counts
        (see ``LATENCY_BUCKETS``) and sum of seconds: what the Prometheus collector exports."""
        with self._lock:
            return dict(self._by_op), list(self._latency.buckets), self._latency.total

    def latency_cost(self, now: float | None = None) -> float:
        """Latency in seconds for routing (a clipped EWMA), decayed while the endpoint is idle
        (``now``: this endpoint's clock's monotonic time, read once by a router)."""
        return self._latency.routing_cost(self._clock.monotonic() if now is None else now)

    @property
    def latency_ewma(self) -> float:
        """Seconds; 0 before the first answer."""
        return self._latency.ewma

    def close(self) -> None:
        """Release the connection pools. Further calls raise ConfigError."""
        self.closed = True
        self.transport.close()

    # ------------------------------------- the steps of run(), for the asyncio core
    # ``run`` inlines these on its hot path; the asyncio core (``_async_core``) awaits the
    # attempt, the slot and the backoff between them, so both keep the same books.
    def admit_leg(self, operation: str, allow_probe: bool = True) -> bool:
        """Ask the breaker for a leg; True when it is the half-open probe.

        Raises :class:`CircuitOpenError` (counted in ``rejected_open``) when it is open.
        """
        if self.closed:
            raise ConfigError(f"endpoint {self.name!r} is closed")
        verdict = self.breaker.admit(allow_probe=allow_probe)
        if verdict == REJECT:
            with self._lock:
                self.rejected_open += 1
            raise CircuitOpenError(
                endpoint=self.name, operation=operation, retry_after=self.breaker.retry_after()
            )
        return verdict == PROBE

    def leg_retries(self, probe: bool, retries: int | None) -> int:
        """The retries a leg may make: none for a probe, else ``retries`` or the endpoint's."""
        return 0 if probe else (self.config.retries if retries is None else retries)

    def slot_wait(self, wait: bool, deadline: float | None) -> float:
        """Seconds a leg may wait for a concurrency slot (0: fail at once)."""
        if not wait:
            return 0.0
        waited = self.config.acquire_timeout
        if deadline is not None:
            waited = max(0.0, min(waited, deadline - self._clock.monotonic()))
        return waited

    def saturated_error(self, operation: str, waited: float) -> EndpointSaturated:
        """Count and announce a leg that found no slot; returns the error to raise."""
        with self._lock:
            self.saturated += 1
        limit = self.limiter.limit
        self.events.emit(EndpointSaturatedEvent(self.name, operation, limit), logging.DEBUG)
        return EndpointSaturated(
            endpoint=self.name, operation=operation, waited=waited, limit=limit
        )

    def record_success(
        self, operation: str, t0: float, elapsed: float, attempt: int, probe: bool
    ) -> None:
        """Book a successful attempt (counters, latency, AIMD limit, breaker)."""
        with self._lock:
            self.requests += 1
            self.successes += 1
            self._latency.add(elapsed, t0 + elapsed)
            by_op = self._by_op
            by_op[operation, SUCCESS] = by_op.get((operation, SUCCESS), 0) + 1
            self._budget.record_request(t0 + elapsed)
            self.misconfigured = False
            if not attempt:
                self.legs += 1
                self.last_used = time.time()
        self.limiter.on_success()
        self.breaker.on_success(probe)

    def record_failure(
        self,
        operation: str,
        error: EndpointError,
        elapsed: float,
        attempt: int,
        previous: EndpointError | None,
    ) -> int:
        """Book a failed attempt; returns its outcome class. Chains ``previous`` onto it."""
        outcome = classify(error)
        self._count_failure(operation, outcome, elapsed, attempt)
        if outcome == THROTTLE:
            self.limiter.on_throttle()
        elif outcome == BAD_CREDENTIALS:
            self._mark_misconfigured(operation, error)
        error.attempt_count = attempt + 1
        error.previous = previous
        return outcome

    def retry_delay(
        self,
        operation: str,
        error: EndpointError,
        outcome: int,
        attempt: int,
        max_retries: int,
        deadline: float | None,
    ) -> float | None:
        """The backoff before the next attempt (counted and announced), or None: give up."""
        if outcome not in RETRYABLE or attempt >= max_retries:
            return None
        with self._lock:
            allowed = self._budget.try_retry()
        if not allowed:
            return None
        delay = backoff_delay(
            attempt,
            self.config.backoff_base_s,
            self.config.backoff_cap_s,
            throttled=outcome == THROTTLE,
            rng=self._rng,
        )
        if deadline is not None and self._clock.monotonic() + delay >= deadline:
            return None
        with self._lock:
            self.retries += 1
        self.events.emit(
            RetryScheduled(self.name, operation, attempt + 1, delay, type(error).__name__),
            logging.DEBUG,
        )
        return delay

    def readmit(
        self, operation: str, outcome: int, probe: bool, error: EndpointError
    ) -> CircuitOpenError | None:
        """After a backoff: None to go on, or the error to raise (the leg is then finished)
        when others opened the breaker meanwhile."""
        if self.breaker.admit(allow_probe=False) != REJECT:
            return None
        self._finish_leg(outcome, probe)
        with self._lock:
            self.rejected_open += 1
        stop = CircuitOpenError(
            endpoint=self.name, operation=operation, retry_after=self.breaker.retry_after()
        )
        stop.__cause__ = error
        return stop

    def finish_leg(self, error: EndpointError, probe: bool) -> None:
        """Report a leg's last error to the breaker."""
        self._finish_leg(classify(error), probe)

    @property
    def clock(self) -> Clock:
        return self._clock
