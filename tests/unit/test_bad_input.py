"""Bad arguments to the public API (contract §6), driven by Hypothesis.

Every bad argument must raise a typed error (:class:`InvalidArgument` with ``.argument``, or
:class:`ConfigError` whose message names the culprit) before anything is sent. "Nothing is sent"
is proven three ways: each endpoint's transport is replaced by a sentinel whose every network
method raises (and counts), the endpoints' ``stats().requests`` stay 0, and ``socket.connect``
is patched to fail the test for the whole module. The endpoints' URLs point at a port nothing
listens on. The secret key never appears in any message, repr or ``s3kit`` log line.

The same checks run on a multiplexer, on a handler (``create_s3_endpoint_handler``) and on the
guide's call form ``handler("operation", **kwargs)``.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import logging
import math
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import s3kit
from s3kit import ConfigError, Endpoint, InvalidArgument, Multiplexer, S3KitError
from s3kit._endpoint import OPERATIONS
from s3kit._routing import STRATEGIES
from s3kit.testing import free_port

SECRET = "SECRETsecret123456789"
ACCESS = "AKIDbadinput"
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)


# ------------------------------------------------------------------------ the harness
class Sent(AssertionError):
    """A bad argument reached the transport: something would have been sent."""


class SentinelTransport:
    """Stands in for an endpoint's transport: every network method raises :class:`Sent`."""

    name = "sentinel"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, attr: str) -> Callable[..., Any]:
        if attr.startswith("__"):
            raise AttributeError(attr)

        def sent(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(attr)
            raise Sent(f"{attr} reached the transport")

        return sent

    def close(self) -> None:
        return None


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


class Harness:
    """A multiplexer and a handler on dead ports, with sentinel transports."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
        self.mux = Multiplexer(
            {
                "a": {"url": dead[0], "access_key": ACCESS, "secret_key": SECRET},
                "b": {"url": dead[1], "access_key": ACCESS, "secret_key": SECRET},
            },
            connect_timeout=0.2,
            read_timeout=0.2,
        )
        self.handler = s3kit.s3_kit(
            metadata={"s3cfg": {"accessKey": ACCESS, "secretKey": SECRET}}
        ).create_s3_endpoint_handler(dead[0], name="h")
        self.sentinels: list[SentinelTransport] = []
        for ep in [*self.mux.endpoints.values(), self.handler]:
            sentinel = SentinelTransport()
            ep.transport = sentinel  # type: ignore[assignment]
            self.sentinels.append(sentinel)
        self.source = tmp / "source.bin"
        self.source.write_bytes(b"payload")
        (tmp / "downloads").mkdir()

    def endpoints(self) -> list[Endpoint]:
        return [*self.mux.endpoints.values(), self.handler]

    def sent(self) -> int:
        return sum(len(s.calls) for s in self.sentinels) + sum(
            ep.stats().requests for ep in self.endpoints()
        )

    def reset(self) -> None:
        for s in self.sentinels:
            s.calls.clear()

    def target(self, form: str) -> Any:
        if form == "mux":
            return self.mux
        if form == "handler":
            return self.handler
        return GuideForm(self.handler)

    def defaults(self, verb: str) -> dict[str, Any]:
        """Valid arguments for ``verb`` (each test replaces one of them)."""
        base: dict[str, Any] = {"bucket": "bucket", "key": "key", "timeout": None}
        extra: dict[str, dict[str, Any]] = {
            "upload_file": {"file_path": str(self.source)},
            "download_file": {"file_path": str(self.tmp / "downloads" / "out.bin")},
            "put_object": {"body": b"body"},
            "copy_object": {"source_bucket": "bucket", "source_key": "source"},
            "list_objects": {"prefix": None, "max_keys": None},
            "create_presigned_url": {"expiration": 60},
        }
        extra.update(
            iter_objects={"prefix": None},
            delete_objects={"keys": ["key"]},
            upload_fileobj={"fileobj": io.BytesIO(b"body")},
            download_fileobj={"fileobj": io.BytesIO()},
        )
        args = {**base, **extra.get(verb, {})}
        if verb in ("list_objects", "create_bucket", "delete_bucket", "iter_objects"):
            del args["key"]
        if verb == "delete_objects":
            del args["key"]
        if verb == "list_buckets":
            args = {"timeout": None}
        return args


class GuideForm:
    """``handler("operation", **kwargs)``: the guide's call form."""

    def __init__(self, handler: Endpoint) -> None:
        self.handler = handler

    def __getattr__(self, verb: str) -> Callable[..., Any]:
        return lambda **kwargs: self.handler(verb, **kwargs)

    def __repr__(self) -> str:
        return f"GuideForm({self.handler!r})"


@pytest.fixture(scope="module")
def logs() -> Iterator[LogCapture]:
    logger = logging.getLogger("s3kit")
    capture = LogCapture()
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(capture)
    try:
        yield capture
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old)


