"""Session events and the bus that carries them between processes.

Subscribers of ``SessionManager.events()`` see what happened. No cache relies on events: the
coherence layer proves freshness by versions (``agent_core.tiers.coherence``).

Delivery is at most once and in publish order per publisher. A bus that loses its connection
bumps ``generation``: whoever keeps state derived from events must treat it as possibly stale
at that moment, because events may have been missed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from agent_core import codec
from agent_core.resource import AsyncResource
from agent_core.sessions.session_models import utcnow

__all__ = ["EventBus", "EventKind", "SessionEvent", "Subscriber"]


class EventKind(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    CHECKPOINT = "checkpoint"
    CONTEXT = "context"
    STATE = "state"
    HEARTBEAT = "heartbeat"
    CLAIMED = "claimed"
    RELEASED = "released"
    DELETED = "deleted"
    PURGED = "purged"


@dataclass(frozen=True)
class SessionEvent:
    kind: EventKind
    session_id: str
    version: int
    agent_type: str = ""
    user_id: str = ""
    state: str = ""
    at: datetime = field(default_factory=utcnow)
    data: dict[str, Any] = field(default_factory=dict)
    tenant: str = ""
    """The tenant of the session (``""``: none); a tenant-bound manager's streams see only
    their tenant's events."""

    def encode(self) -> bytes:
        out: dict[str, Any] = {
            "k": self.kind.value,
            "s": self.session_id,
            "v": self.version,
            "a": self.agent_type,
            "u": self.user_id,
            "st": self.state,
            "t": self.at.isoformat(),
            "d": self.data,
        }
        if self.tenant:
            out["n"] = self.tenant
        return codec.dumps(out)

    @classmethod
    def decode(cls, raw: bytes | str) -> SessionEvent:
        obj = codec.loads(raw)
        return cls(
            kind=EventKind(obj["k"]),
            session_id=obj["s"],
            version=int(obj["v"]),
            agent_type=obj.get("a", ""),
            user_id=obj.get("u", ""),
            state=obj.get("st", ""),
            at=datetime.fromisoformat(obj["t"]),
            data=obj.get("d") or {},
            tenant=obj.get("n") or "",
        )


Subscriber = Callable[[SessionEvent], None]


class EventBus(AsyncResource, ABC):
    """Publishes session events and hands every received event to the subscribers.

    Subscribers are plain callables run on the event loop thread; they must not block.
    A publisher's own events reach its own subscribers too.
    """

    generation: int = 0
    """Bumped whenever events may have been missed (connection lost and re-established)."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Register ``subscriber``; return a function that unregisters it."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def _dispatch(self, event: SessionEvent) -> None:
        for subscriber in list(self._subscribers):
            subscriber(event)

    @property
    def is_shared(self) -> bool:
        """True when events reach other processes."""
        return False

    @property
    def healthy(self) -> bool:
        """True while the bus is sure it has missed no event since ``generation`` changed."""
        return True

    def poll(self) -> None:
        """Dispatch, synchronously, every event already received but not yet handled."""

    @abstractmethod
    async def publish(self, event: SessionEvent, *, fenced: bool = True) -> None:
        """Send ``event`` to every subscriber in every process. Raises ``CacheUnavailable``.

        With ``fenced``, wait until the event is sent (and raise if it could not be); a bus
        may wait longer (``ValkeyBus(fence=True)``: until every subscriber's copy has left the
        server). Without, it may return at once and drop the event on failure.
        """

    async def publish_many(self, events: Sequence[SessionEvent], *, fenced: bool = True) -> None:
        """``publish`` each event, in order; backends send them in one go."""
        for event in events:
            await self.publish(event, fenced=fenced)
