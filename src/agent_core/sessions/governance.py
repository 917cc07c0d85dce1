"""Data governance: retention, export and erasure of a person's sessions, and their audit.

The sessions hold personal data. This module is what ``SessionManager`` delegates to for

* **retention**: a policy per namespace (stored in the store, table ``retention_policies``)
  purges soft-deleted sessions ``deleted_days`` after their deletion and completed/failed
  sessions ``terminal_days`` after their last change, by the store's clock. The reaper
  (``manager.reap()``, ``agent-core reaper``) applies it in batches; every batch is handed to
  the coherence layer exactly as ``purge`` does, so when a run returns no process can read
  what it purged, from any tier. Policies are per tenant too: a tenant-bound manager reads,
  sets and applies its tenant's policy to its tenant's sessions; an untenanted one the
  tenant ``""`` policy, to every session of the namespace.
* **export** (right of access): ``manager.export(user_id)`` yields JSON Lines, paged from the
  store, so memory stays constant whatever the size of the export.
* **audit**: every purge (by hand or by retention), export and policy change leaves one record
  (table ``audit_log``): who (``actor``), when (the store's clock), what, for which user, how
  many sessions, for which tenant. Never the content. A tenant-bound manager lists only its
  tenant's records.

The export format, one JSON object per line (UTF-8, ``\\n``-terminated):

* ``{"type": "session", "session_id", "agent_type", "user_id", "state", "created_at",
  "updated_at", "last_heartbeat", "context", "metadata", "version", "checkpoint_count"}``
  for every session of the user, in session id order, soft-deleted ones included;
* after each session line, ``{"type": "checkpoint", "session_id", "seq", "name",
  "timestamp", "data"}`` for each checkpoint of its trail, by ``seq`` (seq 1 ..
  ``checkpoint_count`` of the session line);
* after a session's trail, ``{"type": "record", "scope", "key", "value_b64", "session_id",
  "user_id"}`` for each record attached to it (``value_b64``: the value, base64), by scope and
  key (with ``"tenant"`` when the record has one);
* after the last session, the records with the user's ``user_id`` that belong to no session of
  the user, in the same form;
* last, ``{"type": "end", "user_id", "sessions", "checkpoints"}`` and ``"records"`` when
  there were any: an export without it was cut short.

An export is not one snapshot: each session line is its head when it was read, followed by its
trail up to that head (checkpoints are never rewritten, so the two agree). A session purged
while the export runs may be missing or have a shorter trail.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from agent_core import codec
from agent_core.errors import AgentCoreError, ValidationError
from agent_core.sessions import limits
from agent_core.sessions.session_models import AgentSession, SessionCheckpoint, SessionState
from agent_core.stores.base import AuditRecord, RetentionPolicy, SessionStore, StoredRecord

if TYPE_CHECKING:
    from agent_core.sessions.session_manager import SessionManager

__all__ = [
    "DEFAULT_ACTOR",
    "MAX_RETENTION_DAYS",
    "AuditRecord",
    "ReapResult",
    "RetentionPolicy",
    "RetentionResult",
    "apply_retention",
    "check_actor",
    "check_days",
    "export_user",
    "record",
    "record_line",
]

logger = logging.getLogger(__name__)

DEFAULT_ACTOR = "unspecified"
"""The actor recorded when a library call names none (the CLI names the OS user)."""

MAX_RETENTION_DAYS = 36_500
"""Retention periods are whole days, from 0 (at the next reaper round) to a hundred years."""

RETENTION_ACTOR = "reaper"

DELETED_STATES = (SessionState.DELETED,)
TERMINAL_STATES = (SessionState.COMPLETED, SessionState.FAILED)


class RetentionResult(NamedTuple):
    """What one retention run purged."""

    deleted: int
    """Soft-deleted sessions purged (``deleted_days``)."""
    terminal: int
    """Completed and failed sessions purged (``terminal_days``)."""

    @property
    def total(self) -> int:
        return self.deleted + self.terminal


class ReapResult(tuple[int, int]):
    """``(expired leases, failed sessions)`` of one reaper round, as before, with what its
    retention run purged in ``retention`` (a ``RetentionResult``)."""

    retention: RetentionResult

    def __new__(cls, expired: int, failed: int, retention: RetentionResult) -> ReapResult:
        self = super().__new__(cls, (expired, failed))
        self.retention = retention
        return self

    @property
    def expired_leases(self) -> int:
        return self[0]

    @property
    def failed_stale(self) -> int:
        return self[1]

    def __repr__(self) -> str:
        return (
            f"ReapResult(expired_leases={self[0]}, failed_stale={self[1]},"
            f" retention={self.retention!r})"
        )


# --- checks --------------------------------------------------------------------------------


def check_actor(actor: str | None) -> str:
    """The actor to record: ``actor``, or ``DEFAULT_ACTOR`` when ``None``."""
    if actor is None:
        return DEFAULT_ACTOR
    return limits.check_name(actor, "actor")


def check_days(days: int | None, what: str) -> int | None:
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int):
        raise ValidationError(f"{what} must be a whole number of days, not {days!r}")
    if not 0 <= days <= MAX_RETENTION_DAYS:
        raise ValidationError(f"{what} must be between 0 and {MAX_RETENTION_DAYS}, not {days}")
    return days


# --- audit ---------------------------------------------------------------------------------


async def record(
    manager: SessionManager,
    *,
    actor: str,
    action: str,
    user_id: str | None = None,
    session_count: int = 0,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    """Append one audit record for ``manager``'s namespace (no content, only counts)."""
    await manager.open()
    return await manager.store.append_audit(
        actor=actor,
        action=action,
        namespace=manager.namespace,
        user_id=user_id,
        session_count=session_count,
        details={} if details is None else details,
    )


