"""In-process store: the reference backend of the contract, and the no-argument default.

Nothing survives the process. Every value is copied on the way in and out, so callers can never
alias stored state (the reference design's dict cache handed out its own objects).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from agent_core.codec import merge_patch
from agent_core.errors import ConflictError, LeaseHeld, LeaseLost, NotOpenError, SessionNotFound
from agent_core.sessions.session_models import (
    AgentSession,
    Lease,
    SessionCheckpoint,
    SessionState,
    utcnow,
)
from agent_core.stores.base import AppendResult, SessionStore, SweptSession

__all__ = ["MemoryStore"]


@dataclass
class _Row:
    head: AgentSession
    trail: list[SessionCheckpoint] = field(default_factory=list)
    idempotency: dict[str, int] = field(default_factory=dict)
    lease_owner: str | None = None
    lease_token: int = 0
    lease_expires_at: datetime | None = None
    lease_ttl: timedelta | None = None

    def lease_is_live(self, now: datetime) -> bool:
        return (
            self.lease_owner is not None
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )


class MemoryStore(SessionStore):
    url = "memory://"

    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}
        self._open = False

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def migrate(self) -> int:
        return 1

    # --- helpers ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._open:
            raise NotOpenError("MemoryStore used before open() or after close()")

    def _live(self, session_id: str) -> _Row:
        self._check_open()
        row = self._rows.get(session_id)
        if row is None or row.head.state is SessionState.DELETED:
            raise SessionNotFound(session_id)
        return row

    @staticmethod
    def _check_fence(row: _Row, fence: Lease | None, now: datetime) -> None:
        if fence is None:
            return
        if fence.token != row.lease_token or not row.lease_is_live(now):
            raise LeaseLost(
                f"lease token {fence.token} on session {fence.session_id} is no longer live"
            )

    @staticmethod
    def _head(row: _Row) -> AgentSession:
        return replace(copy.deepcopy(row.head), checkpoints=[])

    @staticmethod
    def _bump(row: _Row, now: datetime) -> None:
        row.head.version += 1
        row.head.updated_at = now

    def _store_checkpoint(self, row: _Row, cp: SessionCheckpoint) -> SessionCheckpoint:
        stored = SessionCheckpoint(
            name=cp.name,
            timestamp=cp.timestamp,
            data=copy.deepcopy(cp.data),
            seq=len(row.trail) + 1,
        )
        row.trail.append(stored)
        row.head.checkpoint_count = len(row.trail)
        return copy.deepcopy(stored)

    # --- sessions --------------------------------------------------------------------------

    async def create(self, session: AgentSession) -> AgentSession:
        self._check_open()
        if session.session_id in self._rows:
            raise ConflictError(f"session {session.session_id} already exists")
        now = utcnow()
        head = replace(
            copy.deepcopy(session), checkpoints=[], version=1, checkpoint_count=0, updated_at=now
        )
        row = _Row(head=head)
        for cp in session.checkpoints:
            self._store_checkpoint(row, cp)
        self._rows[session.session_id] = row
        return self._head(row)

    async def get(self, session_id: str, *, window: int) -> AgentSession | None:
        self._check_open()
        row = self._rows.get(session_id)
        if row is None or row.head.state is SessionState.DELETED:
            return None
        out = copy.deepcopy(row.head)
        out.checkpoints = copy.deepcopy(row.trail[-window:]) if window > 0 else []
        return out

    async def get_version(self, session_id: str) -> int | None:
        self._check_open()
        row = self._rows.get(session_id)
        if row is None or row.head.state is SessionState.DELETED:
            return None
        return row.head.version

    async def update(
        self,
        session: AgentSession,
        new_checkpoints: Sequence[SessionCheckpoint],
        *,
        fence: Lease | None = None,
    ) -> AgentSession:
        row = self._live(session.session_id)
        now = utcnow()
        self._check_fence(row, fence, now)
        if row.head.version != session.version:
            raise ConflictError(
                f"session {session.session_id} is at version {row.head.version}, "
                f"the update was based on version {session.version}"
            )
        if session.state is not row.head.state:
            row.head.state.check_transition(session.state)
        row.head.state = session.state
        row.head.context = copy.deepcopy(session.context)
        row.head.metadata = copy.deepcopy(session.metadata)
        row.head.last_heartbeat = session.last_heartbeat
        for cp in new_checkpoints:
            self._store_checkpoint(row, cp)
        self._bump(row, now)
        return self._head(row)

    async def append_checkpoint(
        self,
        session_id: str,
        checkpoint: SessionCheckpoint,
        *,
        idempotency_key: str | None = None,
        fence: Lease | None = None,
    ) -> AppendResult:
        row = self._live(session_id)
        now = utcnow()
        self._check_fence(row, fence, now)
        if idempotency_key is not None and idempotency_key in row.idempotency:
            seq = row.idempotency[idempotency_key]
            return AppendResult(copy.deepcopy(row.trail[seq - 1]), self._head(row), created=False)
        stored = self._store_checkpoint(row, checkpoint)
        if idempotency_key is not None:
            row.idempotency[idempotency_key] = len(row.trail)
        self._bump(row, now)
        return AppendResult(stored, self._head(row), created=True)

    async def heartbeat(
        self, session_id: str, at: datetime, *, fence: Lease | None = None
    ) -> AgentSession:
        row = self._live(session_id)
        self._check_fence(row, fence, at)
        row.head.last_heartbeat = at
        if fence is not None and row.lease_ttl is not None:
            row.lease_expires_at = at + row.lease_ttl
        self._bump(row, utcnow())
        return self._head(row)

    async def patch_context(
        self, session_id: str, changes: dict[str, Any], *, fence: Lease | None = None
    ) -> AgentSession:
        row = self._live(session_id)
        now = utcnow()
        self._check_fence(row, fence, now)
        row.head.context = merge_patch(row.head.context, copy.deepcopy(changes))
        self._bump(row, now)
        return self._head(row)

    async def set_state(
        self,
        session_id: str,
        state: SessionState,
        *,
        reason: str | None = None,
        fence: Lease | None = None,
    ) -> AgentSession:
        row = self._live(session_id)
        now = utcnow()
        self._check_fence(row, fence, now)
        row.head.state.check_transition(state)
        row.head.state = state
        if state is SessionState.FAILED and reason is not None:
            row.head.context = {**row.head.context, "failure_reason": reason}
        self._bump(row, now)
        return self._head(row)

    async def delete(self, session_id: str) -> bool:
        self._check_open()
        row = self._rows.get(session_id)
        if row is None or row.head.state is SessionState.DELETED:
            return False
        row.head.state = SessionState.DELETED
        row.lease_owner = None
        self._bump(row, utcnow())
        return True

    async def purge(self, *, session_id: str | None = None, user_id: str | None = None) -> int:
        self._check_open()
        if session_id is None and user_id is None:
            return 0
        doomed = [
            sid
            for sid, row in self._rows.items()
            if (session_id is None or sid == session_id)
            and (user_id is None or row.head.user_id == user_id)
        ]
        for sid in doomed:
            del self._rows[sid]
        return len(doomed)

    # --- listing ---------------------------------------------------------------------------

    async def list_checkpoints(
        self, session_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[SessionCheckpoint]:
        row = self._live(session_id)
        start = max(after_seq, 0)
        return copy.deepcopy(row.trail[start : start + max(limit, 0)])

    async def list_sessions(
        self,
        *,
        state: SessionState | None = SessionState.ACTIVE,
        agent_type: str | None = None,
        user_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[AgentSession]:
        self._check_open()
        out: list[Any] = []
        for sid in sorted(self._rows):
            row = self._rows[sid]
            head = row.head
            if after is not None and sid <= after:
                continue
            if head.state is SessionState.DELETED:
                continue
            if state is not None and head.state is not state:
                continue
            if agent_type is not None and head.agent_type != agent_type:
                continue
            if user_id is not None and head.user_id != user_id:
                continue
            out.append(self._head(row))
            if len(out) >= limit:
                break
        return out

    # --- liveness --------------------------------------------------------------------------

    async def sweep_stale(self, cutoff: datetime, *, limit: int) -> list[SweptSession]:
        self._check_open()
        now = utcnow()
        out: list[SweptSession] = []
        for row in self._rows.values():
            if len(out) >= limit:
                break
            head = row.head
            if head.state is SessionState.ACTIVE and head.last_heartbeat < cutoff:
                head.state = SessionState.FAILED
                head.context = {**head.context, "failure_reason": "heartbeat_timeout"}
                self._bump(row, now)
                out.append(
                    SweptSession(
                        head.session_id, head.version, head.agent_type, head.user_id, head.state
                    )
                )
        return out

    async def claim(self, session_id: str, owner: str, ttl: timedelta) -> Lease:
        row = self._live(session_id)
        now = utcnow()
        if row.lease_is_live(now) and row.lease_owner != owner:
            raise LeaseHeld(f"session {session_id} is leased to {row.lease_owner!r}")
        row.lease_token += 1
        row.lease_owner = owner
        row.lease_expires_at = now + ttl
        row.lease_ttl = ttl
        return Lease(session_id, owner, row.lease_token, row.lease_expires_at)

    async def renew(self, lease: Lease, ttl: timedelta) -> Lease:
        row = self._live(lease.session_id)
        now = utcnow()
        self._check_fence(row, lease, now)
        row.lease_expires_at = now + ttl
        row.lease_ttl = ttl
        return replace(lease, expires_at=row.lease_expires_at)

    async def release(self, lease: Lease) -> None:
        row = self._live(lease.session_id)
        self._check_fence(row, lease, utcnow())
        row.lease_owner = None
        row.lease_expires_at = None

    async def expire_leases(self, now: datetime, *, limit: int) -> list[Lease]:
        self._check_open()
        out: list[Any] = []
        for sid, row in self._rows.items():
            if len(out) >= limit:
                break
            if (
                row.lease_owner is not None
                and row.lease_expires_at is not None
                and row.lease_expires_at <= now
            ):
                out.append(Lease(sid, row.lease_owner, row.lease_token, row.lease_expires_at))
                row.lease_owner = None
                row.lease_expires_at = None
        return out

    async def current_lease(self, session_id: str) -> Lease | None:
        row = self._live(session_id)
        if not row.lease_is_live(utcnow()) or row.lease_owner is None:
            return None
        assert row.lease_expires_at is not None  # implied by lease_is_live
        return Lease(session_id, row.lease_owner, row.lease_token, row.lease_expires_at)
