"""PostgreSQL-specific behaviour of ``PostgresStore`` against a real server.

The shared contract suite (tests/contract) covers what every store must do; this module covers
what only PostgreSQL can get wrong: migrations under concurrency, the schema and its indexes,
SKIP LOCKED sweeps, outages and reconnects, injected pools, and a differential run against
``MemoryStore``, the reference implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from agent_core.errors import (
    ConfigurationError,
    ConflictError,
    NotOpenError,
    StoreUnavailable,
    ValidationError,
)
from agent_core.sessions.session_models import (
    AgentSession,
    Lease,
    SessionCheckpoint,
    SessionState,
    utcnow,
)
from agent_core.stores.base import SessionRef, SweptSession
from agent_core.stores.migrations import load_migrations
from agent_core.stores.postgres import PostgresStore
from tests.servers.postgres import ENV_URL, PostgresServer, server_for_tests
from tests.stores.differential import AWKWARD, check_against_memory

pytestmark = pytest.mark.postgres

MIGRATIONS = load_migrations("postgres")


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    server = server_for_tests()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def _private_server() -> Iterator[PostgresServer]:
    if os.environ.get(ENV_URL):
        pytest.skip(f"fault tests need a private server ({ENV_URL} is set)")
    # Crash tests need commits to reach the OS before they are acknowledged; fsync stays off
    # because a killed process, unlike a crashed host, leaves the page cache intact.
    server = PostgresServer(settings={"synchronous_commit": "on"}, use_env=False)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def fault_server(_private_server: PostgresServer) -> PostgresServer:
    """A private server that a test may stop, kill or pause; running when the test starts."""
    with contextlib.suppress(Exception):
        _private_server.resume()
    _private_server.start()
    return _private_server


def _fresh_database(server: PostgresServer) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    dsn = server.create_database(name)
    try:
        yield dsn
    finally:
        if server.running:
            # A test may leave the server down; close() wipes the directory anyway.
            with contextlib.suppress(Exception):
                server.drop_database(name)


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> Iterator[str]:
    yield from _fresh_database(pg_server)


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(pg_dsn) as opened:
        yield opened


async def _connect(dsn: str) -> Any:
    return await asyncpg.connect(dsn)


def _session(**overrides: Any) -> AgentSession:
    fields: dict[str, Any] = {"agent_type": "researcher", "user_id": "user-1"}
    fields.update(overrides)
    return AgentSession(**fields)


# --- migrations and schema -----------------------------------------------------------------


async def test_migrate_is_idempotent(store: PostgresStore, pg_dsn: str) -> None:
    assert await store.migrate() == len(MIGRATIONS)
    assert await store.migrate() == len(MIGRATIONS)
    conn = await _connect(pg_dsn)
    try:
        rows = await conn.fetch("SELECT version, name FROM agent_core_schema ORDER BY version")
    finally:
        await conn.close()
    assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in MIGRATIONS]
    assert [m.name for m in MIGRATIONS][:2] == ["init", "tier_epochs"]


async def test_concurrent_migrations_all_succeed(pg_dsn: str) -> None:
    stores = [PostgresStore(pg_dsn, create_schema=False, min_size=1) for _ in range(4)]
    for s in stores:
        await s.open()
    try:
        versions = await asyncio.gather(*(s.migrate() for s in stores))
        assert versions == [len(MIGRATIONS)] * 4
        created = await stores[0].create(_session())
        assert created.version == 1
    finally:
        for s in stores:
            await s.close()
    conn = await _connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM agent_core_schema") == len(MIGRATIONS)
    finally:
        await conn.close()


async def test_concurrent_open_with_create_schema(pg_dsn: str) -> None:
    stores = [PostgresStore(pg_dsn, min_size=1) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        heads = await asyncio.gather(*(s.create(_session()) for s in stores))
        assert all(h.version == 1 for h in heads)
    finally:
        await asyncio.gather(*(s.close() for s in stores))


_EXPECTED_COLUMNS = {
    "agent_core_schema": {
        "version": "integer",
        "name": "text",
        "applied_at": "timestamp with time zone",
    },
    "sessions": {
        "session_id": "text",
        "agent_type": "text",
        "user_id": "text",
        "state": "text",
        "context": "jsonb",
        "metadata": "jsonb",
        "created_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone",
        "last_heartbeat": "timestamp with time zone",
        "version": "bigint",
        "checkpoint_count": "bigint",
        "lease_owner": "text",
        "lease_token": "bigint",
        "lease_expires_at": "timestamp with time zone",
        "lease_ttl_us": "bigint",
        "tenant": "text",
    },
    "checkpoints": {
        "session_id": "text",
        "seq": "bigint",
        "name": "text",
        "data": "jsonb",
        "ts": "timestamp with time zone",
        "idempotency_key": "text",
        "tenant": "text",
    },
    "tier_epochs": {
        "namespace": "text",
        "epoch": "bigint",
        "cache_id": "text",
    },
    "retention_policies": {
        "namespace": "text",
        "deleted_days": "integer",
        "terminal_days": "integer",
        "updated_at": "timestamp with time zone",
        "updated_by": "text",
        "tenant": "text",
    },
    "audit_log": {
        "id": "bigint",
        "at": "timestamp with time zone",
        "actor": "text",
        "action": "text",
        "namespace": "text",
        "user_id": "text",
        "session_count": "bigint",
        "details": "jsonb",
        "tenant": "text",
    },
    "records": {
        "tenant": "text",
        "scope": "text",
        "key": "text",
        "value": "bytea",
        "sealed": "boolean",
        "session_id": "text",
        "user_id": "text",
        "updated_at": "timestamp with time zone",
    },
}

_EXPECTED_INDEXES = {
    "agent_core_schema_pkey": "(version)",
    "sessions_pkey": "(session_id)",
    "checkpoints_pkey": "(session_id, seq)",
    "checkpoints_idempotency_key": (
        "(session_id, idempotency_key) WHERE (idempotency_key IS NOT NULL)"
    ),
    "sessions_active_by_user": "(user_id, session_id) WHERE (state = 'active'::text)",
    "sessions_active_by_agent_type": "(agent_type, session_id) WHERE (state = 'active'::text)",
    "sessions_by_state": "(state, session_id)",
    "sessions_by_user": "(user_id, session_id)",
    "sessions_stale": "(last_heartbeat) WHERE (state = 'active'::text)",
    "sessions_leases": "(lease_expires_at) WHERE (lease_owner IS NOT NULL)",
    "tier_epochs_pkey": "(namespace)",
    "retention_policies_pkey": "(tenant, namespace)",
    "audit_log_pkey": "(id)",
    "audit_log_by_user": "(user_id, id)",
    "records_pkey": "(tenant, scope, key)",
    "records_by_session": "(session_id) WHERE (session_id IS NOT NULL)",
    "records_by_user": "(user_id) WHERE (user_id IS NOT NULL)",
    # Schema 5: a tenant's listings.
    "sessions_tenant_active_by_user": (
        "(tenant, user_id, session_id) WHERE ((state = 'active'::text) AND (tenant <> ''::text))"
    ),
    "sessions_tenant_active_by_agent_type": (
        "(tenant, agent_type, session_id) WHERE ((state = 'active'::text) AND (tenant <> ''::text))"
    ),
    "sessions_tenant_by_state": "(tenant, state, session_id) WHERE (tenant <> ''::text)",
    "sessions_tenant_by_user": "(tenant, user_id, session_id) WHERE (tenant <> ''::text)",
    "sessions_tenant_stale": (
        "(tenant, last_heartbeat) WHERE ((state = 'active'::text) AND (tenant <> ''::text))"
    ),
    "sessions_tenant_leases": (
        "(tenant, lease_expires_at) WHERE ((lease_owner IS NOT NULL) AND (tenant <> ''::text))"
    ),
    "audit_log_by_tenant": "(tenant, id) WHERE (tenant <> ''::text)",
}


async def _schema_snapshot(
    dsn: str, schema: str = "public"
) -> tuple[dict[str, Any], dict[str, str]]:
    conn = await _connect(dsn)
    try:
        columns = await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = $1",
            schema,
        )
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1", schema
        )
    finally:
        await conn.close()
    tables: dict[str, dict[str, str]] = {}
    for row in columns:
        tables.setdefault(row["table_name"], {})[row["column_name"]] = row["data_type"]
    found = {row["indexname"]: row["indexdef"].split(" USING btree ", 1)[1] for row in indexes}
    return tables, found


async def test_schema_has_expected_tables_and_indexes(store: PostgresStore, pg_dsn: str) -> None:
    tables, indexes = await _schema_snapshot(pg_dsn)
    assert tables == _EXPECTED_COLUMNS
    assert indexes == _EXPECTED_INDEXES
    conn = await _connect(pg_dsn)
    try:
        # ORDER BY session_id must sort like Python strings, whatever the database collation.
        collations = await conn.fetch(
            "SELECT table_name, collation_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND column_name = 'session_id'"
        )
        assert {r["collation_name"] for r in collations} == {"C"}
        defaults = await conn.fetch(
            "SELECT column_name, column_default, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = 'tier_epochs'"
        )
        assert {r["column_name"]: (r["column_default"], r["is_nullable"]) for r in defaults} == {
            "namespace": (None, "NO"),
            "epoch": ("0", "NO"),
            "cache_id": ("''::text", "NO"),
        }
        cascade = await conn.fetchval(
            "SELECT confdeltype::text FROM pg_constraint WHERE conrelid = 'checkpoints'::regclass "
            "AND contype = 'f'"
        )
        assert cascade == "c"
    finally:
        await conn.close()


async def test_schema_option_keeps_tables_in_their_own_schema(pg_dsn: str) -> None:
    async with PostgresStore(pg_dsn, schema="tenant_a") as tenant:
        head = await tenant.create(_session())
        await tenant.patch_context(head.session_id, {"a": {"b": 1}})
        again = await tenant.get(head.session_id, window=5)
        assert again is not None and again.context == {"a": {"b": 1}}
    tables, indexes = await _schema_snapshot(pg_dsn, "tenant_a")
    assert tables == _EXPECTED_COLUMNS
    assert set(indexes) == set(_EXPECTED_INDEXES)
    public_tables, _ = await _schema_snapshot(pg_dsn, "public")
    assert public_tables == {}


# --- query plans ---------------------------------------------------------------------------


async def _fill(dsn: str, sessions: int, checkpoints_per_session: int) -> None:
    conn = await _connect(dsn)
    try:
        await conn.execute(
            """
            INSERT INTO sessions (session_id, agent_type, user_id, state, context, metadata,
                                  created_at, updated_at, last_heartbeat, version,
                                  checkpoint_count)
            SELECT gen_random_uuid()::text, 'agent-' || (i % 7), 'user-' || (i % 500),
                   (ARRAY['active', 'paused', 'completed', 'failed'])[1 + i % 4],
                   '{}', '{}', now(), now(), now() - (i % 100) * interval '1 minute', 1, $2
            FROM generate_series(1, $1) AS i
            """,
            sessions,
            checkpoints_per_session,
        )
        await conn.execute(
            """
            INSERT INTO checkpoints (session_id, seq, name, data, ts)
            SELECT s.session_id, g, 'step', '{}', now()
            FROM sessions s, generate_series(1, s.checkpoint_count) AS g
            """
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _plan(dsn: str, sql: str, *args: Any, generic: bool = False) -> str:
    conn = await _connect(dsn)
    try:
        if generic:
            await conn.execute("SET plan_cache_mode = force_generic_plan")
        rows = await conn.fetch("EXPLAIN " + sql, *args)
    finally:
        await conn.close()
    return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
async def test_listing_active_sessions_of_a_user_uses_an_index(
    store: PostgresStore, pg_dsn: str, generic: bool
) -> None:
    await _fill(pg_dsn, 5000, 0)
    sql = store._list_query(SessionState.ACTIVE, False, True, True)
    plan = await _plan(pg_dsn, sql, "user-7", "", 100, generic=generic)
    assert "Seq Scan" not in plan, plan
    assert "sessions_active_by_user" in plan, plan


async def test_listing_by_agent_type_and_state_uses_indexes(
    store: PostgresStore, pg_dsn: str
) -> None:
    await _fill(pg_dsn, 5000, 0)
    by_agent = store._list_query(SessionState.ACTIVE, True, False, False)
    plan = await _plan(pg_dsn, by_agent, "agent-3", 100, generic=True)
    assert "Seq Scan" not in plan and "sessions_active_by_agent_type" in plan, plan
    by_state = store._list_query(SessionState.PAUSED, False, False, True)
    plan = await _plan(pg_dsn, by_state, "", 100, generic=True)
    assert "Seq Scan" not in plan and "sessions_by_state" in plan, plan
    any_state = store._list_query(None, False, True, False)
    plan = await _plan(pg_dsn, any_state, "user-9", 100, generic=True)
    assert "Seq Scan" not in plan and "sessions_by_user" in plan, plan


async def test_reading_a_session_reads_only_its_window(store: PostgresStore, pg_dsn: str) -> None:
    from agent_core.stores import postgres as pg_module

    await _fill(pg_dsn, 300, 50)
    conn = await _connect(pg_dsn)
    try:
        sid = await conn.fetchval("SELECT session_id FROM sessions LIMIT 1")
    finally:
        await conn.close()
    plan = await _plan(pg_dsn, pg_module._SQL_GET, sid, 10, generic=True)
    assert "Seq Scan" not in plan, plan
    assert "checkpoints_pkey" in plan and "sessions_pkey" in plan, plan
    head = await store.get(sid, window=10)
    assert head is not None
    assert [cp.seq for cp in head.checkpoints] == list(range(41, 51))


# --- concurrency ---------------------------------------------------------------------------


async def _plant_heartbeats(dsn: str, session_ids: list[str], age: timedelta) -> None:
    """Set stored heartbeats ``age`` before the server's now, behind the store's back."""
    conn = await _connect(dsn)
    try:
        await conn.execute(
            "UPDATE sessions SET last_heartbeat = now() - $2::interval"
            " WHERE session_id = ANY($1::text[])",
            session_ids,
            age,
        )
    finally:
        await conn.close()


async def test_concurrent_sweepers_never_process_a_session_twice(pg_dsn: str) -> None:
    async with (
        PostgresStore(pg_dsn, min_size=1) as first,
        PostgresStore(pg_dsn, min_size=1, create_schema=False) as second,
    ):
        stale: dict[str, str] = {}
        for i in range(300):
            head = await first.create(_session(user_id=f"u{i % 10}"))
            stale[head.session_id] = head.user_id
        fresh = [(await first.create(_session())).session_id for _ in range(20)]
        paused = await first.create(_session())
        await first.set_state(paused.session_id, SessionState.PAUSED)
        await _plant_heartbeats(pg_dsn, [*stale, paused.session_id], timedelta(hours=2))

        async def sweeper(store: PostgresStore) -> list[str]:
            seen: list[str] = []
            while True:
                batch = await store.sweep_stale(timedelta(hours=1), limit=7)
                if not batch:
                    return seen
                assert len(batch) <= 7
                for swept in batch:
                    assert type(swept) is SessionRef and SweptSession is SessionRef
                    assert swept.state is SessionState.FAILED
                    assert (swept.version, swept.agent_type) == (2, "researcher")
                    assert swept.user_id == stale[swept.session_id]
                seen.extend(s.session_id for s in batch)

        results = await asyncio.gather(sweeper(first), sweeper(second), sweeper(first))
        swept = [sid for batch in results for sid in batch]
        assert len(swept) == len(set(swept)), "a session was swept twice"
        assert set(swept) == set(stale)
        for sid in list(stale)[:20]:
            failed = await first.get(sid, window=0)
            assert failed is not None and failed.state is SessionState.FAILED
            assert failed.context == {"failure_reason": "heartbeat_timeout"}
            assert failed.version == 2
        for sid in fresh:
            kept = await first.get(sid, window=0)
            assert kept is not None and kept.state is SessionState.ACTIVE
        again = await first.get(paused.session_id, window=0)
        assert again is not None and again.state is SessionState.PAUSED


async def test_concurrent_expire_leases_are_disjoint(pg_dsn: str) -> None:
    async with (
        PostgresStore(pg_dsn, min_size=1) as first,
        PostgresStore(pg_dsn, min_size=1, create_schema=False) as second,
    ):
        expired = set()
        for _ in range(60):
            head = await first.create(_session())
            await first.claim(head.session_id, "worker", timedelta(seconds=-1))
            expired.add(head.session_id)
        live = await first.create(_session())
        await first.claim(live.session_id, "worker", timedelta(hours=1))

        async def expirer(store: PostgresStore) -> list[Lease]:
            out: list[Lease] = []
            while batch := await store.expire_leases(limit=5):
                out.extend(batch)
            return out

        a, b = await asyncio.gather(expirer(first), expirer(second))
        ids = [lease.session_id for lease in a + b]
        assert len(ids) == len(set(ids))
        assert set(ids) == expired
        assert await first.current_lease(live.session_id) is not None


async def test_tier_epochs_under_concurrency_from_several_stores(pg_dsn: str) -> None:
    stores = [PostgresStore(pg_dsn, min_size=1, max_size=4, create_schema=i == 0) for i in range(4)]
    for s in stores:
        await s.open()
    try:
        # Everyone creates the same rows at once: each sees (0, "").
        first_reads = await asyncio.gather(
            *(s.tier_epoch(f"ns-{j}") for s in stores for j in range(10) for _ in range(2))
        )
        assert set(first_reads) == {(0, "")}
        # Bumps of one namespace and of every namespace, from every store at once: none is
        # lost, and bumps of every row (taking all the row locks) never deadlock.
        await asyncio.gather(
            *(
                s.bump_tier_epoch("ns-0", cache_id=f"s{i}")
                for i, s in enumerate(stores)
                for _ in range(25)
            ),
            *(s.bump_tier_epoch(None) for s in stores for _ in range(5)),
            *(s.bump_tier_epoch(f"ns-{j}") for s in stores for j in range(1, 10)),
        )
        epochs = [await stores[0].tier_epoch(f"ns-{j}") for j in range(10)]
        assert epochs[0].epoch == 4 * 25 + 4 * 5
        assert epochs[0].cache_id in {"s0", "s1", "s2", "s3"}
        assert [e.epoch for e in epochs[1:]] == [4 + 4 * 5] * 9
    finally:
        for s in stores:
            await s.close()


async def test_client_clock_is_never_used(
    store: PostgresStore, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every utcnow in agent_core 20 minutes slow, stamps still match the server's now()."""
    import sys

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "agent_core" and hasattr(module, "utcnow"):
            monkeypatch.setattr(module, "utcnow", lambda: utcnow() - timedelta(minutes=20))
    head = await store.create(_session())
    beat = await store.heartbeat(head.session_id)
    conn = await _connect(pg_dsn)
    try:
        server_now = await conn.fetchval("SELECT now()")
        stored = await conn.fetchval(
            "SELECT last_heartbeat FROM sessions WHERE session_id = $1", head.session_id
        )
    finally:
        await conn.close()
    assert stored == beat.last_heartbeat
    assert abs(beat.last_heartbeat - server_now) < timedelta(seconds=1)
    assert abs(head.created_at - server_now) < timedelta(seconds=1)


