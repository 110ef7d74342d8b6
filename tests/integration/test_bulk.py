"""s3kit.bulk.sync between two real servers: local process pool, Dask LocalCluster, kills, resume.

One module-scoped pair of moto servers; the source holds 1,000 small objects (four prefixes of
240 and 40 keys directly under the root) plus two 9 MiB multipart objects. Each test syncs into
a destination of its own and checks every object afterwards (keys and sizes, ETags of the
single-part ones, MD5 of the bodies of a sample and of the multipart ones).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from s3kit import bulk
from s3kit.testing import S3ServerPool

pytestmark = [pytest.mark.scale]

SRC_BUCKET = "src"
SECRET_VAR = "S3KIT_BULK_TEST_SECRET"
SECRET = "bulk-secret-7d1e0b-must-not-travel"
PREFIXES = ("p0", "p1", "p2", "p3")
PER_PREFIX = 240
FLAT = 40
BIG = ("big/mp-0", "big/mp-1")
TOTAL = len(PREFIXES) * PER_PREFIX + FLAT + len(BIG)


class Env:
    def __init__(self, pool: S3ServerPool, config: str, big_md5: dict[str, str]) -> None:
        self.pool = pool
        self.config = config
        self.big_md5 = big_md5
        self.src = pool[0].client(max_pool_connections=32)
        self.dst = pool[1].client(max_pool_connections=32)

    def client(self, endpoint: str) -> Any:
        return self.src if endpoint == "a" else self.dst

    def bucket(self, endpoint: str, name: str) -> str:
        self.pool[0 if endpoint == "a" else 1].create_bucket(name)
        return name


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    old = os.environ.get(SECRET_VAR)
    os.environ[SECRET_VAR] = SECRET  # moto does not check it; workers must still resolve it
    pool = S3ServerPool(2, "moto", buckets=[SRC_BUCKET]).start()
    try:
        path = tmp_path_factory.mktemp("bulk") / "s3kit.toml"
        path.write_text(
            "[defaults]\n"
            "max_concurrent = 8\n"
            "[endpoints.a]\n"
            f'url = "{pool[0].url}"\n'
            'access_key = "testing-access"\n'
            f'secret_key = "${{{SECRET_VAR}}}"\n'
            "[endpoints.b]\n"
            f'url = "{pool[1].url}"\n'
            'access_key = "testing-access"\n'
            'secret_key = "testing-secret"\n'
        )
        big_md5 = _seed(pool)
        yield Env(pool, str(path), big_md5)
    finally:
        pool.stop()
        if old is None:
            os.environ.pop(SECRET_VAR, None)
        else:
            os.environ[SECRET_VAR] = old


def _seed(pool: S3ServerPool) -> dict[str, str]:
    import concurrent.futures

    client = pool[0].client(max_pool_connections=32)
    items = [
        (f"data/{p}/obj-{i:04d}", 100 + (i * 37) % 1900)
        for p in PREFIXES
        for i in range(PER_PREFIX)
    ]
    items += [(f"data/flat-{i:03d}", 50 + i) for i in range(FLAT)]

    def put(item: tuple[str, int]) -> None:
        key, size = item
        extra: dict[str, Any] = {}
        if key.startswith("data/p0/"):
            extra = {"ContentType": "text/plain", "Metadata": {"origin": "seed"}}
        client.put_object(Bucket=SRC_BUCKET, Key=key, Body=os.urandom(size), **extra)

    with concurrent.futures.ThreadPoolExecutor(16) as pool_:
        list(pool_.map(put, items))
    md5s: dict[str, str] = {}
    mp = TransferConfig(multipart_threshold=8 * 2**20, multipart_chunksize=8 * 2**20)
    for key in BIG:
        body = os.urandom(9 * 2**20)
        md5s[f"data/{key}"] = hashlib.md5(body).hexdigest()
        client.upload_fileobj(io.BytesIO(body), SRC_BUCKET, f"data/{key}", Config=mp)
        assert "-" in client.head_object(Bucket=SRC_BUCKET, Key=f"data/{key}")["ETag"]
    return md5s


def _listing(client: Any, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents") or []:
            out[obj["Key"][len(prefix) :]] = (obj["Size"], obj["ETag"])
    return out


def _md5(client: Any, bucket: str, key: str) -> str:
    return hashlib.md5(client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


def _assert_synced(env: Env, src_prefix: str, dst_ep: str, dst_bucket: str, dst_prefix: str) -> int:
    """Every source object is on the destination, identical (and nothing else is there)."""
    src = _listing(env.src, SRC_BUCKET, src_prefix)
    dst_client = env.client(dst_ep)
    dst = _listing(dst_client, dst_bucket, dst_prefix)
    assert sorted(dst) == sorted(src), set(src) ^ set(dst)
    for key, (size, etag) in src.items():
        assert dst[key][0] == size, key
        if "-" not in etag and "-" not in dst[key][1]:
            assert dst[key][1] == etag, key
    single = [key for key, (_, etag) in src.items() if "-" not in etag]
    for key in single[:: max(1, len(single) // 15)]:
        assert _md5(dst_client, dst_bucket, dst_prefix + key) == src[key][1].strip('"'), key
    for key, (_, etag) in src.items():
        if "-" in etag:  # multipart: the bodies, and the source ETag the copy carries
            assert _md5(dst_client, dst_bucket, dst_prefix + key) == env.big_md5[src_prefix + key]
            head = dst_client.head_object(Bucket=dst_bucket, Key=dst_prefix + key)
            assert head["ETag"] == etag or head["Metadata"]["s3kit-source-etag"] == etag
    return len(src)


def _sync(env: Env, src: str, dst: str, tmp_path: Any, **kw: Any) -> dict[str, int]:
    kw.setdefault("state_path", str(tmp_path / "state.sqlite"))
    return bulk.sync(src, dst, config=env.config, **kw)


# A Dask worker preload: SIGUSR1 prints every thread's stack to the worker's stderr (which the
# test's report shows). faulthandler needs no GIL: it works on a worker whose event loop is stuck.
_STACKS_ON_SIGUSR1 = (
    "import faulthandler, signal\nfaulthandler.register(signal.SIGUSR1, all_threads=True)\n"
)


def _report_stall(client: Any) -> None:
    """Evidence for a Dask job that should have ended long ago, printed before the test's
    timeout: what the scheduler still waits for, each worker's last heartbeat, worker stacks."""

    def waiting(dask_scheduler: Any) -> dict[str, Any]:
        now = time.time()
        return {
            "tasks": {
                key: (ts.state, ts.processing_on.address if ts.processing_on else None)
                for key, ts in dask_scheduler.tasks.items()
                if ts.state != "memory"
            },
            "workers": {
                ws.address: f"{ws.status.name}, last heartbeat {now - ws.last_seen:.0f} s ago"
                for ws in dask_scheduler.workers.values()
            },
            "pids": [ws.pid for ws in dask_scheduler.workers.values()],
        }

    seen = client.run_on_scheduler(waiting)
    print("Dask job stalled; scheduler:", seen, flush=True)
    for pid in seen["pids"]:  # registered workers only: their preload has run
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)


