"""The input rules (``agent_core.codec``, ``agent_core.sessions.limits``) on every backend.

One set of rules, enforced by the manager before any backend sees a value, so memory, SQLite and
PostgreSQL (with and without Valkey and the in-process tier) accept and refuse the same values
and give back exactly what they accepted, value and type. Every refusal is a
``ValidationError`` (``InvalidValue``, ``PayloadTooLarge``) raised before anything is written;
constructor options are refused with ``ConfigurationError``. docs/reliability.md ("Input
rules") lists each rule with its test.
"""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent_core import codec
from agent_core.codec import INT_MAX, INT_MIN, MAX_DEPTH
from agent_core.errors import (
    ConfigurationError,
    InvalidValue,
    PayloadTooLarge,
    ValidationError,
)
from agent_core.sessions import AgentSession, SessionManager, SessionState
from tests.conftest import BACKENDS, MakeManager, ManagerFactory

# --- helpers ---------------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equality that also compares types (1 is not 1.0, True is not 1) and float signs."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def nested(levels: int, leaf: Any = 0) -> Any:
    """``levels`` containers, objects and arrays in turn, around ``leaf``."""
    value = leaf
    for level in range(levels):
        value = {"k": value} if level % 2 else [value]
    return value


def deep_object(levels: int) -> dict[str, Any]:
    """A JSON object ``levels`` containers deep (itself included)."""
    return {"d": nested(levels - 1)}


async def snapshot(manager: SessionManager, session_id: str) -> tuple[Any, ...]:
    session = await manager.get_session(session_id)
    assert session is not None
    trail = await manager.list_checkpoints(session_id, limit=1000)
    return (
        session.version,
        session.state,
        orjson.dumps(session.context, option=orjson.OPT_SORT_KEYS),
        orjson.dumps(session.metadata, option=orjson.OPT_SORT_KEYS),
        session.checkpoint_count,
        [(cp.seq, cp.name, orjson.dumps(cp.data, option=orjson.OPT_SORT_KEYS)) for cp in trail],
    )


async def assert_unchanged(
    managers: list[SessionManager], session_id: str, before: tuple[Any, ...]
) -> None:
    for manager in managers:
        assert await snapshot(manager, session_id) == before


async def count_sessions(manager: SessionManager) -> int:
    return len(await manager.list_sessions(state=None, limit=10_000))


# --- floats ----------------------------------------------------------------------------------

BIG_AND_TINY_FLOATS = {
    "1e16": 1e16,
    "-1e16": -1e16,
    "1.5e16": 1.5e16,
    "2**53": 2.0**53,
    "2**53+2": 2.0**53 + 2,
    "1e19": 1e19,
    "1e23": 1e23,
    "-2**63": -(2.0**63),
    "1e300": 1e300,
    "max": 1.7976931348623157e308,
    "-max": -1.7976931348623157e308,
    "just-below-1e16": 9999999999999998.0,
    "1e15+0.5": 1e15 + 0.5,
    "1e-7": 1e-7,
    "min-normal": 2.2250738585072014e-308,
    "5e-324": 5e-324,
    "-5e-324": -5e-324,
    "0.0": 0.0,
    "third": 1 / 3,
}


async def test_floats_from_1e16_up_read_back_as_the_same_floats(make_manager: MakeManager) -> None:
    """Old code: on PostgreSQL, jsonb turned 1e16 and up into integers."""
    writer, reader = await make_manager(), await make_manager()
    values = dict(BIG_AND_TINY_FLOATS)
    session = await writer.create_session(
        "floats", context=values, metadata={"list": list(values.values())}
    )
    await writer.append_checkpoint(session.session_id, "cp", {"f": values})
    await writer.patch_context(session.session_id, {"patched": values})
    for manager in (writer, reader, reader):
        got = await manager.get_session(session.session_id)
        assert got is not None
        assert same(got.context, {**values, "patched": values})
        assert same(got.metadata, {"list": list(values.values())})
        assert same(got.checkpoints[-1].data, {"f": values})
    trail = await reader.list_checkpoints(session.session_id)
    assert same(trail[-1].data, {"f": values})


