"""The store API on every backend (memory, SQLite, PostgreSQL), called directly.

Covers what the store contract promises the manager: one clock (the store's), session refs
from ``delete``, ``purge``, ``describe`` and ``sweep_stale``, lease clearing on the way to
``deleted``, and tier epochs.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent_core.errors import LeaseLost, SessionNotFound
from agent_core.sessions.session_models import AgentSession, SessionCheckpoint, SessionState
from agent_core.stores.base import SessionRef, SessionStore, SweptSession, TierEpoch
from agent_core.stores.memory import MemoryStore
from agent_core.stores.postgres import PostgresStore
from agent_core.stores.sqlite import SQLiteStore

SLOW = timedelta(minutes=20)
NEAR = timedelta(seconds=2)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SessionStore]:
    opened: SessionStore
    if request.param == "memory":
        opened = MemoryStore()
    elif request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "store.db")
    else:
        server = request.getfixturevalue("postgres_server")
        opened = PostgresStore(server.dsn, schema=f"t_{uuid.uuid4().hex[:16]}", min_size=1)
    async with opened:
        yield opened


@pytest.fixture
def slow_client_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``utcnow`` in ``agent_core`` runs 20 minutes slow, like a client's bad clock."""

    def slow() -> datetime:
        return datetime.now(UTC) - SLOW

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "agent_core" and hasattr(module, "utcnow"):
            monkeypatch.setattr(module, "utcnow", slow)


async def store_now(store: SessionStore) -> datetime:
    """The store's clock: the server's for PostgreSQL, the OS clock otherwise."""
    if isinstance(store, PostgresStore):
        pool = store._pool
        assert pool is not None
        now: datetime = await pool.fetchval("SELECT now()")
        return now
    return datetime.now(UTC)


def near(stamp: datetime | None, now: datetime) -> bool:
    return stamp is not None and abs(stamp - now) < NEAR


def new_session(**kwargs: Any) -> AgentSession:
    return AgentSession(**{"agent_type": "tester", "user_id": "u1", **kwargs})


# --- one clock ------------------------------------------------------------------------------


@pytest.mark.usefixtures("slow_client_clock")
async def test_every_stamp_comes_from_the_store_clock(store: SessionStore) -> None:
    past = datetime(2001, 1, 1, tzinfo=UTC)
    checkpoint = SessionCheckpoint("given", timestamp=past)
    head = await store.create(
        new_session(created_at=past, last_heartbeat=past, checkpoints=[checkpoint])
    )
    now = await store_now(store)
    for stamp in (head.created_at, head.updated_at, head.last_heartbeat):
        assert near(stamp, now)
    got = await store.get(head.session_id, window=1)
    assert got is not None and got.checkpoints[0].timestamp == past  # kept as given

    beat = await store.heartbeat(head.session_id)
    now = await store_now(store)
    assert near(beat.last_heartbeat, now) and near(beat.updated_at, now)

    stale_copy = AgentSession(
        **{**vars(beat), "checkpoints": [], "last_heartbeat": past, "context": {"a": 1}}
    )
    updated = await store.update(stale_copy, [])
    now = await store_now(store)
    assert near(updated.last_heartbeat, now) and near(updated.updated_at, now)

    lease = await store.claim(head.session_id, "w", timedelta(minutes=5))
    now = await store_now(store)
    assert near(lease.expires_at, now + timedelta(minutes=5))
    renewed = await store.renew(lease, timedelta(minutes=7))
    assert near(renewed.expires_at, now + timedelta(minutes=7))
    # By a clock 20 minutes slow the lease would have expired already; by the store's it is live.
    assert await store.expire_leases(limit=10) == []
    assert await store.current_lease(head.session_id) is not None
    await store.append_checkpoint(head.session_id, SessionCheckpoint("x"), fence=renewed)
    assert await store.sweep_stale(timedelta(minutes=10), limit=10) == []


async def test_fenced_heartbeat_extends_the_lease_from_the_store_now(store: SessionStore) -> None:
    head = await store.create(new_session())
    lease = await store.claim(head.session_id, "w", timedelta(seconds=30))
    await asyncio.sleep(0.05)
    await store.heartbeat(head.session_id, fence=lease)
    now = await store_now(store)
    current = await store.current_lease(head.session_id)
    assert current is not None and current.token == lease.token
    assert current.expires_at > lease.expires_at
    assert near(current.expires_at, now + timedelta(seconds=30))
    await store.release(lease)
    with pytest.raises(LeaseLost):
        await store.heartbeat(head.session_id, fence=lease)


