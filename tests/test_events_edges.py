"""Edges of event delivery: PostgreSQL channel names, and event streams nobody closed.

``PostgresBus`` maps a namespace to a LISTEN/NOTIFY channel; two namespaces must never share
one (``tenant-a`` and ``tenant.a`` once did), and a namespace whose UTF-8 form is longer than
PostgreSQL's 63-byte identifier limit must still hear itself.

``EventStream`` is held only weakly by its bus: a stream dropped after ``break`` (never closed)
is unsubscribed once it is garbage-collected, while a stream still referenced keeps receiving.
"""

from __future__ import annotations

import asyncio
import gc
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent_core.bus.base import EventBus, EventKind, SessionEvent
from agent_core.bus.local import InProcessBus
from agent_core.bus.postgres import PostgresBus, _channel
from agent_core.bus.stream import EventStream


def _event(session_id: str | None = None) -> SessionEvent:
    return SessionEvent(EventKind.CREATED, session_id or str(uuid.uuid4()), 1)


# --- PostgreSQL channel names --------------------------------------------------------------


@pytest.mark.parametrize(
    "namespace",
    ["agent_core", "tenant-a", "tenant.a", "ü" * 40, "", "x" * 500, 'q"uote'],
    ids=["plain", "dash", "dot", "umlauts", "empty", "long", "quote"],
)
def test_channel_is_a_short_plain_identifier(namespace: str) -> None:
    channel = _channel(namespace)
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", channel)
    assert len(channel.encode()) <= 63
    assert _channel(namespace) == channel


def test_channels_are_one_to_one() -> None:
    namespaces = ["tenant-a", "tenant.a", "tenant_a", "Tenant_a", "ü" * 40, "ü" * 41, "ü" * 39]
    assert len({_channel(n) for n in namespaces}) == len(namespaces)


class _Recorder:
    """A bus with a list of the session ids it received."""

    def __init__(self, bus: PostgresBus) -> None:
        self.bus = bus
        self.seen: list[str] = []
        bus.subscribe(lambda event: self.seen.append(event.session_id))

    async def wait_for(self, session_id: str, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while session_id not in self.seen:
                await asyncio.sleep(0.01)


@pytest.fixture
async def recorders(postgres_server: Any) -> AsyncIterator[Any]:
    """``make(namespace)``: an open, recording ``PostgresBus``; all closed at the end."""
    opened: list[PostgresBus] = []

    async def make(namespace: str) -> _Recorder:
        bus = PostgresBus(postgres_server.dsn, namespace=namespace)
        await bus.open()
        opened.append(bus)
        assert bus.healthy
        return _Recorder(bus)

    yield make
    for bus in opened:
        await bus.close()


@pytest.mark.postgres
async def test_lookalike_namespaces_do_not_share_events(recorders: Any) -> None:
    dash, dot = await recorders("tenant-a"), await recorders("tenant.a")
    dash_peer = await recorders("tenant-a")
    for_dash, for_dot = str(uuid.uuid4()), str(uuid.uuid4())
    await dash.bus.publish(_event(for_dash))
    await dot.bus.publish(_event(for_dot))
    await dash.wait_for(for_dash)
    await dot.wait_for(for_dot)
    await dash_peer.wait_for(for_dash)
    await asyncio.sleep(0.3)  # a leaked event would come right behind the ones awaited
    assert for_dot not in dash.seen + dash_peer.seen
    assert for_dash not in dot.seen


@pytest.mark.postgres
async def test_long_non_ascii_namespace_hears_itself(recorders: Any) -> None:
    namespace = "ü" * 40  # 80 bytes of UTF-8: over PostgreSQL's 63-byte identifiers
    listener, publisher = await recorders(namespace), await recorders(namespace)
    session_id = str(uuid.uuid4())
    await publisher.bus.publish(_event(session_id))
    await listener.wait_for(session_id)
    await publisher.wait_for(session_id)


# --- streams nobody closed -----------------------------------------------------------------


async def _publish_once_subscribed(bus: EventBus, count: int, event: SessionEvent) -> None:
    """Publish ``event`` as soon as the bus has ``count`` subscribers."""
    while len(bus._subscribers) < count:
        await asyncio.sleep(0)
    await bus.publish(event)


async def test_dropped_stream_unsubscribes() -> None:
    bus = InProcessBus()
    before = len(bus._subscribers)
    sent = _event()
    publisher = asyncio.create_task(_publish_once_subscribed(bus, before + 1, sent))
    stream = EventStream(bus)
    async for event in stream:
        assert event is sent
        break  # and never close the stream
    await publisher
    assert len(bus._subscribers) == before + 1
    del stream
    gc.collect()
    assert len(bus._subscribers) == before
    await bus.publish(_event())  # nothing left to deliver to, and no error


async def test_referenced_stream_keeps_receiving() -> None:
    bus = InProcessBus()
    before = len(bus._subscribers)
    first, second = _event(), _event()
    publisher = asyncio.create_task(_publish_once_subscribed(bus, before + 1, first))
    stream = EventStream(bus)
    async for event in stream:
        assert event is first
        break
    await publisher
    gc.collect()
    await bus.publish(second)
    assert await stream.get(timeout=1) is second
    assert len(bus._subscribers) == before + 1
    await stream.close()
    assert len(bus._subscribers) == before
    await stream.close()  # closing twice is harmless
    del stream
    gc.collect()
    assert len(bus._subscribers) == before


async def test_closed_then_reopened_stream_subscribes_once() -> None:
    bus = InProcessBus()
    async with EventStream(bus) as stream:
        assert len(bus._subscribers) == 1
    assert len(bus._subscribers) == 0
    async with stream:
        await bus.publish(sent := _event())
        assert await stream.get(timeout=1) is sent
        assert len(bus._subscribers) == 1
    assert len(bus._subscribers) == 0


async def test_dropped_manager_stream_unsubscribes() -> None:
    """The case that leaked: ``async for event in manager.events(): break``."""
    from agent_core.sessions.session_manager import SessionManager
    from agent_core.stores.memory import MemoryStore

    bus = InProcessBus()
    async with SessionManager(store=MemoryStore(), bus=bus) as manager:
        before = len(bus._subscribers)
        created = asyncio.create_task(_create_once_subscribed(manager, bus, before + 1))
        async for event in manager.events(kinds=["created"]):
            assert event.kind is EventKind.CREATED
            break
        session_id = await created
        assert event.session_id == session_id
        gc.collect()
        assert len(bus._subscribers) == before


async def _create_once_subscribed(manager: Any, bus: EventBus, count: int) -> str:
    while len(bus._subscribers) < count:
        await asyncio.sleep(0)
    session = await manager.create_session("grader", "alice")
    return str(session.session_id)
