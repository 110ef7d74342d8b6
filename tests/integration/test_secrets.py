"""No secret key ever shows: not in a log line, an error, a repr, metadata, stats or an event.

A real nanio server (it verifies SigV4) is driven with a distinctive secret through success,
wrong credentials (a second distinctive secret), a config error, health checks, a listener that
raises, a killed server, an open breaker and a multiplexer that runs out of endpoints. Everything
s3kit hands back or logs on the way is collected and searched for both secrets.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import s3kit
from s3kit import (
    AccessDenied,
    CircuitOpenError,
    ConfigError,
    ConnectionFailed,
    Event,
    InvalidArgument,
    Multiplexer,
    NoHealthyEndpoint,
    S3EndpointMultiplexer,
)
from s3kit.testing import S3Server

SECRET = "SECRETsecret123456789"
WRONG = "SECRETwrong987654321"
SECRETS = (SECRET, WRONG)
ACCESS = "secrets-test-access"
BUCKET = "secrets"
FAST: dict[str, Any] = {
    "connect_timeout": 0.5,
    "read_timeout": 1.0,
    "backoff_base_s": 0.01,
    "backoff_cap_s": 0.05,
    "breaker_open_s": 0.3,
    "breaker_max_open_s": 0.6,
    "circuit_breaker_threshold": 2,
    "retries": 1,
}


@pytest.fixture
def server() -> Iterator[S3Server]:
    srv = S3Server("nanio", access_key=ACCESS, secret_key=SECRET)
    try:
        srv.start()
        srv.create_bucket(BUCKET)
        yield srv
    finally:
        srv.stop()
    assert not srv.running


class Collector:
    """Everything to search: exceptions (with their chains) and other objects' str/repr."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.texts: list[tuple[str, str]] = []

    def raises(self, kind: type[BaseException], call: Callable[[], Any]) -> BaseException:
        with pytest.raises(kind) as info:
            call()
        self.errors.append(info.value)
        return info.value

    def add(self, label: str, thing: object) -> None:
        self.texts.append((f"str({label})", str(thing)))
        self.texts.append((f"repr({label})", repr(thing)))

    def error_texts(self) -> Iterator[tuple[str, str]]:
        seen: set[int] = set()
        todo = list(self.errors)
        while todo:
            exc = todo.pop()
            if id(exc) in seen:
                continue
            seen.add(id(exc))
            name = type(exc).__name__
            yield f"str({name})", str(exc)
            yield f"repr({name})", repr(exc)
            yield f"args({name})", repr(exc.args)
            yield f"vars({name})", repr({k: v for k, v in vars(exc).items() if k != "__cause__"})
            for linked in (exc.__cause__, exc.__context__, getattr(exc, "previous", None)):
                if isinstance(linked, BaseException):
                    todo.append(linked)
            for _, attempt in getattr(exc, "attempts", []):
                todo.append(attempt)


def _log_texts(records: list[logging.LogRecord]) -> Iterator[tuple[str, str]]:
    fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in records:
        yield f"log {record.name}", fmt.format(record)  # the message and any traceback


