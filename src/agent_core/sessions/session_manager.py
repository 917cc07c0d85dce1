"""SessionManager: the reference design's API on one durable store and its tiers.

The manager validates its input, calls the store, and hands every committed result to the
coherence layer (``agent_core.tiers.coherence``), which owns the caches and the events. A store
failure reaches the caller as a typed error; a tier failure is logged, counted and never fails
a call. Backends are chosen in ``agent_core.factory``; the manager names none of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from agent_core import codec, crypto, factory
from agent_core.bus.base import EventBus, EventKind
from agent_core.bus.stream import EventStream
from agent_core.errors import ConfigurationError, ValidationError
from agent_core.resource import AsyncResource
from agent_core.sessions import governance, limits
from agent_core.sessions.governance import GovernanceAPI, ReapResult
from agent_core.sessions.records import RecordsAPI, check_record_write
from agent_core.sessions.session_models import (
    AgentSession,
    Lease,
    SessionCheckpoint,
    SessionState,
)
from agent_core.stores.base import RecordWrite, SessionRef, SessionStore, check_tenant
from agent_core.tiers.base import SharedTier
from agent_core.tiers.coherence import Coherence

if TYPE_CHECKING:
    from agent_core.cache.local import LocalCache

__all__ = ["SessionManager"]

logger = logging.getLogger(__name__)


class SessionManager(GovernanceAPI, RecordsAPI, AsyncResource):
    """Manages agent sessions on a durable store, a shared tier and an in-process tier.

    ``SessionManager()`` keeps everything in this process, as the reference design did without
    a database. ``SessionManager(redis_client=..., db_pool=...)`` is the reference's hybrid
    Valkey + PostgreSQL setup; ``SessionManager.from_url(...)`` builds any combination.

    The manager opens its store and tiers on first use (or ``async with manager``) and closes
    what it built in ``close()``; injected clients and pools are left open.

    ``tenant="acme"`` confines the manager to one tenant: the sessions it creates belong to
    ``acme``, and every other tenant's session is, to it, exactly an id that does not exist
    (reads give ``None``, writes, checkpoints and leases raise ``SessionNotFound``, deletes give
    ``False``, purges remove nothing); lists, events, sweeps, purges by user, exports,
    retention and the audit log see only ``acme``'s sessions. Managers of several tenants may
    share one store URL, cache URL and namespace. ``tenant=None`` (the default) sees every
    tenant's sessions.
    """

    def __init__(
        self,
        redis_client: Any = None,
        db_pool: Any = None,
        namespace: str = "agent_core",
        session_ttl_hours: float = 24,
        *,
        store: SessionStore | None = None,
        tier: SharedTier | None = None,
        bus: EventBus | None = None,
        local_cache: bool | LocalCache = True,
        checkpoint_window: int = 50,
        max_payload_bytes: int = codec.DEFAULT_MAX_PAYLOAD_BYTES,
        cleanup_batch_size: int = 500,
        create_schema: bool = True,
        encryption_keys: Any = None,
        tenant: str | None = None,
    ) -> None:
        if store is not None and db_pool is not None:
            raise ValueError("pass either store= or db_pool=, not both")
        if (tier is not None or bus is not None) and redis_client is not None:
            raise ValueError("pass either tier=/bus= or redis_client=, not both")
        if tier is not None and bus is not None:
            raise ValueError("pass either tier= or bus=, not both")
        limits.check_options(
            session_ttl_hours=session_ttl_hours,
            checkpoint_window=checkpoint_window,
            max_payload_bytes=max_payload_bytes,
            cleanup_batch_size=cleanup_batch_size,
        )
        if tenant is not None:
            check_tenant(tenant)
        self.tenant = tenant
        self.namespace = namespace
        self.session_ttl = timedelta(hours=session_ttl_hours)
        self.checkpoint_window = checkpoint_window
        self.max_payload_bytes = max_payload_bytes
        self.cleanup_batch_size = cleanup_batch_size
        self.stats: Counter[str] = Counter()

        ttl = self.session_ttl.total_seconds()
        reference_store, reference_tier = factory.reference_parts(
            redis_client, db_pool, namespace=namespace, ttl=ttl, create_schema=create_schema
        )
        self.store: SessionStore = store if store is not None else reference_store
        if tenant is not None:
            # Before open(): a PostgreSQL store sets its connections up for the tenant.
            self.store = self.store.bound_to(tenant)
        if tier is None:
            tier = factory.bus_tier(bus) if bus is not None else reference_tier
        self.tier: SharedTier = tier

        # Encryption at rest: the store and the shared tier seal what they keep outside the
        # process; the in-process tier holds opened sessions.
        self.sealer = crypto.sealer_from(encryption_keys)
        if self.sealer is not None:
            self.store.sealer = self.sealer
            self.tier.use_sealer(self.sealer)

        self.local = local = factory.local_tier(local_cache, self.store, ttl=min(ttl, 60.0))
        self.coherence = Coherence(
            self.store,
            self.tier,
            local,
            namespace=namespace,
            window=checkpoint_window,
            stats=self.stats,
            tenant=tenant,
        )
        self._opened = False
        self._open_lock = asyncio.Lock()

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_url(
        cls,
        store_url: str = "memory://",
        *,
        cache_url: str | None = None,
        namespace: str = "agent_core",
        session_ttl_hours: float = 24,
        store_options: dict[str, Any] | None = None,
        cache_options: dict[str, Any] | None = None,
        tenant: str | None = None,
        **options: Any,
    ) -> SessionManager:
        """A manager for a store URL and an optional shared-cache URL; it owns both.

        ``tenant`` confines it to one tenant (see the class doc). ``options`` are the keyword
        options of ``SessionManager`` (``local_cache``, ``checkpoint_window``,
        ``max_payload_bytes``, ``bus``, ...).
        """
        if tenant is not None:
            check_tenant(tenant)
        limits.check_session_ttl_hours(session_ttl_hours)
        store = factory.store_from_url(store_url, **(store_options or {}))
        if "bus" not in options and "tier" not in options:
            options["tier"] = factory.tier_from_url(
                cache_url,
                store_url,
                namespace=namespace,
                ttl=timedelta(hours=session_ttl_hours).total_seconds(),
                cache_options=cache_options,
            )
        return cls(
            namespace=namespace,
            session_ttl_hours=session_ttl_hours,
            store=store,
            tenant=tenant,
            **options,
        )

    async def open(self) -> None:
        """Open the store (applying migrations) and the tiers."""
        if self._opened:
            return
        async with self._open_lock:
            if self._opened:
                return
            await self.store.open()
            try:
                await self.coherence.open()
            except BaseException:
                await self.store.close()
                raise
            self._opened = True

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        try:
            await self.coherence.close()
        finally:
            await self.store.close()

    # --- the reference API -------------------------------------------------------------------

    async def create_session(
        self,
        agent_type: str,
        user_id: str = "",
        context: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
    ) -> AgentSession:
        """Create and store a new active session with a ``session_created`` checkpoint.

        ``session_id``: an explicit id (a canonical UUID string) instead of a new random one;
        ``ConflictError`` if a session has ever had it (a deleted one too, until purged).
        """
        fields: dict[str, Any] = {} if session_id is None else {"session_id": session_id}
        session = AgentSession(
            agent_type=agent_type,
            user_id=user_id,
            context={} if context is None else context,
            metadata={} if metadata is None else metadata,
            tenant=self.tenant or "",
            **fields,  # an explicit id draws no random one (some callers count uuid4 draws)
        )
        session.checkpoint("session_created", {"agent_type": agent_type, "user_id": user_id})
        limits.check_session(session, self.max_payload_bytes)
        await self.open()
        head = await self.store.create(session)
        _adopt(session, head)
        for seq, cp in enumerate(session.checkpoints, start=1):
            cp.seq = seq
        await self.coherence.created(session)
        logger.debug("created session %s for agent %r", session.session_id, agent_type)
        return session

    async def get_session(self, session_id: str) -> AgentSession | None:
        """The live session with its most recent checkpoints, or ``None``.

        Lookup order: in-process tier, shared cache, store; a miss fills the faster tiers.
        """
        codec.validate_session_id(session_id)
        if not self._opened:
            await self.open()
        return await self.coherence.read(session_id)

    async def update_session(self, session: AgentSession, *, lease: Lease | None = None) -> None:
        """Store ``session`` if nobody changed it since it was read (compare-and-set).

        Heartbeats the session, stores its state, context and metadata, and appends only the
        checkpoints added since it was read. Raises ``ConflictError`` when the stored version
        moved on (re-read and retry), ``SessionNotFound``, ``InvalidTransition``, and with
        ``lease``, ``LeaseLost`` once another worker holds the session. On success
        ``session.version``, its timestamps and the new checkpoints' ``seq`` are updated in
        place. Moving the session to ``deleted`` is a ``delete_session``.
        """
        limits.check_session(session, self.max_payload_bytes)
        limits.check_lease(session.session_id, lease)
        await self.open()
        pending = session.pending_checkpoints
        head = await self.store.update(session, pending, fence=lease)
        _adopt(session, head)
        first = head.checkpoint_count - len(pending) + 1
        for seq, cp in enumerate(pending, start=first):
            cp.seq = seq
        if head.state is SessionState.DELETED:
            ref = SessionRef(
                head.session_id,
                head.version,
                head.agent_type,
                head.user_id,
                head.state,
                head.tenant,
            )
            await self.coherence.deleted(head.session_id, ref)
        else:
            await self.coherence.changed(EventKind.UPDATED, head, appended=pending)

    async def delete_session(self, session_id: str) -> bool:
        """Soft-delete: hidden from reads, kept for audit. False if no live session had the id."""
        codec.validate_session_id(session_id)
        await self.open()
        ref = await self.store.delete(session_id)
        await self.coherence.deleted(session_id, ref)
        return ref is not None

    async def get_active_sessions(
        self,
        agent_type: str | None = None,
        user_id: str | None = None,
        *,
        limit: int = 1000,
        after: str | None = None,
    ) -> list[AgentSession]:
        """Active sessions (heads: ``checkpoints`` empty), ordered by id.

        Page with ``after=<last session_id of the previous page>``.
        """
        return await self.list_sessions(
            state=SessionState.ACTIVE,
            agent_type=agent_type,
            user_id=user_id,
            limit=limit,
            after=after,
        )

    async def cleanup_stale_sessions(self, max_age: timedelta = timedelta(hours=48)) -> int:
        """Fail active sessions with no heartbeat for ``max_age``; return how many.

        Works in batches of ``cleanup_batch_size`` short transactions; every failed session
        leaves every cache tier.
        """
        limits.check_max_age(max_age)
        limits.check_batch_size(self.cleanup_batch_size)
        await self.open()
        total = 0
        telling: asyncio.Future[None] | None = None
        try:
            while True:
                refs = await self.store.sweep_stale(max_age, limit=self.cleanup_batch_size)
                # Tell the tiers about this batch while the store sweeps the next one; the
                # call returns only once every batch has been told.
                if telling is not None:
                    await telling
                telling = asyncio.ensure_future(
                    self.coherence.swept(refs, {"reason": "heartbeat_timeout"})
                )
                total += len(refs)
                if len(refs) < self.cleanup_batch_size:
                    break
        finally:
            if telling is not None:
                await telling
        if total:
            logger.info("failed %d stale sessions", total)
        return total

    # --- atomic operations -------------------------------------------------------------------

    async def append_checkpoint(
        self,
        session_id: str,
        name: str,
        data: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        lease: Lease | None = None,
        records: RecordWrite | None = None,
    ) -> SessionCheckpoint:
        """Append one checkpoint with the next ``seq``; never conflicts.

        With ``idempotency_key``, a retry stores nothing and returns the first stored one.

        With ``records`` (a ``RecordWrite``), also writes those records, attached to this
        session, in the same transaction (validated as ``put_records`` validates): both are
        stored or neither is, and a retry with the same ``idempotency_key`` writes none again.
        With ``records.key_prefix_seq``, each key is stored as ``f"{seq:016d}{key}"`` with the
        returned checkpoint's ``seq`` (``RecordWrite.stored_key`` computes it).
        """
        codec.validate_session_id(session_id)
        limits.check_lease(session_id, lease)
        limits.check_name(name, "checkpoint name")
        if idempotency_key is not None:
            limits.check_name(idempotency_key, "idempotency_key")
        payload = {} if data is None else data
        limits.check_payload(payload, "checkpoint data", self.max_payload_bytes)
        if records is not None:
            records = check_record_write(records, self.max_payload_bytes)
        await self.open()
        result = await self.store.append_checkpoint(
            session_id,
            SessionCheckpoint(name=name, data=payload),
            idempotency_key=idempotency_key,
            fence=lease,
            records=records,
        )
        # A retry that found its earlier append still tells every tier: the first attempt may
        # have committed without its tiers ever hearing of it (a lost acknowledgement).
        await self.coherence.changed(
            EventKind.CHECKPOINT,
            result.session,
            {"seq": result.checkpoint.seq, "name": name},
            appended=[result.checkpoint],
            write_through=result.created,
        )
        return result.checkpoint

    async def heartbeat(self, session_id: str, *, lease: Lease | None = None) -> AgentSession:
        """Record a heartbeat (and renew ``lease`` if given); returns the session head."""
        codec.validate_session_id(session_id)
        limits.check_lease(session_id, lease)
        await self.open()
        head = await self.store.heartbeat(session_id, fence=lease)
        await self.coherence.changed(EventKind.HEARTBEAT, head)
        return head

    async def patch_context(
        self, session_id: str, changes: dict[str, Any], *, lease: Lease | None = None
    ) -> AgentSession:
        """Merge ``changes`` into the context (RFC 7396: ``None`` removes a key).

        Returns the session head.
        """
        codec.validate_session_id(session_id)
        limits.check_lease(session_id, lease)
        limits.check_payload(changes, "context changes", self.max_payload_bytes)
        await self.open()
        head = await self.store.patch_context(
            session_id, changes, fence=lease, max_bytes=self.max_payload_bytes
        )
        await self.coherence.changed(EventKind.CONTEXT, head, {"keys": sorted(changes)})
        return head

    async def set_state(
        self,
        session_id: str,
        state: SessionState | str,
        reason: str | None = None,
        *,
        lease: Lease | None = None,
    ) -> AgentSession:
        """Move the session to ``state`` if its stored state allows it; returns the head."""
        codec.validate_session_id(session_id)
        limits.check_lease(session_id, lease)
        try:
            target = SessionState(state)
        except ValueError:
            raise ValidationError(f"unknown session state {state!r}") from None
        if target is SessionState.DELETED:
            raise ValidationError("use delete_session() to delete a session")
        if reason is not None:
            limits.check_name(reason, "reason", allow_empty=True)
        await self.open()
        head = await self.store.set_state(session_id, target, reason=reason, fence=lease)
        await self.coherence.changed(EventKind.STATE, head, {"reason": reason} if reason else None)
        return head

    async def list_checkpoints(
        self, session_id: str, after_seq: int = 0, limit: int = 100
    ) -> list[SessionCheckpoint]:
        """Page through the whole trail: checkpoints with ``seq > after_seq``, oldest first."""
        codec.validate_session_id(session_id)
        limits.check_after_seq(after_seq)
        limits.check_limit(limit)
        await self.open()
        return await self.store.list_checkpoints(session_id, after_seq=after_seq, limit=limit)

    async def list_sessions(
        self,
        *,
        state: SessionState | str | None = SessionState.ACTIVE,
        agent_type: str | None = None,
        user_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[AgentSession]:
        """Session heads filtered by state (``None``: any live state), ordered by id."""
        limits.check_limit(limit)
        if after is not None:
            codec.validate_session_id(after)
        if agent_type is not None:
            limits.check_name(agent_type, "agent_type", allow_empty=True)
        if user_id is not None:
            limits.check_name(user_id, "user_id", allow_empty=True)
        try:
            wanted = None if state is None else SessionState(state)
        except ValueError:
            raise ValidationError(f"unknown session state {state!r}") from None
        await self.open()
        return await self.store.list_sessions(
            state=wanted, agent_type=agent_type, user_id=user_id, limit=limit, after=after
        )

    async def purge(
        self,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        actor: str | None = None,
    ) -> int:
        """Remove sessions for good (any state), by id or by user; returns how many.

        Leaves an audit record (``actor``, the user, how many sessions; no content) once every
        tier of every process has lost the purged sessions.
        """
        if session_id is None and user_id is None:
            raise ValidationError("purge needs a session_id or a user_id")
        if session_id is not None:
            codec.validate_session_id(session_id)
        if user_id is not None:
            limits.check_name(user_id, "user_id", allow_empty=True)
        who = governance.check_actor(actor)
        await self.open()
        refs = await self.store.purge(session_id=session_id, user_id=user_id)
        await self.coherence.purged(refs)
        users = {ref.user_id for ref in refs}
        await governance.record(
            self,
            actor=who,
            action="purge",
            user_id=user_id if user_id is not None or len(users) != 1 else users.pop(),
            session_count=len(refs),
            details={} if session_id is None else {"session_id": session_id},
        )
        return len(refs)

    # --- leases ------------------------------------------------------------------------------

    async def claim(self, session_id: str, owner: str, ttl: timedelta) -> Lease:
        """Take the session's lease; ``LeaseHeld`` while another owner's lease is live."""
        codec.validate_session_id(session_id)
        limits.check_name(owner, "owner")
        limits.check_ttl(ttl)
        await self.open()
        lease = await self.store.claim(session_id, owner, ttl)
        await self.coherence.lease_changed(EventKind.CLAIMED, [lease])
        return lease

    async def current_lease(self, session_id: str) -> Lease | None:
        """The live lease on the session, or ``None`` (read-only)."""
        codec.validate_session_id(session_id)
        await self.open()
        return await self.store.current_lease(session_id)

    async def renew(self, lease: Lease, ttl: timedelta) -> Lease:
        limits.check_ttl(ttl)
        await self.open()
        return await self.store.renew(lease, ttl)

    async def release(self, lease: Lease) -> None:
        await self.open()
        await self.store.release(lease)
        await self.coherence.lease_changed(EventKind.RELEASED, [lease])

    async def reap(
        self, max_age: timedelta = timedelta(hours=48), *, batch_size: int | None = None
    ) -> ReapResult:
        """One reaper round: clear expired leases, fail stale sessions, then apply this
        namespace's retention policy (``apply_retention``).

        Safe to run in several processes at once: each batch is one short transaction that
        skips rows another reaper holds, so no lease or session is processed twice.
        Returns ``(expired leases, failed sessions)``, a tuple whose ``retention`` attribute
        says what retention purged.
        """
        limits.check_max_age(max_age)
        limit = self.cleanup_batch_size if batch_size is None else batch_size
        limits.check_batch_size(limit)
        await self.open()
        expired = 0
        while True:
            leases = await self.store.expire_leases(limit=limit)
            await self.coherence.lease_changed(EventKind.RELEASED, leases, expired=True)
            expired += len(leases)
            if len(leases) < limit:
                break
        failed = await self.cleanup_stale_sessions(max_age)
        retention = await self.apply_retention(batch_size=limit)
        return ReapResult(expired, failed, retention)

    # --- encryption at rest ------------------------------------------------------------------

    async def rotate_keys(self, *, batch_size: int | None = None) -> int:
        """Re-encrypt with the first of ``encryption_keys`` every stored context, metadata,
        checkpoint and record value sealed with another key (or not sealed at all), while the
        application runs: each batch of ``batch_size`` rows (default ``cleanup_batch_size``) is
        one short transaction under the rows' locks, and the version does not move, so no
        concurrent compare-and-set is refused or lost. Then the tier epoch is bumped, so no
        process trusts a cache entry sealed before. Returns how many rows were re-sealed; once
        it returns, the older keys may be dropped."""
        if self.sealer is None:
            raise ConfigurationError("rotate_keys needs encryption_keys")
        size = self.cleanup_batch_size if batch_size is None else batch_size
        limits.check_batch_size(size)
        await self.open()
        total = 0
        after: str | None = ""
        while after is not None:
            count, after = await self.store.reseal_sessions(after, size)
            total += count
        cursor: tuple[str, int] | None = ("", 0)
        while cursor is not None:
            count, cursor = await self.store.reseal_checkpoints(cursor, size)
            total += count
        records: tuple[str, str, str] | None = ("", "", "")
        while records is not None:
            count, records = await self.store.reseal_records(records, size)
            total += count
        if not self.store.in_process:
            await self.store.bump_tier_epoch(None)
        logger.info("rotate_keys: %d rows re-sealed with key %r", total, self.sealer.kid)
        return total

    # --- events ------------------------------------------------------------------------------

    def events(
        self,
        *,
        agent_type: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        kinds: Iterable[EventKind | str] | None = None,
        max_queue: int = 10_000,
    ) -> EventStream:
        """Session events from every process sharing this manager's bus, as they happen.

        Use as ``async with manager.events(agent_type="grader") as stream:`` then
        ``async for event in stream`` (or ``await stream.get(timeout)``).
        """
        return EventStream(
            self.tier.bus,
            agent_type=agent_type,
            user_id=user_id,
            session_id=session_id,
            kinds=kinds,
            max_queue=max_queue,
            before_start=self.open,
            tenant=self.tenant,
        )


def _adopt(session: AgentSession, head: AgentSession) -> None:
    """Give the caller's object what the store stamped on the committed version."""
    session.version = head.version
    session.created_at = head.created_at
    session.updated_at = head.updated_at
    session.last_heartbeat = head.last_heartbeat
    session.checkpoint_count = head.checkpoint_count
    session.tenant = head.tenant
