"""The replica ledger (SQLite): rows, tokens, tombstones, filters, threads, and crash safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3kit import ConfigError
from s3kit._ledger import DELETE, PUT, Ledger, default_ledger_path

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "state" / "ledger.sqlite")
    yield led
    led.close()


def keys(led: Ledger) -> list[tuple[str, str, str, str]]:
    return [(e.endpoint, e.bucket, e.key, e.op) for e in led.entries()]


def test_file_and_schema_are_created_on_first_write_only(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "ledger.sqlite"
    led = Ledger(path)
    assert led.entries() == []  # reading an absent ledger does not create it
    assert not path.exists()
    led.record("set", ["a"], "b", "k", PUT, "t1")
    assert path.exists()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    led.close()


def test_default_path_is_in_the_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_ledger_path() == str(tmp_path / "s3kit" / "ledger.sqlite")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = tmp_path / "home"
    assert default_ledger_path() == str(home / ".local" / "state" / "s3kit" / "ledger.sqlite")
    assert Ledger().path == default_ledger_path()


def test_record_then_resolve_per_member(ledger: Ledger) -> None:
    ledger.record("set", ["a", "b", "c"], "bk", "k", PUT, "t1")
    assert keys(ledger) == [("a", "bk", "k", PUT), ("b", "bk", "k", PUT), ("c", "bk", "k", PUT)]
    assert ledger.resolve("set", "a", "bk", "k", PUT, "t1")
    assert ledger.resolve("set", "b", "bk", "k", PUT, "t1")
    assert not ledger.resolve("set", "b", "bk", "k", PUT, "t1")
    assert keys(ledger) == [("c", "bk", "k", PUT)]
    entry = ledger.entries()[0]
    assert entry.replica_set == "set" and entry.token == "t1" and entry.attempts == 0
    assert entry.created <= entry.updated <= time.time()


def test_an_older_writes_ack_never_removes_a_newer_writes_row(ledger: Ledger) -> None:
    ledger.record("set", ["a"], "bk", "k", PUT, "old")
    ledger.record("set", ["a"], "bk", "k", PUT, "new")
    assert not ledger.resolve("set", "a", "bk", "k", PUT, "old")
    assert keys(ledger) == [("a", "bk", "k", PUT)]
    assert ledger.resolve("set", "a", "bk", "k", PUT, "new")
    assert ledger.entries() == []


def test_the_newest_operation_on_a_key_replaces_the_other_kind(ledger: Ledger) -> None:
    ledger.record("set", ["a"], "bk", "k", PUT, "t1")
    ledger.record("set", ["a"], "bk", "k", DELETE, "t2")  # a delete missed a: a tombstone
    assert keys(ledger) == [("a", "bk", "k", DELETE)]
    ledger.record("set", ["a"], "bk", "k", PUT, "t3")  # written again: the put is owed
    assert keys(ledger) == [("a", "bk", "k", PUT)]


def test_failures_are_counted_with_the_error_text(ledger: Ledger) -> None:
    ledger.record("set", ["a"], "bk", "k", PUT, "t1")
    ledger.note_failure("set", "a", "bk", "k", PUT, "t1", ConnectionError("refused"))
    ledger.note_failure("set", "a", "bk", "k", PUT, "t1", ConnectionError("x" * 1000))
    entry = ledger.entries()[0]
    assert entry.attempts == 2
    assert entry.last_error is not None and entry.last_error.startswith("ConnectionError: x")
    assert len(entry.last_error) <= 300


def test_filters_by_set_bucket_endpoint_and_literal_prefix(ledger: Ledger) -> None:
    ledger.record("s1", ["a", "b"], "bk", "logs/2024/x", PUT, "t")
    ledger.record("s1", ["a"], "bk", "logs_2024", PUT, "t")
    ledger.record("s1", ["a"], "bk", "logs%x", PUT, "t")
    ledger.record("s1", ["a"], "other", "logs/y", DELETE, "t")
    ledger.record("s2", ["z"], "bk", "logs/z", PUT, "t")
    assert len(ledger) == 6
    assert {e.key for e in ledger.entries("s1", "bk", "logs/")} == {"logs/2024/x"}
    assert {e.key for e in ledger.entries("s1", "bk", "logs_")} == {"logs_2024"}
    assert {e.key for e in ledger.entries("s1", "bk", "logs%")} == {"logs%x"}
    assert [e.endpoint for e in ledger.entries("s1", "bk", "logs/", endpoint="b")] == ["b"]
    assert [e.replica_set for e in ledger.entries("s2")] == ["s2"]
    assert [e.op for e in ledger.entries(bucket="other")] == [DELETE]
    assert ledger.entries()[0].as_dict()["replica_set"] in ("s1", "s2")


def test_unicode_keys_round_trip(ledger: Ledger) -> None:
    ledger.record("set", ["a"], "bk", "dossier/été ☃.txt", PUT, "t")
    assert ledger.entries(prefix="dossier/été")[0].key == "dossier/été ☃.txt"


def test_rejects_an_unknown_op(ledger: Ledger) -> None:
    with pytest.raises(ValueError):
        ledger.record("set", ["a"], "bk", "k", "copy", "t")


def test_closed_ledger_refuses(ledger: Ledger) -> None:
    ledger.record("set", ["a"], "bk", "k", PUT, "t")
    ledger.close()
    with pytest.raises(RuntimeError):
        ledger.record("set", ["a"], "bk", "k", PUT, "t")
    with pytest.raises(RuntimeError):
        ledger.entries()


def test_many_threads_share_one_ledger(ledger: Ledger) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                ledger.record("set", ["a", "b"], "bk", f"{t}/{i}", PUT, f"tok{t}")
                ledger.resolve("set", "a", "bk", f"{t}/{i}", PUT, f"tok{t}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert {e.endpoint for e in ledger.entries()} == {"b"}
    assert len(ledger) == 8 * 50


def test_two_ledger_objects_on_one_file_see_each_other(tmp_path: Path) -> None:
    one, two = Ledger(tmp_path / "l.sqlite"), Ledger(tmp_path / "l.sqlite")
    one.record("set", ["a"], "bk", "k", PUT, "t")
    assert keys(two) == [("a", "bk", "k", PUT)]
    assert two.resolve("set", "a", "bk", "k", PUT)
    assert one.entries() == []
    one.close()
    two.close()


WRITER = textwrap.dedent(
    """
    import sys
    from s3kit._ledger import Ledger, PUT
    led = Ledger(sys.argv[1])
    i = 0
    while True:
        # one commit per record(): three rows, as a replica-set write of three members
        led.record("set", ["a", "b", "c"], "bk", f"key-{i:06d}", PUT, f"tok{i}")
        if i % 2:
            led.resolve("set", "a", "bk", f"key-{i - 1:06d}", PUT, f"tok{i - 1}")
        print(i, flush=True)
        i += 1
    """
)


def test_committed_rows_survive_sigkill_mid_write(tmp_path: Path) -> None:
    """A process writing the ledger as fast as it can is SIGKILLed: every row it reported as
    committed is there when the ledger is opened again, and the file is intact."""
    path = tmp_path / "ledger.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    last = -1
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while last < 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            last = int(line)
        os.kill(proc.pid, signal.SIGKILL)  # mid-write: it never stops writing by itself
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert last >= 300, "the writer did not get going"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    led = Ledger(path)
    rows = led.entries()
    committed = {f"key-{i:06d}" for i in range(last + 1)}
    have = {e.key for e in rows}
    assert committed <= have  # nothing acknowledged is lost (one more may have committed)
    for i in range(last + 1):
        members = {e.endpoint for e in rows if e.key == f"key-{i:06d}"}
        # a's row of each even key was resolved after the next odd key was recorded
        expected = {"b", "c"} if i % 2 == 0 and i + 1 <= last else {"a", "b", "c"}
        assert members == expected or (i == last and members >= {"b", "c"})
    led.close()


def test_an_unwritable_path_is_a_config_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    led = Ledger(blocker / "ledger.sqlite")
    with pytest.raises(ConfigError, match="replica ledger"):
        led.record("set", ["a"], "bk", "k", PUT, "t")
