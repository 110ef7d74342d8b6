"""``s3kit bench``: s3kit against plain boto3, side by side in one run, on local servers.

Every scenario runs its variants interleaved (A B C, A B C, …) for several repetitions and
reports medians, so a noisy shared machine shifts all variants alike. Client CPU time per
operation (``time.process_time``; the servers are other processes) is the stable figure; wall
time and ops/s are shown too.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Row", "run_bench"]

BUCKET = "bench-bucket"
KEY = "small/1k.bin"
UVLOOP = "on uvloop"  # the suffix of the asyncio rows run on uvloop


@dataclass
class Row:
    scenario: str
    variant: str
    threads: int
    ops: int
    wall_s: float
    cpu_ms_per_op: float
    ops_per_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _raw_client(url: str, ak: str, sk: str, max_pool: int = 64, session: Any = None) -> Any:
    import boto3
    import botocore.config

    return (session or boto3.session.Session()).client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
        region_name="us-east-1",
        config=botocore.config.Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},
            max_pool_connections=max_pool,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


_SESSION_LOCK = threading.Lock()
_SESSION: Any = None


def _client_per_call(url: str, ak: str, sk: str) -> Any:
    """The upstream pattern: a new client for every call, from one shared session (as
    ``boto3.client(...)`` does with the default session, whose loaded models are cached).
    Creating clients from one session is not thread-safe, hence the lock."""
    global _SESSION
    import boto3

    with _SESSION_LOCK:
        if _SESSION is None:
            _SESSION = boto3.session.Session()
        return _raw_client(url, ak, sk, session=_SESSION)


def _timed(fn: Callable[[], Any], ops: int, threads: int) -> tuple[float, float]:
    """Run ``fn`` ``ops`` times over ``threads`` threads: (wall seconds, CPU seconds).

    The threads take calls from one shared count rather than a quota each, so a thread that
    drew slow calls does not leave the others idle while it finishes (the wall time measures
    throughput, not the unluckiest thread)."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    if threads == 1:
        for _ in range(ops):
            fn()
    else:
        tickets = itertools.count()

        def worker() -> None:
            while next(tickets) < ops:  # next() on a count is atomic under the GIL
                fn()

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    return time.perf_counter() - t0, time.process_time() - cpu0


def _interleave(
    scenario: str,
    variants: dict[str, Callable[[], Any]],
    *,
    ops: int,
    threads: int,
    reps: int,
) -> list[Row]:
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for fn in variants.values():  # warm up connections and caches
        _timed(fn, max(threads, 10), threads)
    for _ in range(reps):
        for name, fn in variants.items():
            samples[name].append(_timed(fn, ops, threads))
    rows = []
    for name, runs in samples.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        rows.append(Row(scenario, name, threads, ops, wall, cpu / ops * 1e3, ops / wall))
    return rows


def _raw_obstore(url: str, ak: str, sk: str) -> Any:
    """A plain obstore store as its users would make one (retries off, as s3kit sets them)."""
    try:
        from obstore.store import S3Store
    except ImportError:
        return None
    return S3Store(
        BUCKET,
        config={
            "endpoint": url,
            "region": "us-east-1",
            "access_key_id": ak,
            "secret_access_key": sk,
            "virtual_hosted_style_request": False,
        },
        client_options={"allow_http": True},
        retry_config={"max_retries": 0},
    )


