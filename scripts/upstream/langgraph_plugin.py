"""pytest plugin: LangGraph's own graph tests with ``AgentCoreSaver`` as their checkpointer.

Loaded with ``-p langgraph_plugin`` by ``scripts/upstream/langgraph.sh`` inside an unpacked
``langgraph`` source distribution. It replaces that suite's ``sync_checkpointer`` and
``async_checkpointer`` fixtures (in its ``tests/conftest.py``) by ours, parametrized over the
backends of ``AGENT_CORE_UPSTREAM_BACKENDS`` (``sqlite,postgres`` by default; PostgreSQL is
``AGENT_CORE_TEST_POSTGRES_URL`` when set, else a throwaway server from
``agent_core.devservers`` for the length of the run, one fresh schema per test); keeps only the
tests that use one of them, minus ``EXCLUDED`` (each with its reason, also in
docs/integrations.md); and prints how many passed, per selection.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_core.integrations.langgraph import AgentCoreSaver

_WANTED = os.environ.get("AGENT_CORE_UPSTREAM_BACKENDS", "sqlite,postgres").split(",")
BACKENDS = [f"agentcore_{name}" for name in ("sqlite", "postgres") if name in _WANTED]
FIXTURES = {"sync_checkpointer": "sync", "async_checkpointer": "async"}

# test function name -> why it is not run against AgentCoreSaver (docs/integrations.md).
EXCLUDED: dict[str, str] = {}

_server: Any = None
_admin: Any = None


def pytest_configure(config: pytest.Config) -> None:
    global _server
    if "agentcore_postgres" in BACKENDS:
        from agent_core.devservers.postgres import PostgresServer

        _server = PostgresServer(use_env=True)
        _server.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _admin is not None:
        _admin.close()
    if _server is not None:
        _server.close()


# PostgreSQL schemas with agent-core's tables, emptied after each test for the next one:
# migrating a fresh schema per test would double the run's time.
_free_schemas: list[str] = []


def _take_schema() -> str:
    return _free_schemas.pop() if _free_schemas else f"lg{uuid.uuid4().hex[:16]}"


def _recycle(schema: str) -> None:
    global _admin
    import psycopg

    if _admin is None:
        _admin = psycopg.connect(_server.dsn, autocommit=True)
    rows = _admin.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s"
        " AND tablename NOT IN ('agent_core_schema', 'tier_epochs')",
        (schema,),
    ).fetchall()
    if rows:
        _admin.execute("TRUNCATE " + ", ".join(f'"{schema}"."{r[0]}"' for r in rows))
    _free_schemas.append(schema)


def _serde() -> Any:
    # LANGGRAPH_STRICT_MSGPACK=true: strict msgpack, as their own fixtures do then.
    if os.getenv("LANGGRAPH_STRICT_MSGPACK", "false").lower() not in ("1", "true", "yes"):
        return None
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    return JsonPlusSerializer(allowed_msgpack_modules=None)


@contextlib.contextmanager
def _saver(backend: str, tmp_path: Path) -> Iterator[AgentCoreSaver]:
    if backend == "agentcore_sqlite":
        yield AgentCoreSaver.from_url(f"sqlite:///{tmp_path / 'agent_core.db'}", serde=_serde())
        return
    schema = _take_schema()
    try:
        yield AgentCoreSaver.from_url(_server.dsn, serde=_serde(), store_options={"schema": schema})
    finally:
        _recycle(schema)


@pytest.fixture(params=BACKENDS)
def sync_checkpointer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with _saver(request.param, tmp_path) as saver, saver:
        yield saver


@pytest.fixture(params=BACKENDS)
async def async_checkpointer(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    with _saver(request.param, tmp_path) as saver:
        async with saver:
            yield saver


@pytest.hookimpl(tryfirst=True)
def pytest_plugin_registered(plugin: object, manager: pytest.PytestPluginManager) -> None:
    # Before pytest reads the suite's conftest fixtures, put ours in their place.
    path = getattr(plugin, "__file__", None) or ""
    if path.endswith(os.path.join("tests", "conftest.py")) and hasattr(plugin, "sync_checkpointer"):
        plugin.sync_checkpointer = sync_checkpointer  # type: ignore[attr-defined]
        plugin.async_checkpointer = async_checkpointer  # type: ignore[attr-defined]


_kinds: dict[str, str] = {}
_passed: dict[str, int] = {}
_failed: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selected: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    excluded = 0
    for item in items:
        kinds = [FIXTURES[name] for name in getattr(item, "fixturenames", ()) if name in FIXTURES]
        name = getattr(item, "originalname", item.name)
        if not kinds:
            deselected.append(item)
        elif name in EXCLUDED:
            deselected.append(item)
            excluded += 1
        else:
            callspec = getattr(item, "callspec", None)
            backend = (
                "" if callspec is None else str(callspec.params.get(f"{kinds[0]}_checkpointer", ""))
            )
            _kinds[item.nodeid] = f"{kinds[0]} {backend.removeprefix('agentcore_')}"
            selected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected
    config._agent_core_excluded = excluded  # type: ignore[attr-defined]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    kind = _kinds.get(report.nodeid)
    if kind is None:
        return
    if report.when == "call" and report.passed:
        _passed[kind] = _passed.get(kind, 0) + 1
    elif report.failed:
        _failed.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    write = terminalreporter.write_line
    write(f"agent-core backends: {', '.join(BACKENDS)}")
    write(f"excluded (with reasons in docs/integrations.md): {config._agent_core_excluded}")  # type: ignore[attr-defined]
    write(f"failed: {len(_failed)}")
    for kind in sorted(_passed):
        write(f"passed {kind}: {_passed[kind]}")
    write(f"passed: {sum(_passed.values())}")
