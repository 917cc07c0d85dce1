"""LangGraph checkpointers: ``AgentCoreSaver`` against LangGraph's own ``AsyncPostgresSaver``
(same PostgreSQL server, a database each) and ``AsyncSqliteSaver`` (a SQLite file each), in one
run.

    python -m bench.integrations.langgraph            # the full run (a few minutes)
    python -m bench.integrations.langgraph --quick    # a smoke run (seconds)

The workload is what LangGraph's loop asks of its checkpointer at each step of a graph: save the
step's checkpoint (``aput``), save the step's task writes (``aput_writes``), and read the thread's
latest checkpoint back (``aget_tuple``). The state grows at every step: a new ~1 KB output and a
counter (new versions: a blob each), a 2 KB unchanged "system" value (a blob stored once, read
at every step), and the thread's history (its checkpoints, blobs and writes) grows by one step.

* **latency**: one worker runs one thread of ``--steps`` steps (2,000); the table gives the
  median step time (the three calls) of the first 100 steps and of the last 100 steps;
* **throughput**: ``--concurrency`` workers each run a thread of their own (``--tsteps``
  steps), all at once; steps per second.

Each configuration runs ``--rounds`` times (3), interleaved with the others; the table gives the
medians.

Configurations (each on fresh storage):

* ``AsyncPostgresSaver``: ``AsyncPostgresSaver(AsyncConnectionPool(dsn, max_size=concurrency))``
  after ``setup()`` (one connection would serialize the workers);
* ``agent-core postgres``: ``AgentCoreSaver(SessionManager.from_url(dsn))`` (PostgreSQL, the
  in-process tier, its asyncpg pool);
* ``agent-core postgres (no trail)``: the same with ``trail=False`` (what the trail entry costs);
* ``AsyncSqliteSaver``: ``AsyncSqliteSaver.from_conn_string(file)``;
* ``agent-core sqlite`` and ``agent-core sqlite (no trail)``:
  ``SessionManager.from_url("sqlite:///file")``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.configs import BenchEnv
from bench.integrations.common import postgres

TEXT = "The forecast for tomorrow: light rain in the morning, clearing by noon. "
SYSTEM = {"role": "system", "content": "You are a careful assistant. " * 70}  # ~2 KB


@dataclass
class Measure:
    """One configuration over the rounds: the step latencies of each round's latency thread
    and each round's throughput."""

    latencies: list[list[float]] = field(default_factory=list)
    throughputs: list[float] = field(default_factory=list)

    def window(self, first: bool, size: int) -> float:
        """Median over rounds of the median step time (ms) of the first/last ``size`` steps."""
        return statistics.median(
            statistics.median(lat[:size] if first else lat[-size:]) * 1000 for lat in self.latencies
        )

    @property
    def throughput(self) -> float:
        return statistics.median(self.throughputs)


Factory = Callable[[BenchEnv, int], contextlib.AbstractAsyncContextManager[Any]]


# --- configurations -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def their_postgres(env: BenchEnv, concurrency: int) -> AsyncIterator[Any]:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    dsn = await env.new_database("lgpg")
    try:
        async with AsyncConnectionPool(
            dsn,
            min_size=concurrency,
            max_size=concurrency,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            open=False,
        ) as pool:
            saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            await saver.setup()
            yield saver
    finally:
        await env.drop_database(dsn)


def ours_postgres(trail: bool) -> Factory:
    @contextlib.asynccontextmanager
    async def make(env: BenchEnv, concurrency: int) -> AsyncIterator[Any]:
        from agent_core.integrations.langgraph import AgentCoreSaver
        from agent_core.sessions.session_manager import SessionManager

        dsn = await env.new_database("lgac")
        try:
            async with SessionManager.from_url(dsn) as manager:
                yield AgentCoreSaver(manager, trail=trail)
        finally:
            await env.drop_database(dsn)

    return make


@contextlib.asynccontextmanager
async def their_sqlite(env: BenchEnv, concurrency: int) -> AsyncIterator[Any]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = env.sqlite_path("lgsqlite")
    try:
        async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
            await saver.setup()
            yield saver
    finally:
        env.remove_sqlite(path)


def ours_sqlite(trail: bool) -> Factory:
    @contextlib.asynccontextmanager
    async def make(env: BenchEnv, concurrency: int) -> AsyncIterator[Any]:
        from agent_core.integrations.langgraph import AgentCoreSaver
        from agent_core.sessions.session_manager import SessionManager

        path = env.sqlite_path("lgac")
        try:
            async with SessionManager.from_url(f"sqlite:///{path}") as manager:
                yield AgentCoreSaver(manager, trail=trail)
        finally:
            env.remove_sqlite(path)

    return make


