"""ValkeyBus against a real valkey-server: delivery across objects and processes, poll(), faults."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from agent_core.bus.base import EventKind, SessionEvent
from agent_core.bus.valkey import ValkeyBus
from agent_core.cache import keys
from agent_core.cache.valkey import ValkeyCache
from agent_core.errors import CacheUnavailable, ConfigurationError, NotOpenError
from tests.servers.valkey import ValkeyTestServer, make_client

pytestmark = pytest.mark.valkey


class Recorder:
    def __init__(self) -> None:
        self.events: list[SessionEvent] = []

    def __call__(self, event: SessionEvent) -> None:
        self.events.append(event)


def event(n: int = 1, kind: EventKind = EventKind.UPDATED) -> SessionEvent:
    return SessionEvent(kind=kind, session_id=str(uuid.uuid4()), version=n, data={"n": n})


async def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def buses(server: ValkeyTestServer, namespace: str) -> AsyncIterator[Any]:
    opened: list[ValkeyBus] = []

    async def make(**options: Any) -> ValkeyBus:
        bus = ValkeyBus.from_url(server.url, namespace=namespace, **options)
        await bus.open()
        opened.append(bus)
        return bus

    yield make
    for bus in opened:
        await bus.close()


MakeBus = Callable[..., Awaitable[ValkeyBus]]


async def test_event_reaches_another_bus(buses: MakeBus) -> None:
    a, b = await buses(), await buses()
    assert a.is_shared and a.healthy and b.healthy
    got_a, got_b = Recorder(), Recorder()
    a.subscribe(got_a)
    b.subscribe(got_b)
    e = event()
    await a.publish(e)
    await wait_for(lambda: len(got_a.events) == 1 and len(got_b.events) == 1)
    assert got_b.events[0] == e
    assert got_a.events[0] == e  # own events come back through the subscription


@pytest.mark.parametrize("kind", ["redis", "valkey"])
async def test_injected_clients(server: ValkeyTestServer, namespace: str, kind: str) -> None:
    client_a, client_b = make_client(kind, server.url), make_client(kind, server.url)
    try:
        async with (
            ValkeyBus(client_a, namespace=namespace) as a,
            ValkeyBus(client_b, namespace=namespace) as b,
        ):
            got = Recorder()
            b.subscribe(got)
            e = event()
            await a.publish(e)
            b.poll()
            assert got.events == [e]
        # Injected clients are left open.
        assert await client_a.ping()
    finally:
        await client_a.aclose()
        await client_b.aclose()


async def test_poll_after_publish_dispatches_synchronously(buses: MakeBus) -> None:
    a, b = await buses(), await buses()
    got_a, got_b = Recorder(), Recorder()
    a.subscribe(got_a)
    b.subscribe(got_b)
    for n in range(200):
        e = event(n)
        await a.publish(e)
        # No await between: the event must already be in b's socket buffer.
        b.poll()
        a.poll()
        assert got_b.events and got_b.events[-1] == e, f"missed event {n}"
        assert got_a.events and got_a.events[-1] == e, f"missed own event {n}"
    assert len(got_b.events) == 200


async def test_events_from_another_process(server: ValkeyTestServer, buses: MakeBus) -> None:
    b = await buses()
    got = Recorder()
    b.subscribe(got)
    session_id = str(uuid.uuid4())
    script = (
        "import asyncio, sys\n"
        "from agent_core.bus.base import EventKind, SessionEvent\n"
        "from agent_core.bus.valkey import ValkeyBus\n"
        "async def main():\n"
        "    bus = ValkeyBus.from_url(sys.argv[1], namespace=sys.argv[2])\n"
        "    for v in range(1, 6):\n"
        "        await bus.publish(SessionEvent(EventKind.STATE, sys.argv[3], v))\n"
        "    await bus.close()\n"
        "asyncio.run(main())\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, server.url, b.namespace, session_id
    )
    assert await process.wait() == 0
    # The publisher returned from its last publish before exiting: no waiting needed.
    b.poll()
    assert [(e.kind, e.session_id, e.version) for e in got.events] == [
        (EventKind.STATE, session_id, v) for v in range(1, 6)
    ]


async def test_foreign_messages_and_failing_subscribers(
    server: ValkeyTestServer, buses: MakeBus
) -> None:
    b = await buses()
    got = Recorder()

    def broken(event: SessionEvent) -> None:
        raise RuntimeError("subscriber bug")

    b.subscribe(broken)
    unsubscribe = b.subscribe(got)
    client = make_client("redis", server.url)
    try:
        await client.publish(keys.events_channel(b.namespace), b"not an event")
        e = event()
        await b.publish(e)
        b.poll()
        assert got.events == [e]
        unsubscribe()
        await b.publish(event())
        b.poll()
        assert got.events == [e]
        assert b.healthy
    finally:
        await client.aclose()


async def test_large_and_many_events(buses: MakeBus) -> None:
    a, b = await buses(timeout=1.0), await buses()
    got = Recorder()
    b.subscribe(got)
    big = SessionEvent(EventKind.CONTEXT, str(uuid.uuid4()), 1, data={"blob": "x" * 300_000})
    await a.publish(big)
    for n in range(200):
        await a.publish(event(n))
    await asyncio.gather(*(a.publish(event(n)) for n in range(200, 220)))
    await wait_for(lambda: len(got.events) == 221)
    assert got.events[0] == big
    assert [e.version for e in got.events[1:201]] == list(range(200))
    assert sorted(e.version for e in got.events[201:]) == list(range(200, 220))


async def test_close_stops_receiving(server: ValkeyTestServer, buses: MakeBus) -> None:
    a = await buses()
    b = ValkeyBus.from_url(server.url, namespace=a.namespace)
    await b.open()
    got = Recorder()
    b.subscribe(got)
    await b.close()
    assert not b.healthy
    await a.publish(event())
    await asyncio.sleep(0.05)
    b.poll()
    assert got.events == []
    await b.close()  # idempotent
    with pytest.raises(NotOpenError):
        await b.publish(event())


@pytest.mark.parametrize("scheme", ["rediss", "valkeys"])
async def test_tls_is_refused(scheme: str) -> None:
    bus = ValkeyBus.from_url(f"{scheme}://localhost:6380/0", namespace="x")
    try:
        with pytest.raises(ConfigurationError):
            await bus.open()
    finally:
        await bus.close()


@pytest.fixture
def private_server() -> Iterator[ValkeyTestServer]:
    """A server of this test's own, to reconfigure or to start late."""
    srv = ValkeyTestServer()
    if srv.external:
        pytest.skip("needs a server this process owns")
    with srv:
        yield srv


