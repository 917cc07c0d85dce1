"""What a write leaves in the tiers is what the store holds (items 2, 3, 9 and 10)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from agent_core.bus.base import EventKind
from agent_core.errors import SessionNotFound
from agent_core.sessions import AgentSession, SessionManager, SessionState
from agent_core.sessions.session_models import SessionCheckpoint
from tests.conftest import MakeManager

VALKEY_BACKENDS = ["postgres+valkey", "postgres+valkey+local"]


def view(session: AgentSession | None) -> dict[str, Any] | None:
    """The fields a reader sees, comparable across copies."""
    if session is None:
        return None
    return {
        "session_id": session.session_id,
        "agent_type": session.agent_type,
        "user_id": session.user_id,
        "state": session.state.value,
        "context": session.context,
        "metadata": session.metadata,
        "version": session.version,
        "checkpoint_count": session.checkpoint_count,
        "checkpoints": [(cp.seq, cp.name, cp.data) for cp in session.checkpoints],
    }


async def stored(manager: SessionManager, sid: str) -> dict[str, Any] | None:
    return view(await manager.store.get(sid, window=manager.checkpoint_window))


# --- item 2 ---------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.valkey
@pytest.mark.parametrize("backend", VALKEY_BACKENDS)
async def test_f02_retry_of_a_committed_write_whose_ack_was_lost_refreshes_the_caches(
    make_manager: MakeManager,
) -> None:
    writer = await make_manager()
    reader = await make_manager()
    session = await writer.create_session("tutor", "u")
    sid = session.session_id
    for _ in range(2):  # cached in Valkey (and in the reader's in-process tier) at version 1
        got = await reader.get_session(sid)
        assert got is not None and got.version == 1
    # The append commits, but its acknowledgement never reaches the manager: the caches never
    # hear of it (that is all a lost ack looks like to them).
    await writer.store.append_checkpoint(
        sid, SessionCheckpoint(name="pay", data={"amount": 5}), idempotency_key="k-1"
    )
    truth = await writer.store.get_version(sid)
    assert truth == 2
    # The documented retry with the same key: stores nothing twice, returns the stored one.
    cp = await writer.append_checkpoint(sid, "pay", {"amount": 5}, idempotency_key="k-1")
    assert cp.seq == 2
    fresh = await make_manager()
    for name, manager in (("reader", reader), ("writer", writer), ("fresh", fresh)):
        got = await manager.get_session(sid)
        assert got is not None
        assert got.version == truth, f"{name} reads version {got.version} after the retry"
        names = [c.name for c in got.checkpoints]
        assert names == ["session_created", "pay"], f"{name} reads the trail {names}"
        assert got.checkpoint_count == 2


# --- item 3 ---------------------------------------------------------------------------------


async def test_f03_update_session_caches_what_the_store_holds_not_the_callers_object(
    make_manager: MakeManager,
) -> None:
    writer = await make_manager()
    other = await make_manager()
    session = await writer.create_session("tutor", "alice", {"k": 1})
    sid = session.session_id
    await writer.append_checkpoint(sid, "graded", {"score": 17})
    assert (await other.get_session(sid)) is not None
    s = await writer.get_session(sid)
    assert s is not None
    # Fields the store never writes: who owns the session, and checkpoints already stored.
    s.user_id = "mallory"
    s.checkpoints[-1].data["score"] = 100
    s.checkpoints[-1].name = "forged"
    s.context["k"] = 2  # and one it does write
    await writer.update_session(s)
    truth = await stored(writer, sid)
    assert truth is not None and truth["context"] == {"k": 2}
    fresh = await make_manager()
    for name, manager in (("writer", writer), ("other", other), ("fresh", fresh)):
        for _ in range(2):  # whatever tier serves it
            got = view(await manager.get_session(sid))
            assert got == truth, f"{name} reads what update_session was given, not the store"


# --- item 9 ---------------------------------------------------------------------------------


async def test_f09_update_session_to_deleted_is_a_delete_everywhere(
    make_manager: MakeManager,
) -> None:
    writer = await make_manager()
    other = await make_manager()
    session = await writer.create_session("tutor", "alice")
    sid = session.session_id
    control = (await writer.create_session("tutor", "alice")).session_id
    for manager in (writer, other):
        for _ in range(2):
            assert await manager.get_session(sid) is not None
    await writer.claim(sid, "worker-1", timedelta(seconds=60))
    await writer.claim(control, "worker-1", timedelta(seconds=60))
    s = await writer.get_session(sid)
    assert s is not None
    # (Only these two kinds: a late unfenced `created` or a `claimed` may still be on the way.)
    async with other.events(session_id=sid, kinds=[EventKind.DELETED, EventKind.UPDATED]) as stream:
        s.state = SessionState.DELETED
        await writer.update_session(s)
        event = await stream.get(5)
    assert await writer.store.get(sid, window=0) is None  # the store did delete it
    fresh = await make_manager()
    for name, manager in (("writer", writer), ("other", other), ("fresh", fresh)):
        got = await manager.get_session(sid)
        assert got is None, f"{name} still reads the deleted session at version {got.version}"
    assert event.kind is EventKind.DELETED, f"a delete was announced as {event.kind.value}"
    # The lease goes with the session, as with delete_session().
    await writer.delete_session(control)

    async def lease_of(session_id: str) -> object:
        try:
            return await writer.current_lease(session_id)
        except SessionNotFound:
            return "SessionNotFound"

    assert await lease_of(control) in (None, "SessionNotFound")
    assert await lease_of(sid) == await lease_of(control)


# --- item 10 --------------------------------------------------------------------------------


async def test_f10_unsaved_nested_edits_never_reach_another_read(
    make_manager: MakeManager,
) -> None:
    manager = await make_manager()
    given: dict[str, Any] = {"nested": {"x": 0}, "list": [1]}
    created = await manager.create_session("tutor", "u", given, metadata={"m": {"a": 1}})
    sid = created.session_id
    await manager.append_checkpoint(sid, "step", {"inner": {"y": 0}})
    truth = await stored(manager, sid)

    # The caller's own dict passed to create_session, and the object it got back.
    given["nested"]["x"] = "edited-input"
    created.context["nested"]["x"] = "edited-created"
    assert view(await manager.get_session(sid)) == truth

    # An object returned by get_session, edited below the top level and never saved.
    for _ in range(2):
        s = await manager.get_session(sid)
        assert s is not None
        s.context["nested"]["x"] = 1
        s.context["list"].append(2)
        s.metadata["m"]["a"] = 2
        s.checkpoints[-1].data["inner"]["y"] = 1
        s.checkpoints[-1].data["added"] = True
        again = view(await manager.get_session(sid))
        assert again == truth, "an unsaved edit of one caller shows up in the next read"

    # After update_session, the caller's object must not stay wired to what others read.
    s = await manager.get_session(sid)
    assert s is not None
    s.context["top"] = "saved"
    await manager.update_session(s)
    truth = await stored(manager, sid)
    s.context["nested"]["x"] = "after-save"
    s.checkpoints[-1].data["inner"]["y"] = "after-save"
    assert view(await manager.get_session(sid)) == truth
