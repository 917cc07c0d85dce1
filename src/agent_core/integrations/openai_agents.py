"""agent-core as the session store of the OpenAI Agents SDK (``agent-core[openai-agents]``).

``AgentCoreSession`` implements the SDK's ``Session`` protocol. One SDK session is one
agent-core session: its id is ``ids.session_id_for("openai-agents", sdk_id, tenant=...)``, it is
created on the first ``add_items`` (agent type ``"openai-agents"``, the SDK's id in its
metadata), so the CLI, leases, events and the dashboard show it like any other session.

Where things live:

* each conversation item is a record in the scope
  ``openai-agents:<session id>``, attached to the session (``purge`` erases them) and to its
  user (``export`` lists them). The value is the item's JSON exactly as ``SQLiteSession`` writes
  it (``json.dumps``), so an item reads back equal, key order and float bits included;
* each ``add_items`` appends one trail checkpoint, ``openai.items_added`` (how many items and
  their roles or types). Its dense ``seq``, handed out by the store, is also the key prefix of
  the items it added (``<seq:016d>.<index:06d>``): keys sort in insertion order across every
  process, without a counter of our own. The checkpoint and its items are written in one
  transaction (``append_checkpoint(..., records=RecordWrite(..., key_prefix_seq=True))``, one
  statement on PostgreSQL): a call stores all of them or none;
* ``pop_item`` reads the last key and deletes exactly that key; of concurrent pops only the
  one whose delete counted the row returns it, the others try the next item, so each item is
  popped once. It leaves ``openai.item_popped`` in the trail;
* ``clear_session`` deletes the items and leaves ``openai.session_cleared`` in the trail. The
  agent-core session and its trail stay: clearing a conversation is not erasing a person's
  data, which is ``manager.purge(session_id=...)`` (items included).

Event loops. The SDK calls a session from whatever loop runs the agent, and
``Runner.run_sync`` runs one per thread. Every call runs on the session's *home* loop: for
``AgentCoreSession.from_url`` a private loop in a daemon thread that owns the manager (so any
loop, any thread, ``asyncio.run`` after ``asyncio.run``, works, and ``close()`` may be called
from sync code; the ``from_url`` sessions of the same URLs share that manager and thread);
for ``AgentCoreSession(session_id, manager)`` the loop it is first used on (the manager's,
since PostgreSQL pools and Valkey clients belong to one loop). A call from another loop is
handed to the home loop, which must then be running (for instance the application's main
loop while a worker thread calls ``Runner.run_sync``); else ``ConfigurationError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from agent_core.errors import (
    AgentCoreError,
    ConfigurationError,
    ConflictError,
    InvalidValue,
    MissingDependency,
    NotOpenError,
    PayloadTooLarge,
    SessionNotFound,
    ValidationError,
)
from agent_core.integrations.ids import session_id_for
from agent_core.integrations.loop_thread import LoopThread
from agent_core.sessions.session_manager import SessionManager
from agent_core.stores.base import RecordWrite

try:
    from agents.memory import SessionSettings
    from agents.memory.session_settings import coerce_session_settings
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependency(
        "agent_core.integrations.openai_agents needs the OpenAI Agents SDK: "
        "pip install 'agent-core[openai-agents]'"
    ) from exc

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

__all__ = [
    "FRAMEWORK",
    "HEARTBEAT_EVERY",
    "ITEMS_ADDED",
    "ITEM_POPPED",
    "SESSION_CLEARED",
    "AgentCoreSession",
    "items_scope",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

FRAMEWORK = "openai-agents"
"""The framework name in session ids, scopes and metadata."""

# The names of the trail entries the adapter appends.
ITEMS_ADDED = "openai.items_added"
ITEM_POPPED = "openai.item_popped"
SESSION_CLEARED = "openai.session_cleared"

_PAGE = 10_000  # the most items or keys one records call takes
_MAX_INDEX = 999_999  # six digits of index under one seq
_JSON_ONLY = "j"  # key suffix of an item that only json.loads reads back exactly (_encode)
_TRAIL_KINDS = 16  # roles listed in one trail entry; the count says how many there were
# add_items heartbeats the session at most this often (seconds), so a conversation in use stays
# alive to the stale sweep and the dashboard without a heartbeat per call.
HEARTBEAT_EVERY = 60.0


def items_scope(agent_core_session_id: str) -> str:
    """The records scope that holds a session's items."""
    return f"{FRAMEWORK}:{agent_core_session_id}"


