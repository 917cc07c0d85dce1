"""SQLite store: the embedded durable backend.

One connection per store, driven by one dedicated thread (``_Worker``), so the event loop never
blocks on SQLite and the connection is never used by two threads at once. Every write is one
``BEGIN IMMEDIATE`` transaction: it takes the database's write lock up front, so writers in
other processes on the same file serialize instead of failing mid-transaction or losing updates.
Multi-statement reads run in one deferred transaction to see one snapshot; ``get`` is a single
statement, whose implicit read transaction is that snapshot (WAL readers never block writers and
are never blocked by them).

The store's clock is the OS clock, read by this module inside each write transaction (never a
caller's clock), so processes sharing the file agree on staleness and lease expiry. Purged
content is erased from the files: ``secure_delete`` zeroes freed space, and a purge that removed
something ends with a TRUNCATE checkpoint of the WAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from queue import SimpleQueue
from typing import Any, TypeVar, cast

from agent_core.codec import dumps, encode_patched, loads, merge_patch
from agent_core.crypto import (
    is_sealed,
    open_checkpoints,
    open_record,
    open_session,
    open_value,
    seal_record,
    seal_value,
)
from agent_core.errors import (
    ConfigurationError,
    ConflictError,
    LeaseHeld,
    LeaseLost,
    NotOpenError,
    SessionNotFound,
    StoreUnavailable,
)
from agent_core.sessions.session_models import AgentSession, Lease, SessionCheckpoint, SessionState
from agent_core.stores.base import (
    AppendResult,
    AuditRecord,
    RecordWrite,
    RetentionPolicy,
    SessionRef,
    SessionStore,
    StoredRecord,
    TierEpoch,
    bound_age,
    check_tenant,
    prefix_end,
)
from agent_core.stores.migrations import Migration, load_migrations

__all__ = ["SQLiteStore"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_Body = Callable[[sqlite3.Connection], _T]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_new = object.__new__
_US = timedelta(microseconds=1)

# Primary result codes (extended codes carry them in the low byte).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_MAX_INT = 2**63 - 1

_HEAD_COLUMNS = (
    "session_id, agent_type, user_id, state, created_at, updated_at, last_heartbeat, version,"
    " checkpoint_count, lease_owner, lease_token, lease_expires_at, lease_ttl_us, context,"
    " metadata, tenant"
)
_SELECT_HEAD = f"SELECT {_HEAD_COLUMNS} FROM sessions WHERE session_id = ?"
_REF_COLUMNS = "session_id, version, agent_type, user_id, state, tenant"
_CHECKPOINT_COLUMNS = "seq, name, timestamp, data"

# get(): the live session and its checkpoint window in one statement, so one implicit read
# transaction (one WAL snapshot) covers both without BEGIN/COMMIT. The window comes back as
# one JSON text, [[seq, name, timestamp, data], ...]: ``data`` is spliced in as stored (it was
# written by orjson, so it is JSON already) and only the name is quoted; Python decodes the
# whole window with one orjson call instead of building a row tuple per checkpoint.
_SESSION_COLUMNS = (
    "session_id, agent_type, user_id, state, created_at, updated_at, last_heartbeat, version,"
    " checkpoint_count, context, metadata, tenant"
)
_GET_SESSION = (
    f"SELECT {_SESSION_COLUMNS}, NULL FROM sessions WHERE session_id = ? AND state != 'deleted'"
)
_GET_SESSION_WINDOW = (
    f"SELECT {_SESSION_COLUMNS}, ("
    "SELECT '[[' || group_concat("
    "c.seq || ',' || json_quote(c.name) || ',' || c.timestamp || ',' || c.data, '],['"
    ") || ']]'"
    " FROM checkpoints AS c WHERE c.session_id = s.session_id AND c.seq > s.checkpoint_count - ?2"
    ") FROM sessions AS s WHERE s.session_id = ?1 AND s.state != 'deleted'"
)
_INSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (session_id, seq, name, data, timestamp, idempotency_key, tenant)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# Ids per statement in describe(): below SQLite's smallest bound-parameter limit (999).
_IN_CHUNK = 500
_SELECT_EPOCH = "SELECT epoch, cache_id FROM tier_epochs WHERE namespace = ?"
_INSERT_EPOCH = "INSERT OR IGNORE INTO tier_epochs (namespace) VALUES (?)"
_CACHES_IN_USE = "SELECT EXISTS (SELECT 1 FROM tier_epochs WHERE cache_id <> '')"
_SCHEMA_TABLE = (
    "CREATE TABLE IF NOT EXISTS agent_core_schema ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)

_RECORD_COLUMNS = "tenant, scope, key, value, sealed, session_id, user_id, updated_at"
_PUT_RECORD_KEEP = (
    f"INSERT INTO records ({_RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant, scope, key) DO NOTHING"
)
_PUT_RECORD = (
    f"INSERT INTO records ({_RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant, scope, key) DO UPDATE SET value = excluded.value,"
    " sealed = excluded.sealed, session_id = excluded.session_id, user_id = excluded.user_id,"
    " updated_at = excluded.updated_at"
)


def _key_range(prefix: str, after: str | None, before: str | None) -> tuple[str, tuple[str, ...]]:
    """The ``AND key ...`` conditions (and their parameters) of a prefix and two cursors: key
    ranges, so the primary key serves them."""
    where, params = "", cast(tuple[str, ...], ())
    if prefix:
        where, params = " AND key >= ?", (prefix,)
        end = prefix_end(prefix)
        if end is not None:
            where, params = where + " AND key < ?", (*params, end)
    if after is not None:
        where, params = where + " AND key > ?", (*params, after)
    if before is not None:
        where, params = where + " AND key < ?", (*params, before)
    return where, params


# Literals rather than bound parameters: SQLite only uses a partial index (WHERE state =
# 'active') when the query's own text implies the index's condition.
_STATE_LITERAL = {state: f"'{state.value}'" for state in SessionState}


def _now_us() -> int:
    """The store's clock, in microseconds since the epoch: the OS clock, whatever clock the
    callers use. Read inside the write transaction, so stamps follow commit order."""
    return time.time_ns() // 1000


def _ref(found: tuple[Any, ...]) -> SessionRef:
    """A ``SessionRef`` from a ``_REF_COLUMNS`` row."""
    session_id, version, agent_type, user_id, state, tenant = found
    return SessionRef(session_id, version, agent_type, user_id, SessionState(state), tenant)


def _to_us(value: datetime) -> int:
    # Naive datetimes are UTC, as in session_models.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _US


def _from_us(value: int) -> datetime:
    # timedelta(days, seconds, microseconds): positional is cheaper than the keyword.
    return _EPOCH + timedelta(0, 0, value)


def _json(value: Any) -> str:
    return dumps(value).decode()


def _is_busy(exc: sqlite3.Error) -> bool:
    # Errors raised by the sqlite3 module itself carry no SQLite result code.
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


def _bound(value: int) -> int:
    # Out-of-range ints would make the driver raise OverflowError, not an SQL answer.
    return min(max(value, 0), _MAX_INT)


def _new_checkpoint(seq: int, name: str, timestamp: int, data: dict[str, Any]) -> SessionCheckpoint:
    # Hot path of every store read: fill the fields directly, as SessionCheckpoint.from_dict
    # does, instead of going through the dataclass __init__ and its default factories.
    cp = _new(SessionCheckpoint)
    cp.name = name
    cp.timestamp = _from_us(timestamp)
    cp.data = data
    cp.seq = seq
    return cp


def _checkpoint(row: tuple[Any, ...]) -> SessionCheckpoint:
    seq, name, timestamp, data = row
    return _new_checkpoint(seq, name, timestamp, loads(data))


def _window(trail: str | None) -> list[SessionCheckpoint]:
    """Decode the checkpoint window of ``_GET_SESSION_WINDOW``, oldest first."""
    if trail is None:
        return []
    entries: list[list[Any]] = loads(trail)
    # group_concat() promises no order; the primary-key scan gives seq order, and sorting
    # an already sorted list is one pass. Entries compare by their unique seq alone.
    entries.sort()
    return [_new_checkpoint(seq, name, timestamp, data) for seq, name, timestamp, data in entries]


def _has_json(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT json_quote(''), json_set('{}', '$.k', 1)").fetchall()
    except sqlite3.OperationalError:
        return False
    return True


def _get_in_two(
    session_id: str, window: int, mine: str, conn: sqlite3.Connection
) -> AgentSession | None:
    """``get`` without SQLite's JSON functions: two statements, in one read transaction."""
    found = conn.execute(_GET_SESSION + mine, (session_id,)).fetchone()
    if found is None:
        return None
    out = _session(found)
    if out.checkpoint_count > 0:
        out.checkpoints = [
            _checkpoint(cp)
            for cp in conn.execute(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints"
                " WHERE session_id = ? AND seq > ? ORDER BY seq",
                (session_id, _bound(out.checkpoint_count - window)),
            )
        ]
    return out


