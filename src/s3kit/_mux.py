"""Multiplexer: many endpoints used as one store — routing, failover, replication, health.

A strategy-routed call (no ``endpoint=``) walks the endpoints in the strategy's order and fails
over at once to the next on an endpoint failure, throttle, open breaker or saturation: failover
is not a retry, spends no retry budget and happens even with ``retries=0``. Only when every
candidate failed does a new round start, after a backoff; there are at most 1 + the largest
``retries`` among the endpoints, within the call's deadline. A named call uses the endpoint's own
retries. Client errors are raised at once; a 403 fails reads over but not writes; rejected
credentials fail everything over and mark the endpoint misconfigured (routed last).

``delete_object`` and ``copy_object`` are not failed over once sent (S3 answers 204 to a delete
of a missing key, so a delete that failed over would report success while the object survives
elsewhere); the strategy still picks among available endpoints.

The other strategies than ``key-hash`` assume the endpoints hold the same data (replicas), or that
the caller reads an object back from the endpoint its upload reported (``result["Endpoint"]``).

Replica sets (``replicas=[...]`` or :meth:`Multiplexer.add_replica_group`) make that explicit:
routed reads go to the set's members (optionally hedged), writes, deletes and copies go to every
member and return at ``write_quorum`` acknowledgements, lagging members are kept in a durable
ledger and :meth:`Multiplexer.repair` brings them level (see ``_replica`` and docs/replicas.md).
Without a replica set none of this runs: a routed call costs one extra truthiness test.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import random
import threading
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, BinaryIO

from . import _extras, _ops, _replica, _uploads
from ._breaker import CLOSED, HALF_OPEN, OPEN, PROBE, REJECT
from ._clock import SYSTEM_CLOCK, Clock
from ._config import make_config
from ._endpoint import Endpoint
from ._errors import (
    CircuitOpenError,
    ConfigError,
    EndpointError,
    EndpointSaturated,
    InvalidArgument,
    NoHealthyEndpoint,
    NotFound,
)
from ._events import Event, EventBus, FailedOver, logger
from ._fleet import FleetHealth
from ._ledger import Ledger
from ._outcome import (
    ACCESS,
    BAD_CREDENTIALS,
    CLIENT,
    FAILURE,
    SUCCESS,
    THROTTLE,
    classify,
)
from ._retry import backoff_delay
from ._routing import Router, make_router
from ._stats import EndpointStats
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

__all__ = ["Multiplexer"]

_HEALTHY_OUTCOMES = (SUCCESS, CLIENT, ACCESS)
DEFAULT_GROUP = "replicas"  # the name of the set ``replicas=[...]`` defines
_MAX_BACKGROUND = 1024  # replica-write legs running past their caller; beyond, writes wait


def _check_age(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidArgument("older_than_s", f"must be seconds >= 0, got {value!r}")
    return float(value)


class Multiplexer:
    """Many S3 endpoints as one dependable store. Thread-safe; a context manager.

    ``endpoints`` maps names to option dicts (``url`` or ``endpoint_url`` plus any endpoint
    option); ``defaults`` are endpoint options applied to every endpoint added.
    """

    def __init__(
        self,
        endpoints: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        strategy: str | Router = "round-robin",
        replicas: Sequence[str] | None = None,
        write_quorum: int | str | None = None,
        read_fallback_on_missing: bool = False,
        hedge: bool | Mapping[str, Any] | None = None,
        health_interval: float | None = None,
        health_store: str | None = None,
        fleet: str | None = None,
        ledger_path: str | os.PathLike[str] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        **defaults: Any,
    ) -> None:
        self._clock = clock
        # Replica sets (all of it unused, and free, without one).
        self.write_quorum = _replica.check_quorum(write_quorum)
        self._hedge = _replica.parse_hedge(hedge)
        if ledger_path is not None and not isinstance(ledger_path, (str, os.PathLike)):
            raise InvalidArgument("ledger_path", "must be a path or None")
        self._ledger_path = ledger_path
        self._ledger_obj: Ledger | None = None
        self._groups: dict[str, _replica.ReplicaGroup] = {}
        self._default_group: _replica.ReplicaGroup | None = None
        self._pools_lock = threading.Lock()
        self._writes: concurrent.futures.ThreadPoolExecutor | None = None
        self._hedges: concurrent.futures.ThreadPoolExecutor | None = None
        self._legs: dict[concurrent.futures.Future[dict[str, Any]], str] = {}
        self._legs_per_endpoint: dict[str, int] = {}
        self._router = make_router(strategy)
        self._routers: dict[str, Router] = {self._router.name: self._router}
        self.read_fallback_on_missing = read_fallback_on_missing
        self._defaults = dict(defaults)
        # Default credentials for endpoints added without their own.
        self._access_key: str | None = self._defaults.pop("access_key", None)
        self._secret_key: str | None = self._defaults.pop("secret_key", None)
        # Validate the defaults now, so a typo fails at construction, not at add_endpoint.
        make_config("http://defaults.invalid", **self._defaults)
        self._events = EventBus()
        self._lock = threading.RLock()  # membership only; never held across a request
        self._endpoints: dict[str, Endpoint] = {}
        self._ordered: tuple[Endpoint, ...] = ()
        self._health_thread: threading.Thread | None = None
        self._health_stop = threading.Event()
        self._closed = False
        # Endpoint health shared by a fleet of processes (Redis); None: local breakers only.
        self._fleet: FleetHealth | None = None
        if health_store is not None:
            self._fleet = FleetHealth(health_store, fleet, clock=clock)
        elif fleet is not None:
            raise InvalidArgument("fleet", "is only used with a health_store")
        for name, opts in (endpoints or {}).items():
            opts = dict(opts)
            url = opts.pop("url", None) or opts.pop("endpoint_url", None)
            self.add_endpoint(
                name, url, opts.pop("access_key", None), opts.pop("secret_key", None), **opts
            )
        if replicas is not None:
            # Members may be added later with add_endpoint; they are looked up at call time.
            self.add_replica_group(DEFAULT_GROUP, replicas)
        if self._fleet is not None:
            self._fleet.attach(self)
        if health_interval is not None:
            self.start_health_checks(health_interval)

    @classmethod
    def from_config(
        cls, path: str | os.PathLike[str] | None = None, **overrides: Any
    ) -> Multiplexer:
        """A multiplexer from a TOML file: ``path``, else ``$S3KIT_CONFIG``, else ``./s3kit.toml``.

        See docs/configuration.md for the schema; ``overrides`` are Multiplexer keywords.
        """
        from ._configfile import multiplexer_from_config

        return multiplexer_from_config(path, **overrides)

    # -------------------------------------------------------------- membership
    def add_endpoint(
        self,
        name: str,
        endpoint_url: str,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        max_concurrent: int | None = None,
        circuit_breaker_threshold: int | None = None,
        retries: int | None = None,
        **options: Any,
    ) -> Endpoint:
        """Add an endpoint (no network call). Returns its handler.

        Options given here beat the multiplexer's defaults, which beat the built-in ones
        (``max_concurrent=5``, ``circuit_breaker_threshold=5``, ``retries=3``, …).
        """
        if not isinstance(name, str) or not name:
            raise InvalidArgument("name", "must be a non-empty string")
        merged = {**self._defaults, **options}
        for key, value in (
            ("max_concurrent", max_concurrent),
            ("circuit_breaker_threshold", circuit_breaker_threshold),
            ("retries", retries),
        ):
            if value is not None:
                merged[key] = value
        config = make_config(
            endpoint_url,
            self._access_key if access_key is None else access_key,
            self._secret_key if secret_key is None else secret_key,
            name=name,
            **merged,
        )
        endpoint = Endpoint(config, clock=self._clock, events=self._events)
        with self._lock:
            if name in self._endpoints:
                raise ConfigError(f"an endpoint named {name!r} already exists")
            self._endpoints[name] = endpoint
            self._ordered = (*self._ordered, endpoint)
        return endpoint

    def remove_endpoint(self, name: str, drain_timeout: float = 30.0) -> None:
        """Stop routing to ``name``, wait up to ``drain_timeout`` for in-flight calls, close it.

        It also leaves its replica set (a set left empty is removed).
        """
        with self._lock:
            endpoint = self._get(name)
            del self._endpoints[name]
            self._ordered = tuple(ep for ep in self._ordered if ep is not endpoint)
            for group in list(self._groups.values()):
                if name in group.members:
                    group.members = tuple(m for m in group.members if m != name)
                    if not group.members:
                        del self._groups[group.name]
                        if self._default_group is group:
                            self._default_group = next(iter(self._groups.values()), None)
        end = self._clock.monotonic() + drain_timeout
        while endpoint.limiter.in_flight and self._clock.monotonic() < end:
            self._clock.sleep(0.01)
        endpoint.close()

    def _get(self, name: str) -> Endpoint:
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            known = ", ".join(self._endpoints) or "none"
            raise ConfigError(f"unknown endpoint {name!r}; known endpoints: {known}")
        return endpoint

    @property
    def endpoints(self) -> Mapping[str, Endpoint]:
        """A read-only live view of the endpoints by name, in the order they were added."""
        return MappingProxyType(self._endpoints)

    def endpoint(self, name: str) -> Endpoint:
        return self._get(name)

    # ------------------------------------------------------------ replica sets
    def add_replica_group(self, name: str, endpoints: Iterable[str]) -> None:
        """Declare that the endpoints named hold the same data (a replica set called ``name``).

        The first set declared (``replicas=[...]`` is one, called ``"replicas"``) serves routed
        calls: reads go to its members, writes to all of them. Another set is used by naming it
        as ``endpoint=``; naming a member as ``endpoint=`` reaches that endpoint alone. Members
        may be added (``add_endpoint``) after the set is declared; an endpoint belongs to one
        set at most.
        """
        if not isinstance(name, str) or not name:
            raise InvalidArgument("name", "must be a non-empty string")
        if isinstance(endpoints, str) or not isinstance(endpoints, Iterable):
            raise InvalidArgument("endpoints", "must be a list of endpoint names")
        members = list(endpoints)
        if not members or not all(isinstance(m, str) and m for m in members):
            raise InvalidArgument("endpoints", "must be a non-empty list of endpoint names")
        if len(set(members)) != len(members):
            raise InvalidArgument("endpoints", "names an endpoint twice")
        with self._lock:
            if name in self._groups:
                raise ConfigError(f"a replica set named {name!r} already exists")
            if name in self._endpoints:
                raise ConfigError(f"{name!r} is an endpoint's name; a replica set needs another")
            for group in self._groups.values():
                shared = sorted(set(group.members) & set(members))
                if shared:
                    raise ConfigError(
                        f"endpoints {shared} already belong to the replica set {group.name!r}"
                    )
            group = _replica.ReplicaGroup(name, members, self._hedge)
            self._groups[name] = group
            if self._default_group is None:
                self._default_group = group

    @property
    def replica_groups(self) -> Mapping[str, tuple[str, ...]]:
        """The replica sets by name: their member names (the routed one first)."""
        return {name: group.members for name, group in self._groups.items()}

    def _members(self, group: _replica.ReplicaGroup) -> list[Endpoint]:
        endpoints = self._endpoints
        missing = [name for name in group.members if name not in endpoints]
        if missing:
            raise ConfigError(
                f"replica set {group.name!r} names endpoints that were not added: "
                f"{', '.join(missing)}"
            )
        return [endpoints[name] for name in group.members]

    def _group_for(self, endpoint: str | None) -> _replica.ReplicaGroup | None:
        """The replica set a call goes to: the routed one, or one named as ``endpoint=``."""
        if endpoint is None:
            return self._default_group
        return self._groups.get(endpoint)

    def _ledger(self) -> Ledger:
        ledger = self._ledger_obj
        if ledger is None:
            with self._pools_lock:
                if self._ledger_obj is None:
                    self._ledger_obj = Ledger(self._ledger_path)
                ledger = self._ledger_obj
        return ledger

    @property
    def ledger_path(self) -> str:
        """Where the replica ledger is (or will be, once a replica set writes)."""
        return self._ledger().path

    def _write_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        pool = self._writes
        if pool is None:
            with self._pools_lock:
                if self._closed:
                    raise ConfigError("the multiplexer is closed")
                if self._writes is None:
                    # Each member takes at most 2 x max_concurrent legs (see _submit_leg), so
                    # a sick member never holds every thread while healthy ones queue.
                    slots = sum(ep.config.max_concurrent for ep in self._ordered)
                    self._writes = concurrent.futures.ThreadPoolExecutor(
                        max_workers=min(256, max(16, 2 * slots + 4)),
                        thread_name_prefix="s3kit-replica-write",
                    )
                pool = self._writes
        return pool

    def _hedge_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        pool = self._hedges
        if pool is None:
            with self._pools_lock:
                if self._closed:
                    raise ConfigError("the multiplexer is closed")
                if self._hedges is None:
                    slots = sum(ep.config.max_concurrent for ep in self._ordered)
                    self._hedges = concurrent.futures.ThreadPoolExecutor(
                        max_workers=min(256, max(16, 2 * slots)),
                        thread_name_prefix="s3kit-hedge",
                    )
                pool = self._hedges
        return pool

    def _submit_leg(
        self,
        pool: concurrent.futures.ThreadPoolExecutor,
        ep: Endpoint,
        op: _ops.Op,
        deadline: float | None,
    ) -> concurrent.futures.Future[dict[str, Any]]:
        """Start one member's leg of a replica-set write on the write pool.

        A member that already has twice its ``max_concurrent`` legs queued or running (it is
        slow or stalled) is not given another: :class:`EndpointSaturated` is raised at once and
        the write is owed to it in the ledger, so it cannot take every thread of the pool.
        """
        limit = 2 * ep.config.max_concurrent
        with self._pools_lock:
            queued = self._legs_per_endpoint.get(ep.name, 0)
            if queued >= limit:
                raise EndpointSaturated(
                    endpoint=ep.name, operation=op.name, waited=0.0, limit=limit
                )
            self._legs_per_endpoint[ep.name] = queued + 1
        try:
            future = pool.submit(ep.run, op, deadline=deadline)
        except BaseException:
            with self._pools_lock:
                self._legs_per_endpoint[ep.name] -= 1
            raise
        with self._pools_lock:
            self._legs[future] = ep.name
        return future

    def _leg_finished(self, future: concurrent.futures.Future[dict[str, Any]]) -> None:
        with self._pools_lock:
            name = self._legs.pop(future, None)
            if name is not None:
                self._legs_per_endpoint[name] -= 1

    def _background_full(self) -> bool:
        return len(self._legs) > _MAX_BACKGROUND

    def _run_group(
        self,
        group: _replica.ReplicaGroup,
        op: _ops.Op,
        strategy: str | Router | None,
        deadline: float | None,
        quorum: int | str | None,
        ops: Sequence[_ops.Op] | None,
    ) -> dict[str, Any]:
        members = self._members(group)
        if op.kind == _ops.READ:
            router = self._router_for(strategy)
            if (
                group.hedge is not None
                and op.name in _replica.HEDGED_OPS
                and len(members) > 1
                and group.hedge.max_extra > 0
            ):
                return _replica.hedged_read(self, group, members, op, router, deadline)
            return self._failover(op, router, deadline, members=members)
        if op.kind == _ops.ADMIN:
            return self._to_all(op, deadline, members)
        if quorum is None:
            quorum = self.write_quorum
        return _replica.replica_write(
            self, group, members, ops or [op] * len(members), deadline, quorum
        )

    def repair(
        self,
        bucket: str,
        prefix: str = "",
        dry_run: bool = False,
        *,
        group: str | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        on_action: Callable[[dict[str, Any]], None] | None = None,
        wait_s: float = 0.0,
    ) -> dict[str, Any]:
        """Bring the replica sets' members level for ``bucket``/``prefix``.

        Every member is probed first (a one-key listing of ``bucket``), without waiting for an
        open breaker's interval: a member that answers has its breaker closed and is repaired
        now. A member that does not answer (probed again until ``wait_s`` seconds have passed)
        is skipped: named in ``"unreachable"``, counted once in ``"failed"``, reported as a
        ``"probe"`` action, and its ledger rows stay for the next run.

        Then the ledger is replayed (writes that missed a member are copied to it from a
        member that has them, deletes that missed one are sent again), then the members'
        listings are compared (key, size, and ETag when both are single-part; copies made here
        carry the source's ETag in metadata ``s3kit-source-etag``, so multipart copies
        converge) and missing or stale objects are copied from the newest version. Keys still
        owed a ledger entry are not compared, so a deleted key is never copied back.

        Idempotent and safe to interrupt: each copy is one upload, a ledger row goes only once
        its work is done. ``dry_run`` changes nothing and counts what would be done.
        ``progress(phase, done, total)`` and ``on_action(dict)`` report as it goes.
        Returns ``{"checked", "copied", "failed", "from_ledger", "unreachable"}``.
        """
        bucket = check_bucket(bucket)
        if isinstance(wait_s, bool) or not isinstance(wait_s, (int, float)) or not wait_s >= 0:
            raise InvalidArgument("wait_s", f"must be seconds >= 0, got {wait_s!r}")
        prefix = check_optional_str(prefix, "prefix") or ""
        if group is not None:
            if group not in self._groups:
                known = ", ".join(self._groups) or "none"
                raise ConfigError(f"unknown replica set {group!r}; replica sets: {known}")
            groups = [self._groups[group]]
        else:
            groups = list(self._groups.values())
        if not groups:
            raise ConfigError(
                "repair needs a replica set: Multiplexer(replicas=[...]) or add_replica_group()"
            )
        # Writes still finishing in the background would race the replay (and hold the lagging
        # member's slots): let them settle first.
        self.wait_for_writes()
        return _replica.repair(
            self, groups, bucket, prefix, bool(dry_run), progress, on_action, float(wait_s)
        )

    def wait_for_writes(self, timeout: float = 30.0) -> bool:
        """Wait up to ``timeout`` s for replica-set writes still running in the background;
        True when none is left. What does not finish stays owed in the ledger."""
        with self._pools_lock:
            legs = list(self._legs)
        if not legs:
            return True
        _done, not_done = concurrent.futures.wait(legs, timeout=max(0.0, timeout))
        return not not_done

    def pending(self, bucket: str | None = None, prefix: str = "") -> list[dict[str, Any]]:
        """The ledger's rows: what some member may still lack (``op`` "put") or still hold
        although it was deleted (``op`` "delete"), oldest first."""
        return [e.as_dict() for e in self._ledger().entries(None, bucket, prefix)]

    # --------------------------------------------------------- multipart uploads
    def _targets(self, endpoint: str | None) -> list[Endpoint]:
        """Every endpoint; or a replica set's members; or the endpoint named."""
        if endpoint is None:
            return list(self._ordered)
        group = self._groups.get(endpoint)
        if group is not None:
            return self._members(group)
        return [self._get(endpoint)]

    def list_multipart_uploads(
        self,
        bucket: str,
        prefix: str | None = None,
        *,
        older_than_s: float | None = None,
        endpoint: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Multipart uploads in progress (started, neither completed nor aborted) in ``bucket``
        on every endpoint (or ``endpoint``: a name, or a replica set's name).

        Returns ``{"Bucket", "Uploads": [{"Endpoint", "Key", "UploadId", "Initiated"}],
        "Failed": {endpoint: error}}``; ``older_than_s`` keeps uploads started at least that
        many seconds ago.
        """
        bucket = check_bucket(bucket)
        prefix = check_optional_str(prefix, "prefix")
        age = _check_age(older_than_s)
        deadline = self._deadline(timeout)
        uploads: list[dict[str, Any]] = []
        failed: dict[str, BaseException] = {}
        for ep in self._targets(endpoint):
            try:
                found = _uploads.list_uploads(ep, bucket, prefix, deadline)
            except EndpointError as exc:
                failed[ep.name] = exc
                continue
            uploads += [
                {"Endpoint": ep.name, **u}
                for u in found
                if age is None or _uploads.older_than(u, age)
            ]
        return {"Bucket": bucket, "Uploads": uploads, "Failed": failed}

    def abort_stale_uploads(
        self,
        bucket: str,
        prefix: str | None = None,
        *,
        older_than_s: float = 86400.0,
        endpoint: str | None = None,
        dry_run: bool = False,
        timeout: float | None = None,
        on_abort: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Abort the multipart uploads in ``bucket`` started more than ``older_than_s`` seconds
        ago (default a day) on every endpoint (or ``endpoint``), and, whatever their age, those
        that failed uploads recorded in the ledger left behind (an endpoint that died
        mid-upload could not abort them).

        Returns ``{"Bucket", "Aborted": [{"Endpoint", "Key", "UploadId", "Initiated"}],
        "Failed": {endpoint or "endpoint/upload id": error}, "DryRun": bool}``; ``dry_run``
        aborts nothing and lists what would be aborted. ``on_abort(upload)`` reports each.
        """
        bucket = check_bucket(bucket)
        prefix = check_optional_str(prefix, "prefix")
        age = _check_age(older_than_s)
        assert age is not None
        deadline = self._deadline(timeout)
        targets = self._targets(endpoint)
        aborted, failed_by = _uploads.settle_failed(
            self._ledger(), targets, bucket, bool(dry_run), on_abort
        )
        failed: dict[str, BaseException] = dict(failed_by)
        done = {(u["Endpoint"], u["UploadId"]) for u in aborted}
        listing = self.list_multipart_uploads(
            bucket, prefix, older_than_s=age, endpoint=endpoint, timeout=timeout
        )
        failed.update(listing["Failed"])
        for upload in listing["Uploads"]:
            name = upload["Endpoint"]
            if (name, upload["UploadId"]) in done:
                continue
            found = {**upload, "Bucket": bucket}
            if not dry_run:
                try:
                    _uploads.abort_upload(
                        self._get(name), bucket, upload["Key"], upload["UploadId"], deadline
                    )
                except EndpointError as exc:
                    failed[f"{name}/{upload['UploadId']}"] = exc
                    continue
            aborted.append(found)
            if on_abort is not None:
                on_abort(found)
        return {"Bucket": bucket, "Aborted": aborted, "Failed": failed, "DryRun": bool(dry_run)}

    def hedge_stats(self) -> dict[str, dict[str, Any]]:
        """Per replica set: reads, hedges sent (``by_endpoint``: where), hedge wins, the extra
        fraction and the current hedge delay."""
        return {name: group.stats() for name, group in self._groups.items()}

    def hedges_sent(self) -> dict[str, int]:
        """Hedged reads sent to each endpoint (the ``s3kit_hedges_total`` metric)."""
        out: dict[str, int] = {}
        for group in self._groups.values():
            for name, n in group.stats()["by_endpoint"].items():
                out[name] = out.get(name, 0) + n
        return out

    # ----------------------------------------------------------------- routing
    def _router_for(self, strategy: str | Router | None) -> Router:
        if strategy is None:
            return self._router
        if isinstance(strategy, str):
            router = self._routers.get(strategy)
            if router is None:
                router = make_router(strategy)
                with self._lock:
                    router = self._routers.setdefault(strategy, router)
            return router
        return make_router(strategy)

    def ranked(
        self, op: _ops.Op | None = None, strategy: str | Router | None = None
    ) -> list[Endpoint]:
        """Endpoints in the order a strategy-routed call would try them."""
        return self._rank(self._ordered, op, self._router_for(strategy))

    def _rank(
        self, endpoints: Sequence[Endpoint], op: _ops.Op | None, router: Router
    ) -> list[Endpoint]:
        if not endpoints:
            raise ConfigError("no S3 endpoints have been added")
        now = self._clock.monotonic()
        healthy: list[Endpoint] = []
        throttled: list[Endpoint] = []
        misconfigured: list[Endpoint] = []
        unavailable: list[Endpoint] = []
        demote = router.demote_throttled
        for ep in endpoints:
            state = ep.breaker.state
            if state == OPEN:
                unavailable.append(ep)
            elif ep.misconfigured:
                misconfigured.append(ep)
            elif demote and ep.limiter.throttled_until > now:
                throttled.append(ep)
            else:
                healthy.append(ep)
        order = router.order(healthy, op) if healthy else []
        # The lower tiers keep their added order: asking the router again would advance a
        # rotating strategy twice per call.
        order += throttled
        order += misconfigured
        if unavailable:
            # soonest retry first: that is the one get_endpoint() gives when all are open
            unavailable.sort(key=lambda ep: ep.breaker.retry_after())
            order += unavailable
        return order

    def locate(
        self, bucket: str, key: str, *, strategy: str | Router | None = None
    ) -> list[dict[str, Any]]:
        """Where a strategy-routed call for ``bucket/key`` would go, in order, and why."""
        op = _ops.head_object(check_bucket(bucket), check_key(key))
        router = self._router_for(strategy)
        now = self._clock.monotonic()
        out = []
        for ep in self.ranked(op, router):
            state = ep.breaker.state
            if state == OPEN:
                why = f"breaker open, next probe in {ep.breaker.retry_after():.1f}s"
            elif ep.misconfigured:
                why = "credentials rejected: routed last until a call succeeds"
            elif router.demote_throttled and ep.limiter.throttled_until > now:
                why = "throttled in the last few seconds: routed after the others"
            elif state == HALF_OPEN:
                why = "half-open: the next call to it is the probe"
            else:
                why = f"healthy, in {router.name} order"
            out.append(
                {
                    "endpoint": ep.name,
                    "url": ep.url,
                    "bucket": ep.config.physical_bucket(bucket),
                    "state": state,
                    "reason": why,
                }
            )
        return out

    def _fails_over(self, op: _ops.Op, error: EndpointError, router: Router) -> bool:
        outcome = classify(error)
        if outcome == BAD_CREDENTIALS:
            return True
        if outcome == ACCESS:
            return op.kind == _ops.READ
        if outcome == CLIENT:
            # A 404 read walks on with replica reads, and under key-hash (an object written
            # while its owner was down lives on the next endpoint of its order).
            return (
                op.kind == _ops.READ
                and isinstance(error, NotFound)
                and (self.read_fallback_on_missing or router.name == "key-hash")
            )
        return True  # throttle, transient, endpoint failure

    def _deadline(self, timeout: float | None) -> float | None:
        t = check_timeout(timeout)
        return None if t is None else self._clock.monotonic() + t

    def _run(
        self,
        op: _ops.Op,
        endpoint: str | None,
        strategy: str | Router | None,
        deadline: float | None,
        quorum: int | str | None = None,
        ops: Sequence[_ops.Op] | None = None,
    ) -> dict[str, Any]:
        try:
            if self._groups:
                group = self._group_for(endpoint)
                if group is not None:
                    return self._run_group(group, op, strategy, deadline, quorum, ops)
            if endpoint is not None:
                return self._get(endpoint).run(op, deadline=deadline)
            if op.kind == _ops.DELETE:
                return self._run_once(op, strategy, deadline)
            return self._failover(op, strategy, deadline)
        finally:
            if op.cleanup is not None:
                op.cleanup()

    def _run_once(
        self, op: _ops.Op, strategy: str | Router | None, deadline: float | None
    ) -> dict[str, Any]:
        """Send to the first available endpoint, with its own retries, and never fail over."""
        attempts: list[tuple[str, BaseException]] = []
        saturated: list[Endpoint] = []
        for ep in self.ranked(op, strategy):
            try:
                return ep.run(op, wait=False, deadline=deadline)
            except CircuitOpenError as exc:
                attempts.append((ep.name, exc))  # nothing was sent: another may take it
            except EndpointSaturated as exc:
                attempts.append((ep.name, exc))
                saturated.append(ep)
        if saturated:
            # Every available endpoint was busy: wait for a slot on the least loaded.
            ep = min(saturated, key=lambda e: e.limiter.in_flight)
            return ep.run(op, wait=True, deadline=deadline)
        raise NoHealthyEndpoint(op.name, attempts) from (attempts[-1][1] if attempts else None)

    def _failover(
        self,
        op: _ops.Op,
        strategy: str | Router | None,
        deadline: float | None,
        *,
        members: Sequence[Endpoint] | None = None,
        first_round: int = 0,
        attempts: list[tuple[str, BaseException]] | None = None,
    ) -> dict[str, Any]:
        plan = self._failover_plan(op, strategy, deadline, members, first_round, attempts)
        try:
            step = next(plan)
            while True:
                if isinstance(step, float):
                    self._clock.sleep(step)
                    step = next(plan)
                    continue
                ep, wait = step
                try:
                    return ep.run(op, retries=0, wait=wait, deadline=deadline)
                except EndpointError as exc:
                    step = plan.throw(exc)
        finally:
            plan.close()  # at once: a suspended generator left to the collector costs more

    def _failover_plan(
        self,
        op: _ops.Op,
        strategy: str | Router | None,
        deadline: float | None,
        members: Sequence[Endpoint] | None = None,
        first_round: int = 0,
        attempts: list[tuple[str, BaseException]] | None = None,
    ) -> Generator[tuple[Endpoint, bool] | float, None, None]:
        """The failover loop without its I/O, driven by :meth:`_failover` and by the asyncio
        core alike: yields ``(endpoint, wait)`` for a leg to run (``retries=0``; ``wait``: may
        wait for a slot) or a float, the seconds to sleep before the next round. The driver
        returns the first leg's result and throws a failed leg's :class:`EndpointError` back in.
        Ends by raising :class:`NoHealthyEndpoint`, or an error that must not fail over.
        """
        router = self._router_for(strategy)
        if attempts is None:
            attempts = []
        candidates = self._ordered if members is None else members
        order = self._rank(candidates, op, router)
        # How many rounds: asked only once a round has failed (most calls end in their first).
        rounds = self._rounds(order) if first_round else 0
        if first_round:
            delay = self._backoff_delay(first_round - 1, order, deadline)
            if first_round >= rounds or delay is None:
                raise NoHealthyEndpoint(op.name, attempts) from (
                    attempts[-1][1] if attempts else None
                )
            yield delay
        round_no = first_round
        while True:
            if round_no:
                order = self._rank(candidates, op, router)
            saturated: list[Endpoint] = []
            sent = 0
            missing: list[NotFound] = []
            for ep in order:
                try:
                    yield ep, False
                except CircuitOpenError as exc:
                    attempts.append((ep.name, exc))
                except EndpointSaturated as exc:
                    attempts.append((ep.name, exc))
                    saturated.append(ep)
                except EndpointError as exc:
                    self._note_leg_failure(op, ep, exc, router, attempts)
                    sent += 1
                    if isinstance(exc, NotFound):
                        missing.append(exc)
            if saturated and not sent:
                # Every available endpoint was busy: wait for a slot on the least loaded.
                ep = min(saturated, key=lambda e: e.limiter.in_flight)
                try:
                    yield ep, True
                except EndpointError as exc:
                    self._note_leg_failure(op, ep, exc, router, attempts)
                    sent += 1
                    if isinstance(exc, NotFound):
                        missing.append(exc)
            if missing and len(missing) == sent:
                raise missing[-1]  # every endpoint that answered says: no such key
            if not sent:
                break  # every endpoint is open: another round cannot help
            rounds = rounds or self._rounds(order)
            if round_no + 1 >= rounds:
                break
            delay = self._backoff_delay(round_no, order, deadline)
            if delay is None:
                break
            yield delay
            round_no += 1
        raise NoHealthyEndpoint(op.name, attempts) from (attempts[-1][1] if attempts else None)

    @staticmethod
    def _rounds(order: Sequence[Endpoint]) -> int:
        """Rounds over the endpoints a failover may make: 1 + the most retries any allows."""
        return 1 + max(ep.config.retries for ep in order)

    def _backoff_delay(
        self, round_no: int, order: Sequence[Endpoint], deadline: float | None
    ) -> float | None:
        """Seconds to wait before the round after ``round_no``; None when the deadline
        forbids it."""
        base = min(ep.config.backoff_base_s for ep in order)
        cap = max(ep.config.backoff_cap_s for ep in order)
        delay = backoff_delay(round_no, base, cap)
        if deadline is not None and self._clock.monotonic() + delay >= deadline:
            return None
        return float(delay)

    def _note_leg_failure(
        self,
        op: _ops.Op,
        ep: Endpoint,
        exc: EndpointError,
        router: Router,
        attempts: list[tuple[str, BaseException]],
    ) -> None:
        """Record a failed leg, or raise its error when it must not fail over."""
        if not self._fails_over(op, exc, router):
            raise exc
        attempts.append((ep.name, exc))
        ep.note_failover()
        self._events.emit(FailedOver(ep.name, op.name, type(exc).__name__), logging.INFO)

    def _to_all(
        self, op: _ops.Op, deadline: float | None, members: Sequence[Endpoint] | None = None
    ) -> dict[str, Any]:
        """Send an admin operation to every endpoint; raise only when none succeeded."""
        done: list[str] = []
        failed: dict[str, BaseException] = {}
        for ep in self._ordered if members is None else members:
            try:
                ep.run(op, deadline=deadline)
                done.append(ep.name)
            except EndpointError as exc:
                failed[ep.name] = exc
        if not done:
            errors = list(failed.items())
            raise NoHealthyEndpoint(op.name, errors) from (errors[-1][1] if errors else None)
        return {"Bucket": op.bucket, "Endpoint": done[0], "Endpoints": done, "Failed": failed}

    # -------------------------------------------------------------- operations
    def upload_file(
        self,
        file_path: str,
        bucket: str,
        key: str,
        extra_args: Mapping[str, Any] | None = None,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
        callback: Callable[[int], None] | None = None,
        write_quorum: int | str | None = None,
    ) -> dict[str, Any]:
        """Upload a file; ``callback(n)`` gets byte counts as they are sent (see Endpoint).

        In a replica set the file goes to every member and ``callback`` follows the first
        member's upload; ``write_quorum`` overrides the multiplexer's.
        """
        path = check_upload_source(file_path)
        bucket, key = check_bucket(bucket), check_key(key)
        callback = check_callback(callback)
        quorum = _replica.check_quorum(write_quorum)
        op = _ops.upload_file(path, bucket, key, extra_args, callback)
        ops = None
        if callback is not None and self._groups:
            group = self._group_for(endpoint)
            if group is not None:
                quiet = _ops.upload_file(path, bucket, key, extra_args)
                ops = [op, *([quiet] * (len(group.members) - 1))]
        if self._groups or self._ledger_path is not None:
            # A large upload that fails on an endpoint is remembered, so that what its failed
            # abort left there is aborted later (abort_stale_uploads, repair).
            op = _uploads.tracked_upload(op, self._ledger, path)
            if ops is not None:
                ops = [_uploads.tracked_upload(o, self._ledger, path) for o in ops]
        return self._run(op, endpoint, strategy, self._deadline(timeout), quorum, ops)

    def download_file(
        self,
        bucket: str,
        key: str,
        file_path: str,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
        callback: Callable[[int], None] | None = None,
        fsync: bool = True,
    ) -> dict[str, Any]:
        """Download atomically; ``callback(n)`` gets byte counts as they arrive, ``fsync=False``
        skips the fsync before the rename (see Endpoint)."""
        path = check_download_target(file_path)
        deadline = self._deadline(timeout)
        bucket, key, callback = check_bucket(bucket), check_key(key), check_callback(callback)
        fsync = check_flag(fsync, "fsync")
        group = self._group_for(endpoint) if self._groups else None
        if group is not None:
            # Across replicas: pinned to one version (ETag); hedged when the set hedges; a
            # large object comes as ranged parts spread over the members.
            return _replica.replica_download(
                self,
                group,
                self._members(group),
                bucket,
                key,
                path,
                deadline,
                callback,
                self._router_for(strategy),
                fsync,
            )
        op = _ops.download_file(bucket, key, path, deadline, callback, fsync)
        return self._run(op, endpoint, strategy, deadline)

    def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes | str | BinaryIO,
        extra_args: Mapping[str, Any] | None = None,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
        write_quorum: int | str | None = None,
    ) -> dict[str, Any]:
        """PutObject. In a replica set: to every member (a file-like body is read once, into
        memory: use upload_file for large objects), returning at ``write_quorum`` acks."""
        bucket, key, data = check_bucket(bucket), check_key(key), check_body(body)
        quorum = _replica.check_quorum(write_quorum)
        if (
            self._groups
            and not isinstance(data, (bytes, bytearray, memoryview))
            and self._group_for(endpoint) is not None
        ):
            data = data.read()  # every member's leg sends the same bytes
        op = _ops.put_object(bucket, key, data, extra_args)
        return self._run(op, endpoint, strategy, self._deadline(timeout), quorum)

    def get_object(
        self,
        bucket: str,
        key: str,
        range: str | None = None,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        op = _ops.get_object(
            check_bucket(bucket), check_key(key), check_optional_str(range, "range"), extra or None
        )
        return self._run(op, endpoint, strategy, self._deadline(timeout))

    def head_object(
        self,
        bucket: str,
        key: str,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        op = _ops.head_object(check_bucket(bucket), check_key(key), extra or None)
        return self._run(op, endpoint, strategy, self._deadline(timeout))

    def delete_object(
        self,
        bucket: str,
        key: str,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
        write_quorum: int | str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """DeleteObject; in a replica set on every member (a miss is a ledger tombstone)."""
        quorum = _replica.check_quorum(write_quorum)
        op = _ops.delete_object(check_bucket(bucket), check_key(key), extra or None)
        return self._run(op, endpoint, strategy, self._deadline(timeout), quorum)

    def copy_object(
        self,
        bucket: str,
        key: str,
        source_bucket: str,
        source_key: str,
        extra_args: Mapping[str, Any] | None = None,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
        write_quorum: int | str | None = None,
    ) -> dict[str, Any]:
        """Server-side copy; in a replica set on every member (each copies its own source)."""
        quorum = _replica.check_quorum(write_quorum)
        op = _ops.copy_object(
            check_bucket(bucket),
            check_key(key),
            check_bucket(source_bucket),
            check_key(source_key, "source_key"),
            extra_args,
        )
        return self._run(op, endpoint, strategy, self._deadline(timeout), quorum)

    def list_objects(
        self,
        bucket: str,
        prefix: str | None = None,
        max_keys: int | None = None,
        *,
        delimiter: str | None = None,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        op = _ops.list_objects(
            check_bucket(bucket),
            check_optional_str(prefix, "prefix"),
            check_max_keys(max_keys),
            check_optional_str(delimiter, "delimiter"),
        )
        if (
            endpoint is None
            and self._default_group is None
            and self._router_for(strategy).name == "key-hash"
        ):
            return self._list_merged(op, max_keys, self._deadline(timeout))
        return self._run(op, endpoint, strategy, self._deadline(timeout))

    def _list_merged(
        self, op: _ops.Op, max_keys: int | None, deadline: float | None
    ) -> dict[str, Any]:
        """Under key-hash each endpoint holds part of the keys: list all, merge by key.

        Endpoints that could not be listed are named in ``"Incomplete"`` (empty when complete).
        """
        merged: dict[str, dict[str, Any]] = {}
        prefixes: dict[str, dict[str, Any]] = {}
        listed: list[str] = []
        incomplete: dict[str, BaseException] = {}
        result: dict[str, Any] = {}
        for ep in self._ordered:
            try:
                page = ep.run(op, deadline=deadline)
            except EndpointError as exc:
                incomplete[ep.name] = exc
                continue
            listed.append(ep.name)
            result = page
            for obj in page["Contents"]:
                old = merged.get(obj["Key"])
                newer = old is not None and (
                    obj.get("LastModified") is not None
                    and old.get("LastModified") is not None
                    and obj["LastModified"] > old["LastModified"]
                )
                if old is None or newer:
                    merged[obj["Key"]] = obj
            for cp in page.get("CommonPrefixes") or []:
                prefixes[cp["Prefix"]] = cp
        if not listed:
            errors = list(incomplete.items())
            raise NoHealthyEndpoint(op.name, errors) from (errors[-1][1] if errors else None)
        contents = [merged[k] for k in sorted(merged)]
        common = [prefixes[p] for p in sorted(prefixes)]
        truncated = False
        if max_keys is not None and len(contents) + len(common) > max_keys:
            truncated = True
            contents = contents[: max(0, max_keys - len(common))]
        result = {**result, "Contents": contents, "KeyCount": len(contents) + len(common)}
        if common:
            result["CommonPrefixes"] = common
        result.update(
            IsTruncated=truncated,
            Endpoint=listed[0],
            Endpoints=listed,
            Incomplete=sorted(incomplete),
        )
        return result

    def list_buckets(
        self,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        return self._run(_ops.list_buckets(), endpoint, strategy, self._deadline(timeout))

    def create_bucket(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Create on ``endpoint``, or on every endpoint (result lists ``Endpoints``/``Failed``)."""
        return self._admin(_ops.create_bucket(check_bucket(bucket)), endpoint, strategy, timeout)

    def delete_bucket(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Delete on ``endpoint``, or on every endpoint (result lists ``Endpoints``/``Failed``)."""
        return self._admin(_ops.delete_bucket(check_bucket(bucket)), endpoint, strategy, timeout)

    def _admin(
        self,
        op: _ops.Op,
        endpoint: str | None,
        strategy: str | Router | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        if endpoint is not None:
            return self._run(op, endpoint, strategy, self._deadline(timeout))
        return self._to_all(op, self._deadline(timeout))

    # ------------------------------------------- extras (contract §12; see docs/extras.md)
    def iter_objects(
        self,
        bucket: str,
        prefix: str | None = None,
        *,
        delimiter: str | None = None,
        page_size: int = 1000,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
    ) -> _extras.ObjectIterator:
        """A lazy listing, one page per request (``timeout`` bounds each page).

        Each page is routed and failed over like any read; a page served by another endpoint
        than the one before continues with ``StartAfter`` = the last name yielded, so a
        failover mid-way neither restarts nor repeats. Under ``key-hash`` (outside a replica
        set) the endpoints' listings are merged lazily in key order; one that fails is named in
        the iterator's ``incomplete``.
        """
        bucket = check_bucket(bucket)
        prefix = check_optional_str(prefix, "prefix") or None
        delimiter = check_optional_str(delimiter, "delimiter") or None
        size = check_page_size(page_size)
        t = check_timeout(timeout)
        if (
            endpoint is None
            and self._default_group is None
            and self._router_for(strategy).name == "key-hash"
        ):
            return _extras.merged_pages(
                list(self._ordered),
                lambda ep, op: ep.run(op, deadline=self._deadline(t)),
                bucket,
                prefix,
                delimiter,
                size,
            )
        return _extras.single(
            lambda op: self._run(op, endpoint, strategy, self._deadline(t)),
            bucket,
            prefix,
            delimiter,
            size,
        )

    def upload_fileobj(
        self,
        fileobj: BinaryIO,
        bucket: str,
        key: str,
        extra_args: Mapping[str, Any] | None = None,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
        callback: Callable[[int], None] | None = None,
        write_quorum: int | str | None = None,
    ) -> dict[str, Any]:
        """Upload a binary file object from its position (streamed; see Endpoint).

        A write: failed over only while nothing was read from a non-seekable ``fileobj``. In
        a replica set the stream is first copied into an unlinked temporary file, which every
        member then reads at its own pace (constant memory, retries included).
        """
        fileobj = check_readable(fileobj)
        bucket, key = check_bucket(bucket), check_key(key)
        callback = check_callback(callback)
        quorum = _replica.check_quorum(write_quorum)
        deadline = self._deadline(timeout)
        group = self._group_for(endpoint) if self._groups else None
        if group is not None:
            spool = _extras.Spool(fileobj)
            # The callback follows the first member's upload, as with upload_file.
            ops = [_ops.upload_fileobj(spool.reader(), bucket, key, extra_args, callback)]
            ops += [
                _ops.upload_fileobj(spool.reader(), bucket, key, extra_args)
                for _ in group.members[1:]
            ]
            return self._run(ops[0], endpoint, strategy, deadline, quorum, ops)
        op = _ops.upload_fileobj(fileobj, bucket, key, extra_args, callback)
        return self._run(op, endpoint, strategy, deadline, quorum)

    def download_fileobj(
        self,
        bucket: str,
        key: str,
        fileobj: BinaryIO,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
        callback: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Write the object into a binary file object, in order, in constant memory.

        Fails over like any read. Bytes once written are never taken back: a retry or another
        endpoint resumes with a Range request pinned to the first answer's ETag (``If-Match``),
        and an endpoint holding another version raises :class:`PreconditionFailed`.
        """
        deadline = self._deadline(timeout)
        op = _ops.download_fileobj(
            check_bucket(bucket),
            check_key(key),
            check_writable(fileobj),
            deadline,
            check_callback(callback),
        )
        return self._run(op, endpoint, strategy, deadline)

    def delete_objects(
        self,
        bucket: str,
        keys: Iterable[str | Mapping[str, str]],
        *,
        quiet: bool = False,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
        write_quorum: int | str | None = None,
    ) -> dict[str, Any]:
        """DeleteObjects in batches of 1000: ``{"Deleted", "Errors", "Endpoint", "Endpoints"}``.

        Routed like ``delete_object``: never failed over once sent. Outside a replica set every
        batch goes to the endpoint that took the first (under ``key-hash``: each key to its
        owner); in a replica set each batch goes to every member, with ledger tombstones for
        members that missed it (``Pending``). ``timeout`` bounds each batch.
        """
        bucket = check_bucket(bucket)
        objects = check_delete_keys(keys)
        quorum = _replica.check_quorum(write_quorum)
        t = check_timeout(timeout)
        group = self._group_for(endpoint) if self._groups else None
        if group is not None:
            members = self._members(group)
            return _extras.delete_batches(
                lambda op, batch: _extras.replica_delete(
                    self, group, members, op, batch, self._deadline(t), quorum
                ),
                bucket,
                objects,
                quiet,
            )
        router = self._router_for(strategy)
        if endpoint is None and router.name == "key-hash":
            owners: dict[str, list[dict[str, str]]] = {}
            for obj in objects:
                owner = self._rank(self._ordered, _ops.delete_object(bucket, obj["Key"]), router)
                owners.setdefault(owner[0].name, []).append(obj)
            results = []
            for name, owned in owners.items():
                owner_ep = self._endpoints[name]

                def on_owner(
                    op: _ops.Op, _batch: list[dict[str, str]], ep: Endpoint = owner_ep
                ) -> dict[str, Any]:
                    return ep.run(op, deadline=self._deadline(t))

                result = _extras.delete_batches(on_owner, bucket, owned, quiet)
                for entry in (*result["Deleted"], *result["Errors"]):
                    entry["Endpoint"] = name  # each key's owner: batches mix them
                results.append(result)
            return _extras.merge_deletes(bucket, results)
        pinned = endpoint

        def run(op: _ops.Op, _batch: list[dict[str, str]]) -> dict[str, Any]:
            nonlocal pinned
            result = self._run(op, pinned, strategy, self._deadline(t))
            pinned = result["Endpoint"]  # later batches go where the first one went
            return result

        return _extras.delete_batches(run, bucket, objects, quiet)

    def create_presigned_url(
        self,
        bucket: str,
        key: str,
        expiration: int = 3600,
        *,
        endpoint: str | None = None,
        strategy: str | Router | None = None,
        timeout: float | None = None,
    ) -> str:
        """A SigV4 URL for the endpoint the strategy picks (healthiest first); no network call."""
        check_timeout(timeout)
        if endpoint is not None:
            return self._get(endpoint).create_presigned_url(bucket, key, expiration)
        return self.presign_all(bucket, key, expiration, strategy=strategy)[0]

    def presign_all(
        self,
        bucket: str,
        key: str,
        expiration: int = 3600,
        *,
        strategy: str | Router | None = None,
    ) -> list[str]:
        """Presigned URLs for every endpoint, healthiest first: alternates for a client to try.

        With a replica set, for its members only (the endpoints that hold the data).
        """
        bucket, key = check_bucket(bucket), check_key(key)
        expiration = check_expiration(expiration)
        op = _ops.head_object(bucket, key)
        group = self._default_group
        candidates = self._ordered if group is None else self._members(group)
        ranked = self._rank(candidates, op, self._router_for(strategy))
        return [ep.create_presigned_url(bucket, key, expiration) for ep in ranked]

    def replicate(
        self,
        file_path: str,
        bucket: str,
        key: str,
        endpoints: Iterable[str] | None = None,
        min_success: int | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Upload one file to every (or the given) endpoint in parallel.

        Returns ``{name: {"success": True, "result": dict}}`` or
        ``{name: {"success": False, "error": exception}}``; fewer than ``min_success``
        successes raise :class:`NoHealthyEndpoint`.
        """
        path = check_upload_source(file_path)
        bucket, key = check_bucket(bucket), check_key(key)
        names = list(endpoints) if endpoints is not None else list(self._endpoints)
        targets = [self._get(name) for name in names]
        if min_success is not None and not 0 <= min_success <= len(targets):
            raise InvalidArgument("min_success", f"must be between 0 and {len(targets)}")
        results: dict[str, dict[str, Any]] = {}

        def one(ep: Endpoint) -> dict[str, Any]:
            return ep.run(_ops.upload_file(path, bucket, key, None))

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
            futures = {pool.submit(one, ep): ep.name for ep in targets}
            for future, name in futures.items():
                try:
                    results[name] = {"success": True, "result": future.result()}
                except Exception as exc:
                    results[name] = {"success": False, "error": exc}
        ok = sum(1 for r in results.values() if r["success"])
        if min_success is not None and ok < min_success:
            failures = [(n, r["error"]) for n, r in results.items() if not r["success"]]
            raise NoHealthyEndpoint("replicate", failures) from failures[-1][1]
        return results

    # ------------------------------------------------------------------ health
    def check_health(self, bucket: str | None = None, timeout: float = 5.0) -> list[str]:
        """Probe every endpoint in parallel; return the names that answered, in added order.

        The probe is ListBuckets (or a one-key listing of ``bucket``), sent outside the retry
        policy. It feeds the breaker like a call: it takes the half-open probe when one is due,
        only transport failures and 500/502/504 count against the endpoint, a throttle re-opens
        a half-open breaker without doubling, and any other answer closes it. A throttled or
        misconfigured endpoint answered but is not reported healthy.
        """
        t = check_timeout(timeout)
        assert t is not None
        endpoints = self._ordered
        if not endpoints:
            return []

        def probe(ep: Endpoint) -> bool:
            breaker = ep.breaker
            verdict = breaker.admit()
            is_probe = verdict == PROBE
            outcome = SUCCESS
            try:
                if bucket is None:
                    ep.transport.list_buckets(t)
                else:
                    phys = ep.config.physical_bucket(bucket)
                    ep.transport.list_objects(phys, None, 1, None, t)
            except EndpointError as exc:
                outcome = classify(exc)
            except Exception:
                logger.exception("health probe of %s failed unexpectedly", ep.name)
                if is_probe:
                    breaker.release_probe()
                return False
            if verdict != REJECT:
                if outcome == FAILURE:
                    breaker.on_failure(is_probe)
                elif outcome == THROTTLE:
                    breaker.on_throttle(is_probe)
                else:
                    breaker.on_success(is_probe)
            return outcome in _HEALTHY_OUTCOMES

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(endpoints)) as pool:
            verdicts = list(pool.map(probe, endpoints))
        return [ep.name for ep, ok in zip(endpoints, verdicts, strict=True) if ok]

    def start_health_checks(self, interval: float = 10.0, bucket: str | None = None) -> None:
        """Run :meth:`check_health` every ``interval`` seconds in a daemon thread."""
        interval_s = check_timeout(interval, "interval")
        assert interval_s is not None
        with self._lock:
            if self._health_thread is not None and self._health_thread.is_alive():
                return
            self._health_stop.clear()

            def loop() -> None:
                while not self._health_stop.wait(interval_s * (0.9 + 0.2 * random.random())):
                    try:
                        self.check_health(bucket, timeout=min(5.0, interval_s))
                    except Exception:
                        logger.exception("s3kit background health check failed")

            self._health_thread = threading.Thread(target=loop, name="s3kit-health", daemon=True)
            self._health_thread.start()

    def stop_health_checks(self) -> None:
        self._health_stop.set()
        thread = self._health_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self._health_thread = None

    # -------------------------------------------------------------- monitoring
    def stats(self) -> dict[str, EndpointStats]:
        return {ep.name: ep.stats() for ep in self._ordered}

    def print_stats(self, file: Any = None) -> None:
        """Render :meth:`stats` as a table (rich when installed, plain text otherwise)."""
        from ._render import print_stats_table

        print_stats_table(self.stats(), file=file)

    def on_event(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns an unsubscribe function."""
        return self._events.subscribe(callback)

    def healthy(self) -> list[str]:
        """Names whose breaker is closed and credentials accepted (no network call)."""
        return [
            ep.name for ep in self._ordered if ep.breaker.state == CLOSED and not ep.misconfigured
        ]

    # --------------------------------------------------------------- lifecycle
    def close(self, timeout: float = 30.0) -> None:
        """Stop background health checks and release every endpoint's connections.

        Replica-set writes still running in the background get up to ``timeout`` seconds to
        finish; what is unfinished then stays in the ledger for ``repair()``.
        """
        with self._pools_lock:
            if self._closed:
                return
            self._closed = True
            legs = list(self._legs)
            writes, hedges = self._writes, self._hedges
        self.stop_health_checks()
        if legs:
            concurrent.futures.wait(legs, timeout=max(0.0, timeout))
        for pool in (writes, hedges):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        if self._fleet is not None:
            self._fleet.stop()
        for ep in self._ordered:
            ep.close()
        if self._ledger_obj is not None:
            self._ledger_obj.close()

    def __enter__(self) -> Multiplexer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        states = ", ".join(f"{ep.name}={ep.breaker.state}" for ep in self._ordered)
        return f"<Multiplexer strategy={self._router.name} endpoints=[{states}]>"

    def __getstate__(self) -> None:
        raise TypeError(
            "a Multiplexer holds live connections and credentials and cannot be pickled; "
            "pickle its configuration and build one per process"
        )
