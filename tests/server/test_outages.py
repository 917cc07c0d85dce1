"""When the store or the cache is unreachable: a 503 problem (with ``Retry-After``) instead of
a 500, ``/readyz`` says which one, and the same server recovers when the link returns. Real
PostgreSQL and Valkey behind a proxy that cuts the server's connections."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from agent_core.server.app import create_app
from agent_core.server.hub import TenantHub
from agent_core.server.keys import Role
from agent_core.server.settings import Settings
from agent_core.sessions.session_manager import SessionManager
from tests.server.conftest import Keys, make_keys
from tests.servers.proxy import DelayProxy

pytestmark = [pytest.mark.postgres, pytest.mark.valkey]


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{port}"))


@pytest.fixture
def pg_proxy(postgres_server: Any) -> Iterator[DelayProxy]:
    parts = urlsplit(postgres_server.dsn)
    with DelayProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        yield proxy


@pytest.fixture
def valkey_proxy(valkey_server: Any) -> Iterator[DelayProxy]:
    with DelayProxy.for_url(valkey_server.url) as proxy:
        yield proxy


@pytest.fixture
async def served(
    postgres_server: Any, valkey_server: Any, pg_proxy: DelayProxy, valkey_proxy: DelayProxy
) -> AsyncIterator[tuple[httpx.AsyncClient, Keys]]:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    dsn = _through(postgres_server.dsn, pg_proxy.port)

    async def make(tenant: str | None) -> SessionManager:
        options: dict[str, Any] = {} if tenant is None else {"tenant": tenant}
        return SessionManager.from_url(
            dsn,
            cache_url=valkey_proxy.url(),
            namespace=namespace,
            store_options={"schema": namespace, "command_timeout": 1.0, "connect_timeout": 1.0},
            **options,
        )

    app = create_app(
        Settings(store_url="memory://", key_cache_s=0), hub=TenantHub(make, key_cache_s=60)
    )
    async with app.router.lifespan_context(app):
        keys = await make_keys(app.state.hub, "acme")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, keys


async def test_store_outage_is_a_503_and_the_server_recovers(
    served: tuple[httpx.AsyncClient, Keys], pg_proxy: DelayProxy
) -> None:
    client, keys = served
    w = keys.headers(Role.WRITER)
    r = await client.post("/v1/sessions", json={"agent_type": "a"}, headers=w)
    sid = r.json()["session_id"]
    assert (await client.get("/readyz")).status_code == 200

    pg_proxy.cut()
    try:
        r = await client.post(f"/v1/sessions/{sid}/checkpoints", json={"name": "x"}, headers=w)
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "StoreUnavailable" and r.headers["retry-after"] == "1"
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["store"].startswith("unavailable")
    finally:
        pg_proxy.restore()

    for _ in range(50):
        r = await client.post(f"/v1/sessions/{sid}/checkpoints", json={"name": "y"}, headers=w)
        if r.status_code != 503:
            break
        await asyncio.sleep(0.2)
    assert r.status_code == 201, r.text
    assert (await client.get("/readyz")).status_code == 200


async def test_cache_outage_fails_readiness_not_requests(
    served: tuple[httpx.AsyncClient, Keys], valkey_proxy: DelayProxy
) -> None:
    client, keys = served
    w = keys.headers(Role.WRITER)
    valkey_proxy.cut()
    try:
        r = await client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"] == {"store": "ok", "cache": r.json()["checks"]["cache"]}
        assert r.json()["checks"]["cache"].startswith("unavailable")
        # The cache is an optimisation: the API works on the store alone.
        r = await client.post("/v1/sessions", json={"agent_type": "a"}, headers=w)
        assert r.status_code == 201, r.text
        sid = r.json()["session_id"]
        assert (await client.get(f"/v1/sessions/{sid}", headers=w)).status_code == 200
        assert "agent_core_cache_errors_total{tier=" in (await client.get("/metrics")).text
    finally:
        valkey_proxy.restore()
