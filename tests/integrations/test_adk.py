"""Contract tests of AgentCoreSessionService: ADK's documented session-service behaviours, on
every backend (the ``backend`` fixture), and the mapping onto agent-core sessions.

ADK's own session tests are not published on PyPI; these follow ``BaseSessionService``'s
docstrings and what ``InMemorySessionService`` and ``DatabaseSessionService`` do.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import timedelta
from typing import Any

import pytest
from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import GetSessionConfig
from google.adk.sessions.session import Session
from google.genai import types

from agent_core.integrations.adk import (
    EVENT_CHECKPOINT,
    AgentCoreSessionService,
    app_scope,
    user_scope,
)
from agent_core.sessions.session_models import SessionState
from tests.conftest import MakeManager

APP = "weather"


def _app() -> str:
    # A fresh app per test: app state is shared by every session of an app.
    return f"app-{uuid.uuid4().hex[:8]}"


def _event(
    author: str = "user",
    text: str | None = "hi",
    delta: dict[str, Any] | None = None,
    timestamp: float | None = None,
    **fields: Any,
) -> Event:
    kwargs: dict[str, Any] = {
        "author": author,
        "invocation_id": f"inv-{uuid.uuid4().hex[:6]}",
        "actions": EventActions(state_delta=dict(delta or {})),
        **fields,
    }
    if text is not None:
        kwargs["content"] = types.Content(role=author, parts=[types.Part(text=text)])
    if timestamp is not None:
        kwargs["timestamp"] = timestamp
    return Event(**kwargs)


@pytest.fixture
async def service(make_manager: MakeManager) -> AgentCoreSessionService:
    return AgentCoreSessionService(await make_manager())


# --- create / get -------------------------------------------------------------------------------


async def test_create_splits_state_by_scope_and_drops_temp(
    service: AgentCoreSessionService,
) -> None:
    app = _app()
    state = {"topic": "rain", "none": None, "app:units": "metric", "user:name": "Ada", "temp:x": 1}
    created = await service.create_session(app_name=app, user_id="u1", state=state)
    expected = {"topic": "rain", "none": None, "app:units": "metric", "user:name": "Ada"}
    assert created.state == expected
    assert created.events == []
    assert created.app_name == app and created.user_id == "u1"
    uuid.UUID(created.id)  # a generated id, as ADK generates them
    got = await service.get_session(app_name=app, user_id="u1", session_id=created.id)
    assert got is not None
    assert got.state == expected
    assert got.last_update_time == created.last_update_time
    # app: and user: state are the app's and the user's, seen by their other sessions
    other = await service.create_session(app_name=app, user_id="u1")
    assert other.state == {"app:units": "metric", "user:name": "Ada"}
    stranger = await service.create_session(app_name=app, user_id="u2")
    assert stranger.state == {"app:units": "metric"}
    assert await service.get_user_state(app_name=app, user_id="u1") == {"name": "Ada"}
    assert await service.get_user_state(app_name=app, user_id="nobody") == {}


async def test_explicit_id_and_duplicates(service: AgentCoreSessionService) -> None:
    app = _app()
    s = await service.create_session(app_name=app, user_id="u1", session_id="my session/1")
    assert s.id == "my session/1"
    with pytest.raises(AlreadyExistsError):
        await service.create_session(app_name=app, user_id="u1", session_id="my session/1")
    # the same id for another user or app is another session
    await service.create_session(app_name=app, user_id="u2", session_id="my session/1")
    await service.create_session(app_name=_app(), user_id="u1", session_id="my session/1")
    # a duplicate writes no state
    with pytest.raises(AlreadyExistsError):
        await service.create_session(
            app_name=app, user_id="u1", session_id="my session/1", state={"user:k": 1}
        )
    assert await service.get_user_state(app_name=app, user_id="u1") == {}


async def test_get_unknown_session_is_none(service: AgentCoreSessionService) -> None:
    assert await service.get_session(app_name=APP, user_id="u", session_id="nope") is None
    s = await service.create_session(app_name=_app(), user_id="u")
    assert await service.get_session(app_name=s.app_name, user_id="other", session_id=s.id) is None


# --- append_event -------------------------------------------------------------------------------


async def test_append_event_applies_deltas_by_scope(service: AgentCoreSessionService) -> None:
    app = _app()
    s = await service.create_session(app_name=app, user_id="u1", state={"a": 1, "b": 2})
    event = _event(
        delta={
            "a": None,  # ADK keeps a key set to None (no merge-patch delete)
            "c": {"nested": [1, 2.5]},
            "app:v": 1,
            "user:w": "x",
            "temp:scratch": "gone",
        }
    )
    returned = await service.append_event(s, event)
    assert returned is event
    # the in-memory session sees temp: state for this invocation; the store never does
    assert s.state["temp:scratch"] == "gone"
    assert s.events == [event]
    assert "temp:scratch" not in event.actions.state_delta
    got = await service.get_session(app_name=app, user_id="u1", session_id=s.id)
    assert got is not None
    assert got.state == {"a": None, "b": 2, "c": {"nested": [1, 2.5]}, "app:v": 1, "user:w": "x"}
    assert got.events == [event]
    assert got.last_update_time == event.timestamp


async def test_state_changed_in_place_is_not_stored(service: AgentCoreSessionService) -> None:
    """As with every ADK service, only event deltas reach the store: a change made to a
    returned session's state in place (no event) is not written by the next append."""
    app = _app()
    created = await service.create_session(app_name=app, user_id="u", state={"c": {"x": 1}})
    created.state["c"]["x"] = 99
    s = await service.get_session(app_name=app, user_id="u", session_id=created.id)
    assert s is not None and s.state == {"c": {"x": 1}}
    s.state["c"]["x"] = 98
    s.state["loose"] = True
    await service.append_event(s, _event(delta={"other": 1}))
    got = await service.get_session(app_name=app, user_id="u", session_id=created.id)
    assert got is not None and got.state == {"c": {"x": 1}, "other": 1}