# --- retention -----------------------------------------------------------------------------


class _Count:
    __slots__ = ("deleted", "terminal")

    def __init__(self) -> None:
        self.deleted = 0
        self.terminal = 0


async def apply_retention(manager: SessionManager, *, batch_size: int) -> RetentionResult:
    """Purge what ``manager.namespace``'s retention policy says is due; see the module doc."""
    limits.check_batch_size(batch_size)
    await manager.open()
    policies = await manager.store.retention_policies(manager.namespace)
    if not policies:
        return RetentionResult(0, 0)
    policy = policies[0]
    count = _Count()
    failed = True
    try:
        if policy.deleted_days is not None:
            age = timedelta(days=policy.deleted_days)
            async for purged in _purge_aged(manager, DELETED_STATES, age, batch_size):
                count.deleted += purged
        if policy.terminal_days is not None:
            age = timedelta(days=policy.terminal_days)
            async for purged in _purge_aged(manager, TERMINAL_STATES, age, batch_size):
                count.terminal += purged
        failed = False
    finally:
        if count.deleted or count.terminal:
            logger.info(
                "retention purged %d deleted and %d terminal sessions (namespace %r)",
                count.deleted,
                count.terminal,
                manager.namespace,
            )
            try:
                await record(
                    manager,
                    actor=RETENTION_ACTOR,
                    action="retention",
                    session_count=count.deleted + count.terminal,
                    details={
                        "deleted": count.deleted,
                        "terminal": count.terminal,
                        "deleted_days": policy.deleted_days,
                        "terminal_days": policy.terminal_days,
                        "policy_set_by": policy.updated_by,
                        "complete": not failed,
                    },
                )
            except AgentCoreError as exc:
                if not failed:
                    raise
                logger.error("could not record the retention run in the audit log: %s", exc)
    return RetentionResult(count.deleted, count.terminal)


async def _purge_aged(
    manager: SessionManager,
    states: Sequence[SessionState],
    max_age: timedelta,
    batch_size: int,
) -> AsyncIterator[int]:
    """Purge in batches; yields each batch's size once every tier has been told of it."""
    after: str | None = None
    while True:
        refs = await manager.store.purge_aged(states, max_age, limit=batch_size, after=after)
        # Exactly what purge() does with what it removed.
        await manager.coherence.purged(refs)
        if refs:
            yield len(refs)
        if len(refs) < batch_size:
            return
        after = refs[-1].session_id


# --- export --------------------------------------------------------------------------------


def _line(value: dict[str, Any]) -> bytes:
    return codec.dumps(value) + b"\n"


def session_line(head: AgentSession) -> bytes:
    out: dict[str, Any] = {"type": "session"}
    out.update(head.to_dict())
    del out["checkpoints"]
    return _line(out)


def checkpoint_line(session_id: str, cp: SessionCheckpoint) -> bytes:
    return _line(
        {
            "type": "checkpoint",
            "session_id": session_id,
            "seq": cp.seq,
            "name": cp.name,
            "timestamp": cp.timestamp.isoformat(),
            "data": cp.data,
        }
    )


def record_line(rec: StoredRecord) -> bytes:
    out: dict[str, Any] = {"type": "record"}
    if rec.tenant:
        out["tenant"] = rec.tenant
    out.update(
        scope=rec.scope,
        key=rec.key,
        value_b64=base64.b64encode(rec.value).decode(),
        session_id=rec.session_id,
        user_id=rec.user_id,
    )
    return _line(out)


Cursor = tuple[str, str, str]


async def _record_pages(
    fetch: Callable[..., Awaitable[list[StoredRecord]]], page_size: int
) -> AsyncIterator[StoredRecord]:
    after: Cursor | None = None
    while True:
        page = await fetch(limit=page_size, after=after)
        for rec in page:
            yield rec
        if len(page) < page_size:
            return
        last = page[-1]
        after = (last.tenant, last.scope, last.key)


def export_user(
    manager: SessionManager, user_id: str, *, actor: str | None, page_size: int
) -> AsyncGenerator[bytes, None]:
    """Validate at once, then return the export's lines (see the module doc)."""
    limits.check_name(user_id, "user_id")
    who = check_actor(actor)
    limits.check_limit(page_size)
    return _export(manager, user_id, who, page_size)


