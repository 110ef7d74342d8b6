"""The fsspec filesystem (``s3kit://bucket/key``) against real S3 servers (moto on 127.0.0.1).

Three servers hold the same objects (replicas, written to each directly); a TOML configuration
routes round-robin over them. pandas and pyarrow read through the filesystem, a 12 MiB file is
written through ``open("wb")`` (multipart) and read back, pickling carries only the config path,
and a pyarrow dataset read survives one server killed in the middle of it (own pool).
"""

from __future__ import annotations

import glob
import io
import os
import pickle
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

fsspec = pytest.importorskip("fsspec")
from fsspec.spec import AbstractFileSystem  # noqa: E402

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
ds = pytest.importorskip("pyarrow.dataset")
pq = pytest.importorskip("pyarrow.parquet")

from s3kit import Event, FailedOver, Multiplexer  # noqa: E402
from s3kit._outcome import SUCCESS  # noqa: E402
from s3kit.fsspec import S3KitFile, S3KitFileSystem  # noqa: E402
from s3kit.testing import S3Server, S3ServerPool  # noqa: E402

BUCKET = "fsspec-bucket"
ACCESS_KEY = "testing-access"
SECRET_KEY = "fsspec-secret-5f3c9a7e1d"  # moto does not check it; must never be pickled
PARQUET_FILES = 8
ROWS_PER_FILE = 50


def write_config(path: Path, pool: S3ServerPool) -> Path:
    lines = [
        "[defaults]",
        f'access_key = "{ACCESS_KEY}"',
        f'secret_key = "{SECRET_KEY}"',
        "connect_timeout = 0.5",
        "read_timeout = 2",
        "circuit_breaker_threshold = 2",
        "backoff_base_s = 0.01",
        "backoff_cap_s = 0.1",
        "",
        "[multiplexer]",
        'strategy = "round-robin"',
    ]
    for i, server in enumerate(pool):
        lines += ["", f"[endpoints.s{i}]", f'url = "{server.url}"']
    path.write_text("\n".join(lines) + "\n")
    return path


_clients: dict[str, Any] = {}


def client(server: S3Server) -> Any:
    """A boto3 client for the server (made once: a client costs a tenth of a second)."""
    if server.url not in _clients:
        _clients[server.url] = server.client()
    return _clients[server.url]


def seed(pool: S3ServerPool, key: str, body: bytes) -> None:
    """The same object on every running server (replicas), written directly with boto3."""
    for server in pool:
        if server.running:
            client(server).put_object(Bucket=BUCKET, Key=key, Body=body)


def frame() -> Any:
    return pd.DataFrame(
        {
            "id": list(range(200)),
            "name": [f"row-{i}" for i in range(200)],
            "value": [i * 0.5 for i in range(200)],
        }
    )


def parquet_bytes(part: int) -> bytes:
    start = part * ROWS_PER_FILE
    table = pa.table(
        {
            "id": list(range(start, start + ROWS_PER_FILE)),
            "part": [part] * ROWS_PER_FILE,
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def seed_parquet(pool: S3ServerPool) -> None:
    for part in range(PARQUET_FILES):
        seed(pool, f"parquet/part-{part:02d}.parquet", parquet_bytes(part))


def all_ids() -> list[int]:
    return list(range(PARQUET_FILES * ROWS_PER_FILE))


def spill_files() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "s3kit-fsspec-*")))


def close_fs(fs: S3KitFileSystem) -> None:
    fs.multiplexer.close()


BLOB = os.urandom(300_000)


@pytest.fixture(scope="module")
def pool() -> Iterator[S3ServerPool]:
    servers = S3ServerPool(3, "moto", buckets=[BUCKET], secret_key=SECRET_KEY)
    try:
        servers.start()
        seed(servers, "data.csv", frame().to_csv(index=False).encode())
        seed(servers, "dir/a.txt", b"alpha")
        seed(servers, "dir/sub/b.txt", b"bravo")
        seed(servers, "blob.bin", BLOB)
        seed_parquet(servers)
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def config(pool: S3ServerPool, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("fsspec") / "s3kit.toml", pool)


@pytest.fixture(scope="module")
def fs(config: Path) -> Iterator[S3KitFileSystem]:
    filesystem = S3KitFileSystem(config=str(config))
    try:
        yield filesystem
    finally:
        S3KitFileSystem.clear_instance_cache()
        close_fs(filesystem)


