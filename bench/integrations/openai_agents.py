"""OpenAI Agents SDK sessions: ``AgentCoreSession`` against the SDK's own ``SQLiteSession``
(SQLite file) and ``SQLAlchemySession`` (PostgreSQL, same server), in one run.

    python -m bench.integrations.openai_agents            # the full run (about a minute)
    python -m bench.integrations.openai_agents --quick    # a smoke run (seconds)

Configurations (each on fresh storage: its own SQLite file or PostgreSQL database):

* ``SQLiteSession``: the SDK's default, a file (WAL, its defaults);
* ``agent-core sqlite``: ``AgentCoreSession(id, SessionManager.from_url("sqlite:///file"))``;
* ``agent-core sqlite (from_url)``: ``AgentCoreSession.from_url(id, "sqlite:///file")``: the
  sessions share one manager on a private loop thread, so every call hops threads;
* ``SQLAlchemySession``: ``SQLAlchemySession(id, engine=engine, create_tables=True)``, one
  ``postgresql+asyncpg`` engine for every session;
* ``agent-core postgres``: ``AgentCoreSession(id, manager)`` on one manager
  (``SessionManager.from_url(dsn)``: PostgreSQL, with the in-process tier, the default);
* ``agent-core postgres (from_url)``: ``AgentCoreSession.from_url(id, dsn)``: one shared
  manager without the in-process tier (``from_url``'s default) on a private loop thread;
* ``records only (reference)``: the same manager's ``put_records`` / ``list_records`` with no
  trail checkpoint and no JSON, to show what the adapter (and its trail entry) costs.

The workload is what ``Runner.run`` does per turn: ``add_items`` of one turn (a user message,
a function call, its output and the assistant's answer: 4 items, about 1 KB), for
``--turns`` turns on each of ``--sessions`` conversations; then ``get_items()`` (the whole
history) and ``get_items(limit=10)`` on random conversations. Each phase runs with 1 worker
(latency) and with ``--concurrency`` workers, each on conversations of its own (throughput).
The table gives calls per second, p50 and p99, and ours / theirs for the same backend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.configs import BenchEnv
from bench.integrations.common import Timing as Stat
from bench.integrations.common import postgres, timed

TEXT = "The forecast for tomorrow: light rain in the morning, clearing by noon. "


def turn_items(session: int, turn: int) -> list[Any]:
    call_id = f"call_{session}_{turn}"
    return [
        {"role": "user", "content": f"Turn {turn}: what is the weather in city {session}?"},
        {
            "type": "function_call",
            "call_id": call_id,
            "name": "get_weather",
            "arguments": json.dumps({"city": f"city {session}", "days": 2}),
            "id": f"fc_{session}_{turn}",
            "status": "completed",
        },
        {"type": "function_call_output", "call_id": call_id, "output": TEXT * 3},
        {
            "id": f"msg_{session}_{turn}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "output_text", "text": TEXT * 4, "annotations": [], "logprobs": []}
            ],
        },
    ]


class Sessions:
    """One configuration: makes the sessions of a run, and cleans up."""

    name = ""
    backend = ""

    async def start(self) -> None: ...

    def session(self, session_id: str) -> Any:
        raise NotImplementedError

    async def stop(self) -> None: ...


class SDKSQLite(Sessions):
    name, backend = "SQLiteSession", "sqlite"

    def __init__(self, env: BenchEnv) -> None:
        self.path = env.sqlite_path("sdk-sqlite")
        self.made: list[Any] = []

    def session(self, session_id: str) -> Any:
        from agents import SQLiteSession

        made = SQLiteSession(session_id, self.path)
        self.made.append(made)
        return made

    async def stop(self) -> None:
        for made in self.made:
            made.close()
        BenchEnv.remove_sqlite(self.path)


class OursSQLite(Sessions):
    name, backend = "agent-core sqlite", "sqlite"

    def __init__(self, env: BenchEnv) -> None:
        self.path = env.sqlite_path("ac-sqlite")

    async def start(self) -> None:
        from agent_core.sessions import SessionManager

        self.manager = SessionManager.from_url(f"sqlite:///{self.path}")
        await self.manager.open()

    def session(self, session_id: str) -> Any:
        from agent_core.integrations.openai_agents import AgentCoreSession

        return AgentCoreSession(session_id, self.manager)

    async def stop(self) -> None:
        await self.manager.close()
        BenchEnv.remove_sqlite(self.path)


class OursSQLiteFromURL(Sessions):
    name, backend = "agent-core sqlite (from_url)", "sqlite"

    def __init__(self, env: BenchEnv) -> None:
        self.path = env.sqlite_path("ac-sqlite-url")
        self.made: list[Any] = []

    def session(self, session_id: str) -> Any:
        from agent_core.integrations.openai_agents import AgentCoreSession

        made = AgentCoreSession.from_url(session_id, f"sqlite:///{self.path}")
        self.made.append(made)
        return made

    async def stop(self) -> None:
        for made in self.made:
            await made.aclose()
        BenchEnv.remove_sqlite(self.path)


class SDKSQLAlchemy(Sessions):
    name, backend = "SQLAlchemySession", "postgres"

    def __init__(self, env: BenchEnv) -> None:
        self.env = env

    async def start(self) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        self.dsn = await self.env.new_database("oa-sqlalchemy")
        url = urlunsplit(urlsplit(self.dsn)._replace(scheme="postgresql+asyncpg"))
        self.engine = create_async_engine(url)

    def session(self, session_id: str) -> Any:
        from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession

        return SQLAlchemySession(session_id, engine=self.engine, create_tables=True)

    async def stop(self) -> None:
        await self.engine.dispose()
        await self.env.drop_database(self.dsn)


class OursPostgres(Sessions):
    name, backend = "agent-core postgres", "postgres"

    def __init__(self, env: BenchEnv) -> None:
        self.env = env

    async def start(self) -> None:
        from agent_core.sessions import SessionManager

        self.dsn = await self.env.new_database("oa-agent-core")
        self.manager = SessionManager.from_url(self.dsn)
        await self.manager.open()

    def session(self, session_id: str) -> Any:
        from agent_core.integrations.openai_agents import AgentCoreSession

        return AgentCoreSession(session_id, self.manager)

    async def stop(self) -> None:
        await self.manager.close()
        await self.env.drop_database(self.dsn)


class OursPostgresFromURL(Sessions):
    name, backend = "agent-core postgres (from_url)", "postgres"

    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        self.made: list[Any] = []

    async def start(self) -> None:
        self.dsn = await self.env.new_database("oa-agent-core-url")

    def session(self, session_id: str) -> Any:
        from agent_core.integrations.openai_agents import AgentCoreSession

        made = AgentCoreSession.from_url(session_id, self.dsn)
        self.made.append(made)
        return made

    async def stop(self) -> None:
        for made in self.made:
            await made.aclose()
        await self.env.drop_database(self.dsn)


class _RecordsOnly:
    """put_records / list_records as a session would, without the adapter."""

    def __init__(self, manager: Any, session_id: str) -> None:
        self.manager = manager
        self.scope = f"bench:{session_id}"
        self.count = 0

    async def add_items(self, items: list[Any]) -> None:
        rows = [(f"{self.count + i:016d}", json.dumps(x).encode()) for i, x in enumerate(items)]
        self.count += len(items)
        await self.manager.put_records(self.scope, rows)

    async def get_items(self, limit: int | None = None) -> list[Any]:
        if limit is None:
            rows = await self.manager.list_records(self.scope, limit=10_000)
        else:
            rows = (await self.manager.list_records(self.scope, limit=limit, descending=True))[::-1]
        return [json.loads(value) for _, value in rows]


class RecordsOnlyPostgres(OursPostgres):
    name, backend = "records only (reference)", "postgres"

    def session(self, session_id: str) -> Any:
        return _RecordsOnly(self.manager, session_id)


CONFIGS: list[Callable[[BenchEnv], Sessions]] = [
    SDKSQLite,
    OursSQLite,
    OursSQLiteFromURL,
    SDKSQLAlchemy,
    OursPostgres,
    OursPostgresFromURL,
    RecordsOnlyPostgres,
]
BASELINE = {"sqlite": "SQLiteSession", "postgres": "SQLAlchemySession"}


Results = dict[str, dict[tuple[str, int], list[Stat]]]


async def _add_round(
    config: Sessions, workers: int, args: argparse.Namespace
) -> tuple[Stat, list[list[Any]]]:
    tag = uuid.uuid4().hex[:8]
    owned = [
        [config.session(f"{tag}-{w}-{s}") for s in range(args.sessions)] for w in range(workers)
    ]
    # warm-up: one turn on each conversation (tables, pools, first session rows)
    for mine in owned:
        for index, session in enumerate(mine):
            await session.add_items(turn_items(index, 0))
    jobs = [
        [
            (lambda s=session, i=index, t=turn: s.add_items(turn_items(i, t)))
            for turn in range(1, args.turns + 1)
            for index, session in enumerate(mine)
        ]
        for mine in owned
    ]
    stat = await timed(jobs[:workers])
    got = await owned[0][0].get_items()
    if got != [x for t in range(args.turns + 1) for x in turn_items(0, t)]:
        raise SystemExit(f"{config.name}: get_items() returned the wrong history")
    return stat, owned


async def run_all(configs: list[Sessions], args: argparse.Namespace) -> Results:
    """Every phase runs ``--rounds`` times, the configurations interleaved within each round,
    so a load spike on a shared machine hits them alike; the table takes the median round."""
    results: Results = {config.name: {} for config in configs}
    rng = random.Random(7)
    for config in configs:
        await config.start()
    try:
        for workers in (1, args.concurrency):
            owned: dict[str, list[list[Any]]] = {}
            for _ in range(args.rounds):
                for config in configs:
                    stat, owned[config.name] = await _add_round(config, workers, args)
                    results[config.name].setdefault(("add_items", workers), []).append(stat)
            for _ in range(args.rounds):
                for config in configs:
                    for op, limit in (("get_items()", None), ("get_items(limit=10)", 10)):
                        picks = [
                            [rng.choice(mine) for _ in range(args.reads)]
                            for mine in owned[config.name]
                        ]
                        jobs = [
                            [(lambda s=session, n=limit: s.get_items(n)) for session in mine]
                            for mine in picks
                        ]
                        stat = await timed(jobs[:workers])
                        results[config.name].setdefault((op, workers), []).append(stat)
    finally:
        for config in configs:
            await config.stop()
    return results


def _median(stats: list[Stat]) -> tuple[float, Stat]:
    """The median round's rate, and every round's latencies together."""
    rates = sorted(stat.rate for stat in stats)
    merged = Stat([x for stat in stats for x in stat.latencies])
    return rates[len(rates) // 2], merged


def table(results: Results, concurrency: int) -> str:
    """Calls per second of the median round, p50/p99 over every round; ours / theirs for
    calls per second and for p50 (their p50 / ours), against the SDK's store on that backend."""
    lines = [
        "| operation | workers | configuration | calls/s | p50 ms | p99 ms "
        "| ours / theirs: calls/s | p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    backend_of = {make.name: make.backend for make in CONFIGS}  # type: ignore[attr-defined]
    for op in ("add_items", "get_items()", "get_items(limit=10)"):
        for workers in (1, concurrency):
            for name, stats in results.items():
                if (op, workers) not in stats:
                    continue
                rate, merged = _median(stats[(op, workers)])
                base_name = BASELINE[backend_of[name]]
                base = results.get(base_name, {}).get((op, workers))
                ratios = " | "
                if base and name != base_name:
                    base_rate, base_merged = _median(base)
                    ratios = (
                        f"{rate / base_rate:.2f}x | {base_merged.pct(0.5) / merged.pct(0.5):.2f}x"
                    )
                lines.append(
                    f"| {op} | {workers} | {name} | {rate:,.0f} | {merged.pct(0.5):.2f} "
                    f"| {merged.pct(0.99):.2f} | {ratios} |"
                )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--sessions", type=int, default=20, help="conversations per worker")
    parser.add_argument("--turns", type=int, default=10, help="add_items calls per conversation")
    parser.add_argument("--reads", type=int, default=200, help="get_items calls per worker")
    parser.add_argument("--concurrency", type=int, default=8, help="workers of the second run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per phase")
    parser.add_argument("--only", default="", help="configurations, comma separated")
    parser.add_argument("--postgres-url", default=None, help="a server to use (default: a dev one)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.turns, args.reads, args.concurrency, args.rounds = 4, 3, 30, 4, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [c for c in CONFIGS if not args.only or c.name in args.only.split(",")]  # type: ignore[attr-defined]
    command = "python -m bench.integrations.openai_agents " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    with postgres(args.postgres_url) as dsn, tempfile.TemporaryDirectory() as tmp:
        env = BenchEnv(workdir=Path(tmp), postgres_dsn=dsn)

        async def go() -> Results:
            return await run_all([make(env) for make in chosen], args)

        results = asyncio.run(go())
    print(f"command: {command.strip()}")
    print(
        f"{args.sessions} conversations per worker x {args.turns} turns of 4 items; "
        f"{args.reads} reads per worker; median of {args.rounds} interleaved rounds\n"
    )
    print(table(results, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
