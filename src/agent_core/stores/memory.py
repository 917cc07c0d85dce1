"""In-process store: the reference backend of the contract, and the no-argument default.

Nothing survives the process. Every value is copied on the way in and out, so callers can never
alias stored state (the reference design's dict cache handed out its own objects).
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from agent_core.codec import encode_patched, merge_patch
from agent_core.errors import ConflictError, LeaseHeld, LeaseLost, NotOpenError, SessionNotFound
from agent_core.sessions.session_models import AgentSession, Lease, SessionCheckpoint, SessionState
from agent_core.stores.base import (
    AppendResult,
    AuditRecord,
    RecordWrite,
    RetentionPolicy,
    SessionRef,
    SessionStore,
    StoredRecord,
    TierEpoch,
    bound_age,
    prefix_end,
)

__all__ = ["MemoryStore"]


def _now() -> datetime:
    """The store's clock: the OS clock, whatever clock the callers use."""
    return datetime.now(UTC)


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

    def clear_lease(self) -> None:
        self.lease_owner = None
        self.lease_expires_at = None

    def ref(self) -> SessionRef:
        head = self.head
        return SessionRef(
            head.session_id, head.version, head.agent_type, head.user_id, head.state, head.tenant
        )


@dataclass
class _Record:
    value: bytes
    session_id: str | None
    user_id: str | None
    updated_at: datetime


@dataclass
class _Scope:
    """One scope's records, with their keys kept sorted (code point order) for range reads."""

    keys: list[str] = field(default_factory=list)
    rows: dict[str, _Record] = field(default_factory=dict)

    def put(self, key: str, record: _Record) -> None:
        if key not in self.rows:
            bisect.insort(self.keys, key)
        self.rows[key] = record

    def pop(self, key: str) -> bool:
        if self.rows.pop(key, None) is None:
            return False
        del self.keys[bisect.bisect_left(self.keys, key)]
        return True

    def span(self, low: str | None, high: str | None) -> tuple[int, int]:
        """The index range of the keys ``k`` with ``low < k < high`` (``None``: unbounded)."""
        start = 0 if low is None else bisect.bisect_right(self.keys, low)
        stop = len(self.keys) if high is None else bisect.bisect_left(self.keys, high)
        return start, max(start, stop)


