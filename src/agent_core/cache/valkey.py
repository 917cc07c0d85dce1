"""The shared cache tier on Valkey (or Redis): one key per session, versioned, with tombstones.

Value format (one string per key, ``keys.session_key(namespace, id)``)::

    <version: 20 digits><epoch: 20 digits><AgentSession.to_dict() as JSON>   an entry
    ... followed by any number of b"\n" + <a step's delta as JSON>             an entry, advanced
    <version: 20 digits><epoch: 20 digits>                                    a tombstone

A *step* is one committed change of a session (its new head and the checkpoints it added):
instead of a tombstone, the writer sends it as a delta that the script appends to an entry at
exactly the previous version, so the next reader in any process still gets a hit. A reader
applies the deltas in order. JSON from orjson never holds a raw newline, so the split is exact.

Digits are ASCII, zero padded. A fixed-width decimal header lets the Lua script compare versions
exactly as strings (Lua numbers are doubles, which cannot hold every 64-bit version), and lets
``get`` find the JSON by slicing at a constant offset instead of parsing a header. The *epoch*
is the store's tier epoch the writer knew (``SessionStore.tier_epoch``): readers trust only
entries of the current epoch, so one bump in the store invalidates every entry at once.

The client is any asyncio Redis-protocol client with redis-py's command methods: redis-py's
``redis.asyncio.Redis`` and valkey-py's ``valkey.asyncio.Valkey`` both work. Neither is imported
until ``from_url`` needs one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Self

import orjson

from agent_core.cache import keys
from agent_core.cache.base import DELETED_VERSION
from agent_core.crypto import Sealer
from agent_core.errors import (
    CacheUnavailable,
    ConfigurationError,
    DecryptionError,
    MissingDependency,
    NotOpenError,
)
from agent_core.resource import AsyncResource
from agent_core.sessions.session_models import AgentSession, SessionCheckpoint

__all__ = [
    "WRITE_SCRIPT",
    "WRITE_SHA",
    "CacheWrite",
    "ValkeyCache",
    "client_from_url",
    "close_client",
    "is_noscript",
    "is_pool_exhausted",
    "parse_header",
    "write_args",
]

_HEADER = 40
_VERSION = 20
_MANY = 100  # keys per WRITE_SCRIPT call
_SCHEMES = {"valkey": "redis", "valkeys": "rediss", "redis": "redis", "rediss": "rediss"}

# One compare-and-set per key, each optionally followed by a PUBLISH (a write and its event go
# out as one command). KEYS[i] the session keys; ARGV[1] a channel ('' for none); then per key
# i: ARGV[3i-1] the new value, ARGV[3i] its TTL in milliseconds, ARGV[3i+1] the message to
# publish after that write. A value is an entry (header + body), a tombstone (a bare header),
# or a *step*: '+', the version it follows (20 digits), a header and '\n' + a delta. A step
# extends an entry at exactly the version it follows, of the same epoch, by its delta (up to
# 256 KiB per key); otherwise it is written as the tombstone of its header. Nothing replaces a
# newer version. At the same version, a value replaces a tombstone (which only says "v is
# committed") or an entry of an older epoch; an entry of the same epoch already holds v.
# The event goes out either way: the write it announces did commit.
# Returns {keys written, the most subscribers any message reached}.
# Versions and epochs compare as fixed-width digit strings: exact for any 64-bit value.
WRITE_SCRIPT = """
local channel = ARGV[1]
local written, most = 0, 0
for i = 1, #KEYS do
  local value = ARGV[3 * i - 1]
  local cur = redis.call('GET', KEYS[i])
  local done = false
  if string.sub(value, 1, 1) == '+' then
    local after = string.sub(value, 2, 21)
    value = string.sub(value, 22)
    if cur and string.len(cur) > 40 and string.sub(cur, 1, 20) == after
       and string.sub(cur, 21, 40) == string.sub(value, 21, 40)
       and string.len(cur) + string.len(value) <= 262144 then
      redis.call('SET', KEYS[i],
                 string.sub(value, 1, 40) .. string.sub(cur, 41) .. string.sub(value, 41),
                 'PX', ARGV[3 * i])
      written = written + 1
      done = true
    else
      value = string.sub(value, 1, 40)
    end
  end
  if not done then
    local new = string.sub(value, 1, 20)
    local old = cur and string.sub(cur, 1, 20)
    if not cur or old < new
       or (old == new and (string.len(cur) <= 40
                           or string.sub(cur, 21, 40) < string.sub(value, 21, 40))) then
      redis.call('SET', KEYS[i], value, 'PX', ARGV[3 * i])
      written = written + 1
    end
  end
  if channel ~= '' then
    local n = redis.call('PUBLISH', channel, ARGV[3 * i + 1])
    if n > most then
      most = n
    end
  end
