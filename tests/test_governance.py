"""Data governance on every backend: retention, export, purge and their audit records."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent_core.errors import ValidationError
from agent_core.sessions.governance import RetentionResult
from agent_core.sessions.session_manager import SessionManager
from agent_core.sessions.session_models import SessionState
from agent_core.stores.memory import MemoryStore
from agent_core.stores.postgres import PostgresStore
from agent_core.stores.sqlite import SQLiteStore
from tests.conftest import MakeManager


async def age(manager: SessionManager, session_id: str, days: float) -> None:
    """Make the stored session's last change ``days`` older, with plain SQL on the test's own
    file or schema (or the memory store's row): what a session left alone that long looks like."""
    store = manager.store
    delta = timedelta(days=days)
    if isinstance(store, MemoryStore):
        head = store._rows[session_id].head
        assert head.updated_at is not None
        head.updated_at -= delta
    elif isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store._path, timeout=5)
        try:
            conn.execute(
                "UPDATE sessions SET updated_at = updated_at - ? WHERE session_id = ?",
                (delta // timedelta(microseconds=1), session_id),
            )
            conn.commit()
        finally:
            conn.close()
    else:
        assert isinstance(store, PostgresStore)
        import asyncpg

        conn = await asyncpg.connect(store._dsn)
        try:
            await conn.execute(
                f'UPDATE "{manager.namespace}".sessions'
                " SET updated_at = updated_at - $1::interval WHERE session_id = $2",
                delta,
                session_id,
            )
        finally:
            await conn.close()


async def make_states(manager: SessionManager, user: str = "u") -> dict[str, str]:
    """One session in each state; name -> session id."""
    ids = {}
    for name in ("active", "paused", "completed", "failed", "deleted"):
        session = await manager.create_session("tutor", user, {"secret": f"{name}-secret"})
        ids[name] = session.session_id
    await manager.set_state(ids["paused"], SessionState.PAUSED)
    await manager.set_state(ids["completed"], SessionState.COMPLETED)
    await manager.set_state(ids["failed"], SessionState.FAILED, "boom")
    assert await manager.delete_session(ids["deleted"])
    return ids


async def stored_ids(manager: SessionManager, user: str = "u") -> set[str]:
    """Every stored session of ``user``, deleted ones included."""
    heads = await manager.store.list_user_sessions(user, limit=1000)
    return {h.session_id for h in heads}


# --- retention -----------------------------------------------------------------------------


async def test_retention_purges_exactly_what_its_policy_says(make_manager: MakeManager) -> None:
    manager = await make_manager()
    ids = await make_states(manager)
    await asyncio.sleep(0.01)

    # No policy: the reaper purges nothing.
    result = await manager.reap()
    assert result.retention == RetentionResult(0, 0)
    assert await stored_ids(manager) == set(ids.values())

    await manager.set_retention_policy(deleted_days=0, terminal_days=None, actor="dpo")
    expired, failed = result = await manager.reap()
    assert (expired, failed) == (0, 0)
    assert result.retention == RetentionResult(deleted=1, terminal=0)
    assert await stored_ids(manager) == set(ids.values()) - {ids["deleted"]}

    await manager.set_retention_policy(deleted_days=0, terminal_days=0, actor="dpo")
    result = await manager.reap()
    assert result.retention == RetentionResult(deleted=0, terminal=2)
    assert await stored_ids(manager) == {ids["active"], ids["paused"]}
    assert await manager.get_session(ids["active"]) is not None
    assert await manager.get_session(ids["paused"]) is not None

    runs = await manager.audit_log(action="retention")
    assert [(r.actor, r.session_count) for r in runs] == [("reaper", 1), ("reaper", 2)]
    assert runs[1].details["terminal"] == 2 and runs[1].details["terminal_days"] == 0
    assert runs[1].details["policy_set_by"] == "dpo"
    assert "secret" not in repr(runs)


async def test_retention_counts_days_from_the_last_change(make_manager: MakeManager) -> None:
    manager = await make_manager()
    old = await make_states(manager, "old")
    new = await make_states(manager, "new")
    for sid in old.values():
        await age(manager, sid, 3)
    await manager.set_retention_policy(deleted_days=2, terminal_days=5)
    assert (await manager.apply_retention()) == RetentionResult(deleted=1, terminal=0)
    assert await stored_ids(manager, "old") == set(old.values()) - {old["deleted"]}
    assert await stored_ids(manager, "new") == set(new.values())

    await manager.set_retention_policy(deleted_days=2, terminal_days=2)
    assert (await manager.apply_retention()) == RetentionResult(deleted=0, terminal=2)
    # Active and paused sessions are never retention's business, however old.
    assert await stored_ids(manager, "old") == {old["active"], old["paused"]}
    assert await stored_ids(manager, "new") == set(new.values())


async def test_other_managers_stop_reading_what_retention_purged(
    make_manager: MakeManager,
) -> None:
    reaper = await make_manager()
    readers = [await make_manager(), await make_manager(local_cache=True)]
    done = [await reaper.create_session("tutor", "u", {"secret": i}) for i in range(3)]
    for session in done:
        await reaper.append_checkpoint(session.session_id, "step", {"secret": "x"})
        await reaper.set_state(session.session_id, SessionState.COMPLETED)
    for reader in readers:
        for session in done:
            for _ in range(2):  # the second read may come from the reader's own tiers
                assert await reader.get_session(session.session_id) is not None
    await reaper.set_retention_policy(deleted_days=None, terminal_days=0)
    await asyncio.sleep(0.01)
    result = await reaper.reap(batch_size=2)
    assert result.retention.terminal == 3
    fresh = await make_manager()
    for manager in (*readers, reaper, fresh):
        for session in done:
            assert await manager.get_session(session.session_id) is None


async def test_retention_works_in_batches_and_reapers_share_the_work(
    make_manager: MakeManager,
) -> None:
    a = await make_manager(cleanup_batch_size=2)
    b = await make_manager(cleanup_batch_size=2)
    for _ in range(7):
        session = await a.create_session("tutor", "u")
        await a.delete_session(session.session_id)
    await a.set_retention_policy(deleted_days=0, terminal_days=0)
    await asyncio.sleep(0.01)
    results = await asyncio.gather(a.apply_retention(), b.apply_retention())
    assert sum(r.deleted for r in results) == 7
    assert await stored_ids(a) == set()
    records = await a.audit_log(action="retention")
    assert sum(r.session_count for r in records) == 7


async def test_retention_policy_is_per_namespace_and_checked(make_manager: MakeManager) -> None:
    manager = await make_manager()
    assert (await manager.retention_policy()).deleted_days is None
    session = await manager.create_session("tutor", "u")
    await manager.delete_session(session.session_id)
    await manager.set_retention_policy(
        deleted_days=0, terminal_days=0, namespace="someone-else", actor="ops"
    )
    await asyncio.sleep(0.01)
    assert (await manager.apply_retention()).total == 0
    assert await stored_ids(manager) == {session.session_id}
    other = await manager.retention_policy("someone-else")
    assert (other.deleted_days, other.terminal_days, other.updated_by) == (0, 0, "ops")
    assert other.updated_at is not None
    assert [p.namespace for p in await manager.retention_policies()] == ["someone-else"]
    for bad in (-1, 36_501, 1.5, True):
        with pytest.raises(ValidationError):
            await manager.set_retention_policy(deleted_days=bad, terminal_days=None)  # type: ignore[arg-type]
    changes = await manager.audit_log(action="retention_set")
    assert [(c.actor, c.namespace) for c in changes] == [("ops", "someone-else")]


# --- export --------------------------------------------------------------------------------


async def collect(manager: SessionManager, user: str, **options: Any) -> list[dict[str, Any]]:
    return [json.loads(line) async for line in manager.export(user, **options)]


async def test_export_returns_everything_including_soft_deleted(
    make_manager: MakeManager,
) -> None:
    manager = await make_manager()
    mine = []
    for i in range(7):
        session = await manager.create_session("tutor", "alice", {"i": i}, {"m": i})
        for step in range(i * 2):
            await manager.append_checkpoint(session.session_id, f"step-{step}", {"n": step})
        mine.append(session.session_id)
    await manager.create_session("tutor", "bob", {"not": "alice"})
    await manager.set_state(mine[1], SessionState.COMPLETED)
    # Read the live sessions back before deleting two of them: the export must match.
    expected: dict[str, dict[str, Any]] = {}
    trails: dict[str, list[dict[str, Any]]] = {}
    for sid in mine:
        session = await manager.get_session(sid)
        assert session is not None
        expected[sid] = session.to_dict()
        trails[sid] = [cp.to_dict() for cp in await manager.list_checkpoints(sid, limit=1000)]
    for sid in mine[4:6]:
        await manager.delete_session(sid)

    lines = await collect(manager, "alice", page_size=3, actor="dpo")
    assert lines[-1] == {
        "type": "end",
        "user_id": "alice",
        "sessions": 7,
        "checkpoints": sum(len(t) for t in trails.values()),
    }
    sessions = [line for line in lines if line["type"] == "session"]
    assert [s["session_id"] for s in sessions] == sorted(mine)
    for line in (dict(session) for session in sessions):
        sid = line["session_id"]
        want = {k: v for k, v in expected[sid].items() if k != "checkpoints"}
        if sid in mine[4:6]:
            assert line["state"] == "deleted"
            assert line["version"] == want["version"] + 1
            for key in ("state", "version", "updated_at"):
                want.pop(key)
                line.pop(key)
        line.pop("type")
        assert line == want
    # Each session line is followed by its whole trail, in seq order.
    current = None
    got: dict[str, list[dict[str, Any]]] = {sid: [] for sid in mine}
    for line in lines[:-1]:
        if line["type"] == "session":
            current = line["session_id"]
        else:
            assert line["type"] == "checkpoint" and line["session_id"] == current
            got[current].append({k: line[k] for k in ("name", "timestamp", "data", "seq")})
    assert got == trails

    audit = await manager.audit_log(user_id="alice")
    assert [(r.action, r.actor, r.session_count) for r in audit] == [("export", "dpo", 7)]
    assert audit[0].details == {
        "checkpoints": sum(len(t) for t in trails.values()),
        "complete": True,
    }


async def test_export_reads_page_by_page(make_manager: MakeManager) -> None:
    manager = await make_manager()
    for _ in range(9):
        session = await manager.create_session("tutor", "carol")
        for step in range(6):
            await manager.append_checkpoint(session.session_id, "s", {"n": step})
    store = manager.store
    calls: list[tuple[str, int]] = []
    list_sessions, list_trail = store.list_user_sessions, store.list_trail

    async def spy_sessions(user_id: str, **kw: Any) -> Any:
        page = await list_sessions(user_id, **kw)
        calls.append(("sessions", len(page)))
        assert kw["limit"] <= 4
        return page

    async def spy_trail(session_id: str, **kw: Any) -> Any:
        page = await list_trail(session_id, **kw)
        calls.append(("trail", len(page)))
        assert kw["limit"] <= 4
        return page

    store.list_user_sessions = spy_sessions  # type: ignore[method-assign]
    store.list_trail = spy_trail  # type: ignore[method-assign]
    try:
        lines = await collect(manager, "carol", page_size=4)
    finally:
        del store.list_user_sessions, store.list_trail
    assert lines[-1]["sessions"] == 9 and lines[-1]["checkpoints"] == 9 * 7
    assert [n for kind, n in calls if kind == "sessions"] == [4, 4, 1]
    assert [n for kind, n in calls if kind == "trail"] == [4, 3] * 9


@pytest.mark.parametrize("backend", ["memory", "sqlite"], indirect=True)
async def test_export_memory_does_not_grow_with_its_size(
    make_manager: MakeManager, backend: str
) -> None:
    manager = await make_manager()
    blob = "x" * 2000
    for user, count in (("small", 30), ("large", 300)):
        for _ in range(count):
            session = await manager.create_session("tutor", user, {"blob": blob})
            await manager.append_checkpoint(session.session_id, "s", {"blob": blob})

    async def peak(user: str) -> tuple[int, int]:
        lines = 0
        tracemalloc.start()
        try:
            async for _ in manager.export(user, page_size=10):
                lines += 1
            return tracemalloc.get_traced_memory()[1], lines
        finally:
            tracemalloc.stop()

    await peak("small")  # warm up (statement caches, imports)
    small, small_lines = await peak("small")
    large, large_lines = await peak("large")
    assert (small_lines, large_lines) == (30 * 3 + 1, 300 * 3 + 1)
    # Ten times the data, about the same peak: a few pages in flight, never the whole export.
    assert large < small * 1.5 + 64 * 1024, (small, large)
    assert large < 300 * 4000 / 4, (small, large)


async def test_export_stopped_early_is_recorded_as_incomplete(make_manager: MakeManager) -> None:
    manager = await make_manager()
    for _ in range(3):
        await manager.create_session("tutor", "dave")
    lines = manager.export("dave", actor="curious")
    async for _ in lines:
        break
    await lines.aclose()
    records = await manager.audit_log(user_id="dave")
    assert [(r.action, r.actor, r.session_count) for r in records] == [("export", "curious", 1)]
    assert records[0].details["complete"] is False


async def test_export_checks_its_input_at_once(manager: SessionManager) -> None:
    with pytest.raises(ValidationError):
        manager.export("")
    with pytest.raises(ValidationError):
        manager.export("u", page_size=0)
    with pytest.raises(ValidationError):
        manager.export("u", actor="")
    assert await collect(manager, "nobody") == [
        {"type": "end", "user_id": "nobody", "sessions": 0, "checkpoints": 0}
    ]


# --- purge and the audit log ---------------------------------------------------------------


async def test_purge_is_audited_without_content(make_manager: MakeManager) -> None:
    manager = await make_manager()
    erased = [await manager.create_session("tutor", "erin", {"secret": "s3cr3t"}) for _ in range(2)]
    await manager.append_checkpoint(erased[0].session_id, "step", {"secret": "s3cr3t"})
    await manager.delete_session(erased[1].session_id)
    single = await manager.create_session("tutor", "frank", {"secret": "s3cr3t"})

    assert await manager.purge(user_id="erin", actor="dpo") == 2
    assert await manager.purge(session_id=single.session_id) == 1
    assert await manager.purge(user_id="nobody", actor="dpo") == 0

    records = await manager.audit_log(action="purge")
    assert [(r.actor, r.user_id, r.session_count) for r in records] == [
        ("dpo", "erin", 2),
        ("unspecified", "frank", 1),
        ("dpo", "nobody", 0),
    ]
    assert records[1].details == {"session_id": single.session_id}
    assert all(r.namespace == manager.namespace for r in records)
    assert "s3cr3t" not in repr(records)
    assert [r.id for r in records] == sorted(r.id for r in records)
    assert records[0].at <= records[1].at <= records[2].at
    # Paging and filters.
    assert await manager.audit_log(user_id="erin") == records[:1]
    assert await manager.audit_log(action="purge", after_id=records[0].id, limit=1) == records[1:2]
    assert await stored_ids(manager, "erin") == set()
    assert await collect(manager, "erin", actor="dpo") == [
        {"type": "end", "user_id": "erin", "sessions": 0, "checkpoints": 0}
    ]


async def test_store_listing_includes_deleted_sessions_and_their_trail(
    manager: SessionManager,
) -> None:
    session = await manager.create_session("tutor", "gina")
    await manager.append_checkpoint(session.session_id, "step")
    await manager.delete_session(session.session_id)
    heads = await manager.store.list_user_sessions("gina")
    assert [(h.session_id, h.state) for h in heads] == [(session.session_id, SessionState.DELETED)]
    trail = await manager.store.list_trail(session.session_id)
    assert [cp.name for cp in trail] == ["session_created", "step"]
    assert await manager.store.list_trail("00000000-0000-4000-8000-000000000000") == []


def test_sqlite_migration_3_applies_to_an_existing_file(tmp_path: Path) -> None:
    async def run() -> None:
        async with SessionManager.from_url(f"sqlite:///{tmp_path / 'x.db'}") as manager:
            await manager.set_retention_policy(deleted_days=1, terminal_days=None)
            assert await manager.store.migrate() >= 3

    asyncio.run(run())


async def test_retention_on_sqlite_erases_the_content_from_the_files(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    secret = "retention-secret-9d41c7"
    async with SessionManager.from_url(f"sqlite:///{path}") as manager:
        kept = await manager.create_session("tutor", "other", {"k": "kept"})
        session = await manager.create_session("tutor", "u", {"secret": secret * 300})
        await manager.append_checkpoint(session.session_id, "step", {"s": secret * 200})
        await manager.set_state(session.session_id, SessionState.COMPLETED)
        before = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        assert secret.encode() in before
        await manager.set_retention_policy(deleted_days=None, terminal_days=0)
        await asyncio.sleep(0.01)
        assert (await manager.apply_retention()).terminal == 1
        for stored in (path, tmp_path / "store.db-wal"):
            data = stored.read_bytes() if stored.exists() else b""
            assert secret.encode() not in data, stored.name
        assert await manager.get_session(kept.session_id) is not None