# ------------------------------------------------------------------------------- tests
@pytest.mark.timeout(240)
def test_local_workers_sync_then_rerun_copies_nothing(env: Env, tmp_path: Any) -> None:
    bucket = env.bucket("b", "dst-local")
    reports: list[Mapping[str, int]] = []
    got = _sync(env, "a:src/data", f"b:{bucket}/data", tmp_path, workers=2, shard_size=100,
                progress=reports.append)  # fmt: skip
    assert got["listed"] == TOTAL and got["copied"] == TOTAL
    assert got["failed"] == 0 and got["skipped"] == 0 and got["deleted"] == 0
    assert got["shards"] >= 12 and got["shards_skipped"] == 0
    assert got["bytes"] == sum(s for s, _ in _listing(env.src, SRC_BUCKET, "data/").values())
    assert _assert_synced(env, "data/", "b", bucket, "data/") == TOTAL
    assert reports[0]["objects_total"] == TOTAL and reports[0]["objects_done"] == 0
    assert reports[-1]["objects_done"] == TOTAL and reports[-1]["shards_done"] == got["shards"]
    head = env.dst.head_object(Bucket=bucket, Key="data/p0/obj-0001")
    assert head["ContentType"] == "text/plain" and head["Metadata"]["origin"] == "seed"

    again = _sync(env, "a:src/data", f"b:{bucket}/data", tmp_path, workers=2, shard_size=100)
    assert again["copied"] == 0 and again["skipped"] == TOTAL and again["failed"] == 0
    assert again["shards_skipped"] == 0  # the job had finished: a fresh, full comparison


