"""The cache contract. A cache is never the source of truth: it only saves reads.

Every entry carries the session ``version``. A cache never replaces an entry with an older
version, and ``invalidate`` leaves a *tombstone* at the new version so that a slow reader who
loaded an older copy from the store cannot put it back afterwards. Deleted sessions leave a
tombstone that refuses every version.

Implementations raise ``CacheUnavailable`` for any failure of their backend; the manager logs
it, counts it and carries on from the store, so a cache failure never fails a call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from agent_core.resource import AsyncResource
from agent_core.sessions.session_models import AgentSession

__all__ = ["DELETED_VERSION", "SessionCache"]

DELETED_VERSION = 2**62
"""Tombstone version of a deleted session: newer than any version a session can reach."""


class SessionCache(AsyncResource, ABC):
    name: str = "cache"

    @abstractmethod
    async def get(self, session_id: str) -> AgentSession | None:
        """The cached session, or ``None`` on a miss or a tombstone.

        The caller may mutate what it gets back at the top level (its ``context``,
        ``metadata`` and ``checkpoints`` containers) without changing the cache.
        """

    @abstractmethod
    async def set(self, session: AgentSession) -> None:
        """Cache ``session`` unless a newer entry or tombstone, or an entry at its own
        version, exists (a tombstone at its own version only says that version committed)."""

    @abstractmethod
    async def invalidate(self, session_id: str, version: int) -> None:
        """Drop any older entry and leave a tombstone at ``version`` (``DELETED_VERSION`` when
        the session was deleted): only a ``set`` of that version or a newer one is accepted."""

    async def invalidate_many(self, items: Sequence[tuple[str, int]]) -> None:
        """``invalidate`` each ``(session_id, version)``; backends send them in one go."""
        for session_id, version in items:
            await self.invalidate(session_id, version)

    @abstractmethod
    async def clear(self) -> None:
        """Forget every entry of this cache's namespace."""
