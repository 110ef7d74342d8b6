"""The ``s3kit`` command. Exit codes: 0 ok, 1 partial failure, 2 usage or configuration error.

Paths: ``s3://bucket/key`` is routed by the configured strategy (or sent to ``--endpoint``),
``NAME:bucket/key`` goes to the endpoint ``NAME`` (rclone's habit), anything else is a local path
(write ``./a:b`` for a local file whose name has a colon). The configuration file is found by
``--config``, then ``$S3KIT_CONFIG``, then ``./s3kit.toml`` (see ``docs/configuration.md``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from ._errors import ConfigError, InvalidArgument, S3KitError

if TYPE_CHECKING:
    from ._mux import Multiplexer

__all__ = ["main"]

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2

# Keys per DeleteObjects request of `rm -r` (S3's limit), and per listing page.
_DELETE_BATCH = 1000

_NAMED = re.compile(r"([^/\\:]+):(.*)", re.DOTALL)
_ONE_LINE = re.compile(r"\s*\n\s*")


class UsageError(Exception):
    """A command line that cannot work (exit code 2)."""


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors on one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ------------------------------------------------------------------------------- parsing
def _add_globals(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On the top parser these set the defaults; repeated on each command (defaults suppressed)
    # so that both `s3kit --json ls …` and `s3kit ls … --json` work.
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--config",
        metavar="PATH",
        default=default(None),
        help="configuration file (default: $S3KIT_CONFIG, then ./s3kit.toml)",
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="print machine-readable JSON"
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="log the s3kit logger to stderr (-v info, -vv debug)",
    )
    group.add_argument(
        "--endpoint",
        metavar="NAME",
        default=default(None),
        help="send s3:// paths to this endpoint instead of routing them",
    )
    group.add_argument(
        "--strategy",
        metavar="NAME",
        default=default(None),
        help="routing strategy for s3:// paths (overrides the configuration's)",
    )


def _add_bulk_options(parser: argparse.ArgumentParser, note: str = "") -> None:
    """The options of the bulk verbs (sync, and replicate/repair in their bulk form)."""
    parser.add_argument(
        "--workers", type=int, metavar="N", help=f"worker processes (1; with --dask local: 2){note}"
    )
    parser.add_argument(
        "--dask", metavar="ADDR", help=f"a Dask scheduler (tcp://host:8786), or 'local'{note}"
    )
    parser.add_argument(
        "--state",
        metavar="s3|sqlite|PATH",
        help="resume state: 's3' (objects under .s3kit-sync/ in the destination), "
        "'sqlite' (the default local file) or a SQLite file",
    )
    parser.add_argument("--shard-size", type=int, default=1000, metavar="N", help="keys per shard")


def _parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="s3kit", description="Many S3-compatible stores used as one dependable store."
    )
    parser.add_argument("--version", action="version", version=f"s3kit {__version__}")
    _add_globals(parser, top=True)
    common = _ArgumentParser(add_help=False)
    _add_globals(common, top=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)

    ls = sub.add_parser("ls", parents=[common], help="list buckets, or objects under a prefix")
    ls.add_argument("path", nargs="?", default="s3://", help="s3://bucket/prefix or NAME:bucket")
    ls.add_argument(
        "-r", "--recursive", action="store_true", help="every key under the prefix, not one level"
    )

    cp = sub.add_parser("cp", parents=[common], help="copy files to, from or between stores")
    cp.add_argument("src")
    cp.add_argument("dst")
    cp.add_argument(
        "-r", "--recursive", action="store_true", help="copy a directory or a whole prefix"
    )
    cp.add_argument(
        "-j", "--jobs", type=int, default=4, metavar="N", help="files in flight at once (4)"
    )

    rm = sub.add_parser("rm", parents=[common], help="delete an object (or a prefix with -r)")
    rm.add_argument("path")
    rm.add_argument("-r", "--recursive", action="store_true", help="every key under the prefix")

    stat = sub.add_parser("stat", parents=[common], help="show an object's metadata (HEAD)")
    stat.add_argument("path")

    replicate = sub.add_parser(
        "replicate",
        parents=[common],
        help="upload one local file to every endpoint (or --to NAME ...) in parallel; "
        "or, given NAME:BUCKET[/PREFIX] alone, copy that prefix to them (bulk, resumable)",
    )
    replicate.add_argument("file", metavar="FILE|NAME:BUCKET[/PREFIX]")
    replicate.add_argument("dst", metavar="s3://BUCKET/KEY", nargs="?", default=None)
    replicate.add_argument(
        "--to", dest="targets", action="append", metavar="NAME", help="only these endpoints"
    )
    replicate.add_argument(
        "--min-success", type=int, default=None, metavar="N", help="fail unless N succeed"
    )
    _add_bulk_options(replicate)

    presign = sub.add_parser(
        "presign", parents=[common], help="print a presigned GET URL (signed locally)"
    )
    presign.add_argument("path")
    presign.add_argument(
        "--expires", type=int, default=3600, metavar="SECONDS", help="lifetime (3600)"
    )

    health = sub.add_parser(
        "health", parents=[common], help="probe every endpoint; exit 1 if any is down"
    )
    health.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")
    health.add_argument("--bucket", help="probe by listing this bucket instead of ListBuckets")

    stats = sub.add_parser(
        "stats", parents=[common], help="per-endpoint state and counters (after one probe)"
    )
    stats.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")

    repair = sub.add_parser(
        "repair",
        parents=[common],
        help="bring replica-set members level: replay the ledger, copy what is missing or stale",
    )
    repair.add_argument("path", metavar="BUCKET[/PREFIX]", help="bucket, or bucket/prefix")
    repair.add_argument(
        "--dry-run", action="store_true", help="change nothing; show what would be done"
    )
    repair.add_argument("--group", metavar="NAME", help="only this replica set (default: all)")
    _add_bulk_options(repair, note=" (bulk repair: sharded, parallel, resumable)")

    sync = sub.add_parser(
        "sync", parents=[common], help="make DST hold what SRC holds (sharded, parallel, resumable)"
    )
    sync.add_argument("src", metavar="SRC", help="NAME:bucket[/prefix]")
    sync.add_argument("dst", metavar="DST", help="NAME:bucket[/prefix]")
    sync.add_argument("--delete", action="store_true", help="delete DST keys that SRC lacks")
    sync.add_argument("--dry-run", action="store_true", help="change nothing; print the plan")
    _add_bulk_options(sync)

    cleanup = sub.add_parser(
        "cleanup",
        parents=[common],
        help="list and abort stale multipart uploads (per endpoint)",
    )
    cleanup.add_argument(
        "path",
        metavar="NAME:BUCKET[/PREFIX]",
        help="one endpoint's bucket, or s3://BUCKET[/PREFIX] for every endpoint",
    )
    cleanup.add_argument(
        "--older-than",
        default="24h",
        metavar="AGE",
        help="abort uploads started longer ago than this: 90s, 30m, 24h, 7d (24h)",
    )
    cleanup.add_argument(
        "--dry-run", action="store_true", help="abort nothing; list what would be aborted"
    )

    metrics = sub.add_parser(
        "serve-metrics",
        parents=[common],
        help="serve Prometheus metrics of the configured endpoints, with health checks",
    )
    metrics.add_argument("--port", type=int, default=9464)
    metrics.add_argument("--addr", default="127.0.0.1", help="listen address (127.0.0.1)")
    metrics.add_argument(
        "--interval", type=float, default=10.0, metavar="SECONDS", help="health checks (10)"
    )
    metrics.add_argument(
        "--duration", type=float, default=None, metavar="SECONDS", help="stop after this long"
    )

    demo = sub.add_parser(
        "demo", help="start local S3 servers and show routing, failover and recovery"
    )
    demo.add_argument("--servers", type=int, default=4, choices=(2, 3, 4))
    demo.add_argument("--server", dest="kind", default="nanio", choices=("nanio", "moto"))
    bench = sub.add_parser(
        "bench", help="measure s3kit against plain boto3 (and obstore), side by side, locally"
    )
    bench.add_argument(
        "--server", dest="kind", default="moto", choices=("moto", "nanio", "seaweedfs")
    )
    bench.add_argument(
        "--scenario",
        dest="scenarios",
        action="append",
        choices=("small", "async", "large", "routing", "scaling", "failover"),
        help="run only these (repeatable); default: all",
    )
    bench.add_argument("--ops", type=int, default=300, help="operations per variant and run")
    bench.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    bench.add_argument("--size-mb", type=int, default=256, help="object size of 'large'")
    bench.add_argument("--json", dest="bench_json", action="store_true", help="JSON output")
    bench.add_argument(
        "--markdown", action="store_true", help="Markdown tables (as in docs/benchmarks.md)"
    )
    bench.add_argument("suite", nargs="?", choices=("bulk",), help="'bulk': the sync benchmark")
    bench.add_argument("--objects", type=int, default=5000, help="objects of the bulk benchmark")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "demo":
        try:
            from ._demo import run_demo
        except ImportError as exc:  # rich or the servers are missing
            print(
                f"s3kit demo needs the cli extra (pip install 's3kit[cli]'): {exc}", file=sys.stderr
            )
            return 2
        return run_demo(servers=args.servers, kind=args.kind)
    if args.command == "bench":
        from ._bench import run_bench

        if args.suite == "bulk":
            from .bulk import run_bench_bulk

            return run_bench_bulk(
                objects=args.objects,
                server=args.kind,
                as_json=args.bench_json or bool(getattr(args, "json", False)),
            )

        if args.ops < 8 or args.reps < 1 or args.size_mb < 1:
            _error("bench: --ops must be >= 8, --reps and --size-mb >= 1")
            return EXIT_USAGE
        return run_bench(
            server=args.kind,
            scenarios=args.scenarios
            or ("small", "async", "large", "routing", "scaling", "failover"),
            ops=args.ops,
            reps=args.reps,
            size_mb=args.size_mb,
            as_json=args.bench_json or bool(getattr(args, "json", False)),
            as_markdown=args.markdown,
        )
    if args.command is None:
        parser.print_help()
        return 2
    _setup_logging(args.verbose)
    if args.command == "sync":
        from .bulk import cli_sync

        return cli_sync(args, args.config)
    if args.command == "replicate":
        bulk_form = args.dst is None
        if bulk_form and args.min_success is not None:
            _error("replicate: --min-success applies to FILE s3://BUCKET/KEY only")
            return EXIT_USAGE
        if not bulk_form and (args.workers is not None or args.dask or args.state is not None):
            _error("replicate: --workers/--dask/--state apply to NAME:BUCKET[/PREFIX] only")
            return EXIT_USAGE
        if bulk_form:
            from .bulk import cli_replicate

            return cli_replicate(args, args.config)
    if args.command == "repair" and (
        args.workers is not None or args.dask or args.state is not None
    ):
        from .bulk import cli_repair

        return cli_repair(args, args.config)
    try:
        with _Session(args) as session:
            return _COMMANDS[args.command](session)
    except (UsageError, ConfigError, InvalidArgument) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except S3KitError as exc:
        _error(str(exc))
        return EXIT_PARTIAL
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):  # `s3kit ls | head`
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_PARTIAL
        _error(_os_error(exc))
        return EXIT_PARTIAL
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


def _one_line(text: str) -> str:
    return _ONE_LINE.sub(" ", text.strip())


def _error(message: str) -> None:
    print(f"s3kit: error: {_one_line(message)}", file=sys.stderr)


def _os_error(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def _setup_logging(verbosity: int) -> None:
    if not verbosity:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("s3kit")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)


# ------------------------------------------------------------------------------- session
@dataclass(frozen=True)
class Location:
    """A parsed path: remote (``endpoint`` None means routed) or local (``local`` set)."""

    text: str
    bucket: str = ""
    key: str = ""
    endpoint: str | None = None
    local: str | None = None

    @property
    def remote(self) -> bool:
        return self.local is None

    def child(self, key: str) -> Location:
        prefix = f"{self.endpoint}:" if self.text[:5] != "s3://" and self.endpoint else "s3://"
        return Location(f"{prefix}{self.bucket}/{key}", self.bucket, key, self.endpoint)


class _Session:
    """One command's multiplexer (from the configuration file), output mode and path parser."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json: bool = args.json
        self._mux: Multiplexer | None = None

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._mux is not None:
            self._mux.close()

    @property
    def mux(self) -> Multiplexer:
        if self._mux is None:
            from ._configfile import multiplexer_from_config
            from ._routing import STRATEGIES

            overrides: dict[str, Any] = {}
            if self.args.strategy is not None:
                if self.args.strategy not in STRATEGIES:
                    raise UsageError(
                        f"unknown strategy {self.args.strategy!r}; valid strategies: "
                        f"{', '.join(STRATEGIES)}"
                    )
                overrides["strategy"] = self.args.strategy
            mux = multiplexer_from_config(self.args.config, **overrides)
            self._mux = mux
            if self.args.endpoint is not None:
                self._check_endpoint(self.args.endpoint)
        return self._mux

    def _check_endpoint(self, name: str, text: str = "") -> None:
        endpoints = self.mux.endpoints
        if name not in endpoints:
            where = f" in {text!r}" if text else ""
            raise UsageError(
                f"unknown endpoint {name!r}{where}; configured endpoints: "
                f"{', '.join(endpoints) or 'none'}"
                + ("; write ./PATH for a local file" if text else "")
            )

    def parse(self, text: str) -> Location:
        if text.startswith("s3://"):
            rest = text[5:]
            endpoint = self.args.endpoint
            self.mux  # noqa: B018 - loads the configuration (and checks --endpoint)
        else:
            match = _NAMED.fullmatch(text)
            if match is None or (os.name == "nt" and len(match.group(1)) == 1):
                return Location(text, local=text)
            endpoint, rest = match.group(1), match.group(2)
            self._check_endpoint(endpoint, text)
        bucket, _, key = rest.partition("/")
        return Location(text, bucket, key, endpoint)

    def remote(self, text: str, *, key: bool = False) -> Location:
        loc = self.parse(text)
        if not loc.remote:
            raise UsageError(
                f"{text!r} is a local path; expected s3://bucket/key or NAME:bucket/key"
            )
        if not loc.bucket:
            raise UsageError(f"{text!r} names no bucket")
        if key and (not loc.key or loc.key.endswith("/")):
            raise UsageError(f"{text!r} names no object (a key is needed)")
        return loc

    def emit(self, value: object) -> None:
        print(json.dumps(_jsonable(value), indent=2, ensure_ascii=False))


