"""Schemathesis over ``/openapi.json``: for every operation, generated requests (valid and
not) never get a server error, and every response matches the documented schema (problem
responses included). On SQLite, authenticated as an admin; seeded (derandomized), with a
bounded number of examples per operation. ``GET /v1/events`` never ends on its own, so it is
left to ``test_events.py``.

The schema is loaded when the module is collected (schemathesis' pytest integration), so the
app is built then, on a SQLite file in a temporary directory; its lifespan starts with the first
request, on schemathesis' own event loop thread, and ends with the module's tests.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance

from agent_core.server.app import create_app
from agent_core.server.keys import ApiKeys, Role
from agent_core.server.settings import Settings
from agent_core.sessions.session_manager import SessionManager

EXAMPLES = 40

_DIR = Path(tempfile.mkdtemp(prefix="agent-core-schemathesis-"))
_URL = f"sqlite:///{_DIR / 'api.db'}"
_HEADERS: dict[str, str] = {}

app = create_app(Settings(store_url=_URL, max_body_bytes=256 * 1024, max_payload_bytes=64 * 1024))
# The document straight from the app (no request, so no lifespan starts at collection);
# the calls go to the app over ASGI, as from_asgi's would.
_loaded = schemathesis.openapi.from_dict(app.openapi())
_loaded.app = app
schema = _loaded.exclude(path="/v1/events")
# Sessions that exist: half the generated paths name one of them instead of a random string.
_LIVE = [str(uuid.UUID(int=i, version=4)) for i in range(1, 11)]


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    if not path_parameters or "session_id" not in path_parameters:
        return st.just(path_parameters)
    live = st.sampled_from(_LIVE).map(lambda sid: {**path_parameters, "session_id": sid})
    return st.one_of(st.just(path_parameters), live)


@pytest.fixture(scope="module", autouse=True)
def admin_key() -> Iterator[None]:
    async def setup() -> str:
        async with SessionManager.from_url(_URL) as manager:
            secret, _ = await ApiKeys(manager).create("acme", Role.ADMIN)
            # Some sessions, so that listing and paging return something.
            for i, sid in enumerate(_LIVE):
                await manager.create_session(
                    "grader", f"user-{i % 3}", context={"i": i}, session_id=sid
                )
        return secret

    _HEADERS["Authorization"] = f"Bearer {asyncio.run(setup())}"
    yield
    asgi.shutdown_lifespans()
    shutil.rmtree(_DIR, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms(case: Any) -> None:
    case.call_and_validate(
        headers=dict(_HEADERS),
        checks=[not_a_server_error, response_schema_conformance],
    )
