"""s3kit.bulk without a network: locations, sharding, comparison, state and the retry driver.

Listings come from :class:`FakeBucket`, which answers ListObjectsV2 pages the way S3 does
(Prefix, StartAfter, Delimiter, ContinuationToken, MaxKeys counting keys and common prefixes).
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Mapping
from typing import Any

import pytest

from s3kit import ConfigError, InvalidArgument, bulk
from s3kit.bulk import (
    Location,
    Shard,
    SyncJob,
    compare,
    iter_listing,
    parse_location,
    plan_shard,
    plan_shards,
    run_shard,
)

MD5_A = '"' + "a" * 32 + '"'
MD5_B = '"' + "b" * 32 + '"'
MULTI_A = '"' + "c" * 32 + '-2"'
MULTI_B = '"' + "d" * 32 + '-3"'


class FakeBucket:
    """Sorted keys answering ListObjectsV2 pages of ``page_size`` entries."""

    def __init__(self, keys: Mapping[str, int], page_size: int = 1000) -> None:
        self.keys = dict(sorted(keys.items()))
        self.page_size = page_size
        self.requests = 0

    def page(
        self, prefix: str, start_after: str | None, delimiter: str | None, token: str | None
    ) -> dict[str, Any]:
        self.requests += 1
        after = token if token is not None else start_after
        entries: list[tuple[str, str]] = []  # (sort key, kind)
        seen_prefixes: set[str] = set()
        for key in self.keys:
            if not key.startswith(prefix):
                continue
            if delimiter:
                rest = key[len(prefix) :]
                cut = rest.find(delimiter)
                if cut >= 0:
                    cp = prefix + rest[: cut + len(delimiter)]
                    if cp not in seen_prefixes:
                        seen_prefixes.add(cp)
                        entries.append((cp, "prefix"))
                    continue
            entries.append((key, "key"))
        entries.sort()
        if after is not None:
            # S3 skips a common prefix that sorts at or before the marker, and one the marker
            # lies inside (its keys were already rolled up on an earlier page).
            entries = [
                (k, kind)
                for k, kind in entries
                if k > after and not (kind == "prefix" and after.startswith(k))
            ]
        page = entries[: self.page_size]
        truncated = len(entries) > len(page)
        resp: dict[str, Any] = {
            "Contents": [
                {"Key": k, "Size": self.keys[k], "ETag": MD5_A} for k, kind in page if kind == "key"
            ],
            "CommonPrefixes": [{"Prefix": k} for k, kind in page if kind == "prefix"],
            "IsTruncated": truncated,
        }
        if truncated:
            resp["NextContinuationToken"] = page[-1][0]
        return resp


def _keys(n_flat: int, prefixes: Mapping[str, int]) -> dict[str, int]:
    keys = {f"flat-{i:04d}": i for i in range(n_flat)}
    for prefix, n in prefixes.items():
        for i in range(n):
            keys[f"{prefix}obj-{i:04d}"] = 10
            if i % 7 == 0:
                keys[f"{prefix}deep/nested-{i:04d}"] = 1
    return keys


# --------------------------------------------------------------------------- locations
def test_parse_location() -> None:
    assert parse_location("primary:bucket") == Location("primary", "bucket", "")
    assert parse_location("primary:bucket/") == Location("primary", "bucket", "")
    assert parse_location("primary:bucket/logs") == Location("primary", "bucket", "logs/")
    assert parse_location("b:bk/a/b/") == Location("b", "bk", "a/b/")
    assert parse_location("b:bk/a").key("x") == "a/x"
    for bad in ("s3://bucket/x", "bucket/x", ":bucket", "name:", "a/b:c", ""):
        with pytest.raises(InvalidArgument):
            parse_location(bad)


def test_overlapping_locations() -> None:
    a = parse_location("e:b/data")
    assert bulk._overlap(a, parse_location("e:b/data/sub"))
    assert bulk._overlap(a, parse_location("e:b"))
    assert not bulk._overlap(a, parse_location("e:b/data2"))
    assert not bulk._overlap(a, parse_location("f:b/data"))
    assert not bulk._overlap(a, parse_location("e:other/data"))


# ----------------------------------------------------------------------------- compare
def test_compare_rules() -> None:
    assert compare((5, MD5_A), None) == "missing"
    assert compare((5, MD5_A), (6, MD5_A)) == "stale"
    assert compare((5, MD5_A), (5, MD5_A)) == "same"
    assert compare((5, MULTI_A), (5, MULTI_A)) == "same"
    assert compare((5, MD5_A), (5, MD5_B)) == "stale"  # both single-part: the ETag decides
    # One side multipart: the destination's s3kit-source-etag decides (a HEAD is needed).
    assert compare((5, MULTI_A), (5, MD5_B)) == "check"
    assert compare((5, MD5_A), (5, MULTI_B)) == "check"
    assert compare((5, MULTI_A), (5, MD5_B), MULTI_A) == "same"
    assert compare((5, MD5_A), (5, MULTI_B), MD5_A) == "same"
    assert compare((5, MULTI_A), (5, MD5_B), "") == "stale"
    assert compare((5, MULTI_A), (5, MD5_B), MULTI_B) == "stale"


def test_plan_shard() -> None:
    src = {"a": (1, MD5_A), "b": (2, MD5_A), "c": (3, MULTI_A), "d": (4, MD5_A), "e": (5, MD5_A)}
    dst = {"a": (1, MD5_A), "b": (2, MD5_B), "c": (3, MD5_B), "e": (6, MD5_A), "z": (1, MD5_A)}
    plan = plan_shard(src, dst, delete=False)
    assert plan.same == 1
    assert [(k, why) for k, _, _, why in plan.copy] == [
        ("b", "stale"),
        ("d", "missing"),
        ("e", "stale"),
    ]
    assert plan.check == [("c", 3, MULTI_A)]
    assert plan.delete == []
    assert plan_shard(src, dst, delete=True).delete == ["z"]


# ---------------------------------------------------------------------------- sharding
def test_iter_listing_bounds_and_pages() -> None:
    fake = FakeBucket({f"root/k{i:03d}": i for i in range(50)} | {"root/sub/x": 1}, page_size=7)
    rows = list(iter_listing(fake.page, "root/", "", "k009", "k020", delimiter="/"))
    assert [k for k, _, _ in rows] == [f"k{i:03d}" for i in range(10, 21)]
    assert rows[0][1] == 10
    prefixes: list[str] = []
    flat = list(iter_listing(fake.page, "root/", delimiter="/", prefixes=prefixes))
    assert len(flat) == 50 and prefixes == ["sub/"]
    assert fake.requests > 8  # paged


@pytest.mark.parametrize("page_size", [1000, 3])
@pytest.mark.parametrize("shard_size", [1, 4, 25, 1000])
def test_shards_cover_every_key_once(page_size: int, shard_size: int) -> None:
    keys = _keys(33, {"a/": 40, "b/": 3, "c-/": 9})
    keys = {f"top/{k}": v for k, v in keys.items()} | {"other": 1, "top-sibling/x": 1}
    fake = FakeBucket(keys, page_size)
    shards = plan_shards(fake.page, "top/", shard_size)
    ids = [s.id for s in shards]
    assert len(set(ids)) == len(ids)
    rel_keys = [k[len("top/") :] for k in keys if k.startswith("top/")]
    for rel in rel_keys:
        assert sum(s.contains(rel) for s in shards) == 1, rel
    assert sum(s.objects for s in shards) == len(rel_keys)
    assert sum(s.bytes for s in shards) == sum(v for k, v in keys.items() if k.startswith("top/"))
    assert all(s.objects <= shard_size for s in shards)
    # what each shard lists is exactly what it contains
    listed: list[str] = []
    for s in shards:
        rows = list(
            iter_listing(fake.page, "top/", s.prefix, s.start_after, s.end, "/" if s.flat else None)
        )
        assert all(s.contains(k) for k, _, _ in rows)
        assert len(rows) == s.objects
        listed.extend(k for k, _, _ in rows)
    assert sorted(listed) == sorted(rel_keys)


def test_shards_random_keys() -> None:
    rng = random.Random(7)
    alphabet = "ab/-_.Zé"
    keys = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))): 1 for _ in range(400)}
    keys = {k: 1 for k in keys if not k.startswith("/") and "//" not in k}
    fake = FakeBucket(keys, page_size=5)
    shards = plan_shards(fake.page, "", 11)
    for key in keys:
        assert sum(s.contains(key) for s in shards) == 1, key
    total = 0
    for s in shards:
        rows = list(
            iter_listing(fake.page, "", s.prefix, s.start_after, s.end, "/" if s.flat else None)
        )
        assert {k for k, _, _ in rows} == {k for k in keys if s.contains(k)}
        total += len(rows)
    assert total == len(keys)


def test_shards_for_delete_cover_destination_only_prefixes() -> None:
    src = FakeBucket({"p/a/1": 1, "p/a/2": 1})
    dst = FakeBucket({"q/a/1": 1, "q/gone/1": 1, "q/gone/2": 1, "q/loose": 1})
    without = plan_shards(src.page, "p/", 10)
    assert [(s.prefix, s.flat) for s in without] == [("a/", False)]  # no empty flat shard
    shards = plan_shards(src.page, "p/", 10, dst_page=dst.page, dst_root="q/")
    assert {(s.prefix, s.flat) for s in shards} == {("", True), ("a/", False), ("gone/", False)}
    for rel in ("a/1", "gone/1", "gone/2", "loose"):
        assert sum(s.contains(rel) for s in shards) == 1


def test_shards_skip_the_manifest_and_cover_other_members() -> None:
    first = FakeBucket({"r/a/1": 1, "r/.s3kit-sync/j/plan.json": 1, "r/top": 1})
    second = FakeBucket({"r/a/2": 1, "r/only-here/1": 1, "r/.s3kit-sync/j/x/y.json": 1})
    shards = plan_shards(first.page, "r/", 10, others=[(second.page, "r/")])
    assert {(s.prefix, s.flat) for s in shards} == {
        ("", True),
        ("a/", False),
        ("only-here/", False),
    }
    for rel in ("a/1", "a/2", "top", "only-here/1"):
        assert sum(s.contains(rel) for s in shards) == 1
    assert bulk.MANIFEST_PREFIX == ".s3kit-sync/"


def test_driver_sends_each_shard_only_its_skipped_keys(tmp_path: Any) -> None:
    shards = [Shard("a/"), Shard("b/")]
    job = SyncJob("/x.toml", parse_location("s:b"), parse_location("d:b"),
                  skip=frozenset({"a/1", "b/2", "c/3"}), kind="repair")  # fmt: skip
    driver = bulk._Driver(job, "job", None, bulk._Tally(shards, [], None, None))
    assert driver.job_for(shards[0]).skip == {"a/1"}
    assert driver.job_for(shards[1]).skip == {"b/2"}
    plain = SyncJob("/x.toml", parse_location("s:b"), parse_location("d:b"))
    assert bulk._Driver(plain, "j", None, driver.tally).job_for(shards[0]) is plain


def test_effective_etag_and_state_option() -> None:
    assert bulk._effective({"ETag": MD5_A, "Metadata": {"s3kit-source-etag": MULTI_A}}) == MD5_A
    assert bulk._effective({"ETag": MULTI_B, "Metadata": {"s3kit-source-etag": MULTI_A}}) == MULTI_A
    assert bulk._effective({"ETag": MULTI_B}) == MULTI_B
    with pytest.raises(InvalidArgument, match="state"):
        bulk._check_options(1, 10, None, "redis")


def test_shard_json_and_id() -> None:
    shard = Shard("a/", "k1", "k9", False, 3, 30)
    assert Shard.from_json(shard.to_json()) == shard
    assert shard.id == Shard("a/", "k1", "k9", False).id  # counts are not identity
    assert shard.id != Shard("a/", "k1", None, False).id
    assert Shard("", None, "k", True).contains("k") and not Shard("", None, "k", True).contains(
        "k/"
    )


# ------------------------------------------------------------------------------ secrets
def _config(tmp_path: Any, secret_line: str) -> str:
    path = tmp_path / "s3kit.toml"
    path.write_text(
        "[endpoints.src]\n"
        'url = "http://127.0.0.1:1"\n'
        'access_key = "AKIDSOURCE"\n'
        f"{secret_line}\n"
        "[endpoints.dst]\n"
        'url = "http://127.0.0.1:2"\n'
    )
    return str(path)


@pytest.mark.parametrize("where", ["env", "file"])
def test_task_arguments_carry_no_secret(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    secret = "sEcReT-4f9a1c-never-pickled"
    if where == "env":
        monkeypatch.setenv("BULK_TEST_SECRET", secret)
        config = _config(tmp_path, 'secret_key = "${BULK_TEST_SECRET}"')
    else:
        config = _config(tmp_path, f'secret_key = "{secret}"')
    job = SyncJob(config, parse_location("src:b/p"), parse_location("dst:b/q"), delete=True)
    blobs = [pickle.dumps((run_shard, job, Shard("a/", "x", "y")))]
    cloudpickle = pytest.importorskip("cloudpickle")
    blobs.append(cloudpickle.dumps((run_shard, job, Shard("a/", "x", "y"))))
    for blob in blobs:
        assert secret.encode() not in blob
        assert b"AKIDSOURCE" not in blob
        assert config.encode() in blob  # the reference travels instead
    # A worker resolves the reference itself.
    worker = bulk._Worker(config)
    try:
        assert worker.mux.endpoint("src").config.secret_key == secret
    finally:
        worker.mux.close()


# ------------------------------------------------------------------------ validation
def test_sync_rejects_bad_arguments(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path, 'secret_key = "x"')
    state = str(tmp_path / "state.sqlite")
    with pytest.raises(ConfigError, match="unknown endpoint 'nope'"):
        bulk.sync("nope:b", "dst:b", config=config, state_path=state)
    with pytest.raises(InvalidArgument, match="overlaps"):
        bulk.sync("src:b/data", "src:b/data/copy", config=config, state_path=state)
    with pytest.raises(InvalidArgument, match="workers"):
        bulk.sync("src:b", "dst:b", config=config, workers=0, state_path=state)
    with pytest.raises(InvalidArgument, match="shard_size"):
        bulk.sync("src:b", "dst:b", config=config, shard_size=0, state_path=state)
    with pytest.raises(InvalidArgument):
        bulk.sync("s3://b/x", "dst:b", config=config, state_path=state)
    monkeypatch.delenv("S3KIT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path / "..")
    with pytest.raises(ConfigError):
        bulk.sync("src:b", "dst:b", config=str(tmp_path / "missing.toml"))


# ------------------------------------------------------------------------------- state
def test_state_resume_and_finish(tmp_path: Any) -> None:
    state = bulk._State(tmp_path / "s" / "state.sqlite")
    shards = [Shard("a/", objects=2), Shard("b/", objects=3), Shard("", None, "k", True)]
    assert state.resume("job") is None
    state.save_plan("job", "src:b/", "dst:b/", shards)
    assert state.resume("job") == [(s, False) for s in shards]
    state.done("job", shards[1], {"copied": 3})
    assert state.resume("job") == [(shards[0], False), (shards[1], True), (shards[2], False)]
    assert state.resume("other") is None
    state.finish("job")
    assert state.resume("job") is None  # finished: the next run plans afresh
    state.close()


def _driver(
    tmp_path: Any, shards: list[Shard]
) -> tuple[bulk._Driver, bulk._State, list[Mapping[str, int]]]:
    reports: list[Mapping[str, int]] = []
    state = bulk._State(tmp_path / "state.sqlite")
    state.save_plan("job", "s", "d", shards)
    tally = bulk._Tally(shards, [], reports.append, None)
    job = SyncJob("/nonexistent.toml", parse_location("s:b"), parse_location("d:b"))
    return bulk._Driver(job, "job", state, tally), state, reports


def test_driver_retries_a_failed_shard_once(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    shards = [Shard("ok/", objects=2), Shard("flaky/", objects=3), Shard("bad/", objects=1)]
    runs: list[str] = []

    def fake_run(job: SyncJob, shard: Shard) -> dict[str, Any]:
        runs.append(shard.prefix)
        if shard.prefix == "bad/":
            raise ConnectionError("listing failed")
        if shard.prefix == "flaky/" and runs.count("flaky/") == 1:
            return {"listed": 3, "copied": 1, "skipped": 0, "failed": 2, "bytes": 1}
        return {"listed": shard.objects, "copied": shard.objects, "skipped": 0, "bytes": 7}

    monkeypatch.setattr(bulk, "run_shard", fake_run)
    driver, state, reports = _driver(tmp_path, shards)
    driver.run_here(shards)
    assert sorted(runs) == ["bad/", "bad/", "flaky/", "flaky/", "ok/"]
    counts = driver.tally.counts
    assert counts["copied"] == 5 and counts["listed"] == 5  # the final runs only
    assert counts["failed"] == 1  # bad/ failed twice: its one object
    done = {s.prefix: d for s, d in state.resume("job") or []}
    assert done == {"ok/": True, "flaky/": True, "bad/": False}
    assert reports[-1]["shards_done"] == 3 and reports[-1]["objects_done"] == 6
    state.close()


# ---------------------------------------------------------------------------- terminal
def test_rich_progress_shows_objects_bytes_rate_and_counts() -> None:
    io = pytest.importorskip("io")
    rich_console = pytest.importorskip("rich.console")
    out = io.StringIO()
    console = rich_console.Console(file=out, force_terminal=True, width=120)
    bar = bulk._RichProgress(console=console)
    with bar:
        bar.update(
            {
                **dict.fromkeys(bulk.COUNTS, 0),
                "copied": 1200,
                "skipped": 34,
                "shards": 9,
                "objects_done": 1234,
                "objects_total": 5000,
                "bytes_done": 3 * 2**20,
                "bytes_total": 12 * 2**20,
                "shards_done": 2,
            }
        )
        bar.progress.refresh()
    text = out.getvalue()
    for part in ("1,234/5,000", "3.0 MiB/12.0 MiB", "obj/s", "copied 1,200", "shards 2/9"):
        assert part in text, part


def test_human_sizes() -> None:
    assert bulk._human(512) == "512 B"
    assert bulk._human(1536) == "1.5 KiB"
    assert bulk._human(9 * 2**20) == "9.0 MiB"