async def test_concurrent_appends_get_dense_seqs(store: PostgresStore) -> None:
    head = await store.create(_session())
    results = await asyncio.gather(
        *(
            store.append_checkpoint(head.session_id, SessionCheckpoint(f"step-{i}"))
            for i in range(50)
        )
    )
    assert sorted(r.checkpoint.seq or 0 for r in results) == list(range(1, 51))
    assert sorted(r.session.version for r in results) == list(range(2, 52))
    trail = await store.list_checkpoints(head.session_id, limit=100)
    assert [cp.seq for cp in trail] == list(range(1, 51))


async def test_concurrent_retries_with_one_idempotency_key_store_once(
    store: PostgresStore,
) -> None:
    head = await store.create(_session())
    results = await asyncio.gather(
        *(
            store.append_checkpoint(
                head.session_id, SessionCheckpoint("pay", data={"n": i}), idempotency_key="k"
            )
            for i in range(20)
        )
    )
    created = [r for r in results if r.created]
    assert len(created) == 1
    assert {r.checkpoint.seq for r in results} == {1}
    assert {r.checkpoint.data["n"] for r in results} == {created[0].checkpoint.data["n"]}
    final = await store.get(head.session_id, window=5)
    assert final is not None and final.version == 2 and final.checkpoint_count == 1


