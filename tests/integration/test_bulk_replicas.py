"""Bulk replicate and repair (s3kit.bulk.replicate / repair) and the manifest state (state="s3").

Three moto servers a, b, c forming one replica set; ~200 small objects and one multipart object.
The local ``workers=2`` runs are in ``make test``; the Dask variants are marked ``scale``.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from s3kit import bulk
from s3kit._cli import main
from s3kit.testing import FaultProxy, S3ServerPool

# The bulk tier (make test-scale): worker processes and three servers per module.
pytestmark = [pytest.mark.timeout(180), pytest.mark.scale]

BUCKET = "rep"
NAMES = ("a", "b", "c")
PREFIXES = ("p0", "p1", "p2", "p3")
PER_PREFIX = 45
FLAT = 19
BIG = "big/mp"
TOTAL = len(PREFIXES) * PER_PREFIX + FLAT + 1  # 200
SMALL = TOTAL - 1  # without the multipart object


class Env:
    def __init__(self, pool: S3ServerPool, config: str) -> None:
        self.pool = pool
        self.config = config
        self.clients = {n: pool[i].client(max_pool_connections=16) for i, n in enumerate(NAMES)}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    pool = S3ServerPool(3, "moto", buckets=[BUCKET, "other"]).start()
    try:
        tmp = tmp_path_factory.mktemp("bulk-replicas")
        yield Env(pool, _write_config(pool, tmp))
    finally:
        pool.stop()


def _write_config(pool: S3ServerPool, tmp: Path, urls: Mapping[str, str] | None = None) -> str:
    """The replica set a, b, c (``urls`` replaces an endpoint's URL, e.g. by a proxy's)."""
    lines = [
        "[defaults]",
        "max_concurrent = 8",
        "connect_timeout = 1",
        "[multiplexer]",
        'replicas = ["a", "b", "c"]',
        f'ledger_path = "{tmp / "ledger.sqlite"}"',
    ]
    for name, srv in zip(NAMES, pool, strict=True):
        lines += [
            f"[endpoints.{name}]",
            f'url = "{(urls or {}).get(name, srv.url)}"',
            f'access_key = "{srv.access_key}"',
            f'secret_key = "{srv.secret_key}"',
        ]
    path = tmp / "s3kit.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _seed(client: Any, prefix: str, big: bool = True) -> None:
    items = [(f"{prefix}{p}/obj-{i:03d}", 50 + (i * 31) % 700) for p in PREFIXES for i in range(45)]
    items += [(f"{prefix}flat-{i:02d}", 20 + i) for i in range(FLAT)]

    def put(item: tuple[str, int]) -> None:
        client.put_object(Bucket=BUCKET, Key=item[0], Body=os.urandom(item[1]))

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(put, items))
    if not big:
        return
    mp = TransferConfig(multipart_threshold=8 * 2**20, multipart_chunksize=8 * 2**20)
    client.upload_fileobj(io.BytesIO(os.urandom(9 * 2**20)), BUCKET, prefix + BIG, Config=mp)


def _listing(client: Any, prefix: str, bucket: str = BUCKET) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents") or []:
            out[obj["Key"][len(prefix) :]] = (obj["Size"], obj["ETag"])
    return out


def _md5(client: Any, key: str, bucket: str = BUCKET) -> str:
    return hashlib.md5(client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


def _assert_same(env: Env, prefix: str, names: tuple[str, ...] = NAMES) -> int:
    """Every member in ``names`` holds the same keys, sizes and bodies as the first."""
    ref_client = env.clients[names[0]]
    ref = _listing(ref_client, prefix)
    for name in names[1:]:
        client = env.clients[name]
        got = _listing(client, prefix)
        assert sorted(got) == sorted(ref), (name, set(got) ^ set(ref))
        for key, (size, etag) in ref.items():
            assert got[key][0] == size, (name, key)
            if "-" not in etag and "-" not in got[key][1]:
                assert got[key][1] == etag, (name, key)
        for key in [BIG, *list(ref)[::40]]:
            if key in ref:
                assert _md5(client, prefix + key) == _md5(ref_client, prefix + key), (name, key)
    return len(ref)


# ------------------------------------------------------------------------------ replicate
@pytest.fixture(scope="module")
def replicated(env: Env, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """``a:rep/r1/`` seeded, then replicated to b and c on 2 worker processes."""
    _seed(env.clients["a"], "r1/")
    state = tmp_path_factory.mktemp("replicated") / "s.sqlite"
    return bulk.replicate("a:rep/r1", config=env.config, workers=2, shard_size=40,
                          state_path=str(state))  # fmt: skip


def test_replicate_a_prefix_to_every_endpoint_with_workers(
    env: Env, replicated: dict[str, int], tmp_path: Path
) -> None:
    got = replicated
    assert got["listed"] == TOTAL and got["copied"] == 2 * TOTAL and got["failed"] == 0
    assert got["shards"] >= 5 and got["deleted"] == 0
    assert _assert_same(env, "r1/") == TOTAL
    head = env.clients["c"].head_object(Bucket=BUCKET, Key="r1/" + BIG)
    src_etag = env.clients["a"].head_object(Bucket=BUCKET, Key="r1/" + BIG)["ETag"]
    assert head["ETag"] == src_etag or head["Metadata"]["s3kit-source-etag"] == src_etag

    env.clients["b"].delete_object(Bucket=BUCKET, Key="r1/p1/obj-007")
    again = bulk.replicate("a:rep/r1", config=env.config, shard_size=40,
                           state_path=str(tmp_path / "s.sqlite"))  # fmt: skip
    assert again["copied"] == 1 and again["skipped"] == 2 * TOTAL - 1 and again["failed"] == 0


def test_replicate_to_named_endpoints_and_bad_arguments(env: Env, tmp_path: Path) -> None:
    env.clients["a"].put_object(Bucket=BUCKET, Key="r2/x/one", Body=b"1")
    env.clients["a"].put_object(Bucket=BUCKET, Key="r2/two", Body=b"22")
    actions: list[dict[str, Any]] = []
    plan = bulk.replicate("a:rep/r2", to=["c"], config=env.config, dry_run=True,
                          on_action=actions.append)  # fmt: skip
    assert plan["copied"] == 2 and plan["dry_run"] == 1
    assert sorted((a["key"], a["endpoint"]) for a in actions) == [("two", "c"), ("x/one", "c")]
    got = bulk.replicate("a:rep/r2", to=["c"], config=env.config,
                         state_path=str(tmp_path / "s.sqlite"))  # fmt: skip
    assert got["copied"] == 2
    assert sorted(_listing(env.clients["c"], "r2/")) == ["two", "x/one"]
    assert _listing(env.clients["b"], "r2/") == {}
    with pytest.raises(ValueError, match="is the source"):
        bulk.replicate("a:rep/r2", to=["a", "b"], config=env.config)
    with pytest.raises(ValueError, match="unknown endpoint 'zz'"):
        bulk.replicate("a:rep/r2", to=["zz"], config=env.config)


# --------------------------------------------------------------------------------- repair
def test_repair_brings_members_level_with_workers(
    env: Env, replicated: dict[str, int], tmp_path: Path
) -> None:
    assert replicated["failed"] == 0  # three replicas that agreed...
    a, b, c = (env.clients[n] for n in NAMES)
    # ...then drift: b lost keys (the multipart one too), c holds newer versions of two keys
    # and a key nobody else has.
    for key in ("r1/p0/obj-001", "r1/p3/obj-044", "r1/flat-03", "r1/" + BIG):
        b.delete_object(Bucket=BUCKET, Key=key)
    time.sleep(1.1)  # LastModified has one-second resolution: c's writes must be newer
    c.put_object(Bucket=BUCKET, Key="r1/p1/obj-010", Body=b"newer on c")
    c.put_object(Bucket=BUCKET, Key="r1/flat-07", Body=b"also newer on c")
    c.put_object(Bucket=BUCKET, Key="r1/p9/only-c", Body=b"only on c")

    actions: list[dict[str, Any]] = []
    plan = bulk.repair("rep/r1", config=env.config, dry_run=True, on_action=actions.append)
    assert plan["copied"] == 4 + 2 * 2 + 2 and plan["failed"] == 0
    assert {(x["key"], x["source"], x["endpoint"]) for x in actions} >= {
        ("p1/obj-010", "c", "a"),
        ("p1/obj-010", "c", "b"),
        ("p9/only-c", "c", "b"),
    }
    assert any(x["key"] == BIG and x["endpoint"] == "b" for x in actions)

    got = bulk.repair("rep/r1", config=env.config, workers=2, shard_size=40,
                      state_path=str(tmp_path / "s.sqlite"))  # fmt: skip
    assert got["copied"] == 10 and got["failed"] == 0 and got["from_ledger"] == 0
    assert got["listed"] == TOTAL + 1 and got["shards"] >= 6
    assert _assert_same(env, "r1/") == TOTAL + 1
    assert a.get_object(Bucket=BUCKET, Key="r1/p1/obj-010")["Body"].read() == b"newer on c"
    head = b.head_object(Bucket=BUCKET, Key="r1/" + BIG)
    assert (
        head["Metadata"]["s3kit-source-etag"]
        == a.head_object(Bucket=BUCKET, Key="r1/" + BIG)["ETag"]
        or head["ETag"] == a.head_object(Bucket=BUCKET, Key="r1/" + BIG)["ETag"]
    )

    again = bulk.repair("rep/r1", config=env.config, shard_size=40,
                        state_path=str(tmp_path / "s.sqlite"))  # fmt: skip
    assert again["copied"] == 0 and again["failed"] == 0
    assert again["skipped"] == 2 * (TOTAL + 1)


def test_repair_replays_the_ledger_and_never_resurrects_a_delete(env: Env) -> None:
    from s3kit import Multiplexer
    from s3kit._ledger import DELETE

    for client in env.clients.values():
        client.put_object(Bucket=BUCKET, Key="t1/keep", Body=b"k")
    # A delete that reached a and b but missed c: the ledger owes c a tombstone.
    env.clients["c"].put_object(Bucket=BUCKET, Key="t1/gone", Body=b"deleted elsewhere")
    with Multiplexer.from_config(env.config, health_interval=None) as mux:
        (group,) = mux.replica_groups
        mux._ledger().record(group, ["c"], BUCKET, "t1/gone", DELETE, "tok-1")
    got = bulk.repair("rep/t1", config=env.config)
    assert got["from_ledger"] == 1 and got["copied"] == 0 and got["failed"] == 0
    for client in env.clients.values():
        assert sorted(_listing(client, "t1/")) == ["keep"]
    with Multiplexer.from_config(env.config, health_interval=None) as mux:
        assert mux.pending(BUCKET, "t1/") == []


def test_repair_cli_bulk_form(env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env.clients["b"].put_object(Bucket=BUCKET, Key="m2/k1", Body=b"one")
    env.clients["c"].put_object(Bucket=BUCKET, Key="m2/d/k2", Body=b"two")
    state = str(tmp_path / "cli.sqlite")
    argv = ["--config", env.config, "repair", "rep/m2", "--workers", "1", "--state", state]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would copy k1 b -> a" in out and "would copy d/k2 c -> b" in out
    assert main(argv) == 0
    assert "copied 4" in capsys.readouterr().out
    for client in env.clients.values():
        assert sorted(_listing(client, "m2/")) == ["d/k2", "k1"]
    assert main(["--config", env.config, "repair", "rep/m2", "--group", "nope",
                 "--workers", "1"]) == 2  # fmt: skip
    assert "unknown replica set 'nope'" in capsys.readouterr().err


def test_repair_skips_an_unreachable_member(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, c = (env.clients[n] for n in NAMES)
    a.put_object(Bucket=BUCKET, Key="u1/only-a", Body=b"a")
    b.put_object(Bucket=BUCKET, Key="u1/d/only-b", Body=b"bb")
    state = str(tmp_path / "s.sqlite")
    with FaultProxy(env.pool[2].port) as proxy:
        proxy.set_mode("refuse")  # c's server is down
        config = _write_config(env.pool, tmp_path, {"c": proxy.url})
        actions: list[dict[str, Any]] = []
        got = bulk.repair("rep/u1", config=config, workers=1, state_path=state,
                          on_action=actions.append)  # fmt: skip
        assert got["unreachable"] == ["c"] and got["failed"] == 1
        assert got["copied"] == 2 and got["listed"] == 2 and got["from_ledger"] == 0
        assert [(x["action"], x["endpoint"], x["ok"]) for x in actions] == [("probe", "c", False)]
        assert "ConnectionFailed" in actions[0]["error"]
        for client in (a, b):
            assert sorted(_listing(client, "u1/")) == ["d/only-b", "only-a"]
        assert _listing(c, "u1/") == {}

        # Fewer than two members answer: nothing to compare, the set is skipped.
        alone = bulk.repair("rep/u1", config=config, members=["a", "c"], state_path=state)
        assert alone["unreachable"] == ["c"] and alone["failed"] == 1
        assert alone["shards"] == 0 and alone["listed"] == 0 and alone["copied"] == 0

        b.put_object(Bucket=BUCKET, Key="u1/k3", Body=b"3")
        argv = ["--config", config, "repair", "rep/u1", "--workers", "1", "--state", state]
        assert main([*argv, "--json"]) == 1  # a partial failure
        out = json.loads(capsys.readouterr().out)
        assert out["unreachable"] == ["c"] and out["failed"] == 1 and out["copied"] == 1
        assert [x["action"] for x in out["actions"]] == ["probe"]
        assert main(argv) == 1
        captured = capsys.readouterr()
        assert "unreachable (skipped): c" in captured.out and "copied 0" in captured.out
        assert "c did not answer, skipped: ConnectionFailed" in captured.err
    assert sorted(_listing(a, "u1/")) == ["d/only-b", "k3", "only-a"]


# ------------------------------------------------------------------- manifest state ("s3")
def test_s3_state_lets_another_driver_resume(env: Env, tmp_path: Path) -> None:
    a, b = env.clients["a"], env.clients["b"]
    _seed(a, "s1/", big=False)  # TOTAL - 1 objects
    # A second driver: another copy of the configuration (another path, as on another machine).
    other = tmp_path / "elsewhere" / "s3kit.toml"
    other.parent.mkdir()
    shutil.copy(env.config, other)

    def crash(info: Mapping[str, int]) -> None:
        if info["shards_done"] == 3:
            raise KeyboardInterrupt

    opts: dict[str, Any] = {"state": "s3", "shard_size": 25, "delete": True}
    with pytest.raises(KeyboardInterrupt):
        bulk.sync("a:rep/s1", "b:other/s1", config=env.config, progress=crash, **opts)
    manifest = _listing(b, "s1/" + bulk.MANIFEST_PREFIX, "other")
    done_before = [k for k in manifest if k.endswith(".json") and not k.endswith("plan.json")]
    assert len(done_before) == 3 and len([k for k in manifest if k.endswith("plan.json")]) == 1
    copied_before = len(_listing(b, "s1/", "other")) - len(manifest)
    assert 0 < copied_before < SMALL

    got = bulk.sync("a:rep/s1", "b:other/s1", config=str(other), workers=2, **opts)
    assert got["shards_skipped"] == 3 and got["failed"] == 0
    assert got["copied"] == SMALL - copied_before and got["deleted"] == 0  # manifest kept
    assert _listing(b, "s1/" + bulk.MANIFEST_PREFIX, "other") == {}  # finished: cleared
    src = _listing(a, "s1/")
    dst = _listing(b, "s1/", "other")
    assert sorted(dst) == sorted(src)

    again = bulk.sync("a:rep/s1", "b:other/s1", config=str(other), **opts)
    assert again["copied"] == 0 and again["shards_skipped"] == 0 and again["skipped"] == SMALL


def test_s3_state_for_replicate_and_a_source_holding_a_manifest(env: Env, tmp_path: Path) -> None:
    a = env.clients["a"]
    a.put_object(Bucket=BUCKET, Key="s2/k", Body=b"k")
    # A stray manifest on the source (it was once a destination) is never copied.
    a.put_object(Bucket=BUCKET, Key="s2/.s3kit-sync/old/plan.json", Body=b"{}")
    got = bulk.replicate("a:rep/s2", to=["b", "c"], config=env.config, state="s3")
    assert got["copied"] == 2 and got["listed"] == 1
    for name in ("b", "c"):
        assert sorted(_listing(env.clients[name], "s2/")) == ["k"]
    with pytest.raises(ValueError, match="state"):
        bulk.replicate("a:rep/s2", config=env.config, state="redis")


# ----------------------------------------------------------------------------- Dask (scale)
@pytest.mark.scale
@pytest.mark.timeout(240)
def test_dask_replicate_and_repair(env: Env, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
        dashboard_address=None,
    )  # fmt: skip
    client = distributed.Client(cluster)
    try:
        _seed(env.clients["a"], "d1/")
        got = bulk.replicate("a:rep/d1", config=env.config, client=client, shard_size=30,
                             state="s3")  # fmt: skip
        assert got["copied"] == 2 * TOTAL and got["failed"] == 0
        env.clients["c"].delete_object(Bucket=BUCKET, Key="d1/p2/obj-002")
        env.clients["b"].delete_object(Bucket=BUCKET, Key="d1/" + BIG)
        fixed = bulk.repair("rep/d1", config=env.config, client=client, shard_size=30,
                            state="s3")  # fmt: skip
        assert fixed["copied"] == 2 and fixed["failed"] == 0
        assert _assert_same(env, "d1/") == TOTAL
    finally:
        client.close()
        cluster.close()
