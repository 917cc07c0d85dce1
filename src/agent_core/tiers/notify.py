"""A shared tier that only notifies: PostgreSQL LISTEN/NOTIFY, or the in-process bus.

It caches nothing, so the in-process tier of a manager on it checks every hit against the
store's version (one indexed read).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from agent_core.bus.base import EventBus, SessionEvent
from agent_core.errors import CacheUnavailable
from agent_core.logthrottle import LogThrottle
from agent_core.tiers.base import SharedTier

__all__ = ["BusTier"]

logger = logging.getLogger(__name__)
_throttled = LogThrottle(logger)


class BusTier(SharedTier):
    """Notifications over ``bus``; opens and closes the bus unless ``owns_bus`` is False."""

    def __init__(self, bus: EventBus, *, owns_bus: bool = True) -> None:
        self._bus = bus
        self._owns_bus = owns_bus

    @property
    def bus(self) -> EventBus:
        return self._bus

    async def open(self) -> None:
        await self._bus.open()

    async def close(self) -> None:
        if self._owns_bus:
            await self._bus.close()

    async def announce(self, events: Sequence[SessionEvent], *, wait: bool = True) -> None:
        if not events:
            return
        try:
            await self._bus.publish_many(events, fenced=wait)
        except CacheUnavailable:
            if wait:
                raise
            _throttled.warning("dropped", "dropped %d events: the bus is unavailable", len(events))