@pytest.fixture(scope="module", autouse=True)
def no_network() -> Iterator[None]:
    """Any socket connect in this module fails the test."""

    def refuse(self: socket.socket, *args: Any) -> Any:
        raise AssertionError(f"network call to {args!r} from a bad-input test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        yield


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory, logs: LogCapture) -> Iterator[Harness]:
    harness = Harness(tmp_path_factory.mktemp("bad-input"))
    try:
        yield harness
    finally:
        harness.mux.close()
        harness.handler.close()
    assert not [line for line in logs.lines if SECRET in line]


def _no_secret(*things: object) -> None:
    for thing in things:
        assert SECRET not in str(thing), f"secret in str of {type(thing).__name__}"
        assert SECRET not in repr(thing), f"secret in repr of {type(thing).__name__}"


def expect_rejected(
    h: Harness,
    logs: LogCapture,
    call: Callable[[], Any],
    argument: str,
    error: type[S3KitError] = InvalidArgument,
) -> S3KitError:
    """``call()`` raises ``error`` naming ``argument``, sends nothing, leaks no secret."""
    h.reset()
    before = h.sent()
    lines = len(logs.lines)
    with pytest.raises(error) as info:
        call()
    exc = info.value
    if isinstance(exc, InvalidArgument):
        assert exc.argument == argument
    assert repr(argument) in str(exc) or argument in str(exc)
    assert h.sent() == before == 0, "something reached the transport"
    _no_secret(exc, exc.__cause__, exc.__context__, exc.args, h.mux, h.handler)
    assert not [line for line in logs.lines[lines:] if SECRET in line]
    return exc


def expect_sent(h: Harness, call: Callable[[], Any]) -> None:
    """Valid arguments pass validation and reach the transport (the sentinel raises)."""
    h.reset()
    with pytest.raises(Sent):
        call()
    assert sum(len(s.calls) for s in h.sentinels) >= 1


FORMS = ("mux", "handler", "guide")
KEY_VERBS = (
    "upload_file",
    "download_file",
    "delete_object",
    "head_object",
    "get_object",
    "put_object",
    "copy_object",
    "create_presigned_url",
)
BUCKET_VERBS = (*KEY_VERBS, "list_objects", "create_bucket", "delete_bucket")
TIMEOUT_VERBS = tuple(v for v in OPERATIONS if v != "create_presigned_url")


def call_verb(h: Harness, form: str, verb: str, **override: Any) -> Callable[[], Any]:
    args = {**h.defaults(verb), **override}
    if verb == "create_presigned_url" and form != "mux":
        args.pop("timeout", None)  # a handler's presign makes no network call: no timeout
    return lambda: getattr(h.target(form), verb)(**args)


