"""ADK session services on PostgreSQL: ``AgentCoreSessionService`` against ADK's own
``DatabaseSessionService``, on the same server, in one run.

    python -m bench.integrations.adk            # the full run (a few minutes)
    python -m bench.integrations.adk --quick    # a smoke run (seconds)

Each service gets a fresh database on one PostgreSQL server (a throwaway dev server unless
``--postgres-url`` names one) and is built as ``adk api_server`` would build it from a URI:
``postgresql+asyncpg://...`` for ``DatabaseSessionService``, ``agentcore+postgresql://...`` for
ours (the default agent-core options: PostgreSQL only, with the in-process tier).

Operations, each timed around the service call only (events are built before the clock):

* ``append_event``: events with a session-state delta (every fourth also a ``user:`` delta)
  appended to sessions, each worker on sessions of its own;
* ``get_session``: a whole session (all its events), picked at random;
* ``get_session (recent 5)``: the same with ``GetSessionConfig(num_recent_events=5)``.

Each runs with 1 worker (latency) and with ``--concurrency`` workers (throughput). The table
gives operations per second, p50 and p99 latency, and ours / theirs.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.configs import BenchEnv
from bench.integrations.common import Jobs, Timing, postgres, timed

TEXT = "The forecast for tomorrow: light rain in the morning, clearing by noon. " * 3


@dataclass
class Stat(Timing):
    """One operation's timings at one number of workers, every round together."""

    operation: str = ""
    workers: int = 0


def _event(i: int, user_delta: bool) -> Any:
    from google.adk.events.event import Event
    from google.adk.events.event_actions import EventActions
    from google.genai import types

    delta: dict[str, Any] = {"turn": i, "last_topic": f"topic-{i % 7}"}
    if user_delta:
        delta["user:turns"] = i
    author = "user" if i % 2 == 0 else "forecaster"
    return Event(
        author=author,
        invocation_id=f"inv-{i // 2}",
        content=types.Content(
            role="user" if author == "user" else "model", parts=[types.Part(text=TEXT)]
        ),
        actions=EventActions(state_delta=delta),
    )


APP = "bench"


async def warm_up(service: Any) -> None:
    """Schema, pools and first queries, before any clock runs."""
    warm = await service.create_session(app_name=APP, user_id="warm")
    for i in range(5):
        await service.append_event(warm, _event(i, True))
        await service.get_session(app_name=APP, user_id="warm", session_id=warm.id)


async def new_sessions(service: Any, count: int) -> list[Any]:
    return [
        await service.create_session(
            app_name=APP, user_id=f"user-{n % 10}", state={"user:tier": "gold"}
        )
        for n in range(count)
    ]


