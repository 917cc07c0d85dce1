"""Tenants on PostgreSQL: row-level security is the second rule.

A tenant-bound store filters every statement by its tenant (the first rule, covered on every
backend by tests/test_tenancy.py). Here: its connections run as the tenant role with their
tenant set, so even a statement with no tenant filter at all sees and changes only that
tenant's rows; the untenanted store (the tables' owner) still sees everything; and a user who
may not create the role gets a clear ``ConfigurationError`` only when it opens a tenant-bound
store.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from agent_core.errors import ConfigurationError
from agent_core.sessions.session_models import AgentSession, SessionCheckpoint
from agent_core.stores.postgres import _SQL_EXPIRE_LEASES, _SQL_SWEEP, PostgresStore

pytestmark = pytest.mark.postgres


class Stores:
    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self.admin = PostgresStore(dsn, schema=schema)
        self.acme = PostgresStore(dsn, schema=schema).bound_to("acme")
        self.globex = PostgresStore(dsn, schema=schema).bound_to("globex")

    def all(self) -> list[Any]:
        return [self.admin, self.acme, self.globex]


@pytest.fixture
def pg_dsn(postgres_server: Any) -> str:
    return str(postgres_server.dsn)


@pytest.fixture
async def stores(pg_dsn: str) -> AsyncIterator[Stores]:
    made = Stores(pg_dsn, f"t{uuid.uuid4().hex[:12]}")
    for store in made.all():
        await store.open()
    try:
        yield made
    finally:
        for store in made.all():
            await store.close()


def _session(user: str = "u1") -> AgentSession:
    session = AgentSession("grader", user, context={"k": 1})
    session.checkpoints = [SessionCheckpoint("one"), SessionCheckpoint("two")]
    return session


async def _fill(stores: Stores) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {"acme": [], "globex": [], "": []}
    for name, store, count in (
        ("acme", stores.acme, 2),
        ("globex", stores.globex, 3),
        ("", stores.admin, 1),
    ):
        for _ in range(count):
            head = await store.create(_session())
            await store.append_audit(
                actor="t",
                action="export",
                namespace="n",
                user_id="u1",
                session_count=1,
                details={},
            )
            assert head.tenant == name
            ids[name].append(head.session_id)
    await stores.globex.set_retention_policy("n", deleted_days=1, terminal_days=1, actor="t")
    return ids


async def _own_connection(store: PostgresStore) -> Any:
    """One of the store's own pooled connections, as its statements get it."""
    pool = store._pool
    assert pool is not None
    return await pool.acquire()


async def test_a_tenant_connection_sees_only_its_tenants_rows_without_any_filter(
    stores: Stores,
) -> None:
    ids = await _fill(stores)
    pool = stores.acme._pool
    conn = await _own_connection(stores.acme)
    try:
        assert await conn.fetchval("SELECT current_user") == "agent_core_tenant"
        assert await conn.fetchval("SELECT current_setting('agent_core.tenant')") == "acme"
        assert await conn.fetchval("SELECT count(*) FROM sessions") == 2
        assert set(await conn.fetchval("SELECT array_agg(session_id) FROM sessions")) == set(
            ids["acme"]
        )
        assert await conn.fetchval("SELECT count(*) FROM checkpoints") == 4
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 2
        assert await conn.fetchval("SELECT count(*) FROM retention_policies") == 0
        assert await conn.fetchval("SELECT count(*) FROM records") == 0
        theirs = ids["globex"][0]
        # Writes to another tenant's rows affect nothing ...
        assert await conn.execute("UPDATE sessions SET context = '{}'") == "UPDATE 2"
        assert (
            await conn.execute(
                "UPDATE sessions SET version = version + 1 WHERE session_id = $1", theirs
            )
            == "UPDATE 0"
        )
        assert await conn.execute("DELETE FROM checkpoints WHERE session_id = $1", theirs) == (
            "DELETE 0"
        )
        assert await conn.execute("DELETE FROM sessions WHERE session_id = $1", theirs) == (
            "DELETE 0"
        )
        # ... and rows of another tenant can be neither written nor moved there.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO sessions (session_id, agent_type, state, created_at, updated_at,"
                " last_heartbeat, tenant) VALUES ($1, 'x', 'active', now(), now(), now(),"
                " 'globex')",
                str(uuid.uuid4()),
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE sessions SET tenant = 'globex'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO audit_log (actor, action, tenant) VALUES ('x', 'y', 'globex')"
            )
        # Without a tenant the role sees nothing at all; RESET (ALL) restores the tenant the
        # connection was opened with.
        await conn.execute("SET agent_core.tenant = ''")
        assert await conn.fetchval("SELECT count(*) FROM sessions") == 0
        await conn.execute("RESET ALL")
        assert await conn.fetchval("SELECT count(*) FROM sessions") == 2
        assert await conn.fetchval("SELECT current_user") == "agent_core_tenant"
    finally:
        await pool.release(conn)
    # The untenanted store, the owner, still sees every row, and globex's are intact.
    admin = await _own_connection(stores.admin)
    try:
        assert await admin.fetchval("SELECT current_user") != "agent_core_tenant"
        assert await admin.fetchval("SELECT count(*) FROM sessions") == 6
        for sid in ids["globex"]:
            got = await stores.globex.get(sid, window=10)
            assert got is not None and got.version == 1 and len(got.checkpoints) == 2
    finally:
        await stores.admin._pool.release(admin)