# ------------------------------------------------------------------ argument strategies
non_strings = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False),
    st.binary(max_size=8),
    st.lists(st.text(max_size=3), max_size=2),
    st.booleans(),
)
# Over 1024 bytes in UTF-8, from any (non-surrogate) character.
too_long_keys = st.builds(
    lambda ch, extra: ch * (1024 // len(ch.encode()) + 1 + extra),
    st.characters(exclude_categories=("Cs",)),
    st.integers(0, 40),
) | st.text(min_size=1025, max_size=1100)
bad_keys = st.one_of(st.just(""), non_strings, too_long_keys)
bad_buckets = st.one_of(st.just(""), non_strings)
valid_keys = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=200)
bad_timeouts = st.one_of(
    st.floats(max_value=0.0),
    st.integers(max_value=0),
    st.sampled_from([math.nan, math.inf, -math.inf, True, False, "1", b"1", [1]]),
)
bad_limits = st.one_of(
    st.integers(max_value=0),
    st.floats(allow_nan=True),
    st.sampled_from([True, "5", None, [5]]),
).filter(lambda v: v is not None)
bad_option_seconds = st.one_of(
    st.floats(max_value=0.0), st.integers(max_value=0), st.sampled_from([math.nan, math.inf, "1"])
)
hosts = st.from_regex(r"[a-z][a-z0-9-]{0,12}(\.[a-z]{2,5})?", fullmatch=True)
bad_urls = st.one_of(
    st.none(),
    st.just(""),
    st.integers(),
    st.binary(min_size=1, max_size=10),
    hosts,  # no scheme
    st.builds(lambda h, p: f"{h}:{p}", hosts, st.integers(1, 65535)),
    st.builds(
        lambda s, h: f"{s}://{h}", st.sampled_from(["ftp", "file", "s3", "htp", "ws"]), hosts
    ),
    st.sampled_from(["http://", "https://", "http:///path", "https://:9000", "http://:80/x"]),
    st.builds(lambda h, p: f"http://{h}:{p}", hosts, st.integers(65536, 10**7)),
    st.builds(lambda h, p: f"http://{h}:{p}", hosts, st.from_regex(r"[a-z]{1,5}", fullmatch=True)),
)
names = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30)


# ------------------------------------------------------------------------ keys, buckets
@SETTINGS
@given(key=bad_keys, verb=st.sampled_from(KEY_VERBS), form=st.sampled_from(FORMS))
def test_bad_key_is_rejected_before_sending(
    h: Harness, logs: LogCapture, key: Any, verb: str, form: str
) -> None:
    expect_rejected(h, logs, call_verb(h, form, verb, key=key), "key")


@SETTINGS
@given(key=bad_keys, form=st.sampled_from(FORMS))
def test_bad_source_key_is_rejected(h: Harness, logs: LogCapture, key: Any, form: str) -> None:
    expect_rejected(h, logs, call_verb(h, form, "copy_object", source_key=key), "source_key")


@SETTINGS
@given(bucket=bad_buckets, verb=st.sampled_from(BUCKET_VERBS), form=st.sampled_from(FORMS))
def test_bad_bucket_is_rejected_before_sending(
    h: Harness, logs: LogCapture, bucket: Any, verb: str, form: str
) -> None:
    expect_rejected(h, logs, call_verb(h, form, verb, bucket=bucket), "bucket")


@SETTINGS
@given(key=valid_keys, verb=st.sampled_from(KEY_VERBS[:-1]), form=st.sampled_from(FORMS))
def test_valid_unicode_keys_pass_validation(h: Harness, key: str, verb: str, form: str) -> None:
    """Control: unicode keys, spaces, '/', '..' are valid (§6) and do reach the transport."""
    expect_sent(h, call_verb(h, form, verb, key=key))


@SETTINGS
@given(bucket=st.one_of(valid_keys, st.text(min_size=64, max_size=3000)))
def test_bucket_names_are_left_to_the_server(h: Harness, bucket: str) -> None:
    """§6: bucket names are not checked against AWS's rules (servers differ): a long or
    unicode bucket name is sent, and the server answers."""
    expect_sent(h, call_verb(h, "mux", "head_object", bucket=bucket))


@SETTINGS
@given(
    key=st.builds(
        lambda a, s, b: a + s + b,
        st.text(max_size=20),
        st.characters(categories=("Cs",)),
        st.text(max_size=20),
    ),
    verb=st.sampled_from(KEY_VERBS[:-1]),
)
def test_key_with_lone_surrogate_is_rejected(
    h: Harness, logs: LogCapture, key: str, verb: str
) -> None:
    expect_rejected(h, logs, call_verb(h, "mux", verb, key=key), "key")


# ---------------------------------------------------------------- timeouts and limits
@SETTINGS
@given(timeout=bad_timeouts, verb=st.sampled_from(TIMEOUT_VERBS), form=st.sampled_from(FORMS))
def test_bad_timeout_is_rejected(
    h: Harness, logs: LogCapture, timeout: Any, verb: str, form: str
) -> None:
    expect_rejected(h, logs, call_verb(h, form, verb, timeout=timeout), "timeout")


