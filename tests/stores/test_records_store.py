"""The records part of the store API on every backend, called directly: tenants, the export
listings, purge, and a put racing a purge.

A store's ``tenant`` is set by the manager before ``open()``; these tests switch it on one open
store to look at the same data as another tenant would (the stores read it on every call).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from agent_core.errors import SessionNotFound
from agent_core.sessions.session_models import AgentSession, SessionState
from agent_core.stores.base import SessionStore, StoredRecord, prefix_end
from agent_core.stores.memory import MemoryStore
from agent_core.stores.postgres import PostgresStore
from agent_core.stores.sqlite import SQLiteStore


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


async def new_session(store: SessionStore, user_id: str = "u1") -> str:
    head = await store.create(AgentSession(agent_type="tester", user_id=user_id))
    return head.session_id


def test_prefix_end() -> None:
    assert prefix_end("") is None
    assert prefix_end("ab") == "ac"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff\U0010ffff") is None
    assert prefix_end("a\ud7ff") == "a\ue000"
    for prefix in ("ab", "a\U0010ffff", "a\ud7ff", "é"):
        end = prefix_end(prefix)
        assert end is not None
        for text in (prefix, prefix + "\U0010ffff" * 3, prefix + "\x01"):
            assert prefix <= text < end


async def test_tenants_do_not_see_each_other(store: SessionStore) -> None:
    await store.put_records("s", [("k", b"none")])
    store.tenant = "acme"
    assert await store.get_records("s", ["k"]) == {}
    assert await store.list_records("s") == []
    assert await store.list_scopes("") == []
    assert await store.delete_records("s") == 0
    assert await store.put_records("s", [("k", b"acme"), ("j", b"acme")]) == 2
    assert await store.list_scopes("") == ["s"]
    store.tenant = "other"
    assert await store.list_scopes("") == []
    assert await store.delete_records("s", keys=["k"]) == 0
    store.tenant = ""
    assert await store.get_records("s", ["k"]) == {"k": b"none"}  # "" is the no-tenant tenant
    store.tenant = None
    assert await store.get_records("s", ["k", "j"]) == {"k": b"none"}
    assert await store.delete_records("s", prefix="") == 1
    store.tenant = "acme"
    assert dict(await store.list_records("s")) == {"j": b"acme", "k": b"acme"}


async def test_purge_by_user_removes_records_of_its_tenant_or_of_all(
    store: SessionStore,
) -> None:
    store.tenant = "acme"
    await store.put_records("s", [("acme", b"")], user_id="u1")
    store.tenant = "other"
    await store.put_records("s", [("other", b"")], user_id="u1")
    await store.put_records("s", [("other-u2", b"")], user_id="u2")
    assert await store.purge(user_id="u1") == []
    assert await store.list_records("s") == [("other-u2", b"")]
    store.tenant = "acme"
    assert await store.list_records("s") == [("acme", b"")]
    store.tenant = None  # an un-tenanted store (the CLI, an admin) erases every tenant's
    await store.purge(user_id="u2")
    await store.purge(user_id="u1")
    for tenant in ("acme", "other"):
        store.tenant = tenant
        assert await store.list_records("s") == []


async def test_purge_by_session_and_user_keeps_the_users_other_records(
    store: SessionStore,
) -> None:
    sid = await new_session(store, "u1")
    other = await new_session(store, "u1")
    await store.put_records("s", [("a", b"")], session_id=sid, user_id="u1")
    await store.put_records("s", [("b", b"")], session_id=other, user_id="u1")
    await store.put_records("s", [("c", b"")], user_id="u1")
    refs = await store.purge(session_id=sid, user_id="u1")
    assert [ref.session_id for ref in refs] == [sid]
    assert [key for key, _ in await store.list_records("s")] == ["b", "c"]


async def test_purge_aged_removes_the_records_of_what_it_purges(store: SessionStore) -> None:
    sid = await new_session(store)
    kept = await new_session(store)
    await store.put_records("s", [("a", b"")], session_id=sid)
    await store.put_records("s", [("b", b"")], session_id=kept)
    await store.delete(sid)
    refs = await store.purge_aged([SessionState.DELETED], timedelta(0), limit=10)
    assert [ref.session_id for ref in refs] == [sid]
    assert [key for key, _ in await store.list_records("s")] == ["b"]


async def test_export_listings_page_in_order(store: SessionStore) -> None:
    # A session belongs to one tenant (the one that created it), and only that tenant may
    # attach records to it: each tenant gets its own sessions.
    keys = [f"k{i:02d}" for i in range(7)]
    sids: dict[str, str] = {}
    for tenant in ("b", "a"):
        store.tenant = tenant
        sid = sids[tenant] = await new_session(store, "u1")
        their = await new_session(store, "u2")
        for scope in ("s2", "s1"):
            await store.put_records(scope, [(k, k.encode()) for k in keys], session_id=sid)
            await store.put_records(scope, [("u", b"u")], user_id="u1")
            await store.put_records(scope, [("of-u1", b"")], session_id=sid, user_id="u1")
            await store.put_records(scope, [("mixed", b"")], session_id=their, user_id="u1")

    async def all_pages(fetch: object, size: int) -> list[StoredRecord]:
        out: list[StoredRecord] = []
        after: tuple[str, str, str] | None = None
        while True:
            page = await fetch(limit=size, after=after)  # type: ignore[operator]
            out.extend(page)
            if len(page) < size:
                return out
            after = (page[-1].tenant, page[-1].scope, page[-1].key)

    store.tenant = None
    for tenant, sid in sids.items():
        of_session = await all_pages(
            lambda sid=sid, **kw: store.list_session_records(sid, **kw),  # type: ignore[misc]
            3,
        )
        expected = sorted(
            (tenant, scope, key) for scope in ("s1", "s2") for key in [*keys, "of-u1"]
        )
        assert [(r.tenant, r.scope, r.key) for r in of_session] == expected
        assert all(r.session_id == sid for r in of_session)
        by_key = {(r.tenant, r.scope, r.key): r for r in of_session}
        assert by_key[(tenant, "s1", "k03")].value == b"k03"
        assert by_key[(tenant, "s1", "of-u1")].user_id == "u1"

    of_user = await all_pages(lambda **kw: store.list_user_records("u1", **kw), 2)
    # the user's records that are not attached to one of the user's sessions
    assert [(r.tenant, r.scope, r.key) for r in of_user] == sorted(
        (tenant, scope, key)
        for tenant in ("a", "b")
        for scope in ("s1", "s2")
        for key in ("mixed", "u")
    )
    store.tenant = "a"
    assert {r.tenant for r in await store.list_session_records(sids["a"])} == {"a"}
    assert await store.list_session_records(sids["b"]) == []
    assert {r.tenant for r in await store.list_user_records("u1")} == {"a"}
    assert await store.list_session_records(sids["a"], limit=0) == []


async def test_put_racing_a_purge_leaves_no_record_behind(store: SessionStore) -> None:
    """Either the put commits first (and the purge removes its records) or the purge does (and
    the put raises ``SessionNotFound``): never a record of a purged session."""
    for round_ in range(10):
        sid = await new_session(store)
        scope = f"race{round_}"

        async def put(i: int, sid: str = sid, scope: str = scope) -> int:
            try:
                return await store.put_records(scope, [(f"k{i}", b"v")], session_id=sid)
            except SessionNotFound:
                return 0

        *_, purged = await asyncio.gather(*(put(i) for i in range(5)), store.purge(session_id=sid))
        assert [ref.session_id for ref in purged] == [sid]  # type: ignore[union-attr]
        assert await store.list_records(scope) == []
        with pytest.raises(SessionNotFound):
            await store.put_records(scope, [("late", b"v")], session_id=sid)
        assert await store.list_records(scope) == []


async def test_limits_and_empty_calls(store: SessionStore) -> None:
    await store.put_records("s", [("a", b"1")])
    assert await store.list_records("s", limit=0) == []
    assert await store.list_scopes("", limit=0) == []
    assert await store.put_records("s", []) == 0
    assert await store.get_records("s", []) == {}
    assert await store.delete_records("s", keys=[]) == 0
    assert await store.get_records("s", ["a"]) == {"a": b"1"}


# Characters whose order trips byte-wise, collation-wise or UTF-16-wise comparisons.
ALPHABET = [
    "a",
    "A",
    "b",
    "B",
    "/",
    ":",
    "é",
    "É",
    "z",
    "中",
    "\ufdd0",
    "\uffff",
    "\U0001f600",
    "\U0010ffff",
    "\x01",
    " ",
]


async def test_random_operations_agree_with_the_memory_store(store: SessionStore) -> None:
    reference = MemoryStore()
    await reference.open()
    rng = random.Random(20261202)

    def word(size: int) -> str:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, size)))

    def cursor() -> str | None:
        return None if rng.random() < 0.5 else word(3)

    scopes = [word(2) for _ in range(4)]
    for step in range(300):
        scope = rng.choice(scopes)
        pick = rng.random()
        call: tuple[str, tuple[object, ...], dict[str, object]]
        if pick < 0.35:
            items = {word(3): bytes([rng.randrange(256)]) * rng.randint(0, 3) for _ in range(4)}
            keep = rng.random() < 0.3
            call = ("put_records", (scope, list(items.items())), {"keep_existing": keep})
        elif pick < 0.45:
            call = ("get_records", (scope, [word(3) for _ in range(5)]), {})
        elif pick < 0.8:
            options = {
                "prefix": "" if rng.random() < 0.5 else word(2),
                "after": cursor(),
                "before": cursor(),
                "limit": rng.randint(1, 8),
                "descending": rng.random() < 0.5,
            }
            call = ("list_records", (scope,), options)
        elif pick < 0.9:
            if rng.random() < 0.5:
                call = ("delete_records", (scope,), {"keys": [word(3) for _ in range(3)]})
            else:
                call = ("delete_records", (scope,), {"prefix": word(2)})
        else:
            call = (
                "list_scopes",
                ("" if rng.random() < 0.5 else word(1),),
                {"after": cursor(), "limit": rng.randint(1, 5)},
            )
        name, args, kwargs = call
        expected = await getattr(reference, name)(*args, **kwargs)
        got = await getattr(store, name)(*args, **kwargs)
        assert got == expected, (step, call)
    for scope in scopes:
        assert await store.list_records(scope, limit=10_000) == await reference.list_records(
            scope, limit=10_000
        )
    await reference.close()
