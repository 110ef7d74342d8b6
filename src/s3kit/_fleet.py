"""Fleet-wide endpoint health over Redis: ``Multiplexer(health_store="redis://…", fleet="name")``.

Processes of one fleet share what they learn about their endpoints, without putting Redis on
the request path:

- **Shared:** breaker transitions (open with the fleet's retry-after, closed), the half-open
  probe (one process per open interval wins a lease, ``SET NX PX``, and probes), failure counts
  (so the fleet opens on its *combined* count), "throttled until" times (not each process's
  AIMD limit cuts) and misconfigured marks. **Not shared:** request counters, credentials,
  object data, URLs (an endpoint is known as ``name#<hash of its URL>``).
- **Hot path:** a call reads only its local breaker and limiter. A background thread polls the
  endpoints' counters (every ``poll_interval_s``, or at once when a failure event wakes it),
  reports failure deltas and local transitions, and a subscriber thread applies what the other
  processes publish (pub/sub) to the local breakers. Successful calls never touch Redis.
- **User calls never take the half-open probe** while a store is attached: the endpoints'
  breakers are switched to a subclass whose ``admit`` refuses the probe (so every call site,
  routed, named, replica legs or a bare handler, is covered). The store's own prober thread
  probes a half-open endpoint (ListBuckets, one attempt) after winning the interval's lease and
  publishes the result: answered → every process closes; failed → open again for the doubled
  interval (up to ``breaker_max_open_s``); throttled → open again for the same interval.
- **Redis unreachable, slow or restarted:** every Redis command has a short timeout and runs in
  a background thread. The first failure of an outage is logged once (WARNING) and a
  :class:`FleetStoreUnavailable` event is emitted; each process then runs on its local breakers
  (its prober probes its own half-open endpoints without a lease). When Redis answers again the
  process re-syncs (pushing what changed locally, adopting the fleet's state otherwise) and
  emits :class:`FleetStoreRestored`. Nothing here raises into user code.
- **Secrets:** the store URL may carry a user and password (``rediss://user:pass@host``); only
  the masked form (``rediss://user:***@host``) appears in reprs, logs, events and errors.

Keys (``{fleet}`` is a Redis Cluster hash tag, so one fleet's keys share a slot)::

    s3kit:{fleet}:ep:<name>#<urlhash>          hash: st, until, gen, open_ms, misconf
    s3kit:{fleet}:fails:<name>#<urlhash>       failures in the current window (PEXPIRE)
    s3kit:{fleet}:probe:<name>#<urlhash>:<gen> the probe lease of one open interval
    s3kit:{fleet}:events                       the pub/sub channel

Times stored in Redis are Redis's own clock (``TIME`` inside the scripts); messages carry the
remaining milliseconds, so hosts' clocks never need to agree.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ._breaker import ADMIT, CLOSED, HALF_OPEN, CircuitBreaker
from ._clock import SYSTEM_CLOCK, Clock
from ._errors import ConfigError, EndpointError, InvalidArgument
from ._events import (
    BreakerStateChanged,
    EndpointMisconfigured,
    Event,
    EventBus,
    FailedOver,
    RetryScheduled,
    logger,
)
from ._outcome import FAILURE, THROTTLE, classify

if TYPE_CHECKING:
    from ._endpoint import Endpoint

__all__ = [
    "FleetHealth",
    "FleetStoreRestored",
    "FleetStoreUnavailable",
    "endpoint_id",
    "mask_url",
]

EndpointSource = Mapping[str, "Endpoint"] | Callable[[], Mapping[str, "Endpoint"]]

_FLEET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")
_SCHEMES = ("redis", "rediss", "unix")
_STATE_TTL_MS = 24 * 3600 * 1000  # forget an endpoint nobody has touched for a day
_BACKOFF_MIN_S = 0.1
_BACKOFF_MAX_S = 5.0


# --------------------------------------------------------------------------- events
@dataclass(frozen=True)
class FleetStoreUnavailable(Event):
    """The health store stopped answering; this process runs on its local breakers.

    ``endpoint`` is empty (the event is about the store); ``store`` is the masked URL.
    """

    fleet: str
    store: str
    error: str


@dataclass(frozen=True)
class FleetStoreRestored(Event):
    """The health store answers again; this process has re-synced with the fleet."""

    fleet: str
    store: str


# ---------------------------------------------------------------------- url helpers
def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (``redis://user:***@host:6379/0``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, sep, _password = userinfo.partition(":")
        # "redis://secret@host" is a user name to redis-py, but people write passwords there.
        netloc = f"{user}:***@{host}" if sep else f"***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() == "password" for k, _ in pairs):
            query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secrets_of(url: str) -> list[str]:
    """The secret strings in ``url`` (raw and unquoted), longest first, for scrubbing."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url] if url else []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        user, sep, password = userinfo.partition(":")
        secret = password if sep else user
        if secret:
            found.update((secret, unquote(secret)))
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() == "password" and value:
            found.add(value)
    return sorted((s for s in found if s), key=len, reverse=True)


