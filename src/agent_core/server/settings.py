"""The service's settings: one frozen value, read from the environment at the edge.

Every setting has an environment variable with the ``AGENT_CORE_`` prefix (``AGENT_CORE_PORT``,
...); ``agent-core serve`` options override them. Casts are strict: a malformed value is a
``ConfigurationError`` that names the variable, never a silent default.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from agent_core import codec
from agent_core.errors import ConfigurationError
from agent_core.factory import ENV_PREFIX, hide_password

__all__ = ["DEFAULT_STORE_URL", "Settings"]

DEFAULT_STORE_URL = "sqlite:///agent-core.db"
"""The embedded default, as for the command line."""

_T = TypeVar("_T")


@dataclass(frozen=True)
class Settings:
    """What ``create_app`` and ``agent-core serve`` need; see ``docs/api.md`` for each."""

    store_url: str = DEFAULT_STORE_URL
    cache_url: str | None = None
    namespace: str = "agent_core"
    host: str = "127.0.0.1"
    port: int = 8080
    encryption_keys: str | None = field(default=None, repr=False)
    max_payload_bytes: int = codec.DEFAULT_MAX_PAYLOAD_BYTES
    """The managers' limit for one context, metadata or checkpoint value."""
    max_body_bytes: int = codec.DEFAULT_MAX_PAYLOAD_BYTES + 64 * 1024
    """Largest request body; more is a 413 before the body is parsed."""
    sse_heartbeat_s: float = 15.0
    """Seconds between two keep-alive comments on an idle event stream."""
    key_cache_s: float = 2.0
    """How long an authenticated key is trusted without reading the store again (a key revoked
    by another process stops working within this time; in this process, at once)."""
    demo: bool = False
    """Run the demo fleet in the background and create a ``demo`` admin key on start."""
    log_level: str = "info"
    secret: str | None = field(default=None, repr=False)
    """Signs the dashboard's sign-in cookies (``AGENT_CORE_SECRET``); random per process when
    unset, so a restart signs every browser out."""

    def __post_init__(self) -> None:
        _check(
            0 <= self.port < 65536, "port must be between 0 (any free port) and 65535", self.port
        )
        _check(self.max_payload_bytes >= 2, "max_payload_bytes must be at least 2")
        _check(self.max_body_bytes >= 2, "max_body_bytes must be at least 2")
        for name in ("sse_heartbeat_s", "key_cache_s"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value >= 0, f"{name} must be >= 0", value)
        _check(bool(self.store_url), "store_url must not be empty")
        _check(bool(self.namespace), "namespace must not be empty")
        _check(
            self.log_level in ("critical", "error", "warning", "info", "debug", "trace"),
            "log_level must be one of critical, error, warning, info, debug, trace",
            self.log_level,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``AGENT_CORE_<NAME>`` variables (empty counts as unset), then
        ``overrides`` (``None`` values are ignored, so unset command-line options fall
        through to the environment)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper()) or None
            if raw is not None:
                values[f.name] = _CASTS.get(f.name, _text)(raw, ENV_PREFIX + f.name.upper())
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigurationError(f"unknown settings: {', '.join(sorted(unknown))}")
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def __repr__(self) -> str:
        # URLs with their passwords hidden; the encryption keys not at all.
        shown = []
        for f in fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.name in ("store_url", "cache_url") and value is not None:
                value = hide_password(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def describe(self) -> str:
        """One line for logs: URLs with their passwords hidden."""
        cache = hide_password(self.cache_url) if self.cache_url else "none"
        return f"store {hide_password(self.store_url)}, cache {cache}, namespace {self.namespace!r}"


def _check(ok: bool, message: str, value: object = None) -> None:
    if not ok:
        raise ConfigurationError(message if value is None else f"{message}, not {value!r}")


def _text(raw: str, name: str) -> str:
    return raw


def _strict(parse: Callable[[str], _T], kind: str) -> Callable[[str, str], _T]:
    def cast(raw: str, name: str) -> _T:
        try:
            return parse(raw.strip())
        except ValueError:
            raise ConfigurationError(f"{name} must be {kind}, not {raw!r}") from None

    return cast


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _parse_int(raw: str) -> int:
    # int() accepts "1_000" and " 7"; a setting is digits only.
    if not raw.lstrip("-").isdigit():
        raise ValueError(raw)
    return int(raw)


_CASTS: dict[str, Callable[[str, str], Any]] = {
    "port": _strict(_parse_int, "an integer"),
    "max_payload_bytes": _strict(_parse_int, "an integer"),
    "max_body_bytes": _strict(_parse_int, "an integer"),
    "sse_heartbeat_s": _strict(float, "a number of seconds"),
    "key_cache_s": _strict(float, "a number of seconds"),
    "demo": _strict(_parse_bool, "true or false"),
    "log_level": _strict(str.lower, "a log level"),
}
