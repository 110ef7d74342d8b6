"""Terminal rendering of stats: rich when installed (``s3kit[cli]``), plain text otherwise."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from ._stats import EndpointStats

__all__ = ["print_stats_table", "stats_table"]

_COLUMNS = (
    ("endpoint", "name"),
    ("state", "state"),
    ("req", "requests"),
    ("ok", "successes"),
    ("fail", "endpoint_failures"),
    ("4xx", "client_errors"),
    ("403", "access_errors"),
    ("slow", "throttles"),
    ("retry", "retries"),
    ("away", "failovers_away"),
    ("open", "rejected_open"),
    ("busy", "in_flight"),
    ("limit", "concurrency_limit"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
)
WIDE = 132
_STATE_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red"}


def _cell(stats: EndpointStats, attr: str) -> str:
    value = getattr(stats, attr)
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def stats_table(stats: Mapping[str, EndpointStats], title: str = "s3kit endpoints") -> Any:
    """A rich Table of the stats."""
    from rich.table import Table

    table = Table(title=title, padding=(0, 1), pad_edge=False)
    for header, _ in _COLUMNS:
        if header in ("endpoint", "state"):
            table.add_column(header, no_wrap=True, min_width=len(header) + 2)
        else:
            table.add_column(header, justify="right", no_wrap=True)
    for st in stats.values():
        cells = [_cell(st, attr) for _, attr in _COLUMNS]
        style = _STATE_STYLE.get(st.state, "")
        cells[1] = f"[{style}]{cells[1]}[/]" if style else cells[1]
        table.add_row(*cells)
    return table


def print_stats_table(stats: Mapping[str, EndpointStats], file: Any = None) -> None:
    try:
        from rich.console import Console
    except ImportError:
        out = file or sys.stdout
        rows = [[h for h, _ in _COLUMNS]]
        rows += [[_cell(st, a) for _, a in _COLUMNS] for st in stats.values()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)), file=out)
        return
    console = Console(file=file)
    if not console.is_terminal:
        console.width = max(console.width, WIDE)  # logs and pipes: do not squeeze columns
    console.print(stats_table(stats))