def _jsonable(value: object) -> Any:
    """Results as JSON: datetimes as ISO strings; bytes, bodies and ResponseMetadata omitted."""
    if isinstance(value, Mapping):
        return {
            str(k): _jsonable(v)
            for k, v in value.items()
            if k != "ResponseMetadata" and not _is_binary(v)
        }
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value if not _is_binary(v)]
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, BaseException):
        return _one_line(f"{type(value).__name__}: {value}")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _is_binary(value: object) -> bool:
    return isinstance(value, (bytes, bytearray, memoryview)) or hasattr(value, "read")


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _when(value: object) -> str:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return "                   " if value is None else str(value)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 132)  # logs and pipes: do not squeeze columns
    return console


def _have_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------ commands
def _cmd_ls(s: _Session) -> int:
    loc = s.parse(s.args.path)
    if not loc.remote:
        raise UsageError(
            f"{loc.text!r} is a local path; expected s3://bucket/prefix or NAME:bucket"
        )
    if not loc.bucket:
        if loc.key:
            raise UsageError(f"{loc.text!r} names no bucket")
        buckets = s.mux.list_buckets(endpoint=loc.endpoint)
        if s.json:
            s.emit(buckets)
        else:
            for b in buckets.get("Buckets") or []:
                print(f"{_when(b.get('CreationDate'))}  {b.get('Name')}")
        return EXIT_OK
    listing = s.mux.list_objects(
        loc.bucket,
        loc.key or None,
        delimiter=None if s.args.recursive else "/",
        endpoint=loc.endpoint,
    )
    if s.json:
        s.emit(listing)
        return EXIT_OK
    for p in listing.get("CommonPrefixes") or []:
        print(f"{'PRE':>30} {p.get('Prefix')}")
    for obj in listing.get("Contents") or []:
        print(f"{_when(obj.get('LastModified'))} {obj.get('Size', 0):>10} {obj.get('Key')}")
    return EXIT_OK