async def _export(
    manager: SessionManager, user_id: str, actor: str, page_size: int
) -> AsyncGenerator[bytes, None]:
    await manager.open()
    store = manager.store
    sessions = checkpoints = records = 0
    complete = False
    try:
        after: str | None = None
        while True:
            page = await store.list_user_sessions(user_id, limit=page_size, after=after)
            for head in page:
                # Counted as handed out: a reader that stops after this line got it.
                sessions += 1
                yield session_line(head)
                seq = 0
                # The trail up to this head: later appends belong to a later version.
                while seq < head.checkpoint_count:
                    want = min(page_size, head.checkpoint_count - seq)
                    trail = await store.list_trail(head.session_id, after_seq=seq, limit=want)
                    for cp in trail:
                        checkpoints += 1
                        yield checkpoint_line(head.session_id, cp)
                    if len(trail) < want:
                        break  # purged meanwhile
                    seq = trail[-1].seq or seq + len(trail)
                of_session = partial(store.list_session_records, head.session_id)
                async for rec in _record_pages(of_session, page_size):
                    records += 1
                    yield record_line(rec)
            if len(page) < page_size:
                break
            after = page[-1].session_id
        async for rec in _record_pages(partial(store.list_user_records, user_id), page_size):
            records += 1
            yield record_line(rec)
        complete = True
        end: dict[str, Any] = {
            "type": "end",
            "user_id": user_id,
            "sessions": sessions,
            "checkpoints": checkpoints,
        }
        if records:
            end["records"] = records
        yield _line(end)
    finally:
        # Also when the reader stops early (complete is then false): every export is recorded.
        try:
            await record(
                manager,
                actor=actor,
                action="export",
                user_id=user_id,
                session_count=sessions,
                details={
                    "checkpoints": checkpoints,
                    **({"records": records} if records else {}),
                    "complete": complete,
                },
            )
        except AgentCoreError as exc:
            if complete:
                raise
            logger.error("could not record an export of user %r in the audit log: %s", user_id, exc)


class GovernanceAPI:
    """The data-governance part of ``SessionManager``'s API (it inherits this class): export,
    audit log and retention. Each call validates, then delegates to this module."""

    namespace: str
    cleanup_batch_size: int
    store: SessionStore

    if TYPE_CHECKING:

        async def open(self) -> None: ...  # SessionManager.open

    def _manager(self) -> SessionManager:
        return cast("SessionManager", self)

    def export(
        self, user_id: str, *, actor: str | None = None, page_size: int = 100
    ) -> AsyncGenerator[bytes, None]:
        """Everything stored about ``user_id`` as JSON Lines (``bytes``, one object per line):
        each session (soft-deleted ones included) followed by its whole checkpoint trail, then
        an ``end`` line; the format is in ``agent_core.sessions.governance``.

        Read ``page_size`` sessions or checkpoints at a time, so memory does not grow with the
        export. Leaves an audit record when the iteration ends (``complete`` false if the
        reader stopped early). Use ``async for line in manager.export(user_id)``.
        """
        return export_user(self._manager(), user_id, actor=actor, page_size=page_size)

    async def audit_log(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Audit records (purges, exports, retention runs, policy changes), oldest first;
        page with ``after_id=<id of the last record of the previous page>``."""
        limits.check_limit(limit)
        await self.open()
        return await self.store.list_audit(
            user_id=user_id, action=action, after_id=after_id, limit=limit
        )

    async def retention_policy(self, namespace: str | None = None) -> RetentionPolicy:
        """The retention policy of ``namespace`` (default: this manager's); days ``None``
        (keep for ever) when none was set."""
        name = self.namespace if namespace is None else namespace
        await self.open()
        found = await self.store.retention_policies(name)
        return found[0] if found else RetentionPolicy(name)

    async def retention_policies(self) -> list[RetentionPolicy]:
        """Every namespace's stored retention policy."""
        await self.open()
        return await self.store.retention_policies()

    async def set_retention_policy(
        self,
        *,
        deleted_days: int | None,
        terminal_days: int | None,
        namespace: str | None = None,
        actor: str | None = None,
    ) -> RetentionPolicy:
        """Purge soft-deleted sessions ``deleted_days`` after deletion and completed/failed
        ones ``terminal_days`` after their last change (``None``: keep them); applied by the
        reapers of ``namespace`` (default: this manager's)."""
        name = self.namespace if namespace is None else namespace
        limits.check_name(name, "namespace")
        check_days(deleted_days, "deleted_days")
        check_days(terminal_days, "terminal_days")
        who = check_actor(actor)
        await self.open()
        policy = await self.store.set_retention_policy(
            name, deleted_days=deleted_days, terminal_days=terminal_days, actor=who
        )
        await self.store.append_audit(
            actor=who,
            action="retention_set",
            namespace=name,
            user_id=None,
            session_count=0,
            details={"deleted_days": deleted_days, "terminal_days": terminal_days},
        )
        return policy

    async def apply_retention(self, *, batch_size: int | None = None) -> RetentionResult:
        """Purge what this namespace's retention policy says is due, in batches, with the
        guarantees of ``purge``; returns how many sessions went. Part of ``reap()``."""
        limit = self.cleanup_batch_size if batch_size is None else batch_size
        return await apply_retention(self._manager(), batch_size=limit)
