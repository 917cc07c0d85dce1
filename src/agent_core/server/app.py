"""``create_app(settings)``: the FastAPI application of ``agent-core serve``.

``app.state.hub`` is the ``TenantHub`` (API keys -> principals, tenants -> managers),
``app.state.settings`` the ``Settings``, ``app.state.metrics`` the ``Metrics``, and
``app.state.stopping`` an ``asyncio.Event`` set when the server begins to shut down (long-lived
responses such as event streams end on it). The lifespan opens the hub (and with
``settings.demo`` starts the demo fleet) and closes every manager on shutdown.

Mounted: the API under ``/v1`` (``agent_core.server.api``), ``/healthz``, ``/readyz``,
``/metrics``, the problem type page ``/docs/errors``, OpenAPI at ``/openapi.json`` with docs
at ``/docs``, and the dashboard's router (``agent_core.server.dashboard.router``) at ``/`` when
that package is installed.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from agent_core.server import openapi, problems
from agent_core.server.api import router as api_router
from agent_core.server.hub import TenantHub
from agent_core.server.json import JSONResponse
from agent_core.server.metrics import Metrics, MetricsMiddleware
from agent_core.server.ops import router as ops_router
from agent_core.server.settings import Settings

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

DASHBOARD = "agent_core.server.dashboard"


def create_app(settings: Settings | None = None, *, hub: TenantHub | None = None) -> Any:
    """The application (a ``FastAPI``). ``hub``: an injected hub (tests); by default one
    built from ``settings`` (itself from the environment when ``None``)."""
    settings = Settings.from_env() if settings is None else settings
    the_hub = TenantHub.from_settings(settings) if hub is None else hub
    metrics = Metrics()
    metrics.managers = the_hub.managers

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.stopping.clear()
        await the_hub.open()
        background: list[asyncio.Task[None]] = []
        try:
            if settings.demo:
                from agent_core.server import demo

                background.append(asyncio.create_task(demo.run_fleet(app)))
            yield
        finally:
            app.state.stopping.set()
            for task in background:
                task.cancel()
            for task in background:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception:
                    logger.exception("a background task failed")
            await the_hub.close()

    app = FastAPI(
        title="agent-core",
        summary="Durable sessions for AI agents, over HTTP.",
        version=_version(),
        lifespan=lifespan,
        default_response_class=JSONResponse,
        max_body_size=settings.max_body_bytes,
    )
    app.state.settings = settings
    app.state.hub = the_hub
    app.state.metrics = metrics
    app.state.stopping = asyncio.Event()
    problems.install(app)
    app.include_router(api_router)
    app.include_router(ops_router)
    if importlib.util.find_spec(DASHBOARD) is not None:
        # Pages, not API: kept out of /openapi.json.
        app.include_router(importlib.import_module(DASHBOARD).router, include_in_schema=False)
    _wrap_outermost(app, metrics, settings.max_body_bytes)
    openapi.install(app)
    return app


def _wrap_outermost(app: FastAPI, metrics: Metrics, max_body_bytes: int) -> None:
    """Metrics and the declared-size check outside every middleware FastAPI adds (its own
    body limit answers a declared oversize body in plain text; a 500 is counted too)."""
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        inner = problems.DeclaredSizeLimit(build(), max_body_bytes)
        return MetricsMiddleware(inner, metrics)

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agent-core")
    except PackageNotFoundError:
        return "0"
