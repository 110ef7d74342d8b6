"""Argument checks made before anything is sent (contract §6). Each raises InvalidArgument."""

from __future__ import annotations

import io
import math
import os
from typing import Any

from ._errors import InvalidArgument

__all__ = [
    "check_body",
    "check_bucket",
    "check_callback",
    "check_delete_keys",
    "check_download_target",
    "check_expiration",
    "check_flag",
    "check_key",
    "check_max_keys",
    "check_optional_str",
    "check_page_size",
    "check_readable",
    "check_timeout",
    "check_upload_source",
    "check_writable",
]

MAX_KEY_BYTES = 1024
MAX_EXPIRATION = 604800  # SigV4 presigned URLs live at most 7 days


def check_bucket(bucket: Any) -> str:
    if not isinstance(bucket, str) or not bucket:
        raise InvalidArgument("bucket", f"must be a non-empty string, got {bucket!r}")
    return bucket


def check_key(key: Any, argument: str = "key") -> str:
    if not isinstance(key, str) or not key:
        raise InvalidArgument(argument, f"must be a non-empty string, got {key!r}")
    if key.isascii():
        size = len(key)
    else:
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidArgument(argument, "is not valid Unicode (lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise InvalidArgument(argument, f"is longer than {MAX_KEY_BYTES} bytes in UTF-8")
    return key


def check_timeout(timeout: Any, argument: str = "timeout") -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise InvalidArgument(argument, f"must be a number of seconds, got {timeout!r}")
    if not timeout > 0 or not math.isfinite(timeout):
        raise InvalidArgument(argument, f"must be > 0 seconds, got {timeout!r}")
    return float(timeout)


def check_expiration(expiration: Any) -> int:
    if isinstance(expiration, bool) or not isinstance(expiration, int):
        raise InvalidArgument("expiration", f"must be an integer of seconds, got {expiration!r}")
    if not 1 <= expiration <= MAX_EXPIRATION:
        raise InvalidArgument("expiration", f"must be between 1 and {MAX_EXPIRATION} seconds")
    return expiration


def check_max_keys(max_keys: Any) -> int | None:
    if max_keys is None:
        return None
    if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
        raise InvalidArgument("max_keys", f"must be a positive integer, got {max_keys!r}")
    return max_keys


def check_upload_source(file_path: Any) -> str:
    if not isinstance(file_path, (str, os.PathLike)) or not os.fspath(file_path):
        raise InvalidArgument("file_path", f"must be a path, got {file_path!r}")
    path = os.fspath(file_path)
    if not isinstance(path, str):
        raise InvalidArgument("file_path", "must be a str path")
    if os.path.isdir(path):
        raise InvalidArgument("file_path", f"{path!r} is a directory")
    if not os.path.isfile(path):
        raise InvalidArgument("file_path", f"{path!r} does not exist")
    return path


def check_download_target(file_path: Any) -> str:
    if not isinstance(file_path, (str, os.PathLike)) or not os.fspath(file_path):
        raise InvalidArgument("file_path", f"must be a path, got {file_path!r}")
    path = os.fspath(file_path)
    if not isinstance(path, str):
        raise InvalidArgument("file_path", "must be a str path")
    if "\x00" in path:
        raise InvalidArgument("file_path", "contains a NUL byte")
    if os.path.isdir(path):
        raise InvalidArgument("file_path", f"{path!r} is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InvalidArgument("file_path", f"directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InvalidArgument("file_path", f"directory {directory!r} is not writable")
    return path


def check_body(body: Any) -> bytes | Any:
    """bytes-like, str (sent as UTF-8) or a readable binary file object."""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return body
    if callable(getattr(body, "read", None)):
        return body
    raise InvalidArgument(
        "body", f"must be bytes, str or a readable file, got {type(body).__name__}"
    )


def check_callback(callback: Any) -> Any:
    if callback is not None and not callable(callback):
        raise InvalidArgument("callback", f"must be callable, got {type(callback).__name__}")
    return callback


def check_flag(value: Any, argument: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(argument, f"must be True or False, got {value!r}")
    return value


def check_optional_str(value: Any, argument: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(argument, f"must be a string or None, got {value!r}")
    return value


MAX_PAGE = 1000  # ListObjectsV2 and DeleteObjects take at most 1000 keys a request


def check_page_size(page_size: Any) -> int:
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        raise InvalidArgument("page_size", f"must be an integer, got {page_size!r}")
    if not 1 <= page_size <= MAX_PAGE:
        raise InvalidArgument("page_size", f"must be between 1 and {MAX_PAGE}, got {page_size}")
    return page_size


def check_readable(fileobj: Any) -> Any:
    """A binary file object to upload from (read from its current position)."""
    if not callable(getattr(fileobj, "read", None)) or isinstance(
        fileobj, (str, bytes, io.TextIOBase)
    ):
        raise InvalidArgument(
            "fileobj", f"must be a readable binary file object, got {type(fileobj).__name__}"
        )
    return fileobj


def check_writable(fileobj: Any) -> Any:
    """A binary file object to download into (written from its current position)."""
    if not callable(getattr(fileobj, "write", None)) or isinstance(fileobj, io.TextIOBase):
        raise InvalidArgument(
            "fileobj", f"must be a writable binary file object, got {type(fileobj).__name__}"
        )
    return fileobj


def check_delete_keys(keys: Any) -> list[dict[str, str]]:
    """Keys for DeleteObjects: strs, or ``{"Key": ..., "VersionId": ...}`` mappings."""
    if isinstance(keys, (str, bytes)) or not hasattr(keys, "__iter__"):
        raise InvalidArgument("keys", f"must be an iterable of keys, got {type(keys).__name__}")
    objects: list[dict[str, str]] = []
    for item in keys:
        if isinstance(item, str):
            objects.append({"Key": check_key(item, "keys")})
        elif isinstance(item, dict) and set(item) <= {"Key", "VersionId"} and "Key" in item:
            entry = {"Key": check_key(item["Key"], "keys")}
            if item.get("VersionId") is not None:
                entry["VersionId"] = str(item["VersionId"])
            objects.append(entry)
        else:
            raise InvalidArgument(
                "keys", f"each must be a key or {{'Key', 'VersionId'}}, got {item!r}"
            )
    return objects