async def test_a_1e19_float_leaves_the_session_updatable(make_manager: MakeManager) -> None:
    """Old code: on PostgreSQL 1e19 came back as the int 10000000000000000000, which the
    library refuses, so every later update_session of that session failed."""
    writer, reader = await make_manager(), await make_manager()
    session = await writer.create_session("x", context={"big": 1e19})
    for manager in (writer, reader):
        copy = await manager.get_session(session.session_id)
        assert copy is not None and same(copy.context["big"], 1e19)
        copy.context["n"] = copy.version
        copy.checkpoint("step", {"big": copy.context["big"]})
        await manager.update_session(copy)
    got = await reader.get_session(session.session_id)
    assert got is not None and got.version == 3
    assert same(got.context, {"big": 1e19, "n": 2})


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (-0.0, "negative zero"),
        (math.nan, "not a JSON number"),
        (math.inf, "not a JSON number"),
        (-math.inf, "not a JSON number"),
    ],
    ids=["-0.0", "nan", "inf", "-inf"],
)
async def test_negative_zero_and_non_finite_floats_are_refused(
    make_manager: MakeManager, value: float, words: str
) -> None:
    manager, other = await make_manager(), await make_manager()
    session = await manager.create_session("x", context={"ok": 1.5})
    before = await snapshot(manager, session.session_id)
    with pytest.raises(InvalidValue, match=words):
        await manager.create_session("x", context={"a": [value]})
    with pytest.raises(InvalidValue, match=words):
        await manager.patch_context(session.session_id, {"a": {"b": value}})
    with pytest.raises(InvalidValue, match=words):
        await manager.append_checkpoint(session.session_id, "s", {"a": value})
    await assert_unchanged([manager, other], session.session_id, before)
    assert await count_sessions(manager) == 1


# --- integers --------------------------------------------------------------------------------


async def test_integers_at_the_64_bit_limits_round_trip_and_beyond_are_refused(
    make_manager: MakeManager,
) -> None:
    writer, reader = await make_manager(), await make_manager()
    edge = {"max": INT_MAX, "min": INT_MIN, "2**53+1": 2**53 + 1, "zero": 0, "t": True}
    session = await writer.create_session("ints", context=edge, metadata={"l": [INT_MAX]})
    for manager in (writer, reader):
        got = await manager.get_session(session.session_id)
        assert got is not None and same(got.context, edge) and same(got.metadata, {"l": [INT_MAX]})
    before = await snapshot(reader, session.session_id)
    for bad in (INT_MAX + 1, INT_MIN - 1, 2**64, -(2**70)):
        with pytest.raises(InvalidValue, match="64-bit"):
            await writer.patch_context(session.session_id, {"n": bad})
        with pytest.raises(InvalidValue, match="64-bit"):
            await writer.create_session("ints", context={"n": [bad]})
    await assert_unchanged([writer, reader], session.session_id, before)


async def test_a_100000_digit_integer_is_refused_as_invalid_value(manager: SessionManager) -> None:
    """Old code: a bare ValueError (Python would not turn the int into a string for the
    message)."""
    huge = 10**100_000
    with pytest.raises(InvalidValue, match=r'context\["n"\]: an integer of \d+ bits'):
        await manager.create_session("x", context={"n": huge})
    session = await manager.create_session("x")
    before = await snapshot(manager, session.session_id)
    with pytest.raises(InvalidValue):
        await manager.append_checkpoint(session.session_id, "s", {"n": [huge]})
    with pytest.raises(InvalidValue):
        await manager.patch_context(session.session_id, {"n": huge})
    with pytest.raises(InvalidValue):
        await manager.create_session("x", context={"n": -huge})
    await assert_unchanged([manager], session.session_id, before)
    assert await count_sessions(manager) == 1


# --- strings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["\ud800", "a\udfffz", "\ud83d\ude00"], ids=["high", "low-inside", "split-pair"]
)
async def test_lone_surrogates_are_refused_in_values_and_keys(
    make_manager: MakeManager, text: str
) -> None:
    """Old code: orjson's TypeError (JSONEncodeError) escaped from every write."""
    manager, other = await make_manager(), await make_manager()
    session = await manager.create_session("x", context={"ok": "fine"})
    before = await snapshot(manager, session.session_id)
    for payload in ({"a": [1, text]}, {"a": {text: 1}}, {text: None}):
        with pytest.raises(InvalidValue, match="lone surrogate"):
            await manager.create_session("x", context=payload)
        with pytest.raises(InvalidValue, match="lone surrogate"):
            await manager.create_session("x", metadata=payload)
        with pytest.raises(InvalidValue, match="lone surrogate"):
            await manager.patch_context(session.session_id, payload)
        with pytest.raises(InvalidValue, match="lone surrogate"):
            await manager.append_checkpoint(session.session_id, "s", payload)
        copy = await manager.get_session(session.session_id)
        assert copy is not None
        copy.metadata = payload
        with pytest.raises(InvalidValue, match="lone surrogate"):
            await manager.update_session(copy)
    await assert_unchanged([manager, other], session.session_id, before)
    assert await count_sessions(manager) == 1


