"""AgentCoreSaver: a LangGraph thread is one agent-core session, on every backend.

The checkpointer contract itself is LangGraph's conformance suite
(test_langgraph_conformance.py) and LangGraph's own graph tests (scripts/upstream/langgraph.sh);
these tests cover what agent-core adds: the session and its trail, records attached to it,
erasure, the write rules, and the sync API on the right loop.
"""

from __future__ import annotations

import asyncio
import operator
import uuid
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ERROR, INTERRUPT, Checkpoint, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph

from agent_core.errors import ConfigurationError, SessionNotFound
from agent_core.integrations.ids import session_id_for
from agent_core.integrations.langgraph import AgentCoreSaver
from agent_core.sessions.session_manager import SessionManager
from tests.conftest import MakeManager, ManagerFactory


class State(TypedDict):
    steps: Annotated[list[str], operator.add]


def _graph(saver: AgentCoreSaver) -> Any:
    builder = StateGraph(State)
    builder.add_node("a", lambda s: {"steps": ["a"]})
    builder.add_node("b", lambda s: {"steps": ["b"]})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    return builder.compile(checkpointer=saver)


def _config(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _checkpoint(values: dict[str, Any], versions: dict[str, str]) -> Checkpoint:
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = values
    checkpoint["channel_versions"] = dict(versions)
    return checkpoint


async def test_a_thread_is_one_session_with_its_steps_in_the_trail(manager: SessionManager) -> None:
    saver = AgentCoreSaver(manager)
    thread = f"thread-{uuid.uuid4()}"
    result = await _graph(saver).ainvoke({"steps": []}, _config(thread))
    assert result == {"steps": ["a", "b"]}

    session = await manager.get_session(session_id_for("langgraph", thread))
    assert session is not None
    assert session.agent_type == "langgraph"
    assert session.metadata == {"langgraph_thread_id": thread}
    trail = await manager.list_checkpoints(session.session_id)
    steps = [cp for cp in trail if cp.name == "langgraph.step"]
    saved = [t async for t in saver.alist(_config(thread))]
    # One trail entry per saved checkpoint, oldest first, naming it.
    assert [cp.data["checkpoint_id"] for cp in steps] == [
        t.config["configurable"]["checkpoint_id"] for t in reversed(saved)
    ]
    assert [cp.data["step"] for cp in steps] == [-1, 0, 1, 2]
    assert steps[0].data == {
        "checkpoint_id": saved[-1].config["configurable"]["checkpoint_id"],
        "ns": "",
        "step": -1,
        "source": "input",
    }


async def test_channel_values_are_stored_once_per_channel_and_version(
    manager: SessionManager,
) -> None:
    saver = AgentCoreSaver(manager)
    thread = str(uuid.uuid4())
    first = await saver.aput(
        _config(thread),
        _checkpoint({"a": [1], "b": "x"}, {"a": "1", "b": "1"}),
        {},
        {"a": "1", "b": "1"},
    )
    # The second checkpoint changes only "a": "b" stays one stored value, shared.
    second = await saver.aput(
        first, _checkpoint({"a": [1, 2], "b": "x"}, {"a": "2", "b": "1"}), {}, {"a": "2"}
    )
    scope = f"langgraph:{session_id_for('langgraph', thread)}/"
    blobs = await manager.list_records(scope, prefix="b:")
    assert sorted(key for key, _ in blobs) == ["b:a\x011", "b:a\x012", "b:b\x011"]
    assert all(isinstance(value, bytes) for _, value in blobs)
    loaded = await saver.aget_tuple(second)
    assert loaded is not None
    assert loaded.checkpoint["channel_values"] == {"a": [1, 2], "b": "x"}
    old = await saver.aget_tuple(first)
    assert old is not None
    assert old.checkpoint["channel_values"] == {"a": [1], "b": "x"}


async def test_putting_a_checkpoint_id_again_replaces_it(manager: SessionManager) -> None:
    saver = AgentCoreSaver(manager)
    thread = str(uuid.uuid4())
    checkpoint = _checkpoint({"a": 1}, {"a": "1"})
    await saver.aput(_config(thread), checkpoint, {"step": 1, "source": "loop"}, {"a": "1"})
    checkpoint["channel_values"] = {"a": 2}
    checkpoint["channel_versions"] = {"a": "2"}
    await saver.aput(_config(thread), checkpoint, {"step": 7, "source": "update"}, {"a": "2"})
    listed = [t async for t in saver.alist(_config(thread))]
    assert len(listed) == 1
    assert listed[0].metadata["step"] == 7
    assert listed[0].checkpoint["channel_values"] == {"a": 2}


async def test_writes_keep_their_first_value_but_errors_and_interrupts_are_replaced(
    manager: SessionManager,
) -> None:
    saver = AgentCoreSaver(manager)
    thread = str(uuid.uuid4())
    stored = await saver.aput(_config(thread), _checkpoint({}, {}), {}, {})
    await saver.aput_writes(stored, [("x", 1), ("y", "first")], "task-1")
    await saver.aput_writes(stored, [("x", 2), ("y", "second")], "task-1")
    await saver.aput_writes(stored, [(ERROR, "boom 1")], "task-2")
    await saver.aput_writes(stored, [(ERROR, "boom 2")], "task-2")
    await saver.aput_writes(stored, [(INTERRUPT, "ask 1")], "task-3")
    await saver.aput_writes(stored, [(INTERRUPT, "ask 2")], "task-3")
    loaded = await saver.aget_tuple(stored)
    assert loaded is not None
    assert loaded.pending_writes == [
        ("task-1", "x", 1),
        ("task-1", "y", "first"),
        ("task-2", ERROR, "boom 2"),
        ("task-3", INTERRUPT, "ask 2"),
    ]


async def test_the_latest_checkpoint_with_many_writes(manager: SessionManager) -> None:
    # The latest checkpoint and its writes come from descending pages that grow: 8, 32, ...
    saver = AgentCoreSaver(manager)
    thread = str(uuid.uuid4())
    older = await saver.aput(_config(thread), _checkpoint({}, {}), {}, {})
    await saver.aput_writes(older, [(f"o{i}", i) for i in range(5)], "t0")
    latest = await saver.aput(older, _checkpoint({}, {}), {}, {})
    writes = [(f"c{i:02}", i) for i in range(50)]
    await saver.aput_writes(latest, writes, "t1")
    loaded = await saver.aget_tuple(_config(thread))
    assert loaded is not None
    assert loaded.config["configurable"]["checkpoint_id"] == latest["configurable"]["checkpoint_id"]
    assert loaded.pending_writes == [("t1", channel, value) for channel, value in writes]


async def test_list_with_a_limit_pages_through_many_writes(manager: SessionManager) -> None:
    saver = AgentCoreSaver(manager)
    thread = str(uuid.uuid4())
    config = _config(thread)
    ids = []
    for n in range(4):
        config = await saver.aput(config, _checkpoint({}, {}), {"step": n}, {})
        await saver.aput_writes(config, [(f"c{i:02}", i) for i in range(20)], f"t{n}")
        ids.append(config["configurable"]["checkpoint_id"])
    for limit in (1, 2, 3):
        listed = [t async for t in saver.alist(_config(thread), limit=limit)]
        assert [t.checkpoint["id"] for t in listed] == ids[::-1][:limit]
        assert all(len(t.pending_writes or []) == 20 for t in listed)
    before = [
        t async for t in saver.alist(_config(thread), before=_config(thread, ids[2]), limit=1)
    ]
    assert [t.checkpoint["id"] for t in before] == [ids[1]]
    assert [t.metadata["step"] for t in before] == [1]


async def test_delete_thread_erases_the_session_and_its_records(manager: SessionManager) -> None:
    saver = AgentCoreSaver(manager)
    thread = str(uuid.uuid4())
    session_id = session_id_for("langgraph", thread)
    config = _config(thread)
    config["metadata"] = {"run_id": "run-1"}
    stored = await saver.aput(
        config, _checkpoint({"a": 1}, {"a": "1"}), {"run_id": "run-1"}, {"a": "1"}
    )
    await saver.aput_writes(stored, [("x", 1)], "t")
    assert await manager.list_scopes(f"langgraph:{session_id}/")
    assert await manager.list_records("langgraph-run:run-1")

    await saver.adelete_thread(thread)
    assert await manager.get_session(session_id) is None
    assert await manager.list_scopes(f"langgraph:{session_id}") == []
    assert await manager.list_records("langgraph-run:run-1") == []
    assert await saver.aget_tuple(_config(thread)) is None
    # The thread id is free again: a new run starts a new session under the same id.
    await saver.aput(_config(thread), _checkpoint({"a": 2}, {"a": "2"}), {}, {"a": "2"})
    assert await manager.get_session(session_id) is not None


async def test_purging_the_session_erases_the_thread(manager: SessionManager) -> None:
    saver = AgentCoreSaver(manager)
    thread = str(uuid.uuid4())
    await _graph(saver).ainvoke({"steps": []}, _config(thread))
    assert await manager.purge(session_id=session_id_for("langgraph", thread)) == 1
    assert await saver.aget_tuple(_config(thread)) is None
    assert [t async for t in saver.alist(_config(thread))] == []


async def test_a_deleted_session_refuses_new_checkpoints(manager: SessionManager) -> None:
    saver = AgentCoreSaver(manager)
    thread = str(uuid.uuid4())
    await saver.aput(_config(thread), _checkpoint({}, {}), {}, {})
    assert await manager.delete_session(session_id_for("langgraph", thread))
    with pytest.raises(SessionNotFound):
        await saver.aput(_config(thread), _checkpoint({}, {}), {}, {})


@pytest.mark.parametrize("strategy", ["delete", "delete_all"])
async def test_prune_delete_keeps_the_session(manager: SessionManager, strategy: str) -> None:
    saver = AgentCoreSaver(manager)
    thread = str(uuid.uuid4())
    await _graph(saver).ainvoke({"steps": []}, _config(thread))
    await saver.aprune([thread], strategy=strategy)
    assert [t async for t in saver.alist(_config(thread))] == []
    assert await manager.get_session(session_id_for("langgraph", thread)) is not None


async def test_keep_latest_refuses_delta_channel_threads_before_pruning_any(
    manager: SessionManager,
) -> None:
    saver = AgentCoreSaver(manager)
    plain, delta = str(uuid.uuid4()), str(uuid.uuid4())
    await _graph(saver).ainvoke({"steps": []}, _config(plain))
    await saver.aput(
        _config(delta), _checkpoint({}, {}), {"counters_since_delta_snapshot": {"x": (1, 1)}}, {}
    )
    with pytest.raises(NotImplementedError, match="DeltaChannel"):
        await saver.aprune([plain, delta], strategy="keep_latest")
    assert len([t async for t in saver.alist(_config(plain))]) == 4
    await saver.aprune([plain], strategy="keep_latest")
    kept = [t async for t in saver.alist(_config(plain))]
    assert len(kept) == 1
    assert kept[0].parent_config is None
    assert kept[0].checkpoint["channel_values"] == {"steps": ["a", "b"]}


async def test_keep_latest_keeps_writes_saved_ahead_of_their_checkpoint(
    manager: SessionManager,
) -> None:
    # A run saves a step's writes in the background: they can land before their checkpoint.
    saver = AgentCoreSaver(manager)
    thread = str(uuid.uuid4())
    first = await saver.aput(_config(thread), _checkpoint({"a": 1}, {"a": "1"}), {}, {"a": "1"})
    second = await saver.aput(first, _checkpoint({"a": 2}, {"a": "2"}), {}, {"a": "2"})
    await saver.aput_writes(first, [("x", "old")], "t1")
    ahead = _checkpoint({"a": 3}, {"a": "3"})
    await saver.aput_writes(_config(thread, ahead["id"]), [("x", "ahead")], "t2")
    await saver.aprune([thread], strategy="keep_latest")
    await saver.aput(second, ahead, {}, {"a": "3"})
    latest = await saver.aget_tuple(_config(thread))
    assert latest is not None
    assert latest.checkpoint["id"] == ahead["id"]
    assert latest.pending_writes == [("t2", "x", "ahead")]
    assert [t.checkpoint["id"] async for t in saver.alist(_config(thread))] == [
        ahead["id"],
        second["configurable"]["checkpoint_id"],
    ]


async def test_prune_rejects_unknown_strategies_and_a_single_string(
    manager: SessionManager,
) -> None:
    saver = AgentCoreSaver(manager)
    with pytest.raises(ValueError, match="strategy"):
        await saver.aprune(["t"], strategy="keep_oldest")
    with pytest.raises(TypeError):
        await saver.aprune("t")


async def test_list_all_threads_and_copy(manager: SessionManager) -> None:
    saver = AgentCoreSaver(manager)
    source, target = str(uuid.uuid4()), str(uuid.uuid4())
    await _graph(saver).ainvoke({"steps": []}, _config(source))
    await saver.acopy_thread(source, target)
    everything = [t async for t in saver.alist(None)]
    threads = {t.config["configurable"]["thread_id"] for t in everything}
    assert threads == {source, target}
    copied = await saver.aget_tuple(_config(target))
    assert copied is not None
    assert copied.checkpoint["channel_values"]["steps"] == ["a", "b"]
    target_session = await manager.get_session(session_id_for("langgraph", target))
    assert target_session is not None
    assert target_session.metadata == {"langgraph_thread_id": target}


async def test_strict_msgpack_and_with_allowlist(manager: SessionManager) -> None:
    # LangGraph's strict msgpack mode (an explicit allowlist) works as with its own savers,
    # and with_allowlist's clone reads and writes the same storage.
    saver = AgentCoreSaver(manager, serde=JsonPlusSerializer(allowed_msgpack_modules=None))
    thread = str(uuid.uuid4())
    await saver.aput(_config(thread), _checkpoint({"a": 1}, {"a": "1"}), {}, {"a": "1"})
    strict = saver.with_allowlist([("mymodule", "MyType")])
    assert strict is not saver
    loaded = await strict.aget_tuple(_config(thread))
    assert loaded is not None
    assert loaded.checkpoint["channel_values"] == {"a": 1}


# --- the sync API ---------------------------------------------------------------------------


async def test_graph_invoke_from_a_thread_runs_on_the_managers_loop(
    manager: SessionManager,
) -> None:
    saver = AgentCoreSaver(manager)  # built in this loop: its home
    graph = _graph(saver)
    thread = str(uuid.uuid4())
    result = await asyncio.to_thread(graph.invoke, {"steps": []}, _config(thread))
    assert result == {"steps": ["a", "b"]}
    assert len(await asyncio.to_thread(lambda: list(saver.list(_config(thread))))) == 4
    # The async API on the same saver sees the same thread.
    latest = await saver.aget_tuple(_config(thread))
    assert latest is not None
    assert latest.metadata["step"] == 2


async def test_async_calls_from_another_loop_run_on_the_home_loop(
    manager: SessionManager,
) -> None:
    saver = AgentCoreSaver(manager)
    thread = str(uuid.uuid4())
    await _graph(saver).ainvoke({"steps": []}, _config(thread))

    async def elsewhere() -> tuple[Any, int]:
        # Another thread's loop: the manager's connections belong to the test's loop.
        latest = await saver.aget_tuple(_config(thread))
        listed = [t async for t in saver.alist(_config(thread), limit=3)]
        more = await _graph(saver).ainvoke({"steps": ["x"]}, _config(thread))
        return (latest.checkpoint["channel_values"] if latest else None, more), len(listed)

    (values, more), count = await asyncio.to_thread(asyncio.run, elsewhere())
    assert values == {"steps": ["a", "b"]}
    assert more == {"steps": ["a", "b", "x", "a", "b"]}
    assert count == 3


async def test_a_sync_call_inside_the_home_loop_is_refused(manager: SessionManager) -> None:
    saver = AgentCoreSaver(manager)
    with pytest.raises(ConfigurationError, match="synchronous call"):
        saver.get_tuple(_config("t"))


async def test_a_sync_program_gets_a_private_loop(manager_factory: ManagerFactory) -> None:
    manager = await manager_factory()  # not opened: the saver's private loop opens it
    thread = str(uuid.uuid4())

    def program() -> tuple[Any, int]:
        saver = AgentCoreSaver(manager)
        try:
            graph = _graph(saver)
            result = graph.invoke({"steps": []}, _config(thread))
            result = graph.invoke({"steps": ["more"]}, _config(thread))
            return result, len(list(saver.list(_config(thread))))
        finally:
            saver.close()

    result, count = await asyncio.to_thread(program)
    assert result == {"steps": ["a", "b", "more", "a", "b"]}
    assert count == 8


async def test_from_url_with_and_async_with(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'lg.db'}"
    thread = str(uuid.uuid4())

    def program() -> Any:
        with AgentCoreSaver.from_url(url) as saver:
            return _graph(saver).invoke({"steps": []}, _config(thread))

    assert await asyncio.to_thread(program) == {"steps": ["a", "b"]}
    async with AgentCoreSaver.from_url(url) as saver:
        latest = await saver.aget_tuple(_config(thread))
        assert latest is not None
        assert latest.checkpoint["channel_values"]["steps"] == ["a", "b"]
        # The async saver's loop serves a graph.invoke from a worker thread too.
        again = await asyncio.to_thread(_graph(saver).invoke, {"steps": []}, _config(thread))
        assert again == {"steps": ["a", "b", "a", "b"]}


async def test_two_managers_see_the_same_thread(make_manager: MakeManager) -> None:
    first, second = await make_manager(), await make_manager()
    thread = str(uuid.uuid4())
    await _graph(AgentCoreSaver(first)).ainvoke({"steps": []}, _config(thread))
    latest = await AgentCoreSaver(second).aget_tuple(_config(thread))
    assert latest is not None
    assert latest.checkpoint["channel_values"]["steps"] == ["a", "b"]


def test_checkpoint_ids_sort_by_time() -> None:
    # list(before=...) and "the latest checkpoint" read the ids' code point order as their time
    # order, as LangGraph's own savers do (ORDER BY checkpoint_id): uuid6 puts its timestamp
    # first, in fixed-width lowercase hex, and never repeats or goes back within a process.
    ids = [str(uuid6(clock_seq=step)) for step in range(-1, 5000)]
    ids += [str(uuid6(clock_seq=-2)), str(uuid6())]
    assert sorted(ids) == ids
    assert len(set(ids)) == len(ids)
