"""Configuration files (contract §10): discovery, ${VAR}, validation messages, docs examples."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from s3kit import ConfigError, Multiplexer
from s3kit._configfile import (
    CONFIG_ENV,
    ConfigSpec,
    _option_hints,
    find_config,
    load_config,
    multiplexer_from_config,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
SECRET = "s3kit-unit-SECRET-value-42"

VALID = """
[defaults]
read_timeout = 10
max_concurrent = 16
retries = 2

[multiplexer]
strategy = "priority"
read_fallback_on_missing = true

[endpoints.primary]
url = "http://127.0.0.1:9000"
access_key = "${S3KIT_T_ACCESS}"
secret_key = "${S3KIT_T_SECRET}"
max_concurrent = 5
priority = 0

[endpoints.backup]
endpoint_url = "https://backup.example.com"
profile = "backup-profile"
priority = 1
weight = 2
verify = false
buckets = { media = "media-replica" }
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./s3kit.toml unless a test writes one
    monkeypatch.setenv("S3KIT_T_ACCESS", "AKIATEST")
    monkeypatch.setenv("S3KIT_T_SECRET", SECRET)


def write(tmp_path: Path, text: str, name: str = "conf.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(path: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------- valid
def test_valid_file_gives_endpoints_with_their_options(tmp_path: Path) -> None:
    spec = load_config(write(tmp_path, VALID))
    assert list(spec.endpoints) == ["primary", "backup"]
    primary, backup = spec.endpoints["primary"], spec.endpoints["backup"]
    assert primary.url == "http://127.0.0.1:9000"
    assert (primary.access_key, primary.secret_key) == ("AKIATEST", SECRET)
    # own options win over [defaults]; [defaults] fill the rest
    assert primary.options["max_concurrent"] == 5
    assert primary.options["read_timeout"] == 10
    assert backup.options["max_concurrent"] == 16
    assert backup.url == "https://backup.example.com"
    assert backup.options["profile"] == "backup-profile"
    assert backup.options["buckets"] == {"media": "media-replica"}
    assert backup.options["verify"] is False
    assert dict(spec.multiplexer) == {"strategy": "priority", "read_fallback_on_missing": True}


def test_build_makes_a_multiplexer_with_those_options(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    with multiplexer_from_config(path) as mux:
        assert isinstance(mux, Multiplexer)
        assert list(mux.endpoints) == ["primary", "backup"]
        assert "strategy=priority" in repr(mux)
        assert mux.read_fallback_on_missing is True
        primary = mux.endpoint("primary").config
        backup = mux.endpoint("backup").config
        # an explicit value equal to add_endpoint's signature default still beats [defaults]
        assert primary.max_concurrent == 5
        assert backup.max_concurrent == 16
        assert primary.retries == backup.retries == 2
        assert primary.read_timeout == 10
        assert backup.physical_bucket("media") == "media-replica"
        assert backup.weight == 2
    with multiplexer_from_config(path, strategy="least-loaded") as mux:
        assert "strategy=least-loaded" in repr(mux)


def test_transport_precedence_option_file_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # explicit option > config file > $S3KIT_TRANSPORT > "boto3"
    monkeypatch.setenv("S3KIT_TRANSPORT", "obstore")
    path = write(
        tmp_path,
        '[endpoints.a]\nurl = "http://127.0.0.1:9000"\ntransport = "boto3"\n'
        '[endpoints.b]\nurl = "http://127.0.0.1:9001"\n',
    )
    with multiplexer_from_config(path) as mux:
        assert mux.endpoint("a").config.transport == "boto3"  # the file beats the variable
        assert mux.endpoint("b").config.transport == "obstore"  # the variable beats "boto3"
        added = mux.add_endpoint("c", "http://127.0.0.1:9002", transport="boto3")
        assert added.config.transport == "boto3"
    monkeypatch.setenv("S3KIT_TRANSPORT", "nope")
    with pytest.raises(ConfigError, match="S3KIT_TRANSPORT"):
        multiplexer_from_config(path)


def test_defaults_may_hold_shared_credentials(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [defaults]
        access_key = "${S3KIT_T_ACCESS}"
        secret_key = "${S3KIT_T_SECRET}"
        [endpoints.a]
        url = "http://127.0.0.1:9000"
        [endpoints.b]
        url = "http://127.0.0.1:9001"
        access_key = "other"
        secret_key = "other-secret"
        """,
    )
    spec = load_config(path)
    assert spec.endpoints["a"].secret_key == SECRET
    assert spec.endpoints["b"].access_key == "other"
    with spec.build() as mux:
        assert mux.endpoint("a").config.secret_key == SECRET
        assert mux.endpoint("b").config.secret_key == "other-secret"


def test_secrets_stay_out_of_reprs_and_pickles(tmp_path: Path) -> None:
    spec = load_config(write(tmp_path, VALID))
    assert SECRET not in repr(spec)
    assert SECRET not in repr(spec.endpoints["primary"])
    assert SECRET not in str(spec.endpoints)
    data = pickle.dumps(spec)
    assert SECRET.encode() not in data
    again = pickle.loads(data)
    assert isinstance(again, ConfigSpec)
    assert again.endpoints["primary"].secret_key == SECRET  # read again from the environment


# ------------------------------------------------------------------------------ ${VAR}
def test_variables_are_substituted_in_every_string(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3KIT_T_HOST", "10.1.2.3")
    monkeypatch.setenv("S3KIT_T_BUCKET", "phys")
    path = write(
        tmp_path,
        """
        [endpoints.a]
        url = "http://${S3KIT_T_HOST}:9000"
        region = "eu-${S3KIT_T_HOST}"
        buckets = { logical = "${S3KIT_T_BUCKET}-1" }
        profile = "literal-$${NOT_A_VAR}-and-$HOME"
        """,
    )
    spec = load_config(path)
    a = spec.endpoints["a"]
    assert a.url == "http://10.1.2.3:9000"
    assert a.options["region"] == "eu-10.1.2.3"
    assert a.options["buckets"] == {"logical": "phys-1"}
    assert a.options["profile"] == "literal-${NOT_A_VAR}-and-$HOME"


def test_an_unset_variable_names_it_and_the_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [endpoints.primary]
        url = "http://127.0.0.1:9000"
        access_key = "${S3KIT_T_ACCESS}"
        secret_key = "${S3KIT_T_NEVER_SET}"
        """,
    )
    message = error_of(path)
    assert path in message
    assert "S3KIT_T_NEVER_SET" in message
    assert "endpoints.primary.secret_key" in message
    assert "AKIATEST" not in message and SECRET not in message


def test_a_malformed_reference_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[endpoints.a]\nurl = "http://h:1"\nregion = "${not valid}"\n')
    message = error_of(path)
    assert "endpoints.a.region" in message and "${NAME}" in message


def test_values_from_the_environment_are_never_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3KIT_T_TRANSPORT", SECRET)
    monkeypatch.setenv("S3KIT_T_NUMBER", SECRET)
    for line in ('transport = "${S3KIT_T_TRANSPORT}"', 'max_concurrent = "${S3KIT_T_NUMBER}"'):
        path = write(tmp_path, f'[endpoints.a]\nurl = "http://h:1"\n{line}\n')
        message = error_of(path)
        assert SECRET not in message
        assert "endpoints.a." in message


# ------------------------------------------------------------------------------- errors
def test_wrong_type_names_file_key_and_expected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[endpoints.primary]\nurl = "http://127.0.0.1:9000"\nmax_concurrent = "16"\n',
    )
    message = error_of(path)
    assert message.startswith(f"{path}: endpoints.primary.max_concurrent: ")
    assert "expected an integer" in message and "'16'" in message


@pytest.mark.parametrize(
    ("body", "key", "expected"),
    [
        ("read_timeout = true", "endpoints.a.read_timeout", "expected a number"),
        ("read_timeout = 0", "endpoints.a.read_timeout", "> 0"),
        ("max_concurrent = 0", "endpoints.a.max_concurrent", ">= 1"),
        ("retries = -1", "endpoints.a.retries", ">= 0"),
        ("verify = 3", "endpoints.a.verify", "true or false or a string"),
        ("buckets = { x = 1 }", "endpoints.a.buckets", "a table of strings"),
        ('addressing_style = "sideways"', "endpoints.a.addressing_style", "'path'"),
        ("access_key = 5\nsecret_key = 'x'", "endpoints.a.access_key", "expected a string"),
        ("backoff_base_s = 2\nbackoff_cap_s = 1", "endpoints.a.backoff_cap_s", "backoff_base_s"),
    ],
)
def test_bad_option_values(tmp_path: Path, body: str, key: str, expected: str) -> None:
    message = error_of(write(tmp_path, f'[endpoints.a]\nurl = "http://h:1"\n{body}\n'))
    assert f": {key}: " in message
    assert expected in message


def test_errors_in_defaults_and_multiplexer_name_their_tables(tmp_path: Path) -> None:
    ep = '[endpoints.a]\nurl = "http://h:1"\n'
    message = error_of(write(tmp_path, f"[defaults]\nconnect_timeout = 'x'\n{ep}"))
    assert "defaults.connect_timeout: expected a number" in message
    message = error_of(write(tmp_path, f"[multiplexer]\nstrategy = 'fastest'\n{ep}"))
    assert "multiplexer.strategy" in message and "round-robin" in message
    message = error_of(write(tmp_path, f"[multiplexer]\nhealth_interval = -1\n{ep}"))
    assert "multiplexer.health_interval" in message
    message = error_of(write(tmp_path, f"[multiplexer]\nread_fallback_on_missing = 1\n{ep}"))
    assert "multiplexer.read_fallback_on_missing: expected true or false" in message


def test_url_problems(tmp_path: Path) -> None:
    assert "endpoints.a.url: missing" in error_of(write(tmp_path, "[endpoints.a]\nretries = 1\n"))
    message = error_of(write(tmp_path, '[endpoints.a]\nurl = "ftp://h"\n'))
    assert "endpoints.a.url" in message and "http" in message
    both = '[endpoints.a]\nurl = "http://h:1"\nendpoint_url = "http://h:2"\n'
    assert "not both" in error_of(write(tmp_path, both))
    one_key = '[endpoints.a]\nurl = "http://h:1"\naccess_key = "k"\n'
    assert "both access_key and secret_key" in error_of(write(tmp_path, one_key))
    assert "at least one" in error_of(write(tmp_path, "[defaults]\nretries = 1\n"))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[endpoints.a]\nurl = "http://h:1"\nmax_conns = 3\n', "endpoints.a.max_conns"),
        ('[endpoints.a]\nurl = "http://h:1"\nname = "a"\n', "endpoints.a.name"),
        ('[defaults]\nurl = "http://h:1"\n[endpoints.a]\nurl = "http://h:1"\n', "defaults.url"),
        ('[multiplexer]\nbogus = 1\n[endpoints.a]\nurl = "http://h:1"\n', "multiplexer.bogus"),
        ('[endpoint.a]\nurl = "http://h:1"\n', "endpoint"),
        ('[endpoints."my store"]\nurl = "http://h:1"\nfoo = 1\n', 'endpoints."my store".foo'),
    ],
)
def test_unknown_keys_are_named(tmp_path: Path, text: str, named: str) -> None:
    message = error_of(write(tmp_path, text))
    assert "unknown key" in message
    assert named in message


