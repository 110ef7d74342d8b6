"""Configuration files: one TOML schema for the ``s3kit`` command and ``Multiplexer.from_config``.

The file is found by an explicit path, then the ``S3KIT_CONFIG`` environment variable, then
``./s3kit.toml``::

    [defaults]                      # any endpoint option, for every endpoint
    read_timeout = 15

    [multiplexer]                   # Multiplexer keywords
    strategy = "least-loaded"

    [endpoints.primary]             # the table's name is the endpoint's name
    url = "https://s3.eu-west-1.amazonaws.com"
    access_key = "${PRIMARY_ACCESS_KEY}"   # ${VAR} is read from the environment
    secret_key = "${PRIMARY_SECRET_KEY}"   # or: profile = "prod" (an AWS profile)
    max_concurrent = 16             # any endpoint option

Every problem raises :class:`ConfigError` naming the file, the dotted key and what was expected;
an unset ``${VAR}`` names the variable. Values never appear in errors or reprs for secrets, and
values that came from the environment never appear at all.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._config import EndpointConfig, make_config
from ._errors import ConfigError, InvalidArgument
from ._routing import STRATEGIES

if TYPE_CHECKING:
    from ._mux import Multiplexer

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_FILE",
    "ConfigSpec",
    "EndpointSpec",
    "find_config",
    "load_config",
    "multiplexer_from_config",
]

CONFIG_ENV = "S3KIT_CONFIG"
DEFAULT_CONFIG_FILE = "s3kit.toml"

_SECRETS = frozenset({"access_key", "secret_key", "session_token"})
_CREDENTIALS = ("access_key", "secret_key")
_URL_KEYS = ("url", "endpoint_url")
_TABLES = ("defaults", "multiplexer", "endpoints")
# Multiplexer.add_endpoint takes these three as keywords with defaults 5/5/3 and lets a
# multiplexer default win over an explicit value equal to that signature default, so they are
# always passed per endpoint (already merged) rather than as multiplexer defaults.
_SIGNATURE_OPTIONS = ("max_concurrent", "circuit_breaker_threshold", "retries")
_NOT_MUX_KEYWORDS = frozenset({"self", "endpoints", "clock"})
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR_REF = re.compile(r"\$(\$?)\{([^}]*)(\}?)")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_PROBE_URL = "http://s3kit-config.invalid"


# ------------------------------------------------------------------------------ the result
@dataclasses.dataclass(frozen=True, repr=False)
class EndpointSpec:
    """One ``[endpoints.NAME]`` table, variables substituted, validated. Secrets kept out of repr.

    ``options`` are the endpoint's own options merged over ``[defaults]`` (credentials apart).
    """

    name: str
    url: str
    access_key: str | None
    secret_key: str | None
    options: Mapping[str, Any]

    def as_kwargs(self) -> dict[str, Any]:
        """The mapping ``Multiplexer(endpoints={name: ...})`` takes for this endpoint."""
        kwargs: dict[str, Any] = {"url": self.url, **self.options}
        if self.access_key is not None:
            kwargs["access_key"] = self.access_key
        if self.secret_key is not None:
            kwargs["secret_key"] = self.secret_key
        return kwargs

    def __repr__(self) -> str:
        creds = "yes" if self.access_key is not None else "no"
        return (
            f"EndpointSpec(name={self.name!r}, url={self.url!r}, keys={creds}, "
            f"options={_masked(self.options)})"
        )


@dataclasses.dataclass(frozen=True, repr=False)
class ConfigSpec:
    """A loaded configuration file. Build a multiplexer with :meth:`build`.

    Pickling a ``ConfigSpec`` stores only the file's path: the file (and the environment) is read
    again on unpickling, so no secret is ever pickled.
    """

    path: str
    defaults: Mapping[str, Any]
    multiplexer: Mapping[str, Any]
    endpoints: Mapping[str, EndpointSpec]
    abspath: str = ""

    def multiplexer_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``Multiplexer(...)``; ``overrides`` replace ``[multiplexer]``."""
        defaults = {k: v for k, v in self.defaults.items() if k not in _SIGNATURE_OPTIONS}
        return {
            "endpoints": {name: ep.as_kwargs() for name, ep in self.endpoints.items()},
            **self.multiplexer,
            **defaults,
            **overrides,
        }

    def build(self, **overrides: Any) -> Multiplexer:
        """A new :class:`Multiplexer` for this configuration (no network call)."""
        from ._mux import Multiplexer

        try:
            return Multiplexer(**self.multiplexer_kwargs(**overrides))
        except (InvalidArgument, ConfigError) as exc:
            raise ConfigError(f"{self.path}: {exc}") from None

    def __repr__(self) -> str:
        return (
            f"ConfigSpec(path={self.path!r}, endpoints={list(self.endpoints)}, "
            f"multiplexer={dict(self.multiplexer)!r}, defaults={_masked(self.defaults)})"
        )

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (load_config, (self.abspath or self.path,))


