"""Session models: pure dataclasses, lifecycle rules and serialization. No I/O.

A leaf module: it imports nothing of agent-core but ``agent_core.errors`` (itself a leaf), so
stores, caches, the bus and the manager can all depend on it without import cycles, and
importing it never loads any of them. ``agent_core.sessions.session_models`` re-exports it.

``to_dict()`` / ``from_dict()`` keep the reference design's shapes (ISO-8601 timestamps, the
state as its string value), so stored data and callers written for it keep working; the fields
agent-core adds (``version``, ``updated_at``, ``checkpoint_count``, ``seq``, ``tenant``) are
optional on input, and ``tenant`` is written only when set.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from agent_core.errors import InvalidTransition, ValidationError

__all__ = [
    "AgentSession",
    "Lease",
    "SessionCheckpoint",
    "SessionState",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: Any) -> datetime:
    if type(value) is str:
        parsed = datetime.fromisoformat(value)
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise ValidationError(f"expected an ISO-8601 timestamp, got {value!r}")
    tz = parsed.tzinfo
    if tz is UTC:
        return parsed
    # Naive timestamps from the reference design were written as UTC.
    return parsed.replace(tzinfo=UTC) if tz is None else parsed.astimezone(UTC)


class SessionState(StrEnum):
    """Lifecycle of a session. ``deleted`` is a soft delete, hidden from reads."""

    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    DELETED = "deleted"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    def can_become(self, target: SessionState) -> bool:
        return target in _ALLOWED[self]

    def check_transition(self, target: SessionState) -> None:
        """Raise ``InvalidTransition`` unless ``self -> target`` is allowed."""
        if target not in _ALLOWED[self]:
            raise InvalidTransition(f"a {self.value} session cannot become {target.value}")


_TERMINAL = frozenset({SessionState.COMPLETED, SessionState.FAILED, SessionState.DELETED})
_ALLOWED: dict[SessionState, frozenset[SessionState]] = {
    SessionState.ACTIVE: frozenset(
        {SessionState.PAUSED, SessionState.COMPLETED, SessionState.FAILED, SessionState.DELETED}
    ),
    SessionState.PAUSED: frozenset(
        {SessionState.ACTIVE, SessionState.COMPLETED, SessionState.FAILED, SessionState.DELETED}
    ),
    SessionState.COMPLETED: frozenset({SessionState.DELETED}),
    SessionState.FAILED: frozenset({SessionState.DELETED}),
    SessionState.DELETED: frozenset(),
}


@dataclass
class SessionCheckpoint:
    """One named step of a session's audit trail.

    ``seq`` is the checkpoint's position in its session (1, 2, 3, ... dense); it is ``None`` until
    the checkpoint has been stored.
    """

    name: str
    timestamp: datetime = field(default_factory=utcnow)
    data: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "timestamp": self.timestamp.isoformat(),
            "data": self.data,
        }
        if self.seq is not None:
            out["seq"] = self.seq
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionCheckpoint:
        # Hot path of every cached read: fill the fields directly instead of via __init__.
        cp = object.__new__(cls)
        cp.name = data["name"]
        cp.timestamp = _parse_time(data["timestamp"])
        cp.data = dict(data.get("data") or {})
        cp.seq = data.get("seq")
        return cp


@dataclass(frozen=True)
class Lease:
    """The right of one owner to drive a session until ``expires_at``.

    ``token`` is the fencing token: it grows with every claim of the session, and a write that
    carries a token other than the session's newest is rejected with ``LeaseLost``.
    """

    session_id: str
    owner: str
    token: int
    expires_at: datetime


@dataclass
class AgentSession:
    """One agent run: who runs it, its state, its context and its checkpoint trail.

    ``checkpoints`` holds a bounded window of the most recent checkpoints when the session was
    read from a store (``checkpoint_count`` is the length of the whole trail); checkpoints added
    with ``checkpoint()`` and not stored yet have ``seq is None``. ``version`` is 0 until the
    session is first stored and grows by one with every committed change.
    """

    agent_type: str
    user_id: str = ""
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: SessionState = SessionState.ACTIVE
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime | None = None
    last_heartbeat: datetime = field(default_factory=utcnow)
    context: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[SessionCheckpoint] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    checkpoint_count: int = 0
    tenant: str = ""
    """The tenant that owns the session (``""``: none). Set by a tenant-bound manager when it
    creates the session; a tenant-bound manager treats every other tenant's session as
    unknown."""

    def __post_init__(self) -> None:
        if self.updated_at is None:
            self.updated_at = self.created_at
        if not isinstance(self.state, SessionState):
            self.state = SessionState(self.state)

    # --- lifecycle -------------------------------------------------------------------------

    def checkpoint(self, name: str, data: dict[str, Any] | None = None) -> SessionCheckpoint:
        """Add a checkpoint to the trail; it is stored by the next ``update_session``."""
        if not isinstance(name, str) or not name:
            raise ValidationError("checkpoint name must be a non-empty string")
        cp = SessionCheckpoint(name=name, data=dict(data or {}))
        self.checkpoints.append(cp)
        return cp

    def heartbeat(self) -> None:
        self.last_heartbeat = utcnow()

    def _become(self, target: SessionState) -> None:
        self.state.check_transition(target)
        self.state = target

    def pause(self) -> None:
        self._become(SessionState.PAUSED)

    def resume(self) -> None:
        self._become(SessionState.ACTIVE)

    def complete(self, result: dict[str, Any] | None = None) -> None:
        self._become(SessionState.COMPLETED)
        if result is not None:
            self.context["result"] = result

    def fail(self, reason: str = "") -> None:
        self._become(SessionState.FAILED)
        self.context["failure_reason"] = reason

    @property
    def pending_checkpoints(self) -> list[SessionCheckpoint]:
        """Checkpoints added since the session was read, in order."""
        return [cp for cp in self.checkpoints if cp.seq is None]

    # --- serialization ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "session_id": self.session_id,
            "agent_type": self.agent_type,
            "user_id": self.user_id,
            "state": self.state.value,
            "created_at": self.created_at.isoformat(),
            "updated_at": (self.updated_at or self.created_at).isoformat(),
            "last_heartbeat": self.last_heartbeat.isoformat(),
            "context": self.context,
            "checkpoints": [cp.to_dict() for cp in self.checkpoints],
            "metadata": self.metadata,
            "version": self.version,
            "checkpoint_count": self.checkpoint_count,
        }
        # Only when set, so the reference design's format is unchanged for untenanted data.
        if self.tenant:
            out["tenant"] = self.tenant
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentSession:
        checkpoints = [SessionCheckpoint.from_dict(cp) for cp in data.get("checkpoints") or []]
        created_at = _parse_time(data["created_at"])
        updated = data.get("updated_at")
        return cls(
            session_id=data["session_id"],
            agent_type=data["agent_type"],
            user_id=data.get("user_id") or "",
            state=SessionState(data.get("state", SessionState.ACTIVE.value)),
            created_at=created_at,
            updated_at=_parse_time(updated) if updated else created_at,
            last_heartbeat=_parse_time(data.get("last_heartbeat") or created_at),
            context=dict(data.get("context") or {}),
            checkpoints=checkpoints,
            metadata=dict(data.get("metadata") or {}),
            version=int(data.get("version", 0)),
            checkpoint_count=int(data.get("checkpoint_count", len(checkpoints))),
            tenant=data.get("tenant") or "",
        )
