"""``append_checkpoint(..., records=RecordWrite(...))``: a trail checkpoint and records in one
transaction, on every backend (see conftest)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from agent_core.errors import LeaseLost, PayloadTooLarge, SessionNotFound, ValidationError
from agent_core.sessions import RecordWrite, SessionManager
from tests.conftest import MakeManager

K1 = ("k1", bytes(range(32)))
SECRET = b"wombat-cerulean-4471"  # a distinctive plaintext that must never be stored


def new_scope() -> str:
    return f"step:{uuid.uuid4()}"


async def trail_names(manager: SessionManager, session_id: str) -> list[str]:
    """The trail after the ``session_created`` checkpoint (seq 1)."""
    return [cp.name for cp in await manager.list_checkpoints(session_id, 1, limit=1000)]


async def test_the_checkpoint_and_the_records_are_both_stored(manager: SessionManager) -> None:
    session = await manager.create_session("agent", "u1")
    sid, scope = session.session_id, new_scope()
    cp = await manager.append_checkpoint(
        sid, "step", {"n": 1}, records=RecordWrite(scope, [("a", b"1"), ("b", b"2")])
    )
    assert cp.seq == 2 and cp.name == "step" and cp.data == {"n": 1}
    assert await manager.get_records(scope, ["a", "b"]) == {"a": b"1", "b": b"2"}
    assert await trail_names(manager, sid) == ["step"]
    head = await manager.get_session(sid)
    assert head is not None and head.checkpoint_count == 2 and head.version == 2
    # The records belong to the session: purging it erases them.
    await manager.purge(session_id=sid)
    assert await manager.get_records(scope, ["a", "b"]) == {}


async def test_replace_and_keep_existing_follow_put_records(manager: SessionManager) -> None:
    sid = (await manager.create_session("agent")).session_id
    scope = new_scope()
    await manager.put_records(scope, [("a", b"old"), ("b", b"old")])
    await manager.append_checkpoint(sid, "s1", records=RecordWrite(scope, [("a", b"new")]))
    await manager.append_checkpoint(
        sid, "s2", records=RecordWrite(scope, [("b", b"new"), ("c", b"c")], keep_existing=True)
    )
    assert await manager.get_records(scope, ["a", "b", "c"]) == {
        "a": b"new",
        "b": b"old",
        "c": b"c",
    }


async def test_seq_prefixed_keys_are_ordered_and_dense(manager: SessionManager) -> None:
    sid = (await manager.create_session("agent")).session_id
    scope = new_scope()
    await manager.append_checkpoint(sid, "plain")  # seq 2, no records
    write = RecordWrite(scope, [("/x", b"x"), ("/y", b"y")], key_prefix_seq=True)
    cps = await asyncio.gather(
        *(manager.append_checkpoint(sid, "step", records=write) for _ in range(8))
    )
    seqs = sorted(cp.seq or 0 for cp in cps)
    assert seqs == list(range(3, 11))
    keys = [key for key, _ in await manager.list_records(scope)]
    assert keys == [f"{seq:016d}{suffix}" for seq in seqs for suffix in ("/x", "/y")]
    assert [write.stored_key("/x", cp.seq or 0) for cp in cps] == [f"{cp.seq:016d}/x" for cp in cps]


async def test_an_idempotent_retry_writes_nothing_twice(manager: SessionManager) -> None:
    sid = (await manager.create_session("agent")).session_id
    scope = new_scope()
    first = await manager.append_checkpoint(
        sid,
        "step",
        {"try": 1},
        idempotency_key="k",
        records=RecordWrite(scope, [("a", b"first")], key_prefix_seq=True),
    )
    again = await manager.append_checkpoint(
        sid,
        "step",
        {"try": 2},
        idempotency_key="k",
        records=RecordWrite(scope, [("a", b"second"), ("b", b"second")], key_prefix_seq=True),
    )
    assert again.seq == first.seq == 2 and again.data == {"try": 1}
    assert await manager.list_records(scope) == [(f"{2:016d}a", b"first")]
    assert await trail_names(manager, sid) == ["step"]
    # A concurrent retry storm stores one checkpoint and one set of records.
    write = RecordWrite(scope, [("z", b"z")], key_prefix_seq=True)
    storm = await asyncio.gather(
        *(
            manager.append_checkpoint(sid, "s", idempotency_key="k2", records=write)
            for _ in range(6)
        )
    )
    assert {cp.seq for cp in storm} == {3}
    assert [key for key, _ in await manager.list_records(scope)] == [
        f"{2:016d}a",
        f"{3:016d}z",
    ]


async def test_an_oversized_value_writes_no_checkpoint(make_manager: MakeManager) -> None:
    manager = await make_manager(max_payload_bytes=1000)
    sid = (await manager.create_session("agent")).session_id
    scope = new_scope()
    with pytest.raises(PayloadTooLarge):
        await manager.append_checkpoint(
            sid, "step", records=RecordWrite(scope, [("a", b"ok"), ("b", b"x" * 1001)])
        )
    with pytest.raises(ValidationError):
        await manager.append_checkpoint(
            sid, "step", records=RecordWrite(scope, [("a", b"1"), ("a", b"2")])
        )
    with pytest.raises(ValidationError):  # no room left for the seq prefix
        await manager.append_checkpoint(
            sid, "step", records=RecordWrite(scope, [("k" * 1010, b"1")], key_prefix_seq=True)
        )
    assert await trail_names(manager, sid) == []
    assert await manager.list_records(scope) == []


async def test_a_missing_or_deleted_session_writes_no_records(manager: SessionManager) -> None:
    scope = new_scope()
    with pytest.raises(SessionNotFound):
        await manager.append_checkpoint(
            str(uuid.uuid4()), "step", records=RecordWrite(scope, [("a", b"1")])
        )
    sid = (await manager.create_session("agent")).session_id
    await manager.delete_session(sid)
    with pytest.raises(SessionNotFound):
        await manager.append_checkpoint(sid, "step", records=RecordWrite(scope, [("a", b"1")]))
    assert await manager.list_records(scope) == []


async def test_a_fenced_out_lease_writes_neither(manager: SessionManager) -> None:
    sid = (await manager.create_session("agent")).session_id
    scope = new_scope()
    old = await manager.claim(sid, "w1", timedelta(seconds=30))
    await manager.release(old)
    new = await manager.claim(sid, "w2", timedelta(seconds=30))
    with pytest.raises(LeaseLost):
        await manager.append_checkpoint(
            sid, "step", lease=old, records=RecordWrite(scope, [("a", b"1")], key_prefix_seq=True)
        )
    assert await trail_names(manager, sid) == []
    assert await manager.list_records(scope) == []
    await manager.append_checkpoint(
        sid, "step", lease=new, records=RecordWrite(scope, [("a", b"1")])
    )
    assert await manager.get_records(scope, ["a"]) == {"a": b"1"}


async def test_every_manager_sees_the_new_head(make_manager: MakeManager) -> None:
    writer, reader = await make_manager(), await make_manager()
    sid = (await writer.create_session("agent")).session_id
    for manager in (writer, reader):  # fill every tier with the old head
        assert (await manager.get_session(sid)) is not None
    await writer.append_checkpoint(sid, "step", records=RecordWrite(new_scope(), [("a", b"1")]))
    for manager in (writer, reader):
        head = await manager.get_session(sid)
        assert head is not None and head.checkpoint_count == 2 and head.version == 2
        assert [cp.name for cp in head.checkpoints] == ["session_created", "step"]


async def test_tenants_see_only_their_own(make_manager: MakeManager) -> None:
    acme, globex = await make_manager(tenant="acme"), await make_manager(tenant="globex")
    sid = (await acme.create_session("agent")).session_id
    scope = new_scope()
    with pytest.raises(SessionNotFound):
        await globex.append_checkpoint(sid, "step", records=RecordWrite(scope, [("a", b"g")]))
    await acme.append_checkpoint(sid, "step", records=RecordWrite(scope, [("a", b"a")]))
    assert await acme.get_records(scope, ["a"]) == {"a": b"a"}
    assert await globex.get_records(scope, ["a"]) == {}
    assert await trail_names(acme, sid) == ["step"]


@pytest.mark.parametrize("key_prefix_seq", [False, True])
async def test_checkpoint_and_records_are_sealed_at_rest(
    make_manager: MakeManager, backend: str, key_prefix_seq: bool
) -> None:
    manager = await make_manager(encryption_keys=[K1])
    sid = (await manager.create_session("agent")).session_id
    scope = new_scope()
    write = RecordWrite(scope, [("a", SECRET), ("b", SECRET * 3)], key_prefix_seq=key_prefix_seq)
    cp = await manager.append_checkpoint(sid, "step", {"secret": SECRET.decode()}, records=write)
    keys = [write.stored_key("a", cp.seq or 0), write.stored_key("b", cp.seq or 0)]
    assert await manager.get_records(scope, keys) == {keys[0]: SECRET, keys[1]: SECRET * 3}
    [stored] = await manager.list_checkpoints(sid, 1)
    assert stored.data == {"secret": SECRET.decode()}
    if backend != "memory":  # the memory store keeps nothing at rest
        from tests.test_records_encryption import raw_rows

        rows = await raw_rows(manager)
        assert [(k, sealed) for _, k, _, sealed in rows] == [(keys[0], True), (keys[1], True)]
        assert all(SECRET not in value for _, _, value, _ in rows)
    # Another manager with the same key opens them, bound to their stored keys.
    other = await make_manager(encryption_keys=[K1])
    assert dict(await other.list_records(scope)) == {keys[0]: SECRET, keys[1]: SECRET * 3}
