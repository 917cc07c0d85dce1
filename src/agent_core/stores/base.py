"""The store contract: the durable source of truth behind one protocol.

Every backend (memory, SQLite, PostgreSQL) implements ``SessionStore`` and passes the one
behaviour suite in ``tests/contract``. Values handed to a store are already validated by the
manager (ids are canonical UUID strings, contexts are JSON objects within the size limit); the
store's job is atomicity, durability and the precise outcome of every write.

Rules every implementation follows:

* Each write method is one transaction. It either commits and returns, or raises and changes
  nothing. A broken connection or a timeout raises ``StoreUnavailable``; driver exceptions never
  escape.
* ``version`` grows by exactly one with every committed change of a session, including appends
  and heartbeats. ``checkpoint_count`` is the number of stored checkpoints; checkpoint ``seq``
  numbers are dense, ``1..checkpoint_count``, and a stored checkpoint is never rewritten.
* Deleted sessions (state ``deleted``) are invisible: reads return ``None`` or an empty page and
  writes raise ``SessionNotFound``. They stay stored for audit until purged.
* A lease is *live* while its token is the session's newest fencing token, it has not been
  released, and ``expires_at`` is in the future. A write that carries ``fence`` (a ``Lease``)
  commits only while that lease is live; otherwise it raises ``LeaseLost`` and changes nothing.
  Writes without a fence are not checked against leases (they are the operator's path).
* Session rows returned by write methods are *heads*: every field is current, but
  ``checkpoints`` is empty (``checkpoint_count`` is set). Reads that return a session fill
  ``checkpoints`` with at most ``window`` most recent checkpoints, oldest first.
* One clock: every instant the store stamps or compares (``created_at``, ``updated_at`` and
  ``last_heartbeat`` of heads, lease expiry, fence liveness, the stale-sweep cutoff) comes from
  the *store's* clock, never the caller's: PostgreSQL's ``now()``, or for SQLite and memory
  the OS clock read by the store module itself. Processes whose clocks disagree therefore
  agree on staleness and expiry. Only checkpoint timestamps are stored as the caller gave them.
* Events need identities: ``delete``, ``purge``, ``sweep_stale`` and ``describe`` report each
  session they touch as a ``SessionRef`` (id, version, agent type, user, state; no context).
* Tier epochs are a per-namespace counter (with the id of the cache that last bumped it) that
  lets a shared cache invalidate every entry of a namespace at once.
* Cost: appending a checkpoint and reading a session are O(1) in the length of the trail.
* Tenants: a store whose ``tenant`` is set (by the manager, before ``open()``) is confined to
  that tenant's sessions. Every other tenant's session is exactly an unknown id to it: reads
  return ``None`` or leave it out, writes raise ``SessionNotFound``, and lists, sweeps, purges,
  lease expiry, retention and the audit log only ever see (and touch) its own tenant's rows.
  Sessions it creates belong to its tenant. With ``tenant`` ``None`` a store sees every
  tenant's sessions, and the rows it creates belong to ``session.tenant``.
* Records are opaque byte values under ``(tenant, scope, key)``, for what the session model
  lacks (framework checkpoints and blobs, items, app state, API keys). The tenant is always
  ``self.tenant or ""``. Keys and scopes compare by code point (Python's string order). A
  record may name a session (``session_id``) and a user (``user_id``): purging the session, or
  the user, erases it, and ``export`` lists it. Records never pass through the cache tiers.
"""

from __future__ import annotations

import copy
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from agent_core.crypto import Sealer
from agent_core.errors import ConfigurationError
from agent_core.resource import AsyncResource
from agent_core.sessions.session_models import AgentSession, Lease, SessionCheckpoint, SessionState

__all__ = [
    "AppendResult",
    "AuditRecord",
    "RecordWrite",
    "RetentionPolicy",
    "SessionRef",
    "SessionStore",
    "StoredRecord",
    "SweptSession",
    "TierEpoch",
    "check_tenant",
    "prefix_end",
]


SEQ_KEY_DIGITS = 16
"""How many digits the seq prefix of a ``RecordWrite(key_prefix_seq=True)`` key has."""