@SETTINGS
@given(timeout=bad_timeouts)
def test_bad_timeout_on_mux_presign_and_health(h: Harness, logs: LogCapture, timeout: Any) -> None:
    expect_rejected(
        h, logs, call_verb(h, "mux", "create_presigned_url", timeout=timeout), "timeout"
    )
    expect_rejected(h, logs, lambda: h.mux.check_health(timeout=timeout), "timeout")
    expect_rejected(h, logs, lambda: h.mux.start_health_checks(timeout), "interval")


@SETTINGS
@given(
    max_keys=st.one_of(st.integers(max_value=0), st.sampled_from([True, 1.5, "10"])),
    form=st.sampled_from(FORMS),
)
def test_bad_max_keys_is_rejected(h: Harness, logs: LogCapture, max_keys: Any, form: str) -> None:
    expect_rejected(h, logs, call_verb(h, form, "list_objects", max_keys=max_keys), "max_keys")


@SETTINGS
@given(
    expiration=st.one_of(
        st.integers(max_value=0), st.integers(min_value=604801), st.sampled_from([1.5, True, "60"])
    ),
    form=st.sampled_from(FORMS),
)
def test_bad_expiration_is_rejected(
    h: Harness, logs: LogCapture, expiration: Any, form: str
) -> None:
    call = call_verb(h, form, "create_presigned_url", expiration=expiration)
    expect_rejected(h, logs, call, "expiration")


LIMITS = ("max_concurrent", "circuit_breaker_threshold")
SECONDS = (
    "connect_timeout",
    "read_timeout",
    "long_op_timeout",
    "acquire_timeout",
    "breaker_open_s",
    "breaker_max_open_s",
    "backoff_cap_s",
)


def _constructors(h: Harness, option: str, value: Any) -> list[Callable[[], Any]]:
    url = "http://127.0.0.1:9"
    kit = s3kit.s3_kit(metadata={"s3cfg": {"accessKey": ACCESS, "secretKey": SECRET}})
    return [
        lambda: Multiplexer(secret_key=SECRET, **{option: value}),
        lambda: Multiplexer({"x": {"url": url, "secret_key": SECRET, option: value}}),
        lambda: h.mux.add_endpoint("x", url, ACCESS, SECRET, **{option: value}),
        lambda: kit.create_s3_endpoint_handler(url, **{option: value}),
    ]


@SETTINGS
@given(option=st.sampled_from(LIMITS), value=bad_limits)
def test_bad_limits_are_rejected_at_construction(
    h: Harness, logs: LogCapture, option: str, value: Any
) -> None:
    for make in _constructors(h, option, value):
        expect_rejected(h, logs, make, option)
    assert "x" not in h.mux.endpoints


@SETTINGS
@given(value=st.one_of(st.integers(max_value=-1), st.sampled_from([1.0, True, "2"])))
def test_negative_retries_are_rejected(h: Harness, logs: LogCapture, value: Any) -> None:
    for make in _constructors(h, "retries", value):
        expect_rejected(h, logs, make, "retries")


@SETTINGS
@given(option=st.sampled_from(SECONDS), value=bad_option_seconds)
def test_zero_or_negative_option_timeouts_are_rejected(
    h: Harness, logs: LogCapture, option: str, value: Any
) -> None:
    for make in _constructors(h, option, value):
        expect_rejected(h, logs, make, option)


# ------------------------------------------------- unknown operations, strategies, names
@SETTINGS
@given(operation=st.one_of(names, non_strings).filter(lambda o: o not in OPERATIONS))
def test_unknown_operation_is_a_config_error(h: Harness, logs: LogCapture, operation: Any) -> None:
    exc = expect_rejected(h, logs, lambda: h.handler(operation), "operation", ConfigError)
    assert repr(operation) in str(exc)


@SETTINGS
@given(strategy=names.filter(lambda s: s not in STRATEGIES), verb=st.sampled_from(KEY_VERBS))
def test_unknown_strategy_is_a_config_error(
    h: Harness, logs: LogCapture, strategy: str, verb: str
) -> None:
    exc = expect_rejected(h, logs, lambda: Multiplexer(strategy=strategy), "strategy", ConfigError)
    assert repr(strategy) in str(exc)
    if verb != "create_presigned_url":
        call = call_verb(h, "mux", verb, strategy=strategy)
        exc = expect_rejected(h, logs, call, "strategy", ConfigError)
        assert repr(strategy) in str(exc)