end
return {written, most}
"""
WRITE_SHA = hashlib.sha1(WRITE_SCRIPT.encode(), usedforsecurity=False).hexdigest()


def write_args(
    writes: Sequence[CacheWrite], channel: str = "", messages: Sequence[bytes] = ()
) -> list[Any]:
    """``EVALSHA WRITE_SHA`` arguments after the SHA: ``writes`` (and, with ``channel``, one
    message per write to publish after it)."""
    args: list[Any] = [len(writes)]
    args.extend(w.key for w in writes)
    args.append(channel)
    if channel:
        for w, message in zip(writes, messages, strict=True):
            args += (w.value, w.ttl_ms, message)
    else:
        for w in writes:
            args += (w.value, w.ttl_ms, b"")
    return args


class CacheWrite(NamedTuple):
    """One versioned write of ``WRITE_SCRIPT``: an entry or a tombstone, ready to send."""

    key: str
    value: bytes
    ttl_ms: int


def _header(version: int, epoch: int) -> bytes:
    if not (0 <= version < 10**_VERSION and 0 <= epoch < 10**_VERSION):
        raise ValueError(f"session version {version} or epoch {epoch} is out of range")
    return b"%020d%020d" % (version, epoch)


def parse_header(raw: bytes) -> tuple[int, int] | None:
    """``(version, epoch)`` of a stored value (or of its first 40 bytes), ``None`` if foreign."""
    if len(raw) < _HEADER or not raw[:_HEADER].isdigit():
        return None
    return int(raw[:_VERSION]), int(raw[_VERSION:_HEADER])


def _json_part(raw: bytes, sealer: Sealer | None, aad: bytes) -> Any:
    """One JSON part of a value: the entry body or a step's delta, opened if sealed."""
    if raw[:1] != b"$":
        return orjson.loads(raw)
    if sealer is None:
        raise DecryptionError("the cache entry is encrypted but no encryption_keys are configured")
    return orjson.loads(sealer.open_bytes(raw, aad))


def _decode_entry(
    body: bytes | str, sealer: Sealer | None = None, aad: bytes = b""
) -> dict[str, Any]:
    """An entry's ``to_dict()`` form, with the deltas of the steps that advanced it applied."""
    if isinstance(body, str):  # a client with decode_responses=True
        body = body.encode()
    if b"\n" not in body:
        data: dict[str, Any] = _json_part(body, sealer, aad)
        return data
    first, *deltas = body.split(b"\n")
    data = _json_part(first, sealer, aad)
    checkpoints = data["checkpoints"]
    for raw in deltas:
        delta = _json_part(raw, sealer, aad)
        checkpoints.extend(delta.pop("c"))
        window = delta.pop("w")
        data.update(delta)
        if len(checkpoints) > window:
            del checkpoints[:-window]
    return data


def is_pool_exhausted(exc: BaseException) -> bool:
    """True for the client's own connection limit: no sign that the server is in trouble."""
    return type(exc).__name__ == "MaxConnectionsError"