def endpoint_id(name: str, url: str) -> str:
    """How the fleet names an endpoint: its name and a hash of its URL (never the URL)."""
    digest = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{name}#{digest}"


# ------------------------------------------------------------------- the gated breaker
class _FleetBreaker(CircuitBreaker):
    """A breaker whose half-open probe is never given to a caller: the fleet prober probes.

    Same layout as :class:`CircuitBreaker` (no new slots), so an endpoint's breaker is switched
    in place (``__class__``) and back, keeping its state and transition callback.
    """

    __slots__ = ()

    def admit(self, *, allow_probe: bool = True) -> int:
        if self._state is CLOSED:  # hot path: as cheap as the base class
            return ADMIT
        return CircuitBreaker.admit(self, allow_probe=False)


def _switch_class(breaker: CircuitBreaker, cls: type[CircuitBreaker]) -> None:
    breaker.__class__ = cls


# Remote state applied by this thread: its breaker events are not published back.
_applying = threading.local()


class _Applying:
    def __enter__(self) -> None:
        _applying.on = True

    def __exit__(self, *exc: object) -> None:
        _applying.on = False


_APPLYING = _Applying()


# -------------------------------------------------------------------------- lua
# One script for every shared transition, so reading, deciding, storing and publishing are
# atomic. Returns {gen, state, remaining_ms, misconf, changed, count}.
_LUA = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mode = ARGV[1]
local channel, origin, eid = ARGV[2], ARGV[3], ARGV[4]
local retry_ms = tonumber(ARGV[5])
local base_ms, max_ms, jitter = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local arg, extra = ARGV[9], ARGV[10]
local window_ms, ttl_ms = tonumber(ARGV[11]), tonumber(ARGV[12])
local h = redis.call('HMGET', KEYS[1], 'gen', 'st', 'until', 'open_ms', 'misconf')
local gen = tonumber(h[1]) or 0
local st = h[2] or 'closed'
local untl = tonumber(h[3]) or 0
local open_ms = tonumber(h[4]) or base_ms
local misconf = h[5] or ''
local changed, count = 0, 0

local function bump()
  local g = gen + 1
  if now > g then g = now end
  gen = g
end
local function set_open(ms, oms)
  bump()
  st, untl, open_ms, changed = 'open', now + ms, oms, 1
  redis.call('HSET', KEYS[1], 'gen', gen, 'st', st, 'until', untl, 'open_ms', open_ms)
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', channel,
    cjson.encode({o = origin, e = eid, k = 'open', g = gen, ms = ms}))
end
local function set_closed()
  bump()
  st, open_ms, changed = 'closed', base_ms, 1
  redis.call('HSET', KEYS[1], 'gen', gen, 'st', st, 'until', 0, 'open_ms', open_ms)
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', channel, cjson.encode({o = origin, e = eid, k = 'closed', g = gen}))
end
local open_now = st == 'open' and untl > now

if mode == 'trip' then
  if not open_now then set_open(retry_ms, base_ms) end
elseif mode == 'count' then
  local delta = tonumber(arg)
  count = redis.call('INCRBY', KEYS[2], delta)
  if count == delta then redis.call('PEXPIRE', KEYS[2], window_ms) end
  if not open_now then
    if count >= tonumber(extra) then
      set_open(retry_ms, base_ms)
    else
      redis.call('PUBLISH', channel, cjson.encode({o = origin, e = eid, k = 'fails', c = count}))
    end
  end
