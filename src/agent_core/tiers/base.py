"""The shared-tier contract: what the processes sharing one store share besides it.

Every shared tier carries *notifications*: session events that reach the listeners of every
process (``SessionManager.events()``). Some tiers also *cache* session entries (``caches`` is
True: Valkey); their entries are versioned and written by compare-and-set, so no write ever
replaces a newer version, and each entry is tagged with the store's *tier epoch*
(``SessionStore.tier_epoch``): readers trust only entries of the epoch they know, so bumping the
epoch in the store invalidates every entry at once.

Implementations: ``tiers.valkey.ValkeyTier`` (cache + pub/sub as one) and
``tiers.notify.BusTier`` (notifications only, over PostgreSQL LISTEN/NOTIFY or in-process).
Every one passes ``tests/contract/test_tiers.py``. A failure of the tier's backend raises
``CacheUnavailable``; the coherence layer (``tiers.coherence``) decides what it means.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

from agent_core.bus.base import EventBus, SessionEvent
from agent_core.crypto import Sealer
from agent_core.resource import AsyncResource
from agent_core.sessions.session_models import AgentSession, SessionCheckpoint

__all__ = ["Change", "SharedTier"]


class Change(NamedTuple):
    """What a committed write did to one session, for a caching tier: it now stands at
    ``version`` (``DELETED_VERSION`` once deleted or purged). With ``entry`` (that very
    version, windowed), the tier may keep it. With ``head`` (the head at ``version``) and
    ``appended`` (the checkpoints that change added), the change is one *step* from the
    version before: a tier holding exactly that version may advance its entry by it (keeping
    the last ``window`` checkpoints; with ``keeps_context``, the step left ``context`` and
    ``metadata`` as they were, so they need not travel). Otherwise the tier leaves a tombstone
    at ``version``."""

    session_id: str
    version: int
    entry: AgentSession | None = None
    head: AgentSession | None = None
    appended: tuple[SessionCheckpoint, ...] = ()
    window: int = 0
    keeps_context: bool = False


class SharedTier(AsyncResource, ABC):
    """Notifications, and optionally a versioned cache, shared by every process of a store."""

    caches: bool = False
    """True when the tier keeps session entries (``get``/``header``/``fill`` do something)."""

    fill_deadline: float = float("inf")
    """Seconds after which a store read is too old to be offered to ``fill``: a tombstone it
    raced may have expired by then (half a tombstone's life)."""

    def use_sealer(self, sealer: Sealer) -> None:
        """Encrypt what this tier keeps outside the process (``agent_core.crypto``); a tier that
        keeps no session data has nothing to encrypt."""

    @property
    @abstractmethod
    def bus(self) -> EventBus:
        """The bus that event streams subscribe to."""

    @abstractmethod
    async def announce(self, events: Sequence[SessionEvent], *, wait: bool = True) -> None:
        """Send ``events`` to every process's listeners, in order. With ``wait``, return once
        they are sent and raise ``CacheUnavailable`` if they could not be; without, return at
        once (a failure is logged and the events are lost: events are at most once)."""

    async def commit(
        self, changes: Sequence[Change], events: Sequence[SessionEvent], epoch: int
    ) -> None:
        """After committed writes: apply every change to the cache (tombstone or entry, tagged
        with ``epoch``) and announce ``events`` (none, or one per change), as one command where
        the backend allows. Raises ``CacheUnavailable`` when it may not all have happened."""
        await self.announce(events)

    async def get(self, session_id: str, epoch: int) -> AgentSession | None:
        """The cached entry of ``epoch`` (a fresh object), or ``None``."""
        return None

    async def header(self, session_id: str) -> tuple[int, int] | None:
        """``(version, epoch)`` of what the cache holds for the session (entry or tombstone),
        or ``None`` when it holds nothing: the cheap freshness check of an in-process entry."""
        return None

    async def fill(self, session: AgentSession, epoch: int) -> None:
        """Offer ``session``, just read from the store, to the cache (compare-and-set)."""

    async def identity(self) -> str:
        """Who the cache is: a value that changes when its server restarts ('' for none)."""
        return ""

    async def clear(self) -> None:
        """Forget every cached entry of this tier's namespace."""