async def test_the_migration_needs_no_role_and_plain_stores_take_none(pg_dsn: str) -> None:
    schema = f"t{uuid.uuid4().hex[:12]}"
    async with PostgresStore(pg_dsn, schema=schema) as plain:
        conn = await _own_connection(plain)
        try:
            owner = await conn.fetchval("SELECT session_user")
            assert await conn.fetchval("SELECT current_user") == owner
            forced = await conn.fetch(
                "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class"
                " WHERE relnamespace = $1::regnamespace AND relkind = 'r'"
                " AND relname IN ('sessions', 'checkpoints', 'audit_log')",
                schema,
            )
            assert {(r[0], r[1], r[2]) for r in forced} == {
                ("sessions", True, False),
                ("checkpoints", True, False),
                ("audit_log", True, False),
            }
        finally:
            await plain._pool.release(conn)


def _as_user(dsn: str, user: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


async def test_without_createrole_only_a_tenant_bound_store_fails_and_says_why(
    postgres_server: Any,
) -> None:
    user = f"u{uuid.uuid4().hex[:10]}"
    role = f"r{uuid.uuid4().hex[:10]}"  # a role nobody created yet
    schema = f"t{uuid.uuid4().hex[:12]}"
    database = postgres_server.create_database()
    admin = await asyncpg.connect(database)
    try:
        await admin.execute(f'CREATE ROLE "{user}" LOGIN NOCREATEROLE NOSUPERUSER')
        await admin.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{user}"')
        # CREATE SCHEMA IF NOT EXISTS (run by every migration) checks this privilege.
        name = urlsplit(database).path.lstrip("/")
        await admin.execute(f'GRANT CREATE ON DATABASE "{name}" TO "{user}"')
    finally:
        await admin.close()
    dsn = _as_user(database, user)
    # Untenanted: the migrations (row-level security included) need no CREATEROLE.
    async with PostgresStore(dsn, schema=schema) as plain:
        await plain.create(_session())
    bound = PostgresStore(dsn, schema=schema, tenant_role=role).bound_to("acme")
    with pytest.raises(ConfigurationError, match="CREATEROLE") as failed:
        await bound.open()
    assert role in str(failed.value) and "acme" in str(failed.value)
    assert bound._pool is None  # closed again


async def test_concurrent_tenant_stores_create_the_role_once(postgres_server: Any) -> None:
    role = f"r{uuid.uuid4().hex[:10]}"
    databases = [postgres_server.create_database() for _ in range(2)]
    made = [
        PostgresStore(dsn, schema=f"t{uuid.uuid4().hex[:12]}", tenant_role=role).bound_to(
            f"tenant{i}"
        )
        for dsn in databases
        for i in range(3)
    ]
    try:
        await asyncio.gather(*(store.open() for store in made))
        for store in made:
            head = await store.create(_session())
            assert head.tenant == store.tenant
            conn = await _own_connection(store)
            try:
                assert await conn.fetchval("SELECT current_user") == role
                assert await conn.fetchval("SELECT count(*) FROM sessions") == 1
            finally:
                await store._pool.release(conn)
    finally:
        for store in made:
            await store.close()


async def test_an_injected_pool_cannot_be_bound_to_a_tenant(pg_dsn: str) -> None:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1)
    try:
        store = PostgresStore.with_pool(pool).bound_to("acme")
        with pytest.raises(ConfigurationError, match="pool of its own"):
            await store.open()
    finally:
        await pool.close()


