"""The behaviour suite: one contract, run on every store/cache combination (see conftest)."""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent_core.bus.base import EventKind
from agent_core.errors import (
    ConflictError,
    InvalidSessionId,
    InvalidTransition,
    LeaseHeld,
    LeaseLost,
    PayloadTooLarge,
    SessionNotFound,
    ValidationError,
)
from agent_core.sessions import AgentSession, SessionManager, SessionState
from tests.conftest import MakeManager


async def count_sessions(manager: SessionManager) -> int:
    return len(await manager.list_sessions(state=None, limit=10_000))


# --- create / get -----------------------------------------------------------------------------


async def test_create_then_get_round_trips_every_field(manager: SessionManager) -> None:
    created = await manager.create_session(
        "grader",
        "user-1",
        context={"exam": 7, "nested": {"a": [1, 2.5, None, True]}},
        metadata={"tenant": "acme"},
    )
    assert created.version == 1
    assert created.checkpoint_count == 1
    assert [(cp.seq, cp.name) for cp in created.checkpoints] == [(1, "session_created")]

    got = await manager.get_session(created.session_id)
    assert got is not None
    assert got.session_id == created.session_id
    assert got.agent_type == "grader"
    assert got.user_id == "user-1"
    assert got.state is SessionState.ACTIVE
    assert got.context == {"exam": 7, "nested": {"a": [1, 2.5, None, True]}}
    assert got.metadata == {"tenant": "acme"}
    assert got.version == 1
    assert got.created_at == created.created_at
    assert got.last_heartbeat == created.last_heartbeat
    assert got.created_at.tzinfo is not None
    assert [cp.to_dict() for cp in got.checkpoints] == [cp.to_dict() for cp in created.checkpoints]


async def test_get_unknown_session_is_none(manager: SessionManager) -> None:
    assert await manager.get_session(str(uuid.uuid4())) is None


async def test_session_written_by_one_manager_is_read_by_another(
    make_manager: MakeManager,
) -> None:
    writer, reader = await make_manager(), await make_manager()
    session = await writer.create_session("tutor", "u")
    got = await reader.get_session(session.session_id)
    assert got is not None and got.version == 1


async def test_reader_sees_every_committed_write_of_another_manager(
    make_manager: MakeManager,
) -> None:
    writer, reader = await make_manager(), await make_manager()
    session = await writer.create_session("tutor", "u")
    assert (await reader.get_session(session.session_id)) is not None  # warm every tier
    await writer.patch_context(session.session_id, {"step": 1})
    got = await reader.get_session(session.session_id)
    assert got is not None and got.context == {"step": 1} and got.version == 2
    await writer.append_checkpoint(session.session_id, "step", {"n": 1})
    got = await reader.get_session(session.session_id)
    assert got is not None and got.version == 3 and got.checkpoints[-1].name == "step"
    await writer.delete_session(session.session_id)
    assert await reader.get_session(session.session_id) is None


async def test_get_returns_a_bounded_window_of_recent_checkpoints(
    make_manager: MakeManager,
) -> None:
    manager = await make_manager(checkpoint_window=5)
    session = await manager.create_session("pipeline")
    for i in range(12):
        await manager.append_checkpoint(session.session_id, f"step-{i}", {"i": i})
    got = await manager.get_session(session.session_id)
    assert got is not None
    assert got.checkpoint_count == 13
    assert [cp.seq for cp in got.checkpoints] == [9, 10, 11, 12, 13]
    assert got.checkpoints[-1].data == {"i": 11}


async def test_mutating_a_returned_session_does_not_change_what_is_stored(
    manager: SessionManager,
) -> None:
    session = await manager.create_session("tutor", context={"a": 1})
    got = await manager.get_session(session.session_id)
    assert got is not None
    got.context["a"] = 2
    got.checkpoint("unsaved")
    again = await manager.get_session(session.session_id)
    assert again is not None
    assert again.context == {"a": 1}
    assert again.checkpoint_count == 1 and len(again.checkpoints) == 1


# --- update_session: compare-and-set --------------------------------------------------------