async def test_app_and_user_state_values_round_trip_exactly(
    service: AgentCoreSessionService,
) -> None:
    app = _app()
    values = {
        "big": 2**70,
        "neg": -(2**64),
        "zero": -0.0,
        "inf": float("inf"),
        "nan": float("nan"),
        "lone": "\ud800x",
        "nested": {"a": [1, 2.5, None, "\u2603"], "b": 2**65},
        "float": 0.1 + 0.2,
        "none": None,
    }
    s = await service.create_session(
        app_name=app, user_id="u", state={f"app:{k}": v for k, v in values.items()}
    )
    await service.append_event(s, _event(delta={f"user:{k}": v for k, v in values.items()}))
    got = await service.get_session(app_name=app, user_id="u", session_id=s.id)
    assert got is not None
    for prefix in ("app:", "user:"):
        back = {k[len(prefix) :]: v for k, v in got.state.items() if k.startswith(prefix)}
        assert math.isnan(back.pop("nan"))
        expected = {k: v for k, v in values.items() if k != "nan"}
        assert back == expected
        assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in expected.items()}
        assert str(back["zero"]) == "-0.0"
        assert back["nested"]["b"] == 2**65


async def test_events_round_trip_exactly(service: AgentCoreSessionService) -> None:
    app = _app()
    s = await service.create_session(app_name=app, user_id="u1")
    stamps = [1733150000.1234567, 1733150000.1234569, 0.1 + 0.2 + 1.7e9, 1733150001.0]
    events = [
        _event(timestamp=stamps[0], text="héllo \u2603"),
        _event(
            author="agent",
            text=None,
            timestamp=stamps[1],
            content=types.Content(
                role="model",
                parts=[types.Part(function_call=types.FunctionCall(name="f", args={"x": 1.5}))],
            ),
        ),
        _event(author="agent", timestamp=stamps[2], turn_complete=True, branch="a.b"),
        _event(author="agent", timestamp=stamps[3], delta={"k": [1, "2", None]}),
    ]
    for e in events:
        await service.append_event(s, e)
    got = await service.get_session(app_name=app, user_id="u1", session_id=s.id)
    assert got is not None
    assert got.events == events
    assert [e.timestamp for e in got.events] == stamps
    assert got.last_update_time == stamps[-1]
    assert [e.id for e in got.events] == [e.id for e in events]


async def test_event_outside_agent_core_json_rules_round_trips(
    service: AgentCoreSessionService,
) -> None:
    s = await service.create_session(app_name=_app(), user_id="u1")
    event = _event(custom_metadata={"zero": -0.0, "big": 2**70, "lone": "\ud800"})
    await service.append_event(s, event)
    got = await service.get_session(app_name=s.app_name, user_id="u1", session_id=s.id)
    assert got is not None
    assert got.events == [event]
    assert str(got.events[0].custom_metadata["zero"]) == "-0.0"  # type: ignore[index]