async def test_concurrent_compare_and_set_has_one_winner(store: PostgresStore) -> None:
    head = await store.create(_session())
    read = await store.get(head.session_id, window=0)
    assert read is not None

    async def attempt(i: int) -> str:
        mine = AgentSession(**{**asdict(read), "checkpoints": [], "context": {"who": i}})
        try:
            await store.update(mine, [SessionCheckpoint(f"by-{i}")])
        except ConflictError:
            return "conflict"
        return "won"

    outcomes = await asyncio.gather(*(attempt(i) for i in range(10)))
    assert outcomes.count("won") == 1
    final = await store.get(head.session_id, window=5)
    assert final is not None and final.version == 2 and final.checkpoint_count == 1


# --- errors --------------------------------------------------------------------------------


async def test_driver_errors_are_translated(store: PostgresStore, pg_dsn: str) -> None:
    head = await store.create(_session())
    with pytest.raises(ConflictError):
        await store.create(_session(session_id=head.session_id))
    # A lone surrogate cannot be encoded as UTF-8: rejected, nothing written.
    with pytest.raises(ValidationError):
        await store.append_checkpoint(head.session_id, SessionCheckpoint("bad\ud800name"))
    after = await store.get(head.session_id, window=5)
    assert after is not None and after.version == 1 and after.checkpoint_count == 0

    unmigrated = PostgresStore(pg_dsn, create_schema=False, schema="nowhere")
    await unmigrated.open()
    try:
        with pytest.raises(ConfigurationError):
            await unmigrated.get(head.session_id, window=1)
    finally:
        await unmigrated.close()