async def test_sweep_uses_the_max_age_against_the_store_clock(store: SessionStore) -> None:
    old = await store.create(new_session(user_id="u-old"))
    await asyncio.sleep(0.3)
    young = await store.create(new_session())
    assert await store.sweep_stale(timedelta(hours=1), limit=10) == []
    swept = await store.sweep_stale(timedelta(milliseconds=150), limit=10)
    assert swept == [SessionRef(old.session_id, 2, "tester", "u-old", SessionState.FAILED)]
    assert all(type(ref) is SessionRef for ref in swept)
    await asyncio.sleep(0.01)
    assert [ref.session_id for ref in await store.sweep_stale(timedelta(0), limit=10)] == [
        young.session_id
    ]
    assert await store.sweep_stale(timedelta.max, limit=10) == []
    assert await store.sweep_stale(timedelta.min, limit=10) == []  # nothing active is left


async def test_expire_leases_uses_the_store_clock(store: SessionStore) -> None:
    expired = await store.create(new_session())
    live = await store.create(new_session())
    gone = await store.claim(expired.session_id, "w", timedelta(seconds=-1))
    await store.claim(live.session_id, "w", timedelta(minutes=1))
    leases = await store.expire_leases(limit=10)
    assert [(lease.session_id, lease.token) for lease in leases] == [
        (expired.session_id, gone.token)
    ]
    assert await store.expire_leases(limit=10) == []
    assert await store.current_lease(live.session_id) is not None


# --- refs -----------------------------------------------------------------------------------


async def test_delete_returns_the_ref_after_the_delete(store: SessionStore) -> None:
    head = await store.create(new_session(user_id="u-del"))
    await store.patch_context(head.session_id, {"a": 1})
    ref = await store.delete(head.session_id)
    assert ref == SessionRef(head.session_id, 3, "tester", "u-del", SessionState.DELETED)
    assert type(ref) is SessionRef and SweptSession is SessionRef
    assert await store.delete(head.session_id) is None
    assert await store.delete(str(uuid.uuid4())) is None


async def test_purge_reports_exactly_the_sessions_removed(store: SessionStore) -> None:
    a = await store.create(new_session(user_id="gone"))
    b = await store.create(new_session(user_id="gone", agent_type="other"))
    c = await store.create(new_session(user_id="kept"))
    await store.set_state(a.session_id, SessionState.FAILED)
    await store.delete(b.session_id)
    refs = await store.purge(user_id="gone")
    assert refs == sorted(
        [
            SessionRef(a.session_id, 2, "tester", "gone", SessionState.FAILED),
            SessionRef(b.session_id, 2, "other", "gone", SessionState.DELETED),
        ]
    )
    assert await store.purge(user_id="gone") == []
    # Both given: only a session matching both is purged.
    assert await store.purge(session_id=c.session_id, user_id="gone") == []
    assert await store.get_version(c.session_id) == 1
    assert await store.purge() == []
    assert await store.purge(session_id=str(uuid.uuid4())) == []
    assert await store.purge(session_id=c.session_id, user_id="kept") == [
        SessionRef(c.session_id, 1, "tester", "kept", SessionState.ACTIVE)
    ]
    assert await store.get(c.session_id, window=1) is None
    # The id is free again.
    again = await store.create(new_session(session_id=c.session_id))
    assert again.version == 1


async def test_describe_returns_the_live_sessions_among_the_ids(store: SessionStore) -> None:
    heads = [await store.create(new_session(user_id=f"u{i}")) for i in range(4)]
    await store.set_state(heads[1].session_id, SessionState.PAUSED)
    await store.delete(heads[2].session_id)
    missing = str(uuid.uuid4())
    ids = [heads[3].session_id, missing, heads[0].session_id, heads[1].session_id]
    refs = await store.describe([*ids, heads[2].session_id, heads[0].session_id])
    assert refs == sorted(
        [
            SessionRef(heads[0].session_id, 1, "tester", "u0", SessionState.ACTIVE),
            SessionRef(heads[1].session_id, 2, "tester", "u1", SessionState.PAUSED),
            SessionRef(heads[3].session_id, 1, "tester", "u3", SessionState.ACTIVE),
        ]
    )
    assert await store.describe([]) == []
    assert await store.describe([missing]) == []


