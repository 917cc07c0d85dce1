"""Records (``put_records`` ... ``list_scopes``): one contract on every backend (see conftest)."""

from __future__ import annotations

import asyncio
import base64
import uuid

import orjson
import pytest

from agent_core.errors import (
    ConflictError,
    InvalidSessionId,
    InvalidValue,
    PayloadTooLarge,
    SessionNotFound,
    ValidationError,
)
from agent_core.sessions import SessionManager
from tests.conftest import MakeManager


def new_scope() -> str:
    return f"test:{uuid.uuid4()}"


async def keys_of(manager: SessionManager, scope: str, **options: object) -> list[str]:
    return [key for key, _ in await manager.list_records(scope, **options)]  # type: ignore[arg-type]


# --- put / get ------------------------------------------------------------------------------


async def test_put_then_get_round_trips(manager: SessionManager) -> None:
    scope = new_scope()
    written = await manager.put_records(scope, [("a", b"1"), ("b", b"2")])
    assert written == 2
    assert await manager.get_records(scope, ["a", "b", "missing"]) == {"a": b"1", "b": b"2"}
    assert await manager.get_records(scope, []) == {}
    assert await manager.get_records(new_scope(), ["a"]) == {}


async def test_put_replaces_by_default(manager: SessionManager) -> None:
    scope = new_scope()
    await manager.put_records(scope, [("a", b"old"), ("b", b"old")])
    assert await manager.put_records(scope, [("a", b"new")]) == 1
    assert await manager.get_records(scope, ["a", "b"]) == {"a": b"new", "b": b"old"}


async def test_keep_existing_inserts_only_absent_keys(manager: SessionManager) -> None:
    scope = new_scope()
    await manager.put_records(scope, [("a", b"first")])
    written = await manager.put_records(scope, [("a", b"second"), ("b", b"b")], keep_existing=True)
    assert written == 1
    assert await manager.get_records(scope, ["a", "b"]) == {"a": b"first", "b": b"b"}
    assert await manager.put_records(scope, [("a", b"x")], keep_existing=True) == 0
    assert await manager.get_records(scope, ["a"]) == {"a": b"first"}


async def test_every_byte_value_round_trips_exactly(manager: SessionManager) -> None:
    scope = new_scope()
    values = {
        "empty": b"",
        "all": bytes(range(256)),
        "zeros": b"\x00" * 1000,
        "dollar": b"$k1.AAAA",  # looks like a sealed body: must still read back as itself
        "json": orjson.dumps({"$sealed": "x", "kid": "k1"}),
        "big": bytes(range(256)) * 1000,
    }
    await manager.put_records(scope, list(values.items()))
    got = await manager.get_records(scope, list(values))
    assert got == values
    assert all(type(value) is bytes for value in got.values())
    listed = dict(await manager.list_records(scope))
    assert listed == values
    assert all(type(value) is bytes for value in listed.values())


async def test_values_are_copied_at_the_boundary(manager: SessionManager) -> None:
    scope = new_scope()
    value = bytearray(b"abc")
    await manager.put_records(scope, [("k", value)])  # type: ignore[list-item]
    value[0] = ord("z")
    assert await manager.get_records(scope, ["k"]) == {"k": b"abc"}


async def test_scopes_are_separate(manager: SessionManager) -> None:
    one, two = new_scope(), new_scope()
    await manager.put_records(one, [("k", b"1")])
    await manager.put_records(two, [("k", b"2")])
    assert await manager.get_records(one, ["k"]) == {"k": b"1"}
    assert await manager.delete_records(one) == 1
    assert await manager.get_records(two, ["k"]) == {"k": b"2"}


# --- ordering and ranges --------------------------------------------------------------------

# Code point order: upper case before lower case, then Latin-1, BMP, astral.
ORDERED = ["A", "B", "Z", "a", "a/1", "a/2", "ab", "b", "z", "é", "ü", "中", "\U0001f600"]


async def test_keys_list_in_code_point_order(manager: SessionManager) -> None:
    scope = new_scope()
    shuffled = ORDERED[::2] + ORDERED[1::2]
    await manager.put_records(scope, [(key, key.encode()) for key in shuffled])
    assert sorted(ORDERED) == ORDERED
    assert await keys_of(manager, scope) == ORDERED
    assert await keys_of(manager, scope, descending=True) == ORDERED[::-1]
    assert dict(await manager.list_records(scope)) == {key: key.encode() for key in ORDERED}