async def test_strings_postgresql_cannot_hold_round_trip(store: PostgresStore) -> None:
    """PostgreSQL text and jsonb reject U+0000; the store escapes it (and its escape character)
    so that every Python string round-trips, as it does in the other stores."""
    for text in AWKWARD:
        context = {text: [text, {text: text}], "plain": text}
        head = await store.create(
            _session(agent_type=text, user_id=text, context=context, metadata={text: 1})
        )
        added = await store.append_checkpoint(
            head.session_id, SessionCheckpoint(text, data=context), idempotency_key=text
        )
        replay = await store.append_checkpoint(
            head.session_id, SessionCheckpoint("other"), idempotency_key=text
        )
        assert not replay.created and replay.checkpoint == added.checkpoint
        patched = await store.patch_context(head.session_id, {text: None, "more": {text: text}})
        assert patched.context == {"plain": text, "more": {text: text}}
        lease = await store.claim(head.session_id, text, timedelta(seconds=30))
        assert lease.owner == text
        current = await store.current_lease(head.session_id)
        assert current is not None and current.owner == text
        failed = await store.set_state(head.session_id, SessionState.FAILED, reason=text)
        assert failed.context["failure_reason"] == text
        got = await store.get(head.session_id, window=5)
        assert got is not None
        assert (got.agent_type, got.user_id, got.metadata) == (text, text, {text: 1})
        assert [cp.name for cp in got.checkpoints] == [text]
        assert got.checkpoints[0].data == context
        listed = await store.list_sessions(state=None, agent_type=text, user_id=text)
        assert [s.session_id for s in listed] == [head.session_id]
        assert await store.purge(user_id=text) == [
            SessionRef(head.session_id, 4, text, text, SessionState.FAILED)
        ]
        stale = await store.create(_session(agent_type=text, user_id=text))
        assert await store.describe([stale.session_id]) == [
            SessionRef(stale.session_id, 1, text, text, SessionState.ACTIVE)
        ]
        await asyncio.sleep(0.002)
        swept = await store.sweep_stale(timedelta(0), limit=10)
        assert swept == [SessionRef(stale.session_id, 2, text, text, SessionState.FAILED)]
        assert await store.delete(stale.session_id) == SessionRef(
            stale.session_id, 3, text, text, SessionState.DELETED
        )
        assert await store.purge(user_id=text) == [
            SessionRef(stale.session_id, 3, text, text, SessionState.DELETED)
        ]
        await store.bump_tier_epoch(text, cache_id=text)
        assert await store.tier_epoch(text) == (1, text)