async def test_update_session_stores_changes_and_only_new_checkpoints(
    manager: SessionManager,
) -> None:
    session = await manager.create_session("grader", "u")
    session.context["score"] = 3
    session.checkpoint("graded", {"score": 3})
    session.checkpoint("reviewed")
    await manager.update_session(session)
    assert session.version == 2
    assert [cp.seq for cp in session.checkpoints] == [1, 2, 3]

    session.checkpoint("published")
    await manager.update_session(session)
    got = await manager.get_session(session.session_id)
    assert got is not None
    assert got.version == 3
    assert got.context == {"score": 3}
    assert [(cp.seq, cp.name) for cp in got.checkpoints] == [
        (1, "session_created"),
        (2, "graded"),
        (3, "reviewed"),
        (4, "published"),
    ]
    trail = await manager.list_checkpoints(session.session_id)
    assert [cp.seq for cp in trail] == [1, 2, 3, 4]


async def test_stale_update_raises_conflict_and_changes_nothing(
    make_manager: MakeManager,
) -> None:
    a, b = await make_manager(), await make_manager()
    created = await a.create_session("grader", "u", context={"v": 0})
    first = await a.get_session(created.session_id)
    second = await b.get_session(created.session_id)
    assert first is not None and second is not None

    first.context["v"] = 1
    first.checkpoint("by-first")
    await a.update_session(first)

    second.context["v"] = 2
    second.checkpoint("by-second")
    with pytest.raises(ConflictError):
        await b.update_session(second)

    for m in (a, b):
        got = await m.get_session(created.session_id)
        assert got is not None
        assert got.context == {"v": 1}
        assert got.version == 2
        assert [cp.name for cp in got.checkpoints] == ["session_created", "by-first"]


async def test_update_after_an_atomic_write_conflicts(manager: SessionManager) -> None:
    session = await manager.create_session("grader")
    await manager.append_checkpoint(session.session_id, "concurrent")
    session.context["x"] = 1
    with pytest.raises(ConflictError):
        await manager.update_session(session)
    got = await manager.get_session(session.session_id)
    assert got is not None and got.context == {}


async def test_update_of_unknown_or_deleted_session_raises_not_found(
    manager: SessionManager,
) -> None:
    with pytest.raises(SessionNotFound):
        await manager.update_session(AgentSession(agent_type="x", version=1))
    session = await manager.create_session("x")
    await manager.delete_session(session.session_id)
    with pytest.raises(SessionNotFound):
        await manager.update_session(session)


async def test_update_with_an_illegal_state_change_is_rejected(manager: SessionManager) -> None:
    session = await manager.create_session("x")
    session.state = SessionState.COMPLETED
    await manager.update_session(session)
    session.state = SessionState.ACTIVE
    with pytest.raises(InvalidTransition):
        await manager.update_session(session)
    got = await manager.get_session(session.session_id)
    assert got is not None and got.state is SessionState.COMPLETED


# --- atomic operations ----------------------------------------------------------------------


async def test_concurrent_appends_get_dense_sequence_numbers(make_manager: MakeManager) -> None:
    a, b = await make_manager(), await make_manager()
    session = await a.create_session("pipeline")
    results = await asyncio.gather(
        *(
            (a if i % 2 else b).append_checkpoint(session.session_id, "step", {"i": i})
            for i in range(40)
        )
    )
    assert sorted(cp.seq or 0 for cp in results) == list(range(2, 42))
    trail = await a.list_checkpoints(session.session_id, limit=100)
    assert [cp.seq for cp in trail] == list(range(1, 42))
    assert sorted(cp.data["i"] for cp in trail[1:]) == list(range(40))
    got = await b.get_session(session.session_id)
    assert got is not None and got.version == 41 and got.checkpoint_count == 41


async def test_concurrent_context_patches_are_all_kept(make_manager: MakeManager) -> None:
    a, b = await make_manager(), await make_manager()
    session = await a.create_session("pipeline", context={"keep": True})
    await asyncio.gather(
        *((a if i % 2 else b).patch_context(session.session_id, {f"k{i}": i}) for i in range(20))
    )
    got = await a.get_session(session.session_id)
    assert got is not None
    assert got.context == {"keep": True, **{f"k{i}": i for i in range(20)}}
    assert got.version == 21


async def test_patch_context_is_a_json_merge_patch(manager: SessionManager) -> None:
    session = await manager.create_session("x", context={"a": 1, "b": {"c": 1, "d": 2}, "e": 5})
    head = await manager.patch_context(session.session_id, {"a": None, "b": {"c": 9}, "f": [1]})
    assert head.context == {"b": {"c": 9, "d": 2}, "e": 5, "f": [1]}
    assert head.version == 2
    got = await manager.get_session(session.session_id)
    assert got is not None and got.context == head.context


