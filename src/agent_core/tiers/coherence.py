"""Coherence: the one place that keeps every tier true to the store.

The manager validates, calls the store, and hands each committed result here. This module owns:

* **Read-through**: in-process tier -> shared cache -> store, filling the faster tiers.
* **Trust**: an in-process hit is served only once its version is proven current, by the shared
  cache's 40-byte header (one round trip) or, without a shared cache, by the store's version
  (one indexed read). Freshness never depends on when an event reaches this process.
  Shared-cache entries are trusted only while they carry the store's current *tier epoch*, and
  only while this process confirmed that epoch less than ``trust_window`` seconds ago.
* **After a committed write**: the new version, or a tombstone at it, in every tier, and the
  event, as one command on Valkey.
* **When the shared cache misses a write** (unreachable, timed out): the epoch is bumped in the
  store before the write returns, so every process stops trusting every cached entry within
  ``trust_window``; the events are kept and sent again once the tier is back.

The guarantees, and the tests that prove them, are listed in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from agent_core.bus.base import EventKind, SessionEvent
from agent_core.cache.base import DELETED_VERSION
from agent_core.cache.local import LocalCache, decode
from agent_core.errors import AgentCoreError, CacheUnavailable
from agent_core.logthrottle import LogThrottle
from agent_core.resource import AsyncResource
from agent_core.sessions.session_models import AgentSession, Lease, SessionCheckpoint
from agent_core.stores.base import SessionRef, SessionStore
from agent_core.tiers.base import Change, SharedTier

__all__ = ["Coherence", "event"]

logger = logging.getLogger(__name__)

_SLICE = 64  # sessions per tier command when a sweep or a purge tells everyone

Head = AgentSession | SessionRef


def event(kind: EventKind, head: Head, data: dict[str, Any] | None = None) -> SessionEvent:
    """The event of ``kind`` about ``head``: every event names the session's agent and user."""
    gone = kind in (EventKind.DELETED, EventKind.PURGED)
    return SessionEvent(
        kind=kind,
        session_id=head.session_id,
        version=DELETED_VERSION if gone else head.version,
        agent_type=head.agent_type,
        user_id=head.user_id,
        state="deleted" if gone else head.state.value,
        data=data or {},
        tenant=head.tenant,
    )