@SETTINGS
@given(strategy=st.one_of(st.integers(), st.none().map(lambda _: object()), st.binary()))
def test_strategy_of_the_wrong_type_is_a_config_error(
    h: Harness, logs: LogCapture, strategy: Any
) -> None:
    expect_rejected(h, logs, lambda: Multiplexer(strategy=strategy), "strategy", ConfigError)


@SETTINGS
@given(option=st.from_regex(r"[a-z_]{1,20}", fullmatch=True))
def test_unknown_option_is_a_config_error_naming_it(
    h: Harness, logs: LogCapture, option: str
) -> None:
    known = {f.name for f in dataclasses.fields(s3kit.EndpointConfig)}
    known |= set(inspect.signature(Multiplexer).parameters)
    if option in known:
        return
    exc = expect_rejected(
        h, logs, lambda: Multiplexer(secret_key=SECRET, **{option: 1}), option, ConfigError
    )
    assert repr(option) in str(exc)


@SETTINGS
@given(name=names.filter(lambda n: n not in ("a", "b")), verb=st.sampled_from(KEY_VERBS))
def test_unknown_endpoint_name_is_a_config_error(
    h: Harness, logs: LogCapture, name: str, verb: str
) -> None:
    exc = expect_rejected(
        h, logs, call_verb(h, "mux", verb, endpoint=name), "endpoint", ConfigError
    )
    assert repr(name) in str(exc)


def test_duplicate_and_empty_endpoint_names(h: Harness, logs: LogCapture) -> None:
    url = "http://127.0.0.1:9"
    expect_rejected(h, logs, lambda: h.mux.add_endpoint("a", url), "endpoint", ConfigError)
    for bad in ("", None, 3):
        expect_rejected(h, logs, lambda bad=bad: h.mux.add_endpoint(bad, url), "name")


# ----------------------------------------------------------------------- malformed URLs
@SETTINGS
@given(url=bad_urls)
def test_malformed_url_is_rejected(h: Harness, logs: LogCapture, url: Any) -> None:
    kit = s3kit.s3_kit(metadata={"s3cfg": {"accessKey": ACCESS, "secretKey": SECRET}})
    expect_rejected(h, logs, lambda: kit.create_s3_endpoint_handler(url), "endpoint_url")
    expect_rejected(h, logs, lambda: h.mux.add_endpoint("x", url, ACCESS, SECRET), "endpoint_url")
    expect_rejected(
        h, logs, lambda: Multiplexer({"x": {"url": url, "secret_key": SECRET}}), "endpoint_url"
    )
    assert "x" not in h.mux.endpoints


# -------------------------------------------------------------------------------- files
file_names = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="/\x00"), min_size=1, max_size=40
).filter(lambda n: n not in (".", ".."))


@SETTINGS
@given(name=file_names, form=st.sampled_from(FORMS))
def test_upload_source_missing_or_a_directory(
    h: Harness, logs: LogCapture, name: str, form: str
) -> None:
    missing = h.tmp / "missing" / name
    expect_rejected(h, logs, call_verb(h, form, "upload_file", file_path=str(missing)), "file_path")
    expect_rejected(h, logs, call_verb(h, form, "upload_file", file_path=str(h.tmp)), "file_path")
    expect_rejected(h, logs, call_verb(h, "mux", "upload_file", file_path=None), "file_path")
    call = lambda: h.mux.replicate(str(missing), "bucket", "key")  # noqa: E731
    expect_rejected(h, logs, call, "file_path")


@SETTINGS
@given(name=file_names, form=st.sampled_from(FORMS))
def test_download_target_in_missing_directory_or_a_directory(
    h: Harness, logs: LogCapture, name: str, form: str
) -> None:
    in_missing = h.tmp / "no-such-dir" / name
    call = call_verb(h, form, "download_file", file_path=str(in_missing))
    expect_rejected(h, logs, call, "file_path")
    expect_rejected(h, logs, call_verb(h, form, "download_file", file_path=str(h.tmp)), "file_path")
    assert not in_missing.parent.exists()