def _kind(item: Any) -> str:
    if isinstance(item, dict):
        kind = item.get("role") or item.get("type")
        if isinstance(kind, str):
            return kind[:64]
    return "?"


def _encode(item: Any) -> tuple[bytes, bool]:
    """The item's JSON and whether only ``json.loads`` reads it back exactly.

    The JSON is ``json.dumps``'s, as SQLiteSession stores items: key order, float repr, NaN,
    big integers all survive ``json.loads``, so the item reads back equal to what SQLiteSession
    returns. orjson reads such text several times faster and the same, except an integer
    beyond 64 bits (read as a float) and what it refuses (NaN, Infinity, lone surrogates);
    an item orjson cannot write holds one of those, and is marked for ``json.loads``.
    """
    try:
        text = json.dumps(item, separators=(",", ":")).encode("ascii")
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidValue(f"an item is not JSON: {exc}") from exc
    try:
        orjson.dumps(item)
    except (orjson.JSONEncodeError, TypeError):
        return text, True
    return text, False


def _decode(value: bytes, json_only: bool) -> Any:
    """The item, or ``None`` for a value that is not JSON (skipped, as SQLiteSession does)."""
    if not json_only:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            pass  # not ours (written around the adapter): json.loads decides
    try:
        return json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


async def _settle(awaitable: Awaitable[T]) -> T:
    """Await a mutation to its outcome even if the caller is cancelled meanwhile, then let the
    cancellation through: a cancelled ``add_items`` has either written or not, never "maybe
    still writing" (the SDK's own sessions behave so)."""
    task = asyncio.ensure_future(awaitable)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    try:
        result = task.result()
    except BaseException:
        if cancelled is not None:
            raise cancelled from None
        raise
    if cancelled is not None:
        raise cancelled
    return result


class _Host:
    """A manager on its private loop thread, shared by the ``from_url`` sessions of one
    process built from the same URLs and options, and closed with the last of them."""

    def __init__(self, key: str | None, manager: SessionManager) -> None:
        self.key = key
        self.manager = manager
        self.thread = LoopThread("agent-core-openai-agents")
        self.users = 0


_HOSTS: dict[str, _Host] = {}
_HOSTS_LOCK = threading.Lock()


def _acquire_host(store_url: str, cache_url: str | None, options: dict[str, Any]) -> _Host:
    # A memory:// store lives in its manager: each session gets its own, as each
    # SQLiteSession(":memory:") has its own database.
    key = None
    if not store_url.startswith("memory:"):
        key = repr((store_url, cache_url, sorted(options.items())))
    with _HOSTS_LOCK:
        host = None if key is None else _HOSTS.get(key)
        if host is None:
            host = _Host(key, SessionManager.from_url(store_url, cache_url=cache_url, **options))
            if key is not None:
                _HOSTS[key] = host
        host.users += 1
        return host


def _release_host(host: _Host) -> None:
    """One session less (``close()``, ``aclose()`` or the finalizer of a dropped session); the
    last one closes the manager on its loop, then stops the loop."""
    with _HOSTS_LOCK:
        host.users -= 1
        if host.users > 0:
            return
        if host.key is not None and _HOSTS.get(host.key) is host:
            del _HOSTS[host.key]
    thread = host.thread
    if not thread.in_thread() and not thread.loop.is_closed():
        try:
            thread.run(host.manager.close(), timeout=30)
        except (AgentCoreError, OSError, concurrent.futures.TimeoutError) as exc:
            logger.warning("closing the sessions' manager failed: %s", exc)
    thread.stop()