def test_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[endpoints.a]\nurl = "http://h:1"\nretries = = 3\n')
    message = error_of(path)
    assert path in message and "line 3" in message


def test_a_table_that_is_not_a_table(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, 'endpoints = "x"\n'))
    assert "endpoints: expected a table" in message
    message = error_of(write(tmp_path, "[endpoints]\na = 1\n"))
    assert "endpoints.a: expected a table" in message


# ----------------------------------------------------------------------------- discovery
MINIMAL = '[endpoints.{name}]\nurl = "http://127.0.0.1:9000"\n'


def test_explicit_path_then_env_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=CONFIG_ENV):
        load_config()
    write(tmp_path, MINIMAL.format(name="from_cwd"), "s3kit.toml")
    assert list(load_config().endpoints) == ["from_cwd"]
    env_file = write(tmp_path, MINIMAL.format(name="from_env"), "env.toml")
    monkeypatch.setenv(CONFIG_ENV, env_file)
    assert list(load_config().endpoints) == ["from_env"]
    explicit = write(tmp_path, MINIMAL.format(name="explicit"), "explicit.toml")
    assert list(load_config(explicit).endpoints) == ["explicit"]
    assert list(load_config(Path(explicit)).endpoints) == ["explicit"]
    assert find_config() == env_file