# name -> (backend, factory); the first of each backend is the baseline.
CONFIGS: dict[str, tuple[str, Factory]] = {
    "AsyncPostgresSaver": ("postgres", their_postgres),
    "agent-core postgres": ("postgres", ours_postgres(True)),
    "agent-core postgres (no trail)": ("postgres", ours_postgres(False)),
    "AsyncSqliteSaver": ("sqlite", their_sqlite),
    "agent-core sqlite": ("sqlite", ours_sqlite(True)),
    "agent-core sqlite (no trail)": ("sqlite", ours_sqlite(False)),
}


# --- the workload ---------------------------------------------------------------------------


async def run_thread(saver: Any, steps: int, latencies: list[float] | None = None) -> None:
    """``steps`` graph steps on a new thread: aput, aput_writes, aget_tuple."""
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.base.id import uuid6

    thread_id = str(uuid.uuid4())
    run_id = str(uuid.uuid4())
    latest = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    versions: dict[str, Any] = {}
    for step in range(steps):
        started = time.perf_counter()
        output = {"role": "assistant", "content": f"step {step}: " + TEXT * 13}  # ~1 KB
        changed = ["output", "counter"] + (["system"] if step == 0 else [])
        new_versions = {}
        for channel in changed:
            versions[channel] = saver.get_next_version(versions.get(channel), None)
            new_versions[channel] = versions[channel]
        checkpoint = empty_checkpoint()
        checkpoint["id"] = str(uuid6(clock_seq=step))
        checkpoint["channel_values"] = {"output": output, "counter": step, "system": SYSTEM}
        checkpoint["channel_versions"] = dict(versions)
        checkpoint["versions_seen"] = {"agent": dict(versions)}
        metadata: Any = {"source": "loop", "step": step, "parents": {}, "run_id": run_id}
        config = await saver.aput(config, checkpoint, metadata, new_versions)
        await saver.aput_writes(
            config, [("output", output), ("counter", step + 1)], str(uuid.uuid4()), "~agent"
        )
        loaded = await saver.aget_tuple(latest)
        if loaded is None or loaded.checkpoint["id"] != checkpoint["id"]:
            raise RuntimeError(f"step {step}: read back {loaded and loaded.checkpoint['id']}")
        if latencies is not None:
            latencies.append(time.perf_counter() - started)


async def measure(factory: Factory, env: BenchEnv, args: argparse.Namespace, into: Measure) -> None:
    """One round of one configuration, on fresh storage."""
    async with factory(env, args.concurrency) as saver:
        await run_thread(saver, 20)  # warm up: connections, prepared statements
        latencies: list[float] = []
        await run_thread(saver, args.steps, latencies)
        started = time.perf_counter()
        await asyncio.gather(*(run_thread(saver, args.tsteps) for _ in range(args.concurrency)))
        into.throughputs.append(args.concurrency * args.tsteps / (time.perf_counter() - started))
        into.latencies.append(latencies)


def table(results: dict[str, Measure], args: argparse.Namespace) -> str:
    window = min(100, max(1, args.steps // 4))
    lines = [
        f"| configuration | steps/s ({args.concurrency} threads) | vs theirs "
        f"| p50 ms, steps 1-{window} | p50 ms, last {window} of {args.steps} | growth |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    baseline: dict[str, float] = {}
    for name, measure_ in results.items():
        backend = CONFIGS[name][0]
        baseline.setdefault(backend, measure_.throughput)
        ratio = measure_.throughput / baseline[backend]
        first = measure_.window(True, window)
        last = measure_.window(False, window)
        lines.append(
            f"| {name} | {measure_.throughput:,.0f} | {ratio:.2f}x | {first:.2f} "
            f"| {last:.2f} | {last / first:.2f}x |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--steps", type=int, default=2000, help="steps of the latency thread")
    parser.add_argument("--tsteps", type=int, default=200, help="steps per throughput thread")
    parser.add_argument("--concurrency", type=int, default=8, help="threads run at once")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--only", default="", help="configurations, comma separated")
    parser.add_argument("--postgres-url", default=None, help="a server to use (default: a dev one)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.tsteps, args.concurrency, args.rounds = 60, 20, 4, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [n for n in CONFIGS if not args.only or n in args.only.split(",")]
    command = "python -m bench.integrations.langgraph " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    need_pg = any(CONFIGS[n][0] == "postgres" for n in chosen)
    server = postgres(args.postgres_url) if need_pg else contextlib.nullcontext(None)
    with server as dsn, tempfile.TemporaryDirectory() as tmp:
        env = BenchEnv(workdir=Path(tmp), postgres_dsn=dsn)

        async def go() -> dict[str, Measure]:
            results = {name: Measure() for name in chosen}
            for _ in range(args.rounds):  # interleaved, so a noisy minute hits every one
                for name in chosen:
                    await measure(CONFIGS[name][1], env, args, results[name])
            return results

        results = asyncio.run(go())
    print(f"command: {command.strip()}")
    print(
        f"per step: aput + aput_writes (2 writes) + aget_tuple(latest); latency: 1 thread of "
        f"{args.steps} steps; throughput: {args.concurrency} threads x {args.tsteps} steps; "
        f"median of {args.rounds} interleaved rounds\n"
    )
    print(table(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