class MemoryStore(SessionStore):
    """Sessions in this process. ``bound_to(tenant)`` returns a store over the same data
    confined to ``tenant`` (the managers of several tenants share one ``MemoryStore``)."""

    url = "memory://"
    in_process = True

    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}
        self._epochs: dict[str, TierEpoch] = {}
        # Keyed by (tenant, namespace): every tenant has its own policies ("": untenanted).
        self._policies: dict[tuple[str, str], RetentionPolicy] = {}
        self._audit: list[AuditRecord] = []
        # tenant -> scope -> records
        self._records: dict[str, dict[str, _Scope]] = {}
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

    def _mine(self, row: _Row) -> bool:
        """Whether this store may see ``row`` (another tenant's session is unknown to it)."""
        return self.tenant is None or row.head.tenant == self.tenant

    def _find(self, session_id: str) -> _Row | None:
        """The row of ``session_id`` in any state, if this store may see it."""
        row = self._rows.get(session_id)
        return row if row is not None and self._mine(row) else None

    def _mine_all(self) -> list[_Row]:
        return [row for row in self._rows.values() if self._mine(row)]

    def _live(self, session_id: str) -> _Row:
        self._check_open()
        row = self._find(session_id)
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
        now = _now()
        head = replace(
            copy.deepcopy(session),
            checkpoints=[],
            version=1,
            checkpoint_count=0,
            created_at=now,
            updated_at=now,
            last_heartbeat=now,
            tenant=session.tenant if self.tenant is None else self.tenant,
        )
        row = _Row(head=head)
        for cp in session.checkpoints:
            self._store_checkpoint(row, cp)
        self._rows[session.session_id] = row
        return self._head(row)

    async def get(self, session_id: str, *, window: int) -> AgentSession | None:
        self._check_open()
        row = self._find(session_id)
        if row is None or row.head.state is SessionState.DELETED:
            return None
        out = copy.deepcopy(row.head)
        out.checkpoints = copy.deepcopy(row.trail[-window:]) if window > 0 else []
        return out

    async def get_version(self, session_id: str) -> int | None:
        self._check_open()
        row = self._find(session_id)
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
        now = _now()
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
        row.head.last_heartbeat = now
        if session.state is SessionState.DELETED:
            row.clear_lease()
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
        records: RecordWrite | None = None,
    ) -> AppendResult:
        row = self._live(session_id)
        now = _now()
        self._check_fence(row, fence, now)
        if idempotency_key is not None and idempotency_key in row.idempotency:
            seq = row.idempotency[idempotency_key]
            return AppendResult(copy.deepcopy(row.trail[seq - 1]), self._head(row), created=False)
        stored = self._store_checkpoint(row, checkpoint)
        if idempotency_key is not None:
            row.idempotency[idempotency_key] = len(row.trail)
        self._bump(row, now)
        if records is not None:
            self._write_records(
                records.scope,
                records.stored_items(len(row.trail)),
                session_id,
                records.user_id,
                records.keep_existing,
                now,
            )
        return AppendResult(stored, self._head(row), created=True)

    async def heartbeat(self, session_id: str, *, fence: Lease | None = None) -> AgentSession:
        row = self._live(session_id)
        now = _now()
        self._check_fence(row, fence, now)
        row.head.last_heartbeat = now
        if fence is not None and row.lease_ttl is not None:
            row.lease_expires_at = now + row.lease_ttl
        self._bump(row, now)
        return self._head(row)

    async def patch_context(
        self,
        session_id: str,
        changes: dict[str, Any],
        *,
        fence: Lease | None = None,
        max_bytes: int | None = None,
    ) -> AgentSession:
        row = self._live(session_id)
        now = _now()
        self._check_fence(row, fence, now)
        merged = merge_patch(row.head.context, copy.deepcopy(changes))
        if max_bytes is not None:
            encode_patched(merged, max_bytes)
        row.head.context = merged
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
        now = _now()
        self._check_fence(row, fence, now)
        row.head.state.check_transition(state)
        row.head.state = state
        if state is SessionState.FAILED and reason is not None:
            row.head.context = {**row.head.context, "failure_reason": reason}
        if state is SessionState.DELETED:
            row.clear_lease()
        self._bump(row, now)
        return self._head(row)

    async def delete(self, session_id: str) -> SessionRef | None:
        self._check_open()
        row = self._find(session_id)
        if row is None or row.head.state is SessionState.DELETED:
            return None
        row.head.state = SessionState.DELETED
        row.clear_lease()
        self._bump(row, _now())
        return row.ref()

    async def purge(
        self, *, session_id: str | None = None, user_id: str | None = None
    ) -> list[SessionRef]:
        self._check_open()
        if session_id is None and user_id is None:
            return []
        doomed = sorted(
            sid
            for sid, row in self._rows.items()
            if (session_id is None or sid == session_id)
            and (user_id is None or row.head.user_id == user_id)
            and self._mine(row)
        )
        self._drop_records(set(doomed), user_id if session_id is None else None)
        return [self._rows.pop(sid).ref() for sid in doomed]

    async def describe(self, session_ids: Sequence[str]) -> list[SessionRef]:
        self._check_open()
        out = []
        for sid in sorted(set(session_ids)):
            row = self._find(sid)
            if row is not None and row.head.state is not SessionState.DELETED:
                out.append(row.ref())
        return out

    # --- records ---------------------------------------------------------------------------

    def _tenant_records(self) -> dict[str, _Scope]:
        return self._records.setdefault(self.tenant or "", {})

    def _visible_tenants(self) -> list[str]:
        """The tenants whose records governance calls see: all of them without a tenant."""
        if self.tenant is None:
            return sorted(self._records)
        return [self.tenant] if self.tenant in self._records else []

    def _drop_records(self, session_ids: set[str], user_id: str | None) -> None:
        """Remove the records attached to ``session_ids`` (every tenant: a session's records
        go with it) and, if given, those of ``user_id`` (the visible tenants)."""
        if not session_ids and user_id is None:
            return
        users = set(self._visible_tenants()) if user_id is not None else set()
        for tenant, scopes in self._records.items():
            for name in list(scopes):
                bucket = scopes[name]
                doomed = [
                    key
                    for key, rec in bucket.rows.items()
                    if rec.session_id in session_ids or (tenant in users and rec.user_id == user_id)
                ]
                for key in doomed:
                    bucket.pop(key)
                if not bucket.rows:
                    del scopes[name]

    async def put_records(
        self,
        scope: str,
        items: Sequence[tuple[str, bytes]],
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        keep_existing: bool = False,
    ) -> int:
        self._check_open()
        if session_id is not None:
            self._live(session_id)
        return self._write_records(scope, items, session_id, user_id, keep_existing, _now())

    def _write_records(
        self,
        scope: str,
        items: Sequence[tuple[str, bytes]],
        session_id: str | None,
        user_id: str | None,
        keep_existing: bool,
        now: datetime,
    ) -> int:
        bucket = self._tenant_records().setdefault(scope, _Scope())
        written = 0
        for key, value in items:
            if keep_existing and key in bucket.rows:
                continue
            bucket.put(key, _Record(bytes(value), session_id, user_id, now))
            written += 1
        if not bucket.rows:
            del self._tenant_records()[scope]
        return written

    async def get_records(self, scope: str, keys: Sequence[str]) -> dict[str, bytes]:
        self._check_open()
        bucket = self._tenant_records().get(scope)
        if bucket is None:
            return {}
        return {key: bucket.rows[key].value for key in keys if key in bucket.rows}

    def _range(
        self, bucket: _Scope, prefix: str, after: str | None, before: str | None
    ) -> tuple[int, int]:
        """The index range of ``bucket.keys`` that starts with ``prefix``, after ``after`` and
        before ``before``."""
        start, stop = bucket.span(after, before)
        if prefix:
            start = max(start, bisect.bisect_left(bucket.keys, prefix))
            end = prefix_end(prefix)
            if end is not None:
                stop = min(stop, bisect.bisect_left(bucket.keys, end))
        return start, max(start, stop)

    async def list_records(
        self,
        scope: str,
        *,
        prefix: str = "",
        after: str | None = None,
        before: str | None = None,
        limit: int = 1000,
        descending: bool = False,
    ) -> list[tuple[str, bytes]]:
        self._check_open()
        bucket = self._tenant_records().get(scope)
        if bucket is None or limit <= 0:
            return []
        start, stop = self._range(bucket, prefix, after, before)
        if descending:
            keys = bucket.keys[max(start, stop - limit) : stop][::-1]
        else:
            keys = bucket.keys[start : min(stop, start + limit)]
        return [(key, bucket.rows[key].value) for key in keys]

    async def delete_records(
        self,
        scope: str,
        *,
        keys: Sequence[str] | None = None,
        prefix: str | None = None,
    ) -> int:
        self._check_open()
        scopes = self._tenant_records()
        bucket = scopes.get(scope)
        if bucket is None:
            return 0
        if keys is not None:
            doomed = list(dict.fromkeys(keys))
        else:
            start, stop = self._range(bucket, prefix or "", None, None)
            doomed = bucket.keys[start:stop]
        deleted = sum(1 for key in doomed if bucket.pop(key))
        if not bucket.rows:
            del scopes[scope]
        return deleted

    async def list_scopes(
        self, prefix: str, *, limit: int = 1000, after: str | None = None
    ) -> list[str]:
        self._check_open()
        names = sorted(
            name
            for name in self._tenant_records()
            if name.startswith(prefix) and (after is None or name > after)
        )
        return names[: max(limit, 0)]

    def _stored(self) -> Iterator[StoredRecord]:
        """Every visible record, in ``(tenant, scope, key)`` order."""
        for tenant in self._visible_tenants():
            scopes = self._records[tenant]
            for name in sorted(scopes):
                bucket = scopes[name]
                for key in bucket.keys:
                    rec = bucket.rows[key]
                    yield StoredRecord(tenant, name, key, rec.value, rec.session_id, rec.user_id)

    @staticmethod
    def _page(
        found: Iterator[StoredRecord], limit: int, after: tuple[str, str, str] | None
    ) -> list[StoredRecord]:
        out: list[StoredRecord] = []
        for rec in found:
            if after is not None and (rec.tenant, rec.scope, rec.key) <= after:
                continue
            if len(out) >= limit:
                break
            out.append(rec)
        return out

    async def list_session_records(
        self, session_id: str, *, limit: int = 100, after: tuple[str, str, str] | None = None
    ) -> list[StoredRecord]:
        self._check_open()
        found = (rec for rec in self._stored() if rec.session_id == session_id)
        return self._page(found, limit, after)

    async def list_user_records(
        self, user_id: str, *, limit: int = 100, after: tuple[str, str, str] | None = None
    ) -> list[StoredRecord]:
        self._check_open()

        def of_user(session_id: str | None) -> bool:
            row = None if session_id is None else self._rows.get(session_id)
            return row is not None and row.head.user_id == user_id

        found = (
            rec for rec in self._stored() if rec.user_id == user_id and not of_user(rec.session_id)
        )
        return self._page(found, limit, after)

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
            if not self._mine(row):
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

    async def sweep_stale(self, max_age: timedelta, *, limit: int) -> list[SessionRef]:
        self._check_open()
        now = _now()
        cutoff = now - bound_age(max_age)
        stale = sorted(
            (
                row
                for row in self._mine_all()
                if row.head.state is SessionState.ACTIVE and row.head.last_heartbeat < cutoff
            ),
            key=lambda row: row.head.last_heartbeat,
        )
        out: list[SessionRef] = []
        for row in stale[: max(limit, 0)]:
            head = row.head
            head.state = SessionState.FAILED
            head.context = {**head.context, "failure_reason": "heartbeat_timeout"}
            self._bump(row, now)
            out.append(row.ref())
        return out

    async def claim(self, session_id: str, owner: str, ttl: timedelta) -> Lease:
        row = self._live(session_id)
        now = _now()
        if row.lease_is_live(now) and row.lease_owner != owner:
            raise LeaseHeld(f"session {session_id} is leased to {row.lease_owner!r}")
        row.lease_token += 1
        row.lease_owner = owner
        row.lease_expires_at = now + ttl
        row.lease_ttl = ttl
        return Lease(session_id, owner, row.lease_token, row.lease_expires_at)

    async def renew(self, lease: Lease, ttl: timedelta) -> Lease:
        row = self._live(lease.session_id)
        now = _now()
        self._check_fence(row, lease, now)
        row.lease_expires_at = now + ttl
        row.lease_ttl = ttl
        return replace(lease, expires_at=row.lease_expires_at)

    async def release(self, lease: Lease) -> None:
        row = self._live(lease.session_id)
        self._check_fence(row, lease, _now())
        row.clear_lease()

    async def expire_leases(self, *, limit: int) -> list[Lease]:
        self._check_open()
        now = _now()
        expired = sorted(
            (
                Lease(sid, row.lease_owner, row.lease_token, row.lease_expires_at)
                for sid, row in self._rows.items()
                if self._mine(row)
                and row.lease_owner is not None
                and row.lease_expires_at is not None
                and row.lease_expires_at <= now
            ),
            key=lambda lease: lease.expires_at,
        )[: max(limit, 0)]
        for lease in expired:
            self._rows[lease.session_id].clear_lease()
        return expired

    async def current_lease(self, session_id: str) -> Lease | None:
        row = self._live(session_id)
        if not row.lease_is_live(_now()) or row.lease_owner is None:
            return None
        assert row.lease_expires_at is not None  # implied by lease_is_live
        return Lease(session_id, row.lease_owner, row.lease_token, row.lease_expires_at)

    # --- tier epochs -----------------------------------------------------------------------

    async def tier_epoch(self, namespace: str) -> TierEpoch:
        self._check_open()
        return self._epochs.setdefault(namespace, TierEpoch(0, ""))

    async def caches_in_use(self) -> bool:
        self._check_open()
        return any(epoch.cache_id for epoch in self._epochs.values())

    async def bump_tier_epoch(
        self, namespace: str | None = None, *, cache_id: str | None = None
    ) -> None:
        self._check_open()
        names = list(self._epochs) if namespace is None else [namespace]
        for name in names:
            epoch, current = self._epochs.get(name, TierEpoch(0, ""))
            self._epochs[name] = TierEpoch(epoch + 1, current if cache_id is None else cache_id)

    # --- data governance -------------------------------------------------------------------

    async def purge_aged(
        self,
        states: Sequence[SessionState],
        max_age: timedelta,
        *,
        limit: int,
        after: str | None = None,
    ) -> list[SessionRef]:
        self._check_open()
        cutoff = _now() - bound_age(max_age)
        wanted = set(states)
        doomed = sorted(
            sid
            for sid, row in self._rows.items()
            if self._mine(row)
            and row.head.state in wanted
            and (after is None or sid > after)
            and (row.head.updated_at or row.head.created_at) < cutoff
        )[: max(limit, 0)]
        self._drop_records(set(doomed), None)
        return [self._rows.pop(sid).ref() for sid in doomed]

    async def list_user_sessions(
        self, user_id: str, *, limit: int = 100, after: str | None = None
    ) -> list[AgentSession]:
        self._check_open()
        found = sorted(
            sid
            for sid, row in self._rows.items()
            if row.head.user_id == user_id and (after is None or sid > after) and self._mine(row)
        )[: max(limit, 0)]
        return [self._head(self._rows[sid]) for sid in found]

    async def list_trail(
        self, session_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[SessionCheckpoint]:
        self._check_open()
        row = self._find(session_id)
        if row is None:
            return []
        start = max(after_seq, 0)
        return copy.deepcopy(row.trail[start : start + max(limit, 0)])

    async def retention_policies(self, namespace: str | None = None) -> list[RetentionPolicy]:
        self._check_open()
        mine = self.tenant or ""
        return [
            self._policies[key]
            for key in sorted(self._policies)
            if key[0] == mine and (namespace is None or key[1] == namespace)
        ]

    async def set_retention_policy(
        self,
        namespace: str,
        *,
        deleted_days: int | None,
        terminal_days: int | None,
        actor: str,
    ) -> RetentionPolicy:
        self._check_open()
        policy = RetentionPolicy(namespace, deleted_days, terminal_days, _now(), actor)
        self._policies[self.tenant or "", namespace] = policy
        return policy

    async def append_audit(
        self,
        *,
        actor: str,
        action: str,
        namespace: str,
        user_id: str | None,
        session_count: int,
        details: dict[str, Any],
    ) -> AuditRecord:
        self._check_open()
        record = AuditRecord(
            len(self._audit) + 1,
            _now(),
            actor,
            action,
            namespace,
            user_id,
            session_count,
            copy.deepcopy(details),
            self.tenant or "",
        )
        self._audit.append(record)
        return record._replace(details=copy.deepcopy(details))

    async def list_audit(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[AuditRecord]:
        self._check_open()
        out: list[AuditRecord] = []
        for record in self._audit[max(after_id, 0) :]:
            if len(out) >= limit:
                break
            if user_id is not None and record.user_id != user_id:
                continue
            if action is not None and record.action != action:
                continue
            if self.tenant is not None and record.tenant != self.tenant:
                continue
            out.append(record._replace(details=copy.deepcopy(record.details)))
        return out
