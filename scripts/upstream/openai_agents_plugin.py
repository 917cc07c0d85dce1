"""pytest plugin: the OpenAI Agents SDK's own session tests, run on ``AgentCoreSession``.

Loaded by ``scripts/upstream/openai_agents.sh`` (``-p openai_agents_plugin``) inside the SDK's
source distribution. It replaces ``SQLiteSession`` in the test modules by a factory with the
same signature that builds ``AgentCoreSession.from_url(...)``:

* ``SQLiteSession(id)`` (SQLite's ``:memory:``, private to the instance) -> ``memory://``, a
  store private to the session as well;
* ``SQLiteSession(id, db_path)`` -> ``sqlite:///<db_path>``: sessions on one path share one
  store, as they share one file upstream.

With ``AGENT_CORE_UPSTREAM_POSTGRES_URL`` set, both go to that PostgreSQL server instead, one
schema per ``db_path`` (and a fresh one per ``:memory:`` session).

It deselects the tests that examine ``SQLiteSession`` itself rather than the session protocol
(``DESELECTED``, each with its reason; docs/integrations.md lists them) and prints
``passed: N`` at the end.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent_core.integrations.openai_agents import AgentCoreSession

_INTERNALS = "examines SQLiteSession internals (its per-thread sqlite3 connections)"
_SQL = (
    "writes into SQLiteSession's SQL tables (agent_sessions/agent_messages) behind its back; "
    "the behaviour is covered on every backend by tests/integrations/test_openai_agents.py"
)
_FAULT = "injects faults into SQLiteSession's sqlite3 connection (rollback/commit/close)"

DESELECTED: dict[str, str] = {
    "test_sqlite_session_close_closes_worker_thread_connections": _INTERNALS,
    "test_sqlite_session_reaps_connections_from_exited_worker_threads": _INTERNALS
    + "; the asyncio.run-per-turn pattern is test_new_event_loop_per_call",
    "test_sqlite_session_closes_retired_connections_before_the_next_allocation": _INTERNALS,
    "test_sqlite_session_keeps_connections_of_live_worker_threads": _INTERNALS,
    "test_sqlite_session_file_lock_is_shared_across_instances": (
        "examines SQLiteSession's process-wide file lock registry (_file_locks)"
    ),
    "test_sqlite_session_closed_rejects_empty_add_items": (
        "matches the text 'SQLiteSession is closed'; ours raises NotOpenError (a "
        "RuntimeError) 'AgentCoreSession is closed': test_closed_session_refuses_calls"
    ),
    "test_sqlite_session_pop_item_skips_corrupt_most_recent": _SQL,
    "test_sqlite_session_pop_item_returns_none_after_dropping_only_corrupt_rows": _SQL,
    "test_sqlite_session_get_items_limit_skips_corrupt_newest_rows": _SQL,
    "test_sqlite_session_get_items_session_settings_limit_skips_corrupt_rows": _SQL,
    "test_sqlite_session_failed_add_items_releases_write_lock": (
        "probes SQLite's write lock and table agent_sessions with a raw connection; ours "
        "rejects a non-JSON item before writing (InvalidValue): test_non_json_item_writes_nothing"
    ),
    "test_sqlite_session_failed_clear_session_rolls_back": _SQL + " (drops a table)",
    "test_sqlite_session_failed_pop_item_releases_write_lock": _SQL + " (drops a table)",
    "test_sqlite_session_rollback_failure_evicts_connection": _FAULT,
    "test_sqlite_session_close_retries_quarantined_connection": _FAULT,
    "test_sqlite_session_post_commit_cancellation_propagates_after_known_outcome": (
        _FAULT + "; the property is test_cancelled_mutation_settles_before_raising"
    ),
}


BUILT: list[str] = []  # proof that the tests ran on AgentCoreSession


def _store(db_path: str | Path) -> tuple[str, dict[str, Any]]:
    """The store URL and manager options standing in for ``db_path``."""
    postgres = os.environ.get("AGENT_CORE_UPSTREAM_POSTGRES_URL")
    memory = str(db_path) == ":memory:"
    if postgres:
        tag = uuid.uuid4().hex if memory else str(Path(db_path).resolve())
        schema = "oa_" + hashlib.sha256(tag.encode()).hexdigest()[:16]
        return postgres, {"store_options": {"schema": schema}}
    if memory:
        return "memory://", {}
    return f"sqlite:///{Path(db_path).resolve()}", {}


def SQLiteSession(
    session_id: str,
    db_path: str | Path = ":memory:",
    sessions_table: str = "agent_sessions",
    messages_table: str = "agent_messages",
    session_settings: Any = None,
) -> AgentCoreSession:
    del sessions_table, messages_table  # SQL table names: agent-core keeps items as records
    url, options = _store(db_path)
    BUILT.append(session_id)
    return AgentCoreSession.from_url(session_id, url, session_settings=session_settings, **options)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The test modules' own global (the modules import the name from ``agents``).
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and hasattr(module, "SQLiteSession"):
            module.SQLiteSession = SQLiteSession
    kept, dropped = [], []
    for item in items:
        base = item.name.split("[", 1)[0]
        (dropped if base in DESELECTED else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_terminal_summary(terminalreporter: Any) -> None:
    stats = terminalreporter.stats
    terminalreporter.write_line("")
    terminalreporter.write_line("deselected (not about the Session protocol):")
    for name, reason in DESELECTED.items():
        terminalreporter.write_line(f"  {name}: {reason}")
    backend = (
        "postgresql" if os.environ.get("AGENT_CORE_UPSTREAM_POSTGRES_URL") else "memory/sqlite"
    )
    terminalreporter.write_line(
        f"backend: {backend}; deselected: {len(stats.get('deselected', []))}; "
        f"failed: {len(stats.get('failed', [])) + len(stats.get('error', []))}"
    )
    terminalreporter.write_line(f"AgentCoreSession instances built: {len(BUILT)}")
    terminalreporter.write_line(f"passed: {len(stats.get('passed', []))}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not BUILT and exitstatus == 0:
        session.exitstatus = 1  # the swap did not happen: these results prove nothing
