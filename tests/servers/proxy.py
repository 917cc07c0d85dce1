"""A TCP proxy on 127.0.0.1 for fault tests: slow replies, and cutting a client off a server.

``DelayProxy(host, port, delay=0.15)`` forwards every connection to ``host:port``. Bytes from
the client go through at once; bytes from the server reach the client ``delay`` seconds after
the proxy received them (order kept), as on a slow or distant link. ``cut()`` closes every
connection and closes each new one at once (the client is cut off from the server, which
stays up for everyone else); ``restore()`` lets connections through again.

The proxy runs its own event loop in a daemon thread, so it keeps forwarding whatever the
test's event loop is doing. Use it as a context manager (or ``start()`` / ``close()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

__all__ = ["DelayProxy"]

_CHUNK = 65536


class DelayProxy:
    def __init__(self, host: str, port: int, *, delay: float = 0.0) -> None:
        self.target = (host, port)
        self.delay = delay
        self._cut = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def for_url(cls, url: str, *, delay: float = 0.0) -> Self:
        """A proxy in front of the server of a ``redis://host:port/db`` URL."""
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 6379, delay=delay)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy has not been started")
        return self._port

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    # --- control (from any thread) ---------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._accept, "127.0.0.1", 0)
                )
                self._port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # pragma: no cover - reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name="delay-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the proxy did not start within 10 s")
        if failure:
            raise RuntimeError(f"the proxy could not start: {failure[0]}")

    def cut(self) -> None:
        """Close every connection now, and every new one as soon as it is accepted."""
        self._cut = True
        self._call(self._close_all)

    def restore(self) -> None:
        self._cut = False

    def set_delay(self, delay: float) -> None:
        self.delay = delay

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = self._loop = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, fn: object) -> None:
        loop = self._loop
        if loop is None:
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn()  # type: ignore[operator]
            finally:
                done.set()

        loop.call_soon_threadsafe(run)
        done.wait(5)

    # --- inside the proxy's loop ----------------------------------------------------------

    def _close_all(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if self._cut:
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pair = (writer, up_writer)
        for coro in (
            self._pump_up(reader, up_writer, pair),
            self._pump_down(up_reader, writer, pair),
        ):
            task = asyncio.get_running_loop().create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _drop(self, pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        for w in pair:
            self._writers.discard(w)
            with contextlib.suppress(Exception):
                w.transport.abort()

    async def _pump_up(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._drop(pair)

    async def _pump_down(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = loop.create_task(deliver())
        try:
            while data := await reader.read(_CHUNK):
                queue.put_nowait((loop.time() + self.delay, data))
            queue.put_nowait((loop.time() + self.delay, b""))
            await sender
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            self._drop(pair)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._close_all()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