class Coherence(AsyncResource):
    """Keeps ``local`` (this process's tier, optional) and ``tier`` (shared) true to ``store``.

    ``stats`` counts hits per tier (``hits.local``, ``hits.shared``, ``reads.store``) and tier
    failures (``cache_errors.<what>``).
    """

    def __init__(
        self,
        store: SessionStore,
        tier: SharedTier,
        local: LocalCache | None,
        *,
        namespace: str,
        window: int,
        stats: Counter[str],
        trust_window: float = 1.0,
        epoch_interval: float = 0.25,
        replay_interval: float = 0.1,
        max_owed_events: int = 10_000,
        tenant: str | None = None,
    ) -> None:
        if not 0 < epoch_interval < trust_window:
            raise ValueError("epoch_interval must be positive and shorter than trust_window")
        self.store = store
        self.tier = tier
        self.local = local
        self.namespace = namespace
        self.window = window
        self.stats = stats
        self.trust_window = trust_window
        self.epoch_interval = epoch_interval
        self.replay_interval = replay_interval
        self.max_owed_events = max_owed_events
        # Tenant-bound: tiers are shared by every tenant of the namespace, so an entry of
        # another tenant's session is a miss here (the store, confined too, then finds nothing).
        self.tenant = tenant
        self.epoch = 0
        self._confirmed_at = -float("inf")  # time.monotonic() of the last epoch confirmation
        self._owed_events: list[SessionEvent] = []
        self._owed_bump = False
        self._tasks: list[asyncio.Task[None]] = []
        self._replayer: asyncio.Task[None] | None = None
        self._opened = False
        self._log = LogThrottle(logger)

    # --- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the shared tier; with a caching tier, learn the epoch before any read."""
        await self.tier.open()
        try:
            if self.tier.caches:
                await self._confirm_epoch()
        except BaseException:
            await self.tier.close()
            raise
        self._opened = True
        if self.tier.caches:
            self._tasks.append(asyncio.get_running_loop().create_task(self._watch_epoch()))

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        tasks = [*self._tasks, *([self._replayer] if self._replayer else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._replayer = None
        if self._owed_events:
            with contextlib.suppress(CacheUnavailable):
                await self.tier.announce(self._owed_events)
        await self.tier.close()

    # --- trust ---------------------------------------------------------------------------------

    def _trusted(self) -> bool:
        return time.monotonic() - self._confirmed_at < self.trust_window

    async def _confirm_epoch(self) -> None:
        """Read the store's epoch for this namespace; a cache server that restarted since the
        store last saw it (it may have come back with old data) bumps the epoch first."""
        started = time.monotonic()
        current = await self.store.tier_epoch(self.namespace)
        try:
            server = await self.tier.identity()
        except CacheUnavailable:
            server = ""
        if server and server != current.cache_id:
            await self.store.bump_tier_epoch(self.namespace, cache_id=server)
            current = await self.store.tier_epoch(self.namespace)
        if current.epoch != self.epoch:
            self.epoch = current.epoch
            if self.local is not None:
                self.local.clear()
        self._confirmed_at = started

    async def _watch_epoch(self) -> None:
        # A cancel from close() that lands inside a driver call may come out of it as a
        # CacheUnavailable or StoreUnavailable (swallowed below); stop on close or on a
        # pending cancel all the same, or close() would wait for this task for ever.
        task = asyncio.current_task()
        while self._opened:
            await asyncio.sleep(self.epoch_interval)
            try:
                await self._confirm_epoch()
            except AgentCoreError as exc:
                logger.debug("cannot confirm the tier epoch: %s", exc)
            if task is not None and task.cancelling():
                raise asyncio.CancelledError

    # --- reads ---------------------------------------------------------------------------------

    async def read(self, session_id: str) -> AgentSession | None:
        local = self.local
        if local is not None:
            entry = local.peek(session_id)
            if entry is not None:
                if await self._is_current(session_id, entry.version):
                    found = decode(entry)
                    if self._mine(found):
                        self.stats["hits.local"] += 1
                        return found
                local.discard(session_id)
        tier = self.tier
        trusted = tier.caches and self._trusted()
        epoch = self.epoch
        if trusted:
            try:
                cached = await tier.get(session_id, epoch)
            except CacheUnavailable as exc:
                self._failed("get", exc)
                cached = None
            if cached is not None and not self._mine(cached):
                cached = None
            if cached is not None:
                self.stats["hits.shared"] += 1
                if local is not None:
                    local.put(cached)
                return cached
        started = time.monotonic()
        session = await self.store.get(session_id, window=self.window)
        self.stats["reads.store"] += 1
        if session is not None:
            if local is not None:
                local.put(session)
            # A fill older than half a tombstone's life could outlive the tombstone it raced.
            if trusted and time.monotonic() - started < tier.fill_deadline:
                try:
                    await tier.fill(session, epoch)
                except CacheUnavailable as exc:
                    self._failed("set", exc)
        return session

    def _mine(self, session: AgentSession) -> bool:
        return self.tenant is None or session.tenant == self.tenant

    async def _is_current(self, session_id: str, version: int) -> bool:
        if self.tier.caches and self._trusted():
            try:
                header = await self.tier.header(session_id)
            except CacheUnavailable as exc:
                self._failed("get", exc)
                header = None
            if header is not None and header[1] == self.epoch:
                return header[0] == version
        return await self.store.get_version(session_id) == version

    # --- after committed writes ----------------------------------------------------------------

    async def created(self, session: AgentSession) -> None:
        """A new session: nobody can hold an older copy, so only this process's tier and the
        listeners hear of it, and the shared cache is filled by the first reader."""
        if self.local is not None:
            self.local.put(self._windowed(session))
        await self._announce([event(EventKind.CREATED, session)], wait=False)

    async def changed(
        self,
        kind: EventKind,
        head: AgentSession,
        data: dict[str, Any] | None = None,
        appended: Sequence[SessionCheckpoint] = (),
        *,
        write_through: bool = True,
    ) -> None:
        """After one committed change whose new head is ``head``.

        When this process's tier holds the version just before, the new version is that entry
        plus this change (the head carries every field, ``appended`` joins the window): it is
        written through to this tier, so this process's next read is a hit. The shared cache
        gets the change as a step: an entry at the version before is advanced by it (the next
        reader anywhere gets a hit), anything else becomes a tombstone at the new version.
        Without ``write_through`` (the caller does not know which change made ``head``), every
        tier only drops what it holds.
        """
        local = self.local
        if local is not None and not (write_through and local.advance(head, appended, self.window)):
            local.discard(head.session_id)
        if write_through:
            # Appends and heartbeats leave context and metadata alone: the step need not carry them.
            same = kind in (EventKind.CHECKPOINT, EventKind.HEARTBEAT)
            change = Change(
                head.session_id, head.version, None, head, tuple(appended), self.window, same
            )
        else:
            change = Change(head.session_id, head.version)
        await self._commit([change], [event(kind, head, data)])

    async def deleted(self, session_id: str, ref: SessionRef | None) -> None:
        """After a soft delete (``ref``) or a delete that found nothing live (``None``): every
        tier is tombstoned either way, since one may still hold the session."""
        if self.local is not None:
            self.local.discard(session_id)
        if ref is None and self.tenant is not None:
            # The id may be another tenant's live session: a tombstone would keep it out of
            # the shared cache. A delete that was missed by the cache bumped the epoch anyway.
            return
        events = [] if ref is None else [event(EventKind.DELETED, ref)]
        await self._commit([Change(session_id, DELETED_VERSION)], events)

    async def purged(self, refs: Sequence[SessionRef]) -> None:
        """After a purge: returns once no process can read what was purged, from any tier."""
        if not refs:
            return
        if self.local is not None:
            for ref in refs:
                self.local.discard(ref.session_id)
        changes = [Change(ref.session_id, DELETED_VERSION) for ref in refs]
        missed = await self._commit_slices(changes, [event(EventKind.PURGED, r) for r in refs])
        if missed or (not self.tier.caches and await self._others_cache()):
            # Caches this tier could not reach (or, without one, other applications' caches):
            # wait until no process can still trust an entry of the epoch just left.
            await self._invalidate_everywhere(None if not self.tier.caches else self.namespace)
            await asyncio.sleep(self.trust_window)

    async def _others_cache(self) -> bool:
        """Whether processes of other managers may read this store through a shared cache."""
        return not self.store.in_process and await self.store.caches_in_use()

    async def swept(self, refs: Sequence[SessionRef], data: dict[str, Any]) -> None:
        """After a batch of the stale sweep; without a shared cache of its own, the sweep
        bumps every namespace's epoch, so applications that cache this store see it too."""
        if not refs:
            return
        if self.local is not None:
            for ref in refs:
                self.local.discard(ref.session_id)
        changes = [Change(ref.session_id, ref.version) for ref in refs]
        await self._commit_slices(changes, [event(EventKind.STATE, r, data) for r in refs])
        if not self.tier.caches:
            await self._invalidate_everywhere(None)

    async def lease_changed(
        self, kind: EventKind, leases: Iterable[Lease], *, expired: bool = False
    ) -> None:
        """Announce claims and releases; leases change no version, so no tier changes."""
        leases = list(leases)
        if not leases:
            return
        by_id = {
            ref.session_id: ref
            for ref in await self.store.describe([lease.session_id for lease in leases])
        }
        events = []
        for lease in leases:
            data: dict[str, Any] = {"owner": lease.owner, "token": lease.token}
            if expired:
                data["expired"] = True
            ref = by_id.get(lease.session_id)
            if ref is not None:
                events.append(event(kind, ref, data))
            else:
                events.append(
                    SessionEvent(kind, lease.session_id, 0, data=data, tenant=self.tenant or "")
                )
        await self._announce(events, wait=False)

    # --- plumbing ------------------------------------------------------------------------------

    def _windowed(self, session: AgentSession) -> AgentSession:
        return replace(session, checkpoints=session.checkpoints[-self.window :])

    async def _commit_slices(
        self, changes: Sequence[Change], events: Sequence[SessionEvent]
    ) -> bool:
        """``_commit`` slice by slice, so other writers wait behind one slice, not a batch.
        Returns True if the shared cache missed any of them."""
        missed = False
        for start in range(0, len(changes), _SLICE):
            end = start + _SLICE
            missed |= await self._commit(changes[start:end], events[start:end])
        return missed

    async def _commit(self, changes: Sequence[Change], events: Sequence[SessionEvent]) -> bool:
        """Tell the shared tier; returns True if its cache may have missed the changes."""
        if not self.tier.caches:
            await self._announce(events)
            return False
        try:
            await self.tier.commit(changes, events, self.epoch)
        except CacheUnavailable as exc:
            self._failed("invalidate", exc)
            self._owe(events)
            await self._invalidate_everywhere(self.namespace)
            return True
        return False

    async def _announce(self, events: Sequence[SessionEvent], *, wait: bool = True) -> None:
        try:
            await self.tier.announce(events, wait=wait)
        except CacheUnavailable as exc:
            self._failed("publish", exc)
            self._owe(events)

    async def _invalidate_everywhere(self, namespace: str | None) -> None:
        """Bump the epoch in the store (``None``: every namespace's), so no process trusts
        a cached entry written before; if the store is unreachable, keep trying."""
        try:
            await self.store.bump_tier_epoch(namespace)
        except AgentCoreError as exc:
            self._log.warning("bump", "cannot bump the tier epoch yet, will retry: %s", exc)
            self._owed_bump = True
            self._start_replayer()
            return
        if self.tier.caches:
            with contextlib.suppress(AgentCoreError):
                await self._confirm_epoch()

    def _owe(self, events: Sequence[SessionEvent]) -> None:
        room = self.max_owed_events - len(self._owed_events)
        self._owed_events.extend(events[: max(room, 0)])
        if self._owed_events:
            self._start_replayer()

    def _start_replayer(self) -> None:
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.get_running_loop().create_task(self._replay())

    async def _replay(self) -> None:
        """Send owed events (and an owed epoch bump) again until they get through."""
        while self._owed_events or self._owed_bump:
            await asyncio.sleep(self.replay_interval)
            if self._owed_bump:
                try:
                    await self.store.bump_tier_epoch(None)
                    self._owed_bump = False
                except AgentCoreError:
                    continue
            if self._owed_events:
                events, self._owed_events = self._owed_events, []
                try:
                    await self.tier.announce(events)
                except CacheUnavailable:
                    self._owed_events[:0] = events

    def _failed(self, what: str, exc: Exception) -> None:
        self.stats[f"cache_errors.{what}"] += 1
        self._log.warning(what, "shared tier %s failed, carrying on from the store: %s", what, exc)
