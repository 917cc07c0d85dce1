"""agent-core as a Google ADK session service: ``AgentCoreSessionService``.

One ADK session ``(app_name, user_id, session_id)`` is one agent-core session:

* its id is ``session_id_for("adk", "<app>\\x00<user>\\x00<session>", tenant=manager.tenant)``
  (a deterministic UUID, so every process finds it without a lookup), its ``agent_type`` is
  ``"adk:" + app_name`` and its ``user_id`` the ADK user; the ADK ids, ``last_update_time``
  (the exact float) and the revision are kept in ``metadata["adk"]``;
* its session-scoped state (keys without a prefix) is the agent-core ``context``;
* each event is one checkpoint of the trail, named ``adk.event``, whose data is the event as
  ``Event.model_dump(mode="json", exclude_none=True)`` (as ``DatabaseSessionService`` stores it),
  so the CLI and the dashboard show a run's steps; ``get_session`` rebuilds the events with
  ``Event.model_validate``, exact to the float timestamp;
* app state (``app:`` keys) and user state (``user:`` keys) are records, one per key, in the
  scopes ``adk:app:["<app>"]`` and ``adk:user:["<app>","<user>"]`` (the user's records carry its
  ``user_id``, so ``purge(user_id=...)`` erases them); ``temp:`` keys are never stored.

``append_event`` is one compare-and-set (``update_session``) on the head the session object
was read at: it stores the event, the session state, ``last_update_time`` and the ADK revision
(the number of events, ``metadata["adk"]["revision"]``) together. A writer whose session object
holds fewer events than the store gets ``StaleSessionError``, so two writers of the same
session can never both win; agent-core's own writes (heartbeats, leases, an operator's
``patch_context``) only make the append read the head again. App and user state deltas are
written right after that commit (records are not part of the session's transaction: a crash
in between keeps the event and loses those deltas).

``delete_session`` purges the agent-core session (ADK deletes for good: the id can be created
again), which leaves an audit record with actor ``adk``.

Registering ``agentcore`` URIs for ``adk web`` / ``adk api_server --session_service_uri``: see
``register()``; ``python -m agent_core.integrations.adk web ...`` runs ADK's CLI with them.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from agent_core import codec
from agent_core.errors import (
    ConfigurationError,
    ConflictError,
    InvalidValue,
    MissingDependency,
    SessionNotFound,
)
from agent_core.integrations.ids import session_id_for
from agent_core.resource import AsyncResource
from agent_core.sessions import limits
from agent_core.sessions.session_manager import SessionManager
from agent_core.sessions.session_models import AgentSession, SessionCheckpoint

try:
    from google.adk.errors import StaleSessionError
    from google.adk.errors.already_exists_error import AlreadyExistsError
    from google.adk.errors.session_not_found_error import SessionNotFoundError
    from google.adk.events.event import Event
    from google.adk.platform import time as platform_time
    from google.adk.platform import uuid as platform_uuid
    from google.adk.sessions import _session_util
    from google.adk.sessions.base_session_service import (
        BaseSessionService,
        GetSessionConfig,
        ListSessionsResponse,
    )
    from google.adk.sessions.session import Session
    from google.adk.sessions.state import State
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependency(
        "agent_core.integrations.adk needs Google ADK: pip install 'agent-core[adk]'"
    ) from exc

if TYPE_CHECKING:
    from google.adk.cli.service_registry import ServiceRegistry

__all__ = [
    "EVENT_CHECKPOINT",
    "SCHEMES",
    "AgentCoreSessionService",
    "adk_session_id",
    "app_scope",
    "register",
    "user_scope",
]

EVENT_CHECKPOINT: Final = "adk.event"
"""The name of the trail checkpoint that holds one ADK event."""

AGENT_TYPE_PREFIX: Final = "adk:"
SCHEMES: Final = (
    "agentcore",
    "agentcore+memory",
    "agentcore+sqlite",
    "agentcore+postgresql",
    "agentcore+postgres",
)
"""The ADK session service URI schemes ``register()`` installs."""

_MARKER_PREFIX: Final = "agent-core:"
_MAX_ATTEMPTS: Final = 8
"""Compare-and-set attempts of one append_event against agent-core's own writes."""
_HEAD_CACHE_SIZE: Final = 4096
_OUR_QUERY_KEYS: Final = ("cache_url", "namespace", "tenant")


