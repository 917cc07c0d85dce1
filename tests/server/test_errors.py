"""Bad input of every kind is a 4xx problem, never a 500; the error table; health, readiness,
metrics and the OpenAPI document. Backend-independent: run on SQLite and memory only."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from agent_core import errors
from agent_core.server import problems
from agent_core.server.keys import AuthenticationError, PermissionDenied, Role
from tests.server.conftest import Keys
from tests.server.test_api import create, problem


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """Only two backends: nothing here depends on the store."""
    return str(request.param)


def test_every_library_error_has_one_status() -> None:
    cases: dict[type[BaseException], int] = {
        errors.SessionNotFound: 404,
        errors.ConflictError: 409,
        errors.LeaseHeld: 409,
        errors.LeaseLost: 409,
        errors.InvalidTransition: 409,
        problems.PreconditionFailed: 412,
        errors.PayloadTooLarge: 413,
        errors.ValidationError: 422,
        errors.InvalidValue: 422,
        errors.InvalidSessionId: 422,
        errors.StoreUnavailable: 503,
        errors.NotOpenError: 503,
        AuthenticationError: 401,
        PermissionDenied: 403,
        errors.DecryptionError: 500,
        errors.ConfigurationError: 500,
    }
    for cls, status in cases.items():
        error = cls("x") if cls is not errors.SessionNotFound else cls("id")
        assert problems.status_of(error)[0] == status, cls
    # Every class of the library's tree is in the table (or under an entry of it).
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert any(issubclass(cls, entry.error) for entry in problems.STATUS), name


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"{bad", "application/json", 422, "RequestValidationError"),
        (b"[]", "application/json", 422, "RequestValidationError"),
        (b'"text"', "application/json", 422, "RequestValidationError"),
        (b"agent_type=x", "application/x-www-form-urlencoded", 415, "UnsupportedMediaType"),
        (b'{"agent_type": "x"}', "text/plain", 415, "UnsupportedMediaType"),
        (b'{"agent_type": "x"}', "", 415, "UnsupportedMediaType"),
        (b'{"agent_type": ""}', "application/json", 422, "RequestValidationError"),
        (b'{"agent_type": 7}', "application/json", 422, "RequestValidationError"),
        (b'{"agent_type": "x", "extra": 1}', "application/json", 422, "RequestValidationError"),
        (b'{"agent_type": "x", "context": []}', "application/json", 422, "RequestValidationError"),
        (b'{"agent_type": "x", "context": {"n": NaN}}', "application/json", 422, "InvalidValue"),
        (
            b'{"agent_type": "x", "context": {"n": 99999999999999999999999}}',
            "application/json",
            422,
            "InvalidValue",
        ),
        (b'{"agent_type": "x", "context": {"s": "\\ud800"}}', "application/json", 422, None),
        (b'{"agent_type": "\\ud800"}', "application/json", 422, None),
        (b'{"agent_type": "x", "context": {"\\udfff": 1}}', "application/json", 422, None),
        (
            b'{"agent_type": "x", "context": ' + b'{"a":' * 200 + b"1" + b"}" * 201,
            "application/json",
            422,
            "InvalidValue",
        ),
        (
            b'{"agent_type": "x", "context": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "application/json",
            400,
            None,
        ),
    ],
)
async def test_bad_create_bodies(
    client: httpx.AsyncClient,
    keys: Keys,
    content: bytes,
    content_type: str,
    status: int,
    code: str | None,
) -> None:
    headers = keys.headers(Role.WRITER)
    if content_type:
        headers["Content-Type"] = content_type
    r = await client.post("/v1/sessions", content=content, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    if code is not None:
        assert r.json()["code"] == code


async def test_sizes(app: Any, client: httpx.AsyncClient, keys: Keys) -> None:
    settings = app.state.settings
    w = keys.headers(Role.WRITER)
    big = "x" * (settings.max_payload_bytes + 10)
    r = await client.post(
        "/v1/sessions", json={"agent_type": "x", "context": {"b": big}}, headers=w
    )
    problem(r, 413, "PayloadTooLarge")
    huge = b'{"agent_type": "x", "context": {"b": "' + b"x" * settings.max_body_bytes + b'"}}'
    r = await client.post(
        "/v1/sessions", content=huge, headers={**w, "Content-Type": "application/json"}
    )
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"

    async def chunks() -> Any:
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536

    r = await client.post(
        "/v1/sessions", content=chunks(), headers={**w, "Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text
    sid = (await create(client, keys))["session_id"]
    r = await client.patch(f"/v1/sessions/{sid}/context", json={"b": big}, headers=w)
    problem(r, 413, "PayloadTooLarge")


@pytest.mark.parametrize(
    "sid",
    [
        "nope",
        "0",
        "00000000-0000-0000-0000-00000000000G",
        "ABCDEF00-0000-4000-8000-000000000000",
        "%20",
        "a" * 5000,
    ],
)
async def test_malformed_ids_are_not_found(client: httpx.AsyncClient, keys: Keys, sid: str) -> None:
    w = keys.headers(Role.ADMIN)
    for method, path, body in (
        ("GET", f"/v1/sessions/{sid}", None),
        ("PATCH", f"/v1/sessions/{sid}/context", {"a": 1}),
        ("POST", f"/v1/sessions/{sid}/state", {"state": "paused"}),
        ("POST", f"/v1/sessions/{sid}/heartbeat", None),
        ("DELETE", f"/v1/sessions/{sid}", None),
        ("POST", f"/v1/sessions/{sid}/checkpoints", {"name": "a"}),
        ("GET", f"/v1/sessions/{sid}/checkpoints", None),
        ("GET", f"/v1/sessions/{sid}/lease", None),
        ("POST", f"/v1/sessions/{sid}/lease", {"owner": "o", "ttl_s": 1}),
        ("PUT", f"/v1/sessions/{sid}/lease", {"token": 1, "ttl_s": 1}),
    ):
        r = await client.request(method, path, json=body, headers=w)
        problem(r, 404, "SessionNotFound")
    r = await client.post("/v1/purge", json={"session_id": sid}, headers=w)
    problem(r, 404, "SessionNotFound")
    r = await client.get("/v1/events", params={"session_id": sid}, headers=w)
    problem(r, 404, "SessionNotFound")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/sessions", {"limit": -1}),
        ("/v1/sessions", {"limit": 0}),
        ("/v1/sessions", {"limit": 10**6}),
        ("/v1/sessions", {"limit": "x"}),
        ("/v1/sessions", {"state": "deleted"}),
        ("/v1/sessions", {"after": "not-an-id"}),
        ("/v1/sessions", {"user_id": "u" * 300}),
        ("/v1/sessions/{sid}/checkpoints", {"after_seq": -1}),
        ("/v1/sessions/{sid}/checkpoints", {"after_seq": 2**70}),
        ("/v1/sessions/{sid}/checkpoints", {"limit": 10**9}),
        ("/v1/events", {"kinds": "nonsense"}),
        ("/v1/export", {}),
        ("/v1/export", {"user_id": ""}),
    ],
)
async def test_bad_queries(
    client: httpx.AsyncClient, keys: Keys, path: str, params: dict[str, Any]
) -> None:
    sid = (await create(client, keys))["session_id"]
    r = await client.get(path.format(sid=sid), params=params, headers=keys.headers(Role.ADMIN))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("POST", "/v1/sessions/{sid}/lease", {"owner": "o", "ttl_s": -1}, {}),
        ("POST", "/v1/sessions/{sid}/lease", {"owner": "o", "ttl_s": 1e300}, {}),
        ("POST", "/v1/sessions/{sid}/lease", {"owner": "", "ttl_s": 1}, {}),
        ("PUT", "/v1/sessions/{sid}/lease", {"token": 2**64, "ttl_s": 1}, {}),
        ("PUT", "/v1/sessions/{sid}/lease", {"token": -1, "ttl_s": 1}, {}),
        ("POST", "/v1/sessions/{sid}/heartbeat", None, {"Lease-Token": str(2**64)}),
        ("POST", "/v1/sessions/{sid}/heartbeat", None, {"Lease-Token": "x"}),
        ("POST", "/v1/sessions/{sid}/checkpoints", {"name": "a"}, {"Idempotency-Key": ""}),
        ("POST", "/v1/sessions/{sid}/checkpoints", {"name": "a"}, {"Idempotency-Key": "k" * 300}),
        ("POST", "/v1/sessions/{sid}/checkpoints", {"name": "a", "data": [1]}, {}),
        ("POST", "/v1/sessions/{sid}/state", {"state": "deleted"}, {}),
        ("POST", "/v1/sessions/{sid}/state", {"state": "active", "reason": 5}, {}),
        ("PATCH", "/v1/sessions/{sid}/context", [1, 2], {}),
        ("PATCH", "/v1/sessions/{sid}/context", {"a": float("inf")}, {}),
    ],
)
async def test_bad_writes(
    client: httpx.AsyncClient,
    keys: Keys,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> None:
    sid = (await create(client, keys))["session_id"]
    content = None if body is None else httpx_json(body)
    r = await client.request(
        method,
        path.format(sid=sid),
        content=content,
        headers={**keys.headers(Role.WRITER), "Content-Type": "application/json", **headers},
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"


def httpx_json(body: Any) -> bytes:
    import json

    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "url",
    [
        "/v1/sessions?user_id=%ED%A0%80",
        "/v1/sessions?agent_type=%FF%FE",
        "/v1/sessions?after=%00",
        "/v1/sessions/%ED%A0%80",
        "/v1/sessions/%00/checkpoints",
        "/v1/events?session_id=%FF&kinds=created",
    ],
)
async def test_undecodable_urls(client: httpx.AsyncClient, keys: Keys, url: str) -> None:
    # Starlette decodes with replacement characters: an answer, never a server error.
    r = await client.get(url, headers=keys.headers())
    assert r.status_code < 500, r.text
    assert r.headers["content-type"] in ("application/json", "application/problem+json")


async def test_unknown_routes_and_methods(client: httpx.AsyncClient, keys: Keys) -> None:
    r = await client.get("/v1/nothing-here", headers=keys.headers())
    problem(r, 404, "RouteNotFound")
    r = await client.put("/v1/sessions", headers=keys.headers())
    problem(r, 405, "MethodNotAllowed")


async def test_unknown_session_everywhere(client: httpx.AsyncClient, keys: Keys) -> None:
    sid = str(uuid.uuid4())
    w = keys.headers(Role.ADMIN)
    r = await client.post(f"/v1/sessions/{sid}/checkpoints", json={"name": "a"}, headers=w)
    problem(r, 404, "SessionNotFound")
    r = await client.get(f"/v1/sessions/{sid}/checkpoints", headers=w)
    problem(r, 404, "SessionNotFound")
    r = await client.delete(f"/v1/sessions/{sid}/lease", headers={**w, "Lease-Token": "1"})
    problem(r, 404, "SessionNotFound")


async def test_health_readiness_metrics_docs(client: httpx.AsyncClient, keys: Keys) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["store"] == "ok"
    await create(client, keys)
    await client.get("/v1/sessions/nope", headers=keys.headers())
    r = await client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert (
        'agent_core_http_requests_total{method="POST",route="/v1/sessions",status="201"} 1' in text
    )
    assert 'agent_core_http_errors_total{code="SessionNotFound"} 1' in text
    assert 'agent_core_operations_total{operation="create_session",outcome="ok"} 1' in text
    assert (
        "agent_core_http_request_duration_seconds_bucket"
        '{method="GET",route="/v1/sessions/{session_id}",le="+Inf"} 1' in text
    )
    assert 'agent_core_cache_reads_total{tier="store"}' in text
    r = await client.get("/docs/errors")
    assert r.status_code == 200 and 'id="session-not-found"' in r.text
    schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["schemas"]["Problem"]["properties"]["code"]
    assert "/v1/sessions/{session_id}/lease" in schema["paths"]
    assert not any(p.startswith("/ui") for p in schema["paths"])
    assert (await client.get("/docs")).status_code == 200
