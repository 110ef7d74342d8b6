"""`s3kit rm -r`'s reporting of a batch delete, on a stand-in multiplexer (pure logic).

The batching itself is proven against a real server in tests/integration/test_cli.py; here the
answers a server rarely gives: per-key errors, a batch refused as a whole, a listing that fails
after some keys were deleted.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

import pytest

from s3kit._cli import _COMMANDS, EXIT_OK, EXIT_PARTIAL, _Session
from s3kit._errors import ConnectionFailed, InvalidArgument


class FakeMux:
    """Lists ``keys`` (raising ``fail_after`` listed keys), answers DeleteObjects from rules."""

    endpoints = {"primary": None}
    replica_groups: dict[str, tuple[str, ...]] = {}

    def __init__(self, keys: list[str], *, fail_after: int | None = None) -> None:
        self.keys = keys
        self.fail_after = fail_after
        self.batches: list[list[str]] = []
        self.refuse: set[str] = set()  # keys the server reports as per-key errors
        self.down_batch: int | None = None  # this batch fails as a whole

    def iter_objects(self, bucket: str, prefix: str | None, **kw: Any) -> Iterator[dict[str, Any]]:
        for i, key in enumerate(self.keys):
            if self.fail_after is not None and i == self.fail_after:
                raise ConnectionFailed("connection refused", endpoint="primary")
            yield {"Key": key, "Size": 1}

    def delete_objects(self, bucket: str, keys: list[str], **kw: Any) -> dict[str, Any]:
        self.batches.append(list(keys))
        if self.down_batch == len(self.batches) - 1:
            raise ConnectionFailed("connection reset", endpoint="primary")
        if any(k == "bad/key" for k in keys):
            raise InvalidArgument("keys", "bad key")
        return {
            "Bucket": bucket,
            "Deleted": [{"Key": k} for k in keys if k not in self.refuse],
            "Errors": [
                {"Key": k, "Code": "AccessDenied", "Message": "Access Denied"}
                for k in keys
                if k in self.refuse
            ],
            "Endpoint": "primary",
            "Endpoints": ["primary"],
        }


def rm(mux: FakeMux, *, as_json: bool) -> int:
    args = argparse.Namespace(
        path="s3://b/p", recursive=True, json=as_json, endpoint=None, strategy=None, config=None
    )
    session = _Session(args)
    session._mux = mux  # type: ignore[assignment]
    return _COMMANDS["rm"](session)


def test_per_key_errors_are_reported_like_failed_deletes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    mux = FakeMux([f"p/k{i:04d}" for i in range(2500)])
    mux.refuse = {"p/k0001", "p/k2400"}
    assert rm(mux, as_json=False) == EXIT_PARTIAL
    assert [len(b) for b in mux.batches] == [1000, 1000, 500]
    out, err = capsys.readouterr()
    assert out.count("delete: s3://b/p/k") == 2498
    assert "delete: s3://b/p/k0001\n" not in out
    assert err.splitlines() == [
        "s3kit: error: delete s3://b/p/k0001: AccessDenied: Access Denied",
        "s3kit: error: delete s3://b/p/k2400: AccessDenied: Access Denied",
    ]

    mux = FakeMux([f"p/k{i:04d}" for i in range(3)])
    mux.refuse = {"p/k0001"}
    assert rm(mux, as_json=True) == EXIT_PARTIAL
    result = json.loads(capsys.readouterr().out)
    assert result["failed"] == [{"path": "s3://b/p/k0001", "error": "AccessDenied: Access Denied"}]
    assert result["deleted"] == [
        {"Key": k, "Bucket": "b", "Endpoint": "primary"} for k in ("p/k0000", "p/k0002")
    ]


def test_a_failed_batch_fails_its_keys_and_the_rest_go_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    mux = FakeMux([f"p/k{i:04d}" for i in range(2001)])
    mux.down_batch = 1
    assert rm(mux, as_json=True) == EXIT_PARTIAL
    result = json.loads(capsys.readouterr().out)
    assert len(result["deleted"]) == 1001 and len(result["failed"]) == 1000
    assert result["failed"][0]["path"] == "s3://b/p/k1000"
    assert result["failed"][0]["error"].startswith("ConnectionFailed: ")

    mux = FakeMux(["p/a", "bad/key"])  # a usage error stops the command (exit 2 in main)
    with pytest.raises(InvalidArgument):
        rm(mux, as_json=False)


def test_a_listing_that_fails_midway_is_one_failure(capsys: pytest.CaptureFixture[str]) -> None:
    mux = FakeMux([f"p/k{i:04d}" for i in range(1500)], fail_after=1200)
    assert rm(mux, as_json=True) == EXIT_PARTIAL
    result = json.loads(capsys.readouterr().out)
    assert len(result["deleted"]) == 1200  # what was listed before the failure
    assert [f["path"] for f in result["failed"]] == ["s3://b/p"]

    mux = FakeMux(["p/a"], fail_after=0)  # nothing listed: the command fails as before
    with pytest.raises(ConnectionFailed):
        rm(mux, as_json=False)
    empty = FakeMux([])  # nothing under the prefix: no request, exit 0
    assert rm(empty, as_json=False) == EXIT_OK and empty.batches == []