async def test_heartbeat_moves_last_heartbeat_forward(manager: SessionManager) -> None:
    session = await manager.create_session("x")
    await asyncio.sleep(0.01)
    head = await manager.heartbeat(session.session_id)
    assert head.last_heartbeat > session.last_heartbeat
    assert head.version == 2
    got = await manager.get_session(session.session_id)
    assert got is not None and got.last_heartbeat == head.last_heartbeat


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        (["paused", "active", "completed"], True),
        (["paused", "failed"], True),
        (["completed", "active"], False),
        (["failed", "paused"], False),
        (["completed", "failed"], False),
        (["active"], False),
    ],
)
async def test_set_state_follows_the_lifecycle(
    manager: SessionManager, path: list[str], allowed: bool
) -> None:
    session = await manager.create_session("x")
    if allowed:
        for state in path:
            head = await manager.set_state(session.session_id, state)
            assert head.state is SessionState(state)
        return
    *ok, bad = path
    for state in ok:
        await manager.set_state(session.session_id, state)
    before = await manager.get_session(session.session_id)
    with pytest.raises(InvalidTransition):
        await manager.set_state(session.session_id, bad)
    after = await manager.get_session(session.session_id)
    assert before is not None and after is not None
    assert after.state is before.state and after.version == before.version


async def test_failing_with_a_reason_records_it(manager: SessionManager) -> None:
    session = await manager.create_session("x")
    head = await manager.set_state(session.session_id, SessionState.FAILED, "tool crashed")
    assert head.context["failure_reason"] == "tool crashed"


async def test_idempotent_append_stores_once(make_manager: MakeManager) -> None:
    a, b = await make_manager(), await make_manager()
    session = await a.create_session("x")
    first = await a.append_checkpoint(session.session_id, "pay", {"n": 1}, idempotency_key="k1")
    again = await b.append_checkpoint(session.session_id, "pay", {"n": 1}, idempotency_key="k1")
    other = await a.append_checkpoint(session.session_id, "pay", {"n": 2}, idempotency_key="k2")
    assert first.seq == again.seq == 2
    assert again.data == {"n": 1} and again.timestamp == first.timestamp
    assert other.seq == 3
    got = await a.get_session(session.session_id)
    assert got is not None and got.checkpoint_count == 3 and got.version == 3


async def test_list_checkpoints_pages_the_whole_trail(manager: SessionManager) -> None:
    session = await manager.create_session("x")
    for i in range(250):
        await manager.append_checkpoint(session.session_id, "s", {"i": i})
    seen: list[int] = []
    after = 0
    while True:
        page = await manager.list_checkpoints(session.session_id, after_seq=after, limit=100)
        if not page:
            break
        seen += [cp.seq or 0 for cp in page]
        after = page[-1].seq or 0
    assert seen == list(range(1, 252))


# --- delete / purge -------------------------------------------------------------------------


async def test_delete_hides_the_session_everywhere(make_manager: MakeManager) -> None:
    a, b = await make_manager(), await make_manager()
    session = await a.create_session("x", "u")
    assert await b.get_session(session.session_id) is not None
    assert await a.delete_session(session.session_id) is True
    assert await a.get_session(session.session_id) is None
    assert await b.get_session(session.session_id) is None
    assert await a.delete_session(session.session_id) is False
    assert session.session_id not in {s.session_id for s in await b.list_sessions(state=None)}
    for write in (
        a.append_checkpoint(session.session_id, "late"),
        a.heartbeat(session.session_id),
        a.patch_context(session.session_id, {"a": 1}),
        a.set_state(session.session_id, "paused"),
        a.list_checkpoints(session.session_id),
    ):
        with pytest.raises(SessionNotFound):
            await write


async def test_delete_unknown_session_is_false(manager: SessionManager) -> None:
    assert await manager.delete_session(str(uuid.uuid4())) is False


async def test_purge_removes_a_users_sessions_for_good(manager: SessionManager) -> None:
    mine = [await manager.create_session("x", "gone") for _ in range(3)]
    await manager.delete_session(mine[0].session_id)
    kept = await manager.create_session("x", "stays")
    assert await manager.purge(user_id="gone") == 3
    for s in mine:
        assert await manager.get_session(s.session_id) is None
    assert await manager.get_session(kept.session_id) is not None
    assert await manager.purge(user_id="gone") == 0


# --- listing and cleanup --------------------------------------------------------------------