async def test_a_tenant_store_can_run_migrate_again(stores: Stores) -> None:
    assert await stores.acme.migrate() == await stores.admin.migrate()
    head = await stores.acme.create(_session())
    assert (await stores.acme.get(head.session_id, window=1)) is not None


async def test_a_user_with_createrole_sets_the_role_up_itself(postgres_server: Any) -> None:
    user = f"u{uuid.uuid4().hex[:10]}"
    role = f"r{uuid.uuid4().hex[:10]}"
    schema = f"t{uuid.uuid4().hex[:12]}"
    database = postgres_server.create_database()
    admin = await asyncpg.connect(database)
    try:
        await admin.execute(f'CREATE ROLE "{user}" LOGIN CREATEROLE NOSUPERUSER')
        await admin.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{user}"')
        name = urlsplit(database).path.lstrip("/")
        await admin.execute(f'GRANT CREATE ON DATABASE "{name}" TO "{user}"')
    finally:
        await admin.close()
    dsn = _as_user(database, user)
    bound = PostgresStore(dsn, schema=schema, tenant_role=role).bound_to("acme")
    plain = PostgresStore(dsn, schema=schema)
    async with bound, plain:
        mine = await bound.create(_session())
        other = await plain.create(_session())
        assert await bound.get(other.session_id, window=1) is None
        assert (await plain.get(mine.session_id, window=1)) is not None
        conn = await _own_connection(bound)
        try:
            assert await conn.fetchval("SELECT current_user") == role
            assert await conn.fetchval("SELECT count(*) FROM sessions") == 1
        finally:
            await bound._pool.release(conn)
    # Opening again changes nothing and still works.
    async with PostgresStore(dsn, schema=schema, tenant_role=role).bound_to("acme") as again:
        assert (await again.get(mine.session_id, window=1)) is not None


async def test_a_tenants_listings_use_the_tenant_indexes(stores: Stores) -> None:
    from agent_core.sessions.session_models import SessionState

    conn = await asyncpg.connect(stores.dsn)
    try:
        await conn.execute(f'SET search_path = "{stores.schema}"')
        await conn.execute(
            """
            INSERT INTO sessions (session_id, agent_type, user_id, state, created_at,
                                  updated_at, last_heartbeat, lease_owner, lease_expires_at,
                                  tenant)
            SELECT gen_random_uuid()::text, 'agent-' || (i % 7), 'user-' || (i % 50),
                   (ARRAY['active', 'paused', 'completed', 'failed'])[1 + i % 4],
                   now(), now(), now() - (i % 100) * interval '1 minute',
                   CASE WHEN i % 10 = 0 THEN 'w' END, now() + (i % 50) * interval '1 minute',
                   CASE WHEN i % 20 = 0 THEN 'acme' WHEN i % 3 = 0 THEN ''
                        ELSE 'tenant' || (i % 20) END
            FROM generate_series(1, 20000) AS i
            """
        )
        await conn.execute("ANALYZE")
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        store = stores.acme

        async def plan(sql: str, *args: Any) -> str:
            rows = await conn.fetch("EXPLAIN " + store._q(sql), *args)
            return "\n".join(r[0] for r in rows)

        cases = [
            (store._list_query(SessionState.ACTIVE, False, True, False), ("user-3", 100)),
            (store._list_query(SessionState.ACTIVE, True, False, False), ("agent-3", 100)),
            (store._list_query(SessionState.PAUSED, False, False, True), ("", 100)),
            (store._list_query(None, False, True, False), ("user-9", 100)),
        ]
        for sql, args in cases:
            found = await plan(sql, *args)
            assert "Seq Scan" not in found and "sessions_tenant_" in found, found
        # The reaper's statements: the stale sweep and lease expiry.
        found = await plan(_SQL_SWEEP, 60_000_000, 100)
        assert "sessions_tenant_stale" in found, found
        found = await plan(_SQL_EXPIRE_LEASES, 100)
        assert "sessions_tenant_leases" in found, found
        # The untenanted store's statements never pick a tenant index.
        for sql, args in cases:
            rows = await conn.fetch("EXPLAIN " + stores.admin._q(sql), *args)
            found = "\n".join(r[0] for r in rows)
            assert "sessions_tenant_" not in found, found
    finally:
        await conn.close()