def is_noscript(exc: object) -> bool:
    # Duck-typed so that redis-py's and valkey-py's NoScriptError are both recognised.
    if not isinstance(exc, Exception):
        return False
    return type(exc).__name__ == "NoScriptError" or str(exc).startswith("NOSCRIPT")


def client_from_url(url: str, *, timeout: float = 0.25, **client_kwargs: Any) -> Any:
    """A redis-py asyncio client for a ``valkey[s]://`` or ``redis[s]://`` URL.

    Connect and socket timeouts are ``timeout`` and redis-py's own retries are off: a down or
    stalled server must cost one short timeout, and the callers' circuit breakers take it from
    there. ``max_connections`` defaults to 256. ``client_kwargs`` go to
    ``redis.asyncio.Redis.from_url`` and win over these defaults.
    """
    scheme, sep, rest = url.partition("://")
    mapped = _SCHEMES.get(scheme.lower()) if sep else None
    if mapped is None:
        raise ConfigurationError(
            f"unsupported cache URL {url!r}: expected valkey://, valkeys://, redis:// or rediss://"
        )
    try:
        import redis.asyncio as redis_asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError as exc:
        raise MissingDependency(
            "the Valkey cache needs redis-py: pip install 'agent-core[valkey]'"
        ) from exc
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
        # redis-py's pool refuses (at once) any command past 100 connections in use. A blocking
        # pool would make bursts wait instead, but its lock costs ~20% on every GET; a higher
        # cap keeps the hot path as is, and past it calls fail without opening the breaker.
        "max_connections": 256,
    }
    options.update(client_kwargs)
    try:
        return redis_asyncio.Redis.from_url(f"{mapped}://{rest}", **options)
    except ValueError as exc:
        raise ConfigurationError(f"bad cache URL: {exc}") from exc


async def close_client(client: Any) -> None:
    closer = getattr(client, "aclose", None) or client.close
    await closer()