# Raw obstore that also reads what s3kit returns: the answer's metadata and attributes
# (ETag, size, Last-Modified, Content-Type, user metadata). Converting those to Python objects
# is part of obstore's cost; the bare "obstore raw" GET reads none of it.
RAW_META = "obstore raw + metadata"
# s3kit's download_file is durable: a temp file, fsynced, then renamed. Raw obstore (and
# s3transfer) leave the bytes in the page cache; this row does what s3kit does, by hand.
RAW_FSYNC = "obstore raw + fsync"
S3T_FSYNC = "boto3 s3transfer + fsync"
# s3kit's download_file(fsync=False): the same work as the bare raw rows (what s3kit's own
# copies through a scratch file use).
KIT_NOSYNC = "s3kit (boto3), fsync=False"
OBSTORE_NOSYNC = "s3kit (obstore), fsync=False"
NOSYNC = (KIT_NOSYNC, OBSTORE_NOSYNC)
# What each s3kit row is also compared with, besides plain boto3: its library used raw, and
# used raw doing the same work s3kit must do.
RAW_BASES = {
    "s3kit (obstore)": ("obstore raw", RAW_META, RAW_FSYNC),
    "s3kit (boto3)": (S3T_FSYNC,),
    OBSTORE_NOSYNC: ("obstore raw",),
}
_HEAD: Any = {"head": True}


def _read_meta(result: Any, body: bool = False) -> Any:
    data = result.bytes() if body else None
    return result.meta, result.attributes, data


def bench_small(
    url: str, ak: str, sk: str, *, ops: int, reps: int, threads: Sequence[int]
) -> list[Row]:
    """HEAD and GET of a 1 KiB object: s3kit vs a shared boto3 client vs a client per call,
    and, when obstore is installed, s3kit's obstore transport vs raw obstore."""
    from ._compat import s3_kit

    shared = _raw_client(url, ak, sk)
    shared.put_object(Bucket=BUCKET, Key=KEY, Body=os.urandom(1024))
    kit = s3_kit()
    handler = kit.create_s3_endpoint_handler(url, ak, sk, max_concurrent=64)
    store = _raw_obstore(url, ak, sk)
    fast = (
        kit.create_s3_endpoint_handler(url, ak, sk, max_concurrent=64, transport="obstore")
        if store is not None
        else None
    )
    rows: list[Row] = []
    for op in ("head", "get"):
        variants: dict[str, Callable[[], Any]]
        if op == "head":
            variants = {
                "boto3 shared client": lambda: shared.head_object(Bucket=BUCKET, Key=KEY),
                "s3kit (boto3)": lambda: handler.head_object(BUCKET, KEY),
                "boto3 client per call": lambda: _client_per_call(url, ak, sk).head_object(
                    Bucket=BUCKET, Key=KEY
                ),
            }
        else:
            variants = {
                "boto3 shared client": lambda: shared.get_object(Bucket=BUCKET, Key=KEY)[
                    "Body"
                ].read(),
                "s3kit (boto3)": lambda: handler.get_object(BUCKET, KEY)["Body"],
            }
        if store is not None and fast is not None:
            import obstore

            if op == "head":
                variants["obstore raw"] = lambda: obstore.head(store, KEY)
                variants[RAW_META] = lambda: _read_meta(obstore.get(store, KEY, options=_HEAD))
                variants["s3kit (obstore)"] = lambda: fast.head_object(BUCKET, KEY)
            else:
                variants["obstore raw"] = lambda: obstore.get(store, KEY).bytes()
                variants[RAW_META] = lambda: _read_meta(obstore.get(store, KEY), body=True)
                variants["s3kit (obstore)"] = lambda: fast.get_object(BUCKET, KEY)["Body"]
        for n in threads:
            # a new client per call costs ~10-20 ms: fewer of those keep the run short
            small = {k: v for k, v in variants.items() if "per call" not in k}
            rows += _interleave(f"small {op}", small, ops=ops, threads=n, reps=reps)
            if len(small) < len(variants):
                rows += _interleave(
                    f"small {op}",
                    {k: v for k, v in variants.items() if "per call" in k},
                    ops=max(n, ops // 10),
                    threads=n,
                    reps=reps,
                )
    handler.close()
    if fast is not None:
        fast.close()
    return rows


class _RssPeak:
    """The peak resident memory above the level at start, in MiB, sampled every 5 ms.

    ``ru_maxrss`` cannot tell: it keeps the peak of the process's whole life, and importing
    boto3 and obstore alone reaches more than a streamed transfer adds (it read 0.0 growth).
    """

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._start = self.peak = self._now()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()

    def _now(self) -> int:
        if sys.platform != "linux":  # no /proc: the lifetime peak is all there is
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return peak if sys.platform == "darwin" else peak * 1024  # bytes there, KiB elsewhere
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, self._now())

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._now())
        return (self.peak - self._start) / (1024 * 1024)