class AgentCoreSession:
    """An OpenAI Agents SDK session kept in agent-core (the SDK's ``Session`` protocol).

    ``session_id`` is the SDK's id (any string); ``agent_core_session_id`` is the agent-core
    session that holds it. ``manager`` is used, not owned: ``close()`` leaves it open. Use
    ``from_url`` for a session that brings its own manager (and event loop thread).

    ``session_settings.limit`` is the default ``limit`` of ``get_items``, as in
    ``SQLiteSession``; ``agent_type`` and ``user_id`` label the agent-core session when the
    first ``add_items`` creates it (``user_id`` also goes on every item, so
    ``purge(user_id=...)`` and ``export`` cover them).
    """

    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        manager: SessionManager,
        *,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        agent_type: str = FRAMEWORK,
        user_id: str = "",
    ) -> None:
        if not isinstance(session_id, str):
            raise ValidationError(f"session_id must be a string, not {type(session_id).__name__}")
        self.session_id = session_id
        self.session_settings = (
            SessionSettings()
            if session_settings is None
            else coerce_session_settings(session_settings)
        )
        self.agent_type = agent_type
        self.user_id = user_id
        self._manager = manager
        self.agent_core_session_id = session_id_for(
            FRAMEWORK, session_id, tenant=getattr(manager, "tenant", None)
        )
        self._scope = items_scope(self.agent_core_session_id)
        self._closed = False
        self._beat_at = -HEARTBEAT_EVERY  # monotonic time of this object's last heartbeat
        self._owned: weakref.finalize[Any, AgentCoreSession] | None = None
        try:
            self._home: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._home = None

    @classmethod
    def from_url(
        cls,
        session_id: str,
        store_url: str,
        cache_url: str | None = None,
        *,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        agent_type: str = FRAMEWORK,
        user_id: str = "",
        **options: Any,
    ) -> AgentCoreSession:
        """A session on a manager of its own, ``SessionManager.from_url(store_url,
        cache_url=cache_url, **options)``, that runs on a private event loop thread: callable
        from any loop and thread (``Runner.run_sync``, ``asyncio.run`` per call).

        The ``from_url`` sessions of one process with the same URLs and options share that
        manager (one pool, one thread), which the last of them closes: ``close()``,
        ``aclose()`` or garbage collection. ``memory://`` is never shared.

        ``local_cache`` defaults to ``False``: the adapter reads no session through the
        in-process tier (items are records, which no tier holds), so it would only cost time.
        """
        options.setdefault("local_cache", False)
        host = _acquire_host(store_url, cache_url, options)
        try:
            session = cls(
                session_id,
                host.manager,
                session_settings=session_settings,
                agent_type=agent_type,
                user_id=user_id,
            )
        except BaseException:
            _release_host(host)
            raise
        session._home = host.thread.loop
        session._owned = weakref.finalize(session, _release_host, host)
        return session

    @property
    def manager(self) -> SessionManager:
        return self._manager

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop using the session; a ``from_url`` manager is closed by its last session."""
        self._closed = True
        if self._owned is not None:
            self._owned()

    async def aclose(self) -> None:
        """``close()`` without blocking the running loop."""
        self._closed = True
        if self._owned is not None:
            await asyncio.to_thread(self._owned)

    async def __aenter__(self) -> AgentCoreSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- the Session protocol ----------------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The latest ``limit`` items (default ``session_settings.limit``; ``None`` or a
        negative limit: all of them) in chronological order."""
        if limit is None and self.session_settings is not None:
            limit = self.session_settings.limit
        if limit is not None and not isinstance(limit, int):
            raise ValidationError(f"limit must be an int or None, not {limit!r}")
        if limit == 0:
            self._check_open()
            return []
        if limit is None or limit < 0:
            return await self._on_home(self._all_items)
        wanted = limit
        return await self._on_home(lambda: self._latest_items(wanted))

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` in order, in one trail checkpoint (``openai.items_added``)."""
        self._check_open()
        if not items:
            return
        if len(items) > _MAX_INDEX + 1:
            raise ValidationError(f"at most {_MAX_INDEX + 1} items per add_items call")
        limit = self._manager.max_payload_bytes
        values = []
        for item in items:
            value, json_only = _encode(item)
            if len(value) > limit:
                raise PayloadTooLarge(f"an item is {len(value)} bytes, over the limit of {limit}")
            values.append((value, json_only))
        kinds = [_kind(item) for item in items[:_TRAIL_KINDS]]
        await _settle(self._on_home(lambda: self._add(values, kinds)))

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the latest item (``None`` when there is none); atomic: of
        concurrent pops, each item goes to exactly one."""
        item: TResponseInputItem | None = await _settle(self._on_home(self._pop))
        return item

    async def clear_session(self) -> None:
        """Delete every item; the agent-core session and its trail stay (see the module)."""
        await _settle(self._on_home(self._clear))

    # --- on the home loop --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise NotOpenError("AgentCoreSession is closed")

    async def _on_home(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``make()`` on the home loop: here when this is it, else handed over to it."""
        self._check_open()
        loop = asyncio.get_running_loop()
        home = self._home
        if home is None:
            self._home = home = loop
        if home is loop:
            return await make()
        if home.is_closed() or not home.is_running():
            raise ConfigurationError(
                "this AgentCoreSession's manager belongs to an event loop that is no longer "
                "running; use AgentCoreSession.from_url(...) (it keeps its own loop thread) to "
                "call it from new event loops such as Runner.run_sync's"
            )
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(make(), home))

    async def _all_items(self) -> list[TResponseInputItem]:
        items: list[TResponseInputItem] = []
        after: str | None = None
        while True:
            page = await self._manager.list_records(self._scope, after=after, limit=_PAGE)
            for key, value in page:
                item = _decode(value, key.endswith(_JSON_ONLY))
                if item is not None:
                    items.append(item)
            if len(page) < _PAGE:
                return items
            after = page[-1][0]

    async def _latest_items(self, limit: int) -> list[TResponseInputItem]:
        newest_first: list[TResponseInputItem] = []
        before: str | None = None
        while len(newest_first) < limit:
            page_size = min(limit - len(newest_first), _PAGE)
            page = await self._manager.list_records(
                self._scope, before=before, limit=page_size, descending=True
            )
            for key, value in page:
                item = _decode(value, key.endswith(_JSON_ONLY))
                if item is not None:  # undecodable rows do not count against the limit
                    newest_first.append(item)
            if len(page) < page_size:
                break
            before = page[-1][0]
        newest_first.reverse()
        return newest_first

    async def _add(self, values: list[tuple[bytes, bool]], kinds: list[str]) -> None:
        manager, sid = self._manager, self.agent_core_session_id
        data = {"count": len(values), "kinds": kinds}
        # Each key is "<seq:016d>.<index:06d>" under the seq of this call's trail checkpoint.
        suffixes = [
            (f".{index:06d}{_JSON_ONLY if json_only else ''}", value)
            for index, (value, json_only) in enumerate(values)
        ]
        # Up to a page, the items go with their checkpoint: one transaction, one round trip,
        # the store prefixing the keys with the seq it hands out.
        write = None
        if len(suffixes) <= _PAGE:
            write = RecordWrite(
                self._scope, suffixes, user_id=self.user_id or None, key_prefix_seq=True
            )
        try:
            checkpoint = await manager.append_checkpoint(sid, ITEMS_ADDED, data, records=write)
        except SessionNotFound:
            await self._create()
            checkpoint = await manager.append_checkpoint(sid, ITEMS_ADDED, data, records=write)
            self._beat_at = time.monotonic()  # a new session starts with a heartbeat
        if write is None:
            records = [(f"{checkpoint.seq:016d}{key}", value) for key, value in suffixes]
            for start in range(0, len(records), _PAGE):
                await manager.put_records(
                    self._scope,
                    records[start : start + _PAGE],
                    session_id=sid,
                    user_id=self.user_id or None,
                )
        now = time.monotonic()
        if now - self._beat_at >= HEARTBEAT_EVERY:
            # The items are in: a failed heartbeat must not make the caller add them again.
            try:
                await manager.heartbeat(sid)
            except AgentCoreError as exc:
                logger.warning("heartbeat of session %s failed: %s", sid, exc)
            else:
                self._beat_at = now

    async def _create(self) -> None:
        # ConflictError: another process created it first (or it was deleted, and the append
        # that follows says so).
        with contextlib.suppress(ConflictError):
            await self._manager.create_session(
                self.agent_type,
                self.user_id,
                metadata={"framework": FRAMEWORK, "external_id": self.session_id},
                session_id=self.agent_core_session_id,
            )

    async def _pop(self) -> TResponseInputItem | None:
        manager = self._manager
        while True:
            last = await manager.list_records(self._scope, limit=1, descending=True)
            if not last:
                return None
            key, value = last[0]
            if await manager.delete_records(self._scope, keys=[key]) != 1:
                continue  # a concurrent pop took it: try the new last item
            item = _decode(value, key.endswith(_JSON_ONLY))
            if item is None:
                continue  # an undecodable row is dropped, as SQLiteSession does
            await self._trail(ITEM_POPPED, {"key": key, "kind": _kind(item)})
            popped: TResponseInputItem = item
            return popped

    async def _clear(self) -> None:
        count = await self._manager.delete_records(self._scope)
        if count:
            await self._trail(SESSION_CLEARED, {"count": count})

    async def _trail(self, name: str, data: dict[str, Any]) -> None:
        # After the change committed: a failed trail entry must not turn a done pop or clear
        # into an error the caller would retry (popping a second item).
        try:
            await self._manager.append_checkpoint(self.agent_core_session_id, name, data)
        except SessionNotFound:
            pass
        except AgentCoreError as exc:
            logger.warning(
                "%s of session %s is done but its trail entry failed: %s",
                name,
                self.agent_core_session_id,
                exc,
            )

    def __repr__(self) -> str:
        return (
            f"AgentCoreSession(session_id={self.session_id!r}, "
            f"agent_core_session_id={self.agent_core_session_id!r})"
        )