async def test_extreme_arguments_behave_like_memory(store: PostgresStore) -> None:
    head = await store.create(_session())
    for i in range(3):
        await store.append_checkpoint(head.session_id, SessionCheckpoint(f"s{i}"))
    for window, seqs in ((-(2**70), []), (-1, []), (0, []), (2, [2, 3]), (2**70, [1, 2, 3])):
        got = await store.get(head.session_id, window=window)
        assert got is not None and [cp.seq for cp in got.checkpoints] == seqs, window
    for after_seq, limit, seqs in (
        (-5, 2, [1, 2]),
        (2**70, 5, []),
        (1, -3, []),
        (0, 2**70, [1, 2, 3]),
    ):
        listed = await store.list_checkpoints(head.session_id, after_seq=after_seq, limit=limit)
        assert [cp.seq for cp in listed] == seqs
    assert await store.sweep_stale(timedelta(0), limit=0) == []
    assert await store.sweep_stale(timedelta.max, limit=10) == []
    assert await store.sweep_stale(timedelta.min, limit=0) == []
    assert await store.expire_leases(limit=-1) == []
    assert await store.describe([]) == []
    assert await store.list_sessions(state=SessionState.DELETED) == []
    assert [s.session_id for s in await store.list_sessions(limit=2**70)] == [head.session_id]