def _session(found: tuple[Any, ...]) -> AgentSession:
    """An ``AgentSession`` from a ``_GET_SESSION*`` row."""
    (
        session_id,
        agent_type,
        user_id,
        state,
        created_at,
        updated_at,
        last_heartbeat,
        version,
        checkpoint_count,
        context,
        metadata,
        tenant,
        trail,
    ) = found
    return AgentSession(
        agent_type=agent_type,
        user_id=user_id,
        session_id=session_id,
        state=SessionState(state),
        created_at=_from_us(created_at),
        updated_at=_from_us(updated_at),
        last_heartbeat=_from_us(last_heartbeat),
        context=loads(context),
        checkpoints=_window(trail),
        metadata=loads(metadata),
        version=version,
        checkpoint_count=checkpoint_count,
        tenant=tenant,
    )


def _split_statements(script: str) -> list[str]:
    # Connection.executescript() would COMMIT first, but a migration has to run inside the
    # transaction that re-checked the schema version.
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer)
            buffer = ""
    leftover = [ln for ln in buffer.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    if leftover:
        statements.append(buffer)
    return statements


@dataclass
class _Row:
    session_id: str
    agent_type: str
    user_id: str
    state: SessionState
    created_at: int
    updated_at: int
    last_heartbeat: int
    version: int
    checkpoint_count: int
    lease_owner: str | None
    lease_token: int
    lease_expires_at: int | None
    lease_ttl_us: int | None
    context: str
    metadata: str
    tenant: str

    @classmethod
    def from_db(cls, row: tuple[Any, ...]) -> _Row:
        out = cls(*row)
        out.state = SessionState(out.state)
        return out

    def lease_is_live(self, now: int) -> bool:
        return (
            self.lease_owner is not None
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )

    def check_fence(self, fence: Lease | None, now: int) -> None:
        if fence is None:
            return
        if fence.token != self.lease_token or not self.lease_is_live(now):
            raise LeaseLost(
                f"lease token {fence.token} on session {fence.session_id} is no longer live"
            )

    def clear_lease(self) -> None:
        self.lease_owner = None
        self.lease_expires_at = None

    def ref(self) -> SessionRef:
        return SessionRef(
            self.session_id, self.version, self.agent_type, self.user_id, self.state, self.tenant
        )

    def head(self) -> AgentSession:
        return AgentSession(
            agent_type=self.agent_type,
            user_id=self.user_id,
            session_id=self.session_id,
            state=self.state,
            created_at=_from_us(self.created_at),
            updated_at=_from_us(self.updated_at),
            last_heartbeat=_from_us(self.last_heartbeat),
            context=loads(self.context),
            checkpoints=[],
            metadata=loads(self.metadata),
            version=self.version,
            checkpoint_count=self.checkpoint_count,
            tenant=self.tenant,
        )


def _load(conn: sqlite3.Connection, session_id: str, mine: str) -> _Row | None:
    found = conn.execute(_SELECT_HEAD + mine, (session_id,)).fetchone()
    if found is None:
        return None
    row = _Row.from_db(found)
    return None if row.state is SessionState.DELETED else row


def _live(conn: sqlite3.Connection, session_id: str, mine: str) -> _Row:
    """The live row of ``session_id`` among the rows ``mine`` (a tenant filter) admits; every
    later statement of the transaction may then address it by id alone."""
    row = _load(conn, session_id, mine)
    if row is None:
        raise SessionNotFound(session_id)
    return row


def _bump(conn: sqlite3.Connection, row: _Row, now: int) -> None:
    """Store the row's version + 1 and ``updated_at = now`` (and update ``row`` to match)."""
    row.version += 1
    row.updated_at = now
    conn.execute(
        "UPDATE sessions SET version = ?, updated_at = ? WHERE session_id = ?",
        (row.version, now, row.session_id),
    )


# --- the store's thread ------------------------------------------------------------------------

# (loop, future, call); a shutdown's last call comes as (None, None, call).
_Job = tuple[asyncio.AbstractEventLoop | None, asyncio.Future[Any] | None, Callable[[], Any]]


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    elif isinstance(value, StopIteration):
        # A future refuses StopIteration (it would end the awaiting coroutine's frame).
        future.set_exception(RuntimeError(f"StopIteration raised on the SQLite thread: {value}"))
    else:
        future.set_exception(value)


def _serve(jobs: SimpleQueue[_Job | None]) -> None:
    while (job := jobs.get()) is not None:
        loop, future, call = job
        del job
        if future is None or loop is None:
            with contextlib.suppress(Exception):
                call()
            continue
        # Cancelled before it started: skipped, as an executor's queued work item would be.
        # (Reading the state from this thread is safe; a cancellation racing with the call
        # only makes _settle drop the outcome.)
        if future.cancelled():
            continue
        try:
            value, ok = call(), True
        except BaseException as exc:
            value, ok = exc, False
        del call
        # Signalling the loop is the last thing the thread does before it blocks on the queue
        # again, so the woken loop does not then wait for the GIL.
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_settle, future, ok, value)
        del loop, future, value


def _close_all(connections: list[sqlite3.Connection]) -> None:
    for conn in connections:
        conn.close()