@pytest.mark.timeout(120)
def test_protocol_is_registered(fs: S3KitFileSystem, config: Path) -> None:
    assert fsspec.get_filesystem_class("s3kit") is S3KitFileSystem
    same = fsspec.filesystem("s3kit", config=str(config))
    assert same is fs  # fsspec's instance cache: one multiplexer per config and thread
    opened = fsspec.open(f"s3kit://{BUCKET}/dir/a.txt", "rb", config=str(config))
    with opened as f:
        assert f.read() == b"alpha"
    assert S3KitFileSystem._strip_protocol(f"s3kit://{BUCKET}/dir/") == f"{BUCKET}/dir"
    with pytest.raises(TypeError, match="'secret'"):  # s3fs-style keys are not options here
        fsspec.filesystem("s3kit", config=str(config), key="k", secret="s")
    small = S3KitFileSystem(config=str(config), default_block_size=1024, skip_instance_cache=True)
    try:
        with small.open(f"{BUCKET}/blob.bin", "rb") as f:
            assert f.blocksize == 1024 and f.read(3000) == BLOB[:3000]
    finally:
        close_fs(small)


@pytest.mark.timeout(120)
def test_ls_info_exists(fs: S3KitFileSystem) -> None:
    listing = {e["name"]: e for e in fs.ls(f"s3kit://{BUCKET}", refresh=True)}
    assert listing[f"{BUCKET}/data.csv"]["type"] == "file"
    assert listing[f"{BUCKET}/blob.bin"]["size"] == len(BLOB)
    assert listing[f"{BUCKET}/dir"]["type"] == "directory"
    assert listing[f"{BUCKET}/parquet"]["type"] == "directory"
    assert fs.ls(f"{BUCKET}/dir", detail=False, refresh=True) == [
        f"{BUCKET}/dir/a.txt",
        f"{BUCKET}/dir/sub",
    ]
    assert fs.find(f"{BUCKET}/dir") == [f"{BUCKET}/dir/a.txt", f"{BUCKET}/dir/sub/b.txt"]
    for path in (f"{BUCKET}/dir", BUCKET, f"{BUCKET}/dir/a.txt", f"{BUCKET}/missing"):
        for withdirs in (False, True):  # one flat listing finds what fsspec's walk finds
            walked = AbstractFileSystem.find(fs, path, withdirs=withdirs, refresh=True)
            assert fs.find(path, withdirs=withdirs) == walked, (path, withdirs)
    assert fs.find("no-such-bucket-fsspec") == []
    assert BUCKET in fs.ls("", detail=False)

    fs.invalidate_cache()  # info by HeadObject / listing, not from the cache
    info = fs.info(f"s3kit://{BUCKET}/blob.bin")
    assert info["type"] == "file" and info["size"] == len(BLOB) and info["ETag"]
    assert "Endpoint" not in info  # the same file hashes alike whichever replica answered
    assert fs.info(f"{BUCKET}/dir/sub")["type"] == "directory"
    assert fs.info(BUCKET)["type"] == "directory"
    assert fs.isfile(f"{BUCKET}/dir/a.txt") and fs.isdir(f"{BUCKET}/dir")
    assert fs.exists(f"{BUCKET}/dir/a.txt")
    assert fs.exists(f"{BUCKET}/dir")
    assert not fs.exists(f"{BUCKET}/dir/missing.txt")
    assert not fs.exists("no-such-bucket-fsspec/x")
    with pytest.raises(FileNotFoundError):
        fs.info(f"{BUCKET}/missing")
    with pytest.raises(FileNotFoundError):
        fs.ls(f"{BUCKET}/missing", refresh=True)
    with pytest.raises(FileNotFoundError):
        fs.cat(f"{BUCKET}/missing")
    assert fs.ls(f"{BUCKET}/dir/a.txt", detail=False) == [f"{BUCKET}/dir/a.txt"]
    assert fs.modified(f"{BUCKET}/dir/a.txt") is not None
    fs.mkdir(f"{BUCKET}/new-dir")  # a no-op: directories are key prefixes
    fs.makedirs(f"{BUCKET}/new-dir/deeper", exist_ok=True)