async def test_use_before_open_and_after_close(pg_dsn: str) -> None:
    unopened = PostgresStore(pg_dsn)
    with pytest.raises(NotOpenError):
        await unopened.get(str(uuid.uuid4()), window=1)
    async with PostgresStore(pg_dsn) as s:
        pass
    with pytest.raises(NotOpenError):
        await s.list_sessions()


async def test_unreachable_server_on_open() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        await PostgresStore(
            f"postgresql://postgres:hunter2@127.0.0.1:{port}/postgres", connect_timeout=1
        ).open()
    assert time.monotonic() - started < 3
    assert not info.value.maybe_committed
    assert "hunter2" not in str(info.value)


def test_url_hides_the_password() -> None:
    store = PostgresStore("postgresql://alice:s3cret@db.example:5432/app?sslmode=require")
    assert store.url == "postgresql://alice:***@db.example:5432/app?sslmode=require"
    assert "s3cret" not in repr(store)
    other = PostgresStore("postgresql://alice@db/app?password=s3cret&application_name=x")
    assert "s3cret" not in other.url and "application_name=x" in other.url


def test_bad_schema_name_is_rejected() -> None:
    with pytest.raises(ConfigurationError):
        PostgresStore("postgresql://localhost/app", schema='x"; DROP TABLE sessions; --')