async def test_get_active_sessions_filters_and_pages(manager: SessionManager) -> None:
    made = {
        (await manager.create_session(agent, user)).session_id: (agent, user)
        for agent in ("grader", "tutor")
        for user in ("u1", "u2")
        for _ in range(3)
    }
    paused = await manager.create_session("grader", "u1")
    await manager.set_state(paused.session_id, "paused")

    active = await manager.get_active_sessions()
    assert {s.session_id for s in active} == set(made)
    graders = await manager.get_active_sessions(agent_type="grader", user_id="u1")
    assert {s.session_id for s in graders} == {
        sid for sid, key in made.items() if key == ("grader", "u1")
    }
    assert all(s.state is SessionState.ACTIVE for s in graders)

    pages: list[str] = []
    after = None
    while True:
        page = await manager.get_active_sessions(limit=5, after=after)
        pages += [s.session_id for s in page]
        if len(page) < 5:
            break
        after = page[-1].session_id
    assert pages == sorted(made)

    paused_list = await manager.list_sessions(state="paused")
    assert [s.session_id for s in paused_list] == [paused.session_id]


async def test_cleanup_fails_only_stale_active_sessions_in_every_tier(
    make_manager: MakeManager,
) -> None:
    a, b = await make_manager(cleanup_batch_size=2), await make_manager()
    stale = [await a.create_session("x") for _ in range(5)]
    paused = await a.create_session("x")
    await a.set_state(paused.session_id, "paused")
    for s in stale:  # warm the caches of the other manager
        assert (await b.get_session(s.session_id)) is not None
    await asyncio.sleep(0.3)
    fresh = await a.create_session("x")

    assert await a.cleanup_stale_sessions(max_age=timedelta(seconds=0.25)) == 5
    assert await a.cleanup_stale_sessions(max_age=timedelta(seconds=0.25)) == 0
    for m in (a, b):
        for s in stale:
            got = await m.get_session(s.session_id)
            assert got is not None and got.state is SessionState.FAILED
            assert got.context["failure_reason"] == "heartbeat_timeout"
        got = await m.get_session(fresh.session_id)
        assert got is not None and got.state is SessionState.ACTIVE
        got = await m.get_session(paused.session_id)
        assert got is not None and got.state is SessionState.PAUSED
    assert {s.session_id for s in await b.get_active_sessions()} == {fresh.session_id}


# --- bad input: a clear error, and nothing written ------------------------------------------


class NotJson:
    pass


BAD_CONTEXTS: list[Any] = [
    {"x": NotJson()},
    {"x": math.nan},
    {"x": math.inf},
    {"x": -math.inf},
    {"x": {1, 2}},
    {"x": datetime.now(UTC)},
    {1: "int key"},
    {"x": b"bytes"},
    ["not", "an", "object"],
    {"x": 2**70},
]


@pytest.mark.parametrize("bad", BAD_CONTEXTS, ids=lambda b: repr(b)[:30])
async def test_non_json_context_is_rejected_and_nothing_written(
    manager: SessionManager, bad: Any
) -> None:
    with pytest.raises(ValidationError):
        await manager.create_session("x", context=bad)
    with pytest.raises(ValidationError):
        await manager.create_session("x", metadata=bad)
    assert await count_sessions(manager) == 0

    session = await manager.create_session("x", context={"ok": 1})
    with pytest.raises(ValidationError):
        await manager.patch_context(session.session_id, bad)
    with pytest.raises(ValidationError):
        await manager.append_checkpoint(session.session_id, "s", bad)
    copy = await manager.get_session(session.session_id)
    assert copy is not None
    copy.context = bad
    with pytest.raises(ValidationError):
        await manager.update_session(copy)
    got = await manager.get_session(session.session_id)
    assert got is not None
    assert got.context == {"ok": 1} and got.version == 1 and got.checkpoint_count == 1


async def test_oversized_payloads_are_rejected(make_manager: MakeManager) -> None:
    manager = await make_manager(max_payload_bytes=1000)
    big = {"blob": "x" * 1000}
    with pytest.raises(PayloadTooLarge):
        await manager.create_session("x", context=big)
    session = await manager.create_session("x", context={"small": 1})
    with pytest.raises(PayloadTooLarge):
        await manager.append_checkpoint(session.session_id, "s", big)
    with pytest.raises(PayloadTooLarge):
        await manager.patch_context(session.session_id, big)
    got = await manager.get_session(session.session_id)
    assert got is not None and got.version == 1
    assert await count_sessions(manager) == 1


