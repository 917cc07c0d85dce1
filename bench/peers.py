"""The peers on the same work: Google ADK, LangGraph checkpointers, OpenAI Agents SDK sessions.

Each peer's package is imported only when its configuration runs; a missing package makes
``check_available`` raise ``Unavailable`` and the run reports the reason instead of a figure.
Each peer is given its most favourable mapping of a workload (the cheapest call of its public
API that does the job); docs/benchmarks.md lists the mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench import data
from bench.configs import Adapter, Unavailable

__all__ = [
    "PEERS",
    "AdkPostgres",
    "AdkSQLite",
    "LangGraphPostgres",
    "LangGraphSQLite",
    "OpenAISQLite",
]

APP_NAME = "bench"
_PEER_WORKLOADS = frozenset({"W1", "W2", "W3", "W4", "W5"})


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _require(module: str, package: str) -> None:
    try:
        __import__(module)
    except ImportError as exc:
        raise Unavailable(f"{package} is not installed (pip install -e '.[bench]'): {exc}") from exc


def _sqlite_clone(
    path: Path,
    table: str,
    where: dict[str, Any],
    n: int,
    substitute: Callable[[int], dict[str, Any]],
) -> None:
    """Insert n copies of the one row of ``table`` matching ``where``, columns substituted."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        cursor = conn.execute(
            f"SELECT * FROM {table} WHERE {' AND '.join(f'{k} = ?' for k in where)}",
            tuple(where.values()),
        )
        cols = [d[0] for d in cursor.description]
        template = dict(zip(cols, cursor.fetchone(), strict=True))
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            sql,
            (tuple({**template, **substitute(i)}[c] for c in cols) for i in range(n)),
        )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()


# --- Google ADK -------------------------------------------------------------------------------


class _Adk(Adapter):
    family = "peer"
    workloads = _PEER_WORKLOADS
    create_has_checkpoint = False

    @classmethod
    def check_available(cls) -> None:
        _require("google.adk.sessions", "google-adk")
        _require("sqlalchemy", "sqlalchemy")

    def _url(self) -> str:
        raise NotImplementedError

    def _service(self) -> Any:
        from google.adk.sessions import DatabaseSessionService

        url = self._url()
        if url.startswith("sqlite"):
            return DatabaseSessionService(db_url=url)
        return DatabaseSessionService(db_url=url, pool_size=10, max_overflow=0)

    async def setup(self) -> None:
        from google.adk.events import Event
        from google.genai import types

        self._event_cls = Event
        self._types = types
        await self._make_storage()
        self.service = self._service()
        await self.service.prepare_tables()
        self.sessions: dict[str, Any] = {}
        self.users: dict[str, str] = {}

    async def _make_storage(self) -> None:
        pass

    async def _drop_storage(self) -> None:
        pass

    async def teardown(self) -> None:
        await self.service.close()
        await self._drop_storage()

    async def create(self, user_id: str, context: dict[str, Any]) -> str:
        session = await self.service.create_session(
            app_name=APP_NAME, user_id=user_id, state=context
        )
        self.sessions[session.id] = session
        self.users[session.id] = user_id
        return str(session.id)

    async def append(self, session_id: str, name: str, payload: dict[str, Any]) -> None:
        types = self._types
        event = self._event_cls(
            author=name,
            invocation_id="bench",
            content=types.Content(role="model", parts=[types.Part(text=_dumps(payload))]),
        )
        await self.service.append_event(self.sessions[session_id], event)

    async def get(self, session_id: str) -> Any:
        return await self.service.get_session(
            app_name=APP_NAME, user_id=self.users[session_id], session_id=session_id
        )

    async def list_user(self, user_id: str, limit: int) -> int:
        # ADK's list_sessions has no limit: it returns every session of the user.
        response = await self.service.list_sessions(app_name=APP_NAME, user_id=user_id)
        return len(response.sessions)

    async def reader(self, *, local: bool) -> Adapter:
        view = type(self).__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.service = self._service()
        await view.service.prepare_tables()
        return view

    async def close_view(self) -> None:
        await self.service.close()