async def test_prefix_after_before_limit(manager: SessionManager) -> None:
    scope = new_scope()
    await manager.put_records(scope, [(key, b"") for key in ORDERED])
    assert await keys_of(manager, scope, prefix="a") == ["a", "a/1", "a/2", "ab"]
    assert await keys_of(manager, scope, prefix="a/") == ["a/1", "a/2"]
    assert await keys_of(manager, scope, prefix="A") == ["A"]
    assert await keys_of(manager, scope, prefix="q") == []
    assert await keys_of(manager, scope, after="a") == ORDERED[4:]
    assert await keys_of(manager, scope, before="a") == ["A", "B", "Z"]
    assert await keys_of(manager, scope, after="Z", before="ab") == ["a", "a/1", "a/2"]
    assert await keys_of(manager, scope, after="a/1", before="a/1") == []
    assert await keys_of(manager, scope, after="b", before="a") == []
    assert await keys_of(manager, scope, after="a", prefix="a") == ["a/1", "a/2", "ab"]
    assert await keys_of(manager, scope, limit=2) == ["A", "B"]
    assert await keys_of(manager, scope, limit=2, descending=True) == ["\U0001f600", "中"]
    assert await keys_of(manager, scope, prefix="a", descending=True, limit=3) == [
        "ab",
        "a/2",
        "a/1",
    ]
    assert await keys_of(manager, scope, before="ab", prefix="a", descending=True) == [
        "a/2",
        "a/1",
        "a",
    ]
    # keys not stored work as cursors too
    assert await keys_of(manager, scope, after="aa", before="c") == ["ab", "b"]


async def test_prefix_edges(manager: SessionManager) -> None:
    scope = new_scope()
    top = "\U0010ffff"
    keys = [
        "x",
        "x" + top,
        "x" + top + "a",
        "x" + top + top,
        "y",
        top,
        top + "a",
        "\ud7ff",
        "\ue000",
    ]
    await manager.put_records(scope, [(key, b"") for key in keys])
    assert await keys_of(manager, scope, prefix="x" + top) == sorted(keys[1:4])
    assert await keys_of(manager, scope, prefix=top) == [top, top + "a"]
    assert await keys_of(manager, scope, prefix="\ud7ff") == ["\ud7ff"]
    assert await keys_of(manager, scope) == sorted(keys)


async def test_paging_forward_and_backward(manager: SessionManager) -> None:
    scope = new_scope()
    keys = [f"k{i:04d}" for i in range(25)]
    await manager.put_records(scope, [(key, key.encode()) for key in keys])
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await keys_of(manager, scope, after=after, limit=10)
        seen.extend(page)
        if len(page) < 10:
            break
        after = page[-1]
    assert seen == keys
    back: list[str] = []
    before: str | None = None
    while True:
        page = await keys_of(manager, scope, before=before, limit=7, descending=True)
        back.extend(page)
        if len(page) < 7:
            break
        before = page[-1]
    assert back == keys[::-1]


# --- delete ---------------------------------------------------------------------------------


async def test_delete_by_keys(manager: SessionManager) -> None:
    scope = new_scope()
    await manager.put_records(scope, [("a", b"1"), ("b", b"2"), ("c", b"3")])
    assert await manager.delete_records(scope, keys=["a", "c", "missing", "a"]) == 2
    assert await keys_of(manager, scope) == ["b"]
    assert await manager.delete_records(scope, keys=["a"]) == 0
    assert await manager.delete_records(scope, keys=[]) == 0
    assert await keys_of(manager, scope) == ["b"]


async def test_delete_by_prefix(manager: SessionManager) -> None:
    scope = new_scope()
    await manager.put_records(scope, [(key, b"") for key in ORDERED])
    assert await manager.delete_records(scope, prefix="a") == 4
    assert await keys_of(manager, scope) == [k for k in ORDERED if not k.startswith("a")]
    assert await manager.delete_records(scope, prefix="A") == 1
    assert await manager.delete_records(scope, prefix="nothing") == 0


async def test_delete_the_whole_scope(manager: SessionManager) -> None:
    scope, other = new_scope(), new_scope()
    await manager.put_records(scope, [(key, b"") for key in ORDERED])
    await manager.put_records(other, [("k", b"")])
    assert await manager.delete_records(scope) == len(ORDERED)
    assert await manager.list_records(scope) == []
    assert await manager.delete_records(scope) == 0
    assert await keys_of(manager, other) == ["k"]
    await manager.put_records(scope, [("k", b"")])
    assert await manager.delete_records(scope, prefix="") == 1


