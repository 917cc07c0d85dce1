"""The in-process cache tier: bounded in entries, in bytes and in time; never the source of truth.

Entries are kept encoded (the head and each checkpoint as JSON bytes), so no caller ever holds a
reference to what the tier keeps: every hit decodes a fresh object, and the byte bound is exact.
An append advances an entry by encoding only the new head and checkpoint.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import orjson

from agent_core.sessions.session_models import AgentSession, SessionCheckpoint

__all__ = ["DEFAULT_MAX_BYTES", "LocalCache", "LocalEntry", "decode"]

DEFAULT_MAX_BYTES = 128 * 2**20
"""Default byte bound of the tier: 128 MiB of encoded sessions."""


class LocalEntry(NamedTuple):
    version: int
    expires_at: float  # time.monotonic()
    head: bytes  # AgentSession.to_dict() without checkpoints, as JSON
    checkpoints: tuple[bytes, ...]  # each SessionCheckpoint.to_dict() as JSON, oldest first
    nbytes: int


def _entry(version: int, expires_at: float, head: bytes, cps: tuple[bytes, ...]) -> LocalEntry:
    return LocalEntry(version, expires_at, head, cps, len(head) + sum(map(len, cps)))


def _dumps(value: object) -> bytes:
    # orjson returns its bytes in a buffer of at least 4 KiB; a copy of the exact size keeps
    # the tier's memory what ``nbytes`` says (10,000 sessions held 840 MiB instead of 70).
    return memoryview(orjson.dumps(value)).tobytes()


def _encode_head(session: AgentSession) -> bytes:
    data = session.to_dict()
    data["checkpoints"] = []
    return _dumps(data)


def decode(entry: LocalEntry) -> AgentSession:
    """A new session object from ``entry``: nothing of it is shared with the tier."""
    data = orjson.loads(entry.head)
    data["checkpoints"] = orjson.loads(b"[" + b",".join(entry.checkpoints) + b"]")
    return AgentSession.from_dict(data)


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

    def put(self, session: AgentSession) -> None:
        """Keep ``session`` (encoded) unless an entry at its version or newer is held."""
        current = self._entries.get(session.session_id)
        if current is not None and current.version >= session.version:
            return
        cps = tuple(_dumps(cp.to_dict()) for cp in session.checkpoints)
        self._keep(session.session_id, session.version, _encode_head(session), cps)

    def advance(
        self, head: AgentSession, appended: Sequence[SessionCheckpoint], window: int
    ) -> bool:
        """If the tier holds the version just before ``head``, keep ``head.version`` as that
        entry's checkpoints plus ``appended`` (the last ``window``) under ``head``'s fields,
        without decoding the entry. Returns whether it did."""
        entry = self.peek(head.session_id)
        if entry is None or entry.version != head.version - 1:
            return False
        cps = entry.checkpoints + tuple(_dumps(cp.to_dict()) for cp in appended)
        self._keep(head.session_id, head.version, _encode_head(head), cps[-window:])
        return True

    def _keep(self, session_id: str, version: int, head: bytes, cps: tuple[bytes, ...]) -> None:
        self.discard(session_id)
        entry = _entry(version, time.monotonic() + self.ttl, head, cps)
        if entry.nbytes > self.max_bytes:
            return
        self._entries[session_id] = entry
        self.nbytes += entry.nbytes
        while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= evicted.nbytes

    def discard(self, session_id: str) -> None:
        entry = self._entries.pop(session_id, None)
        if entry is not None:
            self.nbytes -= entry.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0
