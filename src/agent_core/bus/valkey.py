"""The event bus on Valkey pub/sub: events reach every process subscribed to the namespace.

Publishing goes through the ordinary (injected or owned) client. Receiving uses a dedicated,
raw, non-blocking TCP connection speaking RESP2, watched with ``loop.add_reader``. A client
library's subscriber only hands over messages after an await; ``poll()`` takes whatever the
kernel already holds *synchronously*. (It was built for the in-process cache tier, which no
longer relies on events at all: freshness is proven by versions, ``agent_core.tiers``.)

With ``fence=True`` (the default for a bus used on its own; the Valkey tier turns it off),
``publish`` returns only once the event is in every subscriber's socket buffer (on one server):
after the ``PUBLISH`` reply it makes one more round trip (a ``PING``). Valkey writes the
``PUBLISH`` reply and the messages to subscribers in the same pass of its event loop, reply
first, so a subscriber on another connection can be a few microseconds behind the publisher;
the server only reads the ``PING`` after that pass has finished, so its reply proves that every
subscriber's copy has been written. ``fence=False`` drops that round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import select
import socket
import time
from collections.abc import Sequence
from typing import Any, Self

from agent_core.bus.base import EventBus, SessionEvent
from agent_core.cache import keys
from agent_core.cache.valkey import (
    WRITE_SCRIPT,
    WRITE_SHA,
    CacheWrite,
    ValkeyCache,
    client_from_url,
    close_client,
    is_noscript,
    is_pool_exhausted,
    write_args,
)
from agent_core.errors import CacheUnavailable, ConfigurationError, NotOpenError
from agent_core.logthrottle import LogThrottle

__all__ = ["ValkeyBus"]

logger = logging.getLogger(__name__)
_throttled = LogThrottle(logger)

_PING = b"*1\r\n$4\r\nPING\r\n"
_CHUNK = 128  # messages per pipeline

# An event's encoded message, and the cache write to send in the same command (or None).
_Message = tuple[bytes, CacheWrite | None]
_RECV_SIZE = 65536


class _Incomplete(Exception):
    """The buffer ends in the middle of a reply."""


class _ProtocolError(Exception):
    """The server sent something that is not RESP2."""


class _ErrorReply(str):
    """A RESP ``-ERR ...`` reply."""


class _HandshakeError(Exception):
    """The server refused AUTH, SELECT or SUBSCRIBE."""


def _command(*args: bytes | str) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One RESP2 value starting at ``buf[pos]`` and the position after it."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    if kind == 0x24:  # $ bulk string
        size = int(buf[pos + 1 : end])
        if size < 0:
            return None, end + 2
        start = end + 2
        stop = start + size
        if len(buf) < stop + 2:
            raise _Incomplete
        return bytes(buf[start:stop]), stop + 2
    if kind == 0x2A:  # * array
        count = int(buf[pos + 1 : end])
        if count < 0:
            return None, end + 2
        items: list[Any] = []
        pos = end + 2
        for _ in range(count):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 0x2B:  # + simple string
        return bytes(buf[pos + 1 : end]), end + 2
    if kind == 0x3A:  # : integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 0x2D:  # - error
        return _ErrorReply(buf[pos + 1 : end].decode(errors="replace")), end + 2
    raise _ProtocolError(f"unexpected RESP type byte {kind!r}")


def _parse_all(buf: bytearray) -> list[Any]:
    """Every complete reply in ``buf``, removed from it; a partial tail stays for later."""
    replies: list[Any] = []
    pos = 0
    size = len(buf)
    try:
        while pos < size:
            reply, pos = _parse(buf, pos)
            replies.append(reply)
    except _Incomplete:
        pass
    except ValueError as exc:
        raise _ProtocolError(str(exc)) from exc
    if pos:
        del buf[:pos]
    return replies


def _address(client: Any) -> tuple[Any, ...] | None:
    """Where ``client``'s commands go (socket, host, port, database, user), if it says."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if not isinstance(kwargs, dict):
        return None
    return (
        kwargs.get("path"),
        kwargs.get("host") or "localhost",
        int(kwargs.get("port") or 6379),
        int(kwargs.get("db") or 0),
        kwargs.get("username"),
    )