class AdkPostgres(_Adk):
    name = "adk-pg"
    backend = "postgres"
    needs = frozenset({"postgres"})
    description = "google-adk DatabaseSessionService on postgresql+asyncpg (SQLAlchemy pool of 10)"

    @classmethod
    def check_available(cls) -> None:
        super().check_available()
        _require("asyncpg", "asyncpg")

    async def _make_storage(self) -> None:
        self.dsn = await self.env.new_database(f"adk_{self.tag}")

    async def _drop_storage(self) -> None:
        await self.env.drop_database(self.dsn)

    def _url(self) -> str:
        return self.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)

    async def load(self, n_sessions: int, n_users: int, stale_every: int = 0) -> None:
        import asyncpg

        template = await self.service.create_session(
            app_name=APP_NAME, user_id="template-user", state=data.context(0)
        )
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(
                """
                INSERT INTO sessions (app_name, user_id, id, state, create_time, update_time)
                SELECT t.app_name, 'user-' || lpad((i % $3)::text, 4, '0'),
                       md5($1 || i::text)::uuid::text, t.state, t.create_time, t.update_time
                FROM sessions t, generate_series(0, $4 - 1) AS i WHERE t.id = $2
                """,
                f"adk-{self.tag}-",
                template.id,
                n_users,
                n_sessions,
            )
            await conn.execute(
                """
                INSERT INTO user_states (app_name, user_id, state, update_time)
                SELECT t.app_name, 'user-' || lpad(u::text, 4, '0'), t.state, t.update_time
                FROM user_states t, generate_series(0, $1 - 1) AS u
                WHERE t.user_id = 'template-user'
                ON CONFLICT DO NOTHING
                """,
                n_users,
            )
            await conn.execute("DELETE FROM sessions WHERE id = $1", template.id)
            await conn.execute("VACUUM ANALYZE sessions")
        finally:
            await conn.close()


class AdkSQLite(_Adk):
    name = "adk-sqlite"
    backend = "sqlite"
    description = "google-adk DatabaseSessionService on sqlite+aiosqlite (a file)"

    @classmethod
    def check_available(cls) -> None:
        super().check_available()
        _require("aiosqlite", "aiosqlite")

    async def _make_storage(self) -> None:
        self.path = self.env.sqlite_path(f"adk-{self.tag}")

    async def _drop_storage(self) -> None:
        self.env.remove_sqlite(self.path)

    def _url(self) -> str:
        return f"sqlite+aiosqlite:///{self.path}"

    async def load(self, n_sessions: int, n_users: int, stale_every: int = 0) -> None:
        template = await self.service.create_session(
            app_name=APP_NAME, user_id="template-user", state=data.context(0)
        )
        await self.service.close()
        _sqlite_clone(
            self.path,
            "sessions",
            {"app_name": APP_NAME, "user_id": "template-user", "id": template.id},
            n_sessions,
            lambda i: {
                "id": data.session_id(f"adk-{self.tag}", i),
                "user_id": data.user_id(i % n_users),
            },
        )
        _sqlite_clone(
            self.path,
            "user_states",
            {"app_name": APP_NAME, "user_id": "template-user"},
            n_users,
            lambda u: {"user_id": data.user_id(u)},
        )
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("DELETE FROM sessions WHERE id = ?", (template.id,))
        conn.close()
        self.service = self._service()
        await self.service.prepare_tables()


# --- LangGraph --------------------------------------------------------------------------------


