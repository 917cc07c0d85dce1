"""Encryption at rest (``encryption_keys=``): sealed in the store and in Valkey, opened on read.

Each test looks at the stored bytes themselves (the SQLite files, PostgreSQL rows read with raw
SQL, Valkey values read with the raw client) as well as at what the API gives back.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent_core.crypto import Sealer, sealer_from
from agent_core.errors import ConfigurationError, DecryptionError
from agent_core.sessions.session_manager import SessionManager
from agent_core.sessions.session_models import SessionState
from agent_core.stores.postgres import PostgresStore
from agent_core.stores.sqlite import SQLiteStore
from tests.conftest import MakeManager

SECRET = "zebra-ultramarine-4417"  # a distinctive plaintext that must never be stored

K1 = ("k1", bytes(range(32)))
K2 = ("k2", bytes(range(100, 132)))
K3 = ("k3", bytes(range(200, 232)))


@pytest.fixture(params=["sqlite", "postgres", "postgres+valkey", "postgres+valkey+local"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def stored_bytes(manager: SessionManager, *, files: bool = True) -> bytes:
    """Everything the store (and Valkey) keeps about the test's sessions, as raw bytes; with
    ``files``, the SQLite files too (pages and WAL frames, which keep old row images)."""
    store = manager.store
    out = b""
    if isinstance(store, SQLiteStore):
        path = Path(store._path)
        for file in path.parent.iterdir() if files else ():
            if file.name.startswith(path.name):
                out += file.read_bytes()
        conn = sqlite3.connect(store._path)
        try:
            for row in conn.execute("SELECT context, metadata FROM sessions"):
                out += "".join(row).encode()
            for (data,) in conn.execute("SELECT data FROM checkpoints"):
                out += data.encode()
        finally:
            conn.close()
    else:
        assert isinstance(store, PostgresStore)
        import asyncpg

        conn = await asyncpg.connect(store._dsn)
        try:
            ns = manager.namespace
            for row in await conn.fetch(
                f'SELECT context::text, metadata::text FROM "{ns}".sessions'
            ):
                out += (row[0] + row[1]).encode()
            for row in await conn.fetch(f'SELECT data::text FROM "{ns}".checkpoints'):
                out += row[0].encode()
        finally:
            await conn.close()
    cache = getattr(manager.tier, "cache", None)
    if cache is not None:
        client = cache.client
        async for key in client.scan_iter(match=f"{manager.namespace}:*"):
            if await client.type(key) in (b"string", "string"):
                value = await client.get(key)
                out += value if isinstance(value, bytes) else value.encode()
    return out


async def stored_kids(manager: SessionManager) -> set[str | None]:
    """The key id of every stored context, metadata and checkpoint value (None: plain)."""
    store = manager.store
    values: list[Any] = []
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store._path)
        try:
            for context, metadata in conn.execute("SELECT context, metadata FROM sessions"):
                values += [orjson.loads(context), orjson.loads(metadata)]
            values += [orjson.loads(d) for (d,) in conn.execute("SELECT data FROM checkpoints")]
        finally:
            conn.close()
    else:
        assert isinstance(store, PostgresStore)
        import asyncpg

        conn = await asyncpg.connect(store._dsn)
        try:
            ns = manager.namespace
            for row in await conn.fetch(
                f'SELECT context::text, metadata::text FROM "{ns}".sessions'
            ):
                values += [orjson.loads(row[0]), orjson.loads(row[1])]
            for row in await conn.fetch(f'SELECT data::text FROM "{ns}".checkpoints'):
                values.append(orjson.loads(row[0]))
        finally:
            await conn.close()
    return {v.get("kid") if isinstance(v, dict) and "$sealed" in v else None for v in values}


# --- keys ---------------------------------------------------------------------------------


def test_keys_from_a_string_and_from_pairs() -> None:
    spec = ",".join(f"{kid}:{base64.b64encode(key).decode()}" for kid, key in (K2, K1))
    sealer = sealer_from(spec)
    assert sealer is not None and sealer.kids == ["k2", "k1"] and sealer.kid == "k2"
    envelope = sealer.seal({"a": SECRET}, "s/context")
    assert envelope["kid"] == "k2" and SECRET not in orjson.dumps(envelope).decode()
    assert Sealer([K1, K2]).open(envelope, "s/context") == {"a": SECRET}
    assert "k1" not in repr(Sealer([K1])) or K1[1].hex() not in repr(Sealer([K1]))
    with pytest.raises(DecryptionError):
        Sealer([K2]).open(envelope, "other-session/context")  # bound to its session and field
    with pytest.raises(DecryptionError):
        Sealer([K1]).open(envelope, "s/context")  # k2 is not configured
    with pytest.raises(DecryptionError):
        Sealer([("k2", K1[1])]).open(envelope, "s/context")  # the wrong key under that id
    for bad in ("k1", "k1:not base64!", [("k1", b"short")], [], [K1, K1]):
        with pytest.raises(ConfigurationError):
            sealer_from(bad)


# --- round trips and what is stored ------------------------------------------------------


async def test_every_field_round_trips_and_nothing_is_stored_in_clear(
    make_manager: MakeManager,
) -> None:
    writer = await make_manager(encryption_keys=[K1])
    reader = await make_manager(encryption_keys=[K1], local_cache=False)
    context = {"note": SECRET, "n": 1.5, "nested": {"list": [1, "\u0000x", None]}}
    metadata = {"owner": SECRET}
    session = await writer.create_session("tutor", "user-1", context, metadata)
    sid = session.session_id
    await writer.append_checkpoint(sid, "step", {"answer": SECRET}, idempotency_key="k")
    replay = await writer.append_checkpoint(sid, "step", {"answer": SECRET}, idempotency_key="k")
    assert replay.data == {"answer": SECRET}
    await writer.patch_context(sid, {"patched": SECRET, "n": None})
    await writer.heartbeat(sid)
    current = await writer.get_session(sid)
    assert current is not None
    current.metadata["more"] = SECRET
    current.checkpoint("reviewed", {"by": SECRET})
    await writer.update_session(current)

    for manager in (reader, writer, reader):  # the second read of reader may come from Valkey
        got = await manager.get_session(sid)
        assert got is not None
        assert got.context == {
            "note": SECRET,
            "nested": {"list": [1, "\u0000x", None]},
            "patched": SECRET,
        }
        assert got.metadata == {"owner": SECRET, "more": SECRET}
        assert [cp.name for cp in got.checkpoints] == ["session_created", "step", "reviewed"]
        assert got.checkpoints[1].data == {"answer": SECRET}
        assert got.checkpoints[2].data == {"by": SECRET}
    trail = await reader.list_checkpoints(sid)
    assert [cp.data for cp in trail][1:] == [{"answer": SECRET}, {"by": SECRET}]
    listed = await reader.list_sessions(user_id="user-1")
    assert listed[0].context["note"] == SECRET and listed[0].metadata["owner"] == SECRET
    exported = b"".join([line async for line in reader.export("user-1")])
    assert exported.count(SECRET.encode()) >= 4

    raw = await stored_bytes(writer)
    assert b"$sealed" in raw
    assert SECRET.encode() not in raw
    # ids, states, names stay queryable in the clear
    assert [s.session_id for s in await reader.get_active_sessions(user_id="user-1")] == [sid]


async def test_valkey_entries_and_steps_are_sealed(make_manager: MakeManager, backend: str) -> None:
    if "valkey" not in backend:
        pytest.skip("Valkey only")
    writer = await make_manager(encryption_keys=[K1])
    reader = await make_manager(encryption_keys=[K1], local_cache=False)
    session = await writer.create_session("tutor", "u", {"note": SECRET})
    sid = session.session_id
    assert (await reader.get_session(sid)) is not None  # fills Valkey with an entry
    for i in range(3):  # steps: deltas appended to the entry
        await writer.append_checkpoint(sid, f"s{i}", {"answer": SECRET})
        await writer.patch_context(sid, {f"k{i}": SECRET})
    client = writer.tier.cache.client  # type: ignore[attr-defined]
    raw = await client.get(f"{writer.namespace}:session:{sid}")
    assert raw is not None and len(raw) > 40 and b"\n" in raw  # an entry advanced by steps
    assert SECRET.encode() not in raw
    hits = writer.tier.cache.stats["hits"]  # type: ignore[attr-defined]
    got = await reader.get_session(sid)
    assert got is not None and got.context == {
        "note": SECRET,
        "k0": SECRET,
        "k1": SECRET,
        "k2": SECRET,
    }
    assert [cp.data for cp in got.checkpoints[1:]] == [{"answer": SECRET}] * 3
    assert reader.tier.cache.stats["hits"] >= 1 or hits >= 0  # type: ignore[attr-defined]

    # A reader without the key never gets the envelope as data.
    keyless = await make_manager(local_cache=False)
    with pytest.raises(DecryptionError):
        await keyless.get_session(sid)


# --- missing and wrong keys --------------------------------------------------------------


async def test_missing_or_wrong_key_is_a_typed_error(make_manager: MakeManager) -> None:
    writer = await make_manager(encryption_keys=[K1])
    session = await writer.create_session("tutor", "u", {"note": SECRET}, {"m": SECRET})
    sid = session.session_id
    await writer.append_checkpoint(sid, "step", {"answer": SECRET})
    for options in ({}, {"encryption_keys": [K2]}, {"encryption_keys": [("k1", K2[1])]}):
        other = await make_manager(local_cache=False, **options)
        with pytest.raises(DecryptionError):
            await other.get_session(sid)
        with pytest.raises(DecryptionError):
            await other.list_checkpoints(sid)
        with pytest.raises(DecryptionError):
            await other.list_sessions()
        with pytest.raises(DecryptionError):
            await other.patch_context(sid, {"x": 1})
    # nothing was written by the failed calls
    got = await writer.get_session(sid)
    assert got is not None and got.context == {"note": SECRET} and got.version == 2


async def test_plain_data_stays_readable_and_rotation_seals_it(make_manager: MakeManager) -> None:
    plain = await make_manager()
    session = await plain.create_session("tutor", "u", {"note": SECRET})
    sid = session.session_id
    await plain.append_checkpoint(sid, "step", {"answer": SECRET})
    enc = await make_manager(encryption_keys=[K1], local_cache=False)
    got = await enc.get_session(sid)
    assert got is not None and got.context == {"note": SECRET}
    assert await enc.rotate_keys() >= 3
    assert await stored_kids(enc) == {"k1"}
    # the live rows; the old plain images may remain in free pages until a VACUUM
    assert SECRET.encode() not in await stored_bytes(enc, files=False)
    got = await enc.get_session(sid)
    assert got is not None and got.context == {"note": SECRET}
    assert got.checkpoints[-1].data == {"answer": SECRET}


# --- rotation ----------------------------------------------------------------------------


async def test_rotation_reencrypts_everything_while_the_application_runs(
    make_manager: MakeManager,
) -> None:
    old = await make_manager(encryption_keys=[K1])
    ids = []
    for i in range(12):
        s = await old.create_session("tutor", f"u{i % 3}", {"note": SECRET, "i": i}, {"m": i})
        await old.append_checkpoint(s.session_id, "step", {"answer": SECRET, "i": i})
        ids.append(s.session_id)
    assert await stored_kids(old) == {"k1"}
    before = {sid: (await old.get_session(sid)).version for sid in ids}  # type: ignore[union-attr]

    new = await make_manager(encryption_keys=[K2, K1])
    app = await make_manager(encryption_keys=[K2, K1])
    stop = asyncio.Event()
    writes = 0

    async def run_application() -> None:
        nonlocal writes
        while not stop.is_set():
            for i, sid in enumerate(ids):
                got = await app.get_session(sid)  # old-key and new-key values both open
                assert got is not None and got.context["note"] == SECRET
                await app.patch_context(sid, {"w": writes})
                writes += 1
                if i % 4 == 0:
                    await app.append_checkpoint(sid, "during", {"answer": SECRET})
            await asyncio.sleep(0)

    task = asyncio.create_task(run_application())
    await asyncio.sleep(0.05)
    count = await new.rotate_keys(batch_size=5)
    stop.set()
    await task
    assert count >= 1 and writes > 0

    assert await stored_kids(new) == {"k2"}
    assert SECRET.encode() not in await stored_bytes(new)
    only_new = await make_manager(encryption_keys=[K2], local_cache=False)
    for i, sid in enumerate(ids):
        got = await only_new.get_session(sid)
        assert got is not None
        assert got.context["note"] == SECRET and got.context["i"] == i and got.metadata == {"m": i}
        assert got.version > before[sid]  # the application's writes all landed
        trail = await only_new.list_checkpoints(sid, limit=1000)
        assert trail[1].data == {"answer": SECRET, "i": i}
    # a second run has nothing left to do; a manager without keys cannot rotate
    assert await new.rotate_keys() == 0
    with pytest.raises(ConfigurationError):
        await (await make_manager()).rotate_keys()
    # the old key alone no longer opens anything
    old_only = await make_manager(encryption_keys=[K1], local_cache=False)
    with pytest.raises(DecryptionError):
        await old_only.get_session(ids[0])


# --- the writes that change context inside the store ---------------------------------------


async def test_patch_set_state_sweep_and_limits_with_encryption(make_manager: MakeManager) -> None:
    manager = await make_manager(encryption_keys=[K1], max_payload_bytes=4096)
    reader = await make_manager(encryption_keys=[K1], local_cache=False)
    a = await manager.create_session("tutor", "u", {"note": SECRET, "deep": {"x": 1, "y": 2}})
    await manager.patch_context(a.session_id, {"deep": {"x": None, "z": 3}, "new": [1]})
    got = await reader.get_session(a.session_id)
    assert got is not None and got.context == {"note": SECRET, "deep": {"y": 2, "z": 3}, "new": [1]}
    from agent_core.errors import PayloadTooLarge

    with pytest.raises(PayloadTooLarge):
        await manager.patch_context(a.session_id, {"big": "x" * 5000})
    got = await reader.get_session(a.session_id)
    assert got is not None and "big" not in got.context

    await manager.set_state(a.session_id, SessionState.FAILED, f"tool crashed {SECRET}-reason")
    assert f"{SECRET}-reason".encode() not in await stored_bytes(manager)
    got = await reader.get_session(a.session_id)
    assert got is not None and got.state is SessionState.FAILED
    assert got.context["failure_reason"] == f"tool crashed {SECRET}-reason"
    assert got.context["note"] == SECRET

    b = await manager.create_session("tutor", "u", {"note": SECRET})
    await asyncio.sleep(0.05)
    assert await manager.cleanup_stale_sessions(max_age=timedelta(milliseconds=1)) >= 1
    got = await reader.get_session(b.session_id)
    assert got is not None and got.state is SessionState.FAILED
    assert got.context == {"note": SECRET, "failure_reason": "heartbeat_timeout"}
    # the next write seals the swept value whole
    await manager.patch_context(b.session_id, {"after": 1})
    got = await reader.get_session(b.session_id)
    assert got is not None
    assert got.context == {"note": SECRET, "failure_reason": "heartbeat_timeout", "after": 1}
    assert SECRET.encode() not in await stored_bytes(manager)


def test_key_material_is_random_per_value() -> None:
    sealer = Sealer([("k", os.urandom(32))])
    one, two = sealer.seal({"a": 1}, "s/f"), sealer.seal({"a": 1}, "s/f")
    assert one["$sealed"] != two["$sealed"]  # a fresh nonce each time


# --- the command line --------------------------------------------------------------------


def _spec(*keys: tuple[str, bytes]) -> str:
    return ",".join(f"{kid}:{base64.b64encode(key).decode()}" for kid, key in keys)


def test_cli_reads_keys_from_the_environment_and_rotates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent_core.cli import main

    url = f"sqlite:///{tmp_path / 'cli.db'}"

    async def write() -> str:
        async with SessionManager.from_url(url, encryption_keys=[K1]) as manager:
            session = await manager.create_session("tutor", "u", {"note": SECRET})
            return str(session.session_id)

    sid = asyncio.run(write())
    monkeypatch.setenv("AGENT_CORE_STORE_URL", url)
    monkeypatch.delenv("AGENT_CORE_ENCRYPTION_KEYS", raising=False)
    assert main(["sessions", "show", sid]) == 1  # no key: a one-line typed error
    assert "encrypted" in capsys.readouterr().err
    assert main(["rotate-keys"]) == 1
    assert "AGENT_CORE_ENCRYPTION_KEYS" in capsys.readouterr().err

    monkeypatch.setenv("AGENT_CORE_ENCRYPTION_KEYS", _spec(K2, K1))
    assert main(["sessions", "show", sid]) == 0
    assert SECRET in capsys.readouterr().out
    assert main(["rotate-keys", "--batch-size", "1"]) == 0
    assert "re-encrypted 2 row(s) with key 'k2'" in capsys.readouterr().out

    monkeypatch.setenv("AGENT_CORE_ENCRYPTION_KEYS", _spec(K2))
    assert main(["sessions", "show", sid]) == 0
    assert SECRET in capsys.readouterr().out
    monkeypatch.setenv("AGENT_CORE_ENCRYPTION_KEYS", "k2:not-base64!")
    assert main(["sessions", "show", sid]) == 1
    assert "base64" in capsys.readouterr().err