@pytest.mark.timeout(90)
def test_secret_never_appears(
    server: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="s3kit")
    c = Collector()
    events: list[Event] = []
    kit = s3kit.s3_kit(
        metadata={"s3cfg": {"accessKey": ACCESS, "secretKey": SECRET, "endpoint": server.url}}
    )
    handler = kit.create_s3_endpoint_handler(**{**FAST, "name": "handler"})
    bad_handler = kit.create_s3_endpoint_handler(secret_key=WRONG, **{**FAST, "name": "bad"})
    handler.events.subscribe(events.append)
    bad_handler.events.subscribe(events.append)
    mux = Multiplexer(
        {
            "good": {"url": server.url, "access_key": ACCESS, "secret_key": SECRET},
            "wrong": {"url": server.url, "access_key": ACCESS, "secret_key": WRONG},
        },
        **FAST,
    )
    mux.on_event(events.append)

    def failing_listener(event: Event) -> None:
        raise RuntimeError(f"listener failed on {event.kind}")  # logged with its traceback

    unsubscribe = mux.on_event(failing_listener)
    guide = S3EndpointMultiplexer(kit, **FAST)
    guide.add_endpoint("g", server.url, None, None)
    try:
        # -- success, through every entry point
        src = tmp_path / "src.bin"
        src.write_bytes(b"payload " * 100)
        out = tmp_path / "out.bin"
        handler.put_object(BUCKET, "k1", b"v1")
        handler.upload_file(str(src), BUCKET, "k2")
        c.add("get", handler.get_object(BUCKET, "k1"))
        c.add("head", handler.head_object(BUCKET, "k1"))
        c.add("list", handler.list_objects(BUCKET))
        c.add("download", handler.download_file(BUCKET, "k2", str(out)))
        c.add("copy", handler.copy_object(BUCKET, "k3", BUCKET, "k1"))
        c.add("presigned", handler.create_presigned_url(BUCKET, "k1"))
        c.add("handler-call", handler("head_object", bucket=BUCKET, key="k1"))
        c.add("guide", guide.upload_file(str(src), BUCKET, "k4"))
        c.add("guide-presign", guide.create_presigned_url(BUCKET, "k4"))
        for _ in range(4):  # round-robin: "wrong" is tried, rejected, failed over, routed last
            c.add("mux-put", mux.put_object(BUCKET, "m1", b"m"))
            c.add("mux-get", mux.get_object(BUCKET, "m1"))
        c.add("presign_all", mux.presign_all(BUCKET, "m1"))
        c.add("health", mux.check_health())

        # -- wrong credentials
        denied = c.raises(AccessDenied, lambda: bad_handler.get_object(BUCKET, "k1"))
        assert denied.code == "SignatureDoesNotMatch"  # type: ignore[attr-defined]
        c.raises(AccessDenied, lambda: mux.get_object(BUCKET, "k1", endpoint="wrong"))
        c.raises(AccessDenied, lambda: mux.put_object(BUCKET, "k9", b"x", endpoint="wrong"))
        unknown = kit.create_s3_endpoint_handler(access_key="nobody", secret_key=WRONG)
        c.raises(AccessDenied, lambda: unknown.list_objects(BUCKET))
        c.add("unknown-handler", unknown)
        unknown.close()

        # -- config errors and bad arguments carrying secrets nearby
        c.raises(ConfigError, lambda: kit.create_s3_endpoint_handler(secret_key=SECRET, bogus=1))
        c.raises(
            ConfigError,
            lambda: Multiplexer({"x": {"url": server.url, "secret_key": SECRET, "colour": 1}}),
        )
        c.raises(InvalidArgument, lambda: kit.create_s3_endpoint_handler("ftp://x", ACCESS, SECRET))
        c.raises(
            InvalidArgument, lambda: mux.add_endpoint("y", server.url, ACCESS, SECRET, retries=-1)
        )
        c.raises(InvalidArgument, lambda: handler.get_object(BUCKET, ""))
        c.raises(ConfigError, lambda: handler("no_such_operation"))
        c.raises(ConfigError, lambda: mux.get_object(BUCKET, "k1", strategy="nope"))
        c.raises(TypeError, lambda: __import__("pickle").dumps(mux))

        # -- the server dies: failures, breaker open, no healthy endpoint
        server.kill()
        for _ in range(FAST["circuit_breaker_threshold"]):
            c.raises(ConnectionFailed, lambda: handler.head_object(BUCKET, "k1"))
        assert handler.breaker.state == "open"
        c.raises(CircuitOpenError, lambda: handler.head_object(BUCKET, "k1"))
        for _ in range(3):
            c.raises(NoHealthyEndpoint, lambda: mux.head_object(BUCKET, "k1"))
        c.raises(NoHealthyEndpoint, lambda: guide.head_object(BUCKET, "k1"))
        c.add("health-dead", mux.check_health(timeout=1))
        time.sleep(handler.breaker.retry_after() + 0.05)
        c.raises(ConnectionFailed, lambda: handler.head_object(BUCKET, "k1"))  # a failed probe

        # -- everything s3kit shows about itself
        for label, thing in {
            "handler": handler,
            "bad_handler": bad_handler,
            "mux": mux,
            "guide": guide,
            "kit": kit,
            "kit.metadata": kit.metadata,
            "handler.config": handler.config,
            "bad_handler.config": bad_handler.config,
            "handler.metadata": handler.metadata,
            "bad_handler.metadata": bad_handler.metadata,
            "handler.transport": handler.transport,
            "mux.stats": mux.stats(),
            "guide.stats": guide.stats(),
            "guide.endpoint_handlers": guide.endpoint_handlers,
            "locate": mux.locate(BUCKET, "k1"),
        }.items():
            c.add(label, thing)
        for ep in [handler, bad_handler, *mux.endpoints.values()]:
            c.add(f"{ep.name}.stats", ep.stats().as_dict())
            c.add(f"{ep.name}.metadata", ep.metadata)
            c.add(f"{ep.name}.config", ep.config)
        for event in events:
            c.add(f"event {event.kind}", event)
            c.add(f"event {event.kind} fields", vars(event))
    finally:
        unsubscribe()
        guide.close()
        mux.close()
        handler.close()
        bad_handler.close()

    kinds = {e.kind for e in events}
    assert {"BreakerStateChanged", "EndpointMisconfigured", "FailedOver"} <= kinds, kinds
    assert any("listener" in r.getMessage() for r in caplog.records), "listener error not logged"
    s3kit_records = [r for r in caplog.records if r.name.startswith("s3kit")]
    assert s3kit_records, "nothing was logged at DEBUG"
    assert len(c.errors) >= 15
    texts = [*c.texts, *c.error_texts(), *_log_texts(s3kit_records)]
    assert not _leaks(texts), f"secret found in: {_leaks(texts)[:10]}"
    # Control: the search does find a secret where one is (the config's own fields).
    control = Collector()
    cfg = bad_handler.config
    control.add("config fields", {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
    assert _leaks(control.texts) == [("str(config fields)", WRONG), ("repr(config fields)", WRONG)]


def _leaks(texts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(where, secret) for where, text in texts for secret in SECRETS if secret in text]


@pytest.mark.timeout(30)
def test_secret_not_in_config_repr_or_dataclass_fields() -> None:
    handler = s3kit.s3_kit().create_s3_endpoint_handler(
        "http://127.0.0.1:9", ACCESS, SECRET, session_token="TOKEN" + SECRET
    )
    try:
        cfg = handler.config
        for text in (repr(cfg), str(cfg), repr(handler), repr(handler.metadata)):
            assert SECRET not in text
        assert cfg.secret_key == SECRET  # kept, just never shown
    finally:
        handler.close()