@pytest.mark.timeout(120)
def test_cat_pipe_cp_rm(fs: S3KitFileSystem, pool: S3ServerPool) -> None:
    assert fs.cat(f"s3kit://{BUCKET}/dir/a.txt") == b"alpha"
    assert fs.cat_file(f"{BUCKET}/blob.bin", start=10, end=20) == BLOB[10:20]
    assert fs.cat_file(f"{BUCKET}/blob.bin", start=-7) == BLOB[-7:]
    assert fs.cat_file(f"{BUCKET}/blob.bin", start=5, end=-5) == BLOB[5:-5]
    assert fs.cat_file(f"{BUCKET}/blob.bin", start=len(BLOB) + 5) == b""
    assert fs.cat_file(f"{BUCKET}/blob.bin", start=30, end=10) == b""
    assert fs.cat(f"{BUCKET}/dir", recursive=True) == {
        f"{BUCKET}/dir/a.txt": b"alpha",
        f"{BUCKET}/dir/sub/b.txt": b"bravo",
    }

    src, dst = f"{BUCKET}/tmp/piped.bin", f"{BUCKET}/tmp/copied.bin"
    body = os.urandom(10_000)
    fs.pipe(f"s3kit://{src}", body)
    written = fs.written_endpoint(src)
    assert written in {"s0", "s1", "s2"}
    holders = [i for i, server in enumerate(pool) if _has(server, "tmp/piped.bin")]
    assert holders == [int(written[1:])]  # one write, where the strategy sent it
    for _ in range(6):  # round-robin would reach the servers without it: read back from its own
        assert fs.cat(src) == body
    assert fs.info(src)["size"] == len(body)
    with pytest.raises(FileExistsError):
        fs.pipe_file(src, b"again", mode="create")

    fs.cp_file(src, dst)
    assert fs.written_endpoint(dst) == written  # copied where the source is
    assert fs.cat(dst) == body
    assert fs.exists(dst)

    fs.rm([src, dst])
    assert not fs.exists(src) and not fs.exists(dst)
    assert not any(
        _has(server, key) for server in pool for key in ("tmp/piped.bin", "tmp/copied.bin")
    )

    # a replicated object is deleted on every endpoint, not only where the strategy points
    seed(pool, "tmp/replicated.txt", b"r")
    fs.rm_file(f"{BUCKET}/tmp/replicated.txt")
    assert not any(_has(server, "tmp/replicated.txt") for server in pool)

    seed(pool, "tree/x/1.txt", b"1")
    seed(pool, "tree/x/2.txt", b"2")
    seed(pool, "tree/3.txt", b"3")
    markers = ("tree/", "tree/x/", "tree/empty/")  # "directory marker" objects, as consoles make
    for marker in markers:
        seed(pool, marker, b"")
    found = fs.find(f"{BUCKET}/tree", withdirs=True, detail=True)
    assert {n for n, i in found.items() if i.get("marker")} == {
        f"{BUCKET}/tree",
        f"{BUCKET}/tree/x",
        f"{BUCKET}/tree/empty",
    }
    fs.rm(f"{BUCKET}/tree", recursive=True)
    gone = ("tree/x/1.txt", "tree/x/2.txt", "tree/3.txt", *markers)
    assert not any(_has(s, k) for s in pool for k in gone)
    assert not fs.exists(f"{BUCKET}/tree")


@pytest.mark.timeout(120)
def test_rm_of_many_files_is_batched(moto_server: S3Server, nanio_server: S3Server) -> None:
    """rm -r of 1001 keys: two DeleteObjects on each endpoint, not 1001 DeleteObject."""
    bucket, prefix = "test-bucket", f"fsspec-rm-{os.urandom(4).hex()}"  # the session servers'
    keys = [f"{prefix}/d{i % 3}/k{i:04d}" for i in range(1001)]
    seeder = nanio_server.client()  # the listing endpoint; the other holds none: no matter
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: seeder.put_object(Bucket=bucket, Key=k, Body=b"x"), keys))
    servers = (nanio_server, moto_server)
    specs = {
        f"e{i}": {
            "url": s.url,
            "access_key": s.access_key,
            "secret_key": s.secret_key,
            "priority": i,
        }
        for i, s in enumerate(servers)
    }
    with Multiplexer(specs, strategy="priority") as mux:
        fs = S3KitFileSystem(multiplexer=mux)
        fs.rm(f"s3kit://{bucket}/{prefix}", recursive=True)
        counts = {name: ep.metrics_snapshot()[0] for name, ep in mux.endpoints.items()}
    assert counts["e0"] == {("iter_objects", SUCCESS): 2, ("delete_objects", SUCCESS): 2}
    assert counts["e1"] == {("delete_objects", SUCCESS): 2}  # 1000 + 1 keys, on every endpoint
    assert seeder.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount") == 0


