"""Purge is erasure: once it returns, no process and no tier serves what it removed, and a purge
that removes nothing changes nothing and announces nothing (items 1 and 13)."""

from __future__ import annotations

import pytest

from agent_core.bus.base import EventKind
from agent_core.sessions import SessionManager
from tests.coherence.conftest import Hybrid, Spawn
from tests.conftest import MakeManager


@pytest.mark.postgres
@pytest.mark.valkey
@pytest.mark.parametrize("by", ["user_id", "session_id"])
async def test_f01_purge_erases_from_every_process_in_process_tier(
    hybrid: Hybrid, spawn: Spawn, by: str
) -> None:
    writer = await hybrid()
    erased = [await writer.create_session("tutor", "erase-me", {"secret": i}) for i in range(2)]
    kept = await writer.create_session("tutor", "someone-else", {"public": True})
    for s in erased:
        await writer.append_checkpoint(s.session_id, "step", {"secret": "x"})
    reader = await spawn()
    for s in [*erased, kept]:
        await reader.get(s.session_id)
        again = await reader.send(op="get", sid=s.session_id)  # from its in-process tier
    assert again["session"] is not None and again["hits_local"] >= 1, "tier unused: void test"

    if by == "user_id":
        count = await writer.purge(user_id="erase-me")
        assert count == 2
    else:
        for s in erased:
            assert await writer.purge(session_id=s.session_id) == 1

    for s in erased:
        got = await reader.get(s.session_id)  # the next read in the other process
        assert got is None, f"purged session still served by another process: {got}"
        assert await writer.get_session(s.session_id) is None
    assert await reader.get(kept.session_id) is not None


async def test_f01_purge_erases_from_every_manager(make_manager: MakeManager) -> None:
    """The same across backends, with managers that each keep their own in-process tier."""
    writer = await make_manager()
    other = await make_manager()
    session = await writer.create_session("tutor", "erase-me", {"secret": 1})
    await writer.append_checkpoint(session.session_id, "step", {"secret": "x"})
    for _ in range(2):
        assert await other.get_session(session.session_id) is not None
    assert await writer.purge(user_id="erase-me") == 1
    fresh = await make_manager()
    for name, manager in (("other", other), ("writer", writer), ("fresh", fresh)):
        got = await manager.get_session(session.session_id)
        assert got is None, f"{name} still serves the purged session (version {got.version})"


async def _read_all(manager: SessionManager, ids: list[str]) -> list[int | None]:
    out = []
    for sid in ids:
        got = await manager.get_session(sid)
        out.append(None if got is None else got.version)
    return out


async def test_f13_purge_of_a_session_that_is_not_the_users_changes_nothing(
    make_manager: MakeManager,
) -> None:
    writer = await make_manager()
    other = await make_manager()
    theirs = await writer.create_session("tutor", "alice", {"a": 1})
    mine = [await writer.create_session("tutor", "bob", {"b": i}) for i in range(2)]
    ids = [theirs.session_id, *(s.session_id for s in mine)]
    before = await _read_all(other, ids)
    assert before == [1, 1, 1]
    await _read_all(writer, ids)
    async with other.events(kinds=[EventKind.PURGED]) as stream:
        count = await writer.purge(session_id=theirs.session_id, user_id="bob")
        assert count == 0
        with pytest.raises(TimeoutError):
            event = await stream.get(0.5)
            pytest.fail(f"a purge that removed nothing announced {event}")
    fresh = await make_manager()
    for manager in (writer, other, fresh):
        assert await _read_all(manager, ids) == before, "a live session was hidden by purge"
    # The store really kept them too (not only the tiers).
    for sid in ids:
        assert await writer.store.get_version(sid) == 1


@pytest.mark.postgres
@pytest.mark.valkey
async def test_f13_mismatched_purge_leaves_sessions_readable_in_other_processes(
    hybrid: Hybrid, spawn: Spawn
) -> None:
    writer = await hybrid()
    theirs = await writer.create_session("tutor", "alice", {"a": 1})
    mine = await writer.create_session("tutor", "bob", {"b": 1})
    reader = await spawn()
    await reader.send(op="listen", name="purged", filters={"kinds": ["purged"]})
    for sid in (theirs.session_id, mine.session_id):
        assert await reader.version(sid) == 1
    assert await writer.purge(session_id=theirs.session_id, user_id="bob") == 0
    got = await reader.send(op="next_event", name="purged", timeout=0.5)
    assert got["event"] is None, f"a purge that removed nothing announced {got['event']}"
    for sid in (theirs.session_id, mine.session_id):
        version = await reader.version(sid)
        assert version == 1, f"session {sid} hidden in another process after a purge of nothing"


async def test_a_purge_without_a_shared_cache_bumps_epochs_only_when_some_process_caches(
    make_manager: MakeManager,
) -> None:
    """Without a cache of its own, a purge must reach other processes' caches; when none
    exists (no epoch row names a cache server), it has nothing to wait for."""
    manager = await make_manager()
    if manager.tier.caches:
        pytest.skip("the purging manager has its own shared cache")
    store = manager.store
    await store.tier_epoch("apps")
    first = await manager.create_session("agent", "erase-me")
    await manager.purge(session_id=first.session_id)
    assert await store.tier_epoch("apps") == (0, "")  # nobody caches: nothing bumped
    await store.bump_tier_epoch("apps", cache_id="some-valkey")
    second = await manager.create_session("agent", "erase-me")
    await manager.purge(session_id=second.session_id)
    expected = 1 if store.in_process else 2  # an in-process store's data has no other reader
    assert (await store.tier_epoch("apps")).epoch == expected