elseif mode == 'probe' then
  if gen == tonumber(arg) and st == 'open' then
    if extra == 'ok' then
      set_closed()
    elseif extra == 'fail' then
      local oms = math.min(open_ms * 2, max_ms)
      set_open(math.floor(oms * jitter), oms)
    else
      set_open(math.floor(open_ms * jitter), open_ms)
    end
  end
elseif mode == 'close' then
  if st ~= 'closed' then set_closed() end
end
local rem = 0
if st == 'open' then rem = math.max(0, untl - now) end
return {gen, st, rem, misconf, changed, count}
"""


class _Rec:
    """What this process knows about one endpoint's shared state."""

    __slots__ = (
        "bus",
        "eid",
        "ep",
        "fails_seen",
        "gen",
        "lease_lost_at",
        "local_open_s",
        "mc_code",
        "mc_seen",
        "own",
        "reported",
        "succ_seen",
        "synced",
        "thr_seen",
        "window_until",
    )

    def __init__(self, ep: Endpoint, eid: str) -> None:
        self.ep = ep
        self.eid = eid
        self.bus: EventBus = ep.events
        self.gen = 0  # the fleet generation of the state last applied or pushed
        self.synced = False  # reconciled with the store since (re)connecting
        self.fails_seen = _failure_count(ep)
        self.succ_seen = ep.successes
        self.thr_seen = ep.throttles
        self.mc_seen = ep.misconfigured
        self.mc_code = "InvalidAccessKeyId"
        self.reported = False  # this process added to the fleet's failure window
        self.own = 0  # failures this process added to the current window
        self.window_until = 0.0  # monotonic end of the window we know of (0: none)
        self.lease_lost_at: float | None = None
        self.local_open_s = ep.config.breaker_open_s


def _failure_count(ep: Endpoint) -> int:
    """Attempts that count against the breaker (endpoint failures, not transient conflicts)."""
    by_op = ep.metrics_snapshot()[0]
    return sum(n for (_op, outcome), n in by_op.items() if outcome == FAILURE)


