"""PostgreSQL + Valkey specifics: freshness across real processes, and server outages."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent_core.bus.valkey import ValkeyBus
from agent_core.errors import StoreUnavailable
from agent_core.sessions import SessionManager
from agent_core.tiers.valkey import ValkeyTier

pytestmark = [pytest.mark.postgres, pytest.mark.valkey]

ROOT = Path(__file__).resolve().parents[1]

# A reader in another process: one session id per line in, one JSON line out.
READER = """
import asyncio, json, sys
from agent_core.sessions import SessionManager

async def main(cfg):
    async with SessionManager.from_url(
        cfg["store"], cache_url=cfg["cache"], namespace=cfg["ns"],
        store_options={"schema": cfg["ns"]}, local_cache=True,
    ) as manager:
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            got = await manager.get_session(line.strip())
            hits = manager.stats["hits.local"]
            print(json.dumps({"version": got.version if got else None,
                              "context": got.context if got else None, "local_hits": hits}),
                  flush=True)

asyncio.run(main(json.loads(sys.argv[1])))
"""


@pytest.fixture
async def config(postgres_server: Any, valkey_server: Any) -> dict[str, str]:
    return {
        "store": postgres_server.dsn,
        "cache": valkey_server.url,
        "ns": f"h{uuid.uuid4().hex[:10]}",
    }


@pytest.fixture
async def writer(config: dict[str, str]) -> AsyncIterator[SessionManager]:
    async with SessionManager.from_url(
        config["store"],
        cache_url=config["cache"],
        namespace=config["ns"],
        store_options={"schema": config["ns"], "command_timeout": 1.0},
    ) as manager:
        yield manager


async def test_a_write_is_read_by_another_process_at_once_even_from_its_local_tier(
    writer: SessionManager, config: dict[str, str]
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    reader = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        READER,
        json.dumps(config),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert reader.stdin is not None and reader.stdout is not None

    async def read(sid: str) -> dict[str, Any]:
        assert reader.stdin is not None and reader.stdout is not None
        reader.stdin.write(f"{sid}\n".encode())
        await reader.stdin.drain()
        return dict(json.loads(await asyncio.wait_for(reader.stdout.readline(), 10)))

    try:
        session = await writer.create_session("tutor", "u")
        sid = session.session_id
        assert (await read(sid))["version"] == 1
        for i in range(100):
            head = await writer.patch_context(sid, {"i": i})
            got = await read(sid)  # the next read in the other process
            assert got["version"] == head.version and got["context"]["i"] == i
            got = await read(sid)  # served by its local tier, and still fresh
            assert got["version"] == head.version
        assert got["local_hits"] >= 100, "the local tier was never used: test is void"
        await writer.delete_session(sid)
        assert (await read(sid))["version"] is None
    finally:
        reader.stdin.close()
        await asyncio.wait_for(reader.wait(), 10)


async def test_postgres_down_gives_typed_errors_in_time_and_recovers_without_restart(
    writer: SessionManager, postgres_server: Any
) -> None:
    if not postgres_server.can_restart:
        pytest.skip("needs a PostgreSQL this test session started")
    session = await writer.create_session("grader")
    sid = session.session_id
    postgres_server.stop()
    ambiguous: list[bool] = []
    try:
        for call in (
            lambda: writer.create_session("grader"),
            lambda: writer.append_checkpoint(sid, "lost?"),
            lambda: writer.patch_context(sid, {"lost": True}),
            lambda: writer.heartbeat(sid),
            lambda: writer.set_state(sid, "paused"),
            lambda: writer.delete_session(sid),
            lambda: writer.list_checkpoints(sid),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as caught:
                await call()
            assert time.monotonic() - started < 1.0 + 1.0
            ambiguous.append(caught.value.maybe_committed)
    finally:
        postgres_server.start()
    # Only a write sent on a pooled connection that had not yet seen the server go can be
    # "maybe committed"; once the pool knows, every failure is a clean "not committed".
    assert ambiguous[1:] == [False] * (len(ambiguous) - 1)
    # The same manager works again, and nothing that failed was stored.
    await writer.append_checkpoint(sid, "after-restart")
    got = await writer.get_session(sid)
    assert got is not None
    assert [cp.name for cp in got.checkpoints] == ["session_created", "after-restart"]
    assert got.context == {} and got.version == 2


async def test_writes_during_a_valkey_hang_are_not_served_stale_after_it(
    writer: SessionManager, config: dict[str, str], valkey_server: Any
) -> None:
    if valkey_server.external:
        pytest.skip("needs a Valkey this test session started")
    async with SessionManager.from_url(
        config["store"],
        cache_url=config["cache"],
        namespace=config["ns"],
        store_options={"schema": config["ns"]},
    ) as other:
        session = await writer.create_session("tutor")
        sid = session.session_id
        assert (await other.get_session(sid)) is not None  # cached in Valkey at version 1
        valkey_server.pause()
        try:
            head = await writer.patch_context(sid, {"during": "hang"})  # the store still commits
        finally:
            valkey_server.resume()
        assert writer.stats["cache_errors.invalidate"] + writer.stats["cache_errors.set"] >= 1
        deadline = time.monotonic() + 5
        while True:  # the owed invalidation is replayed in the background
            got = await other.get_session(sid)
            assert got is not None
            if got.version == head.version or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert got.version == head.version and got.context == {"during": "hang"}


async def test_a_change_costs_one_valkey_command(
    writer: SessionManager,
) -> None:
    session = await writer.create_session("agent", "u1", {"k": 1})
    # A fenced change returns once everything queued before it (the unfenced `created`) is out.
    await writer.heartbeat(session.session_id)
    tier = writer.tier
    assert isinstance(tier, ValkeyTier)
    bus, cache = tier.bus, tier.cache
    # Bus and cache on one server: each change's write travels with its event.
    assert isinstance(bus, ValkeyBus) and bus.shares_server_with(cache)
    sent: list[str] = []
    clients = {id(bus.client): bus.client, id(cache.client): cache.client}
    originals = {key: client.execute_command for key, client in clients.items()}

    def counting(original: Any) -> Any:
        async def execute_command(*args: Any, **options: Any) -> Any:
            sent.append(str(args[0]).upper())
            return await original(*args, **options)

        return execute_command

    for key, client in clients.items():
        client.execute_command = counting(originals[key])
    try:
        for n in range(20):
            await writer.append_checkpoint(session.session_id, "step", {"n": n})
        await writer.patch_context(session.session_id, {"k": 2})
        await writer.heartbeat(session.session_id)
    finally:
        for key, client in clients.items():
            client.execute_command = originals[key]
    # INFO is the background epoch check (it asks who the server is), not part of a change.
    assert [c for c in sent if c != "INFO"] == ["EVALSHA"] * 22
    # ...and the one command did both jobs: the tombstone is in Valkey at the last version.
    stored = await cache.client.get(f"{writer.namespace}:session:{session.session_id}")
    head = await writer.store.get(session.session_id, window=0)
    assert head is not None and stored == b"%020d%020d" % (head.version, writer.coherence.epoch)
