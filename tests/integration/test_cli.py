"""The ``s3kit`` command as a user runs it: a subprocess on two moto servers and a config file."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from s3kit import Multiplexer
from s3kit._cli import main as cli_main
from s3kit.testing import FaultProxy, S3Server, S3ServerPool

pytestmark = pytest.mark.timeout(120)

BUCKET = "cli-bucket"
DOCS = Path(__file__).resolve().parents[2] / "docs"
ACCESS_KEY = "testing-access"
SECRET_KEY = "testing-secret"
MiB = 1024 * 1024

CONFIG = """
[defaults]
access_key = "${{S3KIT_CLI_ACCESS}}"
secret_key = "${{S3KIT_CLI_SECRET}}"
connect_timeout = 1
read_timeout = 10
retries = 1
backoff_base_s = 0.01

[multiplexer]
strategy = "priority"

[endpoints.primary]
url = "{primary}"
priority = 0

[endpoints.backup]
url = "{backup}"
priority = 1
"""

Run = Callable[..., subprocess.CompletedProcess[str]]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "S3KIT_CONFIG"}
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        S3KIT_CLI_ACCESS=ACCESS_KEY,
        S3KIT_CLI_SECRET=SECRET_KEY,
        COLUMNS="160",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def make_runner(cwd: Path, config: Path | None) -> Run:
    def run(*args: str, rc: int | None = 0) -> subprocess.CompletedProcess[str]:
        env = cli_env(**({"S3KIT_CONFIG": str(config)} if config else {}))
        proc = subprocess.run(
            [sys.executable, "-m", "s3kit", *args],
            capture_output=True,
            text=True,
            timeout=90,
            env=env,
            cwd=cwd,
            check=False,
        )
        if rc is not None:
            assert proc.returncode == rc, (args, proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return run


def write_config(path: Path, pool: S3ServerPool) -> Path:
    path.write_text(CONFIG.format(primary=pool[0].url, backup=pool[1].url), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def servers() -> Iterator[S3ServerPool]:
    pool = S3ServerPool(2, "moto", buckets=[BUCKET], access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    try:
        pool.start()
        yield pool
    finally:
        pool.stop()


@pytest.fixture
def run(servers: S3ServerPool, tmp_path: Path) -> Run:
    return make_runner(tmp_path, write_config(tmp_path / "conf.toml", servers))


def unique() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


def keys_on(server: S3Server, prefix: str) -> list[str]:
    resp = server.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for obj in resp.get("Contents", []))


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("s3kit: error: ")
    return lines[0]


# ------------------------------------------------------------------------------ the verbs
def test_cp_up_then_ls_shows_it(run: Run, tmp_path: Path, servers: S3ServerPool) -> None:
    prefix = unique()
    (tmp_path / "hello.txt").write_bytes(b"hello from the cli\n")
    up = run("cp", "hello.txt", f"s3://{BUCKET}/{prefix}/")
    assert f"s3://{BUCKET}/{prefix}/hello.txt" in up.stdout and "primary" in up.stdout
    listing = json.loads(run("ls", f"s3://{BUCKET}/{prefix}/", "--json").stdout)
    assert [o["Key"] for o in listing["Contents"]] == [f"{prefix}/hello.txt"]
    assert listing["Contents"][0]["Size"] == 19
    assert listing["Endpoint"] == "primary"
    assert re.match(r"\d{4}-\d\d-\d\dT", listing["Contents"][0]["LastModified"])
    assert "ResponseMetadata" not in listing
    # the priority strategy put it on primary only; NAME: paths see each store
    assert keys_on(servers[0], prefix) == [f"{prefix}/hello.txt"]
    assert keys_on(servers[1], prefix) == []
    assert f"{prefix}/hello.txt" in run("ls", f"primary:{BUCKET}/{prefix}/").stdout
    assert json.loads(run("--json", "ls", f"backup:{BUCKET}/{prefix}/").stdout)["Contents"] == []
    # one level by default, everything with -r
    run("cp", "hello.txt", f"s3://{BUCKET}/{prefix}/sub/deeper.txt")
    flat = run("ls", f"s3://{BUCKET}/{prefix}/").stdout
    assert "PRE" in flat and f"{prefix}/sub/" in flat and "deeper.txt" not in flat
    assert f"{prefix}/sub/deeper.txt" in run("ls", "-r", f"s3://{BUCKET}/{prefix}/").stdout
    buckets = json.loads(run("ls", "--json").stdout)
    assert BUCKET in [b["Name"] for b in buckets["Buckets"]]


def test_stat(run: Run, tmp_path: Path) -> None:
    key = f"{unique()}/data.bin"
    (tmp_path / "data.bin").write_bytes(b"x" * 1234)
    run("cp", "data.bin", f"s3://{BUCKET}/{key}")
    head = json.loads(run("--json", "stat", f"s3://{BUCKET}/{key}").stdout)
    assert head["ContentLength"] == 1234
    assert head["Endpoint"] == "primary"
    assert head["ETag"] == '"' + hashlib.md5(b"x" * 1234).hexdigest() + '"'
    text = run("stat", f"primary:{BUCKET}/{key}").stdout
    assert "1234" in text and "primary" in text
    missing = run("stat", f"backup:{BUCKET}/{key}", rc=1)
    assert "NotFound" in one_line_error(missing)


def test_cp_down_is_byte_identical(run: Run, tmp_path: Path) -> None:
    key = f"{unique()}/blob.bin"
    data = os.urandom(3 * MiB + 17)
    (tmp_path / "blob.bin").write_bytes(data)
    run("cp", "blob.bin", f"s3://{BUCKET}/{key}")
    run("cp", f"s3://{BUCKET}/{key}", "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == data
    (tmp_path / "into").mkdir()
    run("cp", f"primary:{BUCKET}/{key}", "into")
    assert (tmp_path / "into" / "blob.bin").read_bytes() == data
    out = json.loads(run("cp", f"s3://{BUCKET}/{key}", "again.bin", "--json").stdout)
    assert out["failed"] == []
    assert out["transfers"][0]["ContentLength"] == len(data)
    assert out["transfers"][0]["Endpoint"] == "primary"


def test_cp_between_endpoints(run: Run, tmp_path: Path, servers: S3ServerPool) -> None:
    prefix = unique()
    data = os.urandom(200_000)
    (tmp_path / "f.bin").write_bytes(data)
    run("cp", "f.bin", f"primary:{BUCKET}/{prefix}/f.bin")
    out = run("cp", f"primary:{BUCKET}/{prefix}/f.bin", f"backup:{BUCKET}/{prefix}/g.bin")
    assert "primary -> backup" in out.stdout
    body = servers[1].client().get_object(Bucket=BUCKET, Key=f"{prefix}/g.bin")["Body"].read()
    assert body == data
    head = json.loads(run("--json", "stat", f"backup:{BUCKET}/{prefix}/g.bin").stdout)
    assert head["Endpoint"] == "backup" and head["ContentLength"] == len(data)


def test_recursive_cp_of_a_directory(run: Run, tmp_path: Path, servers: S3ServerPool) -> None:
    prefix = unique()
    src = tmp_path / "tree"
    files = {
        "a.txt": b"a" * 10,
        "b.bin": os.urandom(5000),
        "sub/c.txt": b"c",
        "sub/deeper/d.bin": os.urandom(70_000),
        "e f.txt": b"spaces",
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    up = json.loads(run("cp", "-r", "tree", f"s3://{BUCKET}/{prefix}", "--json").stdout)
    assert up["failed"] == [] and len(up["transfers"]) == 5
    assert keys_on(servers[0], prefix) == sorted(f"{prefix}/{rel}" for rel in files)
    down = run("cp", "-r", f"s3://{BUCKET}/{prefix}/", "back")
    assert down.stdout.count("download: ") == 5
    for rel, data in files.items():
        assert (tmp_path / "back" / rel).read_bytes() == data
    run("cp", "-r", "-j", "2", f"primary:{BUCKET}/{prefix}", f"backup:{BUCKET}/{prefix}-copy")
    assert keys_on(servers[1], f"{prefix}-copy/") == sorted(f"{prefix}-copy/{r}" for r in files)
    # without -r a directory is a usage error
    assert "use -r" in one_line_error(run("cp", "tree", f"s3://{BUCKET}/x", rc=2))


def test_recursive_cp_with_a_failing_file_exits_1(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    src.mkdir()
    (src / "ok.txt").write_bytes(b"fine")
    deep = src.joinpath(*["d" * 200] * 6)  # its key is longer than S3's 1024 bytes
    deep.mkdir(parents=True)
    (deep / "too-long.txt").write_bytes(b"x")
    proc = run("cp", "-r", "tree", f"s3://{BUCKET}/{unique()}", "--json", rc=1)
    out = json.loads(proc.stdout)
    assert len(out["transfers"]) == 1 and len(out["failed"]) == 1
    assert "too-long.txt" in out["failed"][0]["source"]
    assert "1024" in proc.stderr


def test_presign_url_works(run: Run, tmp_path: Path) -> None:
    key = f"{unique()}/page.html"
    (tmp_path / "page.html").write_bytes(b"<h1>hi</h1>")
    run("cp", "page.html", f"s3://{BUCKET}/{key}")
    url = run("presign", f"s3://{BUCKET}/{key}", "--expires", "120").stdout.strip()
    assert url.startswith("http://127.0.0.1:") and "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == b"<h1>hi</h1>"
    out = json.loads(run("presign", f"backup:{BUCKET}/{key}", "--json").stdout)
    assert out["ExpiresIn"] == 3600 and out["URL"].startswith("http://")
    assert "expiration" in one_line_error(
        run("presign", f"s3://{BUCKET}/{key}", "--expires", "0", rc=2)
    )


def test_replicate_to_every_endpoint(run: Run, tmp_path: Path, servers: S3ServerPool) -> None:
    key = f"{unique()}/copies.bin"
    data = os.urandom(50_000)
    (tmp_path / "copies.bin").write_bytes(data)
    out = json.loads(run("replicate", "copies.bin", f"s3://{BUCKET}/{key}", "--json").stdout)
    assert {r["success"] for r in out.values()} == {True}
    assert len(out) == len(servers)
    for server in servers:
        assert server.client().get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
    assert "choose endpoints with --to" in one_line_error(
        run("replicate", "copies.bin", f"backup:{BUCKET}/{key}", rc=2)
    )


@pytest.mark.scale  # bulk work on worker processes: make test-scale, with the other bulk tests
def test_replicate_a_prefix_with_workers(run: Run, tmp_path: Path, servers: S3ServerPool) -> None:
    prefix = unique()
    primary = servers[0].client()
    for key in ("a", "b/c", "b/d"):
        primary.put_object(Bucket=BUCKET, Key=f"{prefix}/{key}", Body=key.encode())
    state = str(tmp_path / "state.sqlite")
    out = json.loads(
        run(
            "replicate",
            f"primary:{BUCKET}/{prefix}",
            "--workers",
            "2",
            "--shard-size",
            "1",
            "--state",
            state,
            "--json",
        ).stdout
    )
    assert out["copied"] == 3 and out["failed"] == 0 and out["listed"] == 3
    assert keys_on(servers[1], prefix + "/") == keys_on(servers[0], prefix + "/")
    text = run("replicate", f"primary:{BUCKET}/{prefix}", "--to", "backup", "--state", "s3")
    assert "copied 0" in text.stdout and "skipped 3" in text.stdout
    assert keys_on(servers[1], prefix + "/") == keys_on(servers[0], prefix + "/")  # state gone
    (tmp_path / "f.bin").write_bytes(b"x")
    assert "--workers" in one_line_error(
        run("replicate", "f.bin", f"s3://{BUCKET}/k", "--workers", "2", rc=2)
    )
    assert "--min-success" in one_line_error(
        run("replicate", f"primary:{BUCKET}/{prefix}", "--min-success", "1", rc=2)
    )


def test_rm(run: Run, tmp_path: Path, servers: S3ServerPool) -> None:
    prefix = unique()
    (tmp_path / "x.txt").write_bytes(b"x")
    for name in ("one", "two", "three"):
        run("cp", "x.txt", f"s3://{BUCKET}/{prefix}/{name}")
    assert "delete: " in run("rm", f"s3://{BUCKET}/{prefix}/one").stdout
    assert keys_on(servers[0], prefix) == [f"{prefix}/three", f"{prefix}/two"]
    run("stat", f"s3://{BUCKET}/{prefix}/one", rc=1)
    out = json.loads(run("rm", "-r", f"primary:{BUCKET}/{prefix}", "--json").stdout)
    assert len(out["deleted"]) == 2 and out["failed"] == []
    assert keys_on(servers[0], prefix) == []


def test_rm_recursive_deletes_in_batches(
    servers: S3ServerPool, nanio_server: S3Server, tmp_path: Path
) -> None:
    """`rm -r` of 1001 keys: two listing pages and two DeleteObjects requests, not 1001."""
    bucket, prefix = "test-bucket", unique()  # the session nanio server's bucket
    keys = [f"{prefix}/k{i:04d}" for i in range(1001)]
    seeder = nanio_server.client()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: seeder.put_object(Bucket=bucket, Key=k, Body=b"x"), keys))
    with FaultProxy(nanio_server.port) as proxy:
        config = tmp_path / "proxied.toml"
        config.write_text(CONFIG.format(primary=proxy.url, backup=servers[1].url))
        run = make_runner(tmp_path, config)
        out = json.loads(run("rm", "-r", f"primary:{bucket}/{prefix}", "--json").stdout)
        stats = proxy.stats
    assert out["failed"] == []
    assert [d["Key"] for d in out["deleted"]] == keys
    assert {d["Endpoint"] for d in out["deleted"]} == {"primary"}
    deletes = [r for r in stats["recent_requests"] if r["method"] == "POST"]
    assert len(deletes) == 2 and all("delete" in r["target"] for r in deletes)
    assert stats["requests"] == 4  # 2 pages of ListObjectsV2 + 2 DeleteObjects
    left = seeder.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert left.get("KeyCount") == 0


def test_rm_recursive_under_key_hash_names_each_keys_owner(
    servers: S3ServerPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = unique()
    config = tmp_path / "key-hash.toml"
    text = CONFIG.format(primary=servers[0].url, backup=servers[1].url)
    config.write_text(text.replace('strategy = "priority"', 'strategy = "key-hash"'))
    for name, value in cli_env().items():
        if name.startswith("S3KIT_CLI_"):
            monkeypatch.setenv(name, value)
    keys = [f"{prefix}/k{i:02d}" for i in range(24)]  # both owners hold some: 1 in 8M not
    with Multiplexer.from_config(config) as mux:  # the CLI's configuration, to seed and ask
        owner = {key: mux.put_object(BUCKET, key, b"k")["Endpoint"] for key in keys}
    assert set(owner.values()) == {"primary", "backup"}
    run = make_runner(tmp_path, config)
    out = json.loads(run("rm", "-r", f"s3://{BUCKET}/{prefix}", "--json").stdout)
    assert out["failed"] == []
    assert {d["Key"]: d["Endpoint"] for d in out["deleted"]} == owner
    assert all("Endpoints" not in d for d in out["deleted"])
    assert keys_on(servers[0], prefix) == [] and keys_on(servers[1], prefix) == []


def test_health_and_stats_with_all_up(run: Run) -> None:
    table = run("health").stdout
    assert "primary" in table and "backup" in table and "yes" in table
    report = json.loads(run("health", "--json").stdout)
    assert report["healthy"] == ["primary", "backup"] and report["unhealthy"] == []
    assert all(e["latency_ms"] is not None and e["state"] == "closed" for e in report["endpoints"])
    stats = json.loads(run("stats", "--json").stdout)
    assert set(stats) == {"primary", "backup"} and stats["primary"]["state"] == "closed"
    assert "primary" in run("stats").stdout


def test_health_with_an_endpoint_down_exits_1(tmp_path: Path) -> None:
    pool = S3ServerPool(2, "moto", access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    try:
        pool.start()
        run = make_runner(tmp_path, write_config(tmp_path / "conf.toml", pool))
        pool[1].kill()
        proc = run("health", "--json", "--timeout", "2", rc=1)
        report = json.loads(proc.stdout)
        assert report["healthy"] == ["primary"] and report["unhealthy"] == ["backup"]
        down = {e["name"]: e for e in report["endpoints"]}["backup"]
        assert down["healthy"] is False and down["error"]
        table = run("health", rc=1).stdout
        assert re.search(r"backup .* no ", table)
    finally:
        pool.stop()


# ------------------------------------------------------------------------- bad input
def test_bad_config_exits_2_with_one_line(run: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[endpoints.primary]\nurl = "http://127.0.0.1:1"\nmax_concurrent = "x"\n')
    proc = run("--config", str(bad), "ls", f"s3://{BUCKET}", rc=2)
    line = one_line_error(proc)
    assert "bad.toml" in line and "endpoints.primary.max_concurrent" in line
    assert "integer" in line
    bad.write_text('[endpoints.primary]\nurl = "http://127.0.0.1:1"\naccess_key = "${NOPE_X}"\n')
    assert "NOPE_X" in one_line_error(run("health", "--config", str(bad), rc=2))
    bad.write_text("[endpoints.primary\n")
    assert "line 1" in one_line_error(run("--config", str(bad), "health", rc=2))
    missing = one_line_error(run("--config", str(tmp_path / "nope.toml"), "health", rc=2))
    assert "nope.toml" in missing


def test_no_config_anywhere_exits_2(tmp_path: Path) -> None:
    run = make_runner(tmp_path, None)
    assert "S3KIT_CONFIG" in one_line_error(run("ls", "s3://x", rc=2))


def test_config_is_found_in_the_working_directory(servers: S3ServerPool, tmp_path: Path) -> None:
    write_config(tmp_path / "s3kit.toml", servers)
    run = make_runner(tmp_path, None)
    assert json.loads(run("health", "--json").stdout)["unhealthy"] == []


def test_usage_errors_exit_2(run: Run, tmp_path: Path) -> None:
    proc = run("frobnicate", rc=2)
    assert "invalid choice" in one_line_error(proc).replace("s3kit: error: ", "")
    assert "error: the following arguments are required" in run("cp", "x", rc=2).stderr
    (tmp_path / "a").write_bytes(b"a")
    assert "at least one side" in one_line_error(run("cp", "a", "b", rc=2))
    assert "nowhere" in one_line_error(run("ls", "nowhere:bucket", rc=2))
    assert "unknown strategy" in one_line_error(run("--strategy", "x", "ls", "s3://b", rc=2))
    assert "unknown endpoint" in one_line_error(run("--endpoint", "x", "ls", "s3://b", rc=2))
    assert "no such file" in one_line_error(run("cp", "missing.txt", f"s3://{BUCKET}/k", rc=2))
    assert "names no object" in one_line_error(run("stat", f"s3://{BUCKET}/", rc=2))
    no_command = run(rc=2)
    assert "usage" in no_command.stdout


def test_endpoint_and_strategy_options(run: Run, tmp_path: Path, servers: S3ServerPool) -> None:
    prefix = unique()
    (tmp_path / "x.txt").write_bytes(b"x")
    run("--endpoint", "backup", "cp", "x.txt", f"s3://{BUCKET}/{prefix}/x.txt")
    assert keys_on(servers[1], prefix) == [f"{prefix}/x.txt"]
    assert keys_on(servers[0], prefix) == []
    head = json.loads(
        run("stat", f"s3://{BUCKET}/{prefix}/x.txt", "--endpoint", "backup", "--json").stdout
    )
    assert head["Endpoint"] == "backup"
    listing = json.loads(run("--strategy", "round-robin", "ls", f"s3://{BUCKET}/", "--json").stdout)
    assert listing["Endpoint"] in ("primary", "backup")


def test_verbose_logs_to_stderr(run: Run) -> None:
    proc = run("-v", "--endpoint", "primary", "ls", f"s3://{BUCKET}/nothing-here/")
    assert proc.returncode == 0  # logging is on; nothing to log is fine, no traceback


def test_demo_help_still_works() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "s3kit", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--servers" in proc.stdout and "--server" in proc.stdout


# ---------------------------------------------------------------------------- terminal
def test_progress_bar_in_a_terminal(servers: S3ServerPool, tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    config = write_config(tmp_path / "conf.toml", servers)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(30 * MiB))
    key = f"{unique()}/big.bin"
    env = cli_env(S3KIT_CONFIG=str(config), TERM="xterm-256color")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "s3kit", "cp", str(big), f"s3://{BUCKET}/{key}"],
        env=env,
        cwd=str(tmp_path),
        encoding="utf-8",
        timeout=90,
        dimensions=(40, 160),
    )
    try:
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    output = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before or "")
    assert child.exitstatus == 0, output
    assert "30.0 MiB" in output
    assert re.search(r"\d+%", output)
    assert "1/1 files" in output
    assert "Traceback" not in output
    assert servers[0].client().head_object(Bucket=BUCKET, Key=key)["ContentLength"] == 30 * MiB


# ------------------------------------------------------------------------------- docs
def test_cli_md_examples_run(
    servers: S3ServerPool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every ```sh line of docs/cli.md, in order, with the doc's own s3kit.toml (URLs local).

    Run in this process through the CLI's ``main`` (with the environment and working directory
    a shell would give it): ~25 lines at ~1 s of interpreter start each would be half a minute of
    make test, and the other tests here run the installed command in subprocesses."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    config = re.findall(r"^```toml\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)[0]
    urls = iter(s.url for s in servers)
    config = re.sub(r'^url = ".*"', lambda _: f'url = "{next(urls)}"', config, flags=re.M)
    (tmp_path / "s3kit.toml").write_text(config, encoding="utf-8")
    for server in servers:
        server.create_bucket("media")
    (tmp_path / "report.csv").write_text("day,visits\nmonday,12\ntuesday,30\n")
    for rel in ("2024/beach.jpg", "2024/cat.png", "readme.txt"):
        (tmp_path / "photos" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / rel).write_bytes(os.urandom(2048))
    env = cli_env(MINIO_ACCESS_KEY=ACCESS_KEY, MINIO_SECRET_KEY=SECRET_KEY)
    monkeypatch.delenv("S3KIT_CONFIG", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    lines = [
        line.strip()
        for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert len(lines) >= 20
    logger = logging.getLogger("s3kit")
    saved = (logger.handlers[:], logger.level)
    try:
        for line in lines:
            words = shlex.split(line)
            while "=" in words[0]:  # VAR=value before the command, as a shell reads it
                name, _, value = words.pop(0).partition("=")
                monkeypatch.setenv(name, value)
            assert words[0] == "s3kit", line
            code = cli_main(words[1:])
            out, err = capsys.readouterr()
            assert code == 0, (line, out, err)
            assert "Traceback" not in err
    finally:
        logger.handlers[:] = saved[0]  # -v added a handler to stderr
        logger.setLevel(saved[1])
    assert (tmp_path / "report-copy.csv").read_text().startswith("day,visits")
    assert (tmp_path / "photos-copy" / "2024" / "beach.jpg").is_file()