def _cmd_stat(s: _Session) -> int:
    loc = s.remote(s.args.path, key=True)
    head = s.mux.head_object(loc.bucket, loc.key, endpoint=loc.endpoint)
    if s.json:
        s.emit(head)
        return EXIT_OK
    length = head.get("ContentLength")
    rows = [
        ("size", f"{length} ({_size(length)})"),
        ("etag", head.get("ETag")),
        ("last modified", _when(head.get("LastModified"))),
        ("content type", head.get("ContentType")),
        ("storage class", head.get("StorageClass")),
        ("version id", head.get("VersionId")),
        ("metadata", json.dumps(head["Metadata"]) if head.get("Metadata") else None),
        ("endpoint", head.get("Endpoint")),
    ]
    print(loc.text)
    for label, value in rows:
        if value is not None:
            print(f"  {label:<14} {value}")
    return EXIT_OK


def _cmd_replicate(s: _Session) -> int:
    loc = s.remote(s.args.dst, key=True)
    if loc.endpoint is not None:
        raise UsageError("replicate takes s3://BUCKET/KEY; choose endpoints with --to NAME")
    if not os.path.isfile(s.args.file):
        raise UsageError(f"{s.args.file}: no such file")
    results = s.mux.replicate(
        s.args.file, loc.bucket, loc.key, endpoints=s.args.targets, min_success=s.args.min_success
    )
    failed = [name for name, r in results.items() if not r["success"]]
    if s.json:
        s.emit(
            {
                name: {"success": True, "result": r["result"]}
                if r["success"]
                else {"success": False, "error": str(r["error"])}
                for name, r in results.items()
            }
        )
    else:
        for name, r in results.items():
            if r["success"]:
                print(f"replicate: {s.args.file} -> {name}:{loc.bucket}/{loc.key}")
            else:
                _error(f"replicate to {name}: {r['error']}")
    return EXIT_PARTIAL if failed else EXIT_OK