async def test_lone_surrogates_are_refused_in_names(make_manager: MakeManager) -> None:
    """Old code: the memory store took these names, SQLite raised UnicodeEncodeError and
    PostgreSQL StoreUnavailable."""
    manager, other = await make_manager(), await make_manager()
    bad = "name\udc80"
    with pytest.raises(InvalidValue):
        await manager.create_session(bad)
    with pytest.raises(InvalidValue):
        await manager.create_session("x", user_id=bad)
    session = await manager.create_session("x", "u")
    before = await snapshot(manager, session.session_id)
    sid = session.session_id
    with pytest.raises(InvalidValue):
        await manager.append_checkpoint(sid, bad)
    with pytest.raises(InvalidValue):
        await manager.append_checkpoint(sid, "s", idempotency_key=bad)
    with pytest.raises(InvalidValue):
        await manager.set_state(sid, SessionState.FAILED, reason=bad)
    with pytest.raises(InvalidValue):
        await manager.claim(sid, bad, timedelta(seconds=5))
    with pytest.raises(InvalidValue):
        await manager.list_sessions(agent_type=bad)
    with pytest.raises(InvalidValue):
        await manager.list_sessions(user_id=bad)
    copy = await manager.get_session(sid)
    assert copy is not None
    copy.checkpoint(bad)
    with pytest.raises(InvalidValue):
        await manager.update_session(copy)
    await assert_unchanged([manager, other], sid, before)
    assert await manager.current_lease(sid) is None
    assert await count_sessions(manager) == 1


async def test_nul_and_noncharacters_round_trip(make_manager: MakeManager) -> None:
    writer, reader = await make_manager(), await make_manager()
    texts = ["\x00", "a\x00b", "\ufdd0", "\ufdd00", "\ufdd01\x00", '😀é\u2028"\\', "1e16"]
    context = {t: t for t in texts}
    session = await writer.create_session("x\x00y", "u\ufdd0", context=context)
    await writer.append_checkpoint(session.session_id, "c\x00", {"t": texts})
    await writer.patch_context(session.session_id, {"p\x00": texts})
    for manager in (writer, reader):
        got = await manager.get_session(session.session_id)
        assert got is not None
        assert (got.agent_type, got.user_id) == ("x\x00y", "u\ufdd0")
        assert same(got.context, {**context, "p\x00": texts})
        assert got.checkpoints[-1].name == "c\x00"
        assert same(got.checkpoints[-1].data, {"t": texts})


# --- types and nesting -----------------------------------------------------------------------


class _Str(str):
    pass


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ((1, 2), "use a list"),
        ({1, 2}, "set is not a JSON type"),
        (b"x", "bytes is not a JSON type"),
        (_Str("x"), "_Str is not a JSON type"),
        (timedelta(1), "timedelta is not a JSON type"),
    ],
    ids=["tuple", "set", "bytes", "str-subclass", "timedelta"],
)
async def test_only_json_types_are_taken(manager: SessionManager, value: Any, words: str) -> None:
    """Tuples are refused: they would read back as lists."""
    session = await manager.create_session("x")
    before = await snapshot(manager, session.session_id)
    with pytest.raises(InvalidValue, match=words):
        await manager.create_session("x", context={"v": value})
    with pytest.raises(InvalidValue, match=words):
        await manager.patch_context(session.session_id, {"v": [value]})
    with pytest.raises(InvalidValue, match="object key"):
        await manager.create_session("x", context={"v": {1: value}})
    await assert_unchanged([manager], session.session_id, before)


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 254, 255, 256, 300])
async def test_nesting_past_the_depth_limit_is_refused(
    make_manager: MakeManager, levels: int
) -> None:
    """Old code: 254 to 256 levels passed the library's own check and orjson then raised
    TypeError (JSONEncodeError: recursion limit)."""
    manager, other = await make_manager(), await make_manager()
    session = await manager.create_session("x")
    before = await snapshot(manager, session.session_id)
    too_deep = deep_object(levels)
    with pytest.raises(InvalidValue, match=f"nested deeper than {MAX_DEPTH} levels"):
        await manager.create_session("x", context=too_deep)
    with pytest.raises(InvalidValue, match="nested deeper"):
        await manager.patch_context(session.session_id, too_deep)
    with pytest.raises(InvalidValue, match="nested deeper"):
        await manager.append_checkpoint(session.session_id, "s", too_deep)
    copy = await manager.get_session(session.session_id)
    assert copy is not None
    copy.context = too_deep
    with pytest.raises(InvalidValue, match="nested deeper"):
        await manager.update_session(copy)
    await assert_unchanged([manager, other], session.session_id, before)
    assert await count_sessions(manager) == 1