def _unwritable_dir(tmp: Path) -> Path:
    """A directory in which creating a file fails (root ignores modes: fall back to /sys)."""
    locked = tmp / "locked"
    locked.mkdir(exist_ok=True)
    locked.chmod(0o555)
    for candidate in (locked, Path("/sys"), Path("/proc")):
        probe = candidate / f".probe-{os.getpid()}"
        try:
            probe.open("x").close()
        except OSError:
            return candidate
        probe.unlink()
    pytest.skip("no unwritable directory available")


@pytest.mark.parametrize("form", FORMS)
def test_unwritable_download_target_is_rejected(h: Harness, logs: LogCapture, form: str) -> None:
    target = _unwritable_dir(h.tmp) / "out.bin"
    expect_rejected(
        h, logs, call_verb(h, form, "download_file", file_path=str(target)), "file_path"
    )


@pytest.mark.parametrize("form", ["mux", "handler"])
@pytest.mark.parametrize("fsync", [None, 0, "no"], ids=["None", "int", "str"])
def test_download_fsync_flag_must_be_a_bool(
    h: Harness, logs: LogCapture, form: str, fsync: Any
) -> None:
    expect_rejected(h, logs, call_verb(h, form, "download_file", fsync=fsync), "fsync")


def test_download_target_with_nul_byte_is_rejected(h: Harness, logs: LogCapture) -> None:
    target = str(h.tmp / "downloads" / "a\x00b")
    expect_rejected(h, logs, call_verb(h, "mux", "download_file", file_path=target), "file_path")


@pytest.mark.parametrize("body", [None, 42, 1.5, ["x"]], ids=["None", "int", "float", "list"])
def test_put_object_bad_body_is_rejected(h: Harness, logs: LogCapture, body: Any) -> None:
    expect_rejected(h, logs, call_verb(h, "mux", "put_object", body=body), "body")


@pytest.mark.parametrize("verb", ["upload_file", "download_file"])
@pytest.mark.parametrize("form", ["mux", "handler"])
def test_non_callable_callback_is_rejected(
    h: Harness, logs: LogCapture, verb: str, form: str
) -> None:
    expect_rejected(h, logs, call_verb(h, form, verb, callback=5), "callback")


def test_other_arguments(h: Harness, logs: LogCapture) -> None:
    expect_rejected(h, logs, call_verb(h, "mux", "list_objects", prefix=3), "prefix")
    call = lambda: h.handler.create_presigned_url("bucket", "key", method="DELETE")  # noqa: E731
    expect_rejected(h, logs, call, "method")
    call = lambda: h.mux.replicate(str(h.source), "bucket", "key", min_success=3)  # noqa: E731
    expect_rejected(h, logs, call, "min_success")
    call = lambda: h.mux.replicate(str(h.source), "bucket", "key", endpoints=["zz"])  # noqa: E731
    expect_rejected(h, logs, call, "endpoint", ConfigError)
    expect_rejected(h, logs, lambda: h.mux.remove_endpoint("zz"), "endpoint", ConfigError)
    kit = s3kit.s3_kit(metadata={"s3cfg": {"accessKey": ACCESS, "secretKey": SECRET}})
    expect_rejected(h, logs, lambda: kit.create_s3_endpoint_handler(None), "endpoint_url")
    call = lambda: Multiplexer({"x": {"url": "http://127.0.0.1:9"}}, secret_key=123)  # noqa: E731
    expect_rejected(h, logs, call, "secret_key")
    expect_rejected(h, logs, lambda: Multiplexer(retry_budget=-1), "retry_budget")
    expect_rejected(h, logs, lambda: Multiplexer(weight=0), "weight")
    expect_rejected(h, logs, lambda: Multiplexer(backoff_base_s=-1), "backoff_base_s")
    call = lambda: Multiplexer(backoff_base_s=2, backoff_cap_s=1)  # noqa: E731
    expect_rejected(h, logs, call, "backoff_cap_s")


def test_nothing_was_sent_and_no_secret_anywhere(h: Harness, logs: LogCapture) -> None:
    for ep in h.endpoints():
        st_ = ep.stats()
        assert (st_.requests, st_.endpoint_failures, st_.state) == (0, 0, "closed")
        _no_secret(ep, ep.config, ep.metadata, st_.as_dict())
    _no_secret(h.mux, h.mux.stats())
    assert not [line for line in logs.lines if SECRET in line]
