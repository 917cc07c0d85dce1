"""Operations routes: liveness, readiness and metrics (no API key needed)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from agent_core.errors import AgentCoreError
from agent_core.server.json import JSONResponse
from agent_core.server.metrics import CONTENT_TYPE

__all__ = ["router"]

router = APIRouter(tags=["operations"])

_READY_TIMEOUT_S = 5.0


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the store (and the cache, if any) answer",
    responses={503: {"description": "the store or the cache is unreachable"}},
)
async def readyz(request: Request) -> Any:
    hub = request.app.state.hub
    checks: dict[str, str] = {}
    ok = True
    try:
        manager = await hub.admin()
        await asyncio.wait_for(manager.store.get_version(_PROBE_ID), _READY_TIMEOUT_S)
        checks["store"] = "ok"
    except (AgentCoreError, TimeoutError, OSError) as exc:
        ok = False
        checks["store"] = f"unavailable: {type(exc).__name__}"
    else:
        checks["cache"] = await _cache_check(manager)
        ok = checks["cache"] in ("ok", "none")
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503
    )


_PROBE_ID = "00000000-0000-4000-8000-000000000000"


async def _cache_check(manager: Any) -> str:
    tier = manager.tier
    if not tier.caches:
        return "none"
    try:
        await asyncio.wait_for(tier.identity(), _READY_TIMEOUT_S)
    except (AgentCoreError, TimeoutError, OSError) as exc:
        return f"unavailable: {type(exc).__name__}"
    return "ok"


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "text exposition 0.0.4"}},
)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