def _cmd_presign(s: _Session) -> int:
    loc = s.remote(s.args.path, key=True)
    url = s.mux.create_presigned_url(
        loc.bucket, loc.key, expiration=s.args.expires, endpoint=loc.endpoint
    )
    if s.json:
        s.emit({"Bucket": loc.bucket, "Key": loc.key, "ExpiresIn": s.args.expires, "URL": url})
    else:
        print(url)
    return EXIT_OK


def _cmd_rm(s: _Session) -> int:
    loc = s.remote(s.args.path, key=not s.args.recursive)
    if not s.args.recursive:
        result = s.mux.delete_object(loc.bucket, loc.key, endpoint=loc.endpoint)
        if s.json:
            s.emit({"deleted": [result], "failed": []})
        else:
            print(f"delete: {loc.text}")
        return EXIT_OK
    prefix = _as_prefix(loc.key)
    deleted: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    # The listing is streamed a page at a time, its keys deleted _DELETE_BATCH a request.
    listing = s.mux.iter_objects(loc.bucket, prefix or None, endpoint=loc.endpoint)
    batch: list[str] = []
    listed = 0
    error: S3KitError | OSError | None = None
    while True:
        try:
            obj = next(listing, None)
        except (ConfigError, InvalidArgument):
            raise
        except (S3KitError, OSError) as exc:
            if not listed:
                raise  # nothing listed: a failed command, as any failed call
            error, obj = exc, None  # delete what was listed, then report the rest as failed
        if obj is not None:
            listed += 1
            batch.append(obj["Key"])
        if batch and (obj is None or len(batch) == _DELETE_BATCH):
            _delete_batch(s, loc, batch, deleted, failed)
            batch = []
        if obj is None:
            break
    if error is not None:
        failed.append({"path": loc.text, "error": _jsonable(error)})
        _error(f"list {loc.text}: {error}")
    if s.json:
        s.emit({"deleted": deleted, "failed": failed})
    return EXIT_PARTIAL if failed else EXIT_OK


