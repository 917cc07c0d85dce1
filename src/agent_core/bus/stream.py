"""A filtered subscription to a bus, consumed as an async iterator.

The bus holds a stream only weakly: ``async for event in manager.events(): ... break`` drops the
stream without closing it, and a strong reference from the bus would keep it subscribed (and
its queue filling) for the life of the process. Once such a stream is garbage-collected, a
``weakref.finalize`` unsubscribes it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Self

from agent_core.bus.base import EventBus, EventKind, SessionEvent
from agent_core.resource import AsyncResource

__all__ = ["EventStream"]


class _WeakSubscriber:
    """A bus subscriber that calls a bound method without keeping its object alive.

    Between the object's death and the finalizer's unsubscribe, events are ignored.
    """

    __slots__ = ("_method",)

    def __init__(self, method: Callable[[SessionEvent], None]) -> None:
        self._method = weakref.WeakMethod(method)

    def __call__(self, event: SessionEvent) -> None:
        method = self._method()
        if method is not None:
            method(event)


class EventStream(AsyncResource):
    """Events that match every given filter, in arrival order.

    It subscribes on ``open()`` / ``__aenter__`` (or on first iteration), so events published after
    ``async with manager.events(...) as stream:`` are never missed. Delivery is at most once;
    a reader that falls ``max_queue`` events behind loses the oldest (counted in ``dropped``).
    ``close()`` unsubscribes; so does garbage collection of a stream nobody closed.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        agent_type: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        kinds: Iterable[EventKind | str] | None = None,
        max_queue: int = 10_000,
        before_start: Callable[[], Awaitable[None]] | None = None,
        tenant: str | None = None,
    ) -> None:
        self._bus = bus
        self._tenant = tenant
        self._agent_type = agent_type
        self._user_id = user_id
        self._session_id = session_id
        self._kinds = None if kinds is None else frozenset(EventKind(k) for k in kinds)
        self._queue: asyncio.Queue[SessionEvent] = asyncio.Queue(max_queue)
        self._before_start = before_start
        self._unsubscribe: weakref.finalize[[], EventStream] | None = None
        self.dropped = 0

    def _accept(self, event: SessionEvent) -> None:
        if self._tenant is not None and event.tenant != self._tenant:
            return
        if self._kinds is not None and event.kind not in self._kinds:
            return
        if self._session_id is not None and event.session_id != self._session_id:
            return
        if self._agent_type is not None and event.agent_type != self._agent_type:
            return
        if self._user_id is not None and event.user_id != self._user_id:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def open(self) -> None:
        if self._unsubscribe is None:
            if self._before_start is not None:
                await self._before_start()
            unsubscribe = self._bus.subscribe(_WeakSubscriber(self._accept))
            # The finalizer must not reference the stream, or the stream would never die.
            finalizer = weakref.finalize(self, unsubscribe)
            finalizer.atexit = False  # nothing to tidy up when the interpreter exits
            self._unsubscribe = finalizer

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()  # a finalizer runs its callback at most once
            self._unsubscribe = None

    async def get(self, timeout: float | None = None) -> SessionEvent:
        """The next event; ``TimeoutError`` if none arrives within ``timeout`` seconds."""
        await self.open()
        return await asyncio.wait_for(self._queue.get(), timeout)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionEvent:
        return await self.get()
