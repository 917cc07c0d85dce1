"""ValkeyCache against a real valkey-server: versions, tombstones, both client libraries, faults."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agent_core.cache import keys
from agent_core.cache.base import DELETED_VERSION
from agent_core.cache.valkey import ValkeyCache
from agent_core.errors import CacheUnavailable, ConfigurationError, NotOpenError
from agent_core.sessions.session_models import AgentSession
from tests.servers.valkey import ValkeyTestServer, make_client

pytestmark = pytest.mark.valkey


@pytest.fixture(params=["redis", "valkey"])
async def client(request: pytest.FixtureRequest, server: ValkeyTestServer) -> AsyncIterator[Any]:
    c = make_client(str(request.param), server.url)
    yield c
    await c.aclose()


@pytest.fixture
async def cache(client: Any, namespace: str) -> AsyncIterator[ValkeyCache]:
    async with ValkeyCache(client, namespace=namespace, ttl=600, tombstone_ttl=30) as c:
        yield c


def session(version: int, session_id: str | None = None, **fields: Any) -> AgentSession:
    s = AgentSession(agent_type="test", user_id="u1", version=version, **fields)
    if session_id is not None:
        s.session_id = session_id
    return s


async def test_key_format_and_ttl(cache: ValkeyCache, client: Any, namespace: str) -> None:
    s = session(1)
    await cache.set(s)
    key = f"{namespace}:session:{s.session_id}"
    assert key == keys.session_key(namespace, s.session_id)
    assert await client.exists(key) == 1
    ttl_ms = await client.pttl(key)
    assert 590_000 < ttl_ms <= 600_000


async def test_round_trip_and_fresh_copies(cache: ValkeyCache) -> None:
    s = session(3, context={"a": 1, "nested": {"b": [1, 2]}}, metadata={"m": True})
    s.checkpoint("step", {"x": 1})
    s.checkpoints[0].seq = 1
    await cache.set(s)
    got = await cache.get(s.session_id)
    assert got is not None
    assert got.to_dict() == s.to_dict()
    got.context["a"] = 2
    got.metadata.clear()
    got.checkpoints.append(got.checkpoints[0])
    again = await cache.get(s.session_id)
    assert again is not None
    assert again.to_dict() == s.to_dict()
    assert cache.stats["hits"] == 2


async def test_miss(cache: ValkeyCache) -> None:
    assert await cache.get(str(uuid.uuid4())) is None
    assert cache.stats["misses"] == 1


async def test_older_version_never_replaces_newer(cache: ValkeyCache) -> None:
    newest = session(5, context={"v": 5})
    await cache.set(newest)
    await cache.set(session(3, newest.session_id, context={"v": 3}))
    await cache.set(session(5, newest.session_id, context={"v": "same version, other data"}))
    got = await cache.get(newest.session_id)
    assert got is not None
    assert (got.version, got.context) == (5, {"v": 5})
    await cache.set(session(6, newest.session_id, context={"v": 6}))
    got = await cache.get(newest.session_id)
    assert got is not None
    assert (got.version, got.context) == (6, {"v": 6})
    assert cache.stats["stale_sets"] == 2


async def test_concurrent_fills_keep_the_newest(cache: ValkeyCache) -> None:
    sid = str(uuid.uuid4())
    versions = list(range(1, 60))
    random.shuffle(versions)
    await asyncio.gather(*(cache.set(session(v, sid)) for v in versions))
    got = await cache.get(sid)
    assert got is not None
    assert got.version == 59


async def test_tombstone_refuses_stale_fill_and_accepts_newer(
    cache: ValkeyCache, client: Any, namespace: str
) -> None:
    s = session(3)
    await cache.set(s)
    await cache.invalidate(s.session_id, 4)
    assert await cache.get(s.session_id) is None
    key = keys.session_key(namespace, s.session_id)
    assert 25_000 < await client.pttl(key) <= 30_000
    # A reader that loaded version 3 before the write must not put it back...
    await cache.set(session(3, s.session_id))
    assert await cache.get(s.session_id) is None
    # ...but version 4 itself, the one the tombstone announced, is welcome, and so is later.
    await cache.set(session(4, s.session_id))
    got = await cache.get(s.session_id)
    assert got is not None and got.version == 4
    await cache.set(session(5, s.session_id))
    got = await cache.get(s.session_id)
    assert got is not None
    assert got.version == 5
    assert 590_000 < await client.pttl(key) <= 600_000


async def test_invalidate_keeps_a_newer_entry(cache: ValkeyCache) -> None:
    s = session(6)
    await cache.set(s)
    await cache.invalidate(s.session_id, 4)
    got = await cache.get(s.session_id)
    assert got is not None
    assert got.version == 6
    # An entry already at the announced version is fresh: it stays.
    await cache.invalidate(s.session_id, 6)
    got = await cache.get(s.session_id)
    assert got is not None and got.version == 6
    await cache.invalidate(s.session_id, 7)
    assert await cache.get(s.session_id) is None


async def test_invalidate_without_entry_leaves_tombstone(cache: ValkeyCache) -> None:
    sid = str(uuid.uuid4())
    await cache.invalidate(sid, 2)
    await cache.set(session(1, sid))
    assert await cache.get(sid) is None
    await cache.set(session(2, sid))
    assert await cache.get(sid) is not None


async def test_delete_tombstone_refuses_everything(cache: ValkeyCache) -> None:
    s = session(2)
    await cache.set(s)
    await cache.invalidate(s.session_id, DELETED_VERSION)
    for version in (1, 3, 10**9, DELETED_VERSION - 1):
        await cache.set(session(version, s.session_id))
        assert await cache.get(s.session_id) is None
    # A later, lower invalidation does not weaken the delete tombstone.
    await cache.invalidate(s.session_id, 7)
    await cache.set(session(8, s.session_id))
    assert await cache.get(s.session_id) is None


async def test_clear_only_touches_its_namespace(client: Any, namespace: str) -> None:
    mine = ValkeyCache(client, namespace=namespace + "*")
    other = ValkeyCache(client, namespace=namespace + "x")
    ids = [str(uuid.uuid4()) for _ in range(2500)]
    for start in range(0, len(ids), 50):
        await asyncio.gather(*(mine.set(session(1, sid)) for sid in ids[start : start + 50]))
    await other.set(session(1, ids[0]))
    await mine.clear()
    assert await mine.get(ids[0]) is None
    assert await mine.get(ids[-1]) is None
    assert await other.get(ids[0]) is not None
    await other.clear()
    assert await other.get(ids[0]) is None


async def test_script_reloaded_after_flush(cache: ValkeyCache, client: Any) -> None:
    await cache.set(session(1))
    await client.script_flush()
    s = session(2)
    await cache.set(s)
    assert await cache.get(s.session_id) is not None


async def test_decode_responses_client(server: ValkeyTestServer, namespace: str) -> None:
    client = make_client("redis", server.url, decode_responses=True)
    try:
        cache = ValkeyCache(client, namespace=namespace)
        s = session(4, context={"text": "héllo"})
        await cache.set(s)
        got = await cache.get(s.session_id)
        assert got is not None
        assert got.context == {"text": "héllo"}
        await cache.invalidate(s.session_id, 5)
        assert await cache.get(s.session_id) is None
    finally:
        await client.aclose()


async def test_foreign_value_is_never_served(cache: ValkeyCache, client: Any) -> None:
    sid = str(uuid.uuid4())
    key = keys.session_key(cache.namespace, sid)
    await client.set(key, b"%020d%020d{not json" % (1, 0))  # our header, damaged body
    with pytest.raises(CacheUnavailable):
        await cache.get(sid)
    await client.set(key, b"00000000000000000001{not ours}" + b" " * 20)  # no header at all
    assert await cache.get(sid) is None
    assert await cache.header(sid) is None


async def test_injected_client_left_open(client: Any, namespace: str) -> None:
    cache = ValkeyCache(client, namespace=namespace)
    await cache.close()
    assert await client.ping()
    with pytest.raises(NotOpenError):
        await cache.get(str(uuid.uuid4()))


@pytest.mark.parametrize("scheme", ["valkey", "redis"])
async def test_from_url(server: ValkeyTestServer, namespace: str, scheme: str) -> None:
    url = server.url.replace("redis://", f"{scheme}://")
    async with ValkeyCache.from_url(url, namespace=namespace) as cache:
        s = session(1)
        await cache.set(s)
        assert await cache.get(s.session_id) is not None


def test_from_url_rejects_other_schemes() -> None:
    with pytest.raises(ConfigurationError):
        ValkeyCache.from_url("memcached://localhost:11211", namespace="x")
    with pytest.raises(ConfigurationError):
        ValkeyCache.from_url("localhost:6379", namespace="x")


# --- faults ----------------------------------------------------------------------------------


@pytest.fixture
def faulty(server: ValkeyTestServer) -> Iterator[ValkeyTestServer]:
    if server.external:
        pytest.skip("fault tests need a server this process owns")
    yield server
    server.resume()
    server.start()


async def eventually(check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except CacheUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@pytest.mark.faults
async def test_killed_server_fails_fast_and_recovers(
    faulty: ValkeyTestServer, namespace: str
) -> None:
    async with ValkeyCache.from_url(
        faulty.url, namespace=namespace, timeout=0.25, retry_after=0.3
    ) as cache:
        s = session(1)
        await cache.set(s)
        faulty.kill()
        for call in (
            lambda: cache.get(s.session_id),
            lambda: cache.set(session(2, s.session_id)),
            lambda: cache.invalidate(s.session_id, 2),
            cache.clear,
        ):
            await asyncio.sleep(0.35)  # let the breaker close so the server is really tried
            started = time.monotonic()
            with pytest.raises(CacheUnavailable):
                await call()
            assert time.monotonic() - started < 0.5
            # The breaker is open: the next call does not even try.
            started = time.monotonic()
            with pytest.raises(CacheUnavailable):
                await call()
            assert time.monotonic() - started < 0.01
        assert cache.stats["errors"] == 4
        assert cache.stats["fast_failures"] == 4

        faulty.start()  # a fresh, empty server on the same port
        await eventually(lambda: cache.set(session(3, s.session_id)))
        got = await eventually(lambda: cache.get(s.session_id))
        assert got is not None
        assert got.version == 3


@pytest.mark.faults
async def test_stalled_server_times_out(faulty: ValkeyTestServer, namespace: str) -> None:
    async with ValkeyCache.from_url(
        faulty.url, namespace=namespace, timeout=0.25, retry_after=0.3
    ) as cache:
        s = session(1)
        await cache.set(s)
        faulty.pause()
        try:
            started = time.monotonic()
            with pytest.raises(CacheUnavailable):
                await cache.get(s.session_id)
            assert time.monotonic() - started < 0.6
            started = time.monotonic()
            with pytest.raises(CacheUnavailable):
                await cache.set(session(2, s.session_id))
            assert time.monotonic() - started < 0.01
        finally:
            faulty.resume()
        got = await eventually(lambda: cache.get(s.session_id))
        assert got is not None
        assert got.version == 1


async def test_exhausted_pool_does_not_open_the_breaker(
    server: ValkeyTestServer, namespace: str
) -> None:
    async with ValkeyCache.from_url(server.url, namespace=namespace, max_connections=2) as cache:
        s = session(1)
        await cache.set(s)
        results = await asyncio.gather(
            *(cache.get(s.session_id) for _ in range(20)), return_exceptions=True
        )
        assert any(isinstance(r, CacheUnavailable) for r in results)
        assert any(isinstance(r, AgentSession) for r in results)
        # Right away, with no wait for a breaker: the server itself was fine.
        assert await cache.get(s.session_id) is not None
        assert cache.stats["fast_failures"] == 0


async def test_invalidate_many_writes_versioned_tombstones(cache: ValkeyCache, client: Any) -> None:
    newer, older, gone = session(9), session(2), session(3)
    for s in (newer, older, gone):
        await cache.set(s)
    await client.script_flush()  # the pipeline must reload the script by itself
    await cache.invalidate_many(
        [(newer.session_id, 5), (older.session_id, 4), (gone.session_id, DELETED_VERSION)]
    )
    kept = await cache.get(newer.session_id)
    assert kept is not None and kept.version == 9
    assert await cache.get(older.session_id) is None
    await cache.set(session(3, older.session_id))  # older than the tombstone: refused
    assert await cache.get(older.session_id) is None
    await cache.set(session(4, older.session_id))
    assert (await cache.get(older.session_id)) is not None
    await cache.set(session(10**6, gone.session_id))
    assert await cache.get(gone.session_id) is None


async def test_invalidate_many_spans_several_script_calls(cache: ValkeyCache, client: Any) -> None:
    sessions = [session(3) for _ in range(250)]  # three slices of at most 100 keys
    for s in sessions:
        await cache.set(s)
    await cache.invalidate_many([(s.session_id, 4) for s in sessions])
    for s in sessions:
        assert await cache.get(s.session_id) is None
        await cache.set(session(3, s.session_id))  # older than its tombstone: refused
        assert await cache.get(s.session_id) is None


async def test_concurrent_invalidations_are_all_written_before_they_return(
    cache: ValkeyCache,
) -> None:
    sessions = [session(3) for _ in range(40)]
    for s in sessions:
        await cache.set(s)
    await asyncio.gather(
        *(cache.invalidate(s.session_id, 2 if i % 2 else 4) for i, s in enumerate(sessions))
    )
    for i, s in enumerate(sessions):
        got = await cache.get(s.session_id)
        if i % 2:  # a tombstone older than the entry leaves it alone
            assert got is not None and got.version == 3
        else:
            assert got is None
