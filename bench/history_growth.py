"""Does a long history slow a session down? Per store, prints the latency of appending
checkpoint 10 vs checkpoint 10,000, and of reading a short (10-checkpoint) session vs a
10,000-checkpoint one.

    python -m bench.history_growth [--checkpoints 10000] [--stores memory,sqlite,postgres,...]

A read returns the session with its 50 most recent checkpoints, so a 50-checkpoint session is
read too: the 10,000-checkpoint read vs that one isolates the cost of the history's length.
Appends are timed one by one; "checkpoint k" is the mean of the 20 appends ending at k (a single
sample is noise), the single samples are shown too. Reads go through a second manager without
an in-process tier (another process's view): on PostgreSQL + Valkey they are Valkey hits, on the
others store reads. Same servers as ``bench.run`` (started here unless given by URL).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import data
from bench.run import servers

STORES = ["memory", "sqlite", "postgres", "postgres+valkey"]


def _manager(kind: str, *, pg: str | None, vk: str | None, path: Path, ns: str, shared: Any) -> Any:
    from agent_core.sessions import SessionManager

    if kind == "memory":
        return SessionManager(store=shared, local_cache=False)
    if kind == "sqlite":
        return SessionManager.from_url(f"sqlite:///{path}", namespace=ns, local_cache=False)
    return SessionManager.from_url(
        str(pg),
        cache_url=vk if kind == "postgres+valkey" else None,
        namespace=ns,
        store_options={"schema": ns},
        local_cache=False,
    )


async def measure(
    kind: str, n: int, pg: str | None, vk: str | None, workdir: Path
) -> dict[str, Any]:
    from agent_core.stores.memory import MemoryStore

    ns = f"hg_{uuid.uuid4().hex[:10]}"
    shared = MemoryStore()
    path = workdir / f"{ns}.db"
    writer = _manager(kind, pg=pg, vk=vk, path=path, ns=ns, shared=shared)
    reader = _manager(kind, pg=pg, vk=vk, path=path, ns=ns, shared=shared)
    await writer.open()
    await reader.open()
    try:
        warm = await writer.create_session(data.AGENT_TYPE, "u", context=data.context(0))
        for i in range(50):
            await writer.append_checkpoint(warm.session_id, "step", data.checkpoint_data(i))
        short = await writer.create_session(data.AGENT_TYPE, "u", context=data.context(1))
        for i in range(9):  # + session_created = 10 checkpoints
            await writer.append_checkpoint(short.session_id, "step", data.checkpoint_data(i))
        full = await writer.create_session(data.AGENT_TYPE, "u", context=data.context(3))
        for i in range(49):  # 50 checkpoints: one full read window, like the long session's
            await writer.append_checkpoint(full.session_id, "step", data.checkpoint_data(i))
        long = await writer.create_session(data.AGENT_TYPE, "u", context=data.context(2))
        payloads = [data.checkpoint_data(i) for i in range(n)]
        lat = [0] * (n + 1)
        # session_created is checkpoint 1: the k-th append stores checkpoint k + 1.
        for k in range(1, n):
            began = time.perf_counter_ns()
            await writer.append_checkpoint(long.session_id, "step", payloads[k])
            lat[k + 1] = time.perf_counter_ns() - began

        async def read_ms(sid: str, reps: int = 300) -> float:
            for _ in range(20):
                await reader.get_session(sid)
            began = time.perf_counter_ns()
            for _ in range(reps):
                got = await reader.get_session(sid)
            assert got is not None
            return (time.perf_counter_ns() - began) / reps / 1e6

        short_ms = await read_ms(short.session_id)
        window_ms_ = await read_ms(full.session_id)
        long_ms = await read_ms(long.session_id)
        long_now = await reader.get_session(long.session_id)
        assert long_now is not None and long_now.checkpoint_count == n
    finally:
        await reader.close()
        await writer.close()
        if kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

    def window_ms(end: int) -> float:
        part = lat[max(2, end - 19) : end + 1]
        return sum(part) / len(part) / 1e6

    return {
        "store": kind,
        "append_10_ms": window_ms(10),
        "append_n_ms": window_ms(n),
        "append_10_single_ms": lat[10] / 1e6,
        "append_n_single_ms": lat[n] / 1e6,
        "read_short_ms": short_ms,
        "read_window_ms": window_ms_,
        "read_long_ms": long_ms,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.history_growth")
    parser.add_argument("--checkpoints", type=int, default=10_000)
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--valkey-url", default=None)
    args = parser.parse_args(argv)
    n = args.checkpoints
    if n < 20:
        raise SystemExit("--checkpoints must be at least 20")
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    for s in stores:
        if s not in STORES:
            raise SystemExit(f"unknown store {s!r}; known: {', '.join(STORES)}")
    need_pg = any(s.startswith("postgres") for s in stores)
    need_vk = "postgres+valkey" in stores
    rows: list[dict[str, Any]] = []
    with (
        servers(need_pg, need_vk, args.postgres_url, args.valkey_url) as (pg, vk, problems),
        tempfile.TemporaryDirectory(prefix="agent-core-history-") as tmp,
    ):
        for kind in stores:
            missing = [p for k, p in problems.items() if k in kind]
            if missing:
                print(f"{kind}: skipped ({'; '.join(missing)})")
                continue
            rows.append(asyncio.run(measure(kind, n, pg, vk, Path(tmp))))
    print(
        f"{'store':<16} {'append #10':>11} {f'append #{n:,}':>14} {'ratio':>6}"
        f"   {'read 10 cps':>11} {'read 50 cps':>11} {f'read {n:,} cps':>14}"
        f" {'ratio':>6} {'vs 50':>6}"
    )
    for r in rows:
        print(
            f"{r['store']:<16} {r['append_10_ms']:>8.3f} ms {r['append_n_ms']:>11.3f} ms"
            f" {r['append_n_ms'] / r['append_10_ms']:>6.2f}"
            f"   {r['read_short_ms']:>8.3f} ms {r['read_window_ms']:>8.3f} ms"
            f" {r['read_long_ms']:>11.3f} ms"
            f" {r['read_long_ms'] / r['read_short_ms']:>6.2f}"
            f" {r['read_long_ms'] / r['read_window_ms']:>6.2f}"
        )
    print(
        "\nappend #k: mean of the 20 appends ending at checkpoint k (single samples:"
        + ", ".join(
            f" {r['store']} {r['append_10_single_ms']:.3f}/{r['append_n_single_ms']:.3f} ms"
            for r in rows
        )
        + "); reads: mean of 300 get_session calls from a second manager without local tier;"
        " a read returns at most the 50 most recent checkpoints, so 'vs 50' compares equal"
        " amounts of data and isolates the cost of the history's length."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