async def test_default_payload_limit_is_one_mebibyte(manager: SessionManager) -> None:
    with pytest.raises(PayloadTooLarge):
        await manager.create_session("x", context={"blob": "x" * (1024 * 1024)})
    session = await manager.create_session("x", context={"blob": "x" * (1024 * 1000)})
    got = await manager.get_session(session.session_id)
    assert got is not None and len(got.context["blob"]) == 1024 * 1000


@pytest.mark.parametrize("agent_type", ["", None, 7, "x" * 300])
async def test_bad_agent_type_is_rejected(manager: SessionManager, agent_type: Any) -> None:
    with pytest.raises(ValidationError):
        await manager.create_session(agent_type)
    assert await count_sessions(manager) == 0


@pytest.mark.parametrize(
    "bad_id", ["", "nope", "123", str(uuid.uuid4()).upper() + "x", None, 42, "../../etc"]
)
async def test_malformed_session_ids_are_rejected(manager: SessionManager, bad_id: Any) -> None:
    for call in (
        manager.get_session(bad_id),
        manager.delete_session(bad_id),
        manager.append_checkpoint(bad_id, "s"),
        manager.heartbeat(bad_id),
        manager.patch_context(bad_id, {}),
        manager.set_state(bad_id, "paused"),
        manager.list_checkpoints(bad_id),
    ):
        with pytest.raises(InvalidSessionId):
            await call


async def test_unknown_session_writes_raise_not_found(manager: SessionManager) -> None:
    sid = str(uuid.uuid4())
    for call in (
        manager.append_checkpoint(sid, "s"),
        manager.heartbeat(sid),
        manager.patch_context(sid, {"a": 1}),
        manager.set_state(sid, "paused"),
        manager.list_checkpoints(sid),
        manager.claim(sid, "w", timedelta(seconds=5)),
    ):
        with pytest.raises(SessionNotFound):
            await call
    assert await count_sessions(manager) == 0


async def test_bad_state_and_checkpoint_names_are_rejected(manager: SessionManager) -> None:
    session = await manager.create_session("x")
    with pytest.raises(ValidationError):
        await manager.set_state(session.session_id, "sleeping")
    with pytest.raises(ValidationError):
        await manager.set_state(session.session_id, "deleted")
    with pytest.raises(ValidationError):
        await manager.append_checkpoint(session.session_id, "")
    got = await manager.get_session(session.session_id)
    assert got is not None and got.version == 1


# --- leases ---------------------------------------------------------------------------------


async def test_a_live_lease_excludes_other_owners(make_manager: MakeManager) -> None:
    a, b = await make_manager(), await make_manager()
    session = await a.create_session("x")
    lease = await a.claim(session.session_id, "worker-a", timedelta(seconds=30))
    assert lease.token == 1
    with pytest.raises(LeaseHeld):
        await b.claim(session.session_id, "worker-b", timedelta(seconds=30))
    await a.append_checkpoint(session.session_id, "mine", lease=lease)
    await a.release(lease)
    taken = await b.claim(session.session_id, "worker-b", timedelta(seconds=30))
    assert taken.token == 2
    with pytest.raises(LeaseLost):
        await a.append_checkpoint(session.session_id, "zombie", lease=lease)


async def test_expired_lease_can_be_taken_and_the_zombie_is_fenced(
    make_manager: MakeManager,
) -> None:
    a, b = await make_manager(), await make_manager()
    session = await a.create_session("x", context={"owner": "a"})
    old = await a.claim(session.session_id, "worker-a", timedelta(milliseconds=50))
    await asyncio.sleep(0.08)
    new = await b.claim(session.session_id, "worker-b", timedelta(seconds=30))
    assert new.token > old.token
    before = await b.get_session(session.session_id)
    for write in (
        a.append_checkpoint(session.session_id, "zombie", lease=old),
        a.patch_context(session.session_id, {"owner": "zombie"}, lease=old),
        a.set_state(session.session_id, "completed", lease=old),
        a.heartbeat(session.session_id, lease=old),
        a.renew(old, timedelta(seconds=30)),
        a.release(old),
    ):
        with pytest.raises(LeaseLost):
            await write
    after = await b.get_session(session.session_id)
    assert before is not None and after is not None
    assert after.version == before.version and after.context == {"owner": "a"}
    await b.append_checkpoint(session.session_id, "resumed", lease=new)