async def test_describe_many_ids(store: SessionStore) -> None:
    heads = [await store.create(new_session()) for _ in range(3)]
    ids = [str(uuid.uuid4()) for _ in range(1500)] + [h.session_id for h in heads]
    refs = await store.describe(ids)
    assert [ref.session_id for ref in refs] == sorted(h.session_id for h in heads)


# --- leases on the way to deleted -----------------------------------------------------------


async def test_update_to_deleted_clears_the_lease(store: SessionStore) -> None:
    head = await store.create(new_session())
    # An expired lease still held: expire_leases would report it if it were not cleared.
    await store.claim(head.session_id, "w", timedelta(seconds=-1))
    read = await store.get(head.session_id, window=0)
    assert read is not None
    read.state = SessionState.DELETED
    deleted = await store.update(read, [])
    assert deleted.state is SessionState.DELETED
    assert await store.expire_leases(limit=10) == []
    with pytest.raises(SessionNotFound):
        await store.current_lease(head.session_id)


async def test_set_state_and_delete_to_deleted_clear_the_lease(store: SessionStore) -> None:
    first = await store.create(new_session())
    second = await store.create(new_session())
    for head in (first, second):
        await store.claim(head.session_id, "w", timedelta(seconds=-1))
    await store.set_state(first.session_id, SessionState.DELETED)
    await store.delete(second.session_id)
    assert await store.expire_leases(limit=10) == []


async def test_fenced_update_to_deleted_with_a_live_lease(store: SessionStore) -> None:
    head = await store.create(new_session())
    lease = await store.claim(head.session_id, "w", timedelta(minutes=1))
    read = await store.get(head.session_id, window=0)
    assert read is not None
    read.state = SessionState.DELETED
    await store.update(read, [], fence=lease)
    assert await store.expire_leases(limit=10) == []
    with pytest.raises(SessionNotFound):
        await store.renew(lease, timedelta(minutes=1))


# --- tier epochs ----------------------------------------------------------------------------


async def test_tier_epoch_rows(store: SessionStore) -> None:
    assert await store.tier_epoch("a") == TierEpoch(0, "")
    epoch = await store.tier_epoch("a")
    assert type(epoch) is TierEpoch and epoch.epoch == 0 and epoch.cache_id == ""
    await store.bump_tier_epoch("a")
    assert await store.tier_epoch("a") == (1, "")
    await store.bump_tier_epoch("a", cache_id="cache-1")
    assert await store.tier_epoch("a") == (2, "cache-1")
    await store.bump_tier_epoch("a")  # no cache_id: the last one stays
    assert await store.tier_epoch("a") == (3, "cache-1")
    # Bumping a missing namespace creates it.
    await store.bump_tier_epoch("b", cache_id="cache-2")
    assert await store.tier_epoch("b") == (1, "cache-2")
    assert await store.tier_epoch("c") == (0, "")
    # Every namespace at once, existing rows only.
    await store.bump_tier_epoch()
    assert [await store.tier_epoch(n) for n in "abc"] == [(4, "cache-1"), (2, "cache-2"), (1, "")]
    await store.bump_tier_epoch(None, cache_id="cache-3")
    assert [await store.tier_epoch(n) for n in "abc"] == [
        (5, "cache-3"),
        (3, "cache-3"),
        (2, "cache-3"),
    ]
    assert await store.tier_epoch("new") == (0, "")


async def test_caches_in_use_once_a_namespace_names_a_cache_server(store: SessionStore) -> None:
    assert await store.caches_in_use() is False
    await store.tier_epoch("plain")
    await store.bump_tier_epoch("plain")
    assert await store.caches_in_use() is False
    await store.bump_tier_epoch("cached", cache_id="run-1")
    assert await store.caches_in_use() is True


async def test_concurrent_tier_epoch_bumps_are_never_lost(store: SessionStore) -> None:
    names = ["x", "y", "z"]
    await asyncio.gather(*(store.tier_epoch(n) for n in names))
    await asyncio.gather(
        *(store.bump_tier_epoch(names[i % 3], cache_id=f"c{i}") for i in range(30)),
        *(store.bump_tier_epoch(None) for _ in range(10)),
    )
    epochs = [await store.tier_epoch(n) for n in names]
    assert [e.epoch for e in epochs] == [20, 20, 20]
    assert all(e.cache_id.startswith("c") for e in epochs)
