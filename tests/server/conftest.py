"""Fixtures of the HTTP service's tests: the app on every backend, keys per role, clients.

``hub`` builds its managers with ``manager_factory`` (tests/conftest.py), so the app runs on
the same store, cache and fresh namespace as the library's own tests, for every ``backend``.
``client`` talks to the app in process (httpx's ASGI transport, which buffers whole responses);
``live`` runs it under a real uvicorn on a free port, for streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from agent_core.server.app import create_app
from agent_core.server.hub import TenantHub
from agent_core.server.keys import Role
from agent_core.server.settings import Settings
from agent_core.sessions.session_manager import SessionManager
from tests.conftest import ManagerFactory

TENANT = "acme"
OTHER = "globex"


@dataclass
class Keys:
    """One key per role, of one tenant; ``headers(role)`` authenticates as it."""

    tenant: str
    secrets: dict[Role, str]
    ids: dict[Role, str]

    def headers(self, role: Role | str = Role.ADMIN, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[Role(role)]}", **extra}


async def make_keys(hub: TenantHub, tenant: str) -> Keys:
    secrets: dict[Role, str] = {}
    ids: dict[Role, str] = {}
    for role in Role:
        secret, key = await hub.keys.create(tenant, role)
        secrets[role], ids[role] = secret, key.key_id
    return Keys(tenant, secrets, ids)


@pytest.fixture
def settings() -> Settings:
    # The hub is injected: the URLs here are not used.
    return Settings(store_url="memory://", sse_heartbeat_s=0.5, key_cache_s=0)


@pytest.fixture
def hub(manager_factory: ManagerFactory, settings: Settings) -> TenantHub:
    async def make(tenant: str | None) -> SessionManager:
        options: dict[str, Any] = {}
        if tenant is not None:
            options["tenant"] = tenant
        return await manager_factory(**options)

    return TenantHub(make, key_cache_s=settings.key_cache_s)


@pytest.fixture
async def app(hub: TenantHub, settings: Settings) -> AsyncIterator[Any]:
    app = create_app(settings, hub=hub)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def keys(app: Any) -> Keys:
    return await make_keys(app.state.hub, TENANT)


@pytest.fixture
async def other_keys(app: Any) -> Keys:
    return await make_keys(app.state.hub, OTHER)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def live(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app served by uvicorn on 127.0.0.1, in this event loop (the app's
    lifespan is the ``app`` fixture's)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        app.state.stopping.set()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
