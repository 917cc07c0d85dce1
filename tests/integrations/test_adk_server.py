"""``agentcore`` session service URIs: how they map to agent-core stores, that ADK's own URI
resolution builds our service from them, and that ADK's API server (``adk api_server``, built
in-process) creates a session and runs a turn through HTTP on it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.adk.cli import service_registry
from google.adk.cli.fast_api import get_fast_api_app
from google.adk.cli.utils.service_factory import create_session_service_from_options

from agent_core.cli_format import DEFAULT_STORE_URL
from agent_core.errors import ConfigurationError
from agent_core.integrations import adk
from agent_core.integrations.adk import AgentCoreSessionService, manager_from_uri, register
from agent_core.sessions import SessionManager
from agent_core.stores.memory import MemoryStore

# ADK's API server builds services it marks experimental; the warning is ADK's own.
pytestmark = pytest.mark.filterwarnings(r"ignore:\[EXPERIMENTAL\]:UserWarning")


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """ADK's process-wide registry, rebuilt with only ADK's own schemes for this test."""
    monkeypatch.setattr(service_registry, "_service_registry_instance", None)
    yield


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[SessionManager]:
    """The managers that services built from URIs in this test (closed by the test)."""
    managers: list[SessionManager] = []
    real = adk.manager_from_uri

    def record(uri: str, **options: Any) -> SessionManager:
        manager = real(uri, **options)
        managers.append(manager)
        return manager

    monkeypatch.setattr(adk, "manager_from_uri", record)
    return managers


# --- the URI forms ------------------------------------------------------------------------------


def test_uri_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STORE_URL", "CACHE_URL", "NAMESPACE", "ENCRYPTION_KEYS"):
        monkeypatch.delenv(f"AGENT_CORE_{name}", raising=False)
    db = tmp_path / "s.db"
    manager = manager_from_uri(f"agentcore+sqlite:///{db}")
    assert manager.store.url == f"sqlite:///{db}"
    assert manager.namespace == "agent_core"

    manager = manager_from_uri(
        "agentcore+postgresql://app:secret@db.example:5432/agents"
        "?sslmode=disable&namespace=tutoring&cache_url=valkey://cache:6379/0"
    )
    assert manager.namespace == "tutoring"
    assert "sslmode=disable" in manager.store.url
    assert "secret" not in manager.store.url and "db.example:5432/agents" in manager.store.url
    assert "namespace" not in manager.store.url and "cache_url" not in manager.store.url

    assert isinstance(manager_from_uri("agentcore+memory://").store, MemoryStore)

    # agentcore:// is the CLI's store: its default, or the environment's
    default = SessionManager.from_url(DEFAULT_STORE_URL).store.url
    assert manager_from_uri("agentcore://").store.url == default
    monkeypatch.setenv("AGENT_CORE_STORE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("AGENT_CORE_NAMESPACE", "from_env")
    manager = manager_from_uri("agentcore://")
    assert manager.store.url == f"sqlite:///{tmp_path / 'env.db'}"
    assert manager.namespace == "from_env"
    # as on the command line, the environment fills in what the URI leaves out
    assert manager_from_uri(f"agentcore+sqlite:///{db}").namespace == "from_env"
    assert manager_from_uri(f"agentcore+sqlite:///{db}?namespace=mine").namespace == "mine"

    for bad in ("agentcore://somewhere/x.db", "postgresql://db/x", "agentcore+ftp://x"):
        with pytest.raises(ConfigurationError):
            manager_from_uri(bad)


async def test_service_from_uri_owns_its_manager(tmp_path: Path) -> None:
    uri = f"agentcore+sqlite:///{tmp_path / 's.db'}"
    async with AgentCoreSessionService(uri=uri, agents_dir=str(tmp_path)) as service:
        s = await service.create_session(app_name="a", user_id="u", state={"k": 1})
    # closed with the service; a second service on the same file sees the session
    async with AgentCoreSessionService.from_uri(uri) as again:
        got = await again.get_session(app_name="a", user_id="u", session_id=s.id)
        assert got is not None and got.state == {"k": 1}
    with pytest.raises(ConfigurationError):
        AgentCoreSessionService()
    with pytest.raises(ConfigurationError):
        AgentCoreSessionService(SessionManager(), uri=uri)


async def test_adk_uri_resolution_builds_our_service(
    tmp_path: Path, fresh_registry: None, built: list[SessionManager]
) -> None:
    register()
    register()  # idempotent
    for uri in (
        f"agentcore+sqlite:///{tmp_path / 's.db'}",
        "agentcore+memory://",
    ):
        service = create_session_service_from_options(base_dir=tmp_path, session_service_uri=uri)
        assert isinstance(service, AgentCoreSessionService)
        s = await service.create_session(app_name="a", user_id="u")
        assert await service.get_session(app_name="a", user_id="u", session_id=s.id) is not None
        await service.close()
    assert len(built) == 2


# --- adk api_server -----------------------------------------------------------------------------


def _agents_dir(root: Path, app: str, *, yaml: bool) -> Path:
    agents = root / "agents"
    (agents / app).mkdir(parents=True)
    (agents / app / "__init__.py").write_text("from . import agent\n")
    (agents / app / "agent.py").write_text(
        "from tests.integrations.test_adk_runner import make_agent\n\nroot_agent = make_agent()\n"
    )
    if yaml:
        # ADK's no-code registration: the class is called with uri= and agents_dir=.
        (agents / "services.yaml").write_text(
            textwrap.dedent(
                """\
                services:
                  - scheme: agentcore+sqlite
                    type: session
                    class: agent_core.integrations.adk.AgentCoreSessionService
                """
            )
        )
    return agents


@pytest.mark.parametrize(
    ("registration", "web"),
    [("register()", False), ("services.yaml", False), ("register()", True)],
    ids=["api_server", "api_server-services.yaml", "web"],
)
async def test_api_server_runs_a_turn_on_agent_core(
    tmp_path: Path,
    fresh_registry: None,
    built: list[SessionManager],
    registration: str,
    web: bool,
) -> None:
    """``adk api_server`` (and ``adk web``: the same app with the dev UI's endpoints)."""
    app_name = f"scribe_{uuid.uuid4().hex[:8]}"
    agents = _agents_dir(tmp_path, app_name, yaml=registration == "services.yaml")
    if registration == "register()":
        register()
    db = tmp_path / "sessions.db"
    app = get_fast_api_app(
        agents_dir=str(agents),
        session_service_uri=f"agentcore+sqlite:///{db}",
        web=web,
        use_local_storage=False,
    )
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.post(
                f"/apps/{app_name}/users/u1/sessions", json={"state": {"user:tier": "gold"}}
            )
            assert r.status_code == 200, r.text
            session_id = r.json()["id"]
            r = await client.post(
                "/run",
                json={
                    "app_name": app_name,
                    "user_id": "u1",
                    "session_id": session_id,
                    "new_message": {"role": "user", "parts": [{"text": "remember figs"}]},
                },
            )
            assert r.status_code == 200, r.text
            texts = [p.get("text") for e in r.json() for p in e["content"]["parts"]]
            assert texts[-1] == "saved #1"
            r = await client.get(f"/apps/{app_name}/users/u1/sessions/{session_id}")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["state"]["notes"] == ["figs"]
            assert body["state"]["user:count"] == 1 and body["state"]["user:tier"] == "gold"
            assert len(body["events"]) == 4  # user message, call, response, reply
    finally:
        for manager in built:
            await manager.close()
    assert len(built) == 1
    # another process (here: a plain manager on the same file) sees the run as a session
    async with SessionManager.from_url(f"sqlite:///{db}") as manager:
        key = adk.adk_session_id(app_name, "u1", session_id, tenant=None)
        head = await manager.get_session(key)
        assert head is not None and head.agent_type == f"adk:{app_name}"
        trail = await manager.list_checkpoints(key)
        assert [cp.name for cp in trail].count(adk.EVENT_CHECKPOINT) == 4


# --- the real command ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", ["adk + services.py", "python -m agent_core.integrations.adk"])
async def test_adk_api_server_command(tmp_path: Path, command: str) -> None:
    """``adk api_server --session_service_uri agentcore+sqlite:///...`` as a user runs it."""
    app_name = f"scribe_{uuid.uuid4().hex[:8]}"
    agents = _agents_dir(tmp_path, app_name, yaml=False)
    if command == "adk + services.py":
        (agents / "services.py").write_text(
            "from agent_core.integrations.adk import register\n\nregister()\n"
        )
        argv = [str(Path(sys.executable).parent / "adk")]
    else:
        argv = [sys.executable, "-m", "agent_core.integrations.adk"]
    db = tmp_path / "sessions.db"
    port = _free_port()
    argv += [
        "api_server",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--session_service_uri=agentcore+sqlite:///{db}",
        str(agents),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(600):
                if proc.poll() is not None:
                    raise AssertionError((tmp_path / "server.log").read_text())
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            r = await client.post(f"/apps/{app_name}/users/u1/sessions", json={})
            assert r.status_code == 200, r.text
            session_id = r.json()["id"]
            r = await client.post(
                "/run",
                json={
                    "app_name": app_name,
                    "user_id": "u1",
                    "session_id": session_id,
                    "new_message": {"role": "user", "parts": [{"text": "hello"}]},
                },
            )
            assert r.status_code == 200, r.text
            assert r.json()[-1]["content"]["parts"][0]["text"] == "echo: hello"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    async with SessionManager.from_url(f"sqlite:///{db}") as manager:
        key = adk.adk_session_id(app_name, "u1", session_id, tenant=None)
        head = await manager.get_session(key)
        assert head is not None
        assert head.context == {"last_reply": "echo: hello"}
        trail = await manager.list_checkpoints(key)
        assert [cp.name for cp in trail] == ["session_created"] + [adk.EVENT_CHECKPOINT] * 2


async def test_tenant_in_uri(tmp_path: Path) -> None:
    uri = f"agentcore+sqlite:///{tmp_path / 's.db'}"
    async with (
        AgentCoreSessionService(uri=uri + "?tenant=acme") as acme,
        AgentCoreSessionService(uri=uri + "?tenant=globex") as globex,
    ):
        s = await acme.create_session(app_name="a", user_id="u", session_id="s1")
        assert acme.session_id_of("a", "u", "s1") != globex.session_id_of("a", "u", "s1")
        assert await globex.get_session(app_name="a", user_id="u", session_id="s1") is None
        await globex.create_session(app_name="a", user_id="u", session_id="s1")
        got = await acme.get_session(app_name="a", user_id="u", session_id="s1")
        assert got is not None and got.id == s.id