class FleetHealth:
    """Share endpoint health across the processes of one fleet through Redis.

    ``url`` is a redis-py URL (``redis://``, ``rediss://`` or ``unix://``, with user and
    password if needed); ``fleet`` namespaces the keys. ``endpoints`` is a mapping of name to
    :class:`Endpoint` (or a callable returning one, read on every poll so endpoints added later
    are picked up); :meth:`attach` takes them from a multiplexer instead.

    Constructing makes no network call; :meth:`start` starts three daemon threads (poller,
    subscriber, prober) and returns at once; :meth:`stop` undoes everything.
    """

    def __init__(
        self,
        url: str,
        fleet: str | None,
        *,
        endpoints: EndpointSource | None = None,
        clock: Clock = SYSTEM_CLOCK,
        publish_failures: bool = True,
        failure_window_s: float = 10.0,
        poll_interval_s: float = 0.1,
        probe_timeout_s: float | None = None,
        redis_timeout_s: float = 0.5,
        resync_interval_s: float = 30.0,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise InvalidArgument("health_store", "must be a redis:// or rediss:// URL")
        masked = mask_url(url)
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in _SCHEMES:
            raise InvalidArgument(
                "health_store", f"{masked!r} is not a redis://, rediss:// or unix:// URL"
            )
        if fleet is None:
            raise InvalidArgument("fleet", "a health_store needs a fleet name")
        if not isinstance(fleet, str) or not _FLEET_RE.fullmatch(fleet):
            raise InvalidArgument(
                "fleet", "must be 1-100 characters: letters, digits, '_', '.', ':', '-'"
            )
        for name, value in (
            ("failure_window_s", failure_window_s),
            ("poll_interval_s", poll_interval_s),
            ("redis_timeout_s", redis_timeout_s),
            ("resync_interval_s", resync_interval_s),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InvalidArgument(name, "must be a positive number of seconds")
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:
            raise ConfigError(
                "health_store needs the 'redis' package: pip install 's3kit[redis]'"
            ) from exc
        self._url = url
        self._secrets = _secrets_of(url)
        self.store = masked
        self.fleet = fleet
        self._ns = f"s3kit:{{{fleet}}}"
        self._channel = f"{self._ns}:events"
        self._origin = uuid.uuid4().hex[:12]
        self._clock = clock
        self.publish_failures = publish_failures
        self._window_ms = int(failure_window_s * 1000)
        self._poll_s = float(poll_interval_s)
        self._probe_timeout_s = probe_timeout_s
        self._resync_s = float(resync_interval_s)
        self._redis_errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        try:
            self._client: Any = redis.Redis.from_url(
                url,
                socket_timeout=redis_timeout_s,
                socket_connect_timeout=redis_timeout_s,
                health_check_interval=5,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
            )
        except Exception as exc:  # a malformed URL: never echo it unmasked
            raise InvalidArgument("health_store", f"{masked!r}: {self._scrub(str(exc))}") from None
        self._script: Any = self._client.register_script(_LUA)
        self._source: Callable[[], Mapping[str, Endpoint]] | None = None
        if endpoints is not None:
            self._source = endpoints if callable(endpoints) else (lambda: endpoints)
        self._recs: dict[str, _Rec] = {}  # eid -> rec; swapped whole, read lock-free
        self._by_name: dict[str, _Rec] = {}
        self._lock = threading.Lock()
        self._changed: set[str] = set()  # endpoint names with local breaker transitions
        self._mc_codes: dict[str, str] = {}
        self._unsubscribe: dict[int, Callable[[], None]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sub_ready = threading.Event()
        self._need_resync = False
        self._threads: list[threading.Thread] = []
        self._up = False
        self._outage_logged = False
        self._started = False
        # Counters, for tests and stats.
        self.outages = 0
        self.probes_sent = 0
        self.applied = 0
        self.published = 0
        # The latest probes: (time.time(), endpoint name, fleet generation or -1 if local, outcome).
        self.probe_log: deque[tuple[float, str, int, str]] = deque(maxlen=1000)

    # ---------------------------------------------------------------- surface
    def __repr__(self) -> str:
        return (
            f"<FleetHealth fleet={self.fleet!r} store={self.store!r} "
            f"connected={self._up} endpoints={len(self._recs)}>"
        )

    def __getstate__(self) -> None:
        raise TypeError("a FleetHealth holds live connections and cannot be pickled")

    @property
    def connected(self) -> bool:
        """True while the store answers and this process is in sync with the fleet."""
        return self._up

    def stats(self) -> dict[str, Any]:
        return {
            "fleet": self.fleet,
            "store": self.store,
            "connected": self._up,
            "outages": self.outages,
            "probes_sent": self.probes_sent,
            "applied": self.applied,
            "published": self.published,
            "endpoints": sorted(self._by_name),
        }

    def attach(self, mux: Any) -> FleetHealth:
        """Follow ``mux``'s endpoints (also those added later) and start. Returns self."""
        endpoints = mux.endpoints  # a live read-only view
        self._source = lambda: endpoints
        self.start()
        return self

    def start(self) -> FleetHealth:
        """Start the background threads (idempotent). Never blocks on Redis."""
        with self._lock:
            if self._started:
                return self
            if self._source is None:
                raise ConfigError("FleetHealth has no endpoints: pass endpoints= or attach()")
            self._started = True
            self._stop.clear()
        self._adopt()
        for target, name in (
            (self._main_loop, "s3kit-fleet"),
            (self._sub_loop, "s3kit-fleet-sub"),
            (self._probe_loop, "s3kit-fleet-probe"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads, give the endpoints their plain breakers back, close connections."""
        with self._lock:
            started, self._started = self._started, False
        if not started and not self._recs and not self._unsubscribe:
            return
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        self._threads = []
        for unsubscribe in self._unsubscribe.values():
            unsubscribe()
        self._unsubscribe = {}
        for rec in self._recs.values():
            self._reset_window(rec)
            if type(rec.ep.breaker) is _FleetBreaker:
                _switch_class(rec.ep.breaker, CircuitBreaker)
        self._recs, self._by_name = {}, {}
        self._up = False
        with contextlib.suppress(Exception):
            self._client.close()

    close = stop

    def __enter__(self) -> FleetHealth:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- helpers
    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _describe(self, exc: BaseException) -> str:
        return self._scrub(f"{type(exc).__name__}: {exc}")

    def _key(self, kind: str, eid: str) -> str:
        return f"{self._ns}:{kind}:{eid}"

    def _set_down(self, exc: BaseException) -> None:
        with self._lock:
            was_up = self._up
            self._up = False
            first = not self._outage_logged
            self._outage_logged = True
            if first:
                self.outages += 1
            for rec in self._recs.values():
                rec.synced = False
                self._reset_window(rec)  # local breakers only, at their own thresholds
        if first:
            error = self._describe(exc)
            logger.warning(
                "s3kit fleet %s: health store %s unreachable (%s); using local breakers "
                "until it answers again",
                self.fleet,
                self.store,
                error,
            )
            self._emit(FleetStoreUnavailable("", self.fleet, self.store, error))
        elif was_up:
            logger.debug("s3kit fleet %s: store lost again: %s", self.fleet, exc)

    def _set_up(self) -> None:
        with self._lock:
            self._up = True
            restored = self._outage_logged
            self._outage_logged = False
        if restored:
            logger.info(
                "s3kit fleet %s: health store %s answers again; re-synced",
                self.fleet,
                self.store,
            )
            self._emit(FleetStoreRestored("", self.fleet, self.store))

    def _emit(self, event: Event) -> None:
        buses: dict[int, EventBus] = {id(r.bus): r.bus for r in self._recs.values()}
        for bus in buses.values():
            bus.emit(event, logging.DEBUG)  # the message above is the log line

    def _on_event(self, event: Event) -> None:
        """Listener on the endpoints' event bus: cheap, never touches Redis."""
        if getattr(_applying, "on", False):
            return
        if isinstance(event, BreakerStateChanged):
            with self._lock:
                self._changed.add(event.endpoint)
            self._wake.set()
        elif isinstance(event, EndpointMisconfigured):
            self._mc_codes[event.endpoint] = event.code
            self._wake.set()
        elif isinstance(event, (FailedOver, RetryScheduled)):
            self._wake.set()

    def _adopt(self) -> None:
        """Pick up new endpoints: gate their breakers, listen to their bus, baseline counters."""
        source = self._source
        if source is None:
            return
        for _ in range(3):
            try:
                current = list(source().items())
                break
            except RuntimeError:  # the mapping changed while being read
                continue
        else:
            return
        recs = self._recs
        fresh: dict[str, _Rec] = {}
        changed = False
        for name, ep in current:
            eid = endpoint_id(name, ep.url)
            rec = recs.get(eid)
            if rec is None or rec.ep is not ep:
                rec = _Rec(ep, eid)
                changed = True
                if type(ep.breaker) is CircuitBreaker:
                    _switch_class(ep.breaker, _FleetBreaker)
                bus = ep.events
                if id(bus) not in self._unsubscribe:
                    self._unsubscribe[id(bus)] = bus.subscribe(self._on_event)
            fresh[eid] = rec
        if changed or len(fresh) != len(recs):
            with self._lock:
                self._recs = fresh
                self._by_name = {rec.ep.name: rec for rec in fresh.values()}

    # ------------------------------------------------------------- the script
    def _run_script(
        self,
        rec: _Rec,
        mode: str,
        *,
        retry_s: float = 0.0,
        arg: object = "",
        extra: object = "",
        jitter: float = 1.0,
    ) -> tuple[int, str, float, str, bool, int]:
        cfg = rec.ep.config
        reply = self._script(
            keys=[self._key("ep", rec.eid), self._key("fails", rec.eid)],
            args=[
                mode,
                self._channel,
                self._origin,
                rec.eid,
                max(1, int(retry_s * 1000)),
                max(1, int(cfg.breaker_open_s * 1000)),
                max(1, int(cfg.breaker_max_open_s * 1000)),
                jitter,
                arg,
                extra,
                self._window_ms,
                _STATE_TTL_MS,
            ],
        )
        gen, st, rem, misconf, changed, count = (
            int(reply[0]),
            str(reply[1]),
            int(reply[2]) / 1000.0,
            str(reply[3]),
            bool(int(reply[4])),
            int(reply[5]),
        )
        if changed:
            self.published += 1
        return gen, st, rem, misconf, changed, count

    def _jitter(self) -> float:
        return 1.0 + 0.2 * random.random()

    def _apply_state(self, rec: _Rec, gen: int, st: str, remaining: float, force: bool) -> None:
        """Make the local breaker say what the fleet says (events fire, but are not echoed)."""
        if gen < rec.gen and not force:
            return  # an older message than what we already applied
        rec.gen = gen
        breaker = rec.ep.breaker
        with _APPLYING:
            if st == "open":
                breaker.force_open(remaining)
            elif breaker.state != CLOSED:
                breaker.reset()
        self._reset_window(rec)
        self.applied += 1

    def _note_fleet_failures(self, rec: _Rec, count: int) -> None:
        """The fleet's window holds ``count`` failures: lower the local breaker's threshold by
        the others' share, so this process's next failures open it without a Redis round-trip
        (the combined count reaches the threshold locally)."""
        threshold = rec.ep.config.circuit_breaker_threshold
        others = max(0, count - rec.own)
        rec.window_until = time.monotonic() + self._window_ms / 1000.0
        breaker = rec.ep.breaker
        lowered = max(1, threshold - others)
        if lowered < breaker.threshold:
            breaker.threshold = lowered

    def _reset_window(self, rec: _Rec) -> None:
        """The fleet's failure window ended (opened, closed, cleared or expired)."""
        rec.own = 0
        rec.window_until = 0.0
        rec.reported = False
        rec.ep.breaker.threshold = rec.ep.config.circuit_breaker_threshold

    def _push(self, rec: _Rec) -> None:
        """Tell the fleet about a local transition (or local state after an outage)."""
        breaker = rec.ep.breaker
        self._reset_window(rec)
        if breaker.state != CLOSED:
            remaining = breaker.retry_after()
            gen, st, rem, _mc, changed, _n = self._run_script(rec, "trip", retry_s=remaining)
            if changed:
                rec.gen = gen  # the fleet took our interval; nothing to align
            else:
                self._apply_state(rec, gen, st, rem, force=True)  # already open: align
        else:
            gen, st, rem, _mc, changed, _n = self._run_script(rec, "close")
            rec.gen = gen

    def _reconcile(self, rec: _Rec, dirty: bool = False) -> None:
        """After (re)connecting: push local changes, else adopt the fleet's state."""
        with self._lock:
            dirty = dirty or rec.ep.name in self._changed
            self._changed.discard(rec.ep.name)
        gen, st, rem, misconf, _c, _n = self._run_script(rec, "read")
        if dirty or (gen == 0 and rec.ep.breaker.state != CLOSED):
            # Changed here while disconnected, or the store forgot (restarted empty).
            self._push(rec)
        else:
            self._apply_state(rec, gen, st, rem, force=True)
        ep = rec.ep
        if misconf and not ep.misconfigured:
            self._apply_misconf(rec, misconf)
        elif ep.misconfigured and not misconf:
            self._publish_misconf(rec, self._mc_codes.get(ep.name, rec.mc_code))
        rec.mc_seen = ep.misconfigured
        rec.synced = True

    # ---------------------------------------------------------------- messages
    def _on_message(self, data: str) -> None:
        try:
            msg = json.loads(data)
            if msg.get("o") == self._origin:
                return
            rec = self._recs.get(str(msg.get("e")))
            if rec is None:
                return
            kind = msg.get("k")
            if kind == "open":
                self._apply_state(rec, int(msg["g"]), "open", float(msg["ms"]) / 1000, False)
            elif kind == "closed":
                self._apply_state(rec, int(msg["g"]), "closed", 0.0, False)
            elif kind == "fails":
                if rec.ep.breaker.state == CLOSED:
                    self._note_fleet_failures(rec, int(msg["c"]))
            elif kind == "throttle":
                limiter = rec.ep.limiter
                until = self._clock.monotonic() + float(msg["ms"]) / 1000
                if until > limiter.throttled_until:
                    limiter.throttled_until = until
                self.applied += 1
            elif kind == "misconf":
                self._apply_misconf(rec, str(msg.get("c") or ""))
        except (ValueError, KeyError, TypeError):
            logger.debug("s3kit fleet %s: ignored a malformed message", self.fleet)

    def _apply_misconf(self, rec: _Rec, code: str) -> None:
        ep = rec.ep
        bad = bool(code)
        was = ep.misconfigured
        ep.misconfigured = bad
        rec.mc_seen = bad
        self.applied += 1
        if bad and not was:
            with _APPLYING:
                ep.events.emit(EndpointMisconfigured(ep.name, "fleet", code), logging.WARNING)

    def _publish_misconf(self, rec: _Rec, code: str) -> None:
        key = self._key("ep", rec.eid)
        payload = json.dumps({"o": self._origin, "e": rec.eid, "k": "misconf", "c": code})
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(key, "misconf", code)
        pipe.pexpire(key, _STATE_TTL_MS)
        pipe.publish(self._channel, payload)
        pipe.execute()
        self.published += 1

    # ------------------------------------------------------------- main loop
    def _main_loop(self) -> None:
        backoff = _BACKOFF_MIN_S
        next_try = 0.0
        last_resync = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(self._poll_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._adopt()
                now = time.monotonic()
                if not self._up:
                    self._poll(connected=False)
                    if now < next_try or not self._sub_ready.is_set():
                        continue
                    self._need_resync = False
                    try:
                        self._client.ping()
                        self._resync()
                    except self._redis_errors as exc:
                        self._set_down(exc)
                        next_try = time.monotonic() + backoff * (0.5 + random.random())
                        backoff = min(backoff * 2, _BACKOFF_MAX_S)
                        continue
                    last_resync = time.monotonic()
                    backoff = _BACKOFF_MIN_S
                    self._set_up()
                    continue
                if self._need_resync or now - last_resync >= self._resync_s:
                    self._need_resync = False
                    last_resync = now
                    self._resync()
                self._poll(connected=True)
            except self._redis_errors as exc:
                self._set_down(exc)
                next_try = time.monotonic() + backoff
            except Exception:
                logger.exception("s3kit fleet %s: background loop error", self.fleet)

    def _resync(self) -> None:
        for rec in list(self._recs.values()):
            self._reconcile(rec)

    def _poll(self, *, connected: bool) -> None:
        """Read local counters; when connected, publish what changed."""
        changed: set[str] = set()
        if connected:  # else they are kept for the re-sync
            with self._lock:
                changed, self._changed = self._changed, set()
        for rec in list(self._recs.values()):
            ep = rec.ep
            if ep.closed:
                continue
            fails = _failure_count(ep)
            succ = ep.successes
            throttles = ep.throttles
            d_fail, d_succ, d_thr = (
                fails - rec.fails_seen,
                succ - rec.succ_seen,
                throttles - rec.thr_seen,
            )
            rec.fails_seen, rec.succ_seen, rec.thr_seen = fails, succ, throttles
            if not connected:
                continue
            if not rec.synced:
                self._reconcile(rec, ep.name in changed)
            elif ep.name in changed:
                self._push(rec)
            if rec.window_until and time.monotonic() > rec.window_until:
                self._reset_window(rec)
            if self.publish_failures and d_fail > 0:
                gen, st, rem, _mc, tripped, count = self._run_script(
                    rec,
                    "count",
                    retry_s=ep.config.breaker_open_s * self._jitter(),
                    arg=d_fail,
                    extra=ep.config.circuit_breaker_threshold,
                )
                if tripped or (st == "open" and ep.breaker.state == CLOSED):
                    self._apply_state(rec, gen, st, rem, force=tripped)
                elif st != "open":
                    rec.reported = True
                    rec.own += d_fail
                    self._note_fleet_failures(rec, count)
            elif d_succ > 0 and rec.reported:
                # A success since our last report: the failures were not consecutive.
                self._client.delete(self._key("fails", rec.eid))
                self._reset_window(rec)
            if d_thr > 0:
                remaining = ep.limiter.throttled_until - self._clock.monotonic()
                if remaining > 0:
                    payload = json.dumps(
                        {"o": self._origin, "e": rec.eid, "k": "throttle", "ms": remaining * 1000}
                    )
                    self._client.publish(self._channel, payload)
                    self.published += 1
            if ep.misconfigured != rec.mc_seen:
                code = self._mc_codes.get(ep.name, rec.mc_code) if ep.misconfigured else ""
                self._publish_misconf(rec, code)
                rec.mc_seen = ep.misconfigured

    # -------------------------------------------------------------- subscriber
    def _sub_loop(self) -> None:
        backoff = _BACKOFF_MIN_S
        while not self._stop.is_set():
            pubsub: Any = None
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                self._need_resync = True
                self._sub_ready.set()
                self._wake.set()
                backoff = _BACKOFF_MIN_S
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.25)
                    if msg is not None and msg.get("type") == "message":
                        self._on_message(msg["data"])
            except self._redis_errors as exc:
                self._sub_ready.clear()
                self._set_down(exc)
            except Exception:
                self._sub_ready.clear()
                logger.exception("s3kit fleet %s: subscriber error", self.fleet)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
            self._stop.wait(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    # ------------------------------------------------------------------ prober
    def _probe_loop(self) -> None:
        tick = min(0.05, self._poll_s)
        while not self._stop.wait(tick):
            for rec in list(self._recs.values()):
                if self._stop.is_set():
                    return
                try:
                    self._maybe_probe(rec)
                except Exception:
                    logger.exception("s3kit fleet %s: prober error", self.fleet)

    def _maybe_probe(self, rec: _Rec) -> None:
        ep = rec.ep
        if ep.closed or ep.breaker.state != HALF_OPEN:
            rec.lease_lost_at = None
            return
        if not self._up:
            self._probe_locally(rec)
            return
        gen = rec.gen
        lease_s = self._probe_timeout(ep) + 5.0
        try:
            won = self._client.set(
                f"{self._key('probe', rec.eid)}:{gen}",
                self._origin,
                nx=True,
                px=int(lease_s * 1000),
            )
        except self._redis_errors as exc:
            self._set_down(exc)
            return
        if not won:
            # Another process probes this interval; its result arrives by pub/sub. If nothing
            # came for a lease's time (it died, or we missed the message), read the state.
            now = time.monotonic()
            if rec.lease_lost_at is None:
                rec.lease_lost_at = now
            elif now - rec.lease_lost_at > lease_s:
                rec.lease_lost_at = None
                try:
                    g, st, rem, _mc, _c, _n = self._run_script(rec, "read")
                except self._redis_errors as exc:
                    self._set_down(exc)
                    return
                self._apply_state(rec, g, st, rem, force=True)
            return
        rec.lease_lost_at = None
        outcome = self._probe(ep)
        self.probes_sent += 1
        self.probe_log.append((time.time(), ep.name, gen, outcome))
        try:
            g, st, rem, _mc, _c, _n = self._run_script(
                rec, "probe", arg=gen, extra=outcome, jitter=self._jitter()
            )
        except self._redis_errors as exc:
            self._set_down(exc)
            self._apply_local(rec, outcome)
            return
        self._apply_state(rec, g, st, rem, force=True)

    def _probe_locally(self, rec: _Rec) -> None:
        outcome = self._probe(rec.ep)
        self.probes_sent += 1
        self.probe_log.append((time.time(), rec.ep.name, -1, outcome))
        self._apply_local(rec, outcome)

    def _apply_local(self, rec: _Rec, outcome: str) -> None:
        """A probe result while the store is away: local breaker only, pushed on re-sync."""
        breaker = rec.ep.breaker
        cfg = rec.ep.config
        self._reset_window(rec)
        if outcome == "ok":
            rec.local_open_s = cfg.breaker_open_s
            breaker.reset()
        else:
            if outcome == "fail":
                rec.local_open_s = min(rec.local_open_s * 2, cfg.breaker_max_open_s)
            breaker.force_open(rec.local_open_s * self._jitter())
        with self._lock:
            self._changed.add(rec.ep.name)

    def _probe_timeout(self, ep: Endpoint) -> float:
        if self._probe_timeout_s is not None:
            return self._probe_timeout_s
        return min(5.0, ep.config.connect_timeout + ep.config.read_timeout)

    def _probe(self, ep: Endpoint) -> str:
        """One ListBuckets attempt, classified like a call: 'ok', 'fail' or 'throttle'."""
        try:
            ep.transport.list_buckets(self._probe_timeout(ep))
        except EndpointError as exc:
            outcome = classify(exc)
            if outcome == FAILURE:
                return "fail"
            if outcome == THROTTLE:
                return "throttle"
            return "ok"  # any other answer proves the endpoint answers
        except Exception:
            logger.exception("s3kit fleet %s: probe of %s failed unexpectedly", self.fleet, ep.name)
            return "fail"
        return "ok"
