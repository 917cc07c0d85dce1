"""The Valkey shared tier: the versioned session cache and the event channel as one.

When the cache and the bus talk to the same server (always, when built from one URL), a
change's cache write and its event travel as one script call (``WRITE_SCRIPT``): one command
per change, and the write and its announcement succeed or fail together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Self

from agent_core.bus.base import EventBus, SessionEvent
from agent_core.bus.valkey import ValkeyBus
from agent_core.cache.valkey import CacheWrite, ValkeyCache
from agent_core.crypto import Sealer
from agent_core.sessions.session_models import AgentSession
from agent_core.tiers.base import Change, SharedTier

__all__ = ["ValkeyTier"]


class ValkeyTier(SharedTier):
    """``cache`` and ``bus`` on Valkey; both are opened and closed with the tier."""

    caches = True

    def __init__(self, cache: ValkeyCache, bus: ValkeyBus) -> None:
        self.cache = cache
        self._bus = bus
        self._together = bus.shares_server_with(cache)
        self.fill_deadline = cache.tombstone_ttl / 2

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str,
        ttl: float,
        cache_options: dict[str, Any] | None = None,
        bus_options: dict[str, Any] | None = None,
    ) -> Self:
        cache = ValkeyCache.from_url(url, namespace=namespace, ttl=ttl, **(cache_options or {}))
        # Freshness does not ride on event delivery (readers check versions), so the bus need
        # not wait for subscribers' copies to leave the server.
        options = {"fence": False, **(bus_options or {})}
        return cls(cache, ValkeyBus.from_url(url, namespace=namespace, **options))

    @classmethod
    def from_client(cls, client: Any, *, namespace: str, ttl: float) -> Self:
        """A tier on an injected redis-py / valkey-py asyncio client (left open on close)."""
        cache = ValkeyCache(client, namespace=namespace, ttl=ttl)
        return cls(cache, ValkeyBus(client, namespace=namespace, fence=False))

    def use_sealer(self, sealer: Sealer) -> None:
        self.cache.sealer = sealer

    @property
    def bus(self) -> EventBus:
        return self._bus

    async def open(self) -> None:
        await self.cache.open()
        try:
            await self._bus.open()
        except BaseException:
            await self.cache.close()
            raise

    async def close(self) -> None:
        try:
            await self._bus.close()
        finally:
            await self.cache.close()

    async def announce(self, events: Sequence[SessionEvent], *, wait: bool = True) -> None:
        if events:
            await self._bus.publish_many(events, fenced=wait)

    def _write(self, change: Change, epoch: int) -> CacheWrite:
        if change.entry is not None:
            return self.cache.entry_write(change.entry, epoch)
        if change.head is not None:
            return self.cache.step_write(
                change.head,
                change.appended,
                change.window,
                epoch,
                keeps_context=change.keeps_context,
            )
        return self.cache.tombstone_write(change.session_id, change.version, epoch)

    async def commit(
        self, changes: Sequence[Change], events: Sequence[SessionEvent], epoch: int
    ) -> None:
        writes = [self._write(change, epoch) for change in changes]
        if not events:
            await self.cache.write_many(writes)
        elif self._together:
            await self._bus.publish_many(events, writes=writes)
        else:
            # Two servers: both round trips in flight at once; either failure is reported.
            results = await asyncio.gather(
                self.cache.write_many(writes),
                self._bus.publish_many(events),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def get(self, session_id: str, epoch: int) -> AgentSession | None:
        return await self.cache.get(session_id, epoch)

    async def header(self, session_id: str) -> tuple[int, int] | None:
        return await self.cache.header(session_id)

    async def fill(self, session: AgentSession, epoch: int) -> None:
        await self.cache.set(session, epoch)

    async def identity(self) -> str:
        return await self.cache.server_id()

    async def clear(self) -> None:
        await self.cache.clear()
