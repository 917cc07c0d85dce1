"""The in-process cache tier: bounded in entries and in time, never the source of truth."""

from __future__ import annotations

import time
from collections import OrderedDict

from agent_core.cache.base import SessionCache
from agent_core.sessions.session_models import AgentSession

__all__ = ["LocalCache"]


def _clone(session: AgentSession) -> AgentSession:
    """A copy with fresh top-level containers, without re-running ``__init__`` (hot path)."""
    clone = object.__new__(AgentSession)
    clone.__dict__.update(session.__dict__)
    clone.context = dict(session.context)
    clone.metadata = dict(session.metadata)
    clone.checkpoints = list(session.checkpoints)
    return clone


class LocalCache(SessionCache):
    """An LRU of sessions with a TTL per entry.

    Holds at most ``max_entries`` sessions (tombstones included) and serves none older than
    ``ttl`` seconds. ``get`` hands out a copy whose top-level containers are fresh, so a caller
    adding checkpoints or context keys does not change the cached entry.
    """

    name = "local"

    def __init__(self, *, max_entries: int = 10_000, ttl: float = 60.0) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.ttl = ttl
        # session_id -> (version, expires_at monotonic, session or None for a tombstone)
        self._entries: OrderedDict[str, tuple[int, float, AgentSession | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, session_id: str) -> AgentSession | None:
        """Synchronous ``get``: the manager's hot path uses it to skip an await."""
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        _, expires_at, session = entry
        if session is None:
            return None
        if expires_at < time.monotonic():
            del self._entries[session_id]
            return None
        self._entries.move_to_end(session_id)
        return _clone(session)

    def exact(self, session_id: str, version: int) -> AgentSession | None:
        """The cached session itself (not a copy; do not mutate it) if it is live and at
        exactly ``version``, else ``None``."""
        entry = self._entries.get(session_id)
        if entry is None or entry[0] != version or entry[1] < time.monotonic():
            return None
        return entry[2]

    def put(self, session: AgentSession) -> None:
        entry = self._entries.get(session.session_id)
        # A tombstone at this very version only says the version is committed: fill it.
        if entry is not None and (
            entry[0] > session.version or (entry[0] == session.version and entry[2] is not None)
        ):
            return
        self._store(session.session_id, session.version, _clone(session))

    def drop(self, session_id: str, version: int) -> None:
        entry = self._entries.get(session_id)
        # An entry at this version or newer already reflects the change being announced.
        if entry is not None and entry[0] >= version:
            return
        self._store(session_id, version, None)

    def _store(self, session_id: str, version: int, session: AgentSession | None) -> None:
        self._entries[session_id] = (version, time.monotonic() + self.ttl, session)
        self._entries.move_to_end(session_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get(self, session_id: str) -> AgentSession | None:
        return self.peek(session_id)

    async def set(self, session: AgentSession) -> None:
        self.put(session)

    async def invalidate(self, session_id: str, version: int) -> None:
        self.drop(session_id, version)

    async def clear(self) -> None:
        self._entries.clear()