def _masked(options: Mapping[str, Any]) -> str:
    shown = {k: ("***" if k in _SECRETS and v is not None else v) for k, v in options.items()}
    return repr(shown)


# ---------------------------------------------------------------------------- public API
def find_config(path: str | os.PathLike[str] | None = None) -> str:
    """The configuration file to read: ``path``, else ``$S3KIT_CONFIG``, else ``./s3kit.toml``."""
    if path is not None:
        chosen = os.path.expanduser(os.fspath(path))
        origin = ""
    elif os.environ.get(CONFIG_ENV):
        chosen = os.path.expanduser(os.environ[CONFIG_ENV])
        origin = f" (from {CONFIG_ENV})"
    elif os.path.isfile(DEFAULT_CONFIG_FILE):
        return DEFAULT_CONFIG_FILE
    else:
        raise ConfigError(
            f"no s3kit configuration file: give a path (--config), set {CONFIG_ENV}, or create "
            f"./{DEFAULT_CONFIG_FILE}"
        )
    if os.path.isdir(chosen):
        raise ConfigError(f"{chosen}: is a directory, expected a TOML file{origin}")
    if not os.path.isfile(chosen):
        raise ConfigError(f"{chosen}: configuration file not found{origin}")
    return chosen


def load_config(path: str | os.PathLike[str] | None = None) -> ConfigSpec:
    """Find, read and validate a configuration file (no network call).

    Raises :class:`ConfigError` naming the file, the dotted key and what was expected.
    """
    found = find_config(path)
    return _Loader(found).load(_read_toml(found))


def multiplexer_from_config(
    path: str | os.PathLike[str] | None = None, **overrides: Any
) -> Multiplexer:
    """``Multiplexer.from_config``: load the file and build a multiplexer from it.

    ``overrides`` are Multiplexer keywords that replace the file's ``[multiplexer]`` values.
    """
    return load_config(path).build(**overrides)


# ------------------------------------------------------------------------------- reading
def _read_toml(path: str) -> dict[str, Any]:
    try:
        toml: Any = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
    except ImportError:  # pragma: no cover - Python 3.10 without tomli
        raise ConfigError(
            f"{path}: reading TOML on Python {sys.version_info[0]}.{sys.version_info[1]} needs "
            "the tomli package (pip install tomli)"
        ) from None
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (line {line})") from None
    try:
        parsed: dict[str, Any] = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parsed