async def test_nesting_at_the_depth_limit_round_trips_everywhere(make_manager: MakeManager) -> None:
    """The deepest value taken is stored, merged (PostgreSQL's merge patch recurses once per
    level), cached (Valkey entries wrap checkpoint data in three more levels) and read back."""
    writer, reader = await make_manager(), await make_manager()
    deepest = deep_object(MAX_DEPTH)
    session = await writer.create_session("x", context=deepest, metadata=deepest)
    await writer.append_checkpoint(session.session_id, "deep", deepest)
    objects_only: Any = 1
    for _ in range(MAX_DEPTH):
        objects_only = {"o": objects_only}
    await writer.patch_context(session.session_id, objects_only)
    await writer.heartbeat(session.session_id)
    for manager in (writer, reader, reader):
        got = await manager.get_session(session.session_id)
        assert got is not None
        assert same(got.context, {**deepest, **objects_only})
        assert same(got.metadata, deepest)
        assert same(got.checkpoints[-1].data, deepest)


async def test_refusals_name_the_field_and_the_path(manager: SessionManager) -> None:
    session = await manager.create_session("x")
    sid = session.session_id
    with pytest.raises(InvalidValue, match=r'^context\["a"\]\[3\]: nan'):
        await manager.create_session("x", context={"a": [0, 1, 2, math.nan]})
    with pytest.raises(InvalidValue, match=r'^metadata\["m"\]\["k\\"q"\]: set'):
        await manager.create_session("x", metadata={"m": {'k"q': {1}}})
    with pytest.raises(InvalidValue, match=r'^checkpoint data\["l"\]\[0\]\[1\]: string is not'):
        await manager.append_checkpoint(sid, "s", {"l": [["ok", "\ud800"]]})
    with pytest.raises(InvalidValue, match=r'^context changes\["x"\]: object key "\\udfff"'):
        await manager.patch_context(sid, {"x": {"\udfff": 1}})
    with pytest.raises(InvalidValue, match=r"^context\[\"big\"\]: 9223372036854775808 is outside"):
        await manager.create_session("x", context={"big": 2**63})
    with pytest.raises(InvalidValue, match=r"^context must be a JSON object"):
        await manager.create_session("x", context=[1])  # type: ignore[arg-type]
    assert await count_sessions(manager) == 1


# --- patch_context and the size limit --------------------------------------------------------


async def test_patch_context_cannot_grow_the_context_past_the_limit(
    make_manager: MakeManager,
) -> None:
    """Old code: each patch was checked alone, so patches grew a context to 3.6 times the limit,
    after which every update_session of the session failed with PayloadTooLarge."""
    manager = await make_manager(max_payload_bytes=10_000)
    other = await make_manager(max_payload_bytes=10_000)
    session = await manager.create_session("x", context={"k0": "x" * 3_000})
    sid = session.session_id
    await manager.patch_context(sid, {"k1": "x" * 3_000})
    await manager.patch_context(sid, {"k2": "x" * 3_000})
    before = await snapshot(manager, sid)
    for attempt in range(3):
        with pytest.raises(PayloadTooLarge, match="after the patch"):
            await manager.patch_context(sid, {f"k{3 + attempt}": "x" * 3_000})
    with pytest.raises(PayloadTooLarge):
        await manager.patch_context(sid, {"k0": "y" * 5_000})
    await assert_unchanged([manager, other], sid, before)
    # The session stays within the limit, so it stays updatable.
    copy = await other.get_session(sid)
    assert copy is not None
    copy.metadata = {"updated": True}
    await other.update_session(copy)
    # Removing keys makes room.
    head = await manager.patch_context(sid, {"k1": None, "k2": None, "k3": "z" * 5_000})
    assert sorted(head.context) == ["k0", "k3"]


