"""``s3kit demo``: four local S3 servers used as one store, with a failure and a recovery.

Everything runs on 127.0.0.1 with servers the demo starts itself (nanio: it verifies SigV4 and
keeps data on disk, so a restarted server still has its objects) and stops on exit, Ctrl-C
included.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import tempfile
import time
from typing import Any

from ._errors import S3KitError
from ._events import BreakerStateChanged, Event, FailedOver
from ._mux import Multiplexer

__all__ = ["run_demo"]

BUCKET = "demo-bucket"
NAMES = ("store-a", "store-b", "store-c", "store-d")


def run_demo(*, servers: int = 4, kind: str = "nanio") -> int:
    from rich.console import Console
    from rich.table import Table

    from ._render import WIDE, stats_table
    from .testing import S3ServerPool

    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, WIDE)
    names = NAMES[:servers]
    console.rule("[bold]s3kit demo[/]: many S3 endpoints as one dependable store")
    pool = S3ServerPool(len(names), kind, buckets=[BUCKET])
    mux: Multiplexer | None = None
    try:
        with console.status(f"starting {len(names)} local {kind} S3 servers on 127.0.0.1 …"):
            pool.start()
        for name, server in zip(names, pool, strict=True):
            console.print(f"  [green]●[/] {name:8} {server.url}  ({kind}, pid {server.pid})")

        mux = Multiplexer(
            strategy="round-robin",
            max_concurrent=8,
            connect_timeout=0.5,
            read_timeout=2,
            circuit_breaker_threshold=3,
            breaker_open_s=2.0,
            backoff_base_s=0.02,
        )
        for name, server in zip(names, pool, strict=True):
            mux.add_endpoint(name, server.url, server.access_key, server.secret_key)
        failovers = collections.Counter[str]()

        def show(event: Event) -> None:
            if isinstance(event, BreakerStateChanged):
                colour = {"open": "red", "half_open": "yellow", "closed": "green"}[event.new]
                extra = f" (next probe in {event.retry_after:.1f}s)" if event.new == "open" else ""
                console.print(
                    f"  [bold {colour}]breaker {event.endpoint}: {event.old} → {event.new}[/]"
                    f"{extra}"
                )
            elif isinstance(event, FailedOver):
                failovers[event.endpoint] += 1

        mux.on_event(show)

        # 1. round-robin spreads writes in the order endpoints were added
        console.rule("1. round-robin: 12 uploads")
        spread = collections.Counter(
            mux.put_object(BUCKET, f"rr/obj-{i:02d}", f"object {i}".encode())["Endpoint"]
            for i in range(12)
        )
        _distribution(console, Table, spread, names)

        # 2. replicate one object everywhere so any store can serve it
        console.rule("2. replicate one object to every store, in parallel")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "shared.bin")
            with open(path, "wb") as fh:
                fh.write(os.urandom(256 * 1024))
            results = mux.replicate(path, BUCKET, "shared/data.bin", min_success=len(names))
        for name, outcome in results.items():
            console.print(
                f"  {name:8} success={outcome['success']} etag={outcome['result']['ETag']}"
            )

        # 3. least-loaded under threads
        console.rule("3. least-loaded: 8 threads × 20 reads")
        loaded = _load(mux, "least-loaded", 160)
        _distribution(console, Table, loaded.served, names)

        # 4. kill one store: traffic fails over, its breaker opens
        victim = names[1]
        console.rule(f"4. kill {victim} (SIGKILL) under load")
        pool[1].kill()
        console.print(f"  [red]✖ {victim} killed[/]")
        result = _load(mux, "round-robin", 240)
        _distribution(console, Table, result.served, names)
        colour = "green" if not result.failed else "red"
        console.print(
            f"  [{colour}]{result.failed} failed user requests[/] of {result.total}; "
            f"{sum(failovers.values())} transparent failovers away from {victim}; "
            f"its breaker is [bold]{mux.endpoint(victim).breaker.state}[/]"
        )

        # 5. restart it: after the open interval, one probe closes the breaker
        console.rule(f"5. restart {victim}: a single probe closes its breaker")
        pool[1].restart()
        console.print(f"  [green]● {victim} restarted[/] on the same port")
        breaker = mux.endpoint(victim).breaker
        probes_before = breaker.probes
        deadline = time.monotonic() + 15
        while breaker.state != "closed" and time.monotonic() < deadline:
            _load(mux, "round-robin", 16)
            time.sleep(0.2)
        console.print(
            f"  probes sent: {breaker.probes - probes_before}; breaker is [bold]{breaker.state}[/]"
        )
        result = _load(mux, "round-robin", 80)
        _distribution(console, Table, result.served, names)

        console.rule("final stats")
        console.print(stats_table(mux.stats()))
        return 0 if result.failed == 0 and breaker.state == "closed" else 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping the servers[/]")
        return 130
    except S3KitError as exc:
        console.print(f"[red]demo failed: {exc}[/]")
        return 1
    finally:
        if mux is not None:
            mux.close()
        pool.stop()
        console.print("servers stopped.")


class _LoadResult:
    def __init__(self) -> None:
        self.served: collections.Counter[str] = collections.Counter()
        self.failed = 0
        self.total = 0


def _load(mux: Multiplexer, strategy: str, count: int, threads: int = 8) -> _LoadResult:
    result = _LoadResult()

    def one(_: int) -> str | None:
        try:
            return str(mux.get_object(BUCKET, "shared/data.bin", strategy=strategy)["Endpoint"])
        except S3KitError:
            return None

    with concurrent.futures.ThreadPoolExecutor(threads) as executor:
        for served in executor.map(one, range(count)):
            result.total += 1
            if served is None:
                result.failed += 1
            else:
                result.served[served] += 1
    return result


def _distribution(
    console: Any, table_cls: Any, spread: collections.Counter[str], names: Any
) -> None:
    table = table_cls(show_header=True, box=None)
    table.add_column("endpoint")
    table.add_column("served", justify="right")
    table.add_column("")
    total = max(1, sum(spread.values()))
    for name in names:
        n = spread.get(name, 0)
        table.add_row(name, str(n), "█" * round(40 * n / total))
    console.print(table)
