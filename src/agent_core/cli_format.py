"""What ``agent_core.cli`` and ``agent_core.demo`` share: text formatting and the options
that build a manager.

It lives apart from both so that neither imports the other: the CLI imports the demo (only when
``agent-core demo`` runs), and the demo imports these helpers, not the CLI. Together with
``agent_core.cli`` this is the only code that reads the environment.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from agent_core.errors import ConfigurationError
from agent_core.factory import ENV_PREFIX, hide_password, sqlite_path
from agent_core.models import utcnow
from agent_core.sessions.session_manager import SessionManager

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_STORE_URL",
    "env",
    "format_table",
    "human_age",
    "human_duration",
    "make_manager",
    "namespace",
    "require_existing_store",
    "store_url",
    "summarize",
]

DEFAULT_STORE_URL = "sqlite:///agent-core.db"
DEFAULT_NAMESPACE = "agent_core"

# --- text ----------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table; columns holding only numbers are right-aligned."""
    cells = [[str(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    numeric = [
        bool(rows) and all(isinstance(row[i], int | float) for row in rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


def human_duration(delta: timedelta) -> str:
    """``0.4s``, ``42s``, ``1m30s``, ``2d``: at most the two largest units."""
    seconds = max(delta.total_seconds(), 0.0)
    if seconds < 10:
        return f"{seconds:.1f}".removesuffix(".0") + "s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and len(parts) < 2:
            count = int(seconds // size)
            seconds -= count * size
            parts.append(f"{count}{unit}")
        elif parts:
            break
    return "".join(parts)


def human_age(moment: datetime, now: datetime | None = None) -> str:
    return human_duration((now or utcnow()) - moment)


def summarize(data: dict[str, Any], width: int = 60) -> str:
    """One line of compact JSON, cut to ``width`` characters."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


# --- options -------------------------------------------------------------------------------


def env(name: str) -> str | None:
    """``$AGENT_CORE_<name>``, with an empty value counting as unset."""
    return os.environ.get(ENV_PREFIX + name) or None


def store_url(args: argparse.Namespace) -> str:
    url: str | None = getattr(args, "store", None)
    return url or env("STORE_URL") or DEFAULT_STORE_URL


def namespace(args: argparse.Namespace) -> str:
    name: str = getattr(args, "namespace", None) or env("NAMESPACE") or DEFAULT_NAMESPACE
    return name


def cache_url(args: argparse.Namespace) -> str | None:
    """The shared cache URL, if any; a malformed one is a ``ConfigurationError`` that shows
    the URL with its password hidden."""
    url: str | None = getattr(args, "cache", None) or env("CACHE_URL")
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise ConfigurationError(f"bad cache URL {hide_password(url)}: {exc}") from None
    if not parts.scheme or not parts.hostname:
        raise ConfigurationError(
            f"bad cache URL {hide_password(url)}: expected e.g. valkey://host:6379/0"
        )
    return url


def require_existing_store(args: argparse.Namespace) -> None:
    """For commands that only read: a SQLite file that does not exist is an error, never a
    new empty database."""
    url = store_url(args)
    if not url.startswith("sqlite:"):
        return
    path = sqlite_path(url)
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    if not os.path.isfile(path):
        raise ConfigurationError(
            f"no store at {path}: the file does not exist"
            " (check --store or AGENT_CORE_STORE_URL; 'agent-core migrate' creates one)"
        )


def make_manager(args: argparse.Namespace, url: str | None = None) -> SessionManager:
    cache = cache_url(args)
    name = namespace(args)
    # Encryption at rest: "k2:base64,k1:base64", the first key encrypts (never a flag: keys
    # do not belong on a command line).
    keys = env("ENCRYPTION_KEYS")
    return SessionManager.from_url(
        url or store_url(args), cache_url=cache, namespace=name, encryption_keys=keys
    )