async def test_auth_and_select(private_server: ValkeyTestServer, namespace: str) -> None:
    srv = private_server
    admin = make_client("redis", srv.url)
    await admin.config_set("requirepass", "s3cret")
    await admin.aclose()
    url = srv.url.replace("redis://", "redis://:s3cret@").replace("/0", "/3")
    async with (
        ValkeyBus.from_url(url, namespace=namespace) as a,
        ValkeyBus.from_url(url.replace("redis://", "valkey://"), namespace=namespace) as b,
    ):
        got = Recorder()
        b.subscribe(got)
        e = event()
        await a.publish(e)
        b.poll()
        assert got.events == [e]
    wrong = ValkeyBus.from_url(url.replace("s3cret", "nope"), namespace=namespace)
    try:
        with pytest.raises(ConfigurationError):
            await wrong.open()
    finally:
        await wrong.close()


# --- faults ----------------------------------------------------------------------------------


@pytest.fixture
def faulty(server: ValkeyTestServer) -> Iterator[ValkeyTestServer]:
    if server.external:
        pytest.skip("fault tests need a server this process owns")
    yield server
    server.resume()
    server.start()


@pytest.mark.faults
async def test_kill_and_restart(faulty: ValkeyTestServer, buses: MakeBus) -> None:
    a, b = await buses(retry_after=0.1), await buses()
    got = Recorder()
    b.subscribe(got)
    generation = b.generation
    faulty.kill()
    await wait_for(lambda: not b.healthy)
    assert b.generation == generation + 1
    with pytest.raises(CacheUnavailable):
        await a.publish(event())
    started = time.monotonic()
    with pytest.raises(CacheUnavailable):
        await a.publish(event())  # the breaker answers at once
    assert time.monotonic() - started < 0.01

    faulty.start()
    await wait_for(lambda: b.healthy)
    assert b.generation == generation + 2

    e = event()
    deadline = time.monotonic() + 5
    while True:
        try:
            await a.publish(e)
            break
        except CacheUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
    b.poll()
    assert got.events == [e]


@pytest.mark.faults
async def test_stalled_server_is_detected(faulty: ValkeyTestServer, buses: MakeBus) -> None:
    b = await buses(ping_interval=0.1, ping_timeout=0.3)
    generation = b.generation
    faulty.pause()
    try:
        await wait_for(lambda: not b.healthy)
        assert b.generation == generation + 1
    finally:
        faulty.resume()
    await wait_for(lambda: b.healthy)
    assert b.generation == generation + 2
    await asyncio.sleep(0.5)  # heartbeats are answered again
    assert b.healthy
    assert b.generation == generation + 2