async def test_partial_events_are_not_stored(service: AgentCoreSessionService) -> None:
    s = await service.create_session(app_name=_app(), user_id="u1")
    partial = _event(partial=True, delta={"k": 1})
    assert await service.append_event(s, partial) is partial
    assert s.events == []
    got = await service.get_session(app_name=s.app_name, user_id="u1", session_id=s.id)
    assert got is not None and got.events == [] and got.state == {}


async def test_append_to_unknown_session(service: AgentCoreSessionService) -> None:
    ghost = Session(id="ghost", app_name=_app(), user_id="u")
    with pytest.raises(SessionNotFoundError):
        await service.append_event(ghost, _event())


# --- GetSessionConfig ---------------------------------------------------------------------------


@pytest.mark.parametrize("window", [50, 3])
async def test_get_session_config(make_manager: MakeManager, window: int) -> None:
    # window 3: most events lie outside the checkpoints a get_session returns, so they are
    # read from the trail
    service = AgentCoreSessionService(await make_manager(checkpoint_window=window))
    app = _app()
    s = await service.create_session(app_name=app, user_id="u")
    events = [_event(text=str(i), timestamp=1_700_000_000.0 + i * 0.25) for i in range(10)]
    for e in events:
        await service.append_event(s, e)

    async def get(**config: Any) -> list[Event]:
        got = await service.get_session(
            app_name=app, user_id="u", session_id=s.id, config=GetSessionConfig(**config)
        )
        assert got is not None
        return got.events

    assert await get() == events
    assert await get(num_recent_events=0) == []
    assert await get(num_recent_events=1) == events[-1:]
    assert await get(num_recent_events=4) == events[-4:]
    assert await get(num_recent_events=100) == events
    assert await get(after_timestamp=1_700_000_001.0) == events[4:]  # >= the timestamp
    assert await get(after_timestamp=1_700_000_001.1) == events[5:]
    assert await get(after_timestamp=1_600_000_000.0) == events
    assert await get(after_timestamp=1_800_000_000.0) == []
    assert await get(num_recent_events=3, after_timestamp=1_700_000_001.0) == events[-3:]
    assert await get(num_recent_events=8, after_timestamp=1_700_000_001.0) == events[4:]
    with pytest.raises(ValueError):
        GetSessionConfig(num_recent_events=-1)


# --- list / delete ------------------------------------------------------------------------------


async def test_list_sessions(service: AgentCoreSessionService) -> None:
    app = _app()
    a = await service.create_session(app_name=app, user_id="u1", state={"k": "a", "app:x": 1})
    b = await service.create_session(app_name=app, user_id="u2", state={"user:y": 2})
    c = await service.create_session(app_name=app, user_id="u1")
    await service.create_session(app_name=_app(), user_id="u1")  # another app
    await service.append_event(a, _event(timestamp=a.last_update_time + 1000))

    listed = (await service.list_sessions(app_name=app, user_id="u1")).sessions
    # oldest update first: c was created after a, but a has a later event since
    assert [s.id for s in listed] == [c.id, a.id]
    assert all(s.events == [] for s in listed)
    assert listed[1].state == {"k": "a", "app:x": 1}
    assert listed[1].last_update_time == a.last_update_time

    everyone = (await service.list_sessions(app_name=app)).sessions
    assert [s.id for s in everyone] == [b.id, c.id, a.id]
    assert everyone[0].state == {"app:x": 1, "user:y": 2}
    assert (await service.list_sessions(app_name=app, user_id="nobody")).sessions == []
    assert (await service.list_sessions(app_name=_app())).sessions == []


async def test_delete_session(service: AgentCoreSessionService) -> None:
    app = _app()
    s = await service.create_session(app_name=app, user_id="u1", session_id="s1", state={"k": 1})
    await service.append_event(s, _event(delta={"user:keep": True}))
    await service.delete_session(app_name=app, user_id="u1", session_id="s1")
    assert await service.get_session(app_name=app, user_id="u1", session_id="s1") is None
    assert (await service.list_sessions(app_name=app)).sessions == []
    # user state outlives the session; the id can be used again, for a new empty session
    assert await service.get_user_state(app_name=app, user_id="u1") == {"keep": True}
    again = await service.create_session(app_name=app, user_id="u1", session_id="s1")
    assert again.state == {"user:keep": True}
    got = await service.get_session(app_name=app, user_id="u1", session_id="s1")
    assert got is not None and got.events == []
    # deleting what does not exist is not an error
    await service.delete_session(app_name=app, user_id="u1", session_id="never")
    # the stale object of the deleted session cannot write into the new one
    with pytest.raises(StaleSessionError):
        await service.append_event(s, _event())