def adk_session_id(app_name: str, user_id: str, session_id: str, *, tenant: str | None) -> str:
    """The agent-core session id of the ADK session ``(app_name, user_id, session_id)``."""
    return session_id_for("adk", f"{app_name}\x00{user_id}\x00{session_id}", tenant=tenant)


def app_scope(app_name: str) -> str:
    """The records scope of an app's state (one record per ``app:`` key, prefix removed)."""
    return "adk:app:" + json.dumps([app_name], ensure_ascii=False)


def user_scope(app_name: str, user_id: str) -> str:
    """The records scope of a user's state in an app (one record per ``user:`` key)."""
    return "adk:user:" + json.dumps([app_name, user_id], ensure_ascii=False)


# Values outside agent-core's JSON rules (integers beyond 64 bits, NaN and infinities, -0.0,
# lone surrogates), which orjson would change (a big integer reads back as a float, NaN is
# written as null), are kept as the standard library's JSON text behind this byte, which no
# JSON text starts with.
_STDLIB_JSON: Final = b"\x1e"


def _dump_value(value: Any) -> bytes:
    """The record value of one ``app:``/``user:`` state value: its JSON, read back exactly."""
    try:
        return codec.validate_value(value, what="ADK state value")
    except InvalidValue:
        return _STDLIB_JSON + json.dumps(value).encode()


def _load_value(raw: bytes) -> Any:
    if raw[:1] == _STDLIB_JSON:
        return json.loads(raw[1:])
    return orjson.loads(raw)


def _marker(head: AgentSession) -> str:
    """The revision marker of the ADK session ``head`` stores: which incarnation of the id
    (its creation instant) and how many events it holds. Only ``append_event`` moves it, so
    agent-core's own writes (heartbeats, leases, an operator's ``patch_context``) leave ADK's
    session objects current."""
    born = int(head.created_at.timestamp() * 1_000_000)
    return f"{_MARKER_PREFIX}{born}:{head.metadata['adk'].get('revision', 0)}"


def _is_ours(marker: str | None) -> bool:
    return marker is not None and marker.startswith(_MARKER_PREFIX)


def _event_data(event: Event) -> dict[str, Any]:
    """The checkpoint data of ``event``: its JSON form, or (for the rare event that breaks an
    agent-core JSON rule, such as a ``-0.0``, an integer beyond 64 bits or a lone surrogate)
    that form as the standard library's JSON text, which keeps every one of those exactly."""
    data: dict[str, Any] = event.model_dump(mode="json", exclude_none=True)
    try:
        codec.validate_value(data, what="ADK event")
    except InvalidValue:
        return {"event_json": json.dumps(data)}
    return data


def _event_from(data: Mapping[str, Any]) -> Event:
    text = data.get("event_json")
    if isinstance(text, str) and len(data) == 1:
        return Event.model_validate(json.loads(text))
    return Event.model_validate(data)


def _check_scoped_keys(delta: Mapping[str, Any], prefix: str) -> list[tuple[str, bytes]]:
    items = []
    for key, value in delta.items():
        limits.check_record_name(key, f"ADK state key {prefix + key!r}")
        items.append((key, _dump_value(value)))
    return items