PATCH_CASES = {
    "plain": ({"a": "x" * 500}, {"b": "y" * 400, "n": [1, 2.5, None, True]}),
    "nul-escapes": ({"a": "\x00" * 200}, {"b": "\x00\ufdd0" * 100}),
    "big-floats": ({"f": [1e300, -1e16, 2.0**60] * 20}, {"g": [1.7976931348623157e308] * 10}),
    "tiny-floats": ({"f": [5e-324] * 10}, {"g": {"h": [1e-300, 2.5e-7]}}),
    "nested-merge": ({"a": {"b": {"c": "x" * 300, "d": 1}}}, {"a": {"b": {"d": None, "e": "é"}}}),
}


@pytest.mark.parametrize("case", list(PATCH_CASES))
async def test_the_patch_limit_is_exact_on_every_backend(
    make_manager: MakeManager, case: str
) -> None:
    """The merged context's compact JSON may be exactly max_payload_bytes, not a byte more,
    however the backend stores it (PostgreSQL's jsonb text is longer for big floats and
    shorter for U+0000)."""
    base, patch = PATCH_CASES[case]
    size = len(orjson.dumps(codec.merge_patch(base, patch)))
    tight = await make_manager(max_payload_bytes=size - 1)
    exact = await make_manager(max_payload_bytes=size)
    refused = await exact.create_session("x", context=base)
    before = await snapshot(exact, refused.session_id)
    with pytest.raises(PayloadTooLarge, match=f"would be {size} bytes"):
        await tight.patch_context(refused.session_id, patch)
    await assert_unchanged([exact, tight], refused.session_id, before)

    accepted = await exact.create_session("x", context=base)
    head = await exact.patch_context(accepted.session_id, patch)
    assert same(head.context, codec.merge_patch(base, patch))
    got = await tight.get_session(accepted.session_id)
    assert got is not None and same(got.context, codec.merge_patch(base, patch))
    assert len(orjson.dumps(got.context)) == size


async def test_concurrent_patches_never_exceed_the_limit_together(
    make_manager: MakeManager,
) -> None:
    """Ten writers race to add 300-byte keys under a limit that six of them fill to the byte:
    exactly six commit, whatever the order (on PostgreSQL the sixth goes the exact way, under
    the row lock), and the rest are refused without writing."""
    limit = len(orjson.dumps({f"k{i}": "x" * 300 for i in range(6)}))
    a = await make_manager(max_payload_bytes=limit)
    b = await make_manager(max_payload_bytes=limit)
    session = await a.create_session("x")

    async def add(i: int) -> bool:
        try:
            await (a if i % 2 else b).patch_context(session.session_id, {f"k{i}": "x" * 300})
        except PayloadTooLarge:
            return False
        return True

    outcomes = await asyncio.gather(*(add(i) for i in range(10)))
    assert sum(outcomes) == 6
    got = await b.get_session(session.session_id)
    assert got is not None and got.version == 1 + 6
    assert sorted(got.context) == sorted(f"k{i}" for i, ok in enumerate(outcomes) if ok)
    assert len(orjson.dumps(got.context)) == limit


async def test_sweeps_and_failure_reasons_keep_every_value_exact(manager: SessionManager) -> None:
    """The stores amend the context themselves here (SQLite's json_set, PostgreSQL's ||)."""
    values = {
        "f": 1e16,
        "g": 5e-324,
        "h": 1e-7,
        "i": INT_MAX,
        "j": INT_MIN,
        "s": "\x00\ufdd0",
        "l": [1.0, 2, 1e300],
    }
    swept = await manager.create_session("x", context=values)
    failed = await manager.create_session("x", context=values)
    await manager.set_state(failed.session_id, SessionState.FAILED, reason="r\x00")
    assert await manager.cleanup_stale_sessions(timedelta(0)) == 1
    got = await manager.get_session(swept.session_id)
    assert got is not None and got.state is SessionState.FAILED
    assert same(got.context, {**values, "failure_reason": "heartbeat_timeout"})
    got = await manager.get_session(failed.session_id)
    assert got is not None and same(got.context, {**values, "failure_reason": "r\x00"})