def _has(server: S3Server, key: str) -> bool:
    try:
        client(server).head_object(Bucket=BUCKET, Key=key)
    except Exception:
        return False
    return True


@pytest.mark.timeout(120)
def test_open_read_seek_partial(fs: S3KitFileSystem) -> None:
    with fs.open(f"s3kit://{BUCKET}/blob.bin", "rb", block_size=64 * 1024) as f:
        assert f.size == len(BLOB)
        assert f.read(100) == BLOB[:100]
        f.seek(200_000)
        assert f.read(5000) == BLOB[200_000:205_000]
        assert f.tell() == 205_000
        f.seek(-10, 2)
        assert f.read() == BLOB[-10:]
        assert f.read(10) == b""
        f.seek(-1000, 1)
        assert f.read(1000) == BLOB[-1000:]
        f.seek(12_345)
        assert f.read(70_000) == BLOB[12_345:82_345]  # spans two blocks
    with fs.open(f"{BUCKET}/blob.bin", "rb", cache_type="none") as f:
        f.seek(1)
        assert f.read(3) == BLOB[1:4]
    with fs.open(f"{BUCKET}/dir/a.txt", "r") as text:
        assert text.read() == "alpha"
    with pytest.raises(FileNotFoundError):
        fs.open(f"{BUCKET}/nope.bin", "rb")
    with pytest.raises(IsADirectoryError):
        fs.open(f"{BUCKET}/dir", "rb")
    with pytest.raises(NotImplementedError):
        fs.open(f"{BUCKET}/dir/a.txt", "ab")


@pytest.mark.timeout(120)
def test_write_12_mib_multipart_and_read_back(fs: S3KitFileSystem) -> None:
    before = spill_files()
    data = os.urandom(12 * 2**20)
    path = f"{BUCKET}/big/twelve.bin"
    with fs.open(f"s3kit://{path}", "wb") as f:
        for i in range(0, len(data), 2**20):
            f.write(data[i : i + 2**20])
    assert spill_files() == before  # the temporary file is gone
    info = fs.info(path)
    assert info["size"] == len(data)
    assert "-" in info["ETag"]  # a multipart upload's ETag
    with fs.open(path, "rb") as f:
        assert f.read() == data
    assert fs.cat_file(path, start=7 * 2**20, end=7 * 2**20 + 10) == data[7 * 2**20 :][:10]

    # small writes are one PutObject; a with block that fails uploads nothing
    with fs.open(f"{BUCKET}/big/small.txt", "wb") as f:
        f.write(b"small")
    assert fs.cat(f"{BUCKET}/big/small.txt") == b"small"
    with pytest.raises(RuntimeError), fs.open(f"{BUCKET}/big/failed.bin", "wb") as f:
        f.write(os.urandom(6 * 2**20))
        raise RuntimeError("boom")
    assert not fs.exists(f"{BUCKET}/big/failed.bin")
    assert spill_files() == before
    with pytest.raises(FileExistsError):
        fs.open(f"{BUCKET}/big/small.txt", "xb")
    fs.rm([path, f"{BUCKET}/big/small.txt"])


@pytest.mark.timeout(120)
def test_pandas_read_csv(fs: S3KitFileSystem, config: Path) -> None:
    options = {"config": str(config)}
    got = pd.read_csv(f"s3kit://{BUCKET}/data.csv", storage_options=options)
    pd.testing.assert_frame_equal(got, frame())

    out = f"s3kit://{BUCKET}/out/frame.csv"
    frame().head(20).to_csv(out, index=False, storage_options=options)
    back = pd.read_csv(out, storage_options=options)
    pd.testing.assert_frame_equal(back, frame().head(20))
    fs.rm(out)


