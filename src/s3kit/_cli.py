"""The ``s3kit`` command. Exit codes: 0 ok, 1 partial failure, 2 usage or configuration error."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s3kit", description="Many S3-compatible stores used as one dependable store."
    )
    parser.add_argument("--version", action="version", version=f"s3kit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo", help="start local S3 servers and show routing, failover and recovery"
    )
    demo.add_argument("--servers", type=int, default=4, choices=(2, 3, 4))
    demo.add_argument("--server", dest="kind", default="nanio", choices=("nanio", "moto"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        try:
            from ._demo import run_demo
        except ImportError as exc:  # rich or the servers are missing
            print(
                f"s3kit demo needs the cli extra (pip install 's3kit[cli]'): {exc}", file=sys.stderr
            )
            return 2
        return run_demo(servers=args.servers, kind=args.kind)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
