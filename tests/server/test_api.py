"""The HTTP API through an HTTP client, on every backend: sessions, context, state, heartbeats,
checkpoints, leases, conditional and fenced writes, listing, purge and export."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import orjson
import pytest

from agent_core.server.keys import Role
from tests.server.conftest import Keys

MERGE = "application/merge-patch+json"


async def create(client: httpx.AsyncClient, keys: Keys, **body: Any) -> dict[str, Any]:
    body.setdefault("agent_type", "grader")
    r = await client.post("/v1/sessions", json=body, headers=keys.headers(Role.WRITER))
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith("#" + body["type"].rsplit("#", 1)[1])
    assert body["title"] and isinstance(body["detail"], str)
    return body


async def test_session_lifecycle(client: httpx.AsyncClient, keys: Keys) -> None:
    w = keys.headers(Role.WRITER)
    r = await client.post(
        "/v1/sessions",
        json={
            "agent_type": "grader",
            "user_id": "u-1",
            "context": {"exam": 7},
            "metadata": {"m": 1},
        },
        headers=w,
    )
    assert r.status_code == 201
    created = r.json()
    sid = created["session_id"]
    assert r.headers["etag"] == '"1"'
    assert r.headers["location"] == f"/v1/sessions/{sid}"
    assert created["state"] == "active" and created["version"] == 1
    assert created["context"] == {"exam": 7} and created["metadata"] == {"m": 1}

    r = await client.get(f"/v1/sessions/{sid}", headers=keys.headers(Role.READER))
    assert r.status_code == 200 and r.headers["etag"] == '"1"'
    got = r.json()
    assert [cp["name"] for cp in got["checkpoints"]] == ["session_created"]
    assert got["checkpoint_count"] == 1

    r = await client.patch(
        f"/v1/sessions/{sid}/context",
        content=b'{"score": 17, "exam": null}',
        headers={**w, "Content-Type": MERGE},
    )
    assert r.status_code == 200, r.text
    assert r.json()["context"] == {"score": 17} and r.headers["etag"] == '"2"'

    r = await client.post(f"/v1/sessions/{sid}/heartbeat", headers=w)
    assert r.status_code == 200 and r.json()["version"] == 3

    r = await client.post(
        f"/v1/sessions/{sid}/checkpoints", json={"name": "graded", "data": {"s": 1}}, headers=w
    )
    assert r.status_code == 201
    assert r.json()["seq"] == 2 and r.json()["data"] == {"s": 1}

    r = await client.post(
        f"/v1/sessions/{sid}/state", json={"state": "failed", "reason": "no text"}, headers=w
    )
    assert r.status_code == 200
    assert r.json()["state"] == "failed" and r.json()["context"]["failure_reason"] == "no text"

    r = await client.post(f"/v1/sessions/{sid}/state", json={"state": "active"}, headers=w)
    problem(r, 409, "InvalidTransition")

    r = await client.delete(f"/v1/sessions/{sid}", headers=w)
    assert r.status_code == 204 and r.content == b""
    problem(await client.get(f"/v1/sessions/{sid}", headers=w), 404, "SessionNotFound")
    problem(await client.delete(f"/v1/sessions/{sid}", headers=w), 404, "SessionNotFound")


async def test_if_match_makes_writes_conditional(client: httpx.AsyncClient, keys: Keys) -> None:
    w = keys.headers(Role.WRITER)
    sid = (await create(client, keys, context={"a": 1}))["session_id"]
    url = f"/v1/sessions/{sid}/context"

    body = problem(
        await client.patch(url, json={"b": 2}, headers={**w, "If-Match": '"7"'}),
        412,
        "PreconditionFailed",
    )
    assert "version 1" in body["detail"]
    # Quoted or not, weak or strong, one of several: each pass moves the version on.
    for version, tag in enumerate(("1", 'W/"2"', '"9", "3"', "*"), start=1):
        r = await client.patch(url, json={"v": version}, headers={**w, "If-Match": tag})
        assert r.status_code == 200, (tag, r.text)
        assert r.headers["etag"] == f'"{version + 1}"'
    assert r.json()["context"] == {"a": 1, "v": 4}
    for stale in ('"3"', "x", '"5"x', ""):
        r = await client.patch(url, json={"c": 4}, headers={**w, "If-Match": stale})
        problem(r, 412, "PreconditionFailed")

    r = await client.post(f"/v1/sessions/{sid}/heartbeat", headers={**w, "If-Match": '"1"'})
    problem(r, 412, "PreconditionFailed")
    r = await client.post(f"/v1/sessions/{sid}/heartbeat", headers={**w, "If-Match": '"5"'})
    assert r.status_code == 200 and r.headers["etag"] == '"6"'
    r = await client.post(
        f"/v1/sessions/{sid}/state", json={"state": "paused"}, headers={**w, "If-Match": '"5"'}
    )
    problem(r, 412, "PreconditionFailed")
    r = await client.post(
        f"/v1/sessions/{sid}/state", json={"state": "paused"}, headers={**w, "If-Match": '"6"'}
    )
    assert r.status_code == 200 and r.json()["state"] == "paused"
    r = await client.post(
        f"/v1/sessions/{sid}/checkpoints", json={"name": "x"}, headers={**w, "If-Match": '"6"'}
    )
    problem(r, 412, "PreconditionFailed")
    r = await client.post(
        f"/v1/sessions/{sid}/checkpoints", json={"name": "x"}, headers={**w, "If-Match": '"7"'}
    )
    assert r.status_code == 201 and r.json()["seq"] == 2
    r = await client.post(
        f"/v1/sessions/{sid}/checkpoints",
        json={"name": "y"},
        headers={**w, "If-Match": '"8"', "Idempotency-Key": "k"},
    )
    problem(r, 422, "ValidationError")
    problem(
        await client.delete(f"/v1/sessions/{sid}", headers={**w, "If-Match": '"7"'}),
        412,
        "PreconditionFailed",
    )
    r = await client.delete(f"/v1/sessions/{sid}", headers={**w, "If-Match": '"8"'})
    assert r.status_code == 204
    problem(await client.get(f"/v1/sessions/{sid}", headers=w), 404, "SessionNotFound")


async def test_leases_fence_writes(client: httpx.AsyncClient, keys: Keys) -> None:
    w = keys.headers(Role.WRITER)
    sid = (await create(client, keys))["session_id"]
    lease_url = f"/v1/sessions/{sid}/lease"

    r = await client.get(lease_url, headers=keys.headers(Role.READER))
    assert r.status_code == 200 and r.json() == {"lease": None}
    r = await client.post(lease_url, json={"owner": "w1", "ttl_s": 30}, headers=w)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["owner"] == "w1" and first["session_id"] == sid
    token = first["token"]
    assert (await client.get(lease_url, headers=w)).json()["lease"]["token"] == token

    problem(
        await client.post(lease_url, json={"owner": "w2", "ttl_s": 30}, headers=w),
        409,
        "LeaseHeld",
    )
    fenced = {**w, "Lease-Token": str(token)}
    r = await client.post(f"/v1/sessions/{sid}/checkpoints", json={"name": "a"}, headers=fenced)
    assert r.status_code == 201
    r = await client.put(lease_url, json={"token": token, "ttl_s": 60}, headers=w)
    assert r.status_code == 200 and r.json()["token"] == token and r.json()["owner"] == "w1"

    r = await client.delete(lease_url, headers=fenced)
    assert r.status_code == 204
    # A released lease fences nothing any more: every write carrying it is refused.
    for method, path, body in (
        ("POST", f"/v1/sessions/{sid}/checkpoints", {"name": "late"}),
        ("PATCH", f"/v1/sessions/{sid}/context", {"late": True}),
        ("POST", f"/v1/sessions/{sid}/state", {"state": "paused"}),
        ("POST", f"/v1/sessions/{sid}/heartbeat", None),
        ("PUT", lease_url, {"token": token, "ttl_s": 5}),
    ):
        r = await client.request(method, path, json=body, headers=fenced)
        problem(r, 409, "LeaseLost")
    problem(await client.delete(lease_url, headers=fenced), 409, "LeaseLost")
    r = await client.post(lease_url, json={"owner": "w2", "ttl_s": 30}, headers=w)
    assert r.status_code == 201 and r.json()["token"] > token
    problem(await client.delete(f"/v1/sessions/{sid}", headers=fenced), 409, "LeaseLost")
    problem(await client.delete(lease_url, headers=w), 422, "RequestValidationError")


async def test_checkpoints_idempotency_and_paging(client: httpx.AsyncClient, keys: Keys) -> None:
    w = keys.headers(Role.WRITER)
    sid = (await create(client, keys))["session_id"]
    url = f"/v1/sessions/{sid}/checkpoints"
    r1 = await client.post(url, json={"name": "step"}, headers={**w, "Idempotency-Key": "k1"})
    r2 = await client.post(url, json={"name": "step"}, headers={**w, "Idempotency-Key": "k1"})
    assert r1.status_code == r2.status_code == 201
    assert r1.json() == r2.json()
    for i in range(4):
        assert (await client.post(url, json={"name": f"s{i}"}, headers=w)).status_code == 201

    seen: list[str] = []
    after: int | None = 0
    while after is not None:
        r = await client.get(url, params={"after_seq": after, "limit": 2}, headers=w)
        assert r.status_code == 200
        seen += [cp["name"] for cp in r.json()["items"]]
        after = r.json()["next"]
    assert seen == ["session_created", "step", "s0", "s1", "s2", "s3"]
    r = await client.get(url, params={"after_seq": 1, "limit": 10}, headers=w)
    assert [cp["seq"] for cp in r.json()["items"]] == [2, 3, 4, 5, 6]
    assert r.json()["next"] is None


async def test_list_sessions_filters_and_pages(client: httpx.AsyncClient, keys: Keys) -> None:
    w = keys.headers(Role.WRITER)
    ids = []
    for i in range(5):
        s = await create(
            client, keys, agent_type="tutor" if i % 2 else "grader", user_id=f"u{i % 2}"
        )
        ids.append(s["session_id"])
    await client.post(f"/v1/sessions/{ids[0]}/state", json={"state": "completed"}, headers=w)

    got: list[str] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if after:
            params["after"] = after
        r = await client.get("/v1/sessions", params=params, headers=keys.headers(Role.READER))
        assert r.status_code == 200, r.text
        page = r.json()
        assert all(item["checkpoints"] == [] for item in page["items"])
        got += [item["session_id"] for item in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert got == sorted(ids)

    r = await client.get("/v1/sessions", params={"agent_type": "tutor"}, headers=w)
    assert {s["session_id"] for s in r.json()["items"]} == {ids[1], ids[3]}
    r = await client.get("/v1/sessions", params={"user_id": "u0", "state": "active"}, headers=w)
    assert {s["session_id"] for s in r.json()["items"]} == {ids[2], ids[4]}
    r = await client.get("/v1/sessions", params={"state": "completed"}, headers=w)
    assert [s["session_id"] for s in r.json()["items"]] == [ids[0]]


async def test_purge_and_export(client: httpx.AsyncClient, keys: Keys) -> None:
    a = keys.headers(Role.ADMIN)
    one = await create(client, keys, user_id="erin", context={"secret": "x"})
    two = await create(client, keys, user_id="erin")
    other = await create(client, keys, user_id="frank")
    await client.post(
        f"/v1/sessions/{one['session_id']}/checkpoints", json={"name": "n"}, headers=a
    )

    r = await client.get("/v1/export", params={"user_id": "erin"}, headers=a)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/jsonl")
    lines = [orjson.loads(line) for line in r.content.splitlines()]
    assert [x["type"] for x in lines].count("session") == 2
    assert lines[-1] == {"type": "end", "user_id": "erin", "sessions": 2, "checkpoints": 3}

    r = await client.post("/v1/purge", json={"session_id": two["session_id"]}, headers=a)
    assert r.status_code == 200 and r.json() == {"purged": 1}
    r = await client.post("/v1/purge", json={"session_id": two["session_id"]}, headers=a)
    problem(r, 404, "SessionNotFound")
    r = await client.post("/v1/purge", json={"user_id": "erin"}, headers=a)
    assert r.json() == {"purged": 1}
    problem(
        await client.get(f"/v1/sessions/{one['session_id']}", headers=a), 404, "SessionNotFound"
    )
    assert (await client.get(f"/v1/sessions/{other['session_id']}", headers=a)).status_code == 200
    r = await client.get("/v1/export", params={"user_id": "erin"}, headers=a)
    assert [orjson.loads(x) for x in r.content.splitlines()] == [
        {"type": "end", "user_id": "erin", "sessions": 0, "checkpoints": 0}
    ]
    problem(await client.post("/v1/purge", json={}, headers=a), 422, "ValidationError")
    problem(
        await client.post(
            "/v1/purge", json={"user_id": "a", "session_id": str(uuid.uuid4())}, headers=a
        ),
        422,
        "ValidationError",
    )


@pytest.mark.parametrize(
    ("role", "allowed"),
    [(Role.READER, False), (Role.WRITER, False), (Role.ADMIN, True)],
)
async def test_roles(client: httpx.AsyncClient, keys: Keys, role: Role, allowed: bool) -> None:
    h = keys.headers(role)
    r = await client.post("/v1/sessions", json={"agent_type": "x"}, headers=h)
    if role is Role.READER:
        problem(r, 403, "PermissionDenied")
        sid = (await create(client, keys))["session_id"]
    else:
        assert r.status_code == 201
        sid = r.json()["session_id"]
    assert (await client.get(f"/v1/sessions/{sid}", headers=h)).status_code == 200
    assert (await client.get("/v1/sessions", headers=h)).status_code == 200
    r = await client.post("/v1/purge", json={"session_id": sid}, headers=h)
    assert r.status_code == (200 if allowed else 403), r.text
    r = await client.get("/v1/export", params={"user_id": "x"}, headers=h)
    assert r.status_code == (200 if allowed else 403)
    me = (await client.get("/v1/me", headers=h)).json()
    assert me["tenant"] == keys.tenant and me["role"] == role.value
    assert me["key_id"] == keys.ids[role]


async def test_authentication(app: Any, client: httpx.AsyncClient, keys: Keys) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer ak_not-a-key"},
        {"Authorization": "Bearer " + "x" * 5000},
        {"Authorization": f"Bearer {keys.secrets[Role.ADMIN]}x"},
    ):
        r = await client.get("/v1/sessions", headers=headers)
        body = problem(r, 401, "AuthenticationError")
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert keys.secrets[Role.ADMIN] not in body["detail"]
    # Revoked: refused at once in this process.
    hub = app.state.hub
    await hub.keys.revoke(keys.ids[Role.WRITER])
    hub.forget_key(keys.ids[Role.WRITER])
    problem(
        await client.get("/v1/sessions", headers=keys.headers(Role.WRITER)),
        401,
        "AuthenticationError",
    )
    assert (await client.get("/v1/sessions", headers=keys.headers(Role.READER))).status_code == 200


async def test_keys_are_stored_as_hashes(app: Any, keys: Keys) -> None:
    admin = await app.state.hub.admin()
    stored = await admin.list_records("agent_core:api_keys")
    assert len(stored) == 3
    blob = b"".join(key.encode() + value for key, value in stored)
    for secret in keys.secrets.values():
        assert secret.encode() not in blob
        assert secret.removeprefix("ak_").encode() not in blob
    listed = await app.state.hub.keys.list(keys.tenant)
    assert {k.key_id for k in listed} == set(keys.ids.values())


async def test_concurrent_conditional_writes_one_wins(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    w = keys.headers(Role.WRITER)
    sid = (await create(client, keys))["session_id"]

    async def patch(i: int) -> httpx.Response:
        return await client.patch(
            f"/v1/sessions/{sid}/context", json={"winner": i}, headers={**w, "If-Match": '"1"'}
        )

    answers = await asyncio.gather(*(patch(i) for i in range(6)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 412, 412, 412, 412, 412], [r.text for r in answers]
    winner = next(r for r in answers if r.status_code == 200).json()["context"]["winner"]
    r = await client.get(f"/v1/sessions/{sid}", headers=w)
    assert r.json()["context"] == {"winner": winner} and r.headers["etag"] == '"2"'