@pytest.mark.timeout(120)
def test_pyarrow_dataset(fs: S3KitFileSystem) -> None:
    dataset = ds.dataset(f"{BUCKET}/parquet/", filesystem=fs, format="parquet")
    assert len(dataset.files) == PARQUET_FILES
    table = dataset.to_table()
    assert table.num_rows == PARQUET_FILES * ROWS_PER_FILE
    assert sorted(table.column("id").to_pylist()) == all_ids()
    one = pq.read_table(f"{BUCKET}/parquet/part-03.parquet", filesystem=fs)
    assert one.column("part").to_pylist() == [3] * ROWS_PER_FILE


@pytest.mark.timeout(120)
def test_pickle_carries_only_the_config_path(fs: S3KitFileSystem, config: Path) -> None:
    blob = pickle.dumps(fs)
    assert SECRET_KEY.encode() not in blob
    assert ACCESS_KEY.encode() not in blob
    assert str(config).encode() in blob
    S3KitFileSystem.clear_instance_cache()  # as in another process: built anew from the file
    clone = pickle.loads(blob)
    try:
        assert isinstance(clone, S3KitFileSystem) and clone is not fs
        assert clone.config_path == str(config)
        assert clone.multiplexer is not fs.multiplexer
        assert clone.cat(f"{BUCKET}/dir/a.txt") == b"alpha"
    finally:
        close_fs(clone)
        S3KitFileSystem.clear_instance_cache()

    with fs.open(f"{BUCKET}/blob.bin", "rb") as f:  # an open file pickles through its fs
        f.seek(1000)
        file_blob = pickle.dumps(f)
    assert SECRET_KEY.encode() not in file_blob
    with pickle.loads(file_blob) as g:
        assert g.read(10) == BLOB[1000:1010]
    if g.fs is not fs:
        close_fs(g.fs)


@pytest.mark.timeout(120)
def test_pickle_with_only_a_multiplexer_raises(config: Path) -> None:
    with Multiplexer.from_config(config) as mux, Multiplexer.from_config(config) as other:
        live = S3KitFileSystem(multiplexer=mux)
        assert live.multiplexer is mux and live.config_path is None
        assert live.cat(f"{BUCKET}/dir/a.txt") == b"alpha"
        # two multiplexers that print alike still get their own filesystems
        assert S3KitFileSystem(multiplexer=other).multiplexer is other
        with pytest.raises(TypeError, match="config="):
            pickle.dumps(live)
        both = S3KitFileSystem(config=str(config), multiplexer=mux)
        assert SECRET_KEY.encode() not in pickle.dumps(both)
        with pytest.raises(TypeError):
            S3KitFileSystem(multiplexer="not a multiplexer")  # type: ignore[arg-type]


@pytest.mark.faults  # longer: in make test-faults with the fault matrix
@pytest.mark.timeout(120)
def test_dataset_read_survives_a_server_killed_mid_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with S3ServerPool(3, "moto", buckets=[BUCKET], secret_key=SECRET_KEY) as own:
        seed_parquet(own)
        config = write_config(tmp_path / "s3kit.toml", own)
        fs = S3KitFileSystem(config=str(config), skip_instance_cache=True)
        events: list[Event] = []
        fs.multiplexer.on_event(events.append)
        victim = own[1]
        files_read: list[str] = []
        lock = threading.Lock()
        fetch = S3KitFile._fetch_range

        def fetch_then_kill(self: S3KitFile, start: int, end: int) -> bytes:
            with lock:
                if self.path not in files_read:
                    files_read.append(self.path)
                    if len(files_read) == 2:
                        victim.kill()  # before the second file's first byte
            return fetch(self, start, end)

        monkeypatch.setattr(S3KitFile, "_fetch_range", fetch_then_kill)
        try:
            dataset = ds.dataset(f"{BUCKET}/parquet/", filesystem=fs, format="parquet")
            table = dataset.to_table()
        finally:
            close_fs(fs)
        assert not victim.running
        assert len(files_read) == PARQUET_FILES
        assert sorted(table.column("id").to_pylist()) == all_ids()
        failed_over = [e for e in events if isinstance(e, FailedOver) and e.endpoint == "s1"]
        assert failed_over, "no read was sent to the killed server: the test proved nothing"