@pytest.mark.timeout(240)
def test_dask_cluster_survives_a_killed_worker(env: Env, tmp_path: Any) -> None:
    distributed = pytest.importorskip("distributed")
    cloudpickle = pytest.importorskip("cloudpickle")
    bucket = env.bucket("b", "dst-dask")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", preload=[_STACKS_ON_SIGUSR1],
    )  # fmt: skip
    client = distributed.Client(cluster)
    stall = threading.Timer(180, _report_stall, (client,))  # the test times out at 240 s
    stall.daemon = True
    stall.start()
    try:

        class Spy:
            """The client, checking that no submitted task carries a secret."""

            submitted = 0

            def submit(self, fn: Any, *args: Any, **kw: Any) -> Any:
                blob = cloudpickle.dumps((fn, args))
                assert SECRET.encode() not in blob and b"testing-secret" not in blob
                Spy.submitted += 1
                return client.submit(fn, *args, **kw)

            def cancel(self, futures: Any) -> Any:
                return client.cancel(futures)

        pids = client.run(os.getpid)
        assert len(pids) == 2
        killed: list[int] = []

        def progress(info: Mapping[str, int]) -> None:
            if not killed and info["shards_done"] >= 3:
                assert info["shards_done"] < info["shards"] - 4  # mid-job
                victim = sorted(pids.values())[0]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        got = _sync(env, "a:src/data", f"b:{bucket}/data", tmp_path, client=Spy(),
                    shard_size=50, progress=progress)  # fmt: skip
        assert killed, "the worker was not killed mid-job"
        assert got["failed"] == 0 and got["listed"] == TOTAL
        # An object copied by the killed attempt is found identical by the rerun of its shard.
        assert got["copied"] + got["skipped"] == TOTAL and got["copied"] > TOTAL // 2
        assert Spy.submitted >= got["shards"]
        assert _assert_synced(env, "data/", "b", bucket, "data/") == TOTAL
        assert killed[0] not in client.run(os.getpid).values()

        again = _sync(env, "a:src/data", f"b:{bucket}/data", tmp_path, client=client,
                      shard_size=50)  # fmt: skip
        assert again["copied"] == 0 and again["skipped"] == TOTAL and again["failed"] == 0
    finally:
        stall.cancel()
        client.close()
        cluster.close()


@pytest.mark.timeout(180)
def test_local_pool_survives_a_killed_worker(env: Env, tmp_path: Any) -> None:
    bucket = env.bucket("b", "dst-kill")
    killed: list[int] = []

    def progress(info: Mapping[str, int]) -> None:
        if not killed and info["shards_done"] >= 2:
            children = multiprocessing.active_children()  # the pool's processes
            assert children
            os.kill(children[0].pid or 0, signal.SIGKILL)
            killed.append(children[0].pid or 0)

    got = _sync(env, "a:src/data/p1", f"b:{bucket}/p1", tmp_path, workers=2, shard_size=20,
                progress=progress)  # fmt: skip
    assert killed
    assert got["failed"] == 0 and got["listed"] == PER_PREFIX
    assert got["copied"] + got["skipped"] == PER_PREFIX
    assert _assert_synced(env, "data/p1/", "b", bucket, "p1/") == PER_PREFIX


