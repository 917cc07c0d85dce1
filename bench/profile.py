"""Profile one workload on one configuration with pyinstrument (``bench`` extra).

    python -m bench.profile W2 ac-pg-valkey [--quick] [--html out.html]

Starts the servers it needs like ``bench.run``, runs the workload once untimed as a warm-up
and once under the profiler, and prints the call tree (wall clock, async-aware).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from bench.configs import BenchEnv
from bench.run import ALL, servers
from bench.workloads import QUICK, STANDARD, WORKLOADS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("config", choices=[c.name for c in ALL])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--html", default="", help="also write an HTML report here")
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--valkey-url", default=None)
    args = parser.parse_args(argv)
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise SystemExit("pyinstrument is not installed: pip install -e '.[bench]'") from None
    cls = next(c for c in ALL if c.name == args.config)
    cls.check_available()
    sizes = QUICK if args.quick else STANDARD
    with (
        servers(
            "postgres" in cls.needs, "valkey" in cls.needs, args.postgres_url, args.valkey_url
        ) as (pg, vk, problems),
        tempfile.TemporaryDirectory(prefix="agent-core-profile-") as tmp,
    ):
        if problems:
            raise SystemExit("; ".join(problems.values()))
        env = BenchEnv(workdir=Path(tmp), postgres_dsn=pg, valkey_url=vk)

        async def once(profiler: Profiler | None) -> None:
            adapter = cls(env, args.workload.lower())
            await adapter.setup()
            try:
                if profiler is not None:
                    profiler.start()
                results = await WORKLOADS[args.workload](adapter, sizes)
                if profiler is not None:
                    profiler.stop()
            finally:
                await adapter.teardown()
            for r in results:
                print(f"{r.workload} {r.config}: {r.ops_per_s:,.0f} ops/s, p50 {r.p50_ms:.3f} ms")

        async def go() -> Profiler:
            await once(None)
            profiler = Profiler(async_mode="enabled", interval=0.0005)
            await once(profiler)
            return profiler

        profiler = asyncio.run(go())
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    if args.html:
        Path(args.html).write_text(profiler.output_html())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
