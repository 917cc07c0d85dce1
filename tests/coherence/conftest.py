"""Shared pieces of the coherence suite: a fresh namespace on the real servers, managers on it,
and other processes (``tests.coherence.peer``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from agent_core.sessions import SessionManager
from tests.coherence.peer import Peer

Hybrid = Callable[..., Awaitable[SessionManager]]
Spawn = Callable[..., Awaitable[Peer]]


@pytest.fixture
def ns() -> str:
    return f"c{uuid.uuid4().hex[:12]}"


@pytest.fixture
def cfg(postgres_server: Any, valkey_server: Any, ns: str) -> dict[str, Any]:
    """Where every manager and peer of one test meets: one schema, one Valkey namespace."""
    return {"store": postgres_server.dsn, "cache": valkey_server.url, "ns": ns}


@pytest.fixture
async def hybrid(cfg: dict[str, Any]) -> AsyncIterator[Hybrid]:
    """Opened managers on PostgreSQL + Valkey (in-process tier on unless told otherwise), each
    like another process: its own clients, its own in-process tier. Closed at the end."""
    managers: list[SessionManager] = []

    async def make(*, cache_url: str | None = "", **options: Any) -> SessionManager:
        options.setdefault("local_cache", True)
        manager = SessionManager.from_url(
            cfg["store"],
            cache_url=cfg["cache"] if cache_url == "" else cache_url,
            namespace=cfg["ns"],
            store_options={"schema": cfg["ns"]},
            **options,
        )
        await manager.open()
        managers.append(manager)
        return manager

    yield make
    for manager in reversed(managers):
        await manager.close()


@pytest.fixture
async def spawn(cfg: dict[str, Any]) -> AsyncIterator[Spawn]:
    """Start another process with its own manager on ``cfg`` (overrides as keywords)."""
    peers: list[Peer] = []

    async def start(**overrides: Any) -> Peer:
        peer = Peer({**cfg, **overrides})
        peers.append(peer)
        return await peer.start()

    yield start
    await asyncio.gather(*(peer.close() for peer in peers))


async def eventually(
    probe: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], within: float
) -> tuple[bool, Any, float]:
    """Call ``probe`` until ``ok(result)`` or ``within`` seconds passed (at least once).

    Returns (ok, last result, seconds taken)."""
    started = time.monotonic()
    while True:
        result = await probe()
        if ok(result):
            return True, result, time.monotonic() - started
        if time.monotonic() - started > within:
            return False, result, time.monotonic() - started
        await asyncio.sleep(0.02)
