"""The replica ledger: a small SQLite file recording which replica may lack which object.

A replica-set write records one row per member *before* anything is sent (an intent) and removes
a member's row when that member acknowledged, so a crash at any moment leaves behind exactly the
members that may be missing the write. A delete records a ``delete`` row the same way (a
tombstone): :meth:`Multiplexer.repair` replays tombstones before comparing listings, so a key
deleted while a replica was down is never copied back from it.

Rows are keyed by (replica set, endpoint, bucket, key, op); a key has at most one row per
endpoint (the newest operation replaces an older one of the other kind). Each row carries the
token of the write that recorded it, so the acknowledgement of an older write never removes the
row of a newer one. No secrets are stored: names, keys, times and an error's type and message.

The file is in WAL mode with ``synchronous=NORMAL``: a committed row survives the process being
killed (SIGKILL included); a crash of the whole machine may lose the last moments, which the
listing comparison of ``repair`` then catches (except deletes). One connection is shared under a
lock; the schema is created on first use, and the file only when first needed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ._errors import ConfigError

__all__ = ["DELETE", "PUT", "FailedUpload", "Ledger", "LedgerEntry", "default_ledger_path"]

PUT = "put"  # the endpoint may lack the newest version of the key (a put, upload or copy)
DELETE = "delete"  # the endpoint may still hold a key that was deleted (a tombstone)
_OPS = (PUT, DELETE)
_ERROR_MAX = 300

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    replica_set TEXT NOT NULL,
    endpoint    TEXT NOT NULL,
    bucket      TEXT NOT NULL,
    key         TEXT NOT NULL,
    op          TEXT NOT NULL CHECK (op IN ('put', 'delete')),
    token       TEXT NOT NULL,
    created     REAL NOT NULL,
    updated     REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    PRIMARY KEY (replica_set, endpoint, bucket, key, op)
);
CREATE INDEX IF NOT EXISTS pending_by_key ON pending (replica_set, bucket, key);
CREATE TABLE IF NOT EXISTS uploads (
    endpoint    TEXT NOT NULL,
    bucket      TEXT NOT NULL,
    key         TEXT NOT NULL,
    started     REAL NOT NULL,
    failed      REAL NOT NULL,
    last_error  TEXT,
    PRIMARY KEY (endpoint, bucket, key, started)
);
"""