async def test_with_pool_leaves_the_pool_open(pg_dsn: str) -> None:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    try:
        store = PostgresStore.with_pool(pool)
        async with store:
            head = await store.create(_session())
            result = await store.append_checkpoint(head.session_id, SessionCheckpoint("a"))
            assert result.checkpoint.seq == 1
        assert not pool.is_closing()
        assert await pool.fetchval("SELECT count(*) FROM checkpoints") == 1
        with pytest.raises(NotOpenError):
            await store.get(head.session_id, window=1)
        # The same pool serves a new store: the schema is already there.
        async with PostgresStore.with_pool(pool, create_schema=False) as again:
            fetched = await again.get(head.session_id, window=1)
            assert fetched is not None and fetched.checkpoint_count == 1
    finally:
        await pool.close()


# --- outages -------------------------------------------------------------------------------


def _operations(store: PostgresStore, sid: str) -> dict[str, Callable[[], Any]]:
    return {
        "create": lambda: store.create(_session()),
        "append": lambda: store.append_checkpoint(sid, SessionCheckpoint("x")),
        "append-idem": lambda: store.append_checkpoint(
            sid, SessionCheckpoint("x"), idempotency_key="idem"
        ),
        "heartbeat": lambda: store.heartbeat(sid),
        "patch": lambda: store.patch_context(sid, {"a": 1}),
        "set_state": lambda: store.set_state(sid, SessionState.PAUSED),
        "claim": lambda: store.claim(sid, "w", timedelta(seconds=30)),
        "sweep": lambda: store.sweep_stale(timedelta(hours=1), limit=10),
        "expire": lambda: store.expire_leases(limit=10),
        "delete": lambda: store.delete(sid),
        "purge": lambda: store.purge(user_id="nobody"),
        "describe": lambda: store.describe([sid]),
        "tier_epoch": lambda: store.tier_epoch("ns"),
        "bump_tier_epoch": lambda: store.bump_tier_epoch("ns"),
        "get": lambda: store.get(sid, window=5),
        "list": lambda: store.list_sessions(),
    }


async def _assert_all_unavailable(
    store: PostgresStore,
    sid: str,
    timeout: float,
    *,
    maybe_committed: bool | None = False,
    only: tuple[str, ...] | None = None,
) -> None:
    for name, op in _operations(store, sid).items():
        if only is not None and name not in only:
            continue
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:
            await op()
        elapsed = time.monotonic() - started
        assert elapsed < timeout + 1, f"{name} took {elapsed:.2f}s"
        if maybe_committed is not None:
            assert info.value.maybe_committed is maybe_committed, name