def _large_child(args: tuple[str, str, str, str, str, int]) -> tuple[float, float]:
    """Run one large transfer in a fresh process: (seconds, peak RSS growth in MiB)."""
    variant, direction, url, ak, sk, size_mb = args
    from s3transfer.manager import TransferConfig, TransferManager

    from ._compat import s3_kit
    from ._transport._boto3 import MULTIPART_THRESHOLD, TRANSFER_CONCURRENCY

    tmp = tempfile.mkdtemp(prefix="s3kit-bench-")
    src = os.path.join(tmp, "big.bin")
    if direction == "up":
        _write_random(src, size_mb)
        key = f"large/{variant.replace(' ', '_')}.bin"
    else:
        key = DOWN_KEY  # uploaded once by the parent
    client = _raw_client(url, ak, sk)
    transport = "obstore" if variant.startswith("s3kit (obstore)") else "boto3"
    handler = s3_kit().create_s3_endpoint_handler(url, ak, sk, transport=transport)
    # Start every transfer on a quiet disk: a source file just written and the server's copy
    # of an upload would otherwise be written back during the timed transfer, by chance more
    # during one variant than another.
    os.sync()
    rss = _RssPeak()
    t0 = time.perf_counter()
    dst = os.path.join(tmp, "out.bin")
    if variant in ("boto3 s3transfer", S3T_FSYNC):
        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_THRESHOLD,
            max_request_concurrency=TRANSFER_CONCURRENCY,
        )
        with TransferManager(client, config) as manager:
            if direction == "up":
                manager.upload(src, BUCKET, key).result()
            else:
                manager.download(BUCKET, key, dst).result()
        if variant == S3T_FSYNC:  # s3transfer renamed its temp file into place
            with open(dst, "rb+") as fh:
                os.fsync(fh.fileno())
    elif variant in ("obstore raw", RAW_FSYNC):
        _obstore_transfer(direction, url, ak, sk, key, src, dst, durable=variant == RAW_FSYNC)
    elif direction == "up":
        handler.upload_file(src, BUCKET, key)
    else:
        handler.download_file(BUCKET, key, dst, fsync=variant not in NOSYNC)
    seconds = time.perf_counter() - t0
    growth = rss.stop()
    for name in os.listdir(tmp):
        os.unlink(os.path.join(tmp, name))
    os.rmdir(tmp)
    return seconds, growth


DOWN_KEY = "large/download.bin"


def _write_random(path: str, size_mb: int) -> None:
    with open(path, "wb") as fh:
        for _ in range(size_mb):
            fh.write(os.urandom(1024 * 1024))


def bench_large(url: str, ak: str, sk: str, *, size_mb: int, reps: int) -> list[Row]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory(prefix="s3kit-bench-") as tmp:
        src = os.path.join(tmp, "big.bin")
        _write_random(src, size_mb)
        _raw_client(url, ak, sk).upload_file(src, BUCKET, DOWN_KEY)  # what every download gets
    # maxtasksperchild=1: a new process for every transfer. A reused one would measure each
    # transfer's RSS growth from the peak an earlier transfer left (ru_maxrss never falls).
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        for direction in ("up", "down"):
            samples: dict[str, list[tuple[float, float]]] = {}
            for _ in range(reps):
                for variant in _large_variants(direction):
                    job = (variant, direction, url, ak, sk, size_mb)
                    samples.setdefault(variant, []).append(pool.apply(_large_child, (job,)))
            for variant, runs in samples.items():
                wall = statistics.median(s for s, _ in runs)
                rss = max(g for _, g in runs)
                rows.append(
                    Row(
                        f"large {direction} {size_mb} MiB",
                        variant,
                        1,
                        1,
                        wall,
                        0.0,
                        1 / wall,
                        {"MB_per_s": size_mb * 1.048576 / wall, "rss_growth_mib": rss},
                    )
                )
    return rows


