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
* Cost: appending a checkpoint and reading a session are O(1) in the length of the trail.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from agent_core.resource import AsyncResource
from agent_core.sessions.session_models import AgentSession, Lease, SessionCheckpoint, SessionState

__all__ = ["AppendResult", "SessionStore", "SweptSession"]


@dataclass(frozen=True)
class AppendResult:
    """The stored checkpoint, and the session head after the append."""

    checkpoint: SessionCheckpoint
    session: AgentSession
    created: bool
    """False when an idempotency key matched an earlier append: nothing new was stored."""


class SweptSession(NamedTuple):
    """A session ``sweep_stale`` failed: what telling caches and listeners about it takes.

    ``version`` is the session's version after the sweep and ``state`` its new state
    (``failed``); the context is not read back.
    """

    session_id: str
    version: int
    agent_type: str
    user_id: str
    state: SessionState


class SessionStore(AsyncResource, ABC):
    """Durable storage of sessions, their checkpoint trail and their leases."""

    url: str = ""
    """The store's URL with any password hidden (for logs and ``repr``)."""

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

        Returns the stored head. Raises ``ConflictError`` if the id exists (even deleted).
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
        """Compare-and-set: store ``session``'s state, context, metadata and heartbeat, and
        append ``new_checkpoints``, if the stored version still equals ``session.version``.

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
    ) -> AppendResult:
        """Append one checkpoint with the next seq, whatever else changed concurrently.

        With an ``idempotency_key`` already used on this session, stores nothing and returns
        the checkpoint stored the first time (``created=False``).
        """

    @abstractmethod
    async def heartbeat(
        self, session_id: str, at: datetime, *, fence: Lease | None = None
    ) -> AgentSession:
        """Set ``last_heartbeat`` to ``at``. With a live fence, also extend that lease by the
        ttl it was last granted for, counted from ``at``."""

    @abstractmethod
    async def patch_context(
        self, session_id: str, changes: dict[str, Any], *, fence: Lease | None = None
    ) -> AgentSession:
        """Merge ``changes`` into the context as an RFC 7396 JSON merge patch (a ``None`` value
        removes the key; nested objects merge), atomically with respect to every other write."""

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
        when the new state is ``failed``."""

    @abstractmethod
    async def delete(self, session_id: str) -> bool:
        """Soft delete: True if a live session became deleted, False if none was live."""

    @abstractmethod
    async def purge(self, *, session_id: str | None = None, user_id: str | None = None) -> int:
        """Remove sessions and their checkpoints for good (any state); return how many."""

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
    async def sweep_stale(self, cutoff: datetime, *, limit: int) -> list[SweptSession]:
        """Mark at most ``limit`` active sessions whose heartbeat is older than ``cutoff`` as
        failed (``context["failure_reason"] = "heartbeat_timeout"``) and return them, each as
        a ``SweptSession`` (its id, new version, agent type, user and state; no context).

        One short transaction; concurrent sweepers never process the same session twice.
        """

    @abstractmethod
    async def claim(self, session_id: str, owner: str, ttl: timedelta) -> Lease:
        """Take the session's lease for ``ttl`` with a new, larger fencing token.

        Raises ``LeaseHeld`` while another owner's lease is live (the same owner re-claiming
        gets a new token), ``SessionNotFound`` for an unknown or deleted session.
        """

    @abstractmethod
    async def renew(self, lease: Lease, ttl: timedelta) -> Lease:
        """Extend a live ``lease`` to now + ``ttl``; ``LeaseLost`` if it is not live."""

    @abstractmethod
    async def release(self, lease: Lease) -> None:
        """Give a live lease up so anyone may claim at once; ``LeaseLost`` if it is not live."""

    @abstractmethod
    async def expire_leases(self, now: datetime, *, limit: int) -> list[Lease]:
        """Clear at most ``limit`` leases that expired before ``now`` and return them."""

    @abstractmethod
    async def current_lease(self, session_id: str) -> Lease | None:
        """The live lease on the session, or ``None``."""
