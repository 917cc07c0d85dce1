"""Wiring: backends chosen by URL through one table, imported only when chosen.

Every URL scheme, the reference constructor's parts, password redaction and the hints for
missing optional drivers live here, and nowhere else.

Store URLs: ``memory://``, ``sqlite:///relative.db``, ``sqlite:////abs/path.db``,
``postgresql://user:pass@host:port/db`` (``postgres://`` too).
Cache URLs: ``valkey://``, ``valkeys://``, ``redis://``, ``rediss://`` (host, port, /db).
"""

from __future__ import annotations

import importlib
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from agent_core.errors import ConfigurationError, MissingDependency

__all__ = [
    "ENV_PREFIX",
    "bus_tier",
    "hide_password",
    "local_tier",
    "reference_parts",
    "sqlite_path",
    "store_from_url",
    "tier_from_url",
]

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
    """``url`` with its password (in the user info or a ``password=`` query parameter)
    replaced by ``***``, for logs, errors and reprs; a URL with none comes back unchanged.
    A libpq keyword DSN (``host=db password=secret``) has its ``password=`` hidden."""
    if "://" not in url:
        return re.sub(r"(?i)(password\s*=\s*)\S+", r"\1***", url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    query = parse_qsl(parts.query, keep_blank_values=True)
    secret = [key.lower() in ("password", "pass") for key, _ in query]
    if password is None and not any(secret):
        return url
    if password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if any(secret):
        hidden = [(k, "***" if s else v) for (k, v), s in zip(query, secret, strict=True)]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    return urlunsplit(parts)


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


def _store_scheme(url: str) -> str:
    # ``postgresql+asyncpg://`` names the same store as ``postgresql://``.
    return urlsplit(url).scheme.split("+", 1)[0].lower()


def store_from_url(url: str, **options: Any) -> Any:
    """Build (not open) the store a URL names. Returns a ``SessionStore``."""
    scheme = _store_scheme(url)
    if scheme not in _STORES:
        known = ", ".join(sorted(_STORES))
        raise ConfigurationError(f"unknown store URL scheme {scheme!r} (known: {known})")
    cls = _load(*_STORES[scheme])
    if scheme == "memory":
        return cls(**options)
    if scheme == "sqlite":
        return cls(sqlite_path(url), **options)
    return cls(url, **options)


def tier_from_url(
    cache_url: str | None,
    store_url: str,
    *,
    namespace: str,
    ttl: float,
    cache_options: dict[str, Any] | None = None,
) -> Any:
    """Build (not open) the shared tier: Valkey when there is a cache URL, else PostgreSQL
    LISTEN/NOTIFY for a PostgreSQL store, else the in-process bus. Returns a ``SharedTier``."""
    if cache_url is not None:
        scheme = urlsplit(cache_url).scheme
        if scheme not in _CACHE_SCHEMES:
            raise ConfigurationError(
                f"unknown cache URL scheme {scheme!r} (use valkey:// or redis://)"
            )
        tier_cls = _load("agent_core.tiers.valkey", "ValkeyTier", "valkey")
        return tier_cls.from_url(
            cache_url, namespace=namespace, ttl=ttl, cache_options=cache_options
        )
    from agent_core.tiers.notify import BusTier

    if _store_scheme(store_url) in ("postgresql", "postgres"):
        bus_cls = _load("agent_core.bus.postgres", "PostgresBus", "postgres")
        return BusTier(bus_cls(store_url, namespace=namespace))
    from agent_core.bus.local import InProcessBus

    return BusTier(InProcessBus())


def bus_tier(bus: Any) -> Any:
    """The shared tier that only carries ``bus``'s notifications (an injected ``EventBus``)."""
    from agent_core.tiers.notify import BusTier

    return BusTier(bus)


def local_tier(option: Any, store: Any, *, ttl: float) -> Any:
    """The in-process tier for ``SessionManager(local_cache=...)``: the ``LocalCache`` given,
    a default one for ``True`` (none in front of an in-process store: it would only cost
    memory), or ``None``."""
    from agent_core.cache.local import LocalCache

    if isinstance(option, LocalCache):
        return option
    if option and not store.in_process:
        return LocalCache(ttl=ttl)
    return None


def reference_parts(
    redis_client: Any, db_pool: Any, *, namespace: str, ttl: float, create_schema: bool
) -> tuple[Any, Any]:
    """The store and shared tier of the reference constructor
    ``SessionManager(redis_client=..., db_pool=...)``: injected clients, left open on close."""
    if db_pool is not None:
        store_cls = _load("agent_core.stores.postgres", "PostgresStore", "postgres")
        store = store_cls.with_pool(db_pool, create_schema=create_schema)
    else:
        from agent_core.stores.memory import MemoryStore

        store = MemoryStore()
    if redis_client is not None:
        tier_cls = _load("agent_core.tiers.valkey", "ValkeyTier", "valkey")
        return store, tier_cls.from_client(redis_client, namespace=namespace, ttl=ttl)
    from agent_core.bus.local import InProcessBus
    from agent_core.tiers.notify import BusTier

    return store, BusTier(InProcessBus())