# --- stale writers ------------------------------------------------------------------------------


async def test_stale_writer_from_another_service(make_manager: MakeManager) -> None:
    one = AgentCoreSessionService(await make_manager())
    two = AgentCoreSessionService(await make_manager())
    app = _app()
    created = await one.create_session(app_name=app, user_id="u")
    a = await one.get_session(app_name=app, user_id="u", session_id=created.id)
    b = await two.get_session(app_name=app, user_id="u", session_id=created.id)
    assert a is not None and b is not None
    await one.append_event(a, _event(text="first", delta={"who": "one", "user:n": 1}))
    with pytest.raises(StaleSessionError):
        await two.append_event(b, _event(text="second", delta={"who": "two", "user:n": 2}))
    # the loser changed nothing, not even app/user state
    fresh = await two.get_session(app_name=app, user_id="u", session_id=created.id)
    assert fresh is not None
    assert fresh.state == {"who": "one", "user:n": 1}
    assert [e.content.parts[0].text for e in fresh.events] == ["first"]  # type: ignore[index,union-attr]
    # a reloaded session writes
    await two.append_event(fresh, _event(text="third"))
    # and now the first service's object is the stale one
    with pytest.raises(StaleSessionError):
        await one.append_event(a, _event())


async def test_concurrent_appends_exactly_one_wins(make_manager: MakeManager) -> None:
    services = [AgentCoreSessionService(await make_manager()) for _ in range(2)]
    app = _app()
    created = await services[0].create_session(app_name=app, user_id="u")
    for _ in range(3):
        loaded = [
            await svc.get_session(app_name=app, user_id="u", session_id=created.id)
            for svc in services
        ]
        outcomes = await asyncio.gather(
            *(
                svc.append_event(s, _event(text=str(i)))
                for i, (svc, s) in enumerate(zip(services, loaded, strict=True))
                if s is not None
            ),
            return_exceptions=True,
        )
        winners = [o for o in outcomes if isinstance(o, Event)]
        losers = [o for o in outcomes if isinstance(o, StaleSessionError)]
        assert len(winners) == 1 and len(losers) == 1, outcomes
    got = await services[1].get_session(app_name=app, user_id="u", session_id=created.id)
    assert got is not None and len(got.events) == 3


async def test_two_objects_of_one_session_in_one_service(service: AgentCoreSessionService) -> None:
    app = _app()
    created = await service.create_session(app_name=app, user_id="u")
    a = await service.get_session(app_name=app, user_id="u", session_id=created.id)
    b = await service.get_session(app_name=app, user_id="u", session_id=created.id)
    assert a is not None and b is not None
    await service.append_event(a, _event())
    with pytest.raises(StaleSessionError):
        await service.append_event(b, _event())


async def test_parallel_appends_through_one_object_take_turns(
    service: AgentCoreSessionService,
) -> None:
    s = await service.create_session(app_name=_app(), user_id="u")
    events = [_event(text=str(i), delta={f"k{i}": i}) for i in range(5)]
    await asyncio.gather(*(service.append_event(s, e) for e in events))
    got = await service.get_session(app_name=s.app_name, user_id="u", session_id=s.id)
    assert got is not None
    assert sorted(e.id for e in got.events) == sorted(e.id for e in events)
    assert got.state == {f"k{i}": i for i in range(5)}