def bench_failover(urls: list[tuple[str, str, str]], kill: Callable[[], None]) -> list[Row]:
    """8 threads of routed GETs over the endpoints; one is killed mid-run."""
    from ._errors import CircuitOpenError, S3KitError
    from ._mux import Multiplexer

    mux = Multiplexer(
        connect_timeout=0.5,
        read_timeout=2,
        circuit_breaker_threshold=3,
        breaker_open_s=30,
        backoff_base_s=0.02,
        max_concurrent=16,
    )
    for i, (url, ak, sk) in enumerate(urls):
        mux.add_endpoint(f"ep{i}", url, ak, sk)
        _raw_client(url, ak, sk).put_object(Bucket=BUCKET, Key=KEY, Body=b"x" * 1024)
    errors = 0
    done = 0
    lock = threading.Lock()
    stop = threading.Event()
    opened_at: list[float] = []
    mux.on_event(
        lambda e: (
            opened_at.append(time.perf_counter()) if getattr(e, "new", None) == "open" else None
        )
    )

    def worker() -> None:
        nonlocal errors, done
        while not stop.is_set():
            try:
                mux.get_object(BUCKET, KEY)
                ok = True
            except S3KitError:
                ok = False
            with lock:
                done += 1
                errors += not ok

    threads = [threading.Thread(target=worker) for _ in range(8)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(1.0)
    killed_at = time.perf_counter()
    kill()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    dead = mux.endpoint("ep1")
    rejected: list[float] = []
    for _ in range(2000):
        started = time.perf_counter()
        try:
            dead.head_object(BUCKET, KEY)
        except CircuitOpenError:
            rejected.append(time.perf_counter() - started)
    mux.close()
    rejected.sort()
    extra = {
        "user_errors": errors,
        "kill_to_open_ms": (opened_at[0] - killed_at) * 1e3 if opened_at else None,
        "failed_attempts_on_dead": dead.stats().endpoint_failures,
        "open_reject_p50_us": rejected[len(rejected) // 2] * 1e6 if rejected else None,
        "open_reject_p99_us": rejected[int(len(rejected) * 0.99)] * 1e6 if rejected else None,
    }
    return [
        Row("failover (1 of 4 killed)", "s3kit round-robin", 8, done, wall, 0.0, done / wall, extra)
    ]


def bench_routing(servers: list[tuple[str, str, str, int]], *, ops: int, reps: int) -> list[Row]:
    """16 threads over 4 endpoints behind fault proxies: each strategy with equal endpoints,
    then with one endpoint made 5x slower (added latency on every request)."""
    from ._mux import Multiplexer
    from ._proxy import FaultProxy

    proxies = [FaultProxy(port).start() for _, _, _, port in servers]
    rows: list[Row] = []
    try:
        for url, ak, sk, _ in servers:
            _raw_client(url, ak, sk).put_object(Bucket=BUCKET, Key=KEY, Body=b"x" * 1024)
        # obstore when installed: with boto3, 16 threads queue for the GIL (~2 ms of CPU per
        # call) and that queueing, equal for every endpoint, hides the servers' latency
        first_url, first_ak, first_sk, _ = servers[0]
        transport = (
            "obstore" if _raw_obstore(first_url, first_ak, first_sk) is not None else "boto3"
        )
        muxes = {}
        for strategy in ("round-robin", "least-loaded", "latency"):
            mux = Multiplexer(
                strategy=strategy, max_concurrent=16, read_timeout=5, transport=transport
            )
            for i, ((_, ak, sk, _), proxy) in enumerate(zip(servers, proxies, strict=True)):
                mux.add_endpoint(f"ep{i}", proxy.url, ak, sk)
            muxes[strategy] = mux
        typical = 0.0
        learning: dict[str, int] = {}
        last = f"ep{len(servers) - 1}"  # the endpoint made slow
        for setting in ("equal", "one 5x slower"):
            if setting != "equal":
                # "5x slower": four times the median latency the equal run saw under the
                # same load added to every request of the last endpoint
                proxies[-1].set_mode("latency", delay_s=4 * typical)
                # Steady state is measured: each strategy first learns the new latencies
                # (the calls the slow endpoint took while it learned are reported apart).
                for name, mux in muxes.items():
                    before = mux.stats()[last].requests
                    _timed(functools.partial(mux.get_object, BUCKET, KEY), ops // 2, 16)
                    learning[name] = mux.stats()[last].requests - before
            latencies: dict[str, list[float]] = {name: [] for name in muxes}
            walls: dict[str, list[float]] = {name: [] for name in muxes}
            slow_before = {name: mux.stats()[last].requests for name, mux in muxes.items()}
            for _ in range(reps):
                for name, mux in muxes.items():
                    lat: list[float] = []

                    def one(m: Multiplexer = mux, out: list[float] = lat) -> None:
                        t0 = time.perf_counter()
                        m.get_object(BUCKET, KEY)
                        out.append(time.perf_counter() - t0)  # list.append is atomic

                    wall, _cpu = _timed(one, ops, 16)
                    latencies[name] += lat
                    walls[name].append(wall)
            if setting == "equal":
                typical = statistics.median(latencies["round-robin"])
            for name in muxes:
                lat = sorted(latencies[name])
                done = len(lat) // reps
                wall = statistics.median(walls[name])
                rows.append(
                    Row(
                        f"routing, {setting}",
                        name,
                        16,
                        done,
                        wall,
                        0.0,
                        done / wall,
                        {
                            "p50_ms": lat[len(lat) // 2] * 1e3,
                            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
                            "typical_ms": typical * 1e3,
                            "transport": transport,
                            # share of the measured calls the last (slow) endpoint served
                            "last_ep_share_pct": 100.0
                            * (muxes[name].stats()[last].requests - slow_before[name])
                            / max(1, len(latencies[name])),
                            **({"learning_calls_on_slow": learning[name]} if learning else {}),
                        },
                    )
                )
        for mux in muxes.values():
            mux.close()
    finally:
        for proxy in proxies:
            proxy.stop()
    return rows


def bench_scaling(
    url: str, ak: str, sk: str, *, ops: int, reps: int, threads: Sequence[int]
) -> list[Row]:
    from ._compat import s3_kit

    shared = _raw_client(url, ak, sk)
    handler = s3_kit().create_s3_endpoint_handler(url, ak, sk, max_concurrent=64)
    rows: list[Row] = []
    for n in threads:
        rows += _interleave(
            "scaling GET",
            {
                "boto3 shared client": lambda: shared.get_object(Bucket=BUCKET, Key=KEY)[
                    "Body"
                ].read(),
                "s3kit (boto3)": lambda: handler.get_object(BUCKET, KEY),
            },
            ops=max(ops, n * 10),
            threads=n,
            reps=reps,
        )
    handler.close()
    return rows


def _ratios(rows: list[Row]) -> list[dict[str, Any]]:
    """Every variant against plain boto3 in the same group, and each s3kit transport against
    the raw rows of its library (doing the same work): CPU per op and throughput ratios."""
    out = []
    plain = ("boto3 shared client", "boto3 s3transfer")
    by = {(r.scenario, r.threads, r.variant): r for r in rows}
    for r in rows:
        if r.variant in plain:
            continue
        names = [*plain, *RAW_BASES.get(r.variant, ())]
        for b in (by.get((r.scenario, r.threads, name)) for name in names):
            if b is None:
                continue
            ratio: dict[str, Any] = {
                "scenario": r.scenario,
                "variant": f"{r.variant} / {b.variant}",
                "threads": r.threads,
            }
            if b.cpu_ms_per_op and r.cpu_ms_per_op:
                ratio["cpu_ratio"] = r.cpu_ms_per_op / b.cpu_ms_per_op
            ratio["throughput_ratio"] = r.ops_per_s / b.ops_per_s
            out.append(ratio)
    return out


def run_bench(
    *,
    server: str = "moto",
    scenarios: Sequence[str] = ("small", "async", "large", "routing", "failover", "scaling"),
    ops: int = 300,
    reps: int = 3,
    size_mb: int = 256,
    as_json: bool = False,
    as_markdown: bool = False,
) -> int:
    from .testing import S3ServerPool

    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    rows: list[Row] = []
    n_servers = 4 if "failover" in scenarios or "routing" in scenarios else 1
    with S3ServerPool(n_servers, server, buckets=[BUCKET]) as pool:
        s0 = pool[0]
        creds = (s0.url, s0.access_key, s0.secret_key)
        _raw_client(*creds).put_object(Bucket=BUCKET, Key=KEY, Body=os.urandom(1024))
        if "small" in scenarios:
            rows += bench_small(*creds, ops=ops, reps=reps, threads=(1, 8))
        if "async" in scenarios:
            rows += bench_async(*creds, ops=ops, reps=reps)
        if "large" in scenarios:
            rows += bench_large(*creds, size_mb=size_mb, reps=max(1, reps - 1))
        if "routing" in scenarios:
            rows += bench_routing(
                [(s.url, s.access_key, s.secret_key, s.port) for s in pool], ops=ops, reps=reps
            )
        if "scaling" in scenarios:
            rows += bench_scaling(*creds, ops=ops, reps=reps, threads=(1, 2, 4, 8, 16, 32))
        if "failover" in scenarios:
            rows += bench_failover(
                [(s.url, s.access_key, s.secret_key) for s in pool], pool[1].kill
            )
    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "server": server,
        "date": time.strftime("%Y-%m-%d"),
        "rows": [r.as_dict() for r in rows],
        "ratios": _ratios(rows) + _async_ratios(rows),
    }
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    elif as_markdown:
        print(markdown_report(report), end="")
    else:
        _print_report(report)
    return 0


def markdown_report(report: dict[str, Any]) -> str:
    """The report as Markdown tables (for docs/benchmarks.md)."""
    out = [
        f"Server: {report['server']} · {report['machine']['cpus']} CPUs · "
        f"Python {report['machine']['python']} · {report['date']}",
        "",
        "| scenario | variant | threads | ops | ops/s | client CPU ms/op | other |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        extra = ", ".join(
            f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in r["extra"].items()
        )
        cpu = f"{r['cpu_ms_per_op']:.3f}" if r["cpu_ms_per_op"] else ""
        out.append(
            f"| {r['scenario']} | {r['variant']} | {r['threads']} | {r['ops']} | "
            f"{r['ops_per_s']:.0f} | {cpu} | {extra} |"
        )
    out += [
        "",
        "| scenario | ratio | threads | CPU ratio | throughput ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for r in report["ratios"]:
        cpu = f"{r['cpu_ratio']:.2f}" if "cpu_ratio" in r else ""
        out.append(
            f"| {r['scenario']} | {r['variant']} | {r['threads']} | {cpu} | "
            f"{r['throughput_ratio']:.2f} |"
        )
    return "\n".join(out) + "\n"


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"s3kit bench on {report['server']} ({report['machine']['cpus']} cpus)")
    for col in ("scenario", "variant", "threads", "ops", "ops/s", "cpu ms/op", "extra"):
        table.add_column(
            col, justify="right" if col in ("threads", "ops", "ops/s", "cpu ms/op") else "left"
        )
    for r in report["rows"]:
        extra = ", ".join(
            f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in r["extra"].items()
        )
        table.add_row(
            r["scenario"],
            r["variant"],
            str(r["threads"]),
            str(r["ops"]),
            f"{r['ops_per_s']:.0f}",
            f"{r['cpu_ms_per_op']:.3f}" if r["cpu_ms_per_op"] else "",
            extra,
        )
    console.print(table)
    ratios = Table(title="ratios, measured side by side in the same run")
    for col in ("scenario", "threads", "cpu ratio", "throughput ratio"):
        ratios.add_column(col)
    for r in report["ratios"]:
        ratios.add_row(
            f"{r['scenario']}: {r['variant']}",
            str(r["threads"]),
            f"{r['cpu_ratio']:.2f}" if "cpu_ratio" in r else "",
            f"{r['throughput_ratio']:.2f}",
        )
    console.print(ratios)


# ------------------------------------------------------------------- async scenario
def _uvloop() -> Any:
    """The ``uvloop`` module when installed (the ``async`` extra), else None."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def _timed_async(
    make: Callable[[], Any], ops: int, in_flight: int, loop: str = "asyncio"
) -> tuple[float, float]:
    """Run ``ops`` awaits of ``make()`` with ``in_flight`` at once on a new event loop of
    kind ``loop`` (asyncio's default, or uvloop): (wall s, CPU s)."""
    import asyncio

    per = ops // in_flight

    async def main() -> tuple[float, float]:
        async def worker() -> None:
            for _ in range(per):
                await make()

        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return time.perf_counter() - t0, time.process_time() - cpu0

    if loop == "uvloop":
        result: tuple[float, float] = _uvloop().run(main())
        return result
    return asyncio.run(main())


def bench_async(
    url: str, ak: str, sk: str, *, ops: int, reps: int, in_flight: int = 64, threads: int = 8
) -> list[Row]:
    """Small GETs: asyncio with ``in_flight`` at once through AsyncMultiplexer on obstore and
    with raw obstore ``get_async``, against s3kit/obstore and raw boto3 on ``threads``
    threads (all interleaved in the same run). The asyncio rows run on asyncio's default
    loop and, when uvloop is installed, again on uvloop."""
    from ._async import AsyncMultiplexer
    from ._mux import Multiplexer

    store = _raw_obstore(url, ak, sk)
    if store is None:
        return []
    import obstore

    shared = _raw_client(url, ak, sk)
    shared.put_object(Bucket=BUCKET, Key=KEY, Body=os.urandom(1024))
    options: dict[str, Any] = {"transport": "obstore", "max_concurrent": 2 * in_flight}
    threaded = Multiplexer({"ep0": {"url": url, "access_key": ak, "secret_key": sk}}, **options)
    amux = AsyncMultiplexer(
        {"ep0": {"url": url, "access_key": ak, "secret_key": sk}}, max_workers=threads, **options
    )

    async def raw_get() -> Any:
        result = await obstore.get_async(store, KEY)
        return await result.bytes_async()

    sync: dict[str, Callable[[], Any]] = {
        "boto3 shared client": lambda: shared.get_object(Bucket=BUCKET, Key=KEY)["Body"].read(),
        "s3kit (obstore)": lambda: threaded.get_object(BUCKET, KEY)["Body"],
    }
    coros: dict[str, tuple[Callable[[], Any], str]] = {
        "obstore raw async": (raw_get, "asyncio"),
        "s3kit async (obstore)": (lambda: amux.get_object(BUCKET, KEY), "asyncio"),
    }
    if _uvloop() is not None:
        coros[f"obstore raw async {UVLOOP}"] = (raw_get, "uvloop")
        coros[f"s3kit async (obstore) {UVLOOP}"] = (lambda: amux.get_object(BUCKET, KEY), "uvloop")
    n_ops = max(2 * ops, 2 * in_flight)  # twice the small rows: asyncio needs whole rounds
    n_ops -= n_ops % in_flight
    samples: dict[str, list[tuple[float, float]]] = {n: [] for n in (*sync, *coros)}
    for fn in sync.values():  # warm up connections and caches
        _timed(fn, threads * 4, threads)
    for make, loop in coros.values():
        _timed_async(make, in_flight * 2, in_flight, loop)
    for _ in range(reps):
        for name, fn in sync.items():
            samples[name].append(_timed(fn, n_ops, threads))
        for name, (make, loop) in coros.items():
            samples[name].append(_timed_async(make, n_ops, in_flight, loop))
    threaded.close()
    import asyncio

    asyncio.run(amux.close())
    rows = []
    for name, runs in samples.items():
        width = in_flight if name in coros else threads
        done = (n_ops // width) * width
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        extra = {"in_flight": width, "mode": coros[name][1] if name in coros else "threads"}
        rows.append(
            Row("async small get", name, width, done, wall, cpu / done * 1e3, done / wall, extra)
        )
    return rows


def _async_ratios(rows: list[Row]) -> list[dict[str, Any]]:
    """The asyncio rows against the threaded ones (different widths: not in ``_ratios``)."""
    by = {r.variant: r for r in rows if r.scenario == "async small get"}
    pairs = [
        (mine, base)
        for suffix in ("", f" {UVLOOP}")
        for mine, base in (
            (f"s3kit async (obstore){suffix}", "s3kit (obstore)"),
            (f"s3kit async (obstore){suffix}", f"obstore raw async{suffix}"),
            (f"s3kit async (obstore){suffix}", "boto3 shared client"),
            (f"obstore raw async{suffix}", "boto3 shared client"),
        )
    ]
    out = []
    for mine_name, base_name in pairs:
        mine, base = by.get(mine_name), by.get(base_name)
        if mine is None or base is None:
            continue
        out.append(
            {
                "scenario": mine.scenario,
                "variant": f"{mine.variant} / {base.variant}",
                "threads": f"{mine.threads} vs {base.threads}",
                "cpu_ratio": mine.cpu_ms_per_op / base.cpu_ms_per_op,
                "throughput_ratio": mine.ops_per_s / base.ops_per_s,
            }
        )
    return out


# ------------------------------------------------------- large: the obstore variants
def _large_variants(direction: str) -> tuple[str, ...]:
    """boto3's, and obstore's when the extra is installed; for downloads, the raw rows + fsync
    and s3kit's with fsync=False (each side doing the other's work)."""
    variants = ["boto3 s3transfer", S3T_FSYNC, "s3kit (boto3)", KIT_NOSYNC]
    try:
        import obstore  # noqa: F401
    except ImportError:
        pass
    else:
        variants += ["obstore raw", RAW_FSYNC, "s3kit (obstore)", OBSTORE_NOSYNC]
    if direction == "up":  # durability is a download's cost: nothing to compare on uploads
        variants = [v for v in variants if v not in (S3T_FSYNC, RAW_FSYNC, *NOSYNC)]
    return tuple(variants)


def _obstore_transfer(
    direction: str, url: str, ak: str, sk: str, key: str, src: str, dst: str, durable: bool
) -> None:
    """A large transfer as an obstore user would write it, with s3kit's part size and
    concurrency: a multipart upload of the file, or a streamed download into a file (when
    ``durable``, into a temp file that is fsynced and renamed, as s3kit's download_file does)."""
    from pathlib import Path

    import obstore

    from ._transport._boto3 import CHUNK, MULTIPART_THRESHOLD
    from ._transport._obstore import UPLOAD_CONCURRENCY

    store = _raw_obstore(url, ak, sk)
    if direction == "up":
        obstore.put(
            store,
            key,
            Path(src),
            use_multipart=True,
            chunk_size=MULTIPART_THRESHOLD,
            max_concurrency=UPLOAD_CONCURRENCY,
        )
        return
    target = dst + ".part" if durable else dst
    with open(target, "wb") as fh:
        for chunk in obstore.get(store, key).stream(min_chunk_size=CHUNK):
            fh.write(chunk)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    if durable:
        os.replace(target, dst)
