"""SessionManager: the reference design's API on one durable store and zero or more caches.

Write path: commit to the store first; then refresh or invalidate the caches and publish an
event. A store failure reaches the caller as a typed error; a cache failure is logged, counted
and never fails the call. Read path: in-process tier -> shared cache -> store, filling the
faster tiers on a miss; no tier ever serves a version older than one it has been told about.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from agent_core import codec
from agent_core.bus.base import EventBus, EventKind, SessionEvent
from agent_core.bus.local import InProcessBus
from agent_core.bus.stream import EventStream
from agent_core.bus.valkey import ValkeyBus
from agent_core.cache.base import DELETED_VERSION, SessionCache
from agent_core.cache.local import LocalCache
from agent_core.cache.valkey import ValkeyCache
from agent_core.config import cache_from_url, store_from_url
from agent_core.errors import CacheUnavailable, LeaseLost, ValidationError
from agent_core.resource import AsyncResource
from agent_core.sessions.session_models import (
    AgentSession,
    Lease,
    SessionCheckpoint,
    SessionState,
    utcnow,
)
from agent_core.stores.base import SessionStore, SweptSession
from agent_core.stores.memory import MemoryStore

__all__ = ["SessionManager"]

logger = logging.getLogger(__name__)

_MAX_NAME = 256
_TELL_SLICE = 64  # sessions per bus command batch when a sweep tells everyone


def _check_lease(session_id: str, lease: Lease | None) -> None:
    if lease is not None and lease.session_id != session_id:
        raise LeaseLost(f"the lease is for session {lease.session_id}, not {session_id}")


def _check_name(value: object, what: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, not {type(value).__name__}")
    if not value and not allow_empty:
        raise ValidationError(f"{what} must not be empty")
    if len(value) > _MAX_NAME:
        raise ValidationError(f"{what} is longer than {_MAX_NAME} characters")
    return value


class SessionManager(AsyncResource):
    """Manages agent sessions on a durable store with optional shared and in-process caches.

    ``SessionManager()`` keeps everything in this process, as the reference design did without
    a database. ``SessionManager(redis_client=..., db_pool=...)`` is the reference's hybrid
    Valkey + PostgreSQL setup; ``SessionManager.from_url(...)`` builds any combination.

    The manager opens its store, caches and bus on first use (or ``async with manager``) and
    closes what it built in ``close()``; injected clients and pools are left open.
    """

    def __init__(
        self,
        redis_client: Any = None,
        db_pool: Any = None,
        namespace: str = "agent_core",
        session_ttl_hours: float = 24,
        *,
        store: SessionStore | None = None,
        cache: SessionCache | None = None,
        bus: EventBus | None = None,
        local_cache: bool | LocalCache = True,
        checkpoint_window: int = 50,
        max_payload_bytes: int = codec.DEFAULT_MAX_PAYLOAD_BYTES,
        cleanup_batch_size: int = 500,
        create_schema: bool = True,
    ) -> None:
        if store is not None and db_pool is not None:
            raise ValueError("pass either store= or db_pool=, not both")
        if cache is not None and redis_client is not None:
            raise ValueError("pass either cache= or redis_client=, not both")
        self.namespace = namespace
        self.session_ttl = timedelta(hours=session_ttl_hours)
        self.checkpoint_window = checkpoint_window
        self.max_payload_bytes = max_payload_bytes
        self.cleanup_batch_size = cleanup_batch_size
        self.stats: Counter[str] = Counter()

        if store is None:
            if db_pool is not None:
                from agent_core.stores.postgres import PostgresStore

                store = PostgresStore.with_pool(db_pool, create_schema=create_schema)
            else:
                store = MemoryStore()
        self.store: SessionStore = store

        ttl_seconds = self.session_ttl.total_seconds()
        if cache is None and redis_client is not None:
            from agent_core.cache.valkey import ValkeyCache

            cache = ValkeyCache(redis_client, namespace=namespace, ttl=ttl_seconds)
        self.cache: SessionCache | None = cache

        if bus is None and redis_client is not None:
            from agent_core.bus.valkey import ValkeyBus

            bus = ValkeyBus(redis_client, namespace=namespace)
        self.bus: EventBus = bus if bus is not None else InProcessBus()

        # An in-process tier in front of an in-process store would only cost memory.
        if isinstance(local_cache, LocalCache):
            self.local: LocalCache | None = local_cache
        elif local_cache and not isinstance(store, MemoryStore):
            self.local = LocalCache(ttl=min(ttl_seconds, 60.0))
        else:
            self.local = None

        self._owned: list[Any] = []
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._bus_generation = 0
        self._unsubscribe: Callable[[], None] | None = None
        self._owed: dict[str, int] = {}
        self._owed_overflow = False
        self.max_owed_invalidations = 100_000
        self.replay_interval = 0.1
        self._replayer: asyncio.Task[None] | None = None
        # Set on open() when the bus and the shared cache are on one Valkey server: a change's
        # cache write and its event then go out as one command.
        self._carrier: tuple[ValkeyBus, ValkeyCache] | None = None

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
        **options: Any,
    ) -> SessionManager:
        """A manager for a store URL and an optional shared-cache URL; it owns both.

        ``options`` are the keyword options of ``SessionManager`` (``local_cache``,
        ``checkpoint_window``, ``max_payload_bytes``, ...).
        """
        store = store_from_url(store_url, **(store_options or {}))
        cache = None
        bus = options.pop("bus", None)
        if cache_url is not None:
            cache = cache_from_url(
                cache_url,
                namespace=namespace,
                ttl=timedelta(hours=session_ttl_hours).total_seconds(),
                **(cache_options or {}),
            )
            if bus is None:
                from agent_core.bus.valkey import ValkeyBus

                bus = ValkeyBus.from_url(cache_url, namespace=namespace)
        elif bus is None and store_url.startswith(("postgresql:", "postgres:")):
            from agent_core.bus.postgres import PostgresBus

            bus = PostgresBus(store_url, namespace=namespace)
        manager = cls(
            namespace=namespace,
            session_ttl_hours=session_ttl_hours,
            store=store,
            cache=cache,
            bus=bus,
            **options,
        )
        return manager

    async def open(self) -> None:
        """Open the store (applying migrations), the shared cache and the event bus."""
        if self._opened:
            return
        async with self._open_lock:
            if self._opened:
                return
            await self.store.open()
            try:
                if self.cache is not None:
                    await self.cache.open()
                await self.bus.open()
            except BaseException:
                await self.store.close()
                raise
            self._bus_generation = self.bus.generation
            bus, cache = self.bus, self.cache
            if (
                isinstance(bus, ValkeyBus)
                and isinstance(cache, ValkeyCache)
                and bus.shares_server_with(cache)
            ):
                self._carrier = (bus, cache)
            if self.local is not None:
                self._unsubscribe = self.bus.subscribe(self._on_event_for_local)
            self._opened = True

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
            self._replayer = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self.bus.close()
        if self.cache is not None:
            await self.cache.close()
        await self.store.close()

    # --- validation --------------------------------------------------------------------------

    def _encode(self, value: Any, what: str) -> None:
        codec.encode_object(value, what=what, max_bytes=self.max_payload_bytes)

    def _validate_session(self, session: AgentSession) -> None:
        codec.validate_session_id(session.session_id)
        _check_name(session.agent_type, "agent_type")
        _check_name(session.user_id, "user_id", allow_empty=True)
        if not isinstance(session.state, SessionState):
            raise ValidationError(f"state must be a SessionState, not {session.state!r}")
        self._encode(session.context, "context")
        self._encode(session.metadata, "metadata")
        for cp in session.pending_checkpoints:
            _check_name(cp.name, "checkpoint name")
            self._encode(cp.data, "checkpoint data")

    # --- cache plumbing ----------------------------------------------------------------------

    def _on_event_for_local(self, event: SessionEvent) -> None:
        if self.local is not None:
            self.local.drop(event.session_id, event.version)

    def _local_is_trusted(self) -> bool:
        """Whether in-process entries may be served without asking the store.

        Only when the bus guarantees that every invalidation published before this call has
        been applied (see ``EventBus.poll_is_complete``); if it lost its connection, everything
        the tier holds may be stale and is dropped. Otherwise the caller checks the version.
        """
        bus = self.bus
        bus.poll()
        if bus.generation != self._bus_generation:
            self._bus_generation = bus.generation
            if self.local is not None:
                self.local._entries.clear()
        return bus.poll_is_complete and bus.healthy

    def _cache_failed(self, what: str, exc: Exception) -> None:
        self.stats[f"cache_errors.{what}"] += 1
        logger.warning("cache %s failed, carrying on from the store: %s", what, exc)

    def _owe(self, session_id: str, version: int) -> None:
        """Remember an invalidation the shared cache did not take, to replay before reuse."""
        if session_id not in self._owed and len(self._owed) >= self.max_owed_invalidations:
            self._owed_overflow = True
            return
        self._owed[session_id] = max(version, self._owed.get(session_id, 0))
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.get_running_loop().create_task(self._replay_owed())

    async def _replay_owed(self) -> None:
        """Retry owed invalidations in the background, so that a cache that comes back is
        cleaned within ``replay_interval`` even if this process makes no further call."""
        while self._opened and (self._owed or self._owed_overflow):
            await asyncio.sleep(self.replay_interval)
            await self._shared_cache()

    async def _shared_cache(self) -> SessionCache | None:
        """The shared cache, once it has taken every invalidation this process owes it.

        Until then it is not used at all, so this process never reads back an entry that a
        write of its own made stale while the cache was unreachable.
        """
        cache = self.cache
        if cache is None or not (self._owed or self._owed_overflow):
            return cache
        try:
            if self._owed_overflow:
                await cache.clear()
                self._owed.clear()
                self._owed_overflow = False
            for session_id, version in list(self._owed.items()):
                await cache.invalidate(session_id, version)
                if self._owed.get(session_id) == version:
                    del self._owed[session_id]
        except CacheUnavailable as exc:
            self._cache_failed("replay", exc)
            return None
        return cache

    def _window(self, session: AgentSession) -> AgentSession:
        """A copy of ``session`` holding only the checkpoint window the store would return."""
        return replace(session, checkpoints=session.checkpoints[-self.checkpoint_window :])

    async def _remember_shared(self, snapshot: AgentSession) -> None:
        """Put ``snapshot`` in the shared cache (if there is one)."""
        if self.cache is None:
            return
        cache = await self._shared_cache()
        if cache is None:
            # An older copy may still sit in the unreachable cache: it must go when it returns.
            self._owe(snapshot.session_id, snapshot.version)
            return
        try:
            await cache.set(snapshot)
        except CacheUnavailable as exc:
            self._cache_failed("set", exc)
            self._owe(snapshot.session_id, snapshot.version)

    async def _forget(self, session_id: str, version: int) -> None:
        if self.local is not None:
            self.local.drop(session_id, version)
        await self._forget_shared([(session_id, version)])

    async def _publish(self, event: SessionEvent, *, fenced: bool = True) -> None:
        try:
            await self.bus.publish(event, fenced=fenced)
        except CacheUnavailable as exc:
            self._cache_failed("publish", exc)

    @staticmethod
    def _event(
        kind: EventKind, head: AgentSession | SweptSession, data: dict[str, Any] | None = None
    ) -> SessionEvent:
        return SessionEvent(
            kind=kind,
            session_id=head.session_id,
            version=DELETED_VERSION if kind is EventKind.DELETED else head.version,
            agent_type=head.agent_type,
            user_id=head.user_id,
            state=head.state.value,
            data=data or {},
        )

    async def _announce(
        self,
        kind: EventKind,
        head: AgentSession,
        data: dict[str, Any] | None = None,
        *,
        fenced: bool = True,
    ) -> None:
        await self._publish(self._event(kind, head, data), fenced=fenced)

    async def _share(
        self, events: Sequence[SessionEvent], entry: AgentSession | None = None
    ) -> None:
        """Bring the shared cache (if any) to each event's version and tell everyone: with
        ``entry`` (the version of the one event, windowed) that entry is cached, otherwise a
        tombstone says the version exists.

        When the bus and the cache are on one Valkey server, each slice of events is one
        command, sent before the next slice is queued: the bus is ordered, so other writers'
        changes wait behind one slice of a sweep's batch, not behind all of it. Otherwise cache
        and events go out at once (two round trips in flight, not one after the other): a
        reader told by an event before the cache write lands may still read the previous
        version, but only while this write has not returned; by then both are done.
        """
        if self.cache is None:
            await self._publish_many(events)
            return
        carrier = self._carrier
        if carrier is None:
            if entry is not None:
                cached = self._remember_shared(entry)
            else:
                cached = self._forget_shared([(e.session_id, e.version) for e in events])
            await asyncio.gather(cached, self._publish_many(events))
            return
        bus, cache = carrier
        for start in range(0, len(events), _TELL_SLICE):
            part = events[start : start + _TELL_SLICE]
            if await self._shared_cache() is None:
                for event in part:
                    self._owe(event.session_id, event.version)
                await self._publish_many(part)
                continue
            try:
                if entry is not None:
                    writes = [cache.entry_write(entry)]
                else:
                    writes = [cache.tombstone_write(e.session_id, e.version) for e in part]
                await bus.publish_many(part, writes=writes)
            except CacheUnavailable as exc:
                # Sent or not, it is unknown: the tombstones are owed; the events are lost
                # (events are at most once).
                self._cache_failed("invalidate", exc)
                for event in part:
                    self._owe(event.session_id, event.version)

    async def _changed(
        self,
        kind: EventKind,
        head: AgentSession,
        data: dict[str, Any] | None = None,
        *,
        appended: SessionCheckpoint | None = None,
    ) -> None:
        """After a committed atomic change: bring every tier up to date and tell everyone.

        When the in-process tier holds the version just before this one, the new version is
        that entry plus this change (the head carries every field; ``appended`` joins the
        window), so it is written through to that tier: this process's next read is a hit.
        The shared cache gets a tombstone at the new version (20 bytes) rather than the whole
        session: the next reader elsewhere fills it.
        """
        local = self.local
        if local is not None:
            current = self._advance(head, appended)
            if current is not None:
                local.put(current)
            else:
                local.drop(head.session_id, head.version)
        await self._share((self._event(kind, head, data),))

    def _advance(
        self, head: AgentSession, appended: SessionCheckpoint | None
    ) -> AgentSession | None:
        """The full session at ``head.version``, if the in-process tier holds the one before."""
        if self.local is None:
            return None
        previous = self.local.exact(head.session_id, head.version - 1)
        if previous is None:
            return None
        window = list(previous.checkpoints)
        if appended is not None:
            # The caller gets ``appended`` back: the cached copy must not share its data.
            window.append(replace(appended, data=codec.loads(codec.dumps(appended.data))))
        return replace(head, checkpoints=window[-self.checkpoint_window :])

    async def _changed_many(
        self, kind: EventKind, heads: Sequence[SweptSession], data: dict[str, Any]
    ) -> None:
        """``_changed`` for a batch: every tier and every listener told in one go each."""
        if not heads:
            return
        if self.local is not None:
            for head in heads:
                self.local.drop(head.session_id, head.version)
        await self._share([self._event(kind, head, data) for head in heads])

    async def _forget_shared(self, items: list[tuple[str, int]]) -> None:
        if self.cache is None:
            return
        cache = await self._shared_cache()
        if cache is not None:
            try:
                await cache.invalidate_many(items)
                return
            except CacheUnavailable as exc:
                self._cache_failed("invalidate", exc)
        # Unreachable, or still owed older invalidations: these join them.
        for session_id, version in items:
            self._owe(session_id, version)

    async def _publish_many(self, events: Sequence[SessionEvent]) -> None:
        try:
            await self.bus.publish_many(events)
        except CacheUnavailable as exc:
            self._cache_failed("publish", exc)

    # --- the reference API -------------------------------------------------------------------

    async def create_session(
        self,
        agent_type: str,
        user_id: str = "",
        context: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AgentSession:
        """Create and store a new active session with a ``session_created`` checkpoint."""
        session = AgentSession(
            agent_type=agent_type,
            user_id=user_id,
            context={} if context is None else context,
            metadata={} if metadata is None else metadata,
        )
        session.checkpoint("session_created", {"agent_type": agent_type, "user_id": user_id})
        self._validate_session(session)
        await self.open()
        head = await self.store.create(session)
        session.version = head.version
        session.updated_at = head.updated_at
        session.checkpoint_count = head.checkpoint_count
        for seq, cp in enumerate(session.checkpoints, start=1):
            cp.seq = seq
        # Nobody can hold an older copy of a new session: no tier needs invalidating, so the
        # event needs no fence, and the shared cache is filled by the first reader instead.
        if self.local is not None:
            self.local.put(self._window(session))
        await self._announce(EventKind.CREATED, head, fenced=False)
        logger.debug("created session %s for agent %r", session.session_id, agent_type)
        return session

    async def get_session(self, session_id: str) -> AgentSession | None:
        """The live session with its most recent checkpoints, or ``None``.

        Lookup order: in-process tier, shared cache, store; a miss fills the faster tiers.
        """
        codec.validate_session_id(session_id)
        if not self._opened:
            await self.open()
        local = self.local
        if local is not None:
            trusted = self._local_is_trusted()
            hit = local.peek(session_id)
            if hit is not None:
                if trusted:
                    self.stats["hits.local"] += 1
                    return hit
                # No shared invalidation channel: one cheap version read proves freshness.
                if await self.store.get_version(session_id) == hit.version:
                    self.stats["hits.local"] += 1
                    return hit
                local.drop(session_id, hit.version + 1)
        cache = await self._shared_cache()
        if cache is not None:
            try:
                cached = await cache.get(session_id)
            except CacheUnavailable as exc:
                self._cache_failed("get", exc)
                cached = None
            if cached is not None:
                self.stats["hits.shared"] += 1
                if local is not None:
                    local.put(cached)
                return cached
        session = await self.store.get(session_id, window=self.checkpoint_window)
        self.stats["reads.store"] += 1
        if session is not None:
            # The store returned the window already; the tiers keep their own copies.
            if local is not None:
                local.put(session)
            await self._remember_shared(session)
        return session

    async def update_session(self, session: AgentSession) -> None:
        """Store ``session`` if nobody changed it since it was read (compare-and-set).

        Heartbeats the session, stores its state, context and metadata, and appends only the
        checkpoints added since it was read. Raises ``ConflictError`` when the stored version
        moved on (re-read and retry), ``SessionNotFound``, ``InvalidTransition``.
        On success ``session.version`` and the new checkpoints' ``seq`` are updated in place.
        """
        self._validate_session(session)
        await self.open()
        pending = session.pending_checkpoints
        previous_heartbeat = session.last_heartbeat
        session.heartbeat()
        try:
            head = await self.store.update(session, pending)
        except BaseException:
            session.last_heartbeat = previous_heartbeat
            raise
        session.version = head.version
        session.updated_at = head.updated_at
        session.checkpoint_count = head.checkpoint_count
        first = head.checkpoint_count - len(pending) + 1
        for seq, cp in enumerate(pending, start=first):
            cp.seq = seq
        snapshot = self._window(session)
        if self.local is not None:
            self.local.put(snapshot)
        await self._share((self._event(EventKind.UPDATED, head),), snapshot)

    async def delete_session(self, session_id: str) -> bool:
        """Soft-delete: hidden from reads, kept for audit. False if no live session had the id."""
        codec.validate_session_id(session_id)
        await self.open()
        deleted = await self.store.delete(session_id)
        # Tombstone every tier even when the store found nothing live: a tier may still hold it.
        if not deleted:
            await self._forget(session_id, DELETED_VERSION)
            return False
        if self.local is not None:
            self.local.drop(session_id, DELETED_VERSION)
        head = AgentSession(agent_type="", session_id=session_id, state=SessionState.DELETED)
        await self._share((self._event(EventKind.DELETED, head),))
        return True

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
        await self.open()
        cutoff = utcnow() - max_age
        total = 0
        telling: asyncio.Task[None] | None = None
        try:
            while True:
                heads = await self.store.sweep_stale(cutoff, limit=self.cleanup_batch_size)
                # Tell the caches and listeners about this batch while the store sweeps the
                # next one; the call returns only once every batch has been told.
                if telling is not None:
                    await telling
                telling = asyncio.ensure_future(
                    self._changed_many(EventKind.STATE, heads, {"reason": "heartbeat_timeout"})
                )
                total += len(heads)
                if len(heads) < self.cleanup_batch_size:
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
    ) -> SessionCheckpoint:
        """Append one checkpoint with the next ``seq``; never conflicts.

        With ``idempotency_key``, a retry stores nothing and returns the first stored one.
        """
        codec.validate_session_id(session_id)
        _check_lease(session_id, lease)
        _check_name(name, "checkpoint name")
        if idempotency_key is not None:
            _check_name(idempotency_key, "idempotency_key")
        payload = {} if data is None else data
        self._encode(payload, "checkpoint data")
        await self.open()
        result = await self.store.append_checkpoint(
            session_id,
            SessionCheckpoint(name=name, data=payload),
            idempotency_key=idempotency_key,
            fence=lease,
        )
        if result.created:
            await self._changed(
                EventKind.CHECKPOINT,
                result.session,
                {"seq": result.checkpoint.seq, "name": name},
                appended=result.checkpoint,
            )
        return result.checkpoint

    async def heartbeat(self, session_id: str, *, lease: Lease | None = None) -> AgentSession:
        """Record a heartbeat (and renew ``lease`` if given); returns the session head."""
        codec.validate_session_id(session_id)
        _check_lease(session_id, lease)
        await self.open()
        head = await self.store.heartbeat(session_id, utcnow(), fence=lease)
        await self._changed(EventKind.HEARTBEAT, head)
        return head

    async def patch_context(
        self, session_id: str, changes: dict[str, Any], *, lease: Lease | None = None
    ) -> AgentSession:
        """Merge ``changes`` into the context (RFC 7396: ``None`` removes a key).

        Returns the session head.
        """
        codec.validate_session_id(session_id)
        _check_lease(session_id, lease)
        self._encode(changes, "context changes")
        await self.open()
        head = await self.store.patch_context(session_id, changes, fence=lease)
        await self._changed(EventKind.CONTEXT, head, {"keys": sorted(changes)})
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
        _check_lease(session_id, lease)
        try:
            target = SessionState(state)
        except ValueError:
            raise ValidationError(f"unknown session state {state!r}") from None
        if target is SessionState.DELETED:
            raise ValidationError("use delete_session() to delete a session")
        if reason is not None:
            _check_name(reason, "reason", allow_empty=True)
        await self.open()
        head = await self.store.set_state(session_id, target, reason=reason, fence=lease)
        await self._changed(EventKind.STATE, head, {"reason": reason} if reason else None)
        return head

    async def list_checkpoints(
        self, session_id: str, after_seq: int = 0, limit: int = 100
    ) -> list[SessionCheckpoint]:
        """Page through the whole trail: checkpoints with ``seq > after_seq``, oldest first."""
        codec.validate_session_id(session_id)
        if limit < 1 or limit > 10_000:
            raise ValidationError("limit must be between 1 and 10000")
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
        if limit < 1 or limit > 10_000:
            raise ValidationError("limit must be between 1 and 10000")
        if after is not None:
            codec.validate_session_id(after)
        try:
            wanted = None if state is None else SessionState(state)
        except ValueError:
            raise ValidationError(f"unknown session state {state!r}") from None
        await self.open()
        return await self.store.list_sessions(
            state=wanted, agent_type=agent_type, user_id=user_id, limit=limit, after=after
        )

    async def purge(self, *, session_id: str | None = None, user_id: str | None = None) -> int:
        """Remove sessions for good (any state), by id or by user; returns how many."""
        if session_id is None and user_id is None:
            raise ValidationError("purge needs a session_id or a user_id")
        if session_id is not None:
            codec.validate_session_id(session_id)
        await self.open()
        ids = [session_id] if session_id is not None else []
        if user_id is not None:
            ids += [s.session_id for s in await self._all_sessions(user_id=user_id)]
        count = await self.store.purge(session_id=session_id, user_id=user_id)
        for sid in ids:
            await self._forget(sid, DELETED_VERSION)
            head = AgentSession(agent_type="", session_id=sid, state=SessionState.DELETED)
            await self._announce(EventKind.PURGED, head)
        return count

    async def _all_sessions(self, *, user_id: str) -> list[AgentSession]:
        out: list[AgentSession] = []
        after = None
        while True:
            page = await self.store.list_sessions(
                state=None, user_id=user_id, limit=1000, after=after
            )
            out += page
            if len(page) < 1000:
                return out
            after = page[-1].session_id

    # --- leases ------------------------------------------------------------------------------

    async def claim(self, session_id: str, owner: str, ttl: timedelta) -> Lease:
        """Take the session's lease; ``LeaseHeld`` while another owner's lease is live."""
        codec.validate_session_id(session_id)
        _check_name(owner, "owner")
        if ttl <= timedelta(0):
            raise ValidationError("lease ttl must be positive")
        await self.open()
        lease = await self.store.claim(session_id, owner, ttl)
        await self._announce_lease(EventKind.CLAIMED, lease)
        return lease

    async def current_lease(self, session_id: str) -> Lease | None:
        """The live lease on the session, or ``None`` (read-only)."""
        codec.validate_session_id(session_id)
        await self.open()
        return await self.store.current_lease(session_id)

    async def renew(self, lease: Lease, ttl: timedelta) -> Lease:
        if ttl <= timedelta(0):
            raise ValidationError("lease ttl must be positive")
        await self.open()
        return await self.store.renew(lease, ttl)

    async def release(self, lease: Lease) -> None:
        await self.open()
        await self.store.release(lease)
        await self._announce_lease(EventKind.RELEASED, lease)

    async def _announce_lease(
        self, kind: EventKind, lease: Lease, *, expired: bool = False
    ) -> None:
        # Leases do not change the session's version, so caches stay valid (version 0).
        data: dict[str, Any] = {"owner": lease.owner, "token": lease.token}
        if expired:
            data["expired"] = True
        event = SessionEvent(kind=kind, session_id=lease.session_id, version=0, data=data)
        await self._publish(event, fenced=False)

    async def reap(
        self, max_age: timedelta = timedelta(hours=48), *, batch_size: int | None = None
    ) -> tuple[int, int]:
        """One reaper round: clear expired leases, then fail stale sessions.

        Safe to run in several processes at once: each batch is one short transaction that
        skips rows another reaper holds, so no lease or session is processed twice.
        Returns ``(expired leases, failed sessions)``.
        """
        await self.open()
        limit = batch_size or self.cleanup_batch_size
        expired = 0
        while True:
            leases = await self.store.expire_leases(utcnow(), limit=limit)
            for lease in leases:
                await self._announce_lease(EventKind.RELEASED, lease, expired=True)
            expired += len(leases)
            if len(leases) < limit:
                break
        return expired, await self.cleanup_stale_sessions(max_age)

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
            self.bus,
            agent_type=agent_type,
            user_id=user_id,
            session_id=session_id,
            kinds=kinds,
            max_queue=max_queue,
            before_start=self.open,
        )