async def test_heartbeat_with_a_lease_renews_it(manager: SessionManager) -> None:
    session = await manager.create_session("x")
    lease = await manager.claim(session.session_id, "w", timedelta(milliseconds=300))
    for _ in range(4):
        await asyncio.sleep(0.1)
        await manager.heartbeat(session.session_id, lease=lease)
    await manager.append_checkpoint(session.session_id, "still-mine", lease=lease)
    renewed = await manager.renew(lease, timedelta(seconds=5))
    assert renewed.token == lease.token and renewed.expires_at > lease.expires_at


async def test_expired_leases_are_reaped(manager: SessionManager) -> None:
    session = await manager.create_session("x")
    lease = await manager.claim(session.session_id, "w", timedelta(milliseconds=20))
    await asyncio.sleep(0.05)
    expired = await manager.store.expire_leases(limit=100)
    assert [(e.session_id, e.token) for e in expired] == [(session.session_id, lease.token)]
    assert await manager.store.expire_leases(limit=100) == []
    with pytest.raises(LeaseLost):
        await manager.append_checkpoint(session.session_id, "late", lease=lease)


# --- events ---------------------------------------------------------------------------------


async def test_events_report_what_happened(make_manager: MakeManager) -> None:
    writer, watcher = await make_manager(), await make_manager()
    async with watcher.events(agent_type="grader") as stream:
        session = await writer.create_session("grader", "u")
        await writer.create_session("tutor", "u")  # filtered out
        await writer.append_checkpoint(session.session_id, "step")
        await writer.patch_context(session.session_id, {"a": 1})
        await writer.set_state(session.session_id, "completed")
        kinds = []
        for _ in range(4):
            event = await stream.get(timeout=5)
            assert event.session_id == session.session_id
            kinds.append(event.kind)
    assert kinds == [EventKind.CREATED, EventKind.CHECKPOINT, EventKind.CONTEXT, EventKind.STATE]


# --- durability of the manager's promises ---------------------------------------------------


async def test_create_update_round_trip_preserves_microseconds(manager: SessionManager) -> None:
    session = await manager.create_session("x")
    got = await manager.get_session(session.session_id)
    assert got is not None
    assert got.last_heartbeat == session.last_heartbeat
    assert got.checkpoints[0].timestamp == session.checkpoints[0].timestamp


async def test_reap_expires_leases_and_fails_stale_sessions(make_manager: MakeManager) -> None:
    a, b = await make_manager(), await make_manager()
    leased = await a.create_session("x")
    lease = await a.claim(leased.session_id, "dead-worker", timedelta(milliseconds=20))
    await asyncio.sleep(0.06)
    fresh = await a.create_session("x")
    results = await asyncio.gather(
        a.reap(max_age=timedelta(seconds=0.05)), b.reap(max_age=timedelta(seconds=0.05))
    )
    assert sorted(r[0] for r in results) == [0, 1]  # one lease, reaped exactly once
    assert sorted(r[1] for r in results) == [0, 1]  # one stale session, failed exactly once
    got = await b.get_session(leased.session_id)
    assert got is not None and got.state is SessionState.FAILED
    got = await a.get_session(fresh.session_id)
    assert got is not None and got.state is SessionState.ACTIVE
    with pytest.raises(LeaseLost):
        await a.heartbeat(leased.session_id, lease=lease)


async def test_a_lease_of_another_session_is_no_fence(manager: SessionManager) -> None:
    mine = await manager.create_session("x")
    other = await manager.create_session("x")
    lease = await manager.claim(mine.session_id, "w", timedelta(seconds=30))
    await manager.claim(other.session_id, "w2", timedelta(seconds=30))  # same token number
    with pytest.raises(LeaseLost):
        await manager.append_checkpoint(other.session_id, "wrong", lease=lease)
    got = await manager.get_session(other.session_id)
    assert got is not None and got.checkpoint_count == 1


async def test_reads_after_atomic_writes_see_them_and_are_not_aliased(
    manager: SessionManager,
) -> None:
    session = await manager.create_session("x", context={"n": 0})
    assert (await manager.get_session(session.session_id)) is not None  # warm every tier
    cp = await manager.append_checkpoint(session.session_id, "step", {"k": [1]})
    cp.data["k"].append("caller's own")
    cp.data["extra"] = True
    head = await manager.patch_context(session.session_id, {"n": 1})
    head.context["n"] = 99
    got = await manager.get_session(session.session_id)
    assert got is not None
    assert got.version == 3 and got.context == {"n": 1}
    assert [(c.seq, c.name) for c in got.checkpoints] == [(1, "session_created"), (2, "step")]
    assert got.checkpoints[-1].data == {"k": [1]}
