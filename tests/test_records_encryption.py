"""Records with ``encryption_keys=``: sealed at rest, bound to tenant, scope and key.

As in ``test_encryption.py``, each test looks at the stored bytes themselves (the SQLite files
and rows, PostgreSQL rows read with raw SQL) as well as at what the API gives back.
"""

from __future__ import annotations

import base64
import sqlite3
import uuid
from pathlib import Path

import orjson
import pytest

from agent_core.errors import DecryptionError
from agent_core.sessions.session_manager import SessionManager
from agent_core.stores.postgres import PostgresStore
from agent_core.stores.sqlite import SQLiteStore
from tests.conftest import MakeManager

SECRET = b"quokka-vermilion-9013"  # a distinctive plaintext that must never be stored

K1 = ("k1", bytes(range(32)))
K2 = ("k2", bytes(range(100, 132)))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def raw_rows(manager: SessionManager) -> list[tuple[str, str, bytes, bool]]:
    """``(scope, key, value, sealed)`` of every stored record, read past the store."""
    store = manager.store
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store._path)
        try:
            return [
                (scope, key, bytes(value), bool(sealed))
                for scope, key, value, sealed in conn.execute(
                    "SELECT scope, key, value, sealed FROM records ORDER BY scope, key"
                )
            ]
        finally:
            conn.close()
    assert isinstance(store, PostgresStore)
    import asyncpg

    conn = await asyncpg.connect(store._dsn)
    try:
        rows = await conn.fetch(
            f'SELECT scope, key, value, sealed FROM "{manager.namespace}".records'
            " ORDER BY scope, key"
        )
    finally:
        await conn.close()
    return [(r["scope"], r["key"], bytes(r["value"]), r["sealed"]) for r in rows]


async def raw_sql(manager: SessionManager, sql: str) -> None:
    store = manager.store
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store._path)
        try:
            conn.execute(sql)
            conn.commit()
        finally:
            conn.close()
        return
    assert isinstance(store, PostgresStore)
    import asyncpg

    conn = await asyncpg.connect(store._dsn)
    try:
        await conn.execute(f'SET search_path TO "{manager.namespace}"')
        await conn.execute(sql)
    finally:
        await conn.close()


def files_of(manager: SessionManager) -> bytes:
    store = manager.store
    if not isinstance(store, SQLiteStore):
        return b""
    path = Path(store._path)
    return b"".join(
        file.read_bytes() for file in path.parent.iterdir() if file.name.startswith(path.name)
    )


async def test_values_are_sealed_at_rest_and_open_on_read(make_manager: MakeManager) -> None:
    manager = await make_manager(encryption_keys=[K1])
    session = await manager.create_session("agent", "u1")
    scope = f"enc:{uuid.uuid4()}"
    await manager.put_records(
        scope, [("a", SECRET), ("b", SECRET * 100)], session_id=session.session_id
    )
    await manager.put_records(scope, [("a", SECRET + b"!")])  # replaced: a new seal
    await manager.put_records(scope, [("c", SECRET)], keep_existing=True)

    rows = await raw_rows(manager)
    assert [(s, k, sealed) for s, k, _, sealed in rows] == [
        (scope, "a", True),
        (scope, "b", True),
        (scope, "c", True),
    ]
    assert all(SECRET not in value for _, _, value, _ in rows)
    assert SECRET not in files_of(manager)

    assert await manager.get_records(scope, ["a", "b", "c"]) == {
        "a": SECRET + b"!",
        "b": SECRET * 100,
        "c": SECRET,
    }
    assert dict(await manager.list_records(scope)) == {
        "a": SECRET + b"!",
        "b": SECRET * 100,
        "c": SECRET,
    }
    lines = [orjson.loads(line) async for line in manager.export("u1")]
    exported = {line["key"]: line for line in lines if line["type"] == "record"}
    assert base64.b64decode(exported["b"]["value_b64"]) == SECRET * 100


async def test_a_sealed_value_moved_to_another_key_or_scope_does_not_open(
    make_manager: MakeManager,
) -> None:
    manager = await make_manager(encryption_keys=[K1])
    scope = f"enc:{uuid.uuid4()}"
    await manager.put_records(scope, [("a", SECRET), ("b", b"other")])
    await manager.put_records(scope + "x", [("a", b"other")])
    await raw_sql(
        manager,
        f"UPDATE records SET value = (SELECT value FROM records WHERE scope = '{scope}'"
        f" AND key = 'a') WHERE key = 'b' OR scope = '{scope}x'",
    )
    assert await manager.get_records(scope, ["a"]) == {"a": SECRET}
    with pytest.raises(DecryptionError):
        await manager.get_records(scope, ["b"])
    with pytest.raises(DecryptionError):
        await manager.list_records(scope + "x")


async def test_missing_or_wrong_key_is_a_typed_error(make_manager: MakeManager) -> None:
    sealed = await make_manager(encryption_keys=[K1])
    scope = f"enc:{uuid.uuid4()}"
    await sealed.put_records(scope, [("a", SECRET)])
    without = await make_manager()
    with pytest.raises(DecryptionError):
        await without.get_records(scope, ["a"])
    with pytest.raises(DecryptionError):
        await without.list_records(scope)
    wrong = await make_manager(encryption_keys=[("k1", bytes(32))])
    with pytest.raises(DecryptionError):
        await wrong.get_records(scope, ["a"])
    # deleting and listing scopes need no key
    assert await without.list_scopes(scope) == [scope]
    assert await without.delete_records(scope, keys=["a"]) == 1


async def test_plain_records_stay_readable_and_rotation_seals_them(
    make_manager: MakeManager,
) -> None:
    plain = await make_manager()
    scope = f"enc:{uuid.uuid4()}"
    # a plain value that looks like a sealed body stays itself
    lookalike = b"$k2." + base64.b64encode(bytes(40))
    items = [(f"k{i:03d}", SECRET + str(i).encode()) for i in range(7)] + [("z", lookalike)]
    await plain.put_records(scope, items)
    assert all(not sealed for *_, sealed in await raw_rows(plain))

    old = await make_manager(encryption_keys=[K1])
    assert dict(await old.list_records(scope)) == dict(items)
    await old.put_records(scope, [("k000", SECRET)])  # sealed with k1 from now on

    new = await make_manager(encryption_keys=[K2, K1])
    resealed = await new.rotate_keys(batch_size=3)
    assert resealed == len(items)  # no sessions here: only the records
    rows = await raw_rows(new)
    assert all(sealed and value.startswith(b"$k2.") for *_, value, sealed in rows)
    assert all(SECRET not in value for _, _, value, _ in rows)
    assert await new.rotate_keys(batch_size=3) == 0

    only_new = await make_manager(encryption_keys=[K2])
    expected = dict(items) | {"k000": SECRET}
    assert dict(await only_new.list_records(scope)) == expected
    assert await only_new.get_records(scope, ["z"]) == {"z": lookalike}