def _delete_batch(
    s: _Session,
    loc: Location,
    keys: list[str],
    deleted: list[dict[str, Any]],
    failed: list[dict[str, Any]],
) -> None:
    """One DeleteObjects request (``rm -r``): each key reported as deleted or failed."""
    try:
        result = s.mux.delete_objects(loc.bucket, keys, endpoint=loc.endpoint)
    except (ConfigError, InvalidArgument):
        raise
    except (S3KitError, OSError) as exc:  # the batch as a whole: each of its keys failed
        for key in keys:
            target = loc.child(key)
            failed.append({"path": target.text, "error": _jsonable(exc)})
            _error(f"delete {target.text}: {_os_error(exc) if isinstance(exc, OSError) else exc}")
        return
    errors = {str(e.get("Key")): e for e in result.get("Errors") or []}
    done = {str(d.get("Key")): d for d in result.get("Deleted") or []}
    where: dict[str, Any] = {"Endpoint": result.get("Endpoint")}
    served = result.get("Endpoints") or []
    if len(served) > 1 and s.mux.replica_groups:  # every member was asked
        where["Endpoints"] = served
    if s.mux.replica_groups and (len(served) > 1 or "Pending" in result):
        where["Pending"] = result.get("Pending") or []
    for key in keys:
        target = loc.child(key)
        error = errors.get(key)
        if error is not None:
            message = f"{error.get('Code') or 'Error'}: {error.get('Message') or 'not deleted'}"
            failed.append({"path": target.text, "error": message})
            _error(f"delete {target.text}: {message}")
            continue
        # under key-hash each entry names its key's owner: that wins over the batch's first
        deleted.append({**where, **done.get(key, {}), "Bucket": loc.bucket, "Key": key})
        if not s.json:
            print(f"delete: {target.text}")


def _cmd_health(s: _Session) -> int:
    rows = _probe(s.mux, s.args.timeout, getattr(s.args, "bucket", None))
    down = [r["name"] for r in rows if not r["healthy"]]
    if s.json:
        s.emit(
            {
                "healthy": [r["name"] for r in rows if r["healthy"]],
                "unhealthy": down,
                "endpoints": rows,
            }
        )
    elif _have_rich():
        from rich.table import Table

        table = Table(title="s3kit health", padding=(0, 1), pad_edge=False)
        for header in ("endpoint", "url", "state", "latency", "healthy", "detail"):
            table.add_column(header, no_wrap=header != "detail")
        for r in rows:
            latency = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f} ms"
            ok = "[green]yes[/]" if r["healthy"] else "[bold red]no[/]"
            table.add_row(r["name"], r["url"], r["state"], latency, ok, r["error"] or "")
        _console().print(table)
    else:
        for r in rows:
            latency = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}ms"
            ok = "yes" if r["healthy"] else "no"
            print(f"{r['name']}\t{r['url']}\t{r['state']}\t{latency}\t{ok}\t{r['error'] or ''}")
    return EXIT_PARTIAL if down else EXIT_OK