def append_rounds(
    service: Any, sessions: list[Any], events: int, workers: int, rounds: int
) -> list[Jobs]:
    """Round r appends events r*events/rounds.. of every session; worker w owns sessions w,
    w + workers, ..., so each session's events go in order."""
    out: list[Jobs] = []
    bounds = [events * r // rounds for r in range(rounds + 1)]
    for r in range(rounds):
        jobs: Jobs = [[] for _ in range(workers)]
        for i in range(bounds[r], bounds[r + 1]):
            for n, session in enumerate(sessions):
                event = _event(i, i % 4 == 0)

                def append(s: Any = session, e: Any = event) -> Awaitable[Any]:
                    return service.append_event(s, e)

                jobs[n % workers].append(append)
        out.append(jobs)
    return out


def get_rounds(
    service: Any,
    sessions: list[Any],
    gets: int,
    workers: int,
    rounds: int,
    config: Any,
    seed: int,
) -> list[Jobs]:
    rng = random.Random(seed)
    out: list[Jobs] = []
    for _ in range(rounds):
        jobs: Jobs = [[] for _ in range(workers)]
        for k in range(gets // rounds):
            s = rng.choice(sessions)

            def get(s: Any = s, c: Any = config) -> Awaitable[Any]:
                return service.get_session(
                    app_name=APP, user_id=s.user_id, session_id=s.id, config=c
                )

            jobs[k % workers].append(get)
        out.append(jobs)
    return out


async def compare(
    services: dict[str, Any],
    *,
    sessions: int,
    events: int,
    gets: int,
    concurrency: int,
    rounds: int,
) -> list[dict[str, Stat]]:
    """Every operation on every service, in rounds that alternate between the services, so a
    change of machine load during the run weighs on both alike."""
    from google.adk.sessions.base_session_service import GetSessionConfig

    for service in services.values():
        await warm_up(service)
    results: list[dict[str, Stat]] = []
    for workers in sorted({1, concurrency}):
        created = {name: await new_sessions(svc, sessions) for name, svc in services.items()}
        plans: dict[str, dict[str, list[Jobs]]] = {}
        for name, svc in services.items():
            plans[name] = {
                "append_event": append_rounds(svc, created[name], events, workers, rounds),
                "get_session": get_rounds(svc, created[name], gets, workers, rounds, None, 7),
                "get_session (recent 5)": get_rounds(
                    svc,
                    created[name],
                    gets,
                    workers,
                    rounds,
                    GetSessionConfig(num_recent_events=5),
                    7,
                ),
            }
        for operation in ("append_event", "get_session", "get_session (recent 5)"):
            total = {name: Stat(operation=operation, workers=workers) for name in services}
            for r in range(rounds):
                order = list(services) if r % 2 == 0 else list(reversed(services))
                for name in order:
                    stat = await timed(plans[name][operation][r])
                    total[name].seconds += stat.seconds
                    total[name].latencies += stat.latencies
            results.append(total)
        for name, svc in services.items():
            first = created[name][0]
            got = await svc.get_session(app_name=APP, user_id=first.user_id, session_id=first.id)
            if got is None or len(got.events) != events:
                raise SystemExit(f"{name}: a session lost events")
    return results


def _asyncpg_url(dsn: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(scheme="postgresql+asyncpg"))


def _agentcore_url(dsn: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(scheme="agentcore+postgresql"))


THEIRS = "DatabaseSessionService"
OURS = "agent-core"


async def bench(args: argparse.Namespace, dsn: str) -> list[dict[str, Stat]]:
    from google.adk.sessions.database_session_service import DatabaseSessionService

    from agent_core.integrations.adk import AgentCoreSessionService

    with tempfile.TemporaryDirectory() as tmp:
        env = BenchEnv(workdir=Path(tmp), postgres_dsn=dsn)
        theirs_db = await env.new_database("adk_db")
        ours_db = await env.new_database("adk_ac")
        theirs = DatabaseSessionService(db_url=_asyncpg_url(theirs_db))
        ours = AgentCoreSessionService(uri=_agentcore_url(ours_db))
        try:
            return await compare(
                {THEIRS: theirs, OURS: ours},
                sessions=args.sessions,
                events=args.events,
                gets=args.gets,
                concurrency=args.concurrency,
                rounds=args.rounds,
            )
        finally:
            await theirs.close()
            await ours.close()
            await env.drop_database(theirs_db)
            await env.drop_database(ours_db)


def table(results: list[dict[str, Stat]]) -> str:
    lines = [
        "| operation | workers | DatabaseSessionService ops/s | agent-core ops/s | ratio |"
        " p50 ms (theirs / ours) | p99 ms (theirs / ours) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        theirs, ours = result[THEIRS], result[OURS]
        ratio = ours.rate / theirs.rate if theirs.rate else float("inf")
        lines.append(
            f"| {ours.operation} | {ours.workers} | {theirs.rate:,.0f} | {ours.rate:,.0f} |"
            f" **{ratio:.1f}x** | {theirs.pct(0.5):.2f} / {ours.pct(0.5):.2f} |"
            f" {theirs.pct(0.99):.2f} / {ours.pct(0.99):.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.integrations.adk", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    parser.add_argument("--postgres-url", help="use this server instead of a throwaway one")
    parser.add_argument("--sessions", type=int, help="sessions per pass (default 64; quick 8)")
    parser.add_argument("--events", type=int, help="events per session (default 20; quick 5)")
    parser.add_argument(
        "--gets", type=int, help="get_session calls per pass (default 1200; quick 100)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="workers of the second pass")
    parser.add_argument("--rounds", type=int, help="alternations between the services (6; quick 2)")
    args = parser.parse_args(argv)
    args.sessions = args.sessions or (8 if args.quick else 64)
    args.events = args.events or (5 if args.quick else 20)
    args.gets = args.gets or (100 if args.quick else 1200)
    args.rounds = args.rounds or (2 if args.quick else 6)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = {"use_env": True, "settings": {"shared_buffers": "256MB"}}
    with postgres(args.postgres_url, **server) as dsn:
        results = asyncio.run(bench(args, dsn))
    print(
        f"ADK session services on PostgreSQL: {args.sessions} sessions x {args.events} events"
        f" per pass, {args.gets} gets per pass, {args.rounds} alternating rounds\n"
    )
    print(table(results))
    slow = [
        r[OURS].operation
        for r in results
        if r[OURS].workers == 1 and r[OURS].rate < 5 * r[THEIRS].rate
    ]
    if slow:
        print(f"\nunder 5x DatabaseSessionService with 1 worker: {', '.join(slow)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