class AgentCoreSessionService(AsyncResource, BaseSessionService):
    """An ADK ``BaseSessionService`` on an agent-core ``SessionManager``.

    ``AgentCoreSessionService(manager)`` uses a manager the caller owns (and closes);
    ``AgentCoreSessionService(uri="agentcore+postgresql://...")`` (or ``from_uri``) builds one
    from an ``agentcore`` URI and closes it in ``close()``. See ``manager_from_uri`` for the URI
    forms.
    """

    def __init__(
        self,
        manager: SessionManager | None = None,
        *,
        uri: str | None = None,
        **options: Any,
    ) -> None:
        if (manager is None) == (uri is None):
            raise ConfigurationError("pass either a SessionManager or uri=, not both or neither")
        # ADK's registry passes agents_dir to every factory; it means nothing here.
        options.pop("agents_dir", None)
        if uri is not None:
            manager = manager_from_uri(uri, **options)
            self._owns_manager = True
        elif manager is None:
            raise ConfigurationError("pass either a SessionManager or uri=")
        else:
            if options:
                raise ConfigurationError(f"unknown options {sorted(options)}")
            self._owns_manager = False
        self.manager = manager
        # The head (version, context, metadata) of each session this service last wrote or
        # read: an append whose session object is at that version needs no read first.
        self._heads: OrderedDict[str, AgentSession] = OrderedDict()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._ids: dict[tuple[str, str, str], str] = {}

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> AgentCoreSessionService:
        return cls(uri=uri, **options)

    # --- lifecycle -------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the manager if this service built it."""
        if self._owns_manager:
            await self.manager.close()

    # --- the mapping -----------------------------------------------------------------------

    def session_id_of(self, app_name: str, user_id: str, session_id: str) -> str:
        """The agent-core session id behind an ADK session."""
        names = (app_name, user_id, session_id)
        key = self._ids.get(names)
        if key is None:
            if len(self._ids) >= _HEAD_CACHE_SIZE:
                self._ids.clear()
            key = adk_session_id(
                app_name, user_id, session_id, tenant=getattr(self.manager, "tenant", None)
            )
            self._ids[names] = key
        return key

    def _remember(self, head: AgentSession) -> None:
        light = AgentSession(
            agent_type=head.agent_type,
            user_id=head.user_id,
            session_id=head.session_id,
            state=head.state,
            created_at=head.created_at,
            updated_at=head.updated_at,
            last_heartbeat=head.last_heartbeat,
            context=head.context,
            metadata=head.metadata,
            version=head.version,
            checkpoint_count=head.checkpoint_count,
        )
        self._heads[head.session_id] = light
        self._heads.move_to_end(head.session_id)
        while len(self._heads) > _HEAD_CACHE_SIZE:
            self._heads.popitem(last=False)

    @asynccontextmanager
    async def _session_lock(self, key: str) -> AsyncIterator[None]:
        """Serializes this process's appends to one session, as ``DatabaseSessionService``
        does, so parallel branches appending through one session object take turns instead of
        failing each other's compare-and-set."""
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock_now, users_now = self._locks[key]
            if users_now <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock_now, users_now - 1)

    async def _scoped_state(self, scope: str) -> dict[str, Any]:
        state: dict[str, Any] = {}
        after: str | None = None
        while True:
            page = await self.manager.list_records(scope, after=after, limit=limits.MAX_LIMIT)
            for key, raw in page:
                state[key] = _load_value(raw)
            if len(page) < limits.MAX_LIMIT:
                return state
            after = page[-1][0]

    async def _merged(
        self, app_name: str, user_id: str, session_state: dict[str, Any]
    ) -> dict[str, Any]:
        app_state, user_state = await asyncio.gather(
            self._scoped_state(app_scope(app_name)),
            self._scoped_state(user_scope(app_name, user_id)),
        )
        return _merge(session_state, app_state, user_state)

    def _to_adk(
        self,
        head: AgentSession,
        ids: Mapping[str, Any],
        state: dict[str, Any],
        events: list[Event],
    ) -> Session:
        session = Session(
            id=ids["session_id"],
            app_name=ids["app_name"],
            user_id=ids["user_id"],
            state=state,
            events=events,
            last_update_time=ids["last_update_time"],
        )
        session._storage_update_marker = _marker(head)
        return session

    async def _write_scoped(
        self,
        app_name: str,
        user_id: str,
        app_items: list[tuple[str, bytes]],
        user_items: list[tuple[str, bytes]],
    ) -> None:
        writes = []
        if app_items:
            writes.append(self.manager.put_records(app_scope(app_name), app_items))
        if user_items:
            writes.append(
                self.manager.put_records(user_scope(app_name, user_id), user_items, user_id=user_id)
            )
        if writes:
            await asyncio.gather(*writes)

    # --- BaseSessionService ----------------------------------------------------------------

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        if session_id is None:
            session_id = platform_uuid.new_uuid()
        deltas = _session_util.extract_json_safe_state_delta(state or {})
        app_items = _check_scoped_keys(deltas["app"], State.APP_PREFIX)
        user_items = _check_scoped_keys(deltas["user"], State.USER_PREFIX)
        now = platform_time.get_time()
        ids = {
            "app_name": app_name,
            "user_id": user_id,
            "session_id": session_id,
            "last_update_time": now,
        }
        key = self.session_id_of(app_name, user_id, session_id)
        try:
            head = await self.manager.create_session(
                AGENT_TYPE_PREFIX + app_name,
                user_id,
                context=deltas["session"],
                metadata={"adk": ids},
                session_id=key,
            )
        except ConflictError:
            raise AlreadyExistsError(f"Session with id {session_id} already exists.") from None
        self._remember(head)
        await self._write_scoped(app_name, user_id, app_items, user_items)
        merged = await self._merged(app_name, user_id, dict(head.context))
        return self._to_adk(head, ids, merged, [])

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        key = self.session_id_of(app_name, user_id, session_id)
        head, app_state, user_state = await asyncio.gather(
            self.manager.get_session(key),
            self._scoped_state(app_scope(app_name)),
            self._scoped_state(user_scope(app_name, user_id)),
        )
        if head is None:
            return None
        ids = head.metadata.get("adk")
        if not isinstance(ids, dict):
            return None
        events = await self._events(head, config)
        self._remember(head)
        return self._to_adk(head, ids, _merge(head.context, app_state, user_state), events)

    async def _events(self, head: AgentSession, config: GetSessionConfig | None) -> list[Event]:
        recent = config.num_recent_events if config is not None else None
        after_ts = config.after_timestamp if config is not None else None
        if recent == 0:
            return []
        checkpoints = list(head.checkpoints)
        # Stored checkpoints have a seq; the window is the newest ones, dense.
        first_seq = head.checkpoint_count - len(checkpoints) + 1
        events = [cp for cp in checkpoints if cp.name == EVENT_CHECKPOINT]

        def enough() -> bool:
            if first_seq <= 1:
                return True
            if recent is not None and len(events) >= recent:
                return True
            # ADK's after_timestamp keeps the events after the last one older than it.
            return after_ts is not None and any(_timestamp_of(cp) < after_ts for cp in events)

        # The window holds the newest checkpoints; older ones are read from the trail.
        while not enough():
            start = max(0, first_seq - 1 - limits.MAX_LIMIT)
            older = await self.manager.list_checkpoints(
                head.session_id, after_seq=start, limit=first_seq - 1 - start
            )
            events = [cp for cp in older if cp.name == EVENT_CHECKPOINT] + events
            first_seq = start + 1
        if recent is not None:
            events = events[-recent:]
        if after_ts is not None:
            i = len(events) - 1
            while i >= 0 and _timestamp_of(events[i]) >= after_ts:
                i -= 1
            events = events[i + 1 :]
        return [_event_from(cp.data) for cp in events]

    async def list_sessions(
        self, *, app_name: str, user_id: str | None = None
    ) -> ListSessionsResponse:
        heads: list[AgentSession] = []
        after: str | None = None
        while True:
            page = await self.manager.list_sessions(
                state=None,
                agent_type=AGENT_TYPE_PREFIX + app_name,
                user_id=user_id,
                limit=limits.MAX_LIMIT,
                after=after,
            )
            heads.extend(page)
            if len(page) < limits.MAX_LIMIT:
                break
            after = page[-1].session_id
        found = [(h, h.metadata.get("adk")) for h in heads]
        adk = [(h, ids) for h, ids in found if isinstance(ids, dict)]
        users = sorted({ids["user_id"] for _, ids in adk})
        app_state, *user_states = await asyncio.gather(
            self._scoped_state(app_scope(app_name)),
            *(self._scoped_state(user_scope(app_name, u)) for u in users),
        )
        by_user = dict(zip(users, user_states, strict=True))
        sessions = [
            self._to_adk(h, ids, _merge(h.context, app_state, by_user[ids["user_id"]]), [])
            for h, ids in adk
        ]
        sessions.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=sessions)

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        key = self.session_id_of(app_name, user_id, session_id)
        self._heads.pop(key, None)
        await self.manager.purge(session_id=key, actor="adk")

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        return await self._scoped_state(user_scope(app_name, user_id))

    async def append_event(self, session: Session, event: Event) -> Event:
        if event.partial:
            return event
        # As every ADK service: temp: state reaches the in-memory session, never the store.
        self._apply_temp_state(session, event)
        event = self._trim_temp_delta_state(event)
        delta = event.actions.state_delta if event.actions and event.actions.state_delta else {}
        deltas = _session_util.extract_json_safe_state_delta(delta)
        app_items = _check_scoped_keys(deltas["app"], State.APP_PREFIX)
        user_items = _check_scoped_keys(deltas["user"], State.USER_PREFIX)
        data = _event_data(event)
        key = self.session_id_of(session.app_name, session.user_id, session.id)
        async with self._session_lock(key):
            for _ in range(_MAX_ATTEMPTS):
                head = await self._head_for(session, key)
                ids = dict(head.metadata["adk"])
                ids["last_update_time"] = event.timestamp
                ids["revision"] = ids.get("revision", 0) + 1
                metadata = dict(head.metadata)
                metadata["adk"] = ids
                context = dict(head.context)
                context.update(deltas["session"])
                new = AgentSession(
                    agent_type=head.agent_type,
                    user_id=head.user_id,
                    session_id=key,
                    state=head.state,
                    created_at=head.created_at,
                    context=context,
                    metadata=metadata,
                    version=head.version,
                    checkpoint_count=head.checkpoint_count,
                )
                new.checkpoints.append(
                    SessionCheckpoint(
                        name=EVENT_CHECKPOINT,
                        timestamp=datetime.fromtimestamp(event.timestamp, UTC),
                        data=data,
                    )
                )
                try:
                    await self.manager.update_session(new)
                    break
                except ConflictError:
                    # Something wrote since that head: another ADK writer (the next read
                    # finds the revision moved: stale) or agent-core itself, a heartbeat,
                    # a lease, a context patch (then the event goes on top of it).
                    self._heads.pop(key, None)
                except SessionNotFound:
                    self._heads.pop(key, None)
                    raise SessionNotFoundError(f"Session {session.id} not found.") from None
            else:
                raise StaleSessionError(_STALE)
            new.checkpoints = []
            self._remember(new)
            session.last_update_time = event.timestamp
            session._storage_update_marker = _marker(new)
            await self._write_scoped(session.app_name, session.user_id, app_items, user_items)
        return self._commit_event_to_session(session, event)

    async def _head_for(self, session: Session, key: str) -> AgentSession:
        """The stored head, if ``session`` holds every ADK event it holds; else
        ``StaleSessionError``. The compare-and-set that follows decides for good."""
        marker = session._storage_update_marker
        cached = self._heads.get(key)
        if _is_ours(marker) and cached is not None and _marker(cached) == marker:
            return cached
        head = await self.manager.get_session(key)
        if head is None or not isinstance(head.metadata.get("adk"), dict):
            raise SessionNotFoundError(f"Session {session.id} not found.")
        self._remember(head)
        if _is_ours(marker):
            if _marker(head) != marker:
                raise StaleSessionError(_STALE)
            return head
        # A session object this service did not hand out (built by hand, or by another
        # service): as DatabaseSessionService, stale only if the store holds newer events.
        stored_time = head.metadata["adk"]["last_update_time"]
        if stored_time > session.last_update_time:
            last = await self._last_event_id(head)
            mine = session.events[-1].id if session.events else None
            if last != mine:
                raise StaleSessionError(_STALE)
        return head

    async def _last_event_id(self, head: AgentSession) -> str | None:
        events = await self._events(head, GetSessionConfig(num_recent_events=1))
        return events[-1].id if events else None