class ValkeyBus(EventBus):
    """Session events over ``PUBLISH``/``SUBSCRIBE`` on ``keys.events_channel(namespace)``.

    ``generation`` is bumped when the subscriber connection is lost and again once it is
    subscribed anew; ``healthy`` is False in between (and while a heartbeat ``PING`` goes
    unanswered for ``ping_timeout`` seconds, which also counts as a lost connection, so that a
    stalled server or a silent network partition cannot leave the bus healthy but deaf).
    """

    def __init__(
        self,
        client: Any,
        *,
        namespace: str,
        timeout: float = 0.25,
        fence: bool = True,
        ping_interval: float | None = 1.0,
        ping_timeout: float = 1.0,
        reconnect_min: float = 0.05,
        reconnect_max: float = 1.0,
        retry_after: float = 0.5,
    ) -> None:
        super().__init__()
        self._client = client
        self._owns_client = False
        self.namespace = namespace
        self.channel = keys.events_channel(namespace)
        self.timeout = timeout
        self.fence = fence
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.retry_after = retry_after
        self.generation = 0
        self._healthy = False
        self._subscribed_before = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._poller: select.poll | None = None
        self._buf = bytearray()
        self._draining = False
        self._closed = False
        self._ping_sent_at = 0.0
        self._reconnect_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._broken_until = 0.0
        self._outbox: list[tuple[list[_Message], asyncio.Future[None] | None]] = []
        self._sender: asyncio.Task[None] | None = None
        # True while a batch is in flight (a publisher's own, or the sender task's).
        self._sending = False
        self._script_loaded = False
        self.dropped = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str,
        timeout: float = 0.25,
        **options: Any,
    ) -> Self:
        """A bus that owns a redis-py client for ``url`` (closed by ``close()``).

        ``options`` are this class's keyword options; any other keyword goes to the client.
        """
        own = {
            name: options.pop(name)
            for name in (
                "fence",
                "ping_interval",
                "ping_timeout",
                "reconnect_min",
                "reconnect_max",
                "retry_after",
            )
            if name in options
        }
        client = client_from_url(url, timeout=timeout, **options)
        bus = cls(client, namespace=namespace, timeout=timeout, **own)
        bus._owns_client = True
        return bus

    @property
    def client(self) -> Any:
        return self._client

    @property
    def is_shared(self) -> bool:
        return True

    @property
    def healthy(self) -> bool:
        return self._healthy

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Subscribe; if Valkey cannot be reached, start unhealthy and keep trying.

        Raises ``ConfigurationError`` for what retrying cannot fix: a TLS or cluster client, or
        credentials or a database number the server refuses.
        """
        if self._closed:
            raise NotOpenError("the Valkey bus is closed")
        if self._loop is not None:
            return
        self._target()  # reject unusable clients before anything is started
        self._loop = asyncio.get_running_loop()
        try:
            await self._connect()
        except ConfigurationError:
            self._loop = None
            raise
        except Exception as exc:
            logger.warning("Valkey bus: cannot subscribe yet (%s); retrying in background", exc)
            # Subscribers may already hold state: the first subscription must bump generation.
            self._subscribed_before = True
            self._start_reconnect()
        if self.ping_interval:
            self._heartbeat_task = self._loop.create_task(self._heartbeat())

    async def close(self) -> None:
        if self._closed:
            return
        if self._sender is not None:
            # Let what was published before close() go out, within the timeout.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._sender), self.timeout)
        self._closed = True
        self._healthy = False
        self._broken_until = float("inf")  # routes publish() to its closed check
        tasks = [
            t for t in (self._reconnect_task, self._heartbeat_task, self._sender) if t is not None
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._reconnect_task = self._heartbeat_task = self._sender = None
        self._teardown()
        if self._owns_client:
            await close_client(self._client)

    # --- publishing ------------------------------------------------------------------------

    def shares_server_with(self, cache: ValkeyCache) -> bool:
        """True when ``cache`` writes to the server (and database) this bus publishes on, so
        that a cache write and its event can travel as one command (``publish(write=...)``)."""
        if cache.client is self._client:
            return True
        mine, theirs = _address(self._client), _address(cache.client)
        return mine is not None and mine == theirs

    async def publish(
        self, event: SessionEvent, *, fenced: bool = True, write: CacheWrite | None = None
    ) -> None:
        await self.publish_many((event,), fenced=fenced, writes=None if write is None else (write,))

    async def publish_many(
        self,
        events: Sequence[SessionEvent],
        *,
        fenced: bool = True,
        writes: Sequence[CacheWrite | None] | None = None,
    ) -> None:
        """Send the events in order, after everything published before them.

        ``writes``, one per event (or ``None``), are cache writes (``ValkeyCache.entry_write``,
        ``tombstone_write``) to send in the same command as their event: one command per
        change, and the write and its announcement succeed or fail together (callers check
        ``shares_server_with`` first).

        A fenced call returns once its events (and every event queued before them) have reached
        every subscriber's connection, and raises ``CacheUnavailable`` if they could not be
        sent. When nothing is in flight it sends them itself; otherwise they join the queue
        that one sender task pipelines, so concurrent writers share round trips. An unfenced
        call returns at once; a failure to send it is logged and counted in ``dropped``.
        """
        if not events:
            return
        if writes is not None and not fenced:
            # A write whose failure nobody hears of could leave a stale entry behind.
            raise ValueError("cache writes go out with fenced events only")
        if self._broken_until:
            if self._closed:
                raise NotOpenError("the Valkey bus is closed")
            if time.monotonic() < self._broken_until:
                raise CacheUnavailable("Valkey is unavailable (circuit open after a failure)")
            self._broken_until = 0.0
        if writes is None:
            messages: list[_Message] = [(e.encode(), None) for e in events]
        else:
            messages = [(e.encode(), w) for e, w in zip(events, writes, strict=True)]
        if fenced and not self._sending:
            # Nothing in flight: no task hop; whatever queues meanwhile goes out after this.
            self._sending = True
            try:
                await self._transmit(messages, fenced=True)
            except Exception as exc:
                raise self._failed(exc) from exc
            finally:
                self._hand_over()
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future() if fenced else None
        self._outbox.append((messages, done))
        if not self._sending:
            self._sending = True
            self._sender = loop.create_task(self._send())
        if done is not None:
            await done

    def _hand_over(self) -> None:
        """After a publisher's own batch: the sender task takes what queued meanwhile."""
        if self._outbox and not self._closed:
            self._sender = asyncio.get_running_loop().create_task(self._send())
        else:
            self._sending = False

    def _failed(self, exc: BaseException) -> CacheUnavailable:
        if not is_pool_exhausted(exc):
            self._broken_until = time.monotonic() + self.retry_after
        return CacheUnavailable(f"Valkey PUBLISH failed: {type(exc).__name__}: {exc}")

    async def _send(self) -> None:
        try:
            while self._outbox:
                batch, self._outbox = self._outbox, []
                messages = [m for group, _ in batch for m in group]
                waiting = [done for _, done in batch if done is not None]
                try:
                    await self._transmit(messages, fenced=bool(waiting))
                except Exception as exc:
                    error = self._failed(exc)
                    unawaited = len(batch) - len(waiting)
                    if unawaited:
                        self.dropped += unawaited
                        _throttled.warning(
                            "dropped", "dropped %d unfenced event batches: %s", unawaited, error
                        )
                    for done in waiting:
                        if not done.done():
                            done.set_exception(error)
                    continue
                for done in waiting:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._sending = False

    async def _transmit(self, messages: list[_Message], *, fenced: bool) -> None:
        """Send ``messages`` in order (one command each); with ``fenced``, return once every
        other subscriber's copy has left the server."""
        client = self._client
        channel = self.channel
        if len(messages) == 1 and (messages[0][1] is None or self._script_loaded):
            payload, write = messages[0]
            if write is None:
                receivers = int(await client.publish(channel, payload))
            else:
                args = write_args((write,), channel, (payload,))
                try:
                    reply = await client.evalsha(WRITE_SHA, *args)
                except Exception as exc:
                    if not is_noscript(exc):
                        raise
                    # The server lost its scripts (a restart): EVAL runs and caches it again.
                    reply = await client.eval(WRITE_SCRIPT, *args)
                receivers = int(reply[1])  # {keys written, most subscribers}
        else:
            receivers = 0
            for start in range(0, len(messages), _CHUNK):
                # Chunks: packing a sweep batch's commands and parsing their replies in one go
                # would hold the event loop (and every other task of this process) for as long.
                receivers = max(receivers, await self._pipeline(messages[start : start + _CHUNK]))
        # The fence only matters to other subscribers: this process's own caches were updated
        # directly by the writer, so its own copy of the event may come later.
        others = receivers - (1 if self._healthy else 0)
        if fenced and self.fence and others > 0:
            await client.ping()

    async def _pipeline(self, messages: list[_Message]) -> int:
        """One pipeline of ``messages``; returns the most subscribers any of them reached.

        A run of messages that carry cache writes goes as one script call (a sweep's batch).
        """
        runs: list[list[_Message]] = []
        for message in messages:
            if message[1] is not None and runs and runs[-1][0][1] is not None:
                runs[-1].append(message)
            else:
                runs.append([message])
        load = not self._script_loaded and any(run[0][1] is not None for run in runs)
        pipe = self._client.pipeline(transaction=False)
        if load:
            pipe.script_load(WRITE_SCRIPT)
        channel = self.channel
        for run in runs:
            if run[0][1] is None:
                pipe.publish(channel, run[0][0])
            else:
                writes = [w for _, w in run if w is not None]
                pipe.evalsha(WRITE_SHA, *write_args(writes, channel, [p for p, _ in run]))
        replies = list(await pipe.execute(raise_on_error=False))
        if load:
            loaded = replies.pop(0)
            if isinstance(loaded, Exception):
                raise loaded
            self._script_loaded = True
        lost = [m for run, r in zip(runs, replies, strict=True) if is_noscript(r) for m in run]
        errors = [r for r in replies if isinstance(r, Exception) and not is_noscript(r)]
        if errors:
            raise errors[0]
        # PUBLISH replies with a count; the script with {written, most subscribers}.
        counts = [
            int(r[1] if isinstance(r, list) else r) for r in replies if not isinstance(r, Exception)
        ]
        if lost:
            # The server lost its scripts since they were loaded (a restart the subscriber has
            # not noticed yet): send those again with the script. They land after the rest of
            # this chunk; subscribers of a restarted server have been told to drop everything.
            self._script_loaded = False
            counts.append(await self._pipeline(lost))
        return max(counts, default=0)

    # --- receiving -------------------------------------------------------------------------

    def poll(self) -> None:
        # A zero-timeout poll() costs a third of a recv() that raises BlockingIOError, and it
        # also reports a closed connection (so a loss is noticed here, not one loop turn later).
        poller = self._poller
        if poller is not None:
            if poller.poll(0):
                self._drain()
        elif self._sock is not None:
            self._drain()

    def _drain(self) -> None:
        """Read everything the socket holds right now and dispatch the complete messages."""
        sock = self._sock
        if sock is None or self._draining:
            # Re-entered from a subscriber: the outer call is already delivering.
            return
        self._draining = True
        lost: BaseException | None = None
        eof = False
        try:
            while True:
                try:
                    data = sock.recv(_RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    lost = exc
                    break
                if not data:
                    eof = True
                    break
                self._buf += data
                if len(data) < _RECV_SIZE:
                    # Short read: the kernel buffer is empty; skip the EAGAIN round.
                    break
            # Messages that arrived before a disconnect are still delivered.
            if self._buf:
                try:
                    replies = _parse_all(self._buf)
                except _ProtocolError as exc:
                    replies = []
                    lost = exc
                for reply in replies:
                    self._handle(reply)
        finally:
            self._draining = False
        if lost is not None or eof:
            self._connection_lost(lost or ConnectionResetError("connection closed by Valkey"))

    def _handle(self, reply: Any) -> None:
        if type(reply) is list and len(reply) >= 2:
            kind = reply[0]
            if kind == b"message" and len(reply) == 3:
                try:
                    event = SessionEvent.decode(reply[2])
                except Exception:
                    logger.warning(
                        "Valkey bus: ignoring an undecodable message on %s", self.channel
                    )
                    return
                self._deliver(event)
            elif kind == b"pong":
                self._ping_sent_at = 0.0
        elif isinstance(reply, _ErrorReply):
            logger.warning("Valkey bus: server error on the subscriber connection: %s", reply)

    def _deliver(self, event: SessionEvent) -> None:
        # One failing subscriber must not starve the others, nor break the poll() of a reader.
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                logger.exception("Valkey bus: subscriber %r failed", subscriber)

    # --- connection ------------------------------------------------------------------------

    def _target(self) -> tuple[str | None, str, int, list[bytes]]:
        """(unix socket path, host, port, handshake commands) from the client's settings."""
        pool = getattr(self._client, "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", None)
        if not isinstance(kwargs, dict):
            raise ConfigurationError(
                "ValkeyBus needs a single-node redis-py or valkey-py asyncio client "
                "(with connection_pool.connection_kwargs)"
            )
        connection_class = getattr(pool, "connection_class", None)
        if "ssl" in getattr(connection_class, "__name__", "").lower() or kwargs.get("ssl"):
            raise ConfigurationError(
                "ValkeyBus does not support TLS (rediss:// / valkeys://) for its subscriber yet"
            )
        username = kwargs.get("username")
        password = kwargs.get("password")
        provider = kwargs.get("credential_provider")
        if provider is not None:
            credentials = tuple(provider.get_credentials())
            if len(credentials) == 2:
                username, password = credentials
            elif len(credentials) == 1:
                password = credentials[0]
        handshake: list[bytes] = []
        if password:
            if username:
                handshake.append(_command("AUTH", username, password))
            else:
                handshake.append(_command("AUTH", password))
        db = int(kwargs.get("db") or 0)
        if db:
            handshake.append(_command("SELECT", str(db)))
        handshake.append(_command("SUBSCRIBE", self.channel))
        path = kwargs.get("path")
        host = str(kwargs.get("host") or "localhost")
        port = int(kwargs.get("port") or 6379)
        return (str(path) if path else None), host, port, handshake

    async def _addresses(self, host: str, port: int) -> list[tuple[int, Any]]:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            return [(info[0], info[4]) for info in infos]
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        return [(family, (host, port))]

    async def _connect(self) -> None:
        """Connect, authenticate, subscribe and start watching the socket."""
        loop = self._loop
        if loop is None:
            raise NotOpenError("the Valkey bus is not open")
        path, host, port, handshake = self._target()
        async with asyncio.timeout(self.timeout):
            if path is not None:
                targets: list[tuple[int, Any]] = [(socket.AF_UNIX, path)]
            else:
                targets = await self._addresses(host, port)
            last: BaseException | None = None
            for family, address in targets:
                sock = socket.socket(family, socket.SOCK_STREAM)
                try:
                    sock.setblocking(False)
                    if family != socket.AF_UNIX:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                    await loop.sock_connect(sock, address)
                    await loop.sock_sendall(sock, b"".join(handshake))
                    leftover = await self._read_handshake(loop, sock, len(handshake))
                except OSError as exc:
                    sock.close()
                    last = exc
                    continue
                except BaseException:
                    sock.close()
                    raise
                self._attach(loop, sock, leftover)
                return
            raise last or OSError(f"no address for {host}:{port}")

    async def _read_handshake(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, expected: int
    ) -> list[Any]:
        """Read the replies to the handshake; return any message that came right after."""
        buf = bytearray()
        replies: list[Any] = []
        while len(replies) < expected:
            data = await loop.sock_recv(sock, _RECV_SIZE)
            if not data:
                raise ConnectionResetError("Valkey closed the connection during the handshake")
            buf += data
            replies.extend(_parse_all(buf))
        for reply in replies[: expected - 1]:
            if isinstance(reply, _ErrorReply):
                if reply.startswith(("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN")):
                    raise _HandshakeError(reply)
                raise ConfigurationError(f"Valkey refused the bus connection: {reply}")
        confirmation = replies[expected - 1]
        if not (type(confirmation) is list and confirmation and confirmation[0] == b"subscribe"):
            raise _HandshakeError(f"unexpected reply to SUBSCRIBE: {confirmation!r}")
        self._buf = buf
        return replies[expected:]

    def _attach(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, early: list[Any]
    ) -> None:
        self._sock = sock
        self._ping_sent_at = 0.0
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            self._poller = poller
        loop.add_reader(sock.fileno(), self._drain)
        if self._subscribed_before:
            # Events may have been published while no connection was subscribed.
            self.generation += 1
        self._subscribed_before = True
        self._healthy = True
        for reply in early:
            self._handle(reply)

    def _teardown(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self._sock = None
        self._poller = None
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())
        sock.close()
        self._buf = bytearray()
        self._ping_sent_at = 0.0

    def _connection_lost(self, exc: BaseException) -> None:
        if self._sock is None:
            return
        self._teardown()
        self._healthy = False
        self._script_loaded = False  # a restarted server has none of them
        self.generation += 1
        if self._closed:
            return
        _throttled.warning("lost", "Valkey bus: subscriber connection lost (%s); reconnecting", exc)
        self._start_reconnect()

    def _start_reconnect(self) -> None:
        if self._loop is None or self._closed:
            return
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = self._loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = self.reconnect_min
        while not self._closed:
            try:
                await self._connect()
            except ConfigurationError as exc:
                logger.error("Valkey bus: %s", exc)
            except Exception as exc:
                logger.debug("Valkey bus: reconnect failed: %s", exc)
            else:
                logger.info("Valkey bus: subscribed again to %s", self.channel)
                return
            # Jitter keeps a fleet of processes from reconnecting in lockstep.
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, self.reconnect_max)

    async def _heartbeat(self) -> None:
        interval = self.ping_interval or 1.0
        while not self._closed:
            await asyncio.sleep(interval)
            sock = self._sock
            if sock is None:
                continue
            try:
                sent = sock.send(_PING)
            except OSError as exc:
                self._connection_lost(exc)
                continue
            if sent != len(_PING):
                self._connection_lost(ConnectionError("the subscriber connection is stuck"))
                continue
            self._ping_sent_at = sent_at = time.monotonic()
            await asyncio.sleep(self.ping_timeout)
            if self._sock is sock and self._ping_sent_at == sent_at:
                self._drain()
                if self._sock is sock and self._ping_sent_at == sent_at:
                    self._connection_lost(TimeoutError("no answer to PING"))