# --- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"cleanup_batch_size": 0},
        {"cleanup_batch_size": -1},
        {"cleanup_batch_size": 2.5},
        {"cleanup_batch_size": True},
        {"checkpoint_window": 0},
        {"checkpoint_window": -5},
        {"session_ttl_hours": 0},
        {"session_ttl_hours": -1},
        {"session_ttl_hours": math.nan},
        {"session_ttl_hours": math.inf},
        {"max_payload_bytes": 0},
        {"max_payload_bytes": 1},
        {"max_payload_bytes": 2**40},
        {"max_payload_bytes": "1000"},
    ],
    ids=repr,
)
async def test_bad_options_are_refused_at_construction(
    manager_factory: ManagerFactory, options: dict[str, Any]
) -> None:
    """Old code: cleanup_batch_size=0 made every sweep loop for ever (on the memory store,
    blocking the event loop), checkpoint_window=0 kept the whole trail in the caches."""
    with pytest.raises(ConfigurationError) as caught:
        await manager_factory(**options)
    assert isinstance(caught.value, ValueError)


async def test_good_options_at_their_bounds_are_taken(make_manager: MakeManager) -> None:
    manager = await make_manager(
        cleanup_batch_size=1, checkpoint_window=1, max_payload_bytes=100, session_ttl_hours=0.01
    )
    session = await manager.create_session("x")
    await manager.append_checkpoint(session.session_id, "a")
    got = await manager.get_session(session.session_id)
    assert got is not None and [cp.name for cp in got.checkpoints] == ["a"]
    assert await manager.cleanup_stale_sessions(timedelta(0)) == 1


async def test_sweeps_and_reaps_refuse_bad_arguments_before_doing_anything(
    manager: SessionManager,
) -> None:
    """Old code: reap checked max_age only after it had expired the leases."""
    session = await manager.create_session("x")
    lease = await manager.claim(session.session_id, "w", timedelta(milliseconds=1))
    await asyncio.sleep(0.05)
    for batch_size in (0, -1, True, 1.5):
        with pytest.raises(ValidationError, match="batch_size"):
            await manager.reap(timedelta(hours=1), batch_size=batch_size)  # type: ignore[arg-type]
    for max_age in (timedelta(seconds=-1), 5):
        with pytest.raises(ValidationError, match="max_age"):
            await manager.reap(max_age)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="max_age"):
            await manager.cleanup_stale_sessions(max_age)  # type: ignore[arg-type]
    # The expired lease is still there for a reaper to clear: nothing was done.
    assert [x.token for x in await manager.store.expire_leases(limit=10)] == [lease.token]
    got = await manager.get_session(session.session_id)
    assert got is not None and got.state is SessionState.ACTIVE
    manager.cleanup_batch_size = 0
    with pytest.raises(ValidationError, match="batch_size"):
        await manager.cleanup_stale_sessions(timedelta(0))


async def test_listing_limits_and_cursors_are_checked(manager: SessionManager) -> None:
    session = await manager.create_session("x")
    sid = session.session_id
    for limit in (0, -1, 10_001, True, 2.0):
        with pytest.raises(ValidationError, match="limit"):
            await manager.list_checkpoints(sid, limit=limit)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="limit"):
            await manager.list_sessions(limit=limit)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="limit"):
            await manager.get_active_sessions(limit=limit)  # type: ignore[arg-type]
    for after_seq in (-1, None, 1.0):
        with pytest.raises(ValidationError, match="after_seq"):
            await manager.list_checkpoints(sid, after_seq=after_seq)  # type: ignore[arg-type]
    assert [cp.seq for cp in await manager.list_checkpoints(sid, limit=10_000)] == [1]


@pytest.mark.parametrize(
    "ttl",
    [timedelta(0), timedelta(seconds=-1), timedelta(days=366), timedelta.max, 30],
    ids=["zero", "negative", "366-days", "max", "int"],
)
async def test_lease_ttls_are_checked(manager: SessionManager, ttl: Any) -> None:
    """Old code: timedelta.max overflowed (OverflowError) on memory and SQLite."""
    session = await manager.create_session("x")
    with pytest.raises(ValidationError, match="ttl"):
        await manager.claim(session.session_id, "w", ttl)
    assert await manager.current_lease(session.session_id) is None
    lease = await manager.claim(session.session_id, "w", timedelta(days=365))
    with pytest.raises(ValidationError, match="ttl"):
        await manager.renew(lease, ttl)
    assert await manager.current_lease(session.session_id) == lease