@dataclass(frozen=True)
class RecordWrite:
    """Records written by ``append_checkpoint`` in the transaction that appends the checkpoint.

    ``items`` are ``(key, value)`` pairs of ``scope``, attached to the appended session (a purge
    of it erases them) and to ``user_id``; ``keep_existing`` is ``put_records``'s
    insert-if-absent. With ``key_prefix_seq``, each key is stored as ``f"{seq:016d}{key}"``,
    ``seq`` being the seq of the appended checkpoint: keys that sort in append order and that
    the caller derives from the returned checkpoint, in one round trip.
    """

    scope: str
    items: Sequence[tuple[str, bytes]]
    keep_existing: bool = False
    user_id: str | None = None
    key_prefix_seq: bool = False

    def stored_key(self, key: str, seq: int) -> str:
        """The key ``key`` is stored under when the checkpoint got ``seq``."""
        return f"{seq:0{SEQ_KEY_DIGITS}d}{key}" if self.key_prefix_seq else key

    def stored_items(self, seq: int) -> list[tuple[str, bytes]]:
        """``items`` with their stored keys, for a checkpoint that got ``seq``."""
        return [(self.stored_key(key, seq), value) for key, value in self.items]


@dataclass(frozen=True)
class AppendResult:
    """The stored checkpoint, and the session head after the append."""

    checkpoint: SessionCheckpoint
    session: AgentSession
    created: bool
    """False when an idempotency key matched an earlier append: nothing new was stored."""


class SessionRef(NamedTuple):
    """A session's identity at one version: what telling caches and listeners about a change
    takes, without reading the context back.

    ``version`` and ``state`` are the session's after the write that reported it (for
    ``purge``: the last ones before removal).
    """

    session_id: str
    version: int
    agent_type: str
    user_id: str
    state: SessionState
    tenant: str = ""


SweptSession = SessionRef
"""The former name of ``SessionRef``."""


class TierEpoch(NamedTuple):
    """A namespace's tier epoch: a counter every bump raises, and the id of the cache that
    set it last (``""`` when none did)."""

    epoch: int
    cache_id: str


class RetentionPolicy(NamedTuple):
    """How long a namespace keeps finished sessions (``None``: for ever).

    ``deleted_days``: soft-deleted sessions are purged that many days after their deletion;
    ``terminal_days``: completed and failed sessions that many days after their last change.
    """

    namespace: str
    deleted_days: int | None = None
    terminal_days: int | None = None
    updated_at: datetime | None = None
    updated_by: str = ""


class AuditRecord(NamedTuple):
    """One governance action (a purge, an export, a retention run), never its content."""

    id: int
    at: datetime
    actor: str
    action: str
    namespace: str
    user_id: str | None
    session_count: int
    details: dict[str, Any]
    tenant: str = ""


