"""Events over PostgreSQL LISTEN/NOTIFY, for deployments with PostgreSQL and no Valkey.

A notification is delivered only to sessions listening at the time, at most once; payloads are
limited to 8000 bytes by PostgreSQL, which session events stay far below. One dedicated
connection listens; if it breaks, ``generation`` is bumped and it reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any

from agent_core.bus.base import EventBus, SessionEvent
from agent_core.errors import MissingDependency
from agent_core.logthrottle import LogThrottle

__all__ = ["PostgresBus"]

logger = logging.getLogger(__name__)
_throttled = LogThrottle(logger)


_CHANNEL_PREFIX = "agent_core_events_"


def _channel(namespace: str) -> str:
    """The LISTEN/NOTIFY channel of ``namespace``: one channel per namespace, and no sharing.

    Sanitising the namespace into an identifier merged namespaces (``tenant-a`` and ``tenant.a``
    both became ``tenant_a``), and cutting it to 63 bytes broke long non-ASCII ones: PostgreSQL
    truncates the identifier of ``LISTEN`` to 63 bytes but not the text given to ``pg_notify``,
    so the two never met. A SHA-256 prefix (160 bits) of the UTF-8 namespace is collision-free in
    practice and always a 58-character lowercase ASCII identifier, the same whether quoted (as
    asyncpg's ``add_listener`` does) or not.
    """
    digest = hashlib.sha256(namespace.encode()).hexdigest()[:40]
    return _CHANNEL_PREFIX + digest


class PostgresBus(EventBus):
    def __init__(self, dsn: str, *, namespace: str, timeout: float = 5.0) -> None:
        super().__init__()
        self.dsn = dsn
        self.channel = _channel(namespace)
        self.timeout = timeout
        self._listener: Any = None
        self._publisher: Any = None
        self._outbox: asyncio.Queue[str] = asyncio.Queue(10_000)
        self._sender: asyncio.Task[None] | None = None
        self.dropped = 0
        self._reconnect_task: asyncio.Task[None] | None = None
        self._healthy = False
        self._closing = False

    @property
    def is_shared(self) -> bool:
        return True

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def open(self) -> None:
        self._closing = False
        try:
            await self._listen()
        except Exception as exc:  # the store reports PostgreSQL outages; keep retrying here
            logger.warning("event listener could not connect, retrying: %s", exc)
            self._schedule_reconnect()

    async def _connect(self) -> Any:
        try:
            import asyncpg
        except ImportError as exc:
            raise MissingDependency(
                "PostgresBus needs asyncpg: pip install 'agent-core[postgres]'"
            ) from exc
        return await asyncpg.connect(self.dsn, timeout=self.timeout)

    async def _listen(self) -> None:
        conn = await self._connect()
        await conn.add_listener(self.channel, self._on_notify)
        conn.add_termination_listener(self._on_terminated)
        self._listener = conn
        self.generation += 1
        self._healthy = True

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            event = SessionEvent.decode(payload)
        except Exception:
            logger.warning("ignoring a malformed event on %s", channel)
            return
        self._dispatch(event)

    def _on_terminated(self, conn: Any) -> None:
        if conn is not self._listener:
            return
        self._listener = None
        self._healthy = False
        self.generation += 1
        if not self._closing:
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.05
        while not self._closing and self._listener is None:
            try:
                await self._listen()
                return
            except Exception as exc:
                logger.debug("event listener reconnect failed: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def publish(self, event: SessionEvent, *, fenced: bool = True) -> None:
        """Queue ``event``; one background task sends the queue in order, in batches.

        NOTIFY cannot promise that a listener has the event when it returns (``poll`` cannot
        apply it synchronously), so no write waits for it: caches on a PostgreSQL-only setup
        check versions instead. A failed send is logged and counted in ``dropped``.
        """
        if self._outbox.full():
            self._outbox.get_nowait()
            self.dropped += 1
        self._outbox.put_nowait(event.encode().decode())
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while not self._outbox.empty():
            batch = [self._outbox.get_nowait() for _ in range(min(self._outbox.qsize(), 500))]
            try:
                if self._publisher is None or self._publisher.is_closed():
                    self._publisher = await self._connect()
                await self._publisher.execute(
                    "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload",
                    self.channel,
                    batch,
                    timeout=self.timeout,
                )
            except Exception as exc:
                self.dropped += len(batch)
                _throttled.warning("publish", "could not publish %d events: %s", len(batch), exc)
                if self._publisher is not None:
                    self._publisher.terminate()
                    self._publisher = None
                await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self._sender is not None:
            # Let what was published before close() go out, within the timeout.
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(self._sender), self.timeout)
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        self._closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
            self._reconnect_task = None
        for conn in (self._listener, self._publisher):
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), self.timeout)
        self._listener = self._publisher = None
        self._healthy = False
