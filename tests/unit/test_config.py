"""make_config: contract §2 defaults and §6 bad input."""

from __future__ import annotations

import dataclasses
import math

import pytest

from s3kit._config import EndpointConfig, make_config
from s3kit._errors import ConfigError, InvalidArgument, S3KitError

URL = "http://localhost:9000"


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("S3KIT_TRANSPORT", raising=False)
    cfg = make_config(URL)
    assert cfg.connect_timeout == 2
    assert cfg.read_timeout == 15
    assert cfg.long_op_timeout == 300
    assert cfg.acquire_timeout == 30
    assert cfg.breaker_open_s == 30
    assert cfg.breaker_max_open_s == 300
    assert cfg.backoff_base_s == 0.1
    assert cfg.backoff_cap_s == 5
    assert cfg.retry_budget == 0.2
    assert cfg.weight == 1.0
    assert cfg.priority == 0
    assert cfg.transport == "boto3"
    assert cfg.max_concurrent == 5
    assert cfg.circuit_breaker_threshold == 5
    assert cfg.retries == 3
    assert cfg.region == "us-east-1"
    assert cfg.addressing_style == "path"
    assert cfg.verify is True
    assert dict(cfg.buckets) == {}
    assert cfg.session_token is None
    assert cfg.profile is None
    assert cfg.name == URL  # the URL when no name is given


def test_options_are_applied() -> None:
    cfg = make_config(
        URL,
        "ak",
        "sk",
        name="primary",
        max_concurrent=7,
        retries=0,
        read_timeout=1,
        breaker_open_s=0.2,
        weight=2.5,
        priority=-1,
        buckets={"logical": "physical-1"},
    )
    assert (cfg.name, cfg.max_concurrent, cfg.retries, cfg.read_timeout) == ("primary", 7, 0, 1)
    assert cfg.breaker_open_s == 0.2
    assert (cfg.weight, cfg.priority) == (2.5, -1)
    assert cfg.physical_bucket("logical") == "physical-1"
    assert cfg.physical_bucket("other") == "other"
    assert (cfg.access_key, cfg.secret_key) == ("ak", "sk")


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://s3.eu-west-1.amazonaws.com", "eu-west-1"),
        ("https://s3.ap-southeast-2.amazonaws.com", "ap-southeast-2"),
        ("https://s3.amazonaws.com", "us-east-1"),
        ("http://localhost:9000", "us-east-1"),
        ("http://minio.internal:9000", "us-east-1"),
        ("https://storage.googleapis.com", "us-east-1"),
    ],
)
def test_region_from_url(url: str, region: str) -> None:
    assert make_config(url).region == region


def test_explicit_region_wins() -> None:
    assert make_config("https://s3.eu-west-1.amazonaws.com", region="eu-central-1").region == (
        "eu-central-1"
    )
    assert make_config(URL, region="garage").region == "garage"


def test_addressing_style_path_for_non_aws_and_overridable() -> None:
    assert make_config(URL).addressing_style == "path"
    assert make_config("https://ceph.example.com").addressing_style == "path"
    assert make_config(URL, addressing_style="virtual").addressing_style == "virtual"
    assert make_config("https://s3.eu-west-1.amazonaws.com").addressing_style != "path"


def test_unknown_option_raises_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="bogus_option") as info:
        make_config(URL, bogus_option=1)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, S3KitError)