class StoredRecord(NamedTuple):
    """One record with what it is attached to, as ``export`` lists it."""

    tenant: str
    scope: str
    key: str
    value: bytes
    session_id: str | None
    user_id: str | None


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix`` (by code
    point), or ``None`` when there is none (an empty prefix, or only U+10FFFF characters).

    ``prefix <= s < prefix_end(prefix)`` is exactly ``s.startswith(prefix)``, a range that an
    index on ``s`` serves.
    """
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return None
    last = ord(stripped[-1]) + 1
    if last == 0xD800:
        last = 0xE000  # surrogates are never stored
    return stripped[:-1] + chr(last)


# Ages beyond this are clamped: "older than a thousand years" already means nothing (or, for
# a negative age, everything), and the cutoff stays inside every backend's timestamp range.
_AGE_LIMIT = timedelta(days=365_250)


# A tenant name is also written into SQL as a literal (tenant-bound stores prepare their own
# statements with it), so it must never hold a quote, a backslash or a space.
_TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_tenant(tenant: str) -> str:
    """``tenant`` if it is a valid tenant name (1 to 64 of ``A-Z a-z 0-9 _ . -``, starting with
    a letter or digit); else ``ConfigurationError``."""
    if not isinstance(tenant, str) or _TENANT_NAME.fullmatch(tenant) is None:
        raise ConfigurationError(
            f"tenant {tenant!r} is not a valid tenant name: 1 to 64 characters of"
            " A-Z a-z 0-9 _ . -, starting with a letter or a digit"
        )
    return tenant


def bound_age(max_age: timedelta) -> timedelta:
    """``max_age`` clamped to plus or minus a thousand years, so that ``now - max_age`` is a
    valid timestamp in every backend."""
    return min(max(max_age, -_AGE_LIMIT), _AGE_LIMIT)


class SessionStore(AsyncResource, ABC):
    """Durable storage of sessions, their checkpoint trail and their leases."""

    in_process: bool = False
    """True when the data lives in this process only (an in-process cache tier would only
    cost memory in front of it)."""

    # Encryption at rest (``agent_core.crypto``): set by the manager before ``open()``; a store
    # that keeps data out of the process seals context, metadata, checkpoint data and record
    # values with it.
    sealer: Sealer | None = None

    url: str = ""
    """The store's URL with any password hidden (for logs and ``repr``)."""

    tenant: str | None = None
    """The tenant this store is confined to (``None``: every tenant); set before ``open()``,
    through ``bound_to``. Records are kept under ``tenant or ""``."""

    def bound_to(self, tenant: str) -> SessionStore:
        """This store confined to ``tenant``, for a tenant-bound manager: the store itself
        (``tenant`` is set on it; ``ConfigurationError`` if it is bound to another tenant
        already). A store that keeps its data in this object returns a new
        store over the same data instead, so managers of several tenants can share it."""
        check_tenant(tenant)
        if self.tenant == tenant:
            return self
        if self.tenant is not None:
            raise ConfigurationError(f"{self!r} is bound to tenant {self.tenant!r}, not {tenant!r}")
        if self.in_process:
            twin = copy.copy(self)
            twin.tenant = tenant
            return twin
        self.tenant = tenant
        return self

    # --- lifecycle -------------------------------------------------------------------------

    @abstractmethod
    async def open(self) -> None:
        """Connect (or open the file) and apply pending migrations unless disabled.

        Raises ``StoreUnavailable`` when the backend cannot be reached.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release what ``open`` acquired. An injected pool or connection is left open."""

    @abstractmethod
    async def migrate(self) -> int:
        """Apply pending schema migrations; return the schema version now in place.

        Idempotent, and safe when several processes call it at once.
        """

    # --- sessions --------------------------------------------------------------------------

    @abstractmethod
    async def create(self, session: AgentSession) -> AgentSession:
        """Insert ``session`` with version 1 and its checkpoints as seq 1..n.

        ``created_at``, ``updated_at`` and ``last_heartbeat`` are stamped with the store's
        clock (the values on ``session`` are ignored; checkpoint timestamps are kept). Returns
        the stored head, whose stamps the caller copies back. Raises ``ConflictError`` if the
        id exists (even deleted).
        """

    @abstractmethod
    async def get(self, session_id: str, *, window: int) -> AgentSession | None:
        """The live session with its ``window`` most recent checkpoints, or ``None``."""

    @abstractmethod
    async def get_version(self, session_id: str) -> int | None:
        """The live session's version, or ``None``: one cheap indexed read."""

    @abstractmethod
    async def update(
        self,
        session: AgentSession,
        new_checkpoints: Sequence[SessionCheckpoint],
        *,
        fence: Lease | None = None,
    ) -> AgentSession:
        """Compare-and-set: store ``session``'s state, context and metadata, and append
        ``new_checkpoints``, if the stored version still equals ``session.version``.

        ``last_heartbeat`` and ``updated_at`` are stamped with the store's clock
        (``session.last_heartbeat`` is ignored). Moving the session to ``deleted`` also clears
        its lease, as ``delete`` does.

        Raises ``ConflictError`` when the stored version differs, ``SessionNotFound`` when the
        session does not exist or is deleted, ``InvalidTransition`` when the stored state may
        not become ``session.state``. Returns the new head; the appended checkpoints got seq
        ``head.checkpoint_count - len(new_checkpoints) + 1 ..``.
        """

    @abstractmethod
    async def append_checkpoint(
        self,
        session_id: str,
        checkpoint: SessionCheckpoint,
        *,
        idempotency_key: str | None = None,
        fence: Lease | None = None,
        records: RecordWrite | None = None,
    ) -> AppendResult:
        """Append one checkpoint with the next seq, whatever else changed concurrently.

        With an ``idempotency_key`` already used on this session, stores nothing and returns
        the checkpoint stored the first time (``created=False``).

        With ``records``, writes them in the same transaction, as ``put_records`` would with
        ``session_id=session_id`` (same tenant, sealing and ``keep_existing`` rules; keys
        prefixed with the new seq when ``records.key_prefix_seq``): both are stored or neither
        is. A replay (``created=False``) writes no records either: they were written with the
        first append.
        """

    @abstractmethod
    async def heartbeat(self, session_id: str, *, fence: Lease | None = None) -> AgentSession:
        """Set ``last_heartbeat`` to the store's now. With a live fence, also extend that lease
        by the ttl it was last granted for, counted from that same now. Returns the head."""

    @abstractmethod
    async def patch_context(
        self,
        session_id: str,
        changes: dict[str, Any],
        *,
        fence: Lease | None = None,
        max_bytes: int | None = None,
    ) -> AgentSession:
        """Merge ``changes`` into the context as an RFC 7396 JSON merge patch (a ``None`` value
        removes the key; nested objects merge), atomically with respect to every other write.

        With ``max_bytes``, raises ``PayloadTooLarge`` and changes nothing when the merged
        context's compact JSON encoding (``codec.encode_patched``) would be longer, decided in
        the same transaction as the write (after the not-found and fence checks)."""

    @abstractmethod
    async def set_state(
        self,
        session_id: str,
        state: SessionState,
        *,
        reason: str | None = None,
        fence: Lease | None = None,
    ) -> AgentSession:
        """Move the session to ``state`` if the transition is allowed from its stored state,
        else raise ``InvalidTransition``. A ``reason`` is kept as ``context["failure_reason"]``
        when the new state is ``failed``; moving to ``deleted`` clears the lease, as ``delete``
        does."""

    @abstractmethod
    async def delete(self, session_id: str) -> SessionRef | None:
        """Soft delete, which also clears the lease. Returns the session's ref after the delete
        (state ``deleted``, its new version), or ``None`` if no live session had the id."""

    @abstractmethod
    async def purge(
        self, *, session_id: str | None = None, user_id: str | None = None
    ) -> list[SessionRef]:
        """Remove sessions and their checkpoints for good (any state, deleted included).

        Matches the sessions with ``session_id`` and/or of ``user_id`` (with both, only a
        session matching both; with neither, none). Returns exactly the sessions removed,
        ordered by id, each with its last version and state before removal. Erases the content:
        a backend that keeps files scrubs the removed data from them (free pages and logs too).

        In the same transaction, removes the records attached to the removed sessions and, when
        purging by ``user_id`` alone, the records with that ``user_id`` (of every tenant when
        ``tenant`` is ``None``, else of ``tenant``).
        """

    @abstractmethod
    async def describe(self, session_ids: Sequence[str]) -> list[SessionRef]:
        """The refs of the live (not deleted) sessions among ``session_ids``, ordered by id,
        each once; unknown ids are left out. One read."""

    # --- records ---------------------------------------------------------------------------
    #
    # Arguments are validated by the manager: scopes and keys are non-empty strings of valid
    # Unicode without U+0000, at most 1024 characters; values are ``bytes``; keys within one
    # ``put_records`` call are distinct; limits are positive.

    @abstractmethod
    async def put_records(
        self,
        scope: str,
        items: Sequence[tuple[str, bytes]],
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        keep_existing: bool = False,
    ) -> int:
        """Write ``items`` (``(key, value)`` pairs) into ``scope`` in one transaction, each
        attached to ``session_id`` and ``user_id`` (both may be ``None``), stamped with the
        store's clock; return how many keys were written.

        A key that exists is replaced (value, session and user), unless ``keep_existing``: then
        it keeps its stored row and is not counted (insert-if-absent). With ``session_id``, the
        session must be live when the transaction commits: else ``SessionNotFound`` and nothing
        is written. Values are sealed at rest with ``sealer`` (bound to tenant, scope and key).
        """

    @abstractmethod
    async def get_records(self, scope: str, keys: Sequence[str]) -> dict[str, bytes]:
        """The values of those of ``keys`` that exist in ``scope`` (missing keys are left out).

        Raises ``DecryptionError`` for a sealed value the store cannot open."""

    @abstractmethod
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
        """At most ``limit`` ``(key, value)`` pairs of ``scope`` whose key starts with
        ``prefix`` and lies strictly after ``after`` and strictly before ``before`` (either may
        be ``None``: unbounded), ordered by key in code point order (largest first with
        ``descending``). One read; served by the primary key."""

    @abstractmethod
    async def delete_records(
        self,
        scope: str,
        *,
        keys: Sequence[str] | None = None,
        prefix: str | None = None,
    ) -> int:
        """Delete the records of ``scope`` named by ``keys``, or whose key starts with
        ``prefix``, or (neither given) every record of the scope, in one transaction; return
        how many rows were deleted. Of concurrent deletions of the same key exactly one counts
        it."""

    @abstractmethod
    async def list_scopes(
        self, prefix: str, *, limit: int = 1000, after: str | None = None
    ) -> list[str]:
        """At most ``limit`` distinct scopes that hold at least one record, start with
        ``prefix`` and lie strictly after ``after``, in code point order."""

    @abstractmethod
    async def list_session_records(
        self, session_id: str, *, limit: int = 100, after: tuple[str, str, str] | None = None
    ) -> list[StoredRecord]:
        """Records attached to ``session_id`` (of every tenant when ``tenant`` is ``None``,
        else of ``tenant``), ordered by ``(tenant, scope, key)``, after that cursor; for
        ``export``."""

    @abstractmethod
    async def list_user_records(
        self, user_id: str, *, limit: int = 100, after: tuple[str, str, str] | None = None
    ) -> list[StoredRecord]:
        """Records with ``user_id`` that are not attached to a session of that user (those are
        exported with their session): of every tenant when ``tenant`` is ``None``, else of
        ``tenant``; ordered by ``(tenant, scope, key)``, after that cursor; for ``export``."""

    # --- listing ---------------------------------------------------------------------------

    @abstractmethod
    async def list_checkpoints(
        self, session_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[SessionCheckpoint]:
        """Checkpoints with ``seq > after_seq``, oldest first, at most ``limit``.

        Raises ``SessionNotFound`` for an unknown or deleted session.
        """

    @abstractmethod
    async def list_sessions(
        self,
        *,
        state: SessionState | None = SessionState.ACTIVE,
        agent_type: str | None = None,
        user_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[AgentSession]:
        """Session heads ordered by ``session_id``, with ``session_id > after`` (the cursor),
        filtered by state (``None``: every live state), agent type and user; served by an index."""

    # --- liveness --------------------------------------------------------------------------

    @abstractmethod
    async def sweep_stale(self, max_age: timedelta, *, limit: int) -> list[SessionRef]:
        """Mark at most ``limit`` active sessions whose heartbeat is older than ``max_age`` (the
        cutoff is the store's now minus ``max_age``), oldest first, as failed
        (``context["failure_reason"] = "heartbeat_timeout"``) and return them, each as a
        ``SessionRef`` (its id, new version, agent type, user and state ``failed``).

        One short transaction; concurrent sweepers never process the same session twice.
        """

    @abstractmethod
    async def claim(self, session_id: str, owner: str, ttl: timedelta) -> Lease:
        """Take the session's lease for ``ttl`` (from the store's now) with a new, larger
        fencing token.

        Raises ``LeaseHeld`` while another owner's lease is live (the same owner re-claiming
        gets a new token), ``SessionNotFound`` for an unknown or deleted session.
        """

    @abstractmethod
    async def renew(self, lease: Lease, ttl: timedelta) -> Lease:
        """Extend a live ``lease`` to the store's now + ``ttl``; ``LeaseLost`` if it is not
        live."""

    @abstractmethod
    async def release(self, lease: Lease) -> None:
        """Give a live lease up so anyone may claim at once; ``LeaseLost`` if it is not live."""

    @abstractmethod
    async def expire_leases(self, *, limit: int) -> list[Lease]:
        """Clear at most ``limit`` leases that have expired by the store's now (earliest first)
        and return them as they were. One short transaction; concurrent callers never return
        the same lease."""

    @abstractmethod
    async def current_lease(self, session_id: str) -> Lease | None:
        """The live lease on the session, or ``None``."""

    # --- tier epochs -----------------------------------------------------------------------

    @abstractmethod
    async def tier_epoch(self, namespace: str) -> TierEpoch:
        """The tier epoch of ``namespace``; a missing one is created as ``(0, "")`` (safe when
        several processes create it at once)."""

    @abstractmethod
    async def caches_in_use(self) -> bool:
        """True when some namespace's epoch row names a cache server (a process reads this
        store through a shared cache): then a change made without that cache must bump."""

    async def reseal_sessions(self, after: str, limit: int) -> tuple[int, str | None]:
        """Key rotation: re-seal with the first key the context and metadata of up to
        ``limit`` sessions after id ``after`` that are not all sealed with it, in one short
        transaction under their row locks (the version stays: the values are the same).
        Returns how many were re-sealed and the id to continue after (``None``: done). A store
        that keeps nothing outside the process has nothing to do."""
        return 0, None

    async def reseal_checkpoints(
        self, after: tuple[str, int], limit: int
    ) -> tuple[int, tuple[str, int] | None]:
        """``reseal_sessions`` for checkpoint data, paged by ``(session_id, seq)``."""
        return 0, None

    async def reseal_records(
        self, after: tuple[str, str, str], limit: int
    ) -> tuple[int, tuple[str, str, str] | None]:
        """``reseal_sessions`` for record values (of every tenant), paged by
        ``(tenant, scope, key)``."""
        return 0, None

    @abstractmethod
    async def bump_tier_epoch(
        self, namespace: str | None = None, *, cache_id: str | None = None
    ) -> None:
        """Raise the epoch of ``namespace`` by one (creating it first if missing), or of every
        existing namespace when ``namespace`` is ``None``; with a ``cache_id`` also set that.

        One short transaction; concurrent bumps are never lost.
        """

    # --- data governance -------------------------------------------------------------------

    @abstractmethod
    async def purge_aged(
        self,
        states: Sequence[SessionState],
        max_age: timedelta,
        *,
        limit: int,
        after: str | None = None,
    ) -> list[SessionRef]:
        """Remove for good at most ``limit`` sessions in one of ``states`` whose ``updated_at``
        is older than the store's now minus ``max_age``, with ``session_id > after``, in id
        order; return exactly those removed (ordered by id, last version and state), as
        ``purge`` does, and erase their content (their records too) as ``purge`` does.

        One short transaction; concurrent callers never remove (or report) a session twice.
        """

    @abstractmethod
    async def list_user_sessions(
        self, user_id: str, *, limit: int = 100, after: str | None = None
    ) -> list[AgentSession]:
        """Heads of ``user_id``'s sessions in every state, *deleted included*, ordered by id,
        with ``session_id > after``; served by an index."""

    @abstractmethod
    async def list_trail(
        self, session_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[SessionCheckpoint]:
        """Checkpoints with ``seq > after_seq``, oldest first, at most ``limit``, of a session
        in any state (deleted included); ``[]`` for an unknown session."""

    @abstractmethod
    async def retention_policies(self, namespace: str | None = None) -> list[RetentionPolicy]:
        """The stored retention policies (of ``namespace`` only, if given), by namespace."""

    @abstractmethod
    async def set_retention_policy(
        self,
        namespace: str,
        *,
        deleted_days: int | None,
        terminal_days: int | None,
        actor: str,
    ) -> RetentionPolicy:
        """Create or replace ``namespace``'s policy, stamped with the store's clock."""

    @abstractmethod
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
        """Append one audit record, stamped with the store's clock and the next id."""

    @abstractmethod
    async def list_audit(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Audit records with ``id > after_id``, oldest first, filtered by user and action."""
