"""Code written against the reference design runs unchanged.

``reference_workflow`` uses only what the reference offered: its import paths, its six manager
methods and the model methods it called. It runs on ``SessionManager()``, on a SQLite manager,
and on the reference constructor with a redis-py client and an asyncpg pool over an empty
PostgreSQL database.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent_core.sessions.session_manager import SessionManager
from agent_core.sessions.session_models import AgentSession, SessionCheckpoint, SessionState
from tests.servers.valkey import make_client


async def reference_workflow(manager: SessionManager) -> None:
    session = await manager.create_session(
        agent_type="tutor-agent", user_id="student-42", context={"lesson": "fractions"}
    )
    assert isinstance(session, AgentSession)
    assert session.state == SessionState.ACTIVE

    session.checkpoint("question_asked", {"q": 1})
    session.context["progress"] = 0.5
    await manager.update_session(session)

    loaded = await manager.get_session(session.session_id)
    assert loaded is not None
    assert loaded.context == {"lesson": "fractions", "progress": 0.5}
    assert [cp.name for cp in loaded.checkpoints] == ["session_created", "question_asked"]
    assert isinstance(loaded.checkpoints[0], SessionCheckpoint)
    assert SessionCheckpoint.from_dict(loaded.checkpoints[1].to_dict()).data == {"q": 1}

    loaded.checkpoint("answer_checked", {"correct": True})
    await manager.update_session(loaded)

    active = await manager.get_active_sessions(agent_type="tutor-agent")
    assert session.session_id in [s.session_id for s in active]
    assert await manager.get_active_sessions(user_id="nobody") == []

    assert await manager.cleanup_stale_sessions(max_age=timedelta(hours=48)) == 0
    assert await manager.cleanup_stale_sessions() == 0

    other = await manager.create_session("grader-agent", "student-42")
    other.fail("grader crashed")
    await manager.update_session(other)
    failed = await manager.get_session(other.session_id)
    assert failed is not None and failed.state == SessionState.FAILED
    assert AgentSession.from_dict(failed.to_dict()).session_id == other.session_id

    assert await manager.delete_session(session.session_id) is True
    assert await manager.get_session(session.session_id) is None
    assert await manager.delete_session(str(uuid.uuid4())) is False


async def test_reference_code_runs_on_the_no_argument_manager() -> None:
    await reference_workflow(SessionManager())


async def test_reference_code_runs_on_sqlite(tmp_path: Path) -> None:
    manager = SessionManager.from_url(f"sqlite:///{tmp_path / 'ref.db'}")
    try:
        await reference_workflow(manager)
    finally:
        await manager.close()


@pytest.mark.postgres
@pytest.mark.valkey
@pytest.mark.parametrize("driver", ["redis", "valkey"])
async def test_reference_constructor_with_a_redis_or_valkey_client_and_asyncpg_pool(
    postgres_server: Any, valkey_server: Any, driver: str
) -> None:
    import asyncpg

    dsn = postgres_server.create_database(f"ref_{uuid.uuid4().hex[:10]}")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    client = make_client(driver, valkey_server.url)
    try:
        manager = SessionManager(
            redis_client=client, db_pool=pool, namespace="breakpilot", session_ttl_hours=24
        )
        await reference_workflow(manager)
        await manager.close()
        # The injected pool and client are the caller's: still open after close().
        assert await pool.fetchval("SELECT count(*) FROM sessions") == 2
        keys = [k async for k in client.scan_iter(match="breakpilot:session:*")]
        assert keys
    finally:
        await client.aclose()
        await pool.close()
