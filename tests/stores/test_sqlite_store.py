"""SQLite-specific behaviour; the shared behaviour is covered by tests/contract."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import sqlite3
import statistics
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import agent_core
from agent_core.errors import NotOpenError, SessionNotFound, StoreUnavailable
from agent_core.sessions.session_models import AgentSession, SessionCheckpoint, SessionState
from agent_core.stores.base import SessionRef
from agent_core.stores.migrations import load_migrations
from agent_core.stores.sqlite import SQLiteStore
from tests.stores.differential import check_against_memory

SRC = Path(agent_core.__file__).resolve().parents[1]
MIGRATIONS = len(load_migrations("sqlite"))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "store.db") as opened:
        yield opened


async def run_python(code: str, *args: str, timeout: float = 60) -> str:
    """Run ``code`` in a fresh interpreter that imports this checkout; return its stdout."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(code),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


def new_session(**kwargs: Any) -> AgentSession:
    return AgentSession(**{"agent_type": "test", "user_id": "u1", **kwargs})


# --- connection and file -------------------------------------------------------------------


async def test_wal_mode_is_on(store: SQLiteStore, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "store.db") as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.url == f"sqlite:///{tmp_path / 'store.db'}"


async def test_data_survives_reopening(tmp_path: Path) -> None:
    session = new_session(context={"k": "v"})
    async with SQLiteStore(tmp_path / "s.db") as first:
        await first.create(session)
        await first.append_checkpoint(session.session_id, SessionCheckpoint("step"))
    async with SQLiteStore(tmp_path / "s.db") as second:
        got = await second.get(session.session_id, window=10)
    assert got is not None
    assert got.context == {"k": "v"}
    assert [cp.seq for cp in got.checkpoints] == [1]


async def test_timestamps_round_trip_as_aware_utc_with_microseconds(store: SQLiteStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    stamp = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=plus_two)
    beat = datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    session = new_session(created_at=stamp, last_heartbeat=beat)
    session.checkpoints.append(SessionCheckpoint("first", timestamp=stamp))
    head = await store.create(session)
    got = await store.get(session.session_id, window=1)
    assert got is not None
    # The head's stamps are the store's; checkpoint timestamps are kept as given.
    assert (got.created_at, got.last_heartbeat) == (head.created_at, head.last_heartbeat)
    assert got.created_at.tzinfo is UTC and got.last_heartbeat.tzinfo is UTC
    assert got.checkpoints[0].timestamp == stamp
    assert got.checkpoints[0].timestamp.tzinfo is UTC
    assert got.checkpoints[0].timestamp.microsecond == 123456


