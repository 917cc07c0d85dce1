"""Backends chosen by URL through one table, imported only when chosen.

Store URLs: ``memory://``, ``sqlite:///relative.db``, ``sqlite:////abs/path.db``,
``postgresql://user:pass@host:port/db`` (``postgres://`` too).
Cache URLs: ``valkey://``, ``valkeys://``, ``redis://``, ``rediss://`` (host, port, /db).
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agent_core.errors import ConfigurationError, MissingDependency

__all__ = ["ENV_PREFIX", "cache_from_url", "hide_password", "store_from_url"]

ENV_PREFIX = "AGENT_CORE_"

# scheme -> (module, class, extra that provides its driver)
_STORES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("agent_core.stores.memory", "MemoryStore", None),
    "sqlite": ("agent_core.stores.sqlite", "SQLiteStore", None),
    "postgresql": ("agent_core.stores.postgres", "PostgresStore", "postgres"),
    "postgres": ("agent_core.stores.postgres", "PostgresStore", "postgres"),
}
_CACHE_SCHEMES = frozenset({"valkey", "valkeys", "redis", "rediss"})


def hide_password(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _load(module: str, name: str, extra: str | None) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except MissingDependency:
        raise
    except ImportError as exc:
        hint = f": pip install 'agent-core[{extra}]'" if extra else ""
        raise MissingDependency(f"{name} needs a driver that is not installed{hint}") from exc


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///path`` URL (three slashes: relative; four: absolute)."""
    if not url.startswith("sqlite://"):
        raise ConfigurationError(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite://") :]
    if not rest.startswith("/") or rest == "/":
        raise ConfigurationError(f"sqlite URL needs a path, like sqlite:///sessions.db: {url!r}")
    return rest[1:]


def store_from_url(url: str, **options: Any) -> Any:
    """Build (not open) the store a URL names. Returns a ``SessionStore``."""
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    if scheme not in _STORES:
        known = ", ".join(sorted(_STORES))
        raise ConfigurationError(f"unknown store URL scheme {scheme!r} (known: {known})")
    cls = _load(*_STORES[scheme])
    if scheme == "memory":
        return cls(**options)
    if scheme == "sqlite":
        return cls(sqlite_path(url), **options)
    return cls(url, **options)


def cache_from_url(url: str, *, namespace: str, **options: Any) -> Any:
    """Build (not open) the shared cache a URL names. Returns a ``ValkeyCache``."""
    scheme = urlsplit(url).scheme
    if scheme not in _CACHE_SCHEMES:
        raise ConfigurationError(f"unknown cache URL scheme {scheme!r} (use valkey:// or redis://)")
    cls = _load("agent_core.cache.valkey", "ValkeyCache", "valkey")
    return cls.from_url(url, namespace=namespace, **options)