def test_unknown_transport_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nope"):
        make_config(URL, transport="nope")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_concurrent", 0),
        ("max_concurrent", -3),
        ("max_concurrent", 1.5),
        ("max_concurrent", True),
        ("max_concurrent", "5"),
        ("circuit_breaker_threshold", 0),
        ("retries", -1),
        ("read_timeout", 0),
        ("read_timeout", -1.0),
        ("read_timeout", math.nan),
        ("read_timeout", math.inf),
        ("connect_timeout", 0),
        ("long_op_timeout", 0),
        ("acquire_timeout", -5),
        ("breaker_open_s", 0),
        ("backoff_cap_s", 0),
        ("backoff_base_s", -0.1),
        ("retry_budget", -0.5),
        ("weight", 0),
        ("priority", 1.5),
        ("addressing_style", "sideways"),
        ("buckets", {"": "x"}),
        ("region", 5),
    ],
)
def test_bad_option_values_raise_invalid_argument_naming_it(option: str, value: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        make_config(URL, **{option: value})
    assert info.value.argument == option
    assert option in str(info.value)
    assert isinstance(info.value, ValueError)


def test_retries_zero_is_valid() -> None:
    assert make_config(URL, retries=0).retries == 0


def test_backoff_cap_below_base_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as info:
        make_config(URL, backoff_base_s=2.0, backoff_cap_s=1.0)
    assert info.value.argument == "backoff_cap_s"


def test_breaker_max_open_below_open_is_raised_to_open() -> None:
    cfg = make_config(URL, breaker_open_s=60, breaker_max_open_s=10)
    assert cfg.breaker_max_open_s == 60


@pytest.mark.parametrize(
    "url",
    ["localhost:9000", "ftp://x", "", "http://", "https://:9000", "host", None, 9000, b"http://h"],
)
def test_malformed_url_raises_invalid_argument(url: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        make_config(url)
    assert info.value.argument == "endpoint_url"


def test_bad_port_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as info:
        make_config("http://localhost:notaport")
    assert info.value.argument == "endpoint_url"


def test_secrets_are_not_in_repr() -> None:
    cfg = make_config(
        URL,
        "AKIA-ACCESS-7f3a9",
        "secret-b81c2d-value",
        session_token="session-token-e44f01",
    )
    for text in (repr(cfg), str(cfg)):
        assert "AKIA-ACCESS-7f3a9" not in text
        assert "secret-b81c2d-value" not in text
        assert "session-token-e44f01" not in text
    assert "localhost:9000" in repr(cfg)


def test_secrets_are_not_in_config_error_messages() -> None:
    with pytest.raises(ConfigError) as info:
        make_config(URL, "AKIA-ACCESS-7f3a9", "secret-b81c2d-value", bogus=1)
    assert "secret-b81c2d-value" not in str(info.value)
    assert "AKIA-ACCESS-7f3a9" not in str(info.value)


def test_config_is_frozen_and_with_credentials_copies() -> None:
    cfg = make_config(URL, "a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.retries = 9  # type: ignore[misc]
    other = cfg.with_credentials("c", "d")
    assert isinstance(other, EndpointConfig)
    assert (other.access_key, other.secret_key) == ("c", "d")
    assert (cfg.access_key, cfg.secret_key) == ("a", "b")


def test_is_aws() -> None:
    assert make_config("https://s3.eu-west-1.amazonaws.com").is_aws
    assert make_config("https://s3.cn-north-1.amazonaws.com.cn").is_aws
    assert not make_config(URL).is_aws
    assert not make_config("https://amazonaws.com.evil.example").is_aws


def test_transport_env_var_sets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3KIT_TRANSPORT", "obstore")
    assert make_config(URL).transport == "obstore"
    # An explicit option (a config file's options arrive the same way) beats the variable.
    assert make_config(URL, transport="boto3").transport == "boto3"
    monkeypatch.setenv("S3KIT_TRANSPORT", "")
    assert make_config(URL).transport == "boto3"
    monkeypatch.delenv("S3KIT_TRANSPORT")
    assert make_config(URL).transport == "boto3"


def test_bad_transport_env_var_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3KIT_TRANSPORT", "curl")
    with pytest.raises(ConfigError) as info:
        make_config(URL)
    message = str(info.value)
    assert "S3KIT_TRANSPORT" in message and "'curl'" in message
    assert "boto3" in message and "obstore" in message
    # Not consulted when the endpoint names its transport.
    assert make_config(URL, transport="obstore").transport == "obstore"