async def test_delete_takes_keys_or_prefix_not_both(manager: SessionManager) -> None:
    scope = new_scope()
    await manager.put_records(scope, [("a", b"")])
    with pytest.raises(ValidationError):
        await manager.delete_records(scope, keys=["a"], prefix="a")
    assert await keys_of(manager, scope) == ["a"]


# --- scopes ---------------------------------------------------------------------------------


async def test_list_scopes(manager: SessionManager) -> None:
    base = f"ls:{uuid.uuid4()}:"
    names = [base + suffix for suffix in ("B", "a", "a/x", "b", "é", "中")]
    for name in reversed(names):
        await manager.put_records(name, [("k1", b""), ("k2", b"")])
    expected = sorted(names)
    assert await manager.list_scopes(base) == expected
    assert await manager.list_scopes(base, limit=2) == expected[:2]
    assert await manager.list_scopes(base, after=expected[1]) == expected[2:]
    assert await manager.list_scopes(base + "a") == [base + "a", base + "a/x"]
    assert await manager.list_scopes(base + "zz") == []
    everything = await manager.list_scopes("", limit=10_000)
    assert set(expected) <= set(everything)
    assert everything == sorted(everything)
    # a scope whose records are all gone is gone
    await manager.delete_records(base + "a")
    assert await manager.list_scopes(base + "a") == [base + "a/x"]


# --- sessions -------------------------------------------------------------------------------


async def test_put_with_a_live_session(manager: SessionManager) -> None:
    session = await manager.create_session("agent", "u1")
    scope = new_scope()
    written = await manager.put_records(
        scope, [("a", b"1")], session_id=session.session_id, user_id="u1"
    )
    assert written == 1
    assert await manager.get_records(scope, ["a"]) == {"a": b"1"}


async def test_put_on_a_missing_or_deleted_session_writes_nothing(manager: SessionManager) -> None:
    scope = new_scope()
    with pytest.raises(SessionNotFound):
        await manager.put_records(scope, [("a", b"1")], session_id=str(uuid.uuid4()))
    session = await manager.create_session("agent", "u1")
    await manager.put_records(scope, [("a", b"kept")], session_id=session.session_id)
    assert await manager.delete_session(session.session_id)
    with pytest.raises(SessionNotFound):
        await manager.put_records(
            scope, [("a", b"new"), ("b", b"2")], session_id=session.session_id
        )
    with pytest.raises(SessionNotFound):
        await manager.put_records(
            scope, [("c", b"3")], session_id=session.session_id, keep_existing=True
        )
    assert dict(await manager.list_records(scope)) == {"a": b"kept"}


async def test_create_session_with_an_explicit_id(manager: SessionManager) -> None:
    sid = str(uuid.uuid4())
    created = await manager.create_session("agent", "u1", session_id=sid)
    assert created.session_id == sid
    got = await manager.get_session(sid)
    assert got is not None
    assert got.agent_type == "agent"
    with pytest.raises(ConflictError):
        await manager.create_session("agent", "u2", session_id=sid)
    await manager.delete_session(sid)
    with pytest.raises(ConflictError):
        await manager.create_session("agent", "u2", session_id=sid)
    with pytest.raises(InvalidSessionId):
        await manager.create_session("agent", session_id="not-a-uuid")
    with pytest.raises(InvalidSessionId):
        await manager.create_session("agent", session_id=sid.upper())


# --- purge and export -----------------------------------------------------------------------


async def test_purge_by_session_erases_its_records(manager: SessionManager) -> None:
    doomed = await manager.create_session("agent", "u1")
    kept = await manager.create_session("agent", "u1")
    scope = new_scope()
    await manager.put_records(scope, [("d1", b""), ("d2", b"")], session_id=doomed.session_id)
    await manager.put_records(scope, [("k", b"")], session_id=kept.session_id, user_id="u1")
    await manager.put_records(scope, [("free", b"")])
    assert await manager.purge(session_id=doomed.session_id) == 1
    assert await keys_of(manager, scope) == ["free", "k"]


async def test_purge_of_a_deleted_session_erases_its_records(manager: SessionManager) -> None:
    session = await manager.create_session("agent", "u1")
    scope = new_scope()
    await manager.put_records(scope, [("a", b"")], session_id=session.session_id)
    await manager.delete_session(session.session_id)
    assert await keys_of(manager, scope) == ["a"]  # soft delete keeps them, as the trail
    assert await manager.purge(session_id=session.session_id) == 1
    assert await keys_of(manager, scope) == []


