"""AgentCoreSession (OpenAI Agents SDK ``Session``) on every backend.

The SDK's own session tests run against it too: scripts/upstream/openai_agents.sh.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
from agents import Agent, RunConfig, Runner, function_tool
from agents.memory import Session, SessionSettings
from agents.testing import ScriptedModel, assistant_message, function_call

from agent_core.errors import (
    ConfigurationError,
    InvalidValue,
    NotOpenError,
    PayloadTooLarge,
    SessionNotFound,
)
from agent_core.integrations import ids
from agent_core.integrations.openai_agents import (
    FRAMEWORK,
    ITEM_POPPED,
    ITEMS_ADDED,
    SESSION_CLEARED,
    AgentCoreSession,
    items_scope,
)
from agent_core.sessions.session_manager import SessionManager
from tests.conftest import BACKENDS, MakeManager

Items = list[Any]


def _sid() -> str:
    return f"conv-{uuid.uuid4().hex[:12]}"


def _messages(n: int, prefix: str = "m") -> Items:
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"{prefix}{i}"} for i in range(n)
    ]


def _contents(items: Items) -> list[str]:
    return [item["content"] for item in items]


@pytest.fixture
async def session(make_manager: MakeManager) -> AgentCoreSession:
    return AgentCoreSession(_sid(), await make_manager())


@pytest.fixture
def store_urls(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """``from_url`` arguments for a fresh store of ``backend``."""
    store, cache, local = BACKENDS[backend]
    options: dict[str, Any] = {"local_cache": local}
    if store == "memory":
        return {"store_url": "memory://", **options}
    if store == "sqlite":
        return {"store_url": f"sqlite:///{tmp_path / 'oa.db'}", **options}
    options["store_options"] = {"schema": f"oa{uuid.uuid4().hex[:12]}"}
    options["store_url"] = request.getfixturevalue("postgres_server").dsn
    if cache == "valkey":
        options["cache_url"] = request.getfixturevalue("valkey_server").url
        options["namespace"] = f"oa{uuid.uuid4().hex[:12]}"
    return options


# --- the protocol ------------------------------------------------------------------------------


async def test_is_an_sdk_session(session: AgentCoreSession) -> None:
    assert isinstance(session, Session)
    assert isinstance(session.session_settings, SessionSettings)
    assert session.session_settings.limit is None
    assert await session.get_items() == []
    assert await session.pop_item() is None
    await session.clear_session()  # nothing to clear: no error, no session made
    assert await session.manager.get_session(session.agent_core_session_id) is None


async def test_one_agent_core_session_with_the_run_in_its_trail(
    make_manager: MakeManager,
) -> None:
    manager = await make_manager()
    sdk_id = _sid()
    session = AgentCoreSession(sdk_id, manager, user_id="u-7")
    await session.add_items(_messages(3))
    await session.add_items([{"type": "function_call_output", "call_id": "c1", "output": "ok"}])

    sid = ids.session_id_for(FRAMEWORK, sdk_id, tenant=getattr(manager, "tenant", None))
    assert session.agent_core_session_id == sid
    stored = await manager.get_session(sid)
    assert stored is not None
    assert (stored.agent_type, stored.user_id) == ("openai-agents", "u-7")
    assert stored.metadata == {"framework": "openai-agents", "external_id": sdk_id}
    assert sid in {s.session_id for s in await manager.list_sessions(user_id="u-7")}
    trail = await manager.list_checkpoints(sid)
    assert [(cp.name, cp.data) for cp in trail] == [
        ("session_created", {"agent_type": "openai-agents", "user_id": "u-7"}),
        (ITEMS_ADDED, {"count": 3, "kinds": ["user", "assistant", "user"]}),
        (ITEMS_ADDED, {"count": 1, "kinds": ["function_call_output"]}),
    ]
    # The items of a trail entry are the records under its seq.
    keys = [key for key, _ in await manager.list_records(items_scope(sid))]
    assert [key.split(".")[0] for key in keys] == [f"{trail[1].seq:016d}"] * 3 + [
        f"{trail[2].seq:016d}"
    ]


async def test_round_trip_is_exact(session: AgentCoreSession) -> None:
    item = {
        "zeta": 1,
        "alpha": {"b": [1, 2.5, None, True, False], "a": "x"},
        "floats": [0.1, 1 / 3, -0.0, 5e-324, 1.7976931348623157e308, 1e22, 123456789.0],
        "big": [2**64 + 1, -(2**80)],
        "text": 'é ß 日本 😊 \u2028 "quote" \\ \n \t \x00 \ud800',
        "nested": [[[]], {}, [{"k": "v"}]],
        "inf": [math.inf, -math.inf],
    }
    items = [item, {"role": "user", "content": ""}]
    await session.add_items(cast(Any, items))
    got = await session.get_items()
    assert got == items
    # ... and exactly: key order, float bits, the sign of zero
    assert json.dumps(got) == json.dumps(items)
    assert list(got[0]) == list(item)
    assert math.copysign(1.0, got[0]["floats"][2]) == -1.0
    # Integers at the edges of 64 bits, either side: ints, not floats.
    edges = {"u64": 2**64 - 1, "i64": -(2**63), "over": 2**64, "under": -(2**63) - 1}
    for key, number in edges.items():
        got_one = await _add_and_get_one(session, {key: number, "f": [0.1, -0.0, 5e-324]})
        assert type(got_one[key]) is int and got_one[key] == number
        assert json.dumps(got_one) == json.dumps({key: number, "f": [0.1, -0.0, 5e-324]})
        assert await session.pop_item() == got_one
    nan = await _add_and_get_one(session, {"nan": math.nan})
    assert math.isnan(nan["nan"])
    assert await session.pop_item() == nan
    assert await session.pop_item() == items[1]


async def _add_and_get_one(session: AgentCoreSession, item: Any) -> Any:
    await session.add_items([item])
    (got,) = await session.get_items(limit=1)
    return got


async def test_get_items_limit(make_manager: MakeManager) -> None:
    session = AgentCoreSession(_sid(), await make_manager())
    await session.add_items(_messages(4))
    await session.add_items(_messages(3, prefix="n"))
    everything = ["m0", "m1", "m2", "m3", "n0", "n1", "n2"]
    assert _contents(await session.get_items()) == everything
    assert _contents(await session.get_items(limit=2)) == ["n1", "n2"]
    assert _contents(await session.get_items(limit=5)) == everything[2:]
    assert _contents(await session.get_items(limit=50)) == everything
    assert await session.get_items(limit=0) == []
    assert _contents(await session.get_items(limit=-1)) == everything  # as SQLite's LIMIT -1

    limited = AgentCoreSession(
        session.session_id, session.manager, session_settings=SessionSettings(limit=3)
    )
    assert _contents(await limited.get_items()) == everything[-3:]
    assert _contents(await limited.get_items(limit=1)) == ["n2"]
    as_dict = AgentCoreSession(session.session_id, session.manager, session_settings={"limit": 0})
    assert await as_dict.get_items() == []


async def test_undecodable_records_are_skipped(session: AgentCoreSession) -> None:
    await session.add_items(_messages(3))
    manager, scope = session.manager, items_scope(session.agent_core_session_id)
    await manager.put_records(
        scope, [("9999999999999999.000000", b"not json {{{")], session_id=None
    )
    assert _contents(await session.get_items(limit=2)) == ["m1", "m2"]
    assert _contents(await session.get_items()) == ["m0", "m1", "m2"]
    assert (await session.pop_item() or {}).get("content") == "m2"
    assert _contents(await session.get_items()) == ["m0", "m1"]


async def test_pop_item_is_last_in_first_out(session: AgentCoreSession) -> None:
    await session.add_items(_messages(2))
    await session.add_items(_messages(1, prefix="n"))
    popped = [await session.pop_item() for _ in range(4)]
    assert [p and p["content"] for p in popped] == ["n0", "m1", "m0", None]
    trail = await session.manager.list_checkpoints(session.agent_core_session_id)
    pops = [cp.data for cp in trail if cp.name == ITEM_POPPED]
    assert [p["kind"] for p in pops] == ["user", "assistant", "user"]


async def test_concurrent_pops_take_each_item_once(make_manager: MakeManager) -> None:
    sdk_id = _sid()
    first = AgentCoreSession(sdk_id, await make_manager())
    second = AgentCoreSession(sdk_id, await make_manager())  # another "process"
    await first.add_items(_messages(12))
    popped = await asyncio.gather(
        *(session.pop_item() for session in [first, second] * 8), return_exceptions=True
    )
    errors = [p for p in popped if isinstance(p, BaseException)]
    assert errors == []
    got = [p["content"] for p in popped if isinstance(p, dict)]
    assert sorted(got) == sorted(f"m{i}" for i in range(12))
    assert popped.count(None) == 4
    assert await first.get_items() == []


async def test_concurrent_adds_from_two_managers_keep_every_batch_in_order(
    make_manager: MakeManager,
) -> None:
    sdk_id = _sid()
    first = AgentCoreSession(sdk_id, await make_manager())
    second = AgentCoreSession(sdk_id, await make_manager())

    async def writer(session: AgentCoreSession, name: str) -> None:
        for batch in range(6):
            await session.add_items(_messages(3, prefix=f"{name}{batch}-"))

    await asyncio.gather(writer(first, "a"), writer(second, "b"))
    got = _contents(await first.get_items())
    assert got == _contents(await second.get_items())
    assert len(got) == 36
    # each batch contiguous and in order, each writer's batches in its order
    batches = [got[i : i + 3] for i in range(0, 36, 3)]
    for batch in batches:
        stem = batch[0][:-1]
        assert batch == [f"{stem}0", f"{stem}1", f"{stem}2"]
    for name in "ab":
        mine = [b[0][:2] for b in batches if b[0].startswith(name)]
        assert mine == [f"{name}{i}" for i in range(6)]
    # the order of the items is the order of the trail entries
    trail = await first.manager.list_checkpoints(first.agent_core_session_id)
    assert [cp.data["count"] for cp in trail if cp.name == ITEMS_ADDED] == [3] * 12


async def test_clear_session_keeps_the_session_and_its_trail(session: AgentCoreSession) -> None:
    await session.add_items(_messages(3))
    await session.clear_session()
    assert await session.get_items() == []
    assert await session.pop_item() is None
    await session.add_items(_messages(1, prefix="after"))
    assert _contents(await session.get_items()) == ["after0"]
    trail = await session.manager.list_checkpoints(session.agent_core_session_id)
    assert [cp.name for cp in trail] == [
        "session_created",
        ITEMS_ADDED,
        SESSION_CLEARED,
        ITEMS_ADDED,
    ]
    assert trail[2].data == {"count": 3}


async def test_purge_erases_the_items(make_manager: MakeManager) -> None:
    manager = await make_manager()
    by_id = AgentCoreSession(_sid(), manager, user_id="alice")
    by_user = AgentCoreSession(_sid(), manager, user_id="bob")
    for session in (by_id, by_user):
        await session.add_items(_messages(3))

    assert await manager.purge(session_id=by_id.agent_core_session_id) == 1
    assert await manager.list_records(items_scope(by_id.agent_core_session_id)) == []
    assert await by_id.get_items() == []
    assert await manager.purge(user_id="bob") == 1
    assert await manager.list_records(items_scope(by_user.agent_core_session_id)) == []
    # a purged conversation starts again from nothing
    await by_id.add_items(_messages(1, prefix="new"))
    assert _contents(await by_id.get_items()) == ["new0"]


async def test_a_conversation_in_use_stays_alive(make_manager: MakeManager) -> None:
    manager = await make_manager()
    sdk_id = _sid()
    await AgentCoreSession(sdk_id, manager).add_items(_messages(1))
    sid = ids.session_id_for(FRAMEWORK, sdk_id, tenant=getattr(manager, "tenant", None))
    created = await manager.get_session(sid)
    assert created is not None
    # a process that takes the conversation up heartbeats it with its first add_items
    resumed = AgentCoreSession(sdk_id, manager)
    await asyncio.sleep(0.01)
    await resumed.add_items(_messages(1))
    after = await manager.get_session(sid)
    assert after is not None and after.last_heartbeat > created.last_heartbeat
    # ... and then at most every HEARTBEAT_EVERY seconds, not on every call
    await resumed.add_items(_messages(1))
    again = await manager.get_session(sid)
    assert again is not None and again.last_heartbeat == after.last_heartbeat


async def test_deleted_session_refuses_items(session: AgentCoreSession) -> None:
    await session.add_items(_messages(1))
    assert await session.manager.delete_session(session.agent_core_session_id)
    with pytest.raises(SessionNotFound):
        await session.add_items(_messages(1))


async def test_bad_items_write_nothing(make_manager: MakeManager) -> None:
    session = AgentCoreSession(_sid(), await make_manager(max_payload_bytes=2048))
    with pytest.raises(InvalidValue):
        await session.add_items([{"role": "user", "content": object()}])  # type: ignore[list-item]
    with pytest.raises(PayloadTooLarge):
        await session.add_items(
            [{"role": "user", "content": "ok"}, {"role": "user", "content": "x" * 4096}]
        )
    assert await session.get_items() == []
    assert await session.manager.get_session(session.agent_core_session_id) is None


async def test_closed_session_refuses_calls(session: AgentCoreSession) -> None:
    await session.add_items(_messages(1))
    session.close()
    with pytest.raises(NotOpenError, match="AgentCoreSession is closed"):
        await session.add_items([])
    with pytest.raises(RuntimeError):
        await session.get_items()
    assert await session.manager.get_session(session.agent_core_session_id) is not None


async def test_cancelled_mutation_settles_before_raising(session: AgentCoreSession) -> None:
    items = _messages(5)
    task = asyncio.create_task(session.add_items(items))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the cancellation came through only once the write was done
    assert await session.get_items() == items


# --- event loops and the SDK's Runner ------------------------------------------------------------


def _agent() -> tuple[Agent[Any], ScriptedModel]:
    model = ScriptedModel()
    return Agent(name="assistant", model=model), model


_NO_TRACING = RunConfig(tracing_disabled=True)


def _run_sync(agent: Agent[Any], text: str, session: AgentCoreSession) -> Any:
    """``Runner.run_sync`` as a sync program in a thread runs it: on the thread's own loop
    (closed afterwards; the SDK leaves a thread's default loop open)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return Runner.run_sync(agent, text, session=session, run_config=_NO_TRACING)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def test_runner_run_keeps_the_conversation(session: AgentCoreSession) -> None:
    agent, model = _agent()
    model.enqueue([assistant_message("Paris")])
    result = await Runner.run(agent, "Capital of France?", session=session, run_config=_NO_TRACING)
    assert result.final_output == "Paris"
    model.enqueue([assistant_message("About 2 million")])
    await Runner.run(agent, "Population?", session=session, run_config=_NO_TRACING)
    last = model.last_call
    assert last is not None
    sent = cast(list[Any], last.input)
    assert sent[0] == {"role": "user", "content": "Capital of France?"}
    assert sent[-1] == {"role": "user", "content": "Population?"}
    assert len(await session.get_items()) == 4


async def test_runner_run_sync_in_a_worker_thread_uses_the_home_loop(
    session: AgentCoreSession,
) -> None:
    """A manager's session called by ``Runner.run_sync`` from a worker thread (its own loop)
    hands every call to the manager's loop, which is running this test."""

    @function_tool
    def lookup(q: str) -> str:
        """Look ``q`` up."""
        return f"found {q}"

    agent, model = _agent()
    agent.tools = [lookup]
    model.enqueue([function_call("lookup", {"q": "x"}, call_id="c1")])
    model.enqueue([assistant_message("it is x")])
    result = await asyncio.to_thread(_run_sync, agent, "look it up", session)
    assert result.final_output == "it is x"
    model.enqueue([assistant_message("hello")])
    await asyncio.to_thread(_run_sync, agent, "hi", session)

    items = await session.get_items()
    kinds = [item.get("role") or item.get("type") for item in items]
    assert kinds == [
        "user",
        "function_call",
        "function_call_output",
        "assistant",
        "user",
        "assistant",
    ]
    assert items[2]["output"] == "found x"
    # what the model saw on the second run is what the session holds
    last = model.last_call
    assert last is not None
    assert cast(list[Any], last.input) == items[:5]


async def test_session_of_a_stopped_loop_says_so(make_manager: MakeManager) -> None:
    manager = await make_manager()
    sdk_id = _sid()

    def made_elsewhere() -> AgentCoreSession:
        async def make() -> AgentCoreSession:
            return AgentCoreSession(sdk_id, manager)

        return asyncio.run(make())

    session = await asyncio.to_thread(made_elsewhere)
    with pytest.raises(ConfigurationError, match="from_url"):
        await session.get_items()


async def test_from_url_works_from_any_loop(store_urls: dict[str, Any]) -> None:
    sdk_id = _sid()
    session = AgentCoreSession.from_url(sdk_id, **store_urls)
    try:
        agent, model = _agent()

        def sync_program() -> None:
            # A plain sync program: Runner.run_sync twice (a new loop each time), then
            # asyncio.run after asyncio.run.
            for turn in range(2):
                model.enqueue([assistant_message(f"reply {turn}")])
                _run_sync(agent, f"turn {turn}", session)
            for turn in range(2, 4):
                asyncio.run(session.add_items([{"role": "user", "content": f"turn {turn}"}]))

        await asyncio.to_thread(sync_program)
        last = model.last_call
        assert last is not None and len(cast(list[Any], last.input)) == 3

        # concurrent callers on several loops at once
        def writer(index: int) -> None:
            asyncio.run(session.add_items([{"role": "user", "content": f"thread {index}"}]))

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        items = await session.get_items()
        contents = [item.get("content") for item in items]
        assert contents[:1] == ["turn 0"]
        assert contents[4:6] == ["turn 2", "turn 3"]
        assert sorted(c for c in contents if str(c).startswith("thread")) == [
            f"thread {i}" for i in range(4)
        ]
        assert len(items) == 10
    finally:
        await session.aclose()
    with pytest.raises(NotOpenError):
        await session.get_items()


async def test_from_url_sessions_share_the_store(store_urls: dict[str, Any]) -> None:
    if store_urls["store_url"] == "memory://":
        pytest.skip("memory:// is private to its manager")
    sdk_id = _sid()
    first = AgentCoreSession.from_url(sdk_id, **store_urls)
    second = AgentCoreSession.from_url(sdk_id, **store_urls)
    other = AgentCoreSession.from_url(_sid(), **store_urls)
    try:
        # one manager (one pool, one loop thread) for the sessions of the same URLs
        assert first.manager is second.manager is other.manager
        await first.add_items(_messages(2))
        assert _contents(await second.get_items()) == ["m0", "m1"]
        assert await second.pop_item() == _messages(2)[1]
        first.close()  # the others go on
        assert _contents(await second.get_items()) == ["m0"]
        assert await other.get_items() == []
    finally:
        first.close()
        second.close()
        await other.aclose()
    # the last one closed the manager; a new session gets a new one, on the same store
    again = AgentCoreSession.from_url(sdk_id, **store_urls)
    try:
        assert again.manager is not first.manager
        assert _contents(await again.get_items()) == ["m0"]
    finally:
        await again.aclose()


def test_from_url_closes_without_a_loop(tmp_path: Path) -> None:
    session = AgentCoreSession.from_url("plain", f"sqlite:///{tmp_path / 'x.db'}")
    asyncio.run(session.add_items([{"role": "user", "content": "hi"}]))
    assert asyncio.run(session.get_items()) == [{"role": "user", "content": "hi"}]
    session.close()
    session.close()  # twice is fine
    reopened = AgentCoreSession.from_url("plain", f"sqlite:///{tmp_path / 'x.db'}")
    try:
        assert asyncio.run(reopened.get_items()) == [{"role": "user", "content": "hi"}]
    finally:
        reopened.close()


async def test_manager_is_not_closed_by_the_session(make_manager: MakeManager) -> None:
    manager: SessionManager = await make_manager()
    async with AgentCoreSession(_sid(), manager) as session:
        await session.add_items(_messages(1))
    assert await AgentCoreSession(session.session_id, manager).get_items() == _messages(1)


async def test_tenants_keep_their_conversations_apart(make_manager: MakeManager) -> None:
    acme, globex = await make_manager(tenant="acme"), await make_manager(tenant="globex")
    sdk_id = _sid()
    ours, theirs = AgentCoreSession(sdk_id, acme), AgentCoreSession(sdk_id, globex)
    assert ours.agent_core_session_id != theirs.agent_core_session_id
    await ours.add_items(_messages(2))
    await theirs.add_items(_messages(1, prefix="g"))
    assert _contents(await ours.get_items()) == ["m0", "m1"]
    assert _contents(await theirs.get_items()) == ["g0"]
    assert await acme.get_session(theirs.agent_core_session_id) is None
