"""``agent-core serve``: the application under uvicorn, and what it prints on start.

Once the socket is bound it prints the URL of the API, the docs and the dashboard; with
``--demo`` it creates an admin key for tenant ``demo`` and prints it as the last line. SIGINT
or SIGTERM stops it: event streams end at once, requests in flight get
``GRACEFUL_SHUTDOWN_S`` seconds, then every manager is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, TextIO

import uvicorn

from agent_core.server.app import create_app
from agent_core.server.keys import Role
from agent_core.server.settings import Settings

__all__ = ["GRACEFUL_SHUTDOWN_S", "serve"]

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 5


class _Server(uvicorn.Server):
    """uvicorn's server, telling the application as soon as a shutdown begins (so open event
    streams end instead of holding the shutdown), and exiting 0 on SIGTERM."""

    on_exit: Callable[[], None] = staticmethod(lambda: None)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self.on_exit()
        if sig == signal.SIGTERM:
            # A requested stop is a normal end: do not re-raise it once serve() returns.
            self._captured_signals = [s for s in self._captured_signals if s != sig]


async def serve(settings: Settings, *, out: TextIO = sys.stdout) -> int:
    """Run the service until it is told to stop; returns the exit status."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.log_level in ("debug", "trace"),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    stopping: asyncio.Event = app.state.stopping

    def on_exit() -> None:
        loop.call_soon_threadsafe(stopping.set)

    server.on_exit = on_exit
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                # Bind or startup failed: uvicorn logged why.
                await task
                return 1
            await asyncio.sleep(0.02)
        await _announce(app, server, settings, out)
        await task
    finally:
        if not task.done():
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return 0


def _bound_url(server: uvicorn.Server, settings: Settings) -> str:
    host, port = settings.host, settings.port
    for listener in server.servers:
        for sock in listener.sockets:
            address: Any = sock.getsockname()
            port = address[1]
            break
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def _announce(app: Any, server: uvicorn.Server, settings: Settings, out: TextIO) -> None:
    url = _bound_url(server, settings)
    hub = app.state.hub
    lines = [
        f"agent-core serve: {url} ({settings.describe()})",
        f"  API      {url}/v1   (OpenAPI {url}/openapi.json, docs {url}/docs)",
        f"  health   {url}/healthz  {url}/readyz   metrics {url}/metrics",
        f"  dashboard {url}/",
    ]
    if settings.demo:
        secret, key = await hub.keys.create("demo", Role.ADMIN)
        lines.append(f"demo fleet running in tenant 'demo'; admin key {key.key_id} (shown once):")
        lines.append(secret)
    else:
        lines.append("create an API key: agent-core keys create --tenant NAME --role admin")
    print("\n".join(lines), file=out, flush=True)
