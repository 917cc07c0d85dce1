"""The shared-tier contract (``agent_core.tiers.base``), run on every implementation.

Each test gets two tiers on one fresh namespace, as two processes would have: Valkey (cache and
pub/sub), PostgreSQL LISTEN/NOTIFY and the in-process bus (notifications only).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent_core.bus.base import EventKind, SessionEvent
from agent_core.bus.local import InProcessBus
from agent_core.cache.base import DELETED_VERSION
from agent_core.factory import tier_from_url
from agent_core.sessions.session_models import AgentSession, SessionCheckpoint
from agent_core.tiers.base import Change, SharedTier
from agent_core.tiers.notify import BusTier

TIERS = ["inprocess", "postgres-notify", "valkey"]


@pytest.fixture(params=TIERS)
async def tiers(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[SharedTier, SharedTier]]:
    namespace = f"tier{uuid.uuid4().hex[:10]}"
    kind = request.param
    if kind == "inprocess":
        bus = InProcessBus()
        pair: tuple[SharedTier, SharedTier] = (BusTier(bus), BusTier(bus))
    else:
        store_url = request.getfixturevalue("postgres_server").dsn
        cache_url = request.getfixturevalue("valkey_server").url if kind == "valkey" else None
        pair = (
            tier_from_url(cache_url, store_url, namespace=namespace, ttl=3600),
            tier_from_url(cache_url, store_url, namespace=namespace, ttl=3600),
        )
    for tier in pair:
        await tier.open()
    try:
        yield pair
    finally:
        for tier in pair:
            await tier.close()


def _event(session_id: str, version: int, kind: EventKind = EventKind.CONTEXT) -> SessionEvent:
    return SessionEvent(kind, session_id, version, agent_type="grader", user_id="u1")


async def _collect(tier: SharedTier) -> tuple[list[SessionEvent], Any]:
    got: list[SessionEvent] = []
    unsubscribe = tier.bus.subscribe(got.append)
    return got, unsubscribe


async def _wait_for(got: list[SessionEvent], count: int) -> None:
    async with asyncio.timeout(5):
        while len(got) < count:
            await asyncio.sleep(0.01)


async def test_announced_events_reach_the_other_tier_in_order(
    tiers: tuple[SharedTier, SharedTier],
) -> None:
    a, b = tiers
    got, unsubscribe = await _collect(b)
    await asyncio.sleep(0.1)  # listeners subscribe asynchronously on some backends
    sid = str(uuid.uuid4())
    await a.announce([_event(sid, 1), _event(sid, 2)])
    await a.announce([_event(sid, 3)], wait=False)
    await _wait_for(got, 3)
    unsubscribe()
    assert [(e.session_id, e.version) for e in got] == [(sid, 1), (sid, 2), (sid, 3)]
    assert {(e.agent_type, e.user_id) for e in got} == {("grader", "u1")}


async def test_commit_announces_its_events(tiers: tuple[SharedTier, SharedTier]) -> None:
    a, b = tiers
    got, unsubscribe = await _collect(b)
    await asyncio.sleep(0.1)
    sids = [str(uuid.uuid4()) for _ in range(2)]
    await a.commit([Change(s, 2) for s in sids], [_event(s, 2) for s in sids], epoch=0)
    await _wait_for(got, 2)
    unsubscribe()
    assert [e.session_id for e in got] == sids


def _session(version: int, **context: Any) -> AgentSession:
    session = AgentSession(agent_type="grader", user_id="u1", context=context)
    session.version = version
    return session


async def test_a_tombstone_says_which_version_is_current(
    tiers: tuple[SharedTier, SharedTier],
) -> None:
    a, b = tiers
    s = _session(1, step=1)
    await b.fill(s, epoch=7)
    await a.commit([Change(s.session_id, 2)], [], epoch=7)
    if not a.caches:
        assert await b.header(s.session_id) is None
        assert await b.get(s.session_id, 7) is None
        return
    assert await b.header(s.session_id) == (2, 7)
    assert await b.get(s.session_id, 7) is None  # a tombstone is no entry
    await b.fill(s, epoch=7)  # a slow reader's older copy is refused
    assert await a.get(s.session_id, 7) is None
    newer = _session(2, step=2)
    newer.session_id = s.session_id
    await b.fill(newer, epoch=7)  # the version the tombstone names is welcome
    got = await a.get(s.session_id, 7)
    assert got is not None and got.version == 2 and got.context == {"step": 2}


async def test_entries_of_another_epoch_are_not_served_and_are_replaced(
    tiers: tuple[SharedTier, SharedTier],
) -> None:
    a, b = tiers
    s = _session(3, step=3)
    await a.fill(s, epoch=1)
    if not a.caches:
        assert await b.get(s.session_id, 1) is None
        return
    got = await b.get(s.session_id, 1)
    assert got is not None and got.context == {"step": 3}
    assert await b.get(s.session_id, 2) is None
    await b.fill(s, epoch=2)  # same version, newer epoch: re-tagged
    assert await a.header(s.session_id) == (3, 2)
    await a.fill(s, epoch=1)  # same version, older epoch: refused
    assert await a.header(s.session_id) == (3, 2)


async def test_a_delete_tombstone_refuses_every_version(
    tiers: tuple[SharedTier, SharedTier],
) -> None:
    a, b = tiers
    s = _session(5)
    await a.commit([Change(s.session_id, DELETED_VERSION)], [], epoch=0)
    s.version = 10**9
    await b.fill(s, epoch=0)
    assert await a.get(s.session_id, 0) is None
    if a.caches:
        assert await a.header(s.session_id) == (DELETED_VERSION, 0)


async def test_an_entry_change_caches_the_given_version(
    tiers: tuple[SharedTier, SharedTier],
) -> None:
    a, b = tiers
    s = _session(4, step=4)
    await a.commit([Change(s.session_id, 4, s)], [_event(s.session_id, 4)], epoch=3)
    got = await b.get(s.session_id, 3)
    if not a.caches:
        assert got is None
        return
    assert got is not None and got.version == 4 and got.context == {"step": 4}
    got.context["step"] = 99  # a caller's edit never reaches the tier
    again = await b.get(s.session_id, 3)
    assert again is not None and again.context == {"step": 4}


async def test_identity_is_stable_while_the_server_lives(
    tiers: tuple[SharedTier, SharedTier],
) -> None:
    a, b = tiers
    first = await a.identity()
    assert first == await b.identity() == await a.identity()
    assert bool(first) is a.caches


async def test_a_step_advances_the_entry_it_follows_and_only_that(
    tiers: tuple[SharedTier, SharedTier],
) -> None:
    a, b = tiers
    s = _session(1, step=1)
    s.checkpoint("one", {"n": 1})
    s.checkpoints[-1].seq = 1
    s.checkpoint_count = 1
    await b.fill(s, epoch=2)
    head = AgentSession(
        agent_type="grader", user_id="u1", session_id=s.session_id, context={"step": 2}
    )
    head.version, head.checkpoint_count = 2, 2
    added = SessionCheckpoint("two", data={"n": 2}, seq=2)
    await a.commit([Change(s.session_id, 2, None, head, (added,), 1)], [], epoch=2)
    got = await b.get(s.session_id, 2)
    if not a.caches:
        assert got is None
        return
    # Advanced in place: the new head's fields, the window trimmed to the step's window of 1.
    assert got is not None and got.version == 2 and got.context == {"step": 2}
    assert [(cp.seq, cp.name, cp.data) for cp in got.checkpoints] == [(2, "two", {"n": 2})]
    assert got.checkpoint_count == 2
    # A step that does not follow what the tier holds leaves a tombstone at its version.
    head.version = 4
    await a.commit([Change(s.session_id, 4, None, head, (), 1)], [], epoch=2)
    assert await b.get(s.session_id, 2) is None
    assert await b.header(s.session_id) == (4, 2)
    # ...and so does a step of another epoch.
    other = _session(1)
    await b.fill(other, epoch=2)
    head.session_id, head.version = other.session_id, 2
    await a.commit([Change(other.session_id, 2, None, head, (), 1)], [], epoch=3)
    assert await b.header(other.session_id) == (2, 3)
    assert await b.get(other.session_id, 3) is None


async def test_a_step_that_keeps_the_context_leaves_it_as_cached(
    tiers: tuple[SharedTier, SharedTier],
) -> None:
    a, b = tiers
    s = _session(1, step=1)
    s.metadata = {"tenant": "acme"}
    await b.fill(s, epoch=0)
    head = AgentSession(agent_type="grader", user_id="u1", session_id=s.session_id)
    head.version = 2  # its context and metadata are empty: a step that keeps them sends neither
    await a.commit([Change(s.session_id, 2, None, head, (), 50, True)], [], epoch=0)
    got = await b.get(s.session_id, 0)
    if not a.caches:
        assert got is None
        return
    assert got is not None and got.version == 2
    assert got.context == {"step": 1} and got.metadata == {"tenant": "acme"}