_STALE: Final = (
    "The session has been modified in storage since it was loaded. "
    "Please reload the session before appending more events."
)


def _timestamp_of(cp: SessionCheckpoint) -> float:
    data = cp.data
    value = data.get("timestamp")
    if isinstance(value, int | float):
        return float(value)
    return _event_from(data).timestamp


def _merge(
    session_state: Mapping[str, Any], app_state: Mapping[str, Any], user_state: Mapping[str, Any]
) -> dict[str, Any]:
    # A copy, as DatabaseSessionService's: the head this service keeps for its next append
    # must not change when the caller changes the session object's state in place.
    merged = copy.deepcopy(dict(session_state))
    for key, value in app_state.items():
        merged[State.APP_PREFIX + key] = value
    for key, value in user_state.items():
        merged[State.USER_PREFIX + key] = value
    return merged


# --- URIs --------------------------------------------------------------------------------------


def manager_from_uri(uri: str, **options: Any) -> SessionManager:
    """A ``SessionManager`` for an ``agentcore`` URI, chosen by the ``agent-core`` CLI's rules
    (``agent_core.cli_format``), so ``adk web`` and the CLI see the same sessions.

    * ``agentcore+<store URL>``: any agent-core store URL behind ``agentcore+``:
      ``agentcore+sqlite:////abs/sessions.db``, ``agentcore+sqlite:///relative.db``,
      ``agentcore+postgresql://user:pass@host/db``, ``agentcore+memory://``;
    * ``agentcore://``: the CLI's store, ``AGENT_CORE_STORE_URL`` (default
      ``sqlite:///agent-core.db``).

    Query parameters ``cache_url``, ``namespace`` and ``tenant`` are agent-core's (the others
    stay on the store URL, e.g. ``sslmode``); without them, as for the CLI,
    ``AGENT_CORE_CACHE_URL`` and ``AGENT_CORE_NAMESPACE`` apply. ``AGENT_CORE_ENCRYPTION_KEYS``
    turns on encryption at rest (keys never travel in a URI). ``options`` are ``SessionManager``
    options (``checkpoint_window``, ``max_payload_bytes``, ...).
    """
    from agent_core import cli_format

    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise ConfigurationError(f"not an agentcore URI: {exc}") from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in _OUR_QUERY_KEYS}
    rest = [(k, v) for k, v in query if k not in _OUR_QUERY_KEYS]
    store: str | None = None
    if parts.scheme == "agentcore":
        if parts.netloc or parts.path or rest:
            raise ConfigurationError(
                "agentcore:// takes the store from AGENT_CORE_STORE_URL; name a store with"
                " agentcore+sqlite:///..., agentcore+postgresql://... or agentcore+memory://"
            )
    elif parts.scheme.startswith("agentcore+"):
        inner = parts._replace(scheme=parts.scheme[len("agentcore+") :], query=urlencode(rest))
        store = urlunsplit(inner)
        if inner.scheme == "sqlite" and not inner.netloc and store.startswith("sqlite:/"):
            # urlunsplit drops the empty authority: sqlite:/x.db -> sqlite:///x.db.
            store = "sqlite://" + store[len("sqlite:") :]
        if inner.scheme == "memory":
            store = "memory://"
    else:
        raise ConfigurationError(f"not an agentcore URI (scheme {parts.scheme!r})")
    args = argparse.Namespace(
        store=store, cache=ours.get("cache_url") or None, namespace=ours.get("namespace") or None
    )
    keys = cli_format.env("ENCRYPTION_KEYS")
    if keys and "encryption_keys" not in options:
        options["encryption_keys"] = keys
    if ours.get("tenant"):
        options["tenant"] = ours["tenant"]
    return SessionManager.from_url(
        cli_format.store_url(args),
        cache_url=cli_format.cache_url(args),
        namespace=cli_format.namespace(args),
        **options,
    )