class _LangGraph(Adapter):
    family = "peer"
    workloads = _PEER_WORKLOADS

    async def _saver(self, stack: contextlib.AsyncExitStack) -> Any:
        raise NotImplementedError

    async def setup(self) -> None:
        from langgraph.checkpoint.base import empty_checkpoint

        self._empty_checkpoint = empty_checkpoint
        await self._make_storage()
        self.stack = contextlib.AsyncExitStack()
        self.saver = await self._saver(self.stack)
        await self.saver.setup()
        # thread id -> (config of its newest checkpoint, that checkpoint, step, user)
        self.threads: dict[str, tuple[Any, Any, int, str]] = {}

    async def _make_storage(self) -> None:
        pass

    async def _drop_storage(self) -> None:
        pass

    async def teardown(self) -> None:
        await self.stack.aclose()
        await self._drop_storage()

    def _checkpoint(self, previous: Any, channel: str, value: Any) -> tuple[Any, dict[str, Any]]:
        checkpoint = self._empty_checkpoint()
        if previous is not None:
            checkpoint["channel_values"] = dict(previous["channel_values"])
            checkpoint["channel_versions"] = dict(previous["channel_versions"])
        version = self.saver.get_next_version(checkpoint["channel_versions"].get(channel), None)
        checkpoint["channel_values"][channel] = value
        checkpoint["channel_versions"][channel] = version
        return checkpoint, {channel: version}

    async def create(self, user_id: str, context: dict[str, Any]) -> str:
        thread_id = str(uuid.uuid4())
        checkpoint, versions = self._checkpoint(None, "context", context)
        config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        metadata = {"source": "input", "step": -1, "user_id": user_id, "agent": data.AGENT_TYPE}
        next_config = await self.saver.aput(config, checkpoint, metadata, versions)
        self.threads[thread_id] = (next_config, checkpoint, -1, user_id)
        return thread_id

    async def append(self, session_id: str, name: str, payload: dict[str, Any]) -> None:
        config, previous, step, user_id = self.threads[session_id]
        checkpoint, versions = self._checkpoint(previous, "step", {"name": name, "data": payload})
        metadata = {"source": "loop", "step": step + 1, "user_id": user_id}
        next_config = await self.saver.aput(config, checkpoint, metadata, versions)
        self.threads[session_id] = (next_config, checkpoint, step + 1, user_id)

    async def get(self, session_id: str) -> Any:
        return await self.saver.aget_tuple(
            {"configurable": {"thread_id": session_id, "checkpoint_ns": ""}}
        )

    async def list_user(self, user_id: str, limit: int) -> int:
        found = [t async for t in self.saver.alist(None, filter={"user_id": user_id}, limit=limit)]
        return len(found)

    async def reader(self, *, local: bool) -> Adapter:
        view = type(self).__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.stack = contextlib.AsyncExitStack()
        view.saver = await self._saver(view.stack)
        return view

    async def close_view(self) -> None:
        await self.stack.aclose()

    async def _template(self) -> str:
        thread_id = await self.create("template-user", data.context(0))
        return thread_id


class LangGraphPostgres(_LangGraph):
    name = "langgraph-pg"
    backend = "postgres"
    needs = frozenset({"postgres"})
    description = (
        "langgraph-checkpoint-postgres AsyncPostgresSaver on a psycopg AsyncConnectionPool of"
        " 10 (autocommit, prepare_threshold=0, dict_row, as its docs set it up)"
    )

    @classmethod
    def check_available(cls) -> None:
        _require("langgraph.checkpoint.postgres.aio", "langgraph-checkpoint-postgres")
        _require("psycopg_pool", "psycopg-pool")

    async def _make_storage(self) -> None:
        self.dsn = await self.env.new_database(f"lg_{self.tag}")

    async def _drop_storage(self) -> None:
        await self.env.drop_database(self.dsn)

    async def _saver(self, stack: contextlib.AsyncExitStack) -> Any:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(
            conninfo=self.dsn,
            min_size=10,
            max_size=10,
            open=False,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        )
        await pool.open()
        stack.push_async_callback(pool.close)
        saver: Any = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
        return saver

    async def load(self, n_sessions: int, n_users: int, stale_every: int = 0) -> None:
        import asyncpg

        template = await self._template()
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(
                """
                INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id,
                                         parent_checkpoint_id, type, checkpoint, metadata)
                SELECT md5($1 || i::text)::uuid::text, t.checkpoint_ns, t.checkpoint_id,
                       t.parent_checkpoint_id, t.type, t.checkpoint,
                       jsonb_set(t.metadata, '{user_id}',
                                 to_jsonb('user-' || lpad((i % $3)::text, 4, '0')))
                FROM checkpoints t, generate_series(0, $4 - 1) AS i WHERE t.thread_id = $2
                """,
                f"lg-{self.tag}-",
                template,
                n_users,
                n_sessions,
            )
            await conn.execute(
                """
                INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type,
                                              blob)
                SELECT md5($1 || i::text)::uuid::text, t.checkpoint_ns, t.channel, t.version,
                       t.type, t.blob
                FROM checkpoint_blobs t, generate_series(0, $3 - 1) AS i WHERE t.thread_id = $2
                """,
                f"lg-{self.tag}-",
                template,
                n_sessions,
            )
            for table in ("checkpoints", "checkpoint_blobs"):
                await conn.execute(f"DELETE FROM {table} WHERE thread_id = $1", template)
                await conn.execute(f"VACUUM ANALYZE {table}")
        finally:
            await conn.close()


