"""``GET /v1/events``: Server-Sent Events through a real uvicorn server, on every backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from agent_core.server.keys import Role
from tests.server.conftest import Keys


async def sse(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of each event (comments skipped)."""
    name, data = "", b""
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ").encode()
        elif line == "" and data:
            yield name, orjson.loads(data)
            name, data = "", b""


async def test_a_created_session_arrives_as_an_event(live: httpx.AsyncClient, keys: Keys) -> None:
    h = keys.headers(Role.READER)
    async with live.stream("GET", "/v1/events", headers=h) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        assert await anext(lines) == ": connected"
        r = await live.post(
            "/v1/sessions",
            json={"agent_type": "grader", "user_id": "u7"},
            headers=keys.headers(Role.WRITER),
        )
        sid = r.json()["session_id"]
        await live.post(
            f"/v1/sessions/{sid}/checkpoints",
            json={"name": "graded"},
            headers=keys.headers(Role.WRITER),
        )
        got: list[tuple[str, str]] = []
        name, data = "", b""
        async with asyncio.timeout(10):
            async for line in lines:
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = line.removeprefix("data: ").encode()
                elif line == "" and data:
                    event = orjson.loads(data)
                    assert event["kind"] == name
                    assert event["session_id"] == sid
                    got.append((name, event["agent_type"]))
                    data = b""
                    if len(got) == 2:
                        break
        assert got == [("created", "grader"), ("checkpoint", "grader")]


async def test_filters_and_keep_alive(live: httpx.AsyncClient, keys: Keys) -> None:
    w = keys.headers(Role.WRITER)
    keep = (await live.post("/v1/sessions", json={"agent_type": "a"}, headers=w)).json()
    params = {"session_id": keep["session_id"], "kinds": ["context", "state"]}
    async with live.stream("GET", "/v1/events", params=params, headers=w) as response:
        assert response.status_code == 200
        events = sse(response)
        await live.post("/v1/sessions", json={"agent_type": "b"}, headers=w)
        sid = keep["session_id"]
        await live.post(f"/v1/sessions/{sid}/heartbeat", headers=w)
        await live.patch(f"/v1/sessions/{sid}/context", json={"x": 1}, headers=w)
        await live.post(f"/v1/sessions/{sid}/state", json={"state": "paused"}, headers=w)
        async with asyncio.timeout(10):
            kinds = [(await anext(events))[0], (await anext(events))[0]]
        assert kinds == ["context", "state"]
    # An idle stream still sends a comment (the test settings: every 0.5 s).
    async with live.stream("GET", "/v1/events", headers=w) as response:
        raw = response.aiter_raw()
        async with asyncio.timeout(5):
            assert (await anext(raw)).startswith(b": connected")
            assert b": keep-alive" in await anext(raw)


async def test_streams_end_when_the_server_stops(
    app: Any, live: httpx.AsyncClient, keys: Keys
) -> None:
    async with live.stream("GET", "/v1/events", headers=keys.headers()) as response:
        lines = response.aiter_lines()
        assert await anext(lines) == ": connected"
        assert app.state.metrics.event_streams == 1
        app.state.stopping.set()
        async with asyncio.timeout(5):
            rest = [line async for line in lines]
        assert all(line == "" or line.startswith(":") for line in rest)
    for _ in range(100):
        if app.state.metrics.event_streams == 0:
            break
        await asyncio.sleep(0.02)
    assert app.state.metrics.event_streams == 0


async def test_a_client_that_goes_away_unsubscribes(
    app: Any, live: httpx.AsyncClient, keys: Keys
) -> None:
    for _ in range(3):
        with contextlib.suppress(httpx.ReadError):
            async with live.stream("GET", "/v1/events", headers=keys.headers()) as response:
                assert await anext(response.aiter_lines()) == ": connected"
    # Each stream notices the disconnect at its next write at the latest (a keep-alive).
    for _ in range(200):
        if app.state.metrics.event_streams == 0:
            break
        await asyncio.sleep(0.05)
    assert app.state.metrics.event_streams == 0
