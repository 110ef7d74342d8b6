"""WriteBack: background fdatasync every ``step`` bytes of a download, one at a time."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import s3kit._transport as transport_mod
from s3kit._transport import WriteBack


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes the file had at each background fdatasync (the real one still runs)."""
    seen: list[int] = []
    real = transport_mod._fdatasync

    def record(fd: int) -> None:
        seen.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(transport_mod, "_fdatasync", record)
    return seen


def test_a_write_back_starts_every_step_and_sees_the_buffered_bytes(
    tmp_path: Path, syncs: list[int]
) -> None:
    with open(tmp_path / "f", "wb") as fh:
        wb = WriteBack(fh, step=1000)
        offset = 0
        for _ in range(10):
            fh.write(b"x" * 300)  # stays in Python's buffer until WriteBack flushes it
            offset += 300
            wb.written(offset)
            wb.close()  # wait, so every step gets its own write-back in this test
        wb.close()
    # At 1200 (the first offset >= 1000), then at 2400 (the first >= 1200 + 1000); 3000 < 3400.
    assert syncs == [1200, 2400]


def test_only_one_write_back_runs_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    started: list[int] = []

    def slow(fd: int) -> None:
        started.append(fd)
        release.wait(10)

    monkeypatch.setattr(transport_mod, "_fdatasync", slow)
    with open(tmp_path / "f", "wb") as fh:
        wb = WriteBack(fh, step=10)
        for offset in range(10, 200, 10):
            fh.write(b"y" * 10)
            wb.written(offset)
        assert len(started) == 1  # the others found the first still running
        release.set()
        wb.close()  # returns once the running one is done
        fh.write(b"z" * 10)
        wb.written(200)  # the next step after it may start again
        wb.close()
    assert len(started) == 2


def test_close_without_any_write_back_is_a_no_op(tmp_path: Path, syncs: list[int]) -> None:
    with open(tmp_path / "f", "wb") as fh:
        wb = WriteBack(fh, step=1 << 20)
        fh.write(b"small")
        wb.written(5)
        wb.close()
    assert syncs == []
