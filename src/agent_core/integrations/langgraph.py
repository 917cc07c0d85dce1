"""LangGraph checkpointer on agent-core: ``AgentCoreSaver``.

A LangGraph thread is one agent-core session (its id derived from the thread id with
``integrations.ids.session_id_for``, the thread id in the session's metadata), so leases, events,
the CLI and the dashboard show a graph run like any other session, and each saved checkpoint
appends a short ``langgraph.step`` checkpoint to the session's trail, in the transaction that
stores the checkpoint's records (``append_checkpoint(..., records=RecordWrite(...))``: one
round trip on PostgreSQL).

What the session model lacks is kept as records (``SessionManager.put_records``), attached to
the thread's session so ``purge`` erases them. One scope per ``(thread, checkpoint_ns)``:

* ``c:<checkpoint_id>``: the checkpoint (without its channel values), its metadata and parent;
* ``c:<checkpoint_id>\\x01<task_id>\\x01<idx>``: a pending write, right after its checkpoint
  in key order, so the latest checkpoint and its writes come back in one descending read;
* ``b:<channel>\\x01<version>``: a channel value, serialized once per (channel, version).

and one scope per run id, ``langgraph-run:<run_id>``, whose keys name the thread scopes the run
wrote checkpoints to (for ``delete_for_runs``).

Checkpoint ids are uuid6 strings: their code point order is their time order, which is the
order ``list`` returns (newest first) and what ``before=`` compares.

The manager is asyncio-bound (its pools and connections belong to the loop that opened them).
The saver remembers that *home* loop: the loop it was built in, the first loop that awaits it,
or a private loop thread it starts when a synchronous call (``graph.invoke``) comes first. A
call from any other thread or loop is handed to the home loop; a synchronous call from inside the
home loop would block the loop that must serve it, so it raises ``ConfigurationError`` (use the
``a``-methods there, or ``asyncio.to_thread(graph.invoke, ...)``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import random
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import ormsgpack
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from agent_core.errors import ConfigurationError, ConflictError, SessionNotFound
from agent_core.integrations.ids import session_id_for
from agent_core.integrations.loop_thread import LoopThread
from agent_core.sessions.session_manager import SessionManager
from agent_core.stores.base import RecordWrite

__all__ = ["PRUNE_STRATEGIES", "AgentCoreSaver"]

T = TypeVar("T")

FRAMEWORK = "langgraph"
THREAD_SCOPE = "langgraph:"  # + session id + "/" + checkpoint_ns
RUN_SCOPE = "langgraph-run:"  # + run id
THREAD_ID_KEY = "langgraph_thread_id"  # in the session's metadata
TRAIL_STEP = "langgraph.step"

# "delete_all" is the name some LangGraph releases and docs use for "delete".
PRUNE_STRATEGIES = ("keep_latest", "delete", "delete_all")

_SEP = "\x01"  # the lowest character a record key may hold: sorts before any id character
_PAGE = 512
_RECORD_FORMAT = 1
_EMPTY = b"empty\x00"
_KNOWN_RUNS = 4096  # how many (run, scope) pairs a saver remembers having indexed


# --- record layout -------------------------------------------------------------------------


def _thread_scope(session_id: str, checkpoint_ns: str) -> str:
    return f"{THREAD_SCOPE}{session_id}/{checkpoint_ns}"


def _scope_session(scope: str) -> str:
    """The session id of a thread scope (session ids have a fixed length)."""
    return scope[len(THREAD_SCOPE) : len(THREAD_SCOPE) + 36]


def _scope_ns(scope: str) -> str:
    """The checkpoint namespace of a thread scope."""
    return scope[len(THREAD_SCOPE) + 37 :]


def _checkpoint_key(checkpoint_id: str) -> str:
    return f"c:{checkpoint_id}"


def _write_key(checkpoint_id: str, task_id: str, idx: int) -> str:
    return f"c:{checkpoint_id}{_SEP}{task_id}{_SEP}{idx}"


def _blob_key(channel: str, version: str | int | float) -> str:
    return f"b:{channel}{_SEP}{version}"


def _encode_blob(typed: tuple[str, bytes]) -> bytes:
    return typed[0].encode() + b"\x00" + typed[1]


def _decode_blob(value: bytes) -> tuple[str, bytes]:
    kind, _, data = value.partition(b"\x00")
    return kind.decode(), data


class _Stored:
    """A checkpoint record, decoded lazily: metadata first (for filters), the rest on demand."""

    __slots__ = ("_checkpoint", "_raw", "checkpoint_id", "parent_id", "writes")

    def __init__(self, checkpoint_id: str, value: bytes) -> None:
        self.checkpoint_id = checkpoint_id
        self._raw: list[Any] = ormsgpack.unpackb(value)
        self._checkpoint: dict[str, Any] | None = None
        self.parent_id: str | None = self._raw[1]
        self.writes: list[bytes] = []

    def metadata(self, serde: SerializerProtocol) -> CheckpointMetadata:
        return cast(CheckpointMetadata, serde.loads_typed((self._raw[4], self._raw[5])))

    def checkpoint(self, serde: SerializerProtocol) -> dict[str, Any]:
        """The checkpoint without its channel values (decoded once; the caller may fill in
        ``channel_values``)."""
        if self._checkpoint is None:
            self._checkpoint = cast(dict[str, Any], serde.loads_typed((self._raw[2], self._raw[3])))
        return self._checkpoint

    def with_parent(self, parent_id: str | None) -> bytes:
        raw = list(self._raw)
        raw[1] = parent_id
        return ormsgpack.packb(raw)


def _pack_checkpoint(
    parent_id: str | None, checkpoint: tuple[str, bytes], metadata: tuple[str, bytes]
) -> bytes:
    return ormsgpack.packb(
        [_RECORD_FORMAT, parent_id, checkpoint[0], checkpoint[1], metadata[0], metadata[1]]
    )


def _group(rows: Sequence[tuple[str, bytes]]) -> tuple[list[_Stored], dict[str, list[bytes]]]:
    """Split ``c:`` rows into checkpoints (in the rows' order) and writes by checkpoint id."""
    stored: list[_Stored] = []
    writes: dict[str, list[bytes]] = {}
    for key, value in rows:
        checkpoint_id, sep, _ = key[2:].partition(_SEP)
        if sep:
            writes.setdefault(checkpoint_id, []).append(value)
        else:
            stored.append(_Stored(checkpoint_id, value))
    return stored, writes


@functools.lru_cache(maxsize=65536)
def _session_for(tenant: str | None, thread_id: str) -> str:
    return session_id_for(FRAMEWORK, thread_id, tenant=tenant)


# --- the saver ------------------------------------------------------------------------------


class AgentCoreSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer that keeps each thread as one agent-core session.

    ``AgentCoreSaver(manager)`` uses a manager you opened and will close;
    ``AgentCoreSaver.from_url(store_url, cache_url=None, ...)`` builds and owns one (use it as
    ``async with`` in async code, as ``with`` in synchronous code). Both the async API
    (``graph.ainvoke``) and the sync API (``graph.invoke``) work; see the module docstring for
    which loop serves which call.

    ``serde`` is LangGraph's serializer protocol (default ``JsonPlusSerializer``, which honours
    ``LANGGRAPH_STRICT_MSGPACK`` and ``with_allowlist``). ``trail=False`` leaves the session's
    trail alone (no ``langgraph.step`` checkpoint per put).
    """

    def __init__(
        self,
        manager: SessionManager,
        *,
        serde: SerializerProtocol | None = None,
        agent_type: str = FRAMEWORK,
        trail: bool = True,
    ) -> None:
        super().__init__(serde=serde)
        self.manager = manager
        self.agent_type = agent_type
        self.trail = trail
        self._owns_manager = False
        self._private: LoopThread | None = None
        self._home_lock = threading.Lock()
        try:
            self._home: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._home = None
        self._indexed_runs: dict[tuple[str, str], None] = {}

    @classmethod
    def from_url(
        cls,
        store_url: str,
        cache_url: str | None = None,
        *,
        serde: SerializerProtocol | None = None,
        agent_type: str = FRAMEWORK,
        trail: bool = True,
        **manager_options: Any,
    ) -> AgentCoreSaver:
        """A saver with its own ``SessionManager.from_url(store_url, cache_url=..., ...)``,
        opened by ``async with``/``with`` (or the first call) and closed by leaving it (or
        ``close()``/``aclose()``)."""
        manager = SessionManager.from_url(store_url, cache_url=cache_url, **manager_options)
        saver = cls(manager, serde=serde, agent_type=agent_type, trail=trail)
        saver._owns_manager = True
        return saver

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._run(self.manager.open())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __enter__(self) -> Self:
        self._call(self.manager.open())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def aclose(self) -> None:
        """Close the manager if the saver built it; stop the private loop if it started one."""
        if self._owns_manager:
            await self._run(self.manager.close())
        self._stop_private()

    def close(self) -> None:
        """Synchronous ``aclose``. A manager the saver opened on its private loop is closed
        there, since no other loop can (whoever built it)."""
        if self._owns_manager or self._private is not None:
            self._call(self.manager.close())
        self._stop_private()

    def _stop_private(self) -> None:
        with self._home_lock:
            private, self._private = self._private, None
            if private is not None and self._home is private.loop:
                self._home = None
        if private is not None:
            private.stop()

    def _at_home(self) -> bool:
        """Whether the running loop is the home loop (binding it as home if none is yet)."""
        loop = asyncio.get_running_loop()
        if self._home is None:
            with self._home_lock:
                if self._home is None:
                    self._home = loop
        return self._home is loop

    async def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the home loop (binding it to the running loop if unset)."""
        if self._at_home():
            return await coro
        home = cast(asyncio.AbstractEventLoop, self._home)
        if home.is_closed() or not home.is_running():
            coro.close()
            raise ConfigurationError(
                "AgentCoreSaver: the event loop its manager lives on is not running"
            )
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, home))

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the home loop from synchronous code and wait for its result."""
        home = self._home
        if home is None:
            with self._home_lock:
                if self._home is None:
                    self._private = LoopThread("agent-core-langgraph")
                    self._home = self._private.loop
                home = self._home
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is home:
            coro.close()
            raise ConfigurationError(
                "AgentCoreSaver: a synchronous call from inside the event loop that serves it "
                "would block that loop; await the async method (graph.ainvoke, aget_tuple...) "
                "or call from another thread (asyncio.to_thread(graph.invoke, ...))"
            )
        if home.is_closed() or not home.is_running():
            coro.close()
            raise ConfigurationError(
                "AgentCoreSaver: the event loop its manager lives on is not running"
            )
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, home)
        return future.result()

    # --- helpers -----------------------------------------------------------------------------

    def _session_id(self, thread_id: Any) -> str:
        return _session_for(getattr(self.manager, "tenant", None), str(thread_id))

    async def _ensure_session(self, session_id: str, thread_id: str) -> None:
        # ConflictError: created meanwhile (or soft-deleted: the retried write then says so).
        with contextlib.suppress(ConflictError):
            await self.manager.create_session(
                self.agent_type,
                metadata={THREAD_ID_KEY: thread_id},
                session_id=session_id,
            )

    async def _put(
        self,
        session_id: str,
        thread_id: str,
        scope: str,
        items: Sequence[tuple[str, bytes]],
        *,
        keep_existing: bool = False,
    ) -> None:
        """Write records of a thread, creating its session on the first write."""
        for start in range(0, len(items), _PAGE):
            chunk = items[start : start + _PAGE]
            try:
                await self.manager.put_records(
                    scope, chunk, session_id=session_id, keep_existing=keep_existing
                )
            except SessionNotFound:
                await self._ensure_session(session_id, thread_id)
                await self.manager.put_records(
                    scope, chunk, session_id=session_id, keep_existing=keep_existing
                )

    async def _put_step(
        self,
        session_id: str,
        thread_id: str,
        scope: str,
        items: Sequence[tuple[str, bytes]],
        step: dict[str, Any],
    ) -> None:
        """Write a checkpoint's records and its trail entry in one transaction (one round
        trip on PostgreSQL), creating the thread's session on the first write."""
        if len(items) > _PAGE:  # more than one call takes: the records first, then the entry
            await self._put(session_id, thread_id, scope, items)
            await self.manager.append_checkpoint(session_id, TRAIL_STEP, step)
            return
        write = RecordWrite(scope, items)
        try:
            await self.manager.append_checkpoint(session_id, TRAIL_STEP, step, records=write)
        except SessionNotFound:
            await self._ensure_session(session_id, thread_id)
            await self.manager.append_checkpoint(session_id, TRAIL_STEP, step, records=write)

    async def _index_run(self, run_id: str, session_id: str, thread_id: str, scope: str) -> None:
        """Note that ``run_id`` wrote to ``scope`` (once per run and scope and process)."""
        if (run_id, scope) in self._indexed_runs:
            return
        await self._put(
            session_id, thread_id, RUN_SCOPE + run_id, [(scope, b"")], keep_existing=True
        )
        self._indexed_runs[(run_id, scope)] = None
        if len(self._indexed_runs) > _KNOWN_RUNS:
            del self._indexed_runs[next(iter(self._indexed_runs))]

    async def _thread_scopes(self, session_id: str) -> list[str]:
        scopes: list[str] = []
        prefix = f"{THREAD_SCOPE}{session_id}/"
        after: str | None = None
        while True:
            page = await self.manager.list_scopes(prefix, limit=_PAGE, after=after)
            scopes.extend(page)
            if len(page) < _PAGE:
                return scopes
            after = page[-1]

    async def _all_rows(self, scope: str, prefix: str = "") -> list[tuple[str, bytes]]:
        rows: list[tuple[str, bytes]] = []
        after: str | None = None
        while True:
            page = await self.manager.list_records(scope, prefix=prefix, after=after, limit=_PAGE)
            rows.extend(page)
            if len(page) < _PAGE:
                return rows
            after = page[-1][0]

    async def _get_blobs(self, scope: str, keys: list[str]) -> list[tuple[str, bytes]]:
        found: list[tuple[str, bytes]] = []
        for start in range(0, len(keys), _PAGE):
            chunk = await self.manager.get_records(scope, keys[start : start + _PAGE])
            found.extend(chunk.items())
        return found

    def _tuple(
        self,
        thread_id: Any,
        checkpoint_ns: str,
        stored: _Stored,
        blobs: dict[str, bytes],
        metadata: CheckpointMetadata | None = None,
    ) -> CheckpointTuple:
        serde = self.serde
        checkpoint = stored.checkpoint(serde)
        values: dict[str, Any] = {}
        for channel, version in checkpoint["channel_versions"].items():
            raw = blobs.get(_blob_key(channel, version))
            if raw is None or raw == _EMPTY:
                continue
            values[channel] = serde.loads_typed(_decode_blob(raw))
        checkpoint["channel_values"] = values
        writes: list[tuple[tuple[str, str, int], PendingWrite]] = []
        for raw_write in stored.writes:
            task_id, channel, kind, data, task_path, idx = ormsgpack.unpackb(raw_write)
            writes.append(
                (
                    writes_sort_key(task_path, task_id, idx),
                    (task_id, channel, serde.loads_typed((kind, data))),
                )
            )
        writes.sort(key=lambda w: w[0])
        return CheckpointTuple(
            config={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": checkpoint_ns,
                    "checkpoint_id": stored.checkpoint_id,
                }
            },
            checkpoint=cast(Checkpoint, checkpoint),
            metadata=metadata if metadata is not None else stored.metadata(serde),
            parent_config=(
                {
                    "configurable": {
                        "thread_id": thread_id,
                        "checkpoint_ns": checkpoint_ns,
                        "checkpoint_id": stored.parent_id,
                    }
                }
                if stored.parent_id
                else None
            ),
            pending_writes=[w for _, w in writes],
        )

    async def _load_tuples(
        self,
        thread_id: Any,
        scope: str,
        items: list[tuple[_Stored, CheckpointMetadata | None]],
    ) -> list[CheckpointTuple]:
        """Tuples for checkpoints of one scope, their blobs fetched in one read."""
        serde = self.serde
        keys: dict[str, None] = {}
        for stored, _ in items:
            versions = stored.checkpoint(serde)["channel_versions"]
            for channel, version in versions.items():
                keys[_blob_key(channel, version)] = None
        blobs = dict(await self._get_blobs(scope, list(keys))) if keys else {}
        ns = _scope_ns(scope)
        return [self._tuple(thread_id, ns, stored, blobs, md) for stored, md in items]

    # --- async API ---------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._run(self._get_tuple(config))

    async def _get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        checkpoint_ns = configurable.get("checkpoint_ns", "") or ""
        scope = _thread_scope(self._session_id(thread_id), checkpoint_ns)
        checkpoint_id = get_checkpoint_id(config)
        target: _Stored | None = None
        if checkpoint_id:
            rows = await self._all_rows(scope, _checkpoint_key(checkpoint_id))
            stored, writes = _group(rows)
            target = next((s for s in stored if s.checkpoint_id == checkpoint_id), None)
            if target is not None:
                target.writes = writes.get(checkpoint_id, [])
        else:
            target = await self._latest(scope)
        if target is None:
            return None
        versions = target.checkpoint(self.serde)["channel_versions"]
        keys = [_blob_key(channel, version) for channel, version in versions.items()]
        blobs = dict(await self._get_blobs(scope, keys)) if keys else {}
        return self._tuple(thread_id, checkpoint_ns, target, blobs)

    async def _latest(self, scope: str) -> _Stored | None:
        """The newest checkpoint of ``scope`` with its writes: they sort right after it, so a
        descending read meets them first."""
        before: str | None = None
        collected: dict[str, list[bytes]] = {}
        # A step has a few writes: a short first page, longer ones if it has many.
        limit = 8
        while True:
            page = await self.manager.list_records(
                scope, prefix="c:", before=before, limit=limit, descending=True
            )
            for key, value in page:
                cid, sep, _ = key[2:].partition(_SEP)
                if sep:
                    collected.setdefault(cid, []).append(value)
                else:
                    target = _Stored(cid, value)
                    target.writes = collected.get(cid, [])
                    return target
            if len(page) < limit:
                return None
            before = page[-1][0]
            limit = min(limit * 4, _PAGE)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        agen = self._list(config, filter=filter, before=before, limit=limit)
        if self._at_home():
            async for item in agen:
                yield item
            return
        while True:
            try:
                item = await self._run(_anext(agen))
            except StopAsyncIteration:
                return
            yield item

    async def _list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        if limit is not None and limit <= 0:
            return
        remaining = limit
        before_id = get_checkpoint_id(before) if before else None
        for thread_id, scope in await self._list_scopes(config):
            only_id = get_checkpoint_id(config) if config else None
            prefix = _checkpoint_key(only_id) if only_id else "c:"
            cursor = _checkpoint_key(before_id) if before_id else None
            pending: dict[str, list[bytes]] = {}
            while True:
                # list(limit=1) is common (the parent, the last few states): read about what
                # it needs, a checkpoint and a few writes each, not a whole page.
                size = _PAGE if remaining is None or filter else min(_PAGE, 8 * remaining)
                page = await self.manager.list_records(
                    scope, prefix=prefix, before=cursor, limit=size, descending=True
                )
                batch: list[tuple[_Stored, CheckpointMetadata | None]] = []
                for key, value in page:
                    cid, sep, _ = key[2:].partition(_SEP)
                    if sep:
                        pending.setdefault(cid, []).append(value)
                        continue
                    stored = _Stored(cid, value)
                    stored.writes = pending.pop(cid, [])
                    if only_id and cid != only_id:
                        continue
                    metadata: CheckpointMetadata | None = None
                    if filter:
                        metadata = stored.metadata(self.serde)
                        if not all(metadata.get(k) == v for k, v in filter.items()):
                            continue
                    batch.append((stored, metadata))
                    if remaining is not None:
                        remaining -= 1
                        if remaining == 0:
                            break
                for item in await self._load_tuples(thread_id, scope, batch):
                    yield item
                if remaining == 0:
                    return
                if len(page) < size:
                    break
                cursor = page[-1][0]

    async def _list_scopes(self, config: RunnableConfig | None) -> list[tuple[Any, str]]:
        """(thread id, scope) pairs a list call reads, in order."""
        if config is not None:
            configurable = config["configurable"]
            thread_id = configurable["thread_id"]
            session_id = self._session_id(thread_id)
            checkpoint_ns = configurable.get("checkpoint_ns")
            if checkpoint_ns is not None:
                return [(thread_id, _thread_scope(session_id, checkpoint_ns))]
            return [(thread_id, scope) for scope in await self._thread_scopes(session_id)]
        pairs: list[tuple[Any, str]] = []
        names: dict[str, str | None] = {}
        after: str | None = None
        while True:
            page = await self.manager.list_scopes(THREAD_SCOPE, limit=_PAGE, after=after)
            for scope in page:
                session_id = _scope_session(scope)
                if session_id not in names:
                    session = await self.manager.get_session(session_id)
                    names[session_id] = (
                        None if session is None else session.metadata.get(THREAD_ID_KEY)
                    )
                thread_id = names[session_id]
                if thread_id is not None:
                    pairs.append((thread_id, scope))
            if len(page) < _PAGE:
                return pairs
            after = page[-1]

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._run(self._put_checkpoint(config, checkpoint, metadata, new_versions))

    async def _put_checkpoint(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        checkpoint_ns = configurable.get("checkpoint_ns", "") or ""
        parent_id = configurable.get("checkpoint_id")
        session_id = self._session_id(thread_id)
        scope = _thread_scope(session_id, checkpoint_ns)
        serde = self.serde

        body = cast(dict[str, Any], checkpoint.copy())
        values: dict[str, Any] = body.pop("channel_values")
        items: list[tuple[str, bytes]] = []
        for channel, version in new_versions.items():
            if channel in values:
                items.append(
                    (_blob_key(channel, version), _encode_blob(serde.dumps_typed(values[channel])))
                )
            else:
                items.append((_blob_key(channel, version), _EMPTY))
        full_metadata = get_serializable_checkpoint_metadata(config, metadata)
        items.append(
            (
                _checkpoint_key(checkpoint["id"]),
                _pack_checkpoint(
                    parent_id, serde.dumps_typed(body), serde.dumps_typed(full_metadata)
                ),
            )
        )
        run_id = full_metadata.get("run_id")
        if isinstance(run_id, str) and run_id:
            await self._index_run(run_id, session_id, str(thread_id), scope)
        if not self.trail:
            await self._put(session_id, str(thread_id), scope, items)
        else:
            step = {
                "checkpoint_id": checkpoint["id"],
                "ns": checkpoint_ns,
                "step": full_metadata.get("step"),
                "source": full_metadata.get("source"),
            }
            await self._put_step(session_id, str(thread_id), scope, items, step)
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._run(self._put_writes(config, writes, task_id, task_path))

    async def _put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> None:
        if not writes:
            return
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        checkpoint_ns = configurable.get("checkpoint_ns", "") or ""
        checkpoint_id = configurable["checkpoint_id"]
        session_id = self._session_id(thread_id)
        scope = _thread_scope(session_id, checkpoint_ns)
        serde = self.serde
        # Error, interrupt, scheduled and resume writes have fixed negative indexes and
        # replace what is stored; the others keep the first value stored (a retried task
        # cannot change what an earlier attempt recorded), as LangGraph's own savers do.
        special = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        items: dict[str, bytes] = {}
        for idx, (channel, value) in enumerate(writes):
            position = WRITES_IDX_MAP.get(channel, idx)
            kind, data = serde.dumps_typed(value)
            items[_write_key(checkpoint_id, task_id, position)] = ormsgpack.packb(
                [task_id, channel, kind, data, task_path, position]
            )
        await self._put(
            session_id, str(thread_id), scope, list(items.items()), keep_existing=not special
        )

    async def adelete_thread(self, thread_id: str) -> None:
        """Erase the thread: purge its session (trail, records, run index) for good.

        ``purge`` is the right to erasure: audited, and the thread id can be used again (a
        later put starts a new session with the same id)."""
        await self._run(self.manager.purge(session_id=self._session_id(thread_id)))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._run(self._delete_for_runs(run_ids))

    async def _delete_for_runs(self, run_ids: Sequence[str]) -> None:
        if isinstance(run_ids, str):
            raise TypeError("run_ids must be a sequence of run ids, not a str")
        for run_id in run_ids:
            run_scope = RUN_SCOPE + str(run_id)
            for scope, _ in await self._all_rows(run_scope):
                stored, _writes = _group(await self._all_rows(scope, "c:"))
                doomed = [
                    s.checkpoint_id
                    for s in stored
                    if s.metadata(self.serde).get("run_id") == run_id
                ]
                for start in range(0, len(doomed), _PAGE):
                    chunk = doomed[start : start + _PAGE]
                    await self.manager.delete_records(
                        scope, keys=[_checkpoint_key(c) for c in chunk]
                    )
                for checkpoint_id in doomed:
                    await self.manager.delete_records(
                        scope, prefix=_checkpoint_key(checkpoint_id) + _SEP
                    )
            await self.manager.delete_records(run_scope)
            for key in [k for k in self._indexed_runs if k[0] == run_id]:
                del self._indexed_runs[key]

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._run(self._copy_thread(source_thread_id, target_thread_id))

    async def _copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        source = self._session_id(source_thread_id)
        target = self._session_id(target_thread_id)
        target_thread = str(target_thread_id)
        copied = 0
        for scope in await self._thread_scopes(source):
            target_scope = _thread_scope(target, _scope_ns(scope))
            rows = await self._all_rows(scope)
            runs: set[str] = set()
            for key, value in rows:
                if key.startswith("c:") and _SEP not in key:
                    run_id = _Stored(key[2:], value).metadata(self.serde).get("run_id")
                    if isinstance(run_id, str) and run_id:
                        runs.add(run_id)
            for run_id in sorted(runs):
                await self._index_run(run_id, target, target_thread, target_scope)
            await self._put(target, target_thread, target_scope, rows)
            copied += len(rows)
        if copied and self.trail:
            await self.manager.append_checkpoint(
                target, "langgraph.copy", {"from_thread": str(source_thread_id)}
            )

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._run(self._prune(thread_ids, strategy))

    async def _prune(self, thread_ids: Sequence[str], strategy: str) -> None:
        if isinstance(thread_ids, str):
            raise TypeError("thread_ids must be a sequence of thread ids, not a str")
        if strategy not in PRUNE_STRATEGIES:
            raise ValueError(f"Unknown prune strategy: {strategy!r}")
        scopes: list[str] = []
        for thread_id in thread_ids:
            scopes.extend(await self._thread_scopes(self._session_id(thread_id)))
        if strategy != "keep_latest":
            for scope in scopes:
                await self.manager.delete_records(scope)
            return
        # A thread that uses a DeltaChannel is refused before anything is pruned.
        for scope in scopes:
            latest = await self._latest(scope)
            if latest is not None:
                _refuse_delta(latest.metadata(self.serde))
        for scope in scopes:
            await self._keep_latest(scope)

    async def _keep_latest(self, scope: str) -> None:
        """Keep the newest checkpoint of ``scope`` with its writes and the values it reads.

        A run may save into the thread meanwhile: only what was read is deleted, writes go by
        the checkpoints deleted (a step's writes can commit before its checkpoint does), and
        the values are listed before the checkpoints, so a checkpoint saved in between (its
        values and itself commit together) keeps its values."""
        blob_keys = [key for key, _ in await self._all_rows(scope, "b:")]
        rows = await self._all_rows(scope, "c:")
        stored, _ = _group(rows)
        if not stored:
            return
        latest = stored[-1]
        _refuse_delta(latest.metadata(self.serde))  # it may have started using one since
        keep_prefix = _checkpoint_key(latest.checkpoint_id)
        gone = {s.checkpoint_id for s in stored[:-1]}
        doomed = [key for key, _ in rows if key[2:].partition(_SEP)[0] in gone]
        versions = latest.checkpoint(self.serde)["channel_versions"]
        referenced = {_blob_key(channel, version) for channel, version in versions.items()}
        doomed.extend(key for key in blob_keys if key not in referenced)
        for start in range(0, len(doomed), _PAGE):
            await self.manager.delete_records(scope, keys=doomed[start : start + _PAGE])
        if latest.parent_id is not None:
            # Its parent is gone: the kept checkpoint becomes a root, as in LangGraph's savers.
            await self.manager.put_records(
                scope, [(keep_prefix, latest.with_parent(None))], session_id=_scope_session(scope)
            )

    def get_next_version(self, current: str | None, channel: None) -> str:
        """``"<counter:032>.<random:016>"``: increasing, and unique across forks."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # --- sync API ----------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._call(self._get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        # Gathered on the home loop in one call: a generator left half-read would otherwise
        # hold an async generator of that loop open.
        return iter(
            self._call(_collect(self._list(config, filter=filter, before=before, limit=limit)))
        )

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._call(self._put_checkpoint(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._call(self._put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._call(self.manager.purge(session_id=self._session_id(thread_id)))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._call(self._delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._call(self._copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._call(self._prune(thread_ids, strategy))


def _refuse_delta(metadata: CheckpointMetadata) -> None:
    if "counters_since_delta_snapshot" in metadata:
        raise NotImplementedError(
            "keep_latest can't prune threads that use a DeltaChannel: it rebuilds the latest "
            "value from older checkpoints"
        )


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


async def _collect(agen: AsyncIterator[T]) -> list[T]:
    return [item async for item in agen]