async def test_purge_by_user_erases_user_and_session_records(manager: SessionManager) -> None:
    user = f"user-{uuid.uuid4()}"
    session = await manager.create_session("agent", user)
    other = await manager.create_session("agent", "someone-else")
    scope = new_scope()
    await manager.put_records(scope, [("of-session", b"")], session_id=session.session_id)
    await manager.put_records(scope, [("of-user", b"")], user_id=user)
    await manager.put_records(scope, [("other-user", b"")], user_id="someone-else")
    await manager.put_records(scope, [("other-session", b"")], session_id=other.session_id)
    assert await manager.purge(user_id=user) == 1
    assert await keys_of(manager, scope) == ["other-session", "other-user"]
    # a user with records and no session
    lonely = f"user-{uuid.uuid4()}"
    await manager.put_records(scope, [("lonely", b"")], user_id=lonely)
    assert await manager.purge(user_id=lonely) == 0
    assert await keys_of(manager, scope) == ["other-session", "other-user"]


async def test_retention_erases_records_of_the_sessions_it_purges(
    manager: SessionManager,
) -> None:
    session = await manager.create_session("agent", "u1")
    scope = new_scope()
    await manager.put_records(scope, [("a", b"")], session_id=session.session_id)
    await manager.delete_session(session.session_id)
    await manager.set_retention_policy(deleted_days=0, terminal_days=None)
    result = await manager.apply_retention()
    assert result.deleted >= 1
    assert await keys_of(manager, scope) == []


async def export_lines(manager: SessionManager, user_id: str) -> list[dict[str, object]]:
    return [orjson.loads(line) async for line in manager.export(user_id)]


async def test_export_includes_the_users_records(manager: SessionManager) -> None:
    user = f"user-{uuid.uuid4()}"
    session = await manager.create_session("agent", user)
    other = await manager.create_session("agent", "someone-else")
    scope = new_scope()
    await manager.put_records(scope, [("s1", b"\x00\xff")], session_id=session.session_id)
    await manager.put_records(scope, [("s2", b"both")], session_id=session.session_id, user_id=user)
    await manager.put_records(scope, [("u1", b"user")], user_id=user)
    await manager.put_records(scope, [("x", b"other")], session_id=other.session_id)
    await manager.put_records(scope, [("y", b"other")], user_id="someone-else")
    await manager.put_records(scope, [("mixed", b"m")], session_id=other.session_id, user_id=user)
    lines = await export_lines(manager, user)
    types = [line["type"] for line in lines]
    assert types[0] == "session"
    assert types[-1] == "end"
    records = [line for line in lines if line["type"] == "record"]
    by_key = {line["key"]: line for line in records}
    assert sorted(by_key) == ["mixed", "s1", "s2", "u1"]  # each once
    assert len(records) == 4
    assert base64.b64decode(str(by_key["s1"]["value_b64"])) == b"\x00\xff"
    assert by_key["s1"]["session_id"] == session.session_id
    assert by_key["s1"]["scope"] == scope
    assert by_key["u1"]["session_id"] is None
    assert by_key["u1"]["user_id"] == user
    assert by_key["mixed"]["session_id"] == other.session_id
    # the session's records come right after its trail, before the records of the user alone
    first_session_record = types.index("record")
    assert all(t in ("session", "checkpoint") for t in types[:first_session_record])
    assert lines[-1]["records"] == 4


# --- concurrency ----------------------------------------------------------------------------


async def test_concurrent_puts_of_different_keys(make_manager: MakeManager) -> None:
    one = await make_manager()
    two = await make_manager()
    scope = new_scope()
    managers = [one, two]
    written = await asyncio.gather(
        *(managers[i % 2].put_records(scope, [(f"k{i:03d}", str(i).encode())]) for i in range(40))
    )
    assert written == [1] * 40
    assert dict(await one.list_records(scope)) == {f"k{i:03d}": str(i).encode() for i in range(40)}


async def test_concurrent_keep_existing_puts_keep_one(make_manager: MakeManager) -> None:
    one = await make_manager()
    two = await make_manager()
    scope = new_scope()
    managers = [one, two]
    written = await asyncio.gather(
        *(
            managers[i % 2].put_records(scope, [("k", str(i).encode())], keep_existing=True)
            for i in range(10)
        )
    )
    assert sorted(written) == [0] * 9 + [1]
    winner = written.index(1)
    assert await one.get_records(scope, ["k"]) == {"k": str(winner).encode()}


async def test_concurrent_deletes_of_one_key_count_it_once(make_manager: MakeManager) -> None:
    one = await make_manager()
    two = await make_manager()
    scope = new_scope()
    managers = [one, two]
    for _ in range(5):
        await one.put_records(scope, [("k", b"v")])
        counts = await asyncio.gather(
            *(managers[i % 2].delete_records(scope, keys=["k"]) for i in range(8))
        )
        assert sorted(counts) == [0] * 7 + [1]