@pytest.mark.faults
async def test_open_while_server_is_down(private_server: ValkeyTestServer, namespace: str) -> None:
    srv = private_server
    srv.kill()
    bus = ValkeyBus.from_url(srv.url, namespace=namespace)
    try:
        await bus.open()  # does not raise: keeps trying in the background
        assert not bus.healthy
        got = Recorder()
        bus.subscribe(got)
        srv.start()
        await wait_for(lambda: bus.healthy)
        assert bus.generation == 1
        e = event()
        await bus.publish(e)
        bus.poll()
        assert got.events == [e]
    finally:
        await bus.close()


async def test_publish_many_is_ordered_and_fenced(buses: MakeBus) -> None:
    a, b = await buses(), await buses()
    got = Recorder()
    b.subscribe(got)
    for round_ in range(20):
        batch = [event(round_ * 100 + n) for n in range(50)]
        await a.publish_many(batch)
        b.poll()  # no await in between: the whole batch is already in b's socket
        assert got.events[-50:] == batch


async def test_unfenced_events_keep_their_place_and_concurrent_ones_share_trips(
    buses: MakeBus,
) -> None:
    a, b = await buses(), await buses()
    got = Recorder()
    b.subscribe(got)
    created, changed = event(1, EventKind.CREATED), event(2)
    await a.publish(created, fenced=False)  # returns before it is sent
    await a.publish(changed)  # fenced: both are out once this returns
    b.poll()
    assert got.events == [created, changed]
    batch = [event(10 + n) for n in range(64)]
    await asyncio.gather(*(a.publish(e) for e in batch))
    b.poll()
    assert got.events[2:] == batch


async def test_cache_writes_travel_with_their_events(
    server: ValkeyTestServer, namespace: str, buses: MakeBus
) -> None:
    a, b = await buses(), await buses()
    cache = ValkeyCache(a.client, namespace=namespace)
    own = ValkeyCache.from_url(server.url, namespace=namespace)
    elsewhere = ValkeyCache.from_url(server.url.rsplit("/", 1)[0] + "/1", namespace=namespace)
    try:
        assert a.shares_server_with(cache) and a.shares_server_with(own)
        assert not a.shares_server_with(elsewhere)  # another database: keys live apart
    finally:
        await own.close()
        await elsewhere.close()
    got = Recorder()
    b.subscribe(got)

    def stored(sid: str) -> Awaitable[bytes | None]:
        return a.client.get(keys.session_key(namespace, sid))  # type: ignore[no-any-return]

    # The server lost its scripts (as after a restart): the single-command path recovers.
    await a.client.script_flush()
    e = event(5)
    await a.publish(e, write=cache.tombstone_write(e.session_id, 5))
    b.poll()
    assert got.events == [e] and await stored(e.session_id) == b"%020d%020d" % (5, 0)
    # An older write loses to the newer tombstone; its event goes out all the same.
    late = SessionEvent(kind=EventKind.UPDATED, session_id=e.session_id, version=3)
    await a.publish(late, write=cache.tombstone_write(e.session_id, 3))
    b.poll()
    assert got.events[-1] == late and await stored(e.session_id) == b"%020d%020d" % (5, 0)

    # Batches are pipelined in chunks, in order, with the script loaded on the way; then again
    # after the server forgot it while this bus believed it loaded.
    for _ in range(2):
        await a.client.script_flush()
        batch = [event(n) for n in range(1, 301)]
        writes = [cache.tombstone_write(x.session_id, x.version) for x in batch]
        await a.publish_many(batch, writes=writes)
        b.poll()
        assert got.events[-300:] == batch
        for x in batch:
            assert await stored(x.session_id) == b"%020d%020d" % (x.version, 0)


async def test_a_cancelled_publisher_hands_the_queue_over(buses: MakeBus) -> None:
    a, b = await buses(), await buses()
    got = Recorder()
    b.subscribe(got)
    first, second = event(1), event(2)
    leader = asyncio.create_task(a.publish(first))
    await asyncio.sleep(0)  # the leader is waiting for its reply: it sends, nobody else
    follower = asyncio.create_task(a.publish(second))
    await asyncio.sleep(0)  # queued behind the leader
    leader.cancel()
    await asyncio.wait_for(follower, 2)  # not stranded by the leader's cancellation
    b.poll()
    assert got.events[-1] == second
    await a.publish(third := event(3))  # and the bus still works
    b.poll()
    assert got.events[-1] == third


async def test_cache_writes_need_a_fenced_event(namespace: str, buses: MakeBus) -> None:
    a, b = await buses(), await buses()
    got = Recorder()
    b.subscribe(got)
    cache = ValkeyCache(a.client, namespace=namespace)
    e = event(7)
    with pytest.raises(ValueError, match="fenced"):
        await a.publish(e, fenced=False, write=cache.tombstone_write(e.session_id, 7))
    await a.publish(event(8))  # fenced: everything sent before it has arrived
    b.poll()
    assert e not in got.events  # nothing went out...
    assert await a.client.get(keys.session_key(namespace, e.session_id)) is None  # ...or stored