async def _state(store: PostgresStore, sid: str) -> AgentSession:
    head = await store.get(sid, window=1000)
    assert head is not None
    assert head.checkpoint_count == len(head.checkpoints)
    assert [cp.seq for cp in head.checkpoints] == list(range(1, head.checkpoint_count + 1))
    return head


@pytest.mark.faults
async def test_server_stopped_then_restarted(fault_server: PostgresServer) -> None:
    dsn = fault_server.create_database()
    async with PostgresStore(dsn, command_timeout=1.0, connect_timeout=1.0) as store:
        head = await store.create(_session())
        await store.append_checkpoint(head.session_id, SessionCheckpoint("before"))
        before = await _state(store, head.session_id)

        fault_server.stop("fast")
        await asyncio.sleep(0.2)  # let the pool see its connections close
        await _assert_all_unavailable(store, head.session_id, 1.0)

        fault_server.start()
        after = await _state(store, head.session_id)
        assert after.version == before.version, "a failed write was committed"
        result = await store.append_checkpoint(head.session_id, SessionCheckpoint("after"))
        assert result.checkpoint.seq == before.checkpoint_count + 1


@pytest.mark.faults
async def test_server_restarted_between_operations(fault_server: PostgresServer) -> None:
    dsn = fault_server.create_database()
    async with PostgresStore(dsn, min_size=3, command_timeout=2.0) as store:
        head = await store.create(_session())
        for _ in range(3):
            fault_server.restart()
            # No pause: the pool's idle connections are dead but not yet noticed. Reads retry on
            # a fresh connection; a write that hits a dead connection may not know its fate.
            assert await store.get_version(head.session_id) is not None
            with contextlib.suppress(StoreUnavailable):
                await store.append_checkpoint(head.session_id, SessionCheckpoint("x"))
            result = await store.append_checkpoint(head.session_id, SessionCheckpoint("y"))
            assert result.created
        await _state(store, head.session_id)


@pytest.mark.faults
async def test_server_killed_and_recovered(fault_server: PostgresServer) -> None:
    dsn = fault_server.create_database()
    async with PostgresStore(dsn, command_timeout=1.0, connect_timeout=1.0) as store:
        head = await store.create(_session())
        for i in range(5):
            await store.append_checkpoint(head.session_id, SessionCheckpoint(f"s{i}"))

        fault_server.kill()
        await asyncio.sleep(0.2)
        await _assert_all_unavailable(store, head.session_id, 1.0)

        fault_server.start()
        recovered = await _state(store, head.session_id)
        assert recovered.checkpoint_count == 5
        lease = await store.claim(head.session_id, "w", timedelta(seconds=30))
        result = await store.append_checkpoint(
            head.session_id, SessionCheckpoint("after"), fence=lease
        )
        assert result.checkpoint.seq == 6


@pytest.mark.faults
async def test_hung_server_times_out_and_recovers(fault_server: PostgresServer) -> None:
    dsn = fault_server.create_database()
    async with PostgresStore(dsn, min_size=2, command_timeout=0.5, connect_timeout=0.5) as store:
        head = await store.create(_session())
        fault_server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                await store.append_checkpoint(head.session_id, SessionCheckpoint("lost?"))
            assert time.monotonic() - started < 1.5
            # The append was sent and never answered: it may commit once the server wakes up.
            assert info.value.maybe_committed
            # Pool connections are used up or dead; new ones cannot connect: still bounded.
            await _assert_all_unavailable(
                store,
                head.session_id,
                0.5,
                maybe_committed=None,
                only=("create", "heartbeat", "get", "list"),
            )
        finally:
            fault_server.resume()
        deadline = time.monotonic() + 10
        while True:
            try:
                state = await _state(store, head.session_id)
                break
            except StoreUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        assert state.checkpoint_count in (0, 1)
        result = await store.append_checkpoint(head.session_id, SessionCheckpoint("next"))
        assert result.checkpoint.seq == state.checkpoint_count + 1


# --- differential run against MemoryStore ---------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
async def test_matches_memory_store(pg_dsn: str, seed: int) -> None:
    async with PostgresStore(pg_dsn) as postgres:
        await check_against_memory(postgres, seed)
