"""``TenantHub``: API keys in, one tenant-bound ``SessionManager`` per tenant out.

The HTTP routes and the dashboard use exactly two calls: ``authenticate(key) -> Principal``
and ``manager_for(tenant) -> SessionManager``. The hub owns every manager it made: it opens
them on first use and closes them in ``close()``.

Tenancy: each tenant gets its own ``SessionManager(tenant=...)``, which sees only that
tenant's sessions (docs/tenancy.md: an explicit filter in every store, row-level security on
PostgreSQL as well). The un-tenanted manager (``admin()``) keeps the API keys.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from agent_core.resource import AsyncResource
from agent_core.server.keys import (
    ApiKeys,
    AuthenticationError,
    Principal,
    check_tenant,
    hash_key,
    well_formed,
)
from agent_core.server.settings import Settings
from agent_core.sessions.session_manager import SessionManager

__all__ = ["ManagerFactory", "TenantHub"]

logger = logging.getLogger(__name__)

ManagerFactory = Callable[[str | None], Awaitable[SessionManager]]
"""Builds (not opens) a manager bound to a tenant, or un-tenanted for ``None``."""

_KEY_CACHE_SIZE = 10_000


class TenantHub(AsyncResource):
    def __init__(
        self,
        factory: ManagerFactory,
        *,
        key_cache_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._key_cache_s = key_cache_s
        self._clock = clock
        self._admin: SessionManager | None = None
        self._managers: dict[str, SessionManager] = {}
        self._lock = asyncio.Lock()
        # sha256 of a key -> (principal, monotonic expiry); bounded, oldest out first.
        self._key_cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> TenantHub:
        """A hub whose managers come from the settings' URLs (each owns its connections)."""

        async def make(tenant: str | None) -> SessionManager:
            options: dict[str, Any] = {
                "cache_url": settings.cache_url,
                "namespace": settings.namespace,
                "encryption_keys": settings.encryption_keys,
                "max_payload_bytes": settings.max_payload_bytes,
            }
            if tenant is not None:
                options["tenant"] = tenant
            return SessionManager.from_url(settings.store_url, **options)

        return cls(make, key_cache_s=settings.key_cache_s)

    # --- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        await self.admin()

    async def close(self) -> None:
        async with self._lock:
            managers = list(self._managers.values())
            if self._admin is not None:
                managers.append(self._admin)
            self._managers.clear()
            self._admin = None
        for manager in dict.fromkeys(managers):  # the admin may serve every tenant
            try:
                await manager.close()
            except Exception:
                logger.exception("closing a manager failed")

    async def admin(self) -> SessionManager:
        """The un-tenanted manager (it sees every tenant): API keys, admin tasks."""
        if self._admin is None:
            async with self._lock:
                if self._admin is None:
                    manager = await self._factory(None)
                    await manager.open()
                    self._admin = manager
        return self._admin

    @property
    def keys(self) -> ApiKeys:
        if self._admin is None:
            raise RuntimeError("open the hub before using its keys")
        return ApiKeys(self._admin)

    # --- the two calls -------------------------------------------------------------------

    async def authenticate(self, key: str) -> Principal:
        """The principal of a live API key; ``AuthenticationError`` otherwise."""
        if not well_formed(key):
            raise AuthenticationError("missing, unknown or revoked API key")
        return await self.authenticate_digest(hash_key(key))

    async def authenticate_digest(self, digest: str) -> Principal:
        """``authenticate`` by the key's SHA-256 (hex), which is what a dashboard cookie keeps
        instead of the key; ``AuthenticationError`` for an unknown or revoked key."""
        now = self._clock()
        cached = self._key_cache.get(digest)
        if cached is not None and cached[1] > now:
            self._key_cache.move_to_end(digest)
            return cached[0]
        await self.admin()
        found = await self.keys.find_digest(digest)
        if found is None:
            self._key_cache.pop(digest, None)
            raise AuthenticationError("missing, unknown or revoked API key")
        principal = Principal(found.tenant, found.role, found.key_id)
        if self._key_cache_s > 0:
            self._key_cache[digest] = (principal, now + self._key_cache_s)
            self._key_cache.move_to_end(digest)
            while len(self._key_cache) > _KEY_CACHE_SIZE:
                self._key_cache.popitem(last=False)
        return principal

    def forget_key(self, key_id: str) -> None:
        """Stop trusting a cached key at once (after revoking it in this process)."""
        for digest in [d for d, (p, _) in self._key_cache.items() if p.key_id == key_id]:
            del self._key_cache[digest]

    async def manager_for(self, tenant: str) -> SessionManager:
        """The (open) manager bound to ``tenant``, made on first use."""
        check_tenant(tenant)
        manager = self._managers.get(tenant)
        if manager is not None:
            return manager
        async with self._lock:
            manager = self._managers.get(tenant)
            if manager is None:
                manager = await self._factory(tenant)
                await manager.open()
                self._managers[tenant] = manager
        return manager

    def managers(self) -> list[SessionManager]:
        """Every open manager (for metrics)."""
        out = list(self._managers.values())
        if self._admin is not None and self._admin not in out:
            out.append(self._admin)
        return out