async def test_use_before_open_or_after_close_raises_not_open(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    with pytest.raises(NotOpenError):
        await store.get("00000000-0000-0000-0000-000000000000", window=1)
    await store.open()
    await store.close()
    with pytest.raises(NotOpenError):
        await store.create(new_session())
    await store.close()  # closing twice is harmless


async def test_corrupt_file_raises_store_unavailable_at_open(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not an SQLite database file" * 200)
    with pytest.raises(StoreUnavailable):
        await SQLiteStore(path).open()


@pytest.mark.parametrize("where", ["missing-directory", "a-directory"])
async def test_unopenable_path_raises_store_unavailable_at_open(tmp_path: Path, where: str) -> None:
    path = tmp_path / "no" / "such" / "dir" / "s.db" if where == "missing-directory" else tmp_path
    with pytest.raises(StoreUnavailable):
        await SQLiteStore(path).open()


async def test_missing_schema_maps_to_store_unavailable(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "bare.db", create_schema=False) as store:
        with pytest.raises(StoreUnavailable):
            await store.create(new_session())
        with pytest.raises(StoreUnavailable):
            await store.get("00000000-0000-0000-0000-000000000000", window=1)


# --- locking ---------------------------------------------------------------------------------


async def test_locked_database_maps_to_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    async with SQLiteStore(path, busy_timeout=0.05) as store:
        session = await store.create(new_session())
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable) as caught:
                await store.append_checkpoint(session.session_id, SessionCheckpoint("blocked"))
            assert not caught.value.maybe_committed
            with pytest.raises(StoreUnavailable):
                await store.heartbeat(session.session_id)
            # WAL readers are not blocked by the writer.
            assert await store.get_version(session.session_id) == 1
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        result = await store.append_checkpoint(session.session_id, SessionCheckpoint("after"))
        assert result.checkpoint.seq == 1
        assert result.session.version == 2


async def test_failed_write_changes_nothing(store: SQLiteStore) -> None:
    session = await store.create(new_session(state=SessionState.ACTIVE))
    await store.set_state(session.session_id, SessionState.COMPLETED)
    stale = await store.get(session.session_id, window=0)
    assert stale is not None
    stale.state = SessionState.ACTIVE  # completed -> active is not allowed
    with pytest.raises(Exception, match="cannot become"):
        await store.update(stale, [SessionCheckpoint("never stored")])
    after = await store.get(session.session_id, window=10)
    assert after is not None
    assert after.checkpoints == []
    assert after.checkpoint_count == 0
    assert after.version == stale.version
    assert await store.list_checkpoints(session.session_id) == []


# --- several processes on one file ---------------------------------------------------------

WRITER = """
    import asyncio, sys
    from agent_core.sessions.session_models import AgentSession, SessionCheckpoint
    from agent_core.stores.sqlite import SQLiteStore

    async def main(path):
        async with SQLiteStore(path) as store:
            session = AgentSession(agent_type="child", user_id="u-child", context={"from": "child"})
            await store.create(session)
            for i in range(3):
                checkpoint = SessionCheckpoint(f"c{i}", data={"i": i})
                await store.append_checkpoint(session.session_id, checkpoint)
            print(session.session_id)

    asyncio.run(main(sys.argv[1]))
"""


async def test_reads_what_another_process_wrote(store: SQLiteStore, tmp_path: Path) -> None:
    session_id = (await run_python(WRITER, str(tmp_path / "store.db"))).strip()
    got = await store.get(session_id, window=2)
    assert got is not None
    assert (got.agent_type, got.user_id, got.context) == ("child", "u-child", {"from": "child"})
    assert got.version == 4
    assert got.checkpoint_count == 3
    assert [(cp.seq, cp.name, cp.data) for cp in got.checkpoints] == [
        (2, "c1", {"i": 1}),
        (3, "c2", {"i": 2}),
    ]
    trail = await store.list_checkpoints(session_id)
    assert [cp.seq for cp in trail] == [1, 2, 3]
    assert [s.session_id for s in await store.list_sessions(user_id="u-child")] == [session_id]


APPENDER = """
    import asyncio, os, sys, time
    from pathlib import Path
    from agent_core.sessions.session_models import SessionCheckpoint
    from agent_core.stores.sqlite import SQLiteStore

    async def main(path, session_id, tag, ready, go):
        async with SQLiteStore(path) as store:
            Path(ready).touch()
            deadline = time.monotonic() + 30
            while not os.path.exists(go) and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
            for i in range(200):
                await store.append_checkpoint(
                    session_id, SessionCheckpoint(f"{tag}-{i}", data={"tag": tag, "i": i})
                )

    asyncio.run(main(*sys.argv[1:]))
"""


async def test_two_processes_appending_to_one_session_lose_nothing(
    store: SQLiteStore, tmp_path: Path
) -> None:
    session = await store.create(new_session())
    go = tmp_path / "go"
    ready = [tmp_path / "ready-a", tmp_path / "ready-b"]
    children = [
        asyncio.create_task(
            run_python(
                APPENDER, str(tmp_path / "store.db"), session.session_id, tag, str(flag), str(go)
            )
        )
        for tag, flag in zip(["a", "b"], ready, strict=True)
    ]
    async with asyncio.timeout(60):
        while not all(flag.exists() for flag in ready):
            await asyncio.wait(children, timeout=0.01)
            for child in children:
                if child.done():
                    child.result()  # a child that died early reports its stderr here
    go.touch()
    await asyncio.gather(*children)

    trail = await store.list_checkpoints(session.session_id, limit=1000)
    assert [cp.seq for cp in trail] == list(range(1, 401))
    for tag in ("a", "b"):
        # Each process's appends are stored in the order it made them.
        assert [cp.data["i"] for cp in trail if cp.data["tag"] == tag] == list(range(200))
    head = await store.get(session.session_id, window=0)
    assert head is not None
    assert head.checkpoint_count == 400
    assert head.version == 401


# --- migrations ------------------------------------------------------------------------------


def recorded_versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM agent_core_schema ORDER BY 1")]


async def test_migrations_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    async with SQLiteStore(path) as store:
        assert await store.migrate() == MIGRATIONS
        assert await store.migrate() == MIGRATIONS
    async with SQLiteStore(path) as again:
        assert await again.migrate() == MIGRATIONS
    assert recorded_versions(path) == list(range(1, MIGRATIONS + 1))


async def test_migrate_before_open_and_without_create_schema(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = SQLiteStore(path, create_schema=False)
    assert await store.migrate() == MIGRATIONS
    async with store:
        session = await store.create(new_session())
        assert await store.get_version(session.session_id) == 1
    assert recorded_versions(path) == list(range(1, MIGRATIONS + 1))


MIGRATOR = """
    import asyncio, sys
    from agent_core.stores.sqlite import SQLiteStore

    print(asyncio.run(SQLiteStore(sys.argv[1], create_schema=False).migrate()))
"""


async def test_concurrent_migrations_from_several_processes(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    outputs = await asyncio.gather(*(run_python(MIGRATOR, str(path)) for _ in range(4)))
    assert [int(out) for out in outputs] == [MIGRATIONS] * 4
    assert recorded_versions(path) == list(range(1, MIGRATIONS + 1))


# --- cost ------------------------------------------------------------------------------------


async def test_reads_and_appends_never_scan(store: SQLiteStore) -> None:
    session = await store.create(new_session())
    await store.update(session, [SessionCheckpoint(f"c{i}") for i in range(50)])
    lease = await store.claim(session.session_id, "owner", timedelta(seconds=30))

    statements: list[str] = []
    # White-box: trace the statements the store's own connection runs.
    worker, conn = store._worker, store._conn
    assert worker is not None and conn is not None
    await worker.submit(partial(conn.set_trace_callback, statements.append))
    sid = session.session_id
    await store.get(sid, window=5)
    await store.get_version(sid)
    await store.append_checkpoint(sid, SessionCheckpoint("k"), idempotency_key="key", fence=lease)
    await store.append_checkpoint(sid, SessionCheckpoint("k"), idempotency_key="key")
    await store.list_checkpoints(sid, after_seq=20, limit=10)
    await store.list_sessions(user_id="u1")
    await store.list_sessions(agent_type="test", after=sid)
    await store.list_sessions(state=SessionState.PAUSED)
    await store.sweep_stale(timedelta(hours=1), limit=10)
    await store.expire_leases(limit=10)
    await store.heartbeat(sid, fence=lease)
    await store.purge(user_id="nobody")
    await store.purge(session_id=sid, user_id="nobody")
    await store.describe([sid, "00000000-0000-0000-0000-000000000000"])
    await store.tier_epoch("ns")
    await store.bump_tier_epoch("ns", cache_id="c")
    await worker.submit(partial(conn.set_trace_callback, None))

    queries = [
        s for s in dict.fromkeys(statements) if s.split()[0] in {"SELECT", "UPDATE", "DELETE"}
    ]
    assert len(queries) >= 10
    for query in queries:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}")]
        assert not any(step.startswith("SCAN") or "TEMP B-TREE" in step for step in plan), (
            query,
            plan,
        )


async def test_append_cost_does_not_grow_with_the_trail(store: SQLiteStore) -> None:
    short = await store.create(new_session())
    long = await store.create(new_session())
    await store.update(short, [SessionCheckpoint("c", data={"i": i}) for i in range(10)])
    await store.update(long, [SessionCheckpoint("c", data={"i": i}) for i in range(10_000)])

    async def median_append(session_id: str) -> float:
        times = []
        for i in range(100):
            started = time.perf_counter()
            await store.append_checkpoint(session_id, SessionCheckpoint("x", data={"i": i}))
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    short_times, long_times = [], []
    for _ in range(3):  # interleaved, so machine noise hits both alike
        short_times.append(await median_append(short.session_id))
        long_times.append(await median_append(long.session_id))
    assert min(long_times) <= 1.5 * statistics.median(short_times)

    window = await store.get(long.session_id, window=3)
    assert window is not None
    assert [cp.seq for cp in window.checkpoints] == [10_298, 10_299, 10_300]


async def test_unknown_session_errors(store: SQLiteStore) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    assert await store.get(missing, window=1) is None
    with pytest.raises(SessionNotFound):
        await store.append_checkpoint(missing, SessionCheckpoint("x"))
    with pytest.raises(SessionNotFound):
        await store.list_checkpoints(missing)


# --- get: one statement ----------------------------------------------------------------------

_AWKWARD_NAMES = ["nul\x00", '"quoted"', "back\\slash", "\x01\x1f\x7f", "é😀\u2028", "],[", "[1,"]


@pytest.fixture(params=["json", "no-json"])
async def either_path(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A store on the JSON-function path, and one made to take the path for SQLite builds
    without SQLite's JSON functions."""
    async with SQLiteStore(tmp_path / "store.db") as opened:
        if request.param == "no-json":
            opened._json = False
        yield opened


async def test_get_window_edges(either_path: SQLiteStore) -> None:
    store = either_path
    head = await store.create(new_session())
    for i in range(12):
        await store.append_checkpoint(head.session_id, SessionCheckpoint(f"s{i}", data={"i": i}))
    for window, seqs in (
        (-(2**70), []),
        (-1, []),
        (0, []),
        (1, [12]),
        (11, list(range(2, 13))),
        (12, list(range(1, 13))),
        (2**70, list(range(1, 13))),
    ):
        got = await store.get(head.session_id, window=window)
        assert got is not None and [cp.seq for cp in got.checkpoints] == seqs, window
        assert got.checkpoint_count == 12
        assert [cp.data for cp in got.checkpoints] == [{"i": seq - 1} for seq in seqs]
    empty = await store.create(new_session())
    got = await store.get(empty.session_id, window=5)
    assert got is not None and got.checkpoints == [] and got.checkpoint_count == 0


async def test_get_returns_what_the_row_by_row_reads_return(either_path: SQLiteStore) -> None:
    store = either_path
    context = {name: [name, {name: name}] for name in _AWKWARD_NAMES}
    session = new_session(context=context, metadata={"m": _AWKWARD_NAMES})
    stamps = [
        datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    session.checkpoints = [
        SessionCheckpoint(name, timestamp=stamps[i % 3], data={name: i, "f": [0.1, -0.0, 1e300]})
        for i, name in enumerate(_AWKWARD_NAMES)
    ]
    created = await store.create(session)
    got = await store.get(created.session_id, window=100)
    assert got is not None
    trail = await store.list_checkpoints(created.session_id)
    assert got.checkpoints == trail
    assert [cp.name for cp in got.checkpoints] == _AWKWARD_NAMES
    assert [cp.timestamp for cp in got.checkpoints] == [stamps[i % 3] for i in range(7)]
    assert all(cp.timestamp.tzinfo is UTC for cp in got.checkpoints)
    # The checkpoints are built without __init__: they must still be complete dataclasses.
    fields = {f.name for f in dataclasses.fields(SessionCheckpoint)}
    assert all(set(vars(cp)) == fields for cp in got.checkpoints)
    assert got.context == context and got.metadata == {"m": _AWKWARD_NAMES}
    assert (got.created_at, got.updated_at, got.version) == (
        created.created_at,
        created.updated_at,
        created.version,
    )
    assert got == dataclasses.replace(created, checkpoints=trail)


async def test_deleted_session_is_not_returned(either_path: SQLiteStore) -> None:
    store = either_path
    head = await store.create(new_session(checkpoints=[SessionCheckpoint("c")]))
    assert await store.delete(head.session_id) is not None
    assert await store.get(head.session_id, window=5) is None
    assert await store.get(head.session_id, window=0) is None


async def test_get_is_one_statement_outside_any_explicit_transaction(store: SQLiteStore) -> None:
    session = await store.create(new_session(checkpoints=[SessionCheckpoint("c")]))
    statements: list[str] = []
    worker, conn = store._worker, store._conn
    assert worker is not None and conn is not None
    await worker.submit(partial(conn.set_trace_callback, statements.append))
    try:
        await store.get(session.session_id, window=5)
        await store.get(session.session_id, window=0)
    finally:
        await worker.submit(partial(conn.set_trace_callback, None))
    assert len(statements) == 2
    assert all(s.startswith("SELECT") for s in statements), statements
    assert not conn.in_transaction


async def test_without_json_functions_get_is_one_snapshot(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "store.db") as store:
        store._json = False
        session = await store.create(new_session(checkpoints=[SessionCheckpoint("c")]))
        statements: list[str] = []
        worker, conn = store._worker, store._conn
        assert worker is not None and conn is not None
        await worker.submit(partial(conn.set_trace_callback, statements.append))
        try:
            await store.get(session.session_id, window=5)
        finally:
            await worker.submit(partial(conn.set_trace_callback, None))
        assert statements[0] == "BEGIN" and statements[-1] == "COMMIT"


# --- sweep_stale ------------------------------------------------------------------------------


def plant_heartbeat(path: Path, session_id: str, age: timedelta) -> None:
    """Set a stored heartbeat ``age`` in the past, behind the store's back (SQLite keeps
    microseconds since the epoch)."""
    when = (datetime.now(UTC) - age - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(
            "UPDATE sessions SET last_heartbeat = ? WHERE session_id = ?", (when, session_id)
        )


async def test_sweep_returns_swept_sessions_and_amends_the_context(
    either_path: SQLiteStore, tmp_path: Path
) -> None:
    store = either_path
    contexts: list[dict[str, Any]] = [
        {},
        {"a": 1, "failure_reason": "earlier", "z": [1.5, None, "\x00"]},
        {"nested": {"failure_reason": 1}, "s": 'é😀\u2028"\\'},
    ]
    stale = [
        await store.create(new_session(context=c, user_id=f"u{i}")) for i, c in enumerate(contexts)
    ]
    fresh = await store.create(new_session())
    await store.heartbeat(stale[0].session_id)  # version 2
    for head in stale:
        plant_heartbeat(tmp_path / "store.db", head.session_id, timedelta(hours=2))
    swept = await store.sweep_stale(timedelta(hours=1), limit=10)
    assert all(type(s) is SessionRef for s in swept)
    assert sorted(swept) == sorted(
        SessionRef(head.session_id, 3 if i == 0 else 2, "test", f"u{i}", SessionState.FAILED)
        for i, head in enumerate(stale)
    )
    for head, context in zip(stale, contexts, strict=True):
        got = await store.get(head.session_id, window=0)
        assert got is not None and got.state is SessionState.FAILED
        expected = {**context, "failure_reason": "heartbeat_timeout"}
        assert got.context == expected
        assert list(got.context) == list(expected)  # an existing key keeps its place
    kept = await store.get(fresh.session_id, window=0)
    assert kept is not None and kept.state is SessionState.ACTIVE and kept.version == 1
    assert await store.sweep_stale(timedelta(0), limit=0) == []


async def test_sweep_respects_the_limit_oldest_first(store: SQLiteStore, tmp_path: Path) -> None:
    heads = [await store.create(new_session()) for _ in range(5)]
    for i, head in enumerate(heads):
        plant_heartbeat(tmp_path / "store.db", head.session_id, timedelta(hours=10 - i))
    first = await store.sweep_stale(timedelta(hours=1), limit=2)
    assert [s.session_id for s in first] == [h.session_id for h in heads[:2]]
    rest = await store.sweep_stale(timedelta(hours=1), limit=10)
    assert [s.session_id for s in rest] == [h.session_id for h in heads[2:]]


# --- erasure ---------------------------------------------------------------------------------


def _file_bytes(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


async def test_purge_erases_the_content_from_the_files(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    wal = tmp_path / "store.db-wal"
    in_context = b"context-secret-7f3a9c"
    in_checkpoint = b"checkpoint-secret-51e0d2"
    async with SQLiteStore(path) as store:
        kept = await store.create(new_session(user_id="other", context={"k": "kept"}))
        # Large values, so overflow pages are freed too, and several row images of each.
        big = in_context.decode() * 400
        session = new_session(
            context={"secret": big},
            checkpoints=[SessionCheckpoint("first", data={"s": in_checkpoint.decode() * 300})],
        )
        head = await store.create(session)
        sid = head.session_id
        worker, conn = store._worker, store._conn
        assert worker is not None and conn is not None
        # Part of the content in the database file, part only in the WAL.
        await worker.submit(lambda: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())
        await store.patch_context(sid, {"more": big})
        await store.append_checkpoint(sid, SessionCheckpoint("c", data={"s": "x" + big}))
        await store.append_checkpoint(
            sid, SessionCheckpoint("d", data={"s": in_checkpoint.decode()})
        )
        before = _file_bytes(path) + _file_bytes(wal)
        assert in_context in before and in_checkpoint in before

        refs = await store.purge(session_id=sid)
        assert [r.session_id for r in refs] == [sid]
        for stored in (path, wal):
            data = _file_bytes(stored)
            assert in_context not in data, stored.name
            assert in_checkpoint not in data, stored.name

        # The store goes on working, and what was not purged is intact.
        got = await store.get(kept.session_id, window=1)
        assert got is not None and got.context == {"k": "kept"}
        await store.append_checkpoint(kept.session_id, SessionCheckpoint("after"))
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_secure_delete_is_on(store: SQLiteStore) -> None:
    worker, conn = store._worker, store._conn
    assert worker is not None and conn is not None
    assert await worker.submit(lambda: conn.execute("PRAGMA secure_delete").fetchone()[0]) == 1


# --- one clock: the store's ------------------------------------------------------------------

SLOW_CLIENT = """
    import asyncio, sys
    from datetime import timedelta
    import agent_core, agent_core.sessions.session_models as models
    from agent_core.stores.sqlite import SQLiteStore

    # Every utcnow in agent_core runs 20 minutes slow in this process.
    real = models.utcnow
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "agent_core" and hasattr(module, "utcnow"):
            module.utcnow = lambda: real() - timedelta(minutes=20)

    async def main(path, session_id):
        async with SQLiteStore(path) as store:
            await store.heartbeat(session_id)
            lease = await store.claim(session_id, "slow", timedelta(minutes=5))
            print(lease.expires_at.isoformat())

    asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_client_with_a_slow_clock_stamps_with_the_store_clock(
    store: SQLiteStore, tmp_path: Path
) -> None:
    head = await store.create(new_session())
    plant_heartbeat(tmp_path / "store.db", head.session_id, timedelta(hours=1))
    out = await run_python(SLOW_CLIENT, str(tmp_path / "store.db"), head.session_id)
    now = datetime.now(UTC)
    expires = datetime.fromisoformat(out.strip())
    assert abs(expires - (now + timedelta(minutes=5))) < timedelta(seconds=5)
    got = await store.get(head.session_id, window=0)
    assert got is not None and abs(got.last_heartbeat - now) < timedelta(seconds=5)
    # Neither stale by the store's clock nor expired: a slow client clock changes nothing.
    assert await store.sweep_stale(timedelta(minutes=10), limit=10) == []
    assert await store.expire_leases(limit=10) == []
    assert await store.current_lease(head.session_id) is not None


# --- tier epochs -----------------------------------------------------------------------------

EPOCH_BUMPER = """
    import asyncio, sys
    from agent_core.stores.sqlite import SQLiteStore

    async def main(path, tag):
        async with SQLiteStore(path, create_schema=False) as store:
            for i in range(50):
                await store.bump_tier_epoch("shared", cache_id=tag)
                await store.bump_tier_epoch(None)
                await store.tier_epoch(f"{tag}-{i % 5}")

    asyncio.run(main(*sys.argv[1:]))
"""


async def test_tier_epoch_bumps_from_several_processes_are_never_lost(
    store: SQLiteStore, tmp_path: Path
) -> None:
    assert await store.tier_epoch("shared") == (0, "")
    await asyncio.gather(
        *(run_python(EPOCH_BUMPER, str(tmp_path / "store.db"), tag) for tag in ("a", "b"))
    )
    epoch, cache_id = await store.tier_epoch("shared")
    assert epoch == 200  # 2 processes x 50 x (one bump of "shared" + one bump of every row)
    assert cache_id in ("a", "b")


# --- the store's thread -----------------------------------------------------------------------


def _store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "agent-core-sqlite"]


async def test_a_call_cancelled_before_it_starts_never_runs(store: SQLiteStore) -> None:
    worker = store._worker
    assert worker is not None
    gate = threading.Event()
    ran: list[str] = []
    blocker = worker.submit(gate.wait)
    doomed = worker.submit(lambda: ran.append("doomed"))
    kept = worker.submit(lambda: ran.append("kept"))
    doomed.cancel()
    gate.set()
    await blocker
    await kept
    assert ran == ["kept"]
    with pytest.raises(asyncio.CancelledError):
        await doomed


async def test_errors_reach_the_caller_and_the_thread_goes_on(store: SQLiteStore) -> None:
    worker = store._worker
    assert worker is not None

    def fail() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await worker.submit(fail)
    assert await worker.submit(lambda: 42) == 42


async def test_stop_iteration_on_the_thread_does_not_hang_the_caller(store: SQLiteStore) -> None:
    worker = store._worker
    assert worker is not None
    with pytest.raises(RuntimeError, match="StopIteration"):
        await worker.submit(lambda: next(iter(())))


async def test_the_thread_ends_with_close_even_a_cancelled_one(tmp_path: Path) -> None:
    before = set(_store_threads())
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    (thread,) = set(_store_threads()) - before
    conn, worker = store._conn, store._worker
    assert conn is not None and worker is not None
    gate = threading.Event()
    busy = worker.submit(gate.wait)
    closing = asyncio.ensure_future(store.close())
    await asyncio.sleep(0.01)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    gate.set()
    await busy
    await asyncio.to_thread(thread.join, 5)
    assert not thread.is_alive()
    with pytest.raises(sqlite3.ProgrammingError):  # closed all the same
        conn.execute("SELECT 1")


async def test_a_store_dropped_without_close_ends_its_thread(tmp_path: Path) -> None:
    before = set(_store_threads())
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    (thread,) = set(_store_threads()) - before
    del store
    gc.collect()
    await asyncio.to_thread(thread.join, 5)
    assert not thread.is_alive()


async def test_open_cancelled_midway_closes_what_it_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[sqlite3.Connection] = []
    started, gate = threading.Event(), threading.Event()
    real_open = SQLiteStore._open_sync

    def slow_open(self: SQLiteStore) -> sqlite3.Connection:
        started.set()
        gate.wait(5)
        conn = real_open(self)
        opened.append(conn)
        return conn

    monkeypatch.setattr(SQLiteStore, "_open_sync", slow_open)
    before = set(_store_threads())
    store = SQLiteStore(tmp_path / "s.db")
    opening = asyncio.ensure_future(store.open())
    await asyncio.to_thread(started.wait, 5)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    gate.set()
    (thread,) = set(_store_threads()) - before
    await asyncio.to_thread(thread.join, 5)
    assert not thread.is_alive()
    assert len(opened) == 1
    with pytest.raises(sqlite3.ProgrammingError):
        opened[0].execute("SELECT 1")
    assert store._conn is None


# --- differential ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
async def test_matches_memory_store(either_path: SQLiteStore, seed: int) -> None:
    """The random differential run of the PostgreSQL suite, on SQLite (both read paths)."""
    await check_against_memory(either_path, seed)