class ValkeyCache(AsyncResource):
    """Sessions cached in Valkey under ``{namespace}:session:{id}`` for ``ttl`` seconds.

    A failure of Valkey raises ``CacheUnavailable`` and opens a circuit breaker: for
    ``retry_after`` seconds every call fails at once instead of waiting for another timeout, then
    the next call tries the server again.
    """

    name = "valkey"

    def __init__(
        self,
        client: Any,
        *,
        namespace: str,
        ttl: float = 86400,
        tombstone_ttl: float | None = None,
        retry_after: float = 0.5,
        sealer: Sealer | None = None,
    ) -> None:
        # With a sealer, entry bodies and step deltas are sealed (AES-GCM, bound to the key).
        self.sealer = sealer
        # A tombstone must outlive any fill it races: by default it lives as long as an entry
        # (it is 40 bytes); a fill is sent only while it is younger than half this life.
        if tombstone_ttl is None:
            tombstone_ttl = ttl
        if ttl <= 0 or tombstone_ttl <= 0:
            raise ConfigurationError("ttl and tombstone_ttl must be positive")
        self._client = client
        self._owns_client = False
        self.namespace = namespace
        self.ttl = ttl
        self.tombstone_ttl = tombstone_ttl
        self.retry_after = retry_after
        self._ttl_ms = max(1, int(ttl * 1000))
        self._tombstone_ttl_ms = max(1, int(tombstone_ttl * 1000))
        # 0.0 while closed for business: the hot path tests one float and nothing else.
        self._broken_until = 0.0
        self._closed = False
        self.stats: dict[str, int] = {
            "hits": 0,
            "misses": 0,
            "sets": 0,
            "stale_sets": 0,
            "invalidations": 0,
            "errors": 0,
            "fast_failures": 0,
        }

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str,
        ttl: float = 86400,
        tombstone_ttl: float | None = None,
        timeout: float = 0.25,
        retry_after: float = 0.5,
        sealer: Sealer | None = None,
        **client_kwargs: Any,
    ) -> Self:
        """A cache that owns a redis-py client for ``url`` and closes it on ``close()``."""
        client = client_from_url(url, timeout=timeout, **client_kwargs)
        cache = cls(
            client,
            namespace=namespace,
            ttl=ttl,
            tombstone_ttl=tombstone_ttl,
            retry_after=retry_after,
            sealer=sealer,
        )
        cache._owns_client = True
        return cache

    @property
    def client(self) -> Any:
        return self._client

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._broken_until = float("inf")
        if self._owns_client:
            await close_client(self._client)

    # --- failure handling ------------------------------------------------------------------

    def _refuse(self) -> None:
        """Raise if the breaker is open or the cache closed; called only when one of them is."""
        if self._closed:
            raise NotOpenError("the Valkey cache is closed")
        if time.monotonic() < self._broken_until:
            self.stats["fast_failures"] += 1
            raise CacheUnavailable("Valkey is unavailable (circuit open after a recent failure)")
        self._broken_until = 0.0

    def _failed(self, what: str, exc: BaseException) -> CacheUnavailable:
        self.stats["errors"] += 1
        # A pool that is out of connections says nothing about the server: no need to stop
        # trying it.
        if not is_pool_exhausted(exc):
            self._broken_until = time.monotonic() + self.retry_after
        return CacheUnavailable(f"Valkey {what} failed: {type(exc).__name__}: {exc}")

    # --- operations ------------------------------------------------------------------------

    async def get(self, session_id: str, epoch: int = 0) -> AgentSession | None:
        """The cached session of ``epoch``; ``None`` on a miss, a tombstone or another epoch."""
        if self._broken_until:
            self._refuse()
        try:
            raw = await self._client.get(keys.session_key(self.namespace, session_id))
        except Exception as exc:
            raise self._failed("GET", exc) from exc
        header = None if raw is None or len(raw) <= _HEADER else parse_header(raw)
        if header is None or header[1] != epoch:
            self.stats["misses"] += 1
            return None
        try:
            key = keys.session_key(self.namespace, session_id)
            session = AgentSession.from_dict(
                _decode_entry(raw[_HEADER:], self.sealer, key.encode())
            )
        except Exception as exc:
            # Not an entry this code wrote (a foreign or damaged value): never serve it.
            self.stats["errors"] += 1
            raise CacheUnavailable(f"undecodable cache entry for {session_id!r}: {exc}") from exc
        self.stats["hits"] += 1
        return session

    async def header(self, session_id: str) -> tuple[int, int] | None:
        """``(version, epoch)`` of what the key holds (entry or tombstone), in 40 bytes."""
        if self._broken_until:
            self._refuse()
        key = keys.session_key(self.namespace, session_id)
        try:
            raw = await self._client.getrange(key, 0, _HEADER - 1)
        except Exception as exc:
            raise self._failed("GETRANGE", exc) from exc
        return parse_header(raw) if raw else None

    async def server_id(self) -> str:
        """The Valkey server's ``run_id``: it changes whenever the server restarts."""
        if self._broken_until:
            self._refuse()
        try:
            info = await self._client.info("server")
        except Exception as exc:
            raise self._failed("INFO", exc) from exc
        run_id = info.get("run_id", "")
        return run_id.decode() if isinstance(run_id, bytes) else str(run_id)

    def entry_write(self, session: AgentSession, epoch: int = 0) -> CacheWrite:
        """The write that caches ``session`` (for a caller that sends it itself)."""
        if self._broken_until:
            self._refuse()
        key = keys.session_key(self.namespace, session.session_id)
        body = orjson.dumps(session.to_dict())
        if self.sealer is not None:
            body = self.sealer.seal_bytes(body, key.encode())
        return CacheWrite(key, _header(session.version, epoch) + body, self._ttl_ms)

    def step_write(
        self,
        head: AgentSession,
        appended: Sequence[SessionCheckpoint],
        window: int,
        epoch: int = 0,
        *,
        keeps_context: bool = False,
    ) -> CacheWrite:
        """The write of one committed change: ``head`` (the new head) and the checkpoints it
        added; it advances an entry at ``head.version - 1``, else leaves a tombstone. With
        ``keeps_context`` (an append, a heartbeat) the context and metadata stay out of it."""
        if self._broken_until:
            self._refuse()
        delta = head.to_dict()
        delta.pop("checkpoints", None)
        if keeps_context:
            del delta["context"], delta["metadata"]
        delta["c"] = [cp.to_dict() for cp in appended]
        delta["w"] = window
        key = keys.session_key(self.namespace, head.session_id)
        body = orjson.dumps(delta)
        if self.sealer is not None:
            body = self.sealer.seal_bytes(body, key.encode())
        return CacheWrite(
            key,
            b"+%020d" % (head.version - 1) + _header(head.version, epoch) + b"\n" + body,
            self._ttl_ms,
        )

    def tombstone_write(self, session_id: str, version: int, epoch: int = 0) -> CacheWrite:
        """The write that invalidates every cached version before ``version``."""
        if self._broken_until:
            self._refuse()
        return CacheWrite(
            keys.session_key(self.namespace, session_id),
            _header(version, epoch),
            self._ttl_ms if version >= DELETED_VERSION else self._tombstone_ttl_ms,
        )

    async def set(self, session: AgentSession, epoch: int = 0) -> None:
        if await self._write(self.entry_write(session, epoch)):
            self.stats["sets"] += 1
        else:
            self.stats["stale_sets"] += 1

    async def invalidate(self, session_id: str, version: int, epoch: int = 0) -> None:
        """Leave a tombstone at ``version``; returns once it is written."""
        await self.write_many([self.tombstone_write(session_id, version, epoch)])

    async def invalidate_many(self, items: Sequence[tuple[str, int]], epoch: int = 0) -> None:
        """All the tombstones in one round trip."""
        await self.write_many([self.tombstone_write(sid, version, epoch) for sid, version in items])

    async def write_many(self, writes: Sequence[CacheWrite]) -> None:
        """Send ``writes`` in one round trip: one script call per 100 keys, pipelined."""
        if not writes:
            return
        if self._broken_until:
            self._refuse()
        if len(writes) == 1:
            await self._write(writes[0])
            self.stats["invalidations"] += 1
            return
        client = self._client
        try:
            for attempt in range(2):
                pipe = client.pipeline(transaction=False)
                for start in range(0, len(writes), _MANY):
                    pipe.evalsha(WRITE_SHA, *write_args(writes[start : start + _MANY]))
                try:
                    await pipe.execute()
                    break
                except Exception as exc:
                    if attempt or not is_noscript(exc):
                        raise
                    # Every slice is safe to send again: a write never replaces a newer one.
                    await client.script_load(WRITE_SCRIPT)
        except Exception as exc:
            raise self._failed("write", exc) from exc
        self.stats["invalidations"] += len(writes)

    async def _write(self, write: CacheWrite) -> bool:
        if self._broken_until:
            self._refuse()
        client = self._client
        args = write_args((write,))
        try:
            try:
                written, _ = await client.evalsha(WRITE_SHA, *args)
            except Exception as exc:
                if not is_noscript(exc):
                    raise
                # First use on this server (or it restarted, or flushed its scripts): EVAL
                # runs the script and caches it under the same SHA for the next EVALSHA.
                written, _ = await client.eval(WRITE_SCRIPT, *args)
        except Exception as exc:
            raise self._failed("write", exc) from exc
        return bool(written)

    async def clear(self) -> None:
        if self._broken_until:
            self._refuse()
        pattern = keys.session_key(_glob_escape(self.namespace), "*")
        client = self._client
        cursor: int | bytes | str = 0
        try:
            while True:
                cursor, found = await client.scan(cursor, match=pattern, count=1000)
                if found:
                    await client.unlink(*found)
                if int(cursor) == 0:
                    break
        except Exception as exc:
            raise self._failed("clear", exc) from exc


def _glob_escape(text: str) -> str:
    for char in "\\*?[]":
        text = text.replace(char, "\\" + char)
    return text