@pytest.mark.timeout(180)
def test_an_interrupted_job_resumes_where_it_stopped(env: Env, tmp_path: Any) -> None:
    bucket = env.bucket("b", "dst-resume")

    def crash(info: Mapping[str, int]) -> None:
        if info["shards_done"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _sync(env, "a:src/data/p2", f"b:{bucket}/p2", tmp_path, shard_size=30, progress=crash)
    assert len(_listing(env.dst, bucket, "p2/")) == 90
    got = _sync(env, "a:src/data/p2", f"b:{bucket}/p2", tmp_path, workers=2, shard_size=30)
    assert got["shards"] == 8 and got["shards_skipped"] == 3
    assert got["listed"] == PER_PREFIX - 90 and got["copied"] == PER_PREFIX - 90
    assert got["failed"] == 0
    assert _assert_synced(env, "data/p2/", "b", bucket, "p2/") == PER_PREFIX
    fresh = _sync(env, "a:src/data/p2", f"b:{bucket}/p2", tmp_path, shard_size=30)
    assert fresh["shards_skipped"] == 0 and fresh["copied"] == 0
    assert fresh["skipped"] == PER_PREFIX


@pytest.mark.timeout(180)
def test_delete_and_dry_run(env: Env, tmp_path: Any) -> None:
    bucket = env.bucket("b", "dst-delete")
    src, dst = "a:src/data/p3", f"b:{bucket}/mirror"
    assert _sync(env, src, dst, tmp_path, shard_size=64)["copied"] == PER_PREFIX
    extras = ("mirror/zz-extra", "mirror/gone/x1", "mirror/gone/x2")
    for key in extras:
        env.dst.put_object(Bucket=bucket, Key=key, Body=b"extra")
    env.dst.put_object(Bucket=bucket, Key="mirror/obj-0003", Body=b"stale")
    env.dst.put_object(Bucket=bucket, Key="outside/keep", Body=b"not under the prefix")
    before = _listing(env.dst, bucket, "")

    actions: list[dict[str, Any]] = []
    plan = _sync(env, src, dst, tmp_path, shard_size=64, delete=True, dry_run=True,
                 on_action=actions.append)  # fmt: skip
    assert plan["dry_run"] == 1 and plan["copied"] == 1 and plan["deleted"] == 3
    assert plan["skipped"] == PER_PREFIX - 1 and plan["failed"] == 0
    assert _listing(env.dst, bucket, "") == before  # nothing changed
    assert sorted((a["action"], a["key"]) for a in actions) == [
        ("copy", "obj-0003"),
        ("delete", "gone/x1"),
        ("delete", "gone/x2"),
        ("delete", "zz-extra"),
    ]
    assert next(a for a in actions if a["action"] == "copy")["reason"] == "stale"

    kept = _sync(env, src, dst, tmp_path, shard_size=64)
    assert kept["copied"] == 1 and kept["deleted"] == 0
    assert all(key[len("mirror/") :] in _listing(env.dst, bucket, "mirror/") for key in extras)

    gone = _sync(env, src, dst, tmp_path, shard_size=64, delete=True)
    assert gone["deleted"] == 3 and gone["copied"] == 0 and gone["failed"] == 0
    assert _assert_synced(env, "data/p3/", "b", bucket, "mirror/") == PER_PREFIX
    assert "outside/keep" in _listing(env.dst, bucket, "")


@pytest.mark.timeout(180)
def test_same_endpoint_copies_server_side(
    env: Env, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = env.bucket("a", "same")

    def streamed(*args: Any) -> None:
        raise AssertionError("streamed a copy within one endpoint")

    monkeypatch.setattr(bulk._ShardRun, "_small", streamed)
    monkeypatch.setattr(bulk._ShardRun, "_large", streamed)
    for part in ("p0", "big"):  # metadata kept; multipart sources tagged with their ETag
        got = _sync(env, f"a:src/data/{part}", f"a:{bucket}/{part}", tmp_path)
        assert got["copied"] == got["listed"] > 0 and got["failed"] == 0
        assert _assert_synced(env, f"data/{part}/", "a", bucket, f"{part}/") == got["listed"]
        assert _sync(env, f"a:src/data/{part}", f"a:{bucket}/{part}", tmp_path)["copied"] == 0
    head = env.src.head_object(Bucket=bucket, Key="p0/obj-0002")
    assert head["ContentType"] == "text/plain" and head["Metadata"]["origin"] == "seed"


@pytest.mark.timeout(120)
def test_cli_sync(env: Env, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    bucket = env.bucket("b", "dst-cli")

    def args(**kw: Any) -> argparse.Namespace:
        base = dict(
            src="a:src/data/p0", dst=f"b:{bucket}/p0", delete=False, dry_run=False,
            workers=None, dask=None, json=False, state=str(tmp_path / "cli.sqlite"),
        )  # fmt: skip
        return argparse.Namespace(**{**base, **kw})

    assert bulk.cli_sync(args(dry_run=True, json=True), env.config) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["copied"] == PER_PREFIX and out["dry_run"] is True
    assert len(out["actions"]) == PER_PREFIX
    assert _listing(env.dst, bucket, "") == {}

    assert bulk.cli_sync(args(), env.config) == 0
    text = capsys.readouterr().out
    assert f"copied {PER_PREFIX:,}" in text and "failed 0" in text
    assert bulk.cli_sync(args(dst="nope:x"), env.config) == 2
    assert "unknown endpoint 'nope'" in capsys.readouterr().err
    assert bulk.cli_sync(args(workers=0), env.config) == 2


@pytest.mark.timeout(120)
def test_bench_bulk_reports_rates() -> None:
    rows = bulk.bench_bulk(objects=40, variants=("boto3", "workers=1"), shard_size=10)
    assert [r["variant"] for r in rows] == ["boto3", "workers=1"]
    for row in rows:
        assert row["objects"] == 40 and row["objects_per_s"] > 0 and row["mb_per_s"] > 0