async def test_agent_core_writes_do_not_make_adk_sessions_stale(
    make_manager: MakeManager,
) -> None:
    """Heartbeats, leases and an operator's context patch move the agent-core version, not
    the ADK revision: the runner's session object stays current, and the patch is kept."""
    manager = await make_manager()
    service = AgentCoreSessionService(manager)
    s = await service.create_session(app_name=_app(), user_id="u", state={"k": 1})
    key = service.session_id_of(s.app_name, "u", s.id)
    await service.append_event(s, _event(delta={"k": 2}))
    await manager.heartbeat(key)
    lease = await manager.claim(key, "operator", timedelta(seconds=30))
    await manager.release(lease)
    await manager.patch_context(key, {"note": "from the operator"})
    await service.append_event(s, _event(delta={"k": 3}))
    other = AgentCoreSessionService(await make_manager())  # no cached head there
    await manager.heartbeat(key)
    got = await other.get_session(app_name=s.app_name, user_id="u", session_id=s.id)
    assert got is not None
    assert got.state == {"k": 3, "note": "from the operator"}
    assert len(got.events) == 2
    await manager.heartbeat(key)
    await other.append_event(got, _event())
    with pytest.raises(StaleSessionError):
        await service.append_event(s, _event())


async def test_session_built_by_hand(service: AgentCoreSessionService) -> None:
    """A session object without our revision marker: stale only if the store holds newer
    events than the object (DatabaseSessionService's fallback)."""
    app = _app()
    created = await service.create_session(app_name=app, user_id="u")
    first = _event(timestamp=created.last_update_time + 1)
    await service.append_event(created, first)
    current = Session(
        id=created.id, app_name=app, user_id="u", events=[first], last_update_time=0.0
    )
    await service.append_event(current, _event(timestamp=created.last_update_time + 2))
    behind = Session(id=created.id, app_name=app, user_id="u", events=[first])
    with pytest.raises(StaleSessionError):
        await service.append_event(behind, _event())


# --- the agent-core side ------------------------------------------------------------------------


async def test_adk_session_is_one_agent_core_session(
    make_manager: MakeManager,
) -> None:
    manager = await make_manager()
    service = AgentCoreSessionService(manager)
    app = _app()
    s = await service.create_session(app_name=app, user_id="u1", state={"k": 1})
    event = _event(author="agent", delta={"k": 2})
    await service.append_event(s, event)
    key = service.session_id_of(app, "u1", s.id)
    head = await manager.get_session(key)
    assert head is not None
    assert head.agent_type == f"adk:{app}" and head.user_id == "u1"
    assert head.state is SessionState.ACTIVE
    assert head.context == {"k": 2}
    assert head.metadata["adk"] == {
        "app_name": app,
        "user_id": "u1",
        "session_id": s.id,
        "last_update_time": event.timestamp,
        "revision": 1,
    }
    trail = await manager.list_checkpoints(key)
    assert [cp.name for cp in trail] == ["session_created", EVENT_CHECKPOINT]
    assert trail[1].data["author"] == "agent" and trail[1].data["id"] == event.id
    listed = await manager.list_sessions(agent_type=f"adk:{app}")
    assert [x.session_id for x in listed] == [key]


async def test_fresh_manager_reads_the_same(make_manager: MakeManager) -> None:
    first = AgentCoreSessionService(await make_manager())
    app = _app()
    s = await first.create_session(app_name=app, user_id="u", state={"app:a": 1})
    for i in range(3):
        await first.append_event(s, _event(text=str(i), delta={"n": i, "user:u": i}))
    second = AgentCoreSessionService(await make_manager())
    got = await second.get_session(app_name=app, user_id="u", session_id=s.id)
    assert got is not None
    assert got.events == s.events
    assert got.state == {"n": 2, "app:a": 1, "user:u": 2}
    assert got.last_update_time == s.last_update_time
    await second.append_event(got, _event())


async def test_purge_user_erases_sessions_events_and_user_state(
    make_manager: MakeManager,
) -> None:
    manager = await make_manager()
    service = AgentCoreSessionService(manager)
    app = _app()
    s = await service.create_session(app_name=app, user_id="gone", state={"user:email": "x@y"})
    await service.append_event(s, _event(delta={"app:shared": 1, "user:more": 2}))
    kept = await service.create_session(app_name=app, user_id="stays", state={"user:k": 1})
    assert await manager.purge(user_id="gone") == 1
    assert await service.get_session(app_name=app, user_id="gone", session_id=s.id) is None
    assert await service.get_user_state(app_name=app, user_id="gone") == {}
    assert await manager.list_records(user_scope(app, "gone")) == []
    assert await manager.list_checkpoints(service.session_id_of(app, "stays", kept.id))
    assert await service.get_user_state(app_name=app, user_id="stays") == {"k": 1}
    assert [k for k, _ in await manager.list_records(app_scope(app))] == ["shared"]