def _dotted(prefix: str, name: str) -> str:
    """``prefix.name``, with ``name`` quoted as TOML would need it (``endpoints."my store"``)."""
    part = name if _BARE_KEY.fullmatch(name) else json.dumps(name)
    return f"{prefix}.{part}" if prefix else part


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def _matches(hint: Any, value: object) -> bool:
    """Whether a TOML value fits a type hint (unknown hints accept anything)."""
    if hint is Any or hint is object:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(_matches(arg, value) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is not None:
        if not isinstance(origin, type):
            return True  # an annotation we cannot check here: the constructor validates it
        args = typing.get_args(hint)
        if issubclass(origin, Mapping):
            if not isinstance(value, dict):
                return False
            if len(args) == 2:
                return all(_matches(args[0], k) and _matches(args[1], v) for k, v in value.items())
            return True
        if issubclass(origin, Sequence) and origin is not str:
            if not isinstance(value, list):
                return False
            return not args or all(_matches(args[0], v) for v in value)
        hint = origin
    if isinstance(hint, type):
        try:
            return isinstance(value, hint)
        except TypeError:  # a protocol: a file's values (str, int, table…) are never one
            return False
    return True  # an annotation we cannot check here: the constructor validates it


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        parts = [_describe(a) for a in typing.get_args(hint) if a is not type(None)]
        parts = [p for p in parts if p]
        return " or ".join(dict.fromkeys(parts))
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if origin is not None and isinstance(origin, type):
        args = typing.get_args(hint)
        if issubclass(origin, Mapping):
            if len(args) == 2 and args[1] is str:
                return "a table of strings"
            return "a table"
        if issubclass(origin, Sequence):
            if args and args[0] is str:
                return "an array of strings"
            return "an array"
    if isinstance(hint, type) and hint.__module__ != "builtins":
        return ""  # an object (a Router, a Clock): not something a file can give
    return getattr(hint, "__name__", str(hint))


def _option_hints() -> dict[str, Any]:
    """Endpoint options (any field of EndpointConfig but the name, URL and keys) → type."""
    hints = typing.get_type_hints(EndpointConfig)
    skip = {"name", "endpoint_url", *_CREDENTIALS}
    return {
        f.name: hints.get(f.name, Any)
        for f in dataclasses.fields(EndpointConfig)
        if f.name not in skip
    }


def _multiplexer_hints() -> dict[str, Any]:
    """Multiplexer keywords a file may set (the constructor's, minus endpoints and clock)."""
    from ._mux import Multiplexer

    init = Multiplexer.__init__
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # an annotation only importable for type checkers
        hints = {}
    keywords: dict[str, Any] = {}
    for name, param in inspect.signature(init).parameters.items():
        if name in _NOT_MUX_KEYWORDS or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        keywords[name] = hints.get(name, Any)
    return keywords


def _problem(exc: InvalidArgument | ConfigError) -> str:
    """The part of a validation message after "invalid argument 'x': "."""
    text = str(exc)
    if isinstance(exc, InvalidArgument):
        _, _, rest = text.partition(": ")
        return rest or text
    return text


# ------------------------------------------------------------------------------- loading
class _Loader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.options = _option_hints()
        self.from_env: set[str] = set()  # dotted keys whose value came from ${VAR}

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}")

    # ${VAR} substitution, in every string of the file (tables and arrays included)
    def expand(self, value: Any, key: str) -> Any:
        if isinstance(value, str):
            return self.expand_str(value, key)
        if isinstance(value, dict):
            return {k: self.expand(v, _dotted(key, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return value

    def expand_str(self, text: str, key: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            escaped, name, closed = match.groups()
            if escaped:  # $${NAME} is a literal ${NAME}
                return "${" + name + closed
            if not closed or not _VAR_NAME.fullmatch(name):
                raise self.error(
                    key, "expected ${NAME} (letters, digits and _) to read an environment variable"
                )
            value = os.environ.get(name)
            if value is None:
                raise self.error(key, f"environment variable {name} is not set")
            self.from_env.add(key)
            return value

        return _VAR_REF.sub(substitute, text)

    def table(self, value: object, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table ([{key}]), got {_type_name(value)}")
        return value

    def check_type(self, key: str, value: object, hint: Any, name: str) -> None:
        if not _matches(hint, value):
            expected = _describe(hint) or "a value this file cannot express"
            got = _type_name(value)
            if name not in _SECRETS and key not in self.from_env and isinstance(value, str):
                got += f" {value!r}"
            raise self.error(key, f"expected {expected}, got {got}")

    def unknown(self, key: str, names: list[str], valid: list[str], hint: str = "") -> ConfigError:
        listed = ", ".join(_dotted(key, n) for n in names)
        return self.error(
            "",
            f"unknown key{'s' if len(names) > 1 else ''} {listed}{hint}; "
            f"expected one of: {', '.join(valid)}",
        )

    def option(self, key: str, name: str, value: Any) -> None:
        """Check one endpoint option on its own, so an error names exactly this key."""
        self.check_type(key, value, self.options[name], name)
        if name in _SECRETS:
            return
        try:
            make_config(_PROBE_URL, **{name: value})
        except (InvalidArgument, ConfigError) as exc:
            raise self.error(key, self.problem(key, value, exc)) from None

    def problem(self, key: str, value: object, exc: InvalidArgument | ConfigError) -> str:
        """A validation message, with a value read from the environment blanked out."""
        text = _problem(exc)
        if key in self.from_env and isinstance(value, str) and value:
            text = text.replace(repr(value), "<from environment>")
            text = text.replace(value, "<from environment>")
        return text

    def load(self, data: dict[str, Any]) -> ConfigSpec:
        unknown = [k for k in data if k not in _TABLES]
        if unknown:
            raise self.unknown("", unknown, [f"[{t}]" for t in _TABLES])
        data = {name: self.expand(value, name) for name, value in data.items()}
        defaults = self.load_defaults(data.get("defaults", {}))
        multiplexer = self.load_multiplexer(data.get("multiplexer", {}))
        endpoints_table = self.table(data.get("endpoints", {}), "endpoints")
        if not endpoints_table:
            raise self.error("endpoints", "expected at least one [endpoints.NAME] table")
        endpoints = {
            name: self.load_endpoint(name, table, defaults)
            for name, table in endpoints_table.items()
        }
        return ConfigSpec(
            path=self.path,
            defaults=MappingProxyType(defaults),
            multiplexer=MappingProxyType(multiplexer),
            endpoints=MappingProxyType(endpoints),
            abspath=os.path.abspath(self.path),
        )

    def load_defaults(self, value: object) -> dict[str, Any]:
        table = self.table(value, "defaults")
        valid = [*_CREDENTIALS, *self.options]
        unknown = [k for k in table if k not in valid]
        if unknown:
            raise self.unknown("defaults", unknown, valid)
        for name, item in table.items():
            key = _dotted("defaults", name)
            if name in _CREDENTIALS:
                self.check_type(key, item, str, name)
            else:
                self.option(key, name, item)
        try:  # the options together (e.g. backoff_cap_s >= backoff_base_s)
            make_config(_PROBE_URL, **{k: v for k, v in table.items() if k not in _CREDENTIALS})
        except (InvalidArgument, ConfigError) as exc:
            arg = _argument(exc)
            key = _dotted("defaults", arg) if arg in table else "defaults"
            raise self.error(key, self.problem(key, table.get(arg), exc)) from None
        return dict(table)

    def load_multiplexer(self, value: object) -> dict[str, Any]:
        table = self.table(value, "multiplexer")
        hints = _multiplexer_hints()
        unknown = [k for k in table if k not in hints]
        if unknown:
            raise self.unknown("multiplexer", unknown, list(hints))
        for name, item in table.items():
            key = _dotted("multiplexer", name)
            self.check_type(key, item, hints[name], name)
            if name == "strategy" and item not in STRATEGIES:
                raise self.error(key, f"expected one of {', '.join(STRATEGIES)}, got {item!r}")
            if name == "health_interval" and not item > 0:
                raise self.error(key, f"expected a number of seconds > 0, got {item!r}")
        return dict(table)

    def load_endpoint(self, name: str, value: object, defaults: dict[str, Any]) -> EndpointSpec:
        base = _dotted("endpoints", name)
        if not name:
            raise self.error(base, "an endpoint name must not be empty")
        table = self.table(value, base)
        valid = [*_URL_KEYS, *_CREDENTIALS, *self.options]
        unknown = [k for k in table if k not in valid]
        if unknown:
            hint = " (the table's name is the endpoint's name)" if "name" in unknown else ""
            raise self.unknown(base, unknown, valid, hint)
        url_keys = [k for k in _URL_KEYS if k in table]
        if not url_keys:
            raise self.error(
                _dotted(base, "url"), "missing: expected the endpoint's http(s):// URL"
            )
        if len(url_keys) > 1:
            raise self.error(base, "give url or endpoint_url, not both")
        url_key = _dotted(base, url_keys[0])
        url = table[url_keys[0]]
        self.check_type(url_key, url, str, "url")
        try:
            make_config(url)
        except (InvalidArgument, ConfigError) as exc:
            raise self.error(url_key, self.problem(url_key, url, exc)) from None
        creds: dict[str, str | None] = {}
        for cred in _CREDENTIALS:
            if cred in table:
                self.check_type(_dotted(base, cred), table[cred], str, cred)
            creds[cred] = table.get(cred, defaults.get(cred))
        if (creds["access_key"] is None) != (creds["secret_key"] is None):
            raise self.error(base, "expected both access_key and secret_key, or neither")
        own = {k: v for k, v in table.items() if k in self.options}
        for option, item in own.items():
            self.option(_dotted(base, option), option, item)
        merged = {
            **{k: v for k, v in defaults.items() if k not in _CREDENTIALS},
            **own,
        }
        try:  # the options together (e.g. backoff_cap_s >= backoff_base_s)
            make_config(url, name=name, **merged)
        except (InvalidArgument, ConfigError) as exc:
            arg = _argument(exc)
            if arg in own:
                key = _dotted(base, arg)
            elif arg in defaults:
                key = _dotted("defaults", arg)
            else:
                key = base
            raise self.error(key, self.problem(key, merged.get(arg), exc)) from None
        return EndpointSpec(
            name=name,
            url=url,
            access_key=creds["access_key"],
            secret_key=creds["secret_key"],
            options=MappingProxyType(merged),
        )


def _argument(exc: InvalidArgument | ConfigError) -> str:
    return getattr(exc, "argument", "") or ""
