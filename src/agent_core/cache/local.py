"""The in-process cache tier: bounded in entries, in bytes and in time; never the source of truth.

Entries are kept encoded (the session's JSON as bytes), so no caller ever holds a reference to
what the tier keeps: every hit decodes a fresh object, and the byte bound is exact.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import NamedTuple

import orjson

from agent_core.sessions.session_models import AgentSession

__all__ = ["DEFAULT_MAX_BYTES", "LocalCache", "LocalEntry"]

DEFAULT_MAX_BYTES = 128 * 2**20
"""Default byte bound of the tier: 128 MiB of encoded sessions."""


class LocalEntry(NamedTuple):
    version: int
    expires_at: float  # time.monotonic()
    body: bytes  # AgentSession.to_dict() as JSON


def encode(session: AgentSession) -> bytes:
    return orjson.dumps(session.to_dict())


def decode(body: bytes) -> AgentSession:
    return AgentSession.from_dict(orjson.loads(body))


class LocalCache:
    """An LRU of encoded sessions with a TTL per entry.

    Holds at most ``max_entries`` sessions and ``max_bytes`` bytes of encoded sessions (the
    least recently used go first), and serves none older than ``ttl`` seconds. A session larger
    than ``max_bytes`` on its own is not kept. What it serves says nothing about freshness: the
    coherence layer checks every hit's version before handing it out.
    """

    def __init__(
        self, *, max_entries: int = 10_000, max_bytes: int = DEFAULT_MAX_BYTES, ttl: float = 60.0
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.nbytes = 0
        """Bytes of encoded sessions held now."""
        self._entries: OrderedDict[str, LocalEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, session_id: str) -> LocalEntry | None:
        """The live entry for ``session_id`` (not decoded), or ``None``."""
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        if entry.expires_at < time.monotonic():
            self.discard(session_id)
            return None
        self._entries.move_to_end(session_id)
        return entry

    def exact(self, session_id: str, version: int) -> AgentSession | None:
        """A decoded copy of the entry if it is live and at exactly ``version``."""
        entry = self.peek(session_id)
        if entry is None or entry.version != version:
            return None
        return decode(entry.body)

    def put(self, session: AgentSession) -> None:
        """Keep ``session`` (encoded) unless an entry at its version or newer is held."""
        current = self._entries.get(session.session_id)
        if current is not None and current.version >= session.version:
            return
        self.discard(session.session_id)
        body = encode(session)
        if len(body) > self.max_bytes:
            return
        self._entries[session.session_id] = LocalEntry(
            session.version, time.monotonic() + self.ttl, body
        )
        self.nbytes += len(body)
        while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= len(evicted.body)

    def discard(self, session_id: str) -> None:
        entry = self._entries.pop(session_id, None)
        if entry is not None:
            self.nbytes -= len(entry.body)

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0
