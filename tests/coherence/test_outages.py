"""Freshness when the paths to Valkey differ or fail: slow readers, cut-off writers, stalled
fillers, restarts (items 4, 5, 6 and 7)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_core.sessions import AgentSession
from tests.coherence.conftest import Hybrid, Spawn, eventually
from tests.coherence.peer import Peer
from tests.servers.proxy import DelayProxy

pytestmark = [pytest.mark.postgres, pytest.mark.valkey]


@pytest.fixture
def proxy(valkey_server: Any) -> Iterator[DelayProxy]:
    with DelayProxy.for_url(valkey_server.url) as p:
        yield p


# --- item 5 ---------------------------------------------------------------------------------


async def test_f05_a_reader_on_a_slower_link_reads_the_write_that_returned(
    hybrid: Hybrid, spawn: Spawn, proxy: DelayProxy
) -> None:
    # Under the clients' 0.25 s socket timeout, so the slow reader's Valkey still works.
    proxy.set_delay(0.15)
    writer = await hybrid()
    sid = (await writer.create_session("tutor", "u", {"n": 0})).session_id
    reader = await spawn(cache=proxy.url())
    for _ in range(2):
        assert await reader.version(sid) == 1
    stale = []
    for n in range(1, 6):
        head = await writer.patch_context(sid, {"n": n})
        got = await reader.get(sid)  # the reader's first read after the write returned
        assert got is not None
        if got["version"] != head.version:
            stale.append((head.version, got["version"]))
        await asyncio.sleep(0.3)  # let the delayed event through before the next round
    assert not stale, f"(written, read) by the slow reader right after the write: {stale}"


# --- item 4 ---------------------------------------------------------------------------------


@pytest.mark.faults
async def test_f04_writes_made_while_cut_off_from_valkey_reach_every_process_once_back(
    hybrid: Hybrid, spawn: Spawn, proxy: DelayProxy
) -> None:
    """Freshness only: events are at most once, so the lost event itself is not required."""
    writer = await hybrid(cache_url=proxy.url())
    sid = (await writer.create_session("tutor", "u", {"n": 0})).session_id
    readers = [await spawn(), await spawn()]
    for reader in readers:
        for _ in range(2):
            assert await reader.version(sid) == 1
    proxy.cut()  # Valkey is fine; only this writer cannot reach it
    try:
        head = await writer.patch_context(sid, {"n": 1})  # commits in PostgreSQL
        assert writer.stats["cache_errors.invalidate"] + writer.stats["cache_errors.set"] >= 1
        await asyncio.sleep(0.5)
    finally:
        proxy.restore()
    for i, reader in enumerate(readers):

        async def read(peer: Peer = reader) -> int | None:
            return await peer.version(sid)

        ok, version, took = await eventually(read, lambda v: v == head.version, 1.0)
        assert ok, f"reader {i} still reads version {version} {took:.1f}s after Valkey was back"


# --- item 6 ---------------------------------------------------------------------------------


async def test_f06_a_filler_stalled_past_the_tombstone_life_cannot_bring_back_an_old_version(
    hybrid: Hybrid,
) -> None:
    tombstone_life = 0.5
    options = {"cache_options": {"tombstone_ttl": tombstone_life}}
    writer = await hybrid(**options)
    slow = await hybrid(**options)
    sid = (await writer.create_session("tutor", "u", {"n": 0})).session_id

    read_done = asyncio.Event()
    real_get = slow.store.get

    async def stalled_get(session_id: str, *, window: int) -> AgentSession | None:
        got = await real_get(session_id, window=window)
        read_done.set()
        await asyncio.sleep(tombstone_life * 2)  # a GC pause, a swapped-out process...
        return got

    slow.store.get = stalled_get  # type: ignore[method-assign]
    filling = asyncio.create_task(slow.get_session(sid))
    await asyncio.wait_for(read_done.wait(), 5)
    head = await writer.patch_context(sid, {"n": 1})  # commits while the filler holds v1
    started = await filling  # a read that began before the write may return the old version
    assert started is not None and started.version == 1
    slow.store.get = real_get  # type: ignore[method-assign]

    fresh = await hybrid()
    no_local = await hybrid(local_cache=False)
    for name, manager in (("slow", slow), ("fresh", fresh), ("no-local", no_local)):
        got = await manager.get_session(sid)
        assert got is not None
        assert got.version == head.version, f"{name} reads version {got.version} after the fill"


# --- item 7 ---------------------------------------------------------------------------------


@pytest.mark.faults
async def test_f07_a_write_made_while_valkey_was_down_is_read_by_a_new_process_after_restarts(
    spawn: Spawn, postgres_server: Any, valkey_server: Any
) -> None:
    """The writer's owed invalidation dies with it; a Valkey that kept its data (here: an RDB
    snapshot it reloads, as a persistent production Valkey would) serves the old version to
    every new process. The PostgreSQL restart of the original report plays no part but is kept.
    """
    if valkey_server.external or not postgres_server.can_restart:
        pytest.skip("needs servers this test session started")
    import redis.asyncio

    writer = await spawn()
    created = await writer.send(op="create", agent_type="tutor", user_id="u", context={"n": 0})
    sid = created["session"]["session_id"]
    filler = await spawn()
    assert await filler.version(sid) == 1  # now cached in Valkey at version 1
    await filler.close()

    client = redis.asyncio.Redis.from_url(valkey_server.url)
    try:
        directory = (await client.config_get("dir"))["dir"]
        await client.save()  # what a persistent Valkey has on disk when it goes down
    finally:
        await client.aclose()
    snapshot = Path(str(directory)) / "dump.rdb"
    try:
        valkey_server.stop()
        written = await writer.send(op="patch", sid=sid, changes={"n": 1})
        assert written.get("version") == 2, written  # committed in PostgreSQL
        await writer.close()  # the writer process exits (a deploy, a crash...)
        await asyncio.to_thread(postgres_server.restart)
        valkey_server.start()  # back, with the data it had
    finally:
        if not valkey_server.running:
            valkey_server.start()
        if not postgres_server.running:
            postgres_server.start()
        snapshot.unlink(missing_ok=True)

    reader = await spawn()  # a new manager in a new process
    started = time.monotonic()
    reads = []
    while time.monotonic() - started < 1.0:
        reads.append(await reader.version(sid))
        await asyncio.sleep(0.05)
    assert set(reads) == {2}, f"versions read by a new process after the restarts: {reads[:5]}..."