async def test_atomic_pop_with_list_then_delete(make_manager: MakeManager) -> None:
    """The adapters' pop: list the last key, delete it; only the one whose delete counted
    gets it. Every item is popped exactly once, whatever the interleaving."""
    one = await make_manager()
    two = await make_manager()
    scope = new_scope()
    await one.put_records(scope, [(f"{i:03d}", str(i).encode()) for i in range(12)])
    popped: list[str] = []

    async def pop(manager: SessionManager) -> None:
        while True:
            last = await manager.list_records(scope, limit=1, descending=True)
            if not last:
                return
            key, _ = last[0]
            if await manager.delete_records(scope, keys=[key]) == 1:
                popped.append(key)

    await asyncio.gather(pop(one), pop(two), pop(one))
    assert sorted(popped) == [f"{i:03d}" for i in range(12)]


# --- validation -----------------------------------------------------------------------------


BAD_NAMES: list[object] = ["", "\ud800", "a\udfffb", "x" * 1025, "nul\x00", 7, None, b"bytes"]


@pytest.mark.parametrize("bad", BAD_NAMES)
async def test_bad_scope_or_key_changes_nothing(manager: SessionManager, bad: object) -> None:
    scope = new_scope()
    await manager.put_records(scope, [("kept", b"v")])
    with pytest.raises(ValidationError):
        await manager.put_records(bad, [("k", b"v")])  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await manager.put_records(scope, [("ok", b"v"), (bad, b"v")])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        await manager.get_records(scope, [bad])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        await manager.delete_records(scope, keys=["kept", bad])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        await manager.list_records(bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await manager.delete_records(bad)  # type: ignore[arg-type]
    assert dict(await manager.list_records(scope)) == {"kept": b"v"}


async def test_longest_names_are_fine(manager: SessionManager) -> None:
    scope = "s" * 1024
    key = "\U0001f600" * 1024
    await manager.put_records(scope, [(key, b"v")])
    assert await manager.get_records(scope, [key]) == {key: b"v"}
    assert await manager.list_scopes("s" * 1024) == [scope]
    await manager.delete_records(scope)


async def test_oversized_or_non_bytes_value_changes_nothing(make_manager: MakeManager) -> None:
    manager = await make_manager(max_payload_bytes=1000)
    scope = new_scope()
    await manager.put_records(scope, [("k", b"x" * 1000)])
    with pytest.raises(PayloadTooLarge):
        await manager.put_records(scope, [("a", b"v"), ("k", b"x" * 1001)])
    for bad in ("text", 7, None, [1], {"a": 1}):
        with pytest.raises(InvalidValue):
            await manager.put_records(scope, [("a", b"v"), ("k", bad)])  # type: ignore[list-item]
    assert dict(await manager.list_records(scope)) == {"k": b"x" * 1000}


async def test_bad_call_shapes_change_nothing(manager: SessionManager) -> None:
    scope = new_scope()
    with pytest.raises(ValidationError):
        await manager.put_records(scope, [("a", b"1"), ("a", b"2")])
    with pytest.raises(ValidationError):
        await manager.put_records(scope, [("a",)])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        await manager.put_records(scope, "ab")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await manager.get_records(scope, "ab")
    with pytest.raises(InvalidSessionId):
        await manager.put_records(scope, [("a", b"1")], session_id="nope")
    with pytest.raises(ValidationError):
        await manager.put_records(scope, [("a", b"1")], user_id="\ud800")
    with pytest.raises(ValidationError):
        await manager.put_records(scope, [(f"{i}", b"") for i in range(10_001)])
    for limit in (0, -1, 10_001, 1.5, True):
        with pytest.raises(ValidationError):
            await manager.list_records(scope, limit=limit)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            await manager.list_scopes("", limit=limit)  # type: ignore[arg-type]
    for bad in ("\ud800", "x" * 1025, "\x00"):
        with pytest.raises(ValidationError):
            await manager.list_records(scope, prefix=bad)
        with pytest.raises(ValidationError):
            await manager.list_records(scope, after=bad)
        with pytest.raises(ValidationError):
            await manager.list_records(scope, before=bad)
        with pytest.raises(ValidationError):
            await manager.list_scopes(bad)
        with pytest.raises(ValidationError):
            await manager.delete_records(scope, prefix=bad)
    assert await manager.list_records(scope) == []
