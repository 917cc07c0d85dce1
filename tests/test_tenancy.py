"""Tenants: a tenant-bound manager sees only its tenant's sessions, on every backend.

Two tenant-bound managers (``acme``, ``globex``) and one untenanted manager share one store,
cache and namespace, as the HTTP service's do. To a tenant, another tenant's session must be
exactly an id that does not exist, on every call, and whatever its caches hold.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, NamedTuple

import orjson
import pytest

from agent_core.bus.base import SessionEvent
from agent_core.errors import ConfigurationError, ConflictError
from agent_core.models import Lease
from agent_core.sessions import AgentSession, SessionManager, SessionState
from tests.conftest import MakeManager


class Trio(NamedTuple):
    acme: SessionManager
    globex: SessionManager
    admin: SessionManager


@pytest.fixture
async def trio(make_manager: MakeManager) -> Trio:
    return Trio(
        await make_manager(tenant="acme"),
        await make_manager(tenant="globex"),
        await make_manager(),
    )


async def outcome(call: Awaitable[Any]) -> tuple[str, Any]:
    """What a call did, comparable between two ids: its error type, or what it returned with
    the id-specific parts left out."""
    try:
        value = await call
    except Exception as exc:
        return ("raised", type(exc).__name__)
    if isinstance(value, AgentSession):
        return ("session", None)
    return ("returned", value)


async def snapshot(admin: SessionManager, session_id: str) -> tuple[Any, ...]:
    """Everything stored about a session, read by the untenanted manager."""
    got = await admin.get_session(session_id)
    assert got is not None
    trail = await admin.list_checkpoints(session_id, limit=1000)
    lease = await admin.current_lease(session_id)
    return (got.to_dict(), [cp.to_dict() for cp in trail], lease)


# --- identity --------------------------------------------------------------------------------


async def test_sessions_belong_to_the_tenant_that_created_them(trio: Trio) -> None:
    made = await trio.acme.create_session("grader", "u1", context={"k": 1})
    assert made.tenant == "acme"
    got = await trio.acme.get_session(made.session_id)
    assert got is not None and got.tenant == "acme"
    seen = await trio.admin.get_session(made.session_id)
    assert seen is not None and seen.tenant == "acme"
    assert await trio.globex.get_session(made.session_id) is None
    untenanted = await trio.admin.create_session("grader", "u1")
    assert untenanted.tenant == ""
    assert await trio.acme.get_session(untenanted.session_id) is None
    assert trio.acme.tenant == "acme" and trio.admin.tenant is None


def test_the_tenant_is_in_the_dict_only_when_set() -> None:
    plain = AgentSession("x")
    assert "tenant" not in plain.to_dict()
    owned = AgentSession("x", tenant="acme")
    assert owned.to_dict()["tenant"] == "acme"
    assert AgentSession.from_dict(owned.to_dict()).tenant == "acme"
    assert AgentSession.from_dict(plain.to_dict()).tenant == ""


@pytest.mark.parametrize("name", ["", "a b", "x'y", "-lead", "é", "a" * 65, "a;b", "a\\b"])
def test_invalid_tenant_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError):
        SessionManager(tenant=name)
    with pytest.raises(ConfigurationError):
        SessionManager.from_url("memory://", tenant=name)


def test_valid_tenant_names_are_accepted() -> None:
    for name in ["a", "Acme-1", "acme.eu_west", "0", "a" * 64]:
        assert SessionManager(tenant=name).tenant == name


# --- another tenant's session is an unknown id --------------------------------------------------


async def test_every_by_id_call_on_another_tenants_session_is_an_unknown_id(trio: Trio) -> None:
    acme, globex, admin = trio
    owned = await acme.create_session("grader", "u1", context={"k": 1}, metadata={"m": 1})
    await acme.append_checkpoint(owned.session_id, "step", {"n": 1})
    lease = await acme.claim(owned.session_id, "worker-a", timedelta(seconds=30))
    # Warm every cache of every manager with the session.
    for manager in (acme, admin):
        assert await manager.get_session(owned.session_id) is not None
    before = await snapshot(admin, owned.session_id)
    stale = await acme.get_session(owned.session_id)
    assert stale is not None
    unknown = str(uuid.uuid4())

    def calls(sid: str) -> list[Callable[[], Awaitable[Any]]]:
        as_other = AgentSession.from_dict({**stale.to_dict(), "session_id": sid})
        as_other.context["changed"] = True
        their_lease = Lease(sid, lease.owner, lease.token, lease.expires_at)
        return [
            lambda: globex.get_session(sid),
            lambda: globex.update_session(as_other),
            lambda: globex.append_checkpoint(sid, "intruder", {"x": 1}),
            lambda: globex.append_checkpoint(sid, "intruder", idempotency_key="k"),
            lambda: globex.heartbeat(sid),
            lambda: globex.patch_context(sid, {"x": 1}),
            lambda: globex.set_state(sid, "paused"),
            lambda: globex.set_state(sid, SessionState.FAILED, "why"),
            lambda: globex.list_checkpoints(sid),
            lambda: globex.claim(sid, "worker-b", timedelta(seconds=30)),
            lambda: globex.current_lease(sid),
            lambda: globex.renew(their_lease, timedelta(seconds=30)),
            lambda: globex.release(their_lease),
            lambda: globex.heartbeat(sid, lease=their_lease),
            lambda: globex.purge(session_id=sid),
            lambda: globex.purge(session_id=sid, user_id="u1"),
            lambda: globex.delete_session(sid),
        ]

    for on_theirs, on_unknown in zip(calls(owned.session_id), calls(unknown), strict=True):
        assert await outcome(on_theirs()) == await outcome(on_unknown())
    # Nothing changed, and the owner's caches still serve it.
    assert await snapshot(admin, owned.session_id) == before
    for manager in (acme, admin):
        got = await manager.get_session(owned.session_id)
        assert got is not None and got.version == before[0]["version"]
    assert await globex.get_session(owned.session_id) is None
    await acme.release(lease)


async def test_an_untenanted_manager_sees_and_writes_every_tenants_sessions(trio: Trio) -> None:
    acme, globex, admin = trio
    a = await acme.create_session("grader", "u1")
    g = await globex.create_session("grader", "u1")
    assert {s.session_id for s in await admin.list_sessions()} >= {a.session_id, g.session_id}
    head = await admin.patch_context(a.session_id, {"by": "admin"})
    assert head.tenant == "acme"
    got = await acme.get_session(a.session_id)
    assert got is not None and got.context == {"by": "admin"} and got.tenant == "acme"
    assert await admin.delete_session(g.session_id) is True
    assert await globex.get_session(g.session_id) is None


# --- lists, events, sweeps, purges, exports ---------------------------------------------------


async def test_lists_are_confined_to_the_tenant(trio: Trio) -> None:
    acme, globex, admin = trio
    mine = {(await acme.create_session("grader", "u1")).session_id for _ in range(3)}
    theirs = {(await globex.create_session("grader", "u1")).session_id for _ in range(2)}
    paused = await globex.create_session("tutor", "u2")
    await globex.set_state(paused.session_id, "paused")
    theirs.add(paused.session_id)

    def ids(sessions: list[AgentSession]) -> set[str]:
        return {s.session_id for s in sessions}

    assert ids(await acme.list_sessions()) == mine
    assert ids(await acme.list_sessions(state=None)) == mine
    assert ids(await acme.list_sessions(state="paused")) == set()
    assert ids(await acme.get_active_sessions(user_id="u1")) == mine
    assert ids(await acme.get_active_sessions(agent_type="grader")) == mine
    assert ids(await globex.list_sessions(state=None)) == theirs
    assert ids(await admin.list_sessions(state=None)) == mine | theirs
    # Paging with a cursor from another tenant's listing still stays inside the tenant.
    first = sorted(mine | theirs)[0]
    assert ids(await acme.list_sessions(after=first)) == {s for s in mine if s > first}
    for session in await acme.list_sessions(state=None):
        assert session.tenant == "acme"


async def test_events_are_confined_to_the_tenant(trio: Trio) -> None:
    acme, globex, admin = trio
    async with acme.events() as a_stream, globex.events() as g_stream, admin.events() as all_:
        a = await acme.create_session("grader", "u1")
        g = await globex.create_session("grader", "u1")
        await acme.append_checkpoint(a.session_id, "step")
        await globex.heartbeat(g.session_id)
        lease = await acme.claim(a.session_id, "w", timedelta(seconds=30))
        await acme.release(lease)
        await acme.delete_session(a.session_id)
        await globex.purge(session_id=g.session_id)

        async def drain(stream: Any, count: int) -> list[SessionEvent]:
            return [await stream.get(timeout=5) for _ in range(count)]

        got_a = await drain(a_stream, 5)
        got_g = await drain(g_stream, 3)
        got_all = await drain(all_, 8)
        await asyncio.sleep(0.2)
        with pytest.raises(TimeoutError):
            await a_stream.get(timeout=0.05)
        with pytest.raises(TimeoutError):
            await g_stream.get(timeout=0.05)
    assert {e.session_id for e in got_a} == {a.session_id}
    assert {e.tenant for e in got_a} == {"acme"}
    assert {e.session_id for e in got_g} == {g.session_id}
    assert {e.tenant for e in got_g} == {"globex"}
    assert {e.session_id for e in got_all} == {a.session_id, g.session_id}


async def test_stale_sweeps_and_lease_expiry_are_confined_to_the_tenant(trio: Trio) -> None:
    acme, globex, admin = trio
    a = await acme.create_session("grader")
    g = await globex.create_session("grader")
    a_lease = await acme.claim(a.session_id, "w", timedelta(milliseconds=1))
    g_lease = await globex.claim(g.session_id, "w", timedelta(milliseconds=1))
    await asyncio.sleep(0.05)
    result = await globex.reap(max_age=timedelta(0))
    assert (result.expired_leases, result.failed_stale) == (1, 1)
    assert (await admin.get_session(g.session_id)).state is SessionState.FAILED  # type: ignore[union-attr]
    kept = await acme.get_session(a.session_id)
    assert kept is not None and kept.state is SessionState.ACTIVE
    assert g_lease.session_id == g.session_id
    # acme's expired lease is still there to be expired by acme's reaper.
    assert (await acme.reap(max_age=timedelta(hours=1))).expired_leases == 1
    assert a_lease.session_id == a.session_id
    assert await acme.cleanup_stale_sessions(max_age=timedelta(0)) == 1


async def test_purge_by_user_is_confined_to_the_tenant(trio: Trio) -> None:
    acme, globex, admin = trio
    mine = [await acme.create_session("grader", "u1") for _ in range(2)]
    theirs = [await globex.create_session("grader", "u1") for _ in range(3)]
    assert await globex.purge(user_id="u1") == 3
    for s in theirs:
        assert await admin.get_session(s.session_id) is None
    for s in mine:
        assert await acme.get_session(s.session_id) is not None
    assert await acme.purge(user_id="u1") == 2


async def test_exports_and_the_audit_log_are_confined_to_the_tenant(trio: Trio) -> None:
    acme, globex, admin = trio
    mine = await acme.create_session("grader", "u1", context={"secret": "acme"})
    await acme.append_checkpoint(mine.session_id, "step", {"secret": "acme"})
    theirs = await globex.create_session("grader", "u1", context={"secret": "globex"})
    await globex.delete_session(theirs.session_id)  # exports include deleted sessions

    async def export(manager: SessionManager) -> list[dict[str, Any]]:
        return [orjson.loads(line) async for line in manager.export("u1", actor="dpo")]

    lines = await export(acme)
    assert {line.get("session_id") for line in lines if line["type"] != "end"} == {mine.session_id}
    assert lines[-1] == {"type": "end", "user_id": "u1", "sessions": 1, "checkpoints": 2}
    assert "globex" not in str(lines)
    assert {line.get("session_id") for line in await export(globex)} == {
        theirs.session_id,
        None,
    }
    everything = await export(admin)
    assert everything[-1]["sessions"] == 2
    # Each tenant's audit log holds its own export only; the untenanted one holds all three.
    assert [(r.action, r.session_count) for r in await acme.audit_log()] == [("export", 1)]
    assert [(r.action, r.session_count) for r in await globex.audit_log()] == [("export", 1)]
    assert len(await admin.audit_log(action="export")) == 3


async def test_retention_is_confined_to_the_tenant(trio: Trio) -> None:
    acme, globex, admin = trio
    a = await acme.create_session("grader", "u1")
    g = await globex.create_session("grader", "u1")
    await acme.delete_session(a.session_id)
    await globex.delete_session(g.session_id)
    await globex.set_retention_policy(deleted_days=0, terminal_days=None, actor="ops")
    assert (await acme.retention_policy()).deleted_days is None
    assert (await globex.retention_policy()).deleted_days == 0
    assert (await admin.retention_policy()).deleted_days is None
    await asyncio.sleep(0.01)
    assert (await globex.apply_retention()).deleted == 1
    assert (await acme.apply_retention()).total == 0

    async def user_sessions(manager: SessionManager) -> set[str]:
        return {
            line["session_id"]
            async for line in _lines(manager.export("u1"))
            if line["type"] == "session"
        }

    assert await user_sessions(admin) == {a.session_id}
    assert await acme.audit_log() == []
    assert [r.action for r in await globex.audit_log()] == ["retention_set", "retention"]


async def _lines(export: Any) -> Any:
    async for line in export:
        yield orjson.loads(line)


# --- caches -------------------------------------------------------------------------------


async def test_caches_never_serve_another_tenants_session(trio: Trio) -> None:
    acme, globex, admin = trio
    owned = await acme.create_session("grader", "u1", context={"k": 1})
    for _ in range(3):  # fills every tier: in-process, shared
        assert await acme.get_session(owned.session_id) is not None
        assert await admin.get_session(owned.session_id) is not None
    for _ in range(3):
        assert await globex.get_session(owned.session_id) is None
    # globex's misses and failed writes left the owner's caches alone.
    await acme.patch_context(owned.session_id, {"k": 2})
    hits = acme.stats["hits.local"] + acme.stats["hits.shared"]
    got = await acme.get_session(owned.session_id)
    assert got is not None and got.context == {"k": 2} and got.tenant == "acme"
    if acme.local is not None or acme.tier.caches:
        assert acme.stats["hits.local"] + acme.stats["hits.shared"] > hits


# --- records ------------------------------------------------------------------------------


async def test_records_are_confined_to_the_tenant(trio: Trio) -> None:
    acme, globex, admin = trio
    theirs = await globex.create_session("grader", "u1")
    unknown = str(uuid.uuid4())
    # Attaching records to another tenant's session is attaching them to an unknown id.
    assert await outcome(
        acme.put_records("s", [("k", b"v")], session_id=theirs.session_id)
    ) == await outcome(acme.put_records("s", [("k", b"v")], session_id=unknown))
    assert await acme.list_records("s") == []
    await globex.put_records("s", [("k", b"globex")], session_id=theirs.session_id)
    await globex.put_records("s", [("u", b"globex")], user_id="u1")
    await acme.put_records("s", [("k", b"acme"), ("u", b"acme")], user_id="u1")
    assert await acme.get_records("s", ["k", "u"]) == {"k": b"acme", "u": b"acme"}
    assert await globex.get_records("s", ["k", "u"]) == {"k": b"globex", "u": b"globex"}
    assert await acme.list_scopes("") == ["s"]
    # acme's purge of its user u1 leaves globex's u1 (sessions and records) alone.
    assert await acme.purge(user_id="u1") == 0
    assert await acme.get_records("s", ["k", "u"]) == {}
    assert await globex.get_records("s", ["k", "u"]) == {"k": b"globex", "u": b"globex"}
    # A session's records go with it, whoever purges it.
    assert await admin.purge(session_id=theirs.session_id) == 1
    assert await globex.get_records("s", ["k", "u"]) == {"u": b"globex"}


async def test_an_id_taken_by_another_tenant_cannot_be_created_again(trio: Trio) -> None:
    # Session ids are global: the store refuses the id (a conflict), and the owner's session
    # is left as it was.
    acme, globex, _ = trio
    owned = await acme.create_session("grader", "u1", context={"k": 1})
    with pytest.raises(ConflictError):
        await globex.create_session("grader", "u1", session_id=owned.session_id)
    got = await acme.get_session(owned.session_id)
    assert got is not None and got.version == 1 and got.context == {"k": 1}
    assert await globex.get_session(owned.session_id) is None