def _probe(mux: Multiplexer, timeout: float, bucket: str | None) -> list[dict[str, Any]]:
    """``check_health`` with each endpoint's probe timed (and its error kept) for the table.

    The probe is the transport's ``list_buckets`` (or ``list_objects``) call that
    ``check_health`` makes; it is wrapped on each transport instance for this call only.
    """
    latency: dict[str, float] = {}
    errors: dict[str, BaseException] = {}
    wrapped: list[tuple[object, str]] = []

    def timed(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def probe(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            except BaseException as exc:
                errors[name] = exc
                raise
            finally:
                latency[name] = (time.perf_counter() - start) * 1000.0

        return probe

    for name, ep in mux.endpoints.items():
        # Build the client first (no network call), so the time measured is the probe's own
        # round trip rather than botocore loading its models.
        with contextlib.suppress(ConfigError):
            ep.client  # noqa: B018
        for attr in ("list_buckets", "list_objects"):
            method = getattr(ep.transport, attr, None)
            if method is None:
                continue
            try:
                setattr(ep.transport, attr, timed(name, method))
            except (AttributeError, TypeError):
                continue
            wrapped.append((ep.transport, attr))
    try:
        healthy = set(mux.check_health(bucket=bucket, timeout=timeout))
    finally:
        for transport, attr in wrapped:
            with contextlib.suppress(AttributeError):
                delattr(transport, attr)
    rows = []
    for name, ep in mux.endpoints.items():
        ok = name in healthy
        err = errors.get(name)
        rows.append(
            {
                "name": name,
                "url": ep.url,
                "state": ep.breaker.state,
                "healthy": ok,
                "latency_ms": round(latency[name], 1) if name in latency and ok else None,
                "error": _jsonable(err) if err is not None else (None if ok else "no answer"),
            }
        )
    return rows


def _cmd_stats(s: _Session) -> int:
    s.mux.check_health(timeout=s.args.timeout)
    stats = s.mux.stats()
    if s.json:
        s.emit({name: st.as_dict() for name, st in stats.items()})
        return EXIT_OK
    from ._render import print_stats_table

    print_stats_table(stats)
    return EXIT_OK


class _RepairProgress:
    """A rich progress bar for ``repair``: ledger entries, then keys compared."""

    def __init__(self, console: Any = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console if console is not None else _console(),
            refresh_per_second=8,
        )
        self.task = self.progress.add_task("repair", total=None)

    def update(self, phase: str, done: int, total: int) -> None:
        label = "ledger" if phase == "ledger" else "compare"
        self.progress.update(self.task, description=label, completed=done, total=total or None)

    def print(self, line: str) -> None:
        self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def __enter__(self) -> _RepairProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def _repair_line(action: Mapping[str, Any]) -> str:
    where = f"s3://{action['bucket']}/{action['key']}"
    would = "would " if action.get("dry_run") else ""
    if action["action"] == "copy":
        text = f"{would}copy: {where} {action.get('source')} -> {action.get('endpoint')}"
    elif action["action"] == "delete":
        text = f"{would}delete: {where} on {action.get('endpoint')} (ledger tombstone)"
    elif action["action"] == "list":
        text = f"list: s3://{action['bucket']} on {action.get('endpoint')}"
    elif action["action"] == "probe":
        text = (
            f"probe: {action.get('endpoint')} did not answer: skipped, "
            f"{action.get('owed', 0)} ledger rows stay owed"
        )
    elif action["action"] == "abort":
        text = f"{would}abort: {where} multipart upload on {action.get('endpoint')}"
        if action.get("upload_id"):
            text += f" ({action['upload_id']})"
    else:
        text = f"{action['action']}: {where}"
    if not action.get("ok"):
        text += f" failed: {action.get('error')}"
    return text


def _cmd_repair(s: _Session) -> int:
    text = s.args.path[5:] if s.args.path.startswith("s3://") else s.args.path
    bucket, _, prefix = text.partition("/")
    if not bucket:
        raise UsageError(f"{s.args.path!r} names no bucket; expected BUCKET[/PREFIX]")
    mux = s.mux
    if not mux.replica_groups:
        raise UsageError(
            "repair needs a replica set: set replicas = [...] in the [multiplexer] table"
        )
    actions: list[dict[str, Any]] = []
    show = not s.json and sys.stdout.isatty() and _have_rich()
    bar = _RepairProgress() if show else None

    def on_action(action: dict[str, Any]) -> None:
        actions.append(action)
        if s.json:
            return
        line = _repair_line(action)
        if not action.get("ok"):
            _error(line)
        elif bar is not None:
            bar.print(line)
        else:
            print(line, flush=True)

    with bar if bar is not None else contextlib.nullcontext():
        result = mux.repair(
            bucket,
            prefix,
            dry_run=s.args.dry_run,
            group=s.args.group,
            progress=bar.update if bar is not None else None,
            on_action=on_action,
        )
    if s.json:
        s.emit({**result, "dry_run": s.args.dry_run, "actions": actions})
    else:
        verb = "would copy" if s.args.dry_run else "copied"
        print(
            f"repair s3://{bucket}/{prefix}: checked {result['checked']}, {verb} "
            f"{result['copied']}, from the ledger {result['from_ledger']}, "
            f"failed {result['failed']}"
        )
    return EXIT_PARTIAL if result["failed"] else EXIT_OK


def _cmd_serve_metrics(s: _Session) -> int:
    try:
        from .metrics import serve
    except ImportError as exc:
        raise UsageError(f"serve-metrics needs pip install 's3kit[prometheus]' ({exc})") from None
    if not 0 < s.args.port < 65536:
        raise UsageError("--port must be between 1 and 65535")
    if s.args.interval <= 0:
        raise UsageError("--interval must be > 0")
    server = serve(s.mux, s.args.port, addr=s.args.addr)
    s.mux.start_health_checks(s.args.interval)
    print(f"serving metrics on http://{s.args.addr}:{s.args.port}/metrics", flush=True)
    try:
        stop = threading.Event()
        stop.wait(s.args.duration)  # None: until interrupted
    finally:
        server.shutdown()
    return EXIT_OK


# ------------------------------------------------------------------------------------ cp
@dataclass(frozen=True)
class _Transfer:
    src: Location
    dst: Location
    size: int | None

    @property
    def kind(self) -> str:
        if not self.src.remote:
            return "upload"
        return "download" if not self.dst.remote else "copy"


def _as_prefix(key: str) -> str:
    return key if not key or key.endswith("/") else key + "/"


def _basename(key: str) -> str:
    return key.rstrip("/").rsplit("/", 1)[-1]


def _plan(s: _Session, src: Location, dst: Location, recursive: bool) -> list[_Transfer]:
    if not src.remote and not dst.remote:
        raise UsageError("cp needs an s3:// or NAME: path on at least one side")
    if dst.remote and not dst.bucket:
        raise UsageError(f"{dst.text!r} names no bucket")
    if src.remote and not src.bucket:
        raise UsageError(f"{src.text!r} names no bucket")
    if not src.remote:
        assert src.local is not None
        if not os.path.exists(src.local):
            raise UsageError(f"{src.local}: no such file or directory")
        if os.path.isdir(src.local):
            if not recursive:
                raise UsageError(f"{src.local}: is a directory (use -r to copy it)")
            return _plan_dir_upload(src.local, dst)
        key = dst.key
        if not key or key.endswith("/"):
            key += os.path.basename(src.local)
        return [_Transfer(src, dst.child(key), os.path.getsize(src.local))]
    if recursive:
        return _plan_prefix(s, src, dst)
    if not src.key or src.key.endswith("/"):
        raise UsageError(f"{src.text!r} names no object (use -r to copy a prefix)")
    if dst.remote:
        key = dst.key
        if not key or key.endswith("/"):
            key += _basename(src.key)
        return [_Transfer(src, dst.child(key), None)]
    assert dst.local is not None
    path = dst.local
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        path = os.path.join(path, _basename(src.key))
    return [_Transfer(src, Location(path, local=path), None)]


def _plan_dir_upload(root: str, dst: Location) -> list[_Transfer]:
    prefix = _as_prefix(dst.key)
    plan = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            path = os.path.join(dirpath, filename)
            if not os.path.isfile(path):
                continue  # sockets, broken links
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            plan.append(
                _Transfer(
                    Location(path, local=path), dst.child(prefix + rel), os.path.getsize(path)
                )
            )
    return plan


def _plan_prefix(s: _Session, src: Location, dst: Location) -> list[_Transfer]:
    prefix = _as_prefix(src.key)
    listing = s.mux.list_objects(src.bucket, prefix or None, endpoint=src.endpoint)
    plan = []
    for obj in listing.get("Contents") or []:
        key: str = obj["Key"]
        if key.endswith("/"):
            continue  # a "directory" marker
        rel = key[len(prefix) :]
        source = src.child(key)
        if dst.remote:
            target = dst.child(_as_prefix(dst.key) + rel)
        else:
            assert dst.local is not None
            parts = rel.split("/")
            if any(p in ("", ".", "..") for p in parts) or os.path.isabs(rel):
                # never write outside the target directory; reported as a failed file
                target = Location(rel, local="")
            else:
                path = os.path.join(dst.local, *parts)
                target = Location(path, local=path)
        plan.append(_Transfer(source, target, obj.get("Size")))
    return plan


class _Progress:
    """Byte and file progress of a cp, drawn by rich when stdout is a terminal.

    Bytes are counted as they move, through the transfers' ``callback=`` (negative when an
    attempt gives its bytes up), attributed to their key and capped at the object's size. When a
    file is done, whatever was not reported is added. A remote-to-remote copy moves each byte
    twice (down, then up): each leg counts half.
    """

    def __init__(self, plan: list[_Transfer], kind: str) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.files = len(plan)
        self.done = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._weight = {"get": 0.0, "put": 0.0}
        for direction in _LEGS[kind]:
            self._weight[direction] = 1.0 / len(_LEGS[kind])
        self._sizes: dict[tuple[str, str], int | None] = {}
        for t in plan:
            for leg in _legs(t):
                self._sizes[leg] = t.size
        self._counted: dict[tuple[str, str], int] = {}
        self._moved = 0.0
        self.total = sum(t.size or 0 for t in plan)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TextColumn("{task.fields[files]}"),
            TimeRemainingColumn(),
            console=_console(),
            refresh_per_second=8,
        )
        self.task = self.progress.add_task(kind, total=self.total or None, files=self._files())

    def _files(self) -> str:
        text = f"{self.done}/{self.files} files"
        return text + (f", {self.failed} failed" if self.failed else "")

    def _count(self, leg: tuple[str, str], nbytes: int) -> None:
        """Add bytes of one leg (caller holds the lock)."""
        if leg not in self._sizes:
            return  # not part of this copy (a HEAD for the plan, say)
        before = self._counted.get(leg, 0)
        after = max(0, before + nbytes)  # negative when an attempt's bytes are given up
        size = self._sizes[leg]
        if size is not None:
            after = min(after, size)
        self._counted[leg] = after
        self._moved += (after - before) * self._weight[leg[0]]

    def _refresh(self) -> None:
        completed = min(self._moved, self.total) if self.total else self._moved
        self.progress.update(self.task, completed=completed, files=self._files())

    def add(self, direction: str, key: str, nbytes: int) -> None:
        with self._lock:
            self._count((direction, key), nbytes)
            self._refresh()

    def file_done(self, t: _Transfer, ok: bool) -> None:
        with self._lock:
            if ok:
                self.done += 1
                for leg in _legs(t):
                    self._count(leg, (t.size or 0) - self._counted.get(leg, 0))
            else:
                self.failed += 1
            self._refresh()

    def print(self, line: str) -> None:
        self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def __enter__(self) -> _Progress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def counter(self, direction: str, key: str) -> Callable[[int], None]:
        """A ``callback=`` for one leg of a transfer."""
        return lambda nbytes: self.add(direction, key, nbytes)


_LEGS = {"upload": ("put",), "download": ("get",), "copy": ("get", "put")}


def _legs(t: _Transfer) -> list[tuple[str, str]]:
    legs = []
    if t.src.remote:
        legs.append(("get", t.src.key))
    if t.dst.remote:
        legs.append(("put", t.dst.key))
    return legs


def _cmd_cp(s: _Session) -> int:
    if s.args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    show_progress = not s.json and sys.stdout.isatty() and _have_rich()
    src, dst = s.parse(s.args.src), s.parse(s.args.dst)
    plan = _plan(s, src, dst, s.args.recursive)
    show_progress = show_progress and bool(plan)
    if show_progress:
        plan = [_with_size(s, t) for t in plan]
    tmpdir = tempfile.mkdtemp(prefix="s3kit-cp-") if plan and plan[0].kind == "copy" else None
    done: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    progress = _Progress(plan, plan[0].kind) if show_progress else None

    def report(line: str) -> None:
        if s.json:
            return
        if progress is not None:
            progress.print(line)
        else:
            print(line, flush=True)

    with contextlib.ExitStack() as stack:
        if tmpdir is not None:
            stack.callback(shutil.rmtree, tmpdir, ignore_errors=True)
        if progress is not None:
            stack.enter_context(progress)
        pool = stack.enter_context(_pool(s.args.jobs))
        futures = {pool.submit(_transfer, s, t, tmpdir, progress): t for t in plan}
        for future in concurrent.futures.as_completed(futures):
            t = futures[future]
            try:
                result = future.result()
            except ConfigError:
                raise  # e.g. an AWS profile that does not exist: exit 2, the rest cancelled
            except InvalidArgument as exc:
                if len(plan) == 1:
                    raise  # a usage error: exit 2
                failed.append(_failure(t, exc))  # one bad key among many
            except (S3KitError, OSError) as exc:
                failed.append(_failure(t, exc))
            else:
                nbytes = result.get("ContentLength", t.size)
                done.append({"source": t.src.text, "destination": t.dst.text, **result})
                report(
                    f"{t.kind}: {t.src.text} -> {t.dst.text} "
                    f"({_size(nbytes)}, {_endpoint_text(result)})"
                )
                if progress is not None:
                    progress.file_done(t, True)
                continue
            if progress is not None:
                progress.file_done(t, False)
    if s.json:
        s.emit({"transfers": done, "failed": failed})
    return EXIT_PARTIAL if failed else EXIT_OK


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    """A thread pool whose queued work is cancelled when the caller fails or is interrupted."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)


def _failure(t: _Transfer, exc: BaseException) -> dict[str, Any]:
    message = _os_error(exc) if isinstance(exc, OSError) else str(exc)
    _error(f"{t.kind} {t.src.text} -> {t.dst.text}: {message}")
    return {"source": t.src.text, "destination": t.dst.text, "error": _jsonable(exc)}


def _endpoint_text(result: Mapping[str, Any]) -> str:
    source = result.get("SourceEndpoint")
    if source and source != result.get("Endpoint"):
        return f"{source} -> {result.get('Endpoint')}"
    return str(result.get("Endpoint"))


def _with_size(s: _Session, t: _Transfer) -> _Transfer:
    if t.size is not None or not t.src.remote:
        return t
    try:
        head = s.mux.head_object(t.src.bucket, t.src.key, endpoint=t.src.endpoint)
    except S3KitError:
        return t  # the transfer itself reports the error
    return _Transfer(t.src, t.dst, head.get("ContentLength"))


def _transfer(
    s: _Session, t: _Transfer, tmpdir: str | None, progress: _Progress | None
) -> dict[str, Any]:
    mux = s.mux
    src, dst = t.src, t.dst
    put_cb = progress.counter("put", dst.key) if progress is not None and dst.remote else None
    get_cb = progress.counter("get", src.key) if progress is not None and src.remote else None
    if not src.remote:
        assert src.local is not None
        return mux.upload_file(
            src.local, dst.bucket, dst.key, endpoint=dst.endpoint, callback=put_cb
        )
    if not dst.remote:
        assert dst.local is not None
        if not dst.local:
            raise InvalidArgument("key", f"{src.key!r} would be written outside the target")
        parent = os.path.dirname(os.path.abspath(dst.local))
        os.makedirs(parent, exist_ok=True)
        return mux.download_file(
            src.bucket, src.key, dst.local, endpoint=src.endpoint, callback=get_cb
        )
    assert tmpdir is not None
    tmp = os.path.join(tmpdir, uuid.uuid4().hex)
    try:
        # A scratch copy between two stores, uploaded and deleted: no fsync.
        got = mux.download_file(
            src.bucket, src.key, tmp, endpoint=src.endpoint, callback=get_cb, fsync=False
        )
        put = mux.upload_file(tmp, dst.bucket, dst.key, endpoint=dst.endpoint, callback=put_cb)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return {**put, "ContentLength": got.get("ContentLength"), "SourceEndpoint": got["Endpoint"]}


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", re.IGNORECASE)
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _age(text: str) -> float:
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"--older-than {text!r}: expected an age such as 90s, 30m, 24h or 7d")
    return float(match.group(1)) * _AGE_UNITS[match.group(2).lower()]


def _cmd_cleanup(s: _Session) -> int:
    loc = s.remote(s.args.path)
    age = _age(s.args.older_than)
    dry = bool(s.args.dry_run)
    mux = s.mux

    def on_abort(upload: dict[str, Any]) -> None:
        if s.json:
            return
        verb = "would abort" if dry else "aborted"
        print(
            f"{verb}: {upload['Endpoint']}:{loc.bucket}/{upload['Key']} upload "
            f"{upload['UploadId']} (started {_when(upload.get('Initiated')).strip() or '?'})",
            flush=True,
        )

    result = mux.abort_stale_uploads(
        loc.bucket,
        loc.key or None,
        older_than_s=age,
        endpoint=loc.endpoint,
        dry_run=dry,
        on_abort=on_abort,
    )
    failed = result["Failed"]
    if s.json:
        s.emit({**result, "OlderThan": age})
    else:
        for name, exc in failed.items():
            _error(f"cleanup on {name}: {exc}")
        where = loc.endpoint or ", ".join(mux.endpoints)
        verb = "would abort" if dry else "aborted"
        print(
            f"cleanup s3://{loc.bucket}/{loc.key} on {where}: {verb} "
            f"{len(result['Aborted'])} multipart upload(s) older than {s.args.older_than} "
            f"or left by failed uploads; failed {len(failed)}"
        )
    return EXIT_PARTIAL if failed else EXIT_OK


_COMMANDS: dict[str, Callable[[_Session], int]] = {
    "cleanup": _cmd_cleanup,
    "ls": _cmd_ls,
    "cp": _cmd_cp,
    "rm": _cmd_rm,
    "stat": _cmd_stat,
    "presign": _cmd_presign,
    "replicate": _cmd_replicate,
    "health": _cmd_health,
    "stats": _cmd_stats,
    "repair": _cmd_repair,
    "serve-metrics": _cmd_serve_metrics,
}


if __name__ == "__main__":
    sys.exit(main())
