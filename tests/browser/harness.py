"""The real service under uvicorn in a background thread, for the dashboard's tests and the
screenshot script: ``create_app`` on a SQLite file, a free 127.0.0.1 port, keys made the way
``agent-core keys create`` makes them.

SQLite's events reach only the managers of the process that wrote, through the manager that
wrote; so a test that wants the open page to see a change makes it through the server's own
tenant manager (``LiveServer.call(lambda m: ...)``), on the server's event loop, as an agent
running in the service's process would.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from agent_core.server.app import create_app
from agent_core.server.hub import TenantHub
from agent_core.server.keys import ApiKey, ApiKeys
from agent_core.server.settings import Settings
from agent_core.sessions.session_manager import SessionManager

T = TypeVar("T")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class LiveServer:
    def __init__(
        self, app: Any, store_url: str | None, url: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.app = app
        self.store_url = store_url
        self.url = url
        self.loop = loop

    def run(self, coro: Awaitable[T], timeout: float = 30) -> T:
        """Run a coroutine on the server's event loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(_wrap(coro), self.loop).result(timeout)

    def call(self, tenant: str, fn: Callable[[SessionManager], Awaitable[T]]) -> T:
        """``fn(manager)`` with the server's own manager of ``tenant``, on the server's loop."""

        async def go() -> T:
            manager = await self.app.state.hub.manager_for(tenant)
            return await fn(manager)

        return self.run(go())

    def create_key(self, tenant: str, role: str) -> tuple[str, ApiKey]:
        """A new key, as ``agent-core keys create --tenant T --role R`` makes it: through
        ``ApiKeys`` on an un-tenanted manager of the same store."""

        if self.store_url is None:  # an injected hub: its own un-tenanted manager
            return self.run(self.app.state.hub.keys.create(tenant, role))

        async def go() -> tuple[str, ApiKey]:
            async with SessionManager.from_url(self.store_url) as manager:
                return await ApiKeys(manager).create(tenant, role)

        return _run_aside(go)

    def revoke_key(self, key_id: str) -> None:
        assert self.store_url is not None

        async def go() -> None:
            async with SessionManager.from_url(self.store_url) as manager:
                await ApiKeys(manager).revoke(key_id)

        _run_aside(go)


def _run_aside(fn: Callable[[], Awaitable[T]]) -> T:
    """``asyncio.run(fn())`` in a thread of its own: Playwright's sync API keeps an event loop
    running in the test's thread, where ``asyncio.run`` is refused."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(_wrap(fn()))).result(60)


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


@contextmanager
def live_server(
    folder: Path,
    *,
    hub: TenantHub | None = None,
    setup: Callable[[LiveServer], None] | None = None,
    **settings: Any,
) -> Iterator[LiveServer]:
    """The service on a free port of 127.0.0.1 with its store in ``folder`` (or the injected
    ``hub``'s); stopped on exit."""
    store_url = f"sqlite:///{folder / 'dashboard.db'}"
    options = {"key_cache_s": 0.0, "sse_heartbeat_s": 2.0, **settings}
    app = create_app(Settings(store_url=store_url, port=0, **options), hub=hub)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3, access_log=False
    )
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(server.serve(sockets=[sock]),),
        name="dashboard-server",
        daemon=True,
    )
    thread.start()
    for _ in range(400):
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.025)
    if not server.started:
        raise RuntimeError("the dashboard's test server did not start")
    live = LiveServer(app, None if hub else store_url, f"http://127.0.0.1:{port}", loop)
    try:
        if setup is not None:
            setup(live)
        yield live
    finally:
        loop.call_soon_threadsafe(app.state.stopping.set)
        server.should_exit = True
        thread.join(15)
        loop.close()
        sock.close()