def _factory(uri: str, **kwargs: Any) -> AgentCoreSessionService:
    return AgentCoreSessionService(uri=uri, **kwargs)


def register(registry: ServiceRegistry | None = None) -> None:
    """Register the ``agentcore`` URI schemes (``SCHEMES``) with ADK's service registry (the
    process-wide one by default), so that ``--session_service_uri agentcore+...`` builds an
    ``AgentCoreSessionService``. Idempotent.

    ADK loads no entry points: ``adk web`` and ``adk api_server`` pick the schemes up from a
    ``services.py`` in the agents directory that calls this function, or from a
    ``services.yaml`` entry (``class: agent_core.integrations.adk.AgentCoreSessionService``),
    or run ``python -m agent_core.integrations.adk web|api_server ...``, which registers first.
    """
    if registry is None:
        from google.adk.cli.service_registry import get_service_registry

        registry = get_service_registry()
    for scheme in SCHEMES:
        registry.register_session_service(scheme, _factory)


def main() -> None:  # pragma: no cover - a thin wrapper around ADK's own CLI
    """``python -m agent_core.integrations.adk <adk arguments>``: ADK's CLI with the
    ``agentcore`` schemes registered."""
    register()
    from google.adk.cli.cli_tools_click import main as adk_main

    adk_main()


if __name__ == "__main__":  # pragma: no cover
    # Run the package's module, not this __main__ copy of it, so that the classes ADK resolves
    # from the registered schemes are the importable agent_core.integrations.adk ones.
    import importlib

    importlib.import_module("agent_core.integrations.adk").main()
