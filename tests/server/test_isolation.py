"""Tenant isolation through the API: two tenants, every route, every role. Another tenant's
session answers exactly like an id that does not exist (same status, same problem code), on
every route and for every role, and is left untouched; lists, exports and events never show it.

Runs once ``SessionManager(tenant=...)`` exists (layer 2); until then the hub serves every
tenant from one manager and these tests are skipped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from agent_core.server.keys import Role
from tests.server.conftest import Keys


@pytest.fixture(params=["memory", "sqlite", "postgres", "postgres+valkey"])
def backend(request: pytest.FixtureRequest) -> str:
    """One backend per store kind (and the shared cache): isolation lives in the store."""
    return str(request.param)


@dataclass
class Target:
    session_id: str
    lease_token: int


@dataclass(frozen=True)
class Route:
    name: str
    needs: Role
    method: str
    path: str
    ok: int
    body: Callable[[Target], Any] | None = None
    headers: Callable[[Target], dict[str, str]] = lambda t: {}
    params: Callable[[Target], dict[str, str]] = lambda t: {}

    def request(self, target: Target) -> dict[str, Any]:
        return {
            "method": self.method,
            "url": self.path.format(sid=target.session_id),
            "json": None if self.body is None else self.body(target),
            "headers": self.headers(target),
            "params": self.params(target),
        }


def _token(t: Target) -> dict[str, str]:
    return {"Lease-Token": str(t.lease_token)}


ROUTES = [
    Route("get", Role.READER, "GET", "/v1/sessions/{sid}", 200),
    Route("checkpoints.list", Role.READER, "GET", "/v1/sessions/{sid}/checkpoints", 200),
    Route("lease.get", Role.READER, "GET", "/v1/sessions/{sid}/lease", 200),
    Route(
        "events",
        Role.READER,
        "GET",
        "/v1/events",
        200,
        params=lambda t: {"session_id": t.session_id},
    ),
    Route("context", Role.WRITER, "PATCH", "/v1/sessions/{sid}/context", 200, lambda t: {"x": 1}),
    Route(
        "context.fenced",
        Role.WRITER,
        "PATCH",
        "/v1/sessions/{sid}/context",
        200,
        lambda t: {"x": 2},
        _token,
    ),
    Route(
        "context.if_match",
        Role.WRITER,
        "PATCH",
        "/v1/sessions/{sid}/context",
        200,
        lambda t: {"x": 3},
        lambda t: {"If-Match": '"2"'},
    ),
    Route(
        "state", Role.WRITER, "POST", "/v1/sessions/{sid}/state", 200, lambda t: {"state": "paused"}
    ),
    Route("heartbeat", Role.WRITER, "POST", "/v1/sessions/{sid}/heartbeat", 200),
    Route(
        "checkpoints.append",
        Role.WRITER,
        "POST",
        "/v1/sessions/{sid}/checkpoints",
        201,
        lambda t: {"name": "n"},
        lambda t: {"Idempotency-Key": "k"},
    ),
    Route(
        "lease.claim",
        Role.WRITER,
        "POST",
        "/v1/sessions/{sid}/lease",
        201,
        lambda t: {"owner": "w", "ttl_s": 60},
    ),
    Route(
        "lease.renew",
        Role.WRITER,
        "PUT",
        "/v1/sessions/{sid}/lease",
        200,
        lambda t: {"token": t.lease_token, "ttl_s": 60},
    ),
    Route("lease.release", Role.WRITER, "DELETE", "/v1/sessions/{sid}/lease", 204, None, _token),
    Route("delete", Role.WRITER, "DELETE", "/v1/sessions/{sid}", 204),
    Route("purge", Role.ADMIN, "POST", "/v1/purge", 200, lambda t: {"session_id": t.session_id}),
]


async def _setup(client: httpx.AsyncClient, keys: Keys) -> Target:
    w = keys.headers(Role.WRITER)
    r = await client.post(
        "/v1/sessions", json={"agent_type": "iso", "user_id": "shared"}, headers=w
    )
    sid = r.json()["session_id"]
    await client.patch(f"/v1/sessions/{sid}/context", json={"v": 1}, headers=w)
    r = await client.post(f"/v1/sessions/{sid}/lease", json={"owner": "w", "ttl_s": 60}, headers=w)
    assert r.status_code == 201, r.text
    return Target(sid, r.json()["token"])


async def _snapshot(client: httpx.AsyncClient, keys: Keys, target: Target) -> Any:
    h = keys.headers(Role.READER)
    session = (await client.get(f"/v1/sessions/{target.session_id}", headers=h)).json()
    trail = (await client.get(f"/v1/sessions/{target.session_id}/checkpoints", headers=h)).json()
    lease = (await client.get(f"/v1/sessions/{target.session_id}/lease", headers=h)).json()
    return session, trail, lease


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
async def test_another_tenants_session_is_an_unknown_id(
    client: httpx.AsyncClient, keys: Keys, other_keys: Keys, route: Route, role: Role
) -> None:
    own = await _setup(client, keys)
    foreign = await _setup(client, other_keys)
    unknown = Target(str(uuid.uuid4()), foreign.lease_token)
    before = await _snapshot(client, other_keys, foreign)
    allowed = role.allows(route.needs)

    answers: dict[str, tuple[int, str | None]] = {}
    for name, target in (("foreign", foreign), ("unknown", unknown), ("own", own)):
        if name == "own" and route.name == "events" and allowed:
            continue  # a stream that stays open: test_events.py covers it
        spec = route.request(target)
        spec["headers"] = {**keys.headers(role), **spec["headers"]}
        async with asyncio.timeout(10):  # a leaked event stream would never end
            r = await client.request(**spec)
        code = (
            r.json().get("code")
            if r.headers.get("content-type") == "application/problem+json"
            else None
        )
        answers[name] = (r.status_code, code)

    assert answers["foreign"] == answers["unknown"], answers
    if allowed:
        assert answers["unknown"] == (404, "SessionNotFound")
        if "own" in answers:
            assert answers["own"][0] == route.ok, answers
    else:
        assert answers["unknown"] == (403, "PermissionDenied")
        assert answers["own"] == (403, "PermissionDenied")
    assert await _snapshot(client, other_keys, foreign) == before


async def test_lists_exports_and_events_stay_in_the_tenant(
    client: httpx.AsyncClient, live: httpx.AsyncClient, keys: Keys, other_keys: Keys
) -> None:
    own = await _setup(client, keys)
    foreign = await _setup(client, other_keys)
    a = keys.headers(Role.ADMIN)

    r = await client.get("/v1/sessions", headers=a)
    assert [s["session_id"] for s in r.json()["items"]] == [own.session_id]
    r = await client.get("/v1/sessions", params={"user_id": "shared"}, headers=a)
    assert [s["session_id"] for s in r.json()["items"]] == [own.session_id]
    # A foreign id as a paging cursor is only a position: it reveals nothing.
    r = await client.get("/v1/sessions", params={"after": foreign.session_id}, headers=a)
    assert foreign.session_id not in r.text

    lines = (await client.get("/v1/export", params={"user_id": "shared"}, headers=a)).content
    ids = {orjson.loads(x).get("session_id") for x in lines.splitlines()}
    assert foreign.session_id not in ids and own.session_id in ids

    # Purging a user purges only this tenant's sessions of that user.
    r = await client.post("/v1/purge", json={"user_id": "shared"}, headers=a)
    assert r.json() == {"purged": 1}
    r = await client.get(f"/v1/sessions/{foreign.session_id}", headers=other_keys.headers())
    assert r.status_code == 200

    # Events: a stream of this tenant never carries the other tenant's writes.
    async with live.stream("GET", "/v1/events", headers=a) as response:
        lines_in = response.aiter_lines()
        assert await anext(lines_in) == ": connected"
        ow = other_keys.headers(Role.WRITER)
        await live.post(f"/v1/sessions/{foreign.session_id}/heartbeat", headers=ow)
        await live.post("/v1/sessions", json={"agent_type": "theirs"}, headers=ow)
        mine = await live.post("/v1/sessions", json={"agent_type": "mine"}, headers=a)
        seen: list[str] = []
        async with asyncio.timeout(10):
            async for line in lines_in:
                if line.startswith("data: "):
                    event = orjson.loads(line.removeprefix("data: "))
                    seen.append(event["session_id"])
                    if event["session_id"] == mine.json()["session_id"]:
                        break
        assert seen == [mine.json()["session_id"]]