# --- the property: every backend decides as memory does, and gives back what it took ----------

EDGE_FLOATS = [*BIG_AND_TINY_FLOATS.values(), -0.0, math.nan, math.inf, 0.1]
EDGE_INTS = [0, -1, 2**53 + 1, INT_MAX, INT_MIN, INT_MAX + 1, INT_MIN - 1, 2**64, 10**40]
EDGE_TEXTS = ["", "\x00", "a\x00b", "\ufdd0", "\ufdd00", "\ufdd01", "😀", "\u2028", '"\\', "1e16"]
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]

texts = st.lists(
    st.characters() | st.sampled_from([*SURROGATES, "\x00", "\ufdd0"]), max_size=6
).map("".join) | st.sampled_from(EDGE_TEXTS + SURROGATES)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.sampled_from(EDGE_INTS)
    | st.floats()
    | st.sampled_from(EDGE_FLOATS)
    | texts
)
json_like = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(texts, inner, max_size=3)
        | st.lists(inner, max_size=2).map(tuple)
    ),
    max_leaves=12,
) | st.integers(min_value=MAX_DEPTH - 3, max_value=MAX_DEPTH + 1).map(nested)


async def _write(manager: SessionManager, value: Any) -> tuple[type[Exception] | None, str]:
    """Create a session holding ``value`` in its context, metadata, a checkpoint and a patch;
    the refusal's class, or ``None`` and the session id."""
    try:
        session = await manager.create_session("p", context={"v": value}, metadata={"m": value})
    except ValidationError as exc:
        return type(exc), ""
    await manager.append_checkpoint(session.session_id, "c", {"c": value})
    await manager.patch_context(session.session_id, {"p": value})
    return None, session.session_id


async def _view(manager: SessionManager, session_id: str) -> AgentSession:
    got = await manager.get_session(session_id)
    assert got is not None
    return got


async def _compare(
    writer: SessionManager, reader: SessionManager, reference: SessionManager, value: Any
) -> None:
    expected, ref_id = await _write(reference, value)
    refused, sid = await _write(writer, value)
    assert refused is expected, (value, refused, expected)
    if refused is not None:
        return
    want = await _view(reference, ref_id)
    assert same(want.context["v"], value) and same(want.metadata, {"m": value})
    for manager in (writer, reader, reader):
        got = await _view(manager, sid)
        assert same(got.context, want.context), (value, got.context)
        assert same(got.metadata, want.metadata)
        assert same(got.checkpoints[-1].data, {"c": value})
    trail = await reader.list_checkpoints(sid)
    assert same(trail[-1].data, {"c": value})


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_every_backend_decides_as_memory_does_and_gives_back_exactly_what_it_took(
    backend: str, manager_factory: ManagerFactory
) -> None:
    """Arbitrary JSON-like values (edge floats, integers around 64 bits, strings with
    surrogates and U+0000, tuples, nesting around the limit) through create_session,
    append_checkpoint and patch_context: the backend refuses exactly what the memory store
    refuses, with the same error class, and reads back what it took, value and type, through
    the writer and through a second manager (so through Valkey and the in-process tier)."""
    loop = asyncio.new_event_loop()
    managers: list[SessionManager] = []

    async def opened() -> SessionManager:
        manager = await manager_factory()
        await manager.open()
        managers.append(manager)
        return manager

    try:
        writer, reader = loop.run_until_complete(opened()), loop.run_until_complete(opened())
        reference = SessionManager()
        managers.append(reference)

        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(json_like)
        @example(1e16)
        @example(1e19)
        @example(-0.0)
        @example(5e-324)
        @example([INT_MAX, INT_MIN])
        @example(INT_MAX + 1)
        @example("\ud800")
        @example({"\udc00": 1})
        @example("a\x00\ufdd0")
        @example((1, 2))
        @example(nested(MAX_DEPTH - 1))
        @example(nested(MAX_DEPTH))
        @example(nested(255))
        def check(value: Any) -> None:
            loop.run_until_complete(_compare(writer, reader, reference, value))

        check()
    finally:
        for manager in managers:
            loop.run_until_complete(manager.close())
        loop.close()