def test_missing_files_are_errors_not_fallbacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, MINIMAL.format(name="from_cwd"), "s3kit.toml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=f"missing.toml.*{CONFIG_ENV}"):
        load_config()
    with pytest.raises(ConfigError, match="directory"):
        load_config(tmp_path)


# ---------------------------------------------------------------------------------- docs
def _toml_blocks(name: str) -> list[str]:
    text = (DOCS / name).read_text(encoding="utf-8")
    return re.findall(r"^```toml\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


@pytest.mark.parametrize("doc", ["configuration.md", "cli.md"])
def test_every_toml_block_in_the_docs_loads(
    doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = _toml_blocks(doc)
    assert blocks
    for i, block in enumerate(blocks):
        for var in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", block):
            monkeypatch.setenv(var, f"doc-value-{var.lower()}")
        path = write(tmp_path, block, f"block{i}.toml")
        spec = load_config(path)
        assert spec.endpoints
        with spec.build() as mux:  # no network call
            assert list(mux.endpoints) == list(spec.endpoints)


def test_configuration_doc_lists_every_option() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = [name for name in _option_hints() if f"`{name}`" not in text]
    assert not missing
    for keyword in ("strategy", "read_fallback_on_missing", "health_interval", CONFIG_ENV):
        assert f"`{keyword}`" in text
