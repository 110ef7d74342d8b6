"""Argument checks made before anything is sent (contract §6)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from s3kit._errors import InvalidArgument
from s3kit._validate import (
    check_bucket,
    check_download_target,
    check_expiration,
    check_key,
    check_max_keys,
    check_timeout,
    check_upload_source,
)


# ------------------------------------------------------------------ bucket / key
@pytest.mark.parametrize("bucket", ["", None, 5, b"bucket", ["b"]])
def test_bad_bucket_rejected(bucket: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_bucket(bucket)
    assert info.value.argument == "bucket"


@pytest.mark.parametrize("bucket", ["b", "my-bucket", "UPPER_and_under", "x" * 300])
def test_bucket_names_not_checked_against_aws_rules(bucket: str) -> None:
    assert check_bucket(bucket) == bucket


@pytest.mark.parametrize("key", ["", None, 0, b"key", ["k"]])
def test_bad_key_rejected(key: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_key(key)
    assert info.value.argument == "key"


def test_key_argument_name_is_reported() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_key("", "source_key")
    assert info.value.argument == "source_key"


@pytest.mark.parametrize(
    "key",
    [
        "é" * 513,  # 1026 bytes
        "a" + "é" * 512,  # 1025 bytes
        "a" * 1025,
        "𝄞" * 256 + "a",  # 1025 bytes from 257 characters
    ],
)
def test_key_over_1024_utf8_bytes_rejected(key: str) -> None:
    assert len(key.encode("utf-8")) > 1024
    with pytest.raises(InvalidArgument) as info:
        check_key(key)
    assert info.value.argument == "key"
    assert "1024" in str(info.value)


@pytest.mark.parametrize("key", ["é" * 512, "a" * 1024, "𝄞" * 256, "€" * 341 + "a"])
def test_key_of_1024_utf8_bytes_accepted(key: str) -> None:
    assert len(key.encode("utf-8")) == 1024
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key", ["日本語/ファイル.txt", "with space.txt", "../x", "a/b/../../c", "/", "ü", "emoji 🎉"]
)
def test_valid_unusual_keys(key: str) -> None:
    assert check_key(key) == key


# Keys built from runs of 1-, 2-, 3- and 4-byte characters land on both sides of 1024 bytes.
near_limit_keys = st.builds(
    lambda a, b, c, d: "a" * a + "é" * b + "€" * c + "𝄞" * d,
    st.integers(0, 1100),
    st.integers(0, 520),
    st.integers(0, 350),
    st.integers(0, 260),
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.one_of(
        st.text(min_size=1, max_size=64),
        st.text(
            st.characters(min_codepoint=0x800, exclude_categories=("Cs",)),
            min_size=250,
            max_size=350,
        ),
        near_limit_keys,
    )
)
@example("é" * 512)
@example("a" + "é" * 512)
@example("𝄞" * 256)
@example("𝄞" * 256 + "a")
def test_key_length_property(key: str) -> None:
    if not key:
        return
    if len(key.encode("utf-8")) <= 1024:
        assert check_key(key) == key
    else:
        with pytest.raises(InvalidArgument):
            check_key(key)


# ------------------------------------------------------------------ timeout
@pytest.mark.parametrize("timeout", [0, 0.0, -1, -0.5, math.nan, math.inf, True, False, "5", [1]])
def test_bad_timeout_rejected(timeout: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_timeout(timeout)
    assert info.value.argument == "timeout"


@pytest.mark.parametrize(("timeout", "expected"), [(None, None), (1, 1.0), (0.25, 0.25)])
def test_good_timeout(timeout: float | None, expected: float | None) -> None:
    result = check_timeout(timeout)
    assert result == expected
    if result is not None:
        assert isinstance(result, float)


# ------------------------------------------------------------------ expiration / max_keys
@pytest.mark.parametrize("expiration", [0, -1, 604801, 10**9, True, 3600.0, "3600", None])
def test_bad_expiration_rejected(expiration: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_expiration(expiration)
    assert info.value.argument == "expiration"


@pytest.mark.parametrize("expiration", [1, 3600, 604800])
def test_good_expiration(expiration: int) -> None:
    assert check_expiration(expiration) == expiration


@pytest.mark.parametrize("max_keys", [0, -1, True, 1.5, "10"])
def test_bad_max_keys_rejected(max_keys: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_max_keys(max_keys)
    assert info.value.argument == "max_keys"


def test_good_max_keys() -> None:
    assert check_max_keys(None) is None
    assert check_max_keys(1) == 1
    assert check_max_keys(5000) == 5000


# ------------------------------------------------------------------ files
def test_upload_source_ok(tmp_path: Path) -> None:
    f = tmp_path / "data.bin"
    f.write_bytes(b"x")
    assert check_upload_source(f) == str(f)
    assert check_upload_source(str(f)) == str(f)


def test_upload_source_missing(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="does not exist") as info:
        check_upload_source(tmp_path / "missing.bin")
    assert info.value.argument == "file_path"


def test_upload_source_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="directory") as info:
        check_upload_source(tmp_path)
    assert info.value.argument == "file_path"


@pytest.mark.parametrize("path", ["", None, 5])
def test_upload_source_not_a_path(path: object) -> None:
    with pytest.raises(InvalidArgument):
        check_upload_source(path)


def test_download_target_ok(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    assert check_download_target(target) == str(target)
    target.write_bytes(b"old")  # an existing file may be overwritten
    assert check_download_target(str(target)) == str(target)


def test_download_target_directory_missing(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="does not exist") as info:
        check_download_target(tmp_path / "nope" / "out.bin")
    assert info.value.argument == "file_path"


def test_download_target_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_download_target(tmp_path)
    assert info.value.argument == "file_path"