class LangGraphSQLite(_LangGraph):
    name = "langgraph-sqlite"
    backend = "sqlite"
    description = "langgraph-checkpoint-sqlite AsyncSqliteSaver.from_conn_string(file)"

    @classmethod
    def check_available(cls) -> None:
        _require("langgraph.checkpoint.sqlite.aio", "langgraph-checkpoint-sqlite")
        _require("aiosqlite", "aiosqlite")

    async def _make_storage(self) -> None:
        self.path = self.env.sqlite_path(f"lg-{self.tag}")

    async def _drop_storage(self) -> None:
        self.env.remove_sqlite(self.path)

    async def _saver(self, stack: contextlib.AsyncExitStack) -> Any:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        return await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(self.path)))

    async def load(self, n_sessions: int, n_users: int, stale_every: int = 0) -> None:
        template = await self._template()
        ids = [data.session_id(f"lg-{self.tag}", i) for i in range(n_sessions)]
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            (metadata,) = conn.execute(
                "SELECT metadata FROM checkpoints WHERE thread_id = ?", (template,)
            ).fetchone()
        finally:
            conn.close()
        as_text = isinstance(metadata, str)

        def meta(i: int) -> Any:
            doc = orjson.loads(metadata)
            doc["user_id"] = data.user_id(i % n_users)
            raw = orjson.dumps(doc)
            return raw.decode() if as_text else raw

        _sqlite_clone(
            self.path,
            "checkpoints",
            {"thread_id": template},
            n_sessions,
            lambda i: {"thread_id": ids[i], "metadata": meta(i)},
        )
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("DELETE FROM checkpoints WHERE thread_id = ?", (template,))
        conn.close()


# --- OpenAI Agents SDK ------------------------------------------------------------------------


class OpenAISQLite(Adapter):
    name = "openai-sqlite"
    family = "peer"
    backend = "sqlite"
    workloads = frozenset({"W1", "W2", "W3", "W4"})
    description = "openai-agents SQLiteSession(session_id, file): one object per session"

    @classmethod
    def check_available(cls) -> None:
        _require("agents.memory.sqlite_session", "openai-agents")

    async def setup(self) -> None:
        from agents.memory.sqlite_session import SQLiteSession

        self._cls = SQLiteSession
        self.path = self.env.sqlite_path(f"openai-{self.tag}")
        self.sessions: dict[str, Any] = {}

    async def teardown(self) -> None:
        await self.close_view()
        self.env.remove_sqlite(self.path)

    def _session(self, session_id: str) -> Any:
        session = self.sessions.get(session_id)
        if session is None:
            session = self._cls(session_id, self.path)
            self.sessions[session_id] = session
        return session

    async def create(self, user_id: str, context: dict[str, Any]) -> str:
        session_id = str(uuid.uuid4())
        # Creating a session is constructing the object; the context is its first item.
        await self._session(session_id).add_items(
            [{"role": "user", "content": _dumps({"user_id": user_id, "context": context})}]
        )
        return session_id

    async def append(self, session_id: str, name: str, payload: dict[str, Any]) -> None:
        await self._session(session_id).add_items(
            [{"role": "assistant", "content": _dumps({"name": name, "data": payload})}]
        )

    async def get(self, session_id: str) -> Any:
        return await self._session(session_id).get_items()

    async def reader(self, *, local: bool) -> Adapter:
        view = type(self).__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.sessions = {}
        return view

    async def close_view(self) -> None:
        for session in self.sessions.values():
            closer = getattr(session, "close", None)
            if closer is not None:
                result = closer()
                if asyncio.iscoroutine(result):
                    await result
        self.sessions = {}


PEERS: list[type[Adapter]] = [
    AdkPostgres,
    AdkSQLite,
    LangGraphPostgres,
    LangGraphSQLite,
    OpenAISQLite,
]
