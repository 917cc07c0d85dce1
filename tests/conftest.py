"""Fixtures shared by every test: backends by name, and the real servers they need.

``backend`` names one store/cache combination; ``make_manager`` builds managers on it that
share the same data (as separate processes would) but each have their own in-process tier.
Every test gets a fresh namespace (SQLite file, PostgreSQL schema, Valkey key prefix).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_core.bus.local import InProcessBus
from agent_core.sessions.session_manager import SessionManager
from agent_core.stores.memory import MemoryStore

MakeManager = Callable[..., Awaitable[SessionManager]]
ManagerFactory = Callable[..., Awaitable[SessionManager]]

# name -> (store kind, cache kind, local tier on?)
BACKENDS: dict[str, tuple[str, str | None, bool]] = {
    "memory": ("memory", None, False),
    "sqlite": ("sqlite", None, False),
    "sqlite+local": ("sqlite", None, True),
    "postgres": ("postgres", None, False),
    "postgres+local": ("postgres", None, True),
    "postgres+valkey": ("postgres", "valkey", False),
    "postgres+valkey+local": ("postgres", "valkey", True),
}

SERVER_BACKENDS = {name for name, (store, cache, _) in BACKENDS.items() if store == "postgres"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    only = os.environ.get("AGENT_CORE_TEST_BACKENDS")
    if not only:
        return
    allowed = set(only.split(","))
    skip = pytest.mark.skip(reason="backend not selected by AGENT_CORE_TEST_BACKENDS")
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend", None) not in (None, *allowed):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    from tests.servers.postgres import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[Any]:
    from tests.servers.valkey import ValkeyTestServer

    with ValkeyTestServer() as server:
        yield server


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def manager_factory(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> ManagerFactory:
    """An async factory of managers on ``backend`` that share one fresh namespace.

    The managers are not opened or closed for the caller; ``make_manager`` does both.
    """
    store_kind, cache_kind, local = BACKENDS[backend]
    namespace = f"t{uuid.uuid4().hex[:12]}"
    # AGENT_CORE_TEST_ENCRYPTION_KEYS ("k1:base64,..."): every manager encrypts at rest, so
    # the whole suite can be run again with encryption on.
    encryption_keys = os.environ.get("AGENT_CORE_TEST_ENCRYPTION_KEYS") or None
    shared_memory = MemoryStore()
    # Backends with no cross-process channel share one in-process bus, as threads of one
    # process would; the others get their real bus from the URL.
    in_process_bus = InProcessBus()
    pg_dsn = valkey_url = None
    if store_kind == "postgres":
        pg_dsn = request.getfixturevalue("postgres_server").dsn
    if cache_kind == "valkey":
        valkey_url = request.getfixturevalue("valkey_server").url

    async def make(**options: Any) -> SessionManager:
        options.setdefault("local_cache", local)
        options.setdefault("namespace", namespace)
        if encryption_keys is not None:
            options.setdefault("encryption_keys", encryption_keys)
        if store_kind == "memory":
            return SessionManager(store=shared_memory, bus=in_process_bus, **options)
        if store_kind == "sqlite":
            return SessionManager.from_url(
                f"sqlite:///{tmp_path / 'sessions.db'}", bus=in_process_bus, **options
            )
        return SessionManager.from_url(
            str(pg_dsn),
            cache_url=valkey_url,
            store_options={"schema": namespace},
            **options,
        )

    return make


@pytest.fixture
async def make_manager(manager_factory: ManagerFactory) -> AsyncIterator[MakeManager]:
    managers: list[SessionManager] = []

    async def make(**options: Any) -> SessionManager:
        manager = await manager_factory(**options)
        await manager.open()
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        await manager.close()


@pytest.fixture
async def manager(make_manager: MakeManager) -> SessionManager:
    return await make_manager()