def default_ledger_path() -> str:
    """``$XDG_STATE_HOME/s3kit/ledger.sqlite``, else ``~/.local/state/s3kit/ledger.sqlite``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "s3kit", "ledger.sqlite")


@dataclass(frozen=True)
class LedgerEntry:
    replica_set: str
    endpoint: str
    bucket: str
    key: str
    op: str
    token: str
    created: float
    updated: float
    attempts: int
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FailedUpload:
    """A multipart upload that failed on ``endpoint`` between ``started`` and ``failed``
    (wall-clock seconds): its parts may still be there if the abort failed too."""

    endpoint: str
    bucket: str
    key: str
    started: float
    failed: float
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ledger:
    """The pending-replication ledger at ``path``. Thread-safe; opened on first use."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = os.path.abspath(
            os.path.expanduser(os.fspath(path) if path is not None else default_ledger_path())
        )
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self.closed = False

    # ---------------------------------------------------------------- plumbing
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # After a fork the parent's connection must not be used: open a new one.
        self._pid = os.getpid()
        try:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=10000")
                conn.executescript(_SCHEMA)
            except BaseException:
                conn.close()
                raise
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"cannot open the replica ledger {self.path}: {exc}; set ledger_path= to a "
                "writable file"
            ) from exc
        self._conn = conn
        return conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction under the lock (committed on exit, rolled back on error)."""
        with self._lock:
            if self.closed:
                raise RuntimeError(f"the replica ledger {self.path} is closed")
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # ------------------------------------------------------------------ writes
    def record(
        self,
        replica_set: str,
        endpoints: Iterable[str],
        bucket: str,
        key: str,
        op: str,
        token: str,
    ) -> None:
        """Record that ``op`` on ``bucket/key`` is owed to each of ``endpoints`` (one commit)."""
        if op not in _OPS:
            raise ValueError(f"op must be one of {_OPS}, not {op!r}")
        other = DELETE if op == PUT else PUT
        now = time.time()
        with self._tx() as conn:
            for endpoint in endpoints:
                # The newest operation on a key is the one owed: it replaces the other kind.
                conn.execute(
                    "DELETE FROM pending WHERE replica_set=? AND endpoint=? AND bucket=? "
                    "AND key=? AND op=?",
                    (replica_set, endpoint, bucket, key, other),
                )
                conn.execute(
                    "INSERT INTO pending (replica_set, endpoint, bucket, key, op, token, "
                    "created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (replica_set, endpoint, bucket, key, op) DO UPDATE SET "
                    "token=excluded.token, updated=excluded.updated, attempts=0, "
                    "last_error=NULL",
                    (replica_set, endpoint, bucket, key, op, token, now, now),
                )

    def resolve(
        self,
        replica_set: str,
        endpoint: str,
        bucket: str,
        key: str,
        op: str,
        token: str | None = None,
    ) -> bool:
        """Remove a row (only if it still has ``token``, when given). Returns whether it did."""
        sql = (
            "DELETE FROM pending WHERE replica_set=? AND endpoint=? AND bucket=? AND key=? AND op=?"
        )
        params: tuple[str, ...] = (replica_set, endpoint, bucket, key, op)
        if token is not None:
            sql += " AND token=?"
            params += (token,)
        with self._tx() as conn:
            return conn.execute(sql, params).rowcount > 0

    def note_failure(
        self,
        replica_set: str,
        endpoint: str,
        bucket: str,
        key: str,
        op: str,
        token: str | None,
        error: BaseException,
    ) -> None:
        """Count a failed attempt on a row and keep the error's type and message."""
        text = f"{type(error).__name__}: {error}"[:_ERROR_MAX]
        sql = (
            "UPDATE pending SET attempts=attempts+1, last_error=?, updated=? WHERE "
            "replica_set=? AND endpoint=? AND bucket=? AND key=? AND op=?"
        )
        params: tuple[Any, ...] = (text, time.time(), replica_set, endpoint, bucket, key, op)
        if token is not None:
            sql += " AND token=?"
            params += (token,)
        with self._tx() as conn:
            conn.execute(sql, params)

    def record_keys(
        self,
        replica_set: str,
        endpoints: Iterable[str],
        bucket: str,
        keys: Iterable[str],
        op: str,
        token: str,
    ) -> None:
        """:meth:`record` for many keys in one commit (a batch delete's tombstones)."""
        if op not in _OPS:
            raise ValueError(f"op must be one of {_OPS}, not {op!r}")
        other = DELETE if op == PUT else PUT
        now = time.time()
        names = list(endpoints)
        rows = [(replica_set, e, bucket, k) for k in keys for e in names]
        with self._tx() as conn:
            conn.executemany(
                "DELETE FROM pending WHERE replica_set=? AND endpoint=? AND bucket=? "
                "AND key=? AND op=?",
                [(*row, other) for row in rows],
            )
            conn.executemany(
                "INSERT INTO pending (replica_set, endpoint, bucket, key, op, token, "
                "created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (replica_set, endpoint, bucket, key, op) DO UPDATE SET "
                "token=excluded.token, updated=excluded.updated, attempts=0, "
                "last_error=NULL",
                [(*row, op, token, now, now) for row in rows],
            )

    def resolve_keys(
        self,
        replica_set: str,
        endpoint: str,
        bucket: str,
        keys: Iterable[str],
        op: str,
        token: str,
    ) -> None:
        """:meth:`resolve` for many keys of one endpoint in one commit."""
        with self._tx() as conn:
            conn.executemany(
                "DELETE FROM pending WHERE replica_set=? AND endpoint=? AND bucket=? AND key=? "
                "AND op=? AND token=?",
                [(replica_set, endpoint, bucket, k, op, token) for k in keys],
            )

    # ------------------------------------------------------------------- reads
    def entries(
        self,
        replica_set: str | None = None,
        bucket: str | None = None,
        prefix: str = "",
        endpoint: str | None = None,
    ) -> list[LedgerEntry]:
        """Rows, oldest first, filtered by replica set, bucket, key prefix and endpoint."""
        sql = (
            "SELECT replica_set, endpoint, bucket, key, op, token, created, updated, attempts, "
            "last_error FROM pending WHERE 1=1"
        )
        params: list[Any] = []
        for column, value in (
            ("replica_set", replica_set),
            ("bucket", bucket),
            ("endpoint", endpoint),
        ):
            if value is not None:
                sql += f" AND {column}=?"
                params.append(value)
        if prefix:
            # substr() rather than LIKE: keys may contain % and _.
            sql += " AND substr(key, 1, ?)=?"
            params += [len(prefix), prefix]
        sql += " ORDER BY updated, replica_set, bucket, key, endpoint"
        if not os.path.exists(self.path) and self._conn is None:
            return []  # nothing was ever recorded: do not create the file just to read it
        with self._lock:
            if self.closed:
                raise RuntimeError(f"the replica ledger {self.path} is closed")
            rows = self._connect().execute(sql, params).fetchall()
        return [LedgerEntry(*row) for row in rows]

    # --------------------------------------------------- failed multipart uploads
    def record_upload(
        self,
        endpoint: str,
        bucket: str,
        key: str,
        started: float,
        failed: float,
        error: BaseException,
    ) -> None:
        """Remember a multipart upload that failed on ``endpoint`` (its abort may have failed
        too): ``Multiplexer.abort_stale_uploads`` and ``repair`` abort what it left."""
        text = f"{type(error).__name__}: {error}"[:_ERROR_MAX]
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO uploads (endpoint, bucket, key, started, failed, "
                "last_error) VALUES (?, ?, ?, ?, ?, ?)",
                (endpoint, bucket, key, started, failed, text),
            )

    def failed_uploads(
        self, bucket: str | None = None, endpoint: str | None = None
    ) -> list[FailedUpload]:
        """The failed multipart uploads not yet cleaned up, oldest first."""
        sql = "SELECT endpoint, bucket, key, started, failed, last_error FROM uploads WHERE 1=1"
        params: list[Any] = []
        for column, value in (("bucket", bucket), ("endpoint", endpoint)):
            if value is not None:
                sql += f" AND {column}=?"
                params.append(value)
        sql += " ORDER BY failed, endpoint, bucket, key"
        if not os.path.exists(self.path) and self._conn is None:
            return []
        with self._lock:
            if self.closed:
                raise RuntimeError(f"the replica ledger {self.path} is closed")
            rows = self._connect().execute(sql, params).fetchall()
        return [FailedUpload(*row) for row in rows]

    def resolve_upload(self, upload: FailedUpload) -> None:
        with self._tx() as conn:
            conn.execute(
                "DELETE FROM uploads WHERE endpoint=? AND bucket=? AND key=? AND started=?",
                (upload.endpoint, upload.bucket, upload.key, upload.started),
            )

    def __len__(self) -> int:
        return len(self.entries())

    def close(self) -> None:
        with self._lock:
            self.closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __repr__(self) -> str:
        return f"<Ledger {self.path!r}>"