class _Worker:
    """The store's one thread: runs calls in submission order and hands each outcome to the
    event loop that submitted it.

    What ``ThreadPoolExecutor(max_workers=1)`` with ``asyncio.wrap_future`` does, minus the
    concurrent Future, its condition variable and the callback chaining between two futures:
    the thread hop is most of the cost of a read beside SQLite itself. A call whose caller was
    cancelled before the thread got to it is skipped; one already running completes and its
    outcome is dropped.
    """

    def __init__(self) -> None:
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        # A daemon thread, as nothing may keep the process alive; an interrupted transaction
        # rolls back on the next open.
        threading.Thread(
            target=_serve, args=(self._jobs,), name="agent-core-sqlite", daemon=True
        ).start()
        # A worker dropped without shutdown() still ends its thread.
        self._stop = weakref.finalize(self, self._jobs.put, None)

    def submit(self, call: Callable[[], _T]) -> asyncio.Future[_T]:
        """Queue ``call``; raises ``RuntimeError`` after ``shutdown()``."""
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the SQLite worker thread is shut down")
            self._jobs.put((future.get_loop(), future, call))
        return future

    def shutdown(self, last: Callable[[], object] | None = None) -> None:
        """End the thread once the calls already queued have run, then ``last`` (errors ignored)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if last is not None:
                self._jobs.put((None, None, last))
            self._stop()


class SQLiteStore(SessionStore):
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create_schema: bool = True,
        busy_timeout: float = 5.0,
    ) -> None:
        self._path = os.fspath(path)
        self._create_schema = create_schema
        self._busy_timeout = busy_timeout
        self.url = f"sqlite:///{self._path}"
        self._conn: sqlite3.Connection | None = None
        self._worker: _Worker | None = None
        # (tenant, its filter): see _mine.
        self._filter: tuple[str | None, str] = (None, "")
        # Whether the library has SQLite's JSON functions (built in since 3.38, an option
        # before): found out at open(); without them reads and sweeps take a slower path.
        self._json = True

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

    @property
    def _mine(self) -> str:
        """The tenant filter every statement appends: ``" AND tenant = '<name>' AND tenant <>
        ''"`` for a tenant-bound store, ``""`` for an untenanted one. The name is checked (no
        quote can occur), so it can be a literal, which lets the planner match the tenant's
        partial indexes as it does the state literals; ``tenant <> ''`` is spelled out because
        those indexes are partial on it and SQLite only uses a partial index whose terms the
        statement contains."""
        tenant, mine = self._filter
        if tenant != self.tenant:
            tenant = self.tenant
            if tenant is None:
                mine = ""
            elif tenant == "":  # the rows of no tenant (the tenant indexes leave them out)
                mine = " AND tenant = ''"
            else:
                mine = f" AND tenant = '{check_tenant(tenant)}' AND tenant <> ''"
            self._filter = (tenant, mine)
        return mine

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        worker = _Worker()
        opened: list[sqlite3.Connection] = []

        def open_sync() -> sqlite3.Connection:
            conn = self._open_sync()
            opened.append(conn)
            return conn

        try:
            conn = await worker.submit(open_sync)
        except BaseException:
            # Cancelled while the thread was still opening: close what it opens.
            worker.shutdown(last=partial(_close_all, opened))
            raise
        self._conn, self._worker = conn, worker

    async def close(self) -> None:
        conn, worker = self._conn, self._worker
        if conn is None or worker is None:
            return
        self._conn = self._worker = None
        try:
            # Queued behind any operation still in flight, which therefore completes first.
            await worker.submit(partial(self._close_sync, conn))
        except asyncio.CancelledError:
            # Closed all the same, once the thread gets to it.
            worker.shutdown(last=conn.close)
            raise
        finally:
            worker.shutdown()

    async def migrate(self) -> int:
        """Apply pending migrations. Also works before ``open()``, on a connection of its own."""
        if self._conn is None or self._worker is None:
            return await asyncio.to_thread(self._migrate_standalone)
        conn = self._conn
        return await self._submit(self._worker, lambda: self._migrate_sync(conn))

    def _connect(self) -> sqlite3.Connection:
        try:
            # check_same_thread=False only lets close() run from the event loop thread after a
            # cancelled open(); every other use goes through the store's single thread.
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        try:
            self._set_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            # Freed space is overwritten with zeros, so purged content leaves the file.
            conn.execute("PRAGMA secure_delete = ON")
            conn.execute(f"PRAGMA busy_timeout = {max(int(self._busy_timeout * 1000), 0)}")
        except sqlite3.Error as exc:
            conn.close()
            raise self._unavailable(exc) from exc
        return conn

    def _set_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL mode, retrying while another process holds the lock it needs: SQLite
        answers this pragma with SQLITE_BUSY at once, without waiting the busy timeout, when
        processes open a new file together."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL").fetchone()
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)

    def _open_sync(self) -> sqlite3.Connection:
        conn = self._connect()
        try:
            if self._create_schema:
                self._migrate_sync(conn)
            self._json = _has_json(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _close_sync(self, conn: sqlite3.Connection) -> None:
        try:
            conn.close()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    def _migrate_standalone(self) -> int:
        conn = self._connect()
        try:
            return self._migrate_sync(conn)
        finally:
            conn.close()

    def _migrate_sync(self, conn: sqlite3.Connection) -> int:
        try:
            current = self._schema_version(conn)
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        for migration in load_migrations("sqlite"):
            if migration.version > current:
                current = self._write_sync(
                    conn, partial(self._apply_migration, migration=migration)
                )
        return current

    def _apply_migration(self, conn: sqlite3.Connection, *, migration: Migration) -> int:
        conn.execute(_SCHEMA_TABLE)
        # Another process may have applied it since the unlocked read in _migrate_sync.
        in_place = self._schema_version(conn)
        if in_place >= migration.version:
            return in_place
        for statement in _split_statements(migration.sql):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO agent_core_schema (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, datetime.now(UTC).isoformat()),
        )
        return migration.version

    @staticmethod
    def _schema_version(conn: sqlite3.Connection) -> int:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'agent_core_schema'"
        ).fetchone()
        if exists is None:
            return 0
        found = conn.execute("SELECT COALESCE(MAX(version), 0) FROM agent_core_schema").fetchone()
        return int(found[0])

    # --- running statements ----------------------------------------------------------------

    def _unavailable(
        self, exc: sqlite3.Error, *, maybe_committed: bool = False
    ) -> StoreUnavailable:
        return StoreUnavailable(f"{self.url}: {exc}", maybe_committed=maybe_committed)

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            # If this fails SQLite has rolled back already; the caller's error is the one to report.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _write_sync(self, conn: sqlite3.Connection, body: _Body[_T]) -> _T:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise self._unavailable(exc) from exc
        try:
            result = body(conn)
        except sqlite3.IntegrityError as exc:
            self._rollback(conn)
            raise ConflictError(f"{self.url}: {exc}") from exc
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise self._unavailable(exc) from exc
        except BaseException:
            self._rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            # A busy COMMIT leaves the transaction open and we rolled it back; after an I/O
            # error the commit record may already be on disk.
            raise self._unavailable(exc, maybe_committed=not _is_busy(exc)) from exc
        return result

    def _read_sync(self, conn: sqlite3.Connection, body: _Body[_T], snapshot: bool) -> _T:
        try:
            if not snapshot:
                return body(conn)
            conn.execute("BEGIN")
            try:
                return body(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise self._unavailable(exc) from exc

    async def _submit(self, worker: _Worker, call: Callable[[], _T]) -> _T:
        try:
            future = worker.submit(call)
        except RuntimeError:
            raise NotOpenError("SQLiteStore used after close()") from None
        return await future

    def _require_open(self) -> tuple[sqlite3.Connection, _Worker]:
        if self._conn is None or self._worker is None:
            raise NotOpenError("SQLiteStore used before open() or after close()")
        return self._conn, self._worker

    async def _write(self, body: _Body[_T]) -> _T:
        conn, worker = self._require_open()
        return await self._submit(worker, lambda: self._write_sync(conn, body))

    async def _read(self, body: _Body[_T], *, snapshot: bool = False) -> _T:
        conn, worker = self._require_open()
        return await self._submit(worker, lambda: self._read_sync(conn, body, snapshot))

    # --- encryption at rest -----------------------------------------------------------------

    def _seal(self, value: Any, session_id: str, field: str) -> str:
        return _json(seal_value(self.sealer, value, session_id, field))

    def _head(self, row: _Row) -> AgentSession:
        return open_session(self.sealer, row.head())  # type: ignore[no-any-return]

    def _checkpoint(self, session_id: str, found: tuple[Any, ...]) -> SessionCheckpoint:
        cp = _checkpoint(found)
        open_checkpoints(self.sealer, session_id, [cp])
        return cp

    async def reseal_sessions(self, after: str, limit: int) -> tuple[int, str | None]:
        sealer = self.sealer
        if sealer is None:
            raise ConfigurationError("rotate_keys needs encryption_keys")
        kid = sealer.kid

        def current(text: str) -> bool:
            value = loads(text)
            return is_sealed(value) and value["kid"] == kid and len(value) == 2

        def body(conn: sqlite3.Connection) -> tuple[int, str | None]:
            rows = conn.execute(
                "SELECT session_id, context, metadata FROM sessions WHERE session_id > ?"
                f"{self._mine} ORDER BY session_id LIMIT ?",
                (after, _bound(limit)),
            ).fetchall()
            done = 0
            for sid, context, metadata in rows:
                if current(context) and current(metadata):
                    continue
                opened = [
                    open_value(sealer, loads(text), f"{sid}/{field}")
                    for text, field in ((context, "context"), (metadata, "metadata"))
                ]
                conn.execute(
                    "UPDATE sessions SET context = ?, metadata = ? WHERE session_id = ?",
                    (
                        self._seal(opened[0], sid, "context"),
                        self._seal(opened[1], sid, "metadata"),
                        sid,
                    ),
                )
                done += 1
            return done, (rows[-1][0] if len(rows) == limit else None)

        return await self._write(body)

    async def reseal_records(
        self, after: tuple[str, str, str], limit: int
    ) -> tuple[int, tuple[str, str, str] | None]:
        sealer = self.sealer
        if sealer is None:
            raise ConfigurationError("rotate_keys needs encryption_keys")
        # Sealer.seal_bytes output starts with "$<kid>.": the rows that do not are picked.
        mark = b"$" + sealer.kid.encode() + b"."

        def body(conn: sqlite3.Connection) -> tuple[int, tuple[str, str, str] | None]:
            rows = conn.execute(
                "SELECT tenant, scope, key, value, sealed FROM records"
                " WHERE (tenant, scope, key) > (?, ?, ?)"
                " AND NOT (sealed = 1 AND substr(value, 1, ?) = ?)"
                f"{self._mine} ORDER BY tenant, scope, key LIMIT ?",
                (*after, len(mark), mark, _bound(limit)),
            ).fetchall()
            for tenant, scope, key, value, sealed in rows:
                plain = open_record(sealer, bytes(value), bool(sealed), tenant, scope, key)
                conn.execute(
                    "UPDATE records SET value = ?, sealed = 1"
                    " WHERE tenant = ? AND scope = ? AND key = ?",
                    (seal_record(sealer, plain, tenant, scope, key), tenant, scope, key),
                )
            if len(rows) < limit:
                return len(rows), None
            return len(rows), (rows[-1][0], rows[-1][1], rows[-1][2])

        return await self._write(body)

    async def reseal_checkpoints(
        self, after: tuple[str, int], limit: int
    ) -> tuple[int, tuple[str, int] | None]:
        sealer = self.sealer
        if sealer is None:
            raise ConfigurationError("rotate_keys needs encryption_keys")
        kid = sealer.kid

        def body(conn: sqlite3.Connection) -> tuple[int, tuple[str, int] | None]:
            rows = conn.execute(
                "SELECT session_id, seq, data FROM checkpoints WHERE (session_id, seq) > (?, ?)"
                f"{self._mine} ORDER BY session_id, seq LIMIT ?",
                (after[0], after[1], _bound(limit)),
            ).fetchall()
            done = 0
            for sid, seq, text in rows:
                value = loads(text)
                if is_sealed(value) and value["kid"] == kid:
                    continue
                data = open_value(sealer, value, f"{sid}/checkpoint")
                conn.execute(
                    "UPDATE checkpoints SET data = ? WHERE session_id = ? AND seq = ?",
                    (self._seal(data, sid, "checkpoint"), sid, seq),
                )
                done += 1
            last = (rows[-1][0], rows[-1][1]) if len(rows) == limit else None
            return done, last

        return await self._write(body)

    # --- sessions --------------------------------------------------------------------------

    async def create(self, session: AgentSession) -> AgentSession:
        sid = session.session_id
        context, metadata = (
            self._seal(session.context, sid, "context"),
            self._seal(session.metadata, sid, "metadata"),
        )
        trail = [
            (cp.name, self._seal(cp.data, sid, "checkpoint"), _to_us(cp.timestamp))
            for cp in session.checkpoints
        ]
        tenant = session.tenant if self.tenant is None else self.tenant

        def body(conn: sqlite3.Connection) -> AgentSession:
            if conn.execute("SELECT 1 FROM sessions WHERE session_id = ?", (sid,)).fetchone():
                raise ConflictError(f"session {sid} already exists")
            now = _now_us()
            row = _Row(
                session_id=sid,
                agent_type=session.agent_type,
                user_id=session.user_id,
                state=session.state,
                created_at=now,
                updated_at=now,
                last_heartbeat=now,
                version=1,
                checkpoint_count=len(trail),
                lease_owner=None,
                lease_token=0,
                lease_expires_at=None,
                lease_ttl_us=None,
                context=context,
                metadata=metadata,
                tenant=tenant,
            )
            conn.execute(
                f"INSERT INTO sessions ({_HEAD_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.session_id,
                    row.agent_type,
                    row.user_id,
                    row.state.value,
                    row.created_at,
                    row.updated_at,
                    row.last_heartbeat,
                    row.version,
                    row.checkpoint_count,
                    row.lease_owner,
                    row.lease_token,
                    row.lease_expires_at,
                    row.lease_ttl_us,
                    row.context,
                    row.metadata,
                    row.tenant,
                ),
            )
            conn.executemany(
                _INSERT_CHECKPOINT,
                [(sid, seq, *cp, None, tenant) for seq, cp in enumerate(trail, start=1)],
            )
            return self._head(row)

        return await self._write(body)

    async def get(self, session_id: str, *, window: int) -> AgentSession | None:
        conn, worker = self._require_open()
        if window <= 0:
            call = partial(self._get_sync, conn, _GET_SESSION + self._mine, (session_id,))
        elif self._json:
            call = partial(
                self._get_sync,
                conn,
                _GET_SESSION_WINDOW + self._mine,
                (session_id, _bound(window)),
            )
        else:
            found = await self._read(
                partial(_get_in_two, session_id, window, self._mine), snapshot=True
            )
            return None if found is None else open_session(self.sealer, found)
        return await self._submit(worker, call)

    def _get_sync(
        self, conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]
    ) -> AgentSession | None:
        # One statement: its implicit read transaction is the snapshot (no BEGIN/COMMIT).
        # fetchall() runs it to completion, which ends that read transaction at once.
        try:
            found = conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return open_session(self.sealer, _session(found[0])) if found else None

    async def get_version(self, session_id: str) -> int | None:
        def body(conn: sqlite3.Connection) -> int | None:
            found = conn.execute(
                "SELECT version FROM sessions WHERE session_id = ? AND state != 'deleted'"
                + self._mine,
                (session_id,),
            ).fetchone()
            return None if found is None else int(found[0])

        return await self._read(body)

    async def update(
        self,
        session: AgentSession,
        new_checkpoints: Sequence[SessionCheckpoint],
        *,
        fence: Lease | None = None,
    ) -> AgentSession:
        sid = session.session_id
        context, metadata = (
            self._seal(session.context, sid, "context"),
            self._seal(session.metadata, sid, "metadata"),
        )
        trail = [
            (cp.name, self._seal(cp.data, sid, "checkpoint"), _to_us(cp.timestamp))
            for cp in new_checkpoints
        ]

        def body(conn: sqlite3.Connection) -> AgentSession:
            row = _live(conn, sid, self._mine)
            now = _now_us()
            row.check_fence(fence, now)
            if row.version != session.version:
                raise ConflictError(
                    f"session {sid} is at version {row.version}, "
                    f"the update was based on version {session.version}"
                )
            if session.state is not row.state:
                row.state.check_transition(session.state)
            first = row.checkpoint_count + 1
            conn.executemany(
                _INSERT_CHECKPOINT,
                [(sid, seq, *cp, None, row.tenant) for seq, cp in enumerate(trail, start=first)],
            )
            row.state = session.state
            row.context, row.metadata = context, metadata
            row.last_heartbeat = now
            row.checkpoint_count += len(trail)
            row.version += 1
            row.updated_at = now
            if row.state is SessionState.DELETED:
                row.clear_lease()
            conn.execute(
                "UPDATE sessions SET state = ?, context = ?, metadata = ?, last_heartbeat = ?,"
                " checkpoint_count = ?, version = ?, updated_at = ?, lease_owner = ?,"
                " lease_expires_at = ? WHERE session_id = ?",
                (
                    row.state.value,
                    context,
                    metadata,
                    now,
                    row.checkpoint_count,
                    row.version,
                    now,
                    row.lease_owner,
                    row.lease_expires_at,
                    sid,
                ),
            )
            return self._head(row)

        return await self._write(body)

    async def append_checkpoint(
        self,
        session_id: str,
        checkpoint: SessionCheckpoint,
        *,
        idempotency_key: str | None = None,
        fence: Lease | None = None,
        records: RecordWrite | None = None,
    ) -> AppendResult:
        data = self._seal(checkpoint.data, session_id, "checkpoint")
        timestamp = _to_us(checkpoint.timestamp)
        # Sealed outside the write lock, except keys that need the seq the append will get.
        put = None
        if records is not None and not records.key_prefix_seq:
            put = self._rows(records.scope, records.items, session_id, records.user_id)

        def body(conn: sqlite3.Connection) -> AppendResult:
            row = _live(conn, session_id, self._mine)
            now = _now_us()
            row.check_fence(fence, now)
            if idempotency_key is not None:
                earlier = conn.execute(
                    f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints"
                    " WHERE session_id = ? AND idempotency_key = ?",
                    (session_id, idempotency_key),
                ).fetchone()
                if earlier is not None:
                    replay = self._checkpoint(session_id, earlier)
                    return AppendResult(replay, self._head(row), created=False)
            seq = row.checkpoint_count + 1
            conn.execute(
                _INSERT_CHECKPOINT,
                (session_id, seq, checkpoint.name, data, timestamp, idempotency_key, row.tenant),
            )
            row.checkpoint_count = seq
            row.version += 1
            row.updated_at = now
            conn.execute(
                "UPDATE sessions SET checkpoint_count = ?, version = ?, updated_at = ?"
                " WHERE session_id = ?",
                (seq, row.version, now, session_id),
            )
            stored = SessionCheckpoint(
                name=checkpoint.name, timestamp=_from_us(timestamp), data=loads(data), seq=seq
            )
            open_checkpoints(self.sealer, session_id, [stored])
            if records is not None:
                rows = put
                if rows is None:
                    rows = self._rows(
                        records.scope, records.stored_items(seq), session_id, records.user_id
                    )
                conn.executemany(
                    _PUT_RECORD_KEEP if records.keep_existing else _PUT_RECORD,
                    [(*r, now) for r in rows],
                )
            return AppendResult(stored, self._head(row), created=True)

        return await self._write(body)

    async def heartbeat(self, session_id: str, *, fence: Lease | None = None) -> AgentSession:
        def body(conn: sqlite3.Connection) -> AgentSession:
            row = _live(conn, session_id, self._mine)
            now = _now_us()
            row.check_fence(fence, now)
            row.last_heartbeat = now
            if fence is not None and row.lease_ttl_us is not None:
                row.lease_expires_at = now + row.lease_ttl_us
            row.version += 1
            row.updated_at = now
            conn.execute(
                "UPDATE sessions SET last_heartbeat = ?, lease_expires_at = ?, version = ?,"
                " updated_at = ? WHERE session_id = ?",
                (now, row.lease_expires_at, row.version, now, session_id),
            )
            return self._head(row)

        return await self._write(body)

    async def patch_context(
        self,
        session_id: str,
        changes: dict[str, Any],
        *,
        fence: Lease | None = None,
        max_bytes: int | None = None,
    ) -> AgentSession:
        def body(conn: sqlite3.Connection) -> AgentSession:
            row = _live(conn, session_id, self._mine)
            now = _now_us()
            row.check_fence(fence, now)
            current = open_value(self.sealer, loads(row.context), f"{session_id}/context")
            merged = merge_patch(current, changes)
            row.context = encode_patched(merged, max_bytes).decode()
            if self.sealer is not None:
                row.context = self._seal(merged, session_id, "context")
            conn.execute(
                "UPDATE sessions SET context = ? WHERE session_id = ?", (row.context, session_id)
            )
            _bump(conn, row, now)
            return self._head(row)

        return await self._write(body)

    async def set_state(
        self,
        session_id: str,
        state: SessionState,
        *,
        reason: str | None = None,
        fence: Lease | None = None,
    ) -> AgentSession:
        def body(conn: sqlite3.Connection) -> AgentSession:
            row = _live(conn, session_id, self._mine)
            now = _now_us()
            row.check_fence(fence, now)
            row.state.check_transition(state)
            row.state = state
            if state is SessionState.FAILED and reason is not None:
                current = open_value(self.sealer, loads(row.context), f"{session_id}/context")
                row.context = self._seal(
                    {**current, "failure_reason": reason}, session_id, "context"
                )
            if state is SessionState.DELETED:
                row.clear_lease()
            conn.execute(
                "UPDATE sessions SET state = ?, context = ?, lease_owner = ?, lease_expires_at = ?"
                " WHERE session_id = ?",
                (state.value, row.context, row.lease_owner, row.lease_expires_at, session_id),
            )
            _bump(conn, row, now)
            return self._head(row)

        return await self._write(body)

    async def delete(self, session_id: str) -> SessionRef | None:
        def body(conn: sqlite3.Connection) -> SessionRef | None:
            found = conn.execute(
                f"SELECT {_REF_COLUMNS} FROM sessions WHERE session_id = ? AND state != 'deleted'"
                + self._mine,
                (session_id,),
            ).fetchone()
            if found is None:
                return None
            ref = _ref(found)._replace(version=found[1] + 1, state=SessionState.DELETED)
            conn.execute(
                "UPDATE sessions SET state = 'deleted', lease_owner = NULL,"
                " lease_expires_at = NULL, version = ?, updated_at = ? WHERE session_id = ?",
                (ref.version, _now_us(), session_id),
            )
            return ref

        return await self._write(body)

    async def purge(
        self, *, session_id: str | None = None, user_id: str | None = None
    ) -> list[SessionRef]:
        self._require_open()
        if session_id is None and user_id is None:
            return []
        clauses, params = [], []
        if session_id is not None:
            clauses.append("session_id = ?")
            params.append(session_id)
        if user_id is not None:
            clauses.append("user_id = ?")
            params.append(user_id)
        where = " AND ".join(clauses) + self._mine
        # Purging a user alone also removes the records with that user_id (of this tenant).
        user_records: tuple[str, tuple[str, ...]] | None = None
        if session_id is None and user_id is not None:
            if self.tenant is None:
                user_records = ("DELETE FROM records WHERE user_id = ?", (user_id,))
            else:
                user_records = (
                    "DELETE FROM records WHERE user_id = ? AND tenant = ?",
                    (user_id, self.tenant),
                )
        erased = [0]

        def body(conn: sqlite3.Connection) -> list[SessionRef]:
            found = conn.execute(
                f"SELECT {_REF_COLUMNS} FROM sessions WHERE {where} ORDER BY session_id", params
            ).fetchall()
            # Checkpoints and records go with their session through ON DELETE CASCADE.
            conn.execute(f"DELETE FROM sessions WHERE {where}", params)
            if user_records is not None:
                erased[0] = conn.execute(*user_records).rowcount
            return [_ref(row) for row in found]

        return await self._purge_with(body, erased)

    async def _purge_with(
        self, body: _Body[list[SessionRef]], erased: list[int] | None = None
    ) -> list[SessionRef]:
        """Run the purge transaction ``body``; if it removed anything (sessions, or records
        it counted in ``erased[0]``), erase it from the files."""
        conn, worker = self._require_open()

        def purge_sync() -> list[SessionRef]:
            removed = self._write_sync(conn, body)
            if removed or (erased is not None and erased[0] > 0):
                self._erase_sync(conn)
            return removed

        return await self._submit(worker, purge_sync)

    def _erase_sync(self, conn: sqlite3.Connection) -> None:
        """Scrub purged content from the files once the purge has committed.

        secure_delete has zeroed the freed space in the pages the purge wrote, but older
        images of those pages may still sit in the WAL: a TRUNCATE checkpoint copies the
        zeroed pages into the database file and cuts the WAL to zero bytes. It waits (up to
        the busy timeout) for readers in other processes; if they outlast it, the WAL keeps
        the old frames until a later checkpoint overwrites them.
        """
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            logger.warning("%s: the WAL checkpoint after a purge failed: %s", self.url, exc)
            return
        if busy:
            logger.warning(
                "%s: readers kept the WAL checkpoint after a purge from completing; the WAL"
                " may still hold purged content",
                self.url,
            )

    async def describe(self, session_ids: Sequence[str]) -> list[SessionRef]:
        ids = sorted(set(session_ids))
        chunks = [ids[i : i + _IN_CHUNK] for i in range(0, len(ids), _IN_CHUNK)]

        def body(conn: sqlite3.Connection) -> list[SessionRef]:
            out: list[SessionRef] = []
            for chunk in chunks:
                marks = ", ".join("?" * len(chunk))
                out.extend(
                    _ref(row)
                    for row in conn.execute(
                        f"SELECT {_REF_COLUMNS} FROM sessions"
                        f" WHERE session_id IN ({marks}) AND state != 'deleted'{self._mine}",
                        chunk,
                    )
                )
            out.sort()
            return out

        self._require_open()
        if not ids:
            return []
        return await self._read(body, snapshot=len(chunks) > 1)

    # --- listing ---------------------------------------------------------------------------

    async def list_checkpoints(
        self, session_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[SessionCheckpoint]:
        def body(conn: sqlite3.Connection) -> list[SessionCheckpoint]:
            _live(conn, session_id, self._mine)
            return [
                self._checkpoint(session_id, cp)
                for cp in conn.execute(
                    f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints"
                    " WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (session_id, _bound(after_seq), _bound(limit)),
                )
            ]

        return await self._read(body, snapshot=True)

    async def list_sessions(
        self,
        *,
        state: SessionState | None = SessionState.ACTIVE,
        agent_type: str | None = None,
        user_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[AgentSession]:
        self._require_open()
        if state is SessionState.DELETED or limit <= 0:
            return []
        clauses = ["state != 'deleted'" if state is None else f"state = {_STATE_LITERAL[state]}"]
        params: list[Any] = []
        if agent_type is not None:
            clauses.append("agent_type = ?")
            params.append(agent_type)
        if user_id is not None:
            clauses.append("user_id = ?")
            params.append(user_id)
        if after is not None:
            clauses.append("session_id > ?")
            params.append(after)
        params.append(_bound(limit))
        # Without ANALYZE statistics the planner may prefer the all-states index on user_id or
        # agent_type and filter out every finished session; pin the partial index.
        index = ""
        tenant = "tenant_" if self.tenant else ""
        if state is SessionState.ACTIVE and user_id is not None:
            index = f" INDEXED BY sessions_{tenant}active_by_user"
        elif state is SessionState.ACTIVE and agent_type is not None:
            index = f" INDEXED BY sessions_{tenant}active_by_agent_type"
        sql = (
            f"SELECT {_HEAD_COLUMNS} FROM sessions{index} WHERE {' AND '.join(clauses)}"
            f"{self._mine} ORDER BY session_id LIMIT ?"
        )

        def body(conn: sqlite3.Connection) -> list[AgentSession]:
            return [self._head(_Row.from_db(row)) for row in conn.execute(sql, params)]

        return await self._read(body)

    # --- liveness --------------------------------------------------------------------------

    async def sweep_stale(self, max_age: timedelta, *, limit: int) -> list[SessionRef]:
        max_age_us = bound_age(max_age) // _US
        # With SQLite's JSON functions the context is amended in place and never leaves SQLite
        # (json_set keeps the stored text and appends the key, as the Python merge would).
        in_sql = self._json
        columns = "session_id, version, agent_type, user_id, tenant" + (
            "" if in_sql else ", context"
        )
        index = "sessions_tenant_stale_sweep" if self.tenant else "sessions_stale_sweep"

        def body(conn: sqlite3.Connection) -> list[SessionRef]:
            now = _now_us()
            doomed = conn.execute(
                # Pinned: the planner would rather sort every active session by heartbeat.
                f"SELECT {columns} FROM sessions INDEXED BY {index}"
                f" WHERE state = 'active' AND last_heartbeat < ?{self._mine}"
                " ORDER BY last_heartbeat LIMIT ?",
                (now - max_age_us, _bound(limit)),
            ).fetchall()
            if in_sql:
                conn.executemany(
                    "UPDATE sessions SET state = 'failed',"
                    " context = json_set(context, '$.failure_reason', 'heartbeat_timeout'),"
                    " version = ?, updated_at = ? WHERE session_id = ?",
                    [(row[1] + 1, now, row[0]) for row in doomed],
                )
            else:
                conn.executemany(
                    "UPDATE sessions SET state = 'failed', context = ?, version = ?,"
                    " updated_at = ? WHERE session_id = ?",
                    [
                        (
                            _json({**loads(row[5]), "failure_reason": "heartbeat_timeout"}),
                            row[1] + 1,
                            now,
                            row[0],
                        )
                        for row in doomed
                    ],
                )
            failed = SessionState.FAILED
            return [
                SessionRef(row[0], row[1] + 1, row[2], row[3], failed, row[4]) for row in doomed
            ]

        return await self._write(body)

    async def claim(self, session_id: str, owner: str, ttl: timedelta) -> Lease:
        ttl_us = ttl // _US

        def body(conn: sqlite3.Connection) -> Lease:
            row = _live(conn, session_id, self._mine)
            now = _now_us()
            if row.lease_is_live(now) and row.lease_owner != owner:
                raise LeaseHeld(f"session {session_id} is leased to {row.lease_owner!r}")
            token, expires = row.lease_token + 1, now + ttl_us
            conn.execute(
                "UPDATE sessions SET lease_owner = ?, lease_token = ?, lease_expires_at = ?,"
                " lease_ttl_us = ? WHERE session_id = ?",
                (owner, token, expires, ttl_us, session_id),
            )
            return Lease(session_id, owner, token, _from_us(expires))

        return await self._write(body)

    async def renew(self, lease: Lease, ttl: timedelta) -> Lease:
        ttl_us = ttl // _US

        def body(conn: sqlite3.Connection) -> Lease:
            row = _live(conn, lease.session_id, self._mine)
            now = _now_us()
            row.check_fence(lease, now)
            expires = now + ttl_us
            conn.execute(
                "UPDATE sessions SET lease_expires_at = ?, lease_ttl_us = ? WHERE session_id = ?",
                (expires, ttl_us, lease.session_id),
            )
            return replace(lease, expires_at=_from_us(expires))

        return await self._write(body)

    async def release(self, lease: Lease) -> None:
        def body(conn: sqlite3.Connection) -> None:
            row = _live(conn, lease.session_id, self._mine)
            row.check_fence(lease, _now_us())
            conn.execute(
                "UPDATE sessions SET lease_owner = NULL, lease_expires_at = NULL"
                " WHERE session_id = ?",
                (lease.session_id,),
            )

        await self._write(body)

    async def expire_leases(self, *, limit: int) -> list[Lease]:
        index = "sessions_tenant_lease_expiry" if self.tenant else "sessions_lease_expiry"

        def body(conn: sqlite3.Connection) -> list[Lease]:
            expired = conn.execute(
                "SELECT session_id, lease_owner, lease_token, lease_expires_at"
                f" FROM sessions INDEXED BY {index}"
                f" WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?{self._mine}"
                " ORDER BY lease_expires_at LIMIT ?",
                (_now_us(), _bound(limit)),
            ).fetchall()
            conn.executemany(
                "UPDATE sessions SET lease_owner = NULL, lease_expires_at = NULL"
                " WHERE session_id = ?",
                [(sid,) for sid, *_ in expired],
            )
            return [
                Lease(sid, owner, token, _from_us(expires))
                for sid, owner, token, expires in expired
            ]

        return await self._write(body)

    async def current_lease(self, session_id: str) -> Lease | None:
        def body(conn: sqlite3.Connection) -> Lease | None:
            row = _live(conn, session_id, self._mine)
            if row.lease_owner is None or row.lease_expires_at is None:
                return None
            if not row.lease_is_live(_now_us()):
                return None
            return Lease(
                session_id, row.lease_owner, row.lease_token, _from_us(row.lease_expires_at)
            )

        return await self._read(body)

    # --- tier epochs -----------------------------------------------------------------------

    async def caches_in_use(self) -> bool:
        def read(conn: sqlite3.Connection) -> bool:
            return bool(conn.execute(_CACHES_IN_USE).fetchone()[0])

        return await self._read(read)

    async def tier_epoch(self, namespace: str) -> TierEpoch:
        def read(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            found: tuple[Any, ...] | None = conn.execute(_SELECT_EPOCH, (namespace,)).fetchone()
            return found

        def create(conn: sqlite3.Connection) -> tuple[Any, ...]:
            conn.execute(_INSERT_EPOCH, (namespace,))
            found: tuple[Any, ...] = conn.execute(_SELECT_EPOCH, (namespace,)).fetchone()
            return found

        # The row almost always exists: a plain read, and a write only the first time.
        found = await self._read(read)
        if found is None:
            found = await self._write(create)
        return TierEpoch(int(found[0]), found[1])

    async def bump_tier_epoch(
        self, namespace: str | None = None, *, cache_id: str | None = None
    ) -> None:
        def body(conn: sqlite3.Connection) -> None:
            if namespace is None:
                conn.execute(
                    "UPDATE tier_epochs SET epoch = epoch + 1, cache_id = coalesce(?, cache_id)",
                    (cache_id,),
                )
                return
            conn.execute(_INSERT_EPOCH, (namespace,))
            conn.execute(
                "UPDATE tier_epochs SET epoch = epoch + 1, cache_id = coalesce(?, cache_id)"
                " WHERE namespace = ?",
                (cache_id, namespace),
            )

        await self._write(body)

    # --- data governance -------------------------------------------------------------------

    async def purge_aged(
        self,
        states: Sequence[SessionState],
        max_age: timedelta,
        *,
        limit: int,
        after: str | None = None,
    ) -> list[SessionRef]:
        self._require_open()
        wanted = sorted({state.value for state in states})
        if not wanted or limit <= 0:
            return []
        max_age_us = bound_age(max_age) // _US
        marks = ", ".join(f"'{value}'" for value in wanted)
        index = "sessions_tenant_by_state" if self.tenant else "sessions_by_state"

        def body(conn: sqlite3.Connection) -> list[SessionRef]:
            found = conn.execute(
                f"SELECT {_REF_COLUMNS} FROM sessions INDEXED BY {index}"
                f" WHERE state IN ({marks}) AND session_id > ? AND updated_at < ?{self._mine}"
                " ORDER BY session_id LIMIT ?",
                (after or "", _now_us() - max_age_us, _bound(limit)),
            ).fetchall()
            # Checkpoints and records go with their session through ON DELETE CASCADE.
            conn.executemany(
                "DELETE FROM sessions WHERE session_id = ?", [(row[0],) for row in found]
            )
            return sorted(_ref(row) for row in found)

        return await self._purge_with(body)

    async def list_user_sessions(
        self, user_id: str, *, limit: int = 100, after: str | None = None
    ) -> list[AgentSession]:
        self._require_open()
        if limit <= 0:
            return []
        index = "sessions_tenant_by_user" if self.tenant else "sessions_by_user"

        def body(conn: sqlite3.Connection) -> list[AgentSession]:
            return [
                self._head(_Row.from_db(row))
                for row in conn.execute(
                    f"SELECT {_HEAD_COLUMNS} FROM sessions INDEXED BY {index}"
                    f" WHERE user_id = ? AND session_id > ?{self._mine}"
                    " ORDER BY session_id LIMIT ?",
                    (user_id, after or "", _bound(limit)),
                )
            ]

        return await self._read(body)

    async def list_trail(
        self, session_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[SessionCheckpoint]:
        def body(conn: sqlite3.Connection) -> list[SessionCheckpoint]:
            return [
                self._checkpoint(session_id, cp)
                for cp in conn.execute(
                    f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints"
                    f" WHERE session_id = ? AND seq > ?{self._mine} ORDER BY seq LIMIT ?",
                    (session_id, _bound(after_seq), _bound(limit)),
                )
            ]

        return await self._read(body)

    async def retention_policies(self, namespace: str | None = None) -> list[RetentionPolicy]:
        # Each tenant has its own policies; an untenanted store the tenant '' ones.
        where, params = " WHERE tenant = ?", [self.tenant or ""]
        if namespace is not None:
            where += " AND namespace = ?"
            params.append(namespace)

        def body(conn: sqlite3.Connection) -> list[RetentionPolicy]:
            return [
                RetentionPolicy(name, deleted, terminal, _from_us(updated_at), updated_by)
                for name, deleted, terminal, updated_at, updated_by in conn.execute(
                    "SELECT namespace, deleted_days, terminal_days, updated_at, updated_by"
                    f" FROM retention_policies{where} ORDER BY namespace",
                    params,
                )
            ]

        return await self._read(body)

    async def set_retention_policy(
        self,
        namespace: str,
        *,
        deleted_days: int | None,
        terminal_days: int | None,
        actor: str,
    ) -> RetentionPolicy:
        def body(conn: sqlite3.Connection) -> RetentionPolicy:
            now = _now_us()
            conn.execute(
                "INSERT OR REPLACE INTO retention_policies"
                " (tenant, namespace, deleted_days, terminal_days, updated_at, updated_by)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (self.tenant or "", namespace, deleted_days, terminal_days, now, actor),
            )
            return RetentionPolicy(namespace, deleted_days, terminal_days, _from_us(now), actor)

        return await self._write(body)

    async def append_audit(
        self,
        *,
        actor: str,
        action: str,
        namespace: str,
        user_id: str | None,
        session_count: int,
        details: dict[str, Any],
    ) -> AuditRecord:
        text = _json(details)

        def body(conn: sqlite3.Connection) -> AuditRecord:
            now = _now_us()
            cursor = conn.execute(
                "INSERT INTO audit_log"
                " (at, actor, action, namespace, user_id, session_count, details, tenant)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (now, actor, action, namespace, user_id, session_count, text, self.tenant or ""),
            )
            record_id = int(cursor.lastrowid or 0)
            return AuditRecord(
                record_id,
                _from_us(now),
                actor,
                action,
                namespace,
                user_id,
                session_count,
                loads(text),
                self.tenant or "",
            )

        return await self._write(body)

    async def list_audit(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[AuditRecord]:
        clauses = ["id > ?"]
        params: list[Any] = [_bound(after_id)]
        if user_id is not None:
            clauses.append("user_id = ?")
            params.append(user_id)
        if action is not None:
            clauses.append("action = ?")
            params.append(action)
        if self.tenant is not None:
            clauses.append("tenant = ?")
            params.append(self.tenant)
        params.append(_bound(limit))
        sql = (
            "SELECT id, at, actor, action, namespace, user_id, session_count, details, tenant"
            f" FROM audit_log WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?"
        )

        def body(conn: sqlite3.Connection) -> list[AuditRecord]:
            return [
                AuditRecord(rid, _from_us(at), actor, act, ns, uid, count, loads(details), tenant)
                for rid, at, actor, act, ns, uid, count, details, tenant in conn.execute(
                    sql, params
                )
            ]

        return await self._read(body)

    # --- records ---------------------------------------------------------------------------

    def _record_tenant(self) -> str:
        return self.tenant or ""

    def _open_record(self, tenant: str, scope: str, key: str, value: bytes, sealed: int) -> bytes:
        return open_record(self.sealer, bytes(value), bool(sealed), tenant, scope, key)

    def _rows(
        self,
        scope: str,
        items: Sequence[tuple[str, bytes]],
        session_id: str | None,
        user_id: str | None,
    ) -> list[tuple[Any, ...]]:
        """The ``records`` rows of ``items`` but their ``updated_at``, values sealed."""
        tenant = self._record_tenant()
        sealer = self.sealer
        sealed = int(sealer is not None)
        return [
            (
                tenant,
                scope,
                key,
                seal_record(sealer, value, tenant, scope, key),
                sealed,
                session_id,
                user_id,
            )
            for key, value in items
        ]

    async def put_records(
        self,
        scope: str,
        items: Sequence[tuple[str, bytes]],
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        keep_existing: bool = False,
    ) -> int:
        self._require_open()
        rows = self._rows(scope, items, session_id, user_id)
        sql = _PUT_RECORD_KEEP if keep_existing else _PUT_RECORD

        def body(conn: sqlite3.Connection) -> int:
            # BEGIN IMMEDIATE holds the write lock: the session stays live until the commit.
            if session_id is not None:
                _live(conn, session_id, self._mine)
            now = _now_us()
            cursor = conn.executemany(sql, [(*row, now) for row in rows])
            return max(cursor.rowcount, 0)

        return await self._write(body)

    async def get_records(self, scope: str, keys: Sequence[str]) -> dict[str, bytes]:
        self._require_open()
        tenant = self._record_tenant()
        wanted = sorted(set(keys))
        chunks = [wanted[i : i + _IN_CHUNK] for i in range(0, len(wanted), _IN_CHUNK)]

        def body(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            found: list[tuple[Any, ...]] = []
            for chunk in chunks:
                marks = ", ".join("?" * len(chunk))
                found.extend(
                    conn.execute(
                        "SELECT key, value, sealed FROM records"
                        f" WHERE tenant = ? AND scope = ? AND key IN ({marks})",
                        (tenant, scope, *chunk),
                    )
                )
            return found

        if not chunks:
            return {}
        found = await self._read(body, snapshot=len(chunks) > 1)
        return {
            key: self._open_record(tenant, scope, key, value, sealed)
            for key, value, sealed in found
        }

    async def list_records(
        self,
        scope: str,
        *,
        prefix: str = "",
        after: str | None = None,
        before: str | None = None,
        limit: int = 1000,
        descending: bool = False,
    ) -> list[tuple[str, bytes]]:
        self._require_open()
        if limit <= 0:
            return []
        tenant = self._record_tenant()
        where, params = _key_range(prefix, after, before)
        order = "DESC" if descending else "ASC"
        sql = (
            "SELECT key, value, sealed FROM records WHERE tenant = ? AND scope = ?"
            f"{where} ORDER BY key {order} LIMIT ?"
        )
        args = (tenant, scope, *params, _bound(limit))

        def body(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(sql, args).fetchall()

        found = await self._read(body)
        return [
            (key, self._open_record(tenant, scope, key, value, sealed))
            for key, value, sealed in found
        ]

    async def delete_records(
        self,
        scope: str,
        *,
        keys: Sequence[str] | None = None,
        prefix: str | None = None,
    ) -> int:
        self._require_open()
        tenant = self._record_tenant()

        def body(conn: sqlite3.Connection) -> int:
            if keys is not None:
                cursor = conn.executemany(
                    "DELETE FROM records WHERE tenant = ? AND scope = ? AND key = ?",
                    [(tenant, scope, key) for key in dict.fromkeys(keys)],
                )
            else:
                where, params = _key_range(prefix or "", None, None)
                cursor = conn.execute(
                    f"DELETE FROM records WHERE tenant = ? AND scope = ?{where}",
                    (tenant, scope, *params),
                )
            return max(cursor.rowcount, 0)

        if keys is not None and not keys:
            return 0
        return await self._write(body)

    async def list_scopes(
        self, prefix: str, *, limit: int = 1000, after: str | None = None
    ) -> list[str]:
        self._require_open()
        if limit <= 0:
            return []
        tenant = self._record_tenant()
        end = prefix_end(prefix)
        # One index probe per scope (a skip scan): the next scope after the last one found.
        first = (
            "SELECT scope FROM records WHERE tenant = ? AND scope >= ?"
            + ("" if after is None else " AND scope > ?")
            + ("" if end is None else " AND scope < ?")
            + " ORDER BY scope LIMIT 1"
        )
        step = (
            "SELECT scope FROM records WHERE tenant = ? AND scope > ?"
            + ("" if end is None else " AND scope < ?")
            + " ORDER BY scope LIMIT 1"
        )
        tail = () if end is None else (end,)
        head = (tenant, prefix, *(() if after is None else (after,)), *tail)

        def body(conn: sqlite3.Connection) -> list[str]:
            found = conn.execute(first, head).fetchone()
            out: list[str] = []
            while found is not None:
                out.append(found[0])
                if len(out) >= limit:
                    break
                found = conn.execute(step, (tenant, found[0], *tail)).fetchone()
            return out

        return await self._read(body, snapshot=True)

    def _stored_records(self, found: list[tuple[Any, ...]]) -> list[StoredRecord]:
        return [
            StoredRecord(
                tenant,
                scope,
                key,
                self._open_record(tenant, scope, key, value, sealed),
                session_id,
                user_id,
            )
            for tenant, scope, key, value, sealed, session_id, user_id in found
        ]

    async def _export_records(
        self, where: str, params: tuple[Any, ...], limit: int, after: tuple[str, str, str] | None
    ) -> list[StoredRecord]:
        self._require_open()
        if limit <= 0:
            return []
        clauses = [where]
        args: list[Any] = list(params)
        if self.tenant is not None:
            clauses.append("r.tenant = ?")
            args.append(self.tenant)
        if after is not None:
            clauses.append("(r.tenant, r.scope, r.key) > (?, ?, ?)")
            args.extend(after)
        sql = (
            "SELECT r.tenant, r.scope, r.key, r.value, r.sealed, r.session_id, r.user_id"
            f" FROM records AS r WHERE {' AND '.join(clauses)}"
            " ORDER BY r.tenant, r.scope, r.key LIMIT ?"
        )
        args.append(_bound(limit))

        def body(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(sql, args).fetchall()

        return self._stored_records(await self._read(body))

    async def list_session_records(
        self, session_id: str, *, limit: int = 100, after: tuple[str, str, str] | None = None
    ) -> list[StoredRecord]:
        return await self._export_records("r.session_id = ?", (session_id,), limit, after)

    async def list_user_records(
        self, user_id: str, *, limit: int = 100, after: tuple[str, str, str] | None = None
    ) -> list[StoredRecord]:
        return await self._export_records(
            "r.user_id = ? AND NOT EXISTS (SELECT 1 FROM sessions AS s"
            " WHERE s.session_id = r.session_id AND s.user_id = r.user_id)",
            (user_id,),
            limit,
            after,
        )
