"""The standard workloads, written once against the ``Adapter`` interface.

Rules every workload follows: payloads are built before the clock starts; a warm-up on other
sessions (or a first pass over the same ones, for reads) is never timed; every operation is
timed on its own with ``time.perf_counter_ns``; ops/s is operations / wall time of the timed
phase (for sequential workloads ~ 1 / mean latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import time
import uuid
from array import array
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from bench import data
from bench.configs import Adapter

__all__ = [
    "QUICK",
    "SCALE",
    "STANDARD",
    "WORKLOADS",
    "Result",
    "Sizes",
    "mem_local_tier",
]


@dataclass(frozen=True)
class Sizes:
    w1_creates: int = 2000
    w2_appends: int = 2000
    w2_window: int = 100
    w3_sessions: int = 100
    w3_checkpoints: int = 20
    w3_gets: int = 5000
    w4_tasks: int = 64
    w4_rounds: int = 50
    w5_sessions: int = 20_000
    w5_users: int = 200
    w5_lists: int = 500
    w6_sessions: int = 20_000
    w6_stale_every: int = 10
    w6_traffic_tasks: int = 8
    mem_gets: int = 1_000_000
    mem_entries: int = 10_000
    warmup: int = 50


STANDARD = Sizes()
QUICK = Sizes(
    w1_creates=40,
    w2_appends=40,
    w2_window=10,
    w3_sessions=8,
    w3_checkpoints=4,
    w3_gets=60,
    w4_tasks=4,
    w4_rounds=3,
    w5_sessions=400,
    w5_users=20,
    w5_lists=20,
    w6_sessions=1000,
    w6_stale_every=10,
    w6_traffic_tasks=2,
    mem_gets=3000,
    mem_entries=500,
    warmup=5,
)
SCALE = Sizes(w5_sessions=1_000_000, w6_sessions=1_000_000)


@dataclass
class Result:
    workload: str
    config: str
    family: str = ""
    backend: str = ""
    n: int = 0
    ops_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "config": self.config,
            "family": self.family,
            "backend": self.backend,
            "n": self.n,
            "ops_per_s": self.ops_per_s,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "mean_ms": self.mean_ms,
            "extra": self.extra,
            "skipped": self.skipped,
        }


def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanosecond latencies, in milliseconds."""
    if not sorted_ns:
        return float("nan")
    rank = max(1, min(len(sorted_ns), round(q / 100 * len(sorted_ns) + 0.5)))
    return sorted_ns[rank - 1] / 1e6


def summarize(workload: str, adapter: Adapter, latencies_ns: list[int], wall_ns: int) -> Result:
    ordered = sorted(latencies_ns)
    n = len(ordered)
    return Result(
        workload=workload,
        config=adapter.name,
        family=adapter.family,
        backend=adapter.backend,
        n=n,
        ops_per_s=n / (wall_ns / 1e9) if wall_ns else None,
        p50_ms=percentile(ordered, 50),
        p99_ms=percentile(ordered, 99),
        mean_ms=(sum(ordered) / n / 1e6) if n else None,
    )


@contextlib.contextmanager
def settled_heap() -> Iterator[None]:
    """Collect, then freeze what survives: the cyclic GC of the timed phase only walks the
    objects the phase itself creates, not the modules and data of every earlier workload (a
    full collection of that heap is a pause of 100+ ms that would land on a random op)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def timed_loop(n: int, op: Callable[[int], Awaitable[Any]]) -> tuple[list[int], int]:
    """Run ``op(0..n-1)`` one after the other; per-op latencies and the wall time, in ns."""
    latencies = [0] * n
    clock = time.perf_counter_ns
    with settled_heap():
        start = clock()
        for i in range(n):
            began = clock()
            await op(i)
            latencies[i] = clock() - began
        wall = clock() - start
    return latencies, wall


# --- W1 -------------------------------------------------------------------------------------


async def w1_create(adapter: Adapter, sizes: Sizes) -> list[Result]:
    """W1: create sessions with a ~1 KB JSON context, one after the other."""
    users = sizes.w5_users
    warm = [data.context(i) for i in range(sizes.warmup)]
    for i, ctx in enumerate(warm):
        await adapter.create(data.user_id(i % users), ctx)
    contexts = [data.context(i) for i in range(sizes.w1_creates)]
    uids = [data.user_id(i % users) for i in range(sizes.w1_creates)]

    async def op(i: int) -> None:
        await adapter.create(uids[i], contexts[i])

    lat, wall = await timed_loop(sizes.w1_creates, op)
    result = summarize("W1", adapter, lat, wall)
    result.extra["context_bytes"] = data.json_size(contexts[0])
    return [result]


# --- W2 -------------------------------------------------------------------------------------


async def w2_append(adapter: Adapter, sizes: Sizes) -> list[Result]:
    """W2: append ~200 B checkpoints to one session; growth = mean(last k) / mean(first k)."""
    warm_sid = await adapter.create(data.user_id(0), data.context(0))
    for i in range(sizes.warmup):
        await adapter.append(warm_sid, "step", data.checkpoint_data(i))
    sid = await adapter.create(data.user_id(1), data.context(1))
    payloads = [data.checkpoint_data(i) for i in range(sizes.w2_appends)]

    async def op(i: int) -> None:
        await adapter.append(sid, "step", payloads[i])

    lat, wall = await timed_loop(sizes.w2_appends, op)
    result = summarize("W2", adapter, lat, wall)
    k = sizes.w2_window
    first = sum(lat[:k]) / k / 1e6
    last = sum(lat[-k:]) / k / 1e6
    result.extra.update(
        {
            "first_mean_ms": first,
            "last_mean_ms": last,
            "growth": last / first,
            "checkpoint_bytes": data.json_size(payloads[0]),
        }
    )
    return [result]


# --- W3 -------------------------------------------------------------------------------------


def _where_hits(reader: Adapter) -> dict[str, int]:
    manager = getattr(reader, "manager", None)
    if manager is None:
        return {}
    return {key: int(value) for key, value in manager.stats.items()}


async def w3_get(adapter: Adapter, sizes: Sizes) -> list[Result]:
    """W3: random gets among sessions holding 20 checkpoints, from another process's view.

    ``W3``: a reader without agent-core's in-process tier (agent-core on PostgreSQL + Valkey
    hits Valkey); ``W3-local``: a reader with it (hits in process memory).
    """
    n_sessions = sizes.w3_sessions
    ids: list[str] = []
    if adapter.name == "raw-valkey":
        put = adapter.put_document  # type: ignore[attr-defined]
        for i in range(n_sessions):
            sid = str(uuid.uuid4())
            doc = data.session_document(sid, data.user_id(i), data.context(i), sizes.w3_checkpoints)
            await put(sid, doc)
            ids.append(sid)
    else:
        appends = sizes.w3_checkpoints - (1 if adapter.create_has_checkpoint else 0)
        for i in range(n_sessions):
            sid = await adapter.create(data.user_id(i), data.context(i))
            for k in range(appends):
                await adapter.append(sid, "step", data.checkpoint_data(k))
            ids.append(sid)
    rng = random.Random(3)
    order = [ids[rng.randrange(n_sessions)] for _ in range(sizes.w3_gets)]
    results = []
    variants = [("W3", False)]
    if "W3-local" in adapter.workloads:
        variants.append(("W3-local", True))
    for label, local in variants:
        reader = await adapter.reader(local=local)
        try:
            # Warm-up: one pass over every session fills whatever caches the reader has.
            for _ in range(2):
                for sid in ids:
                    if await reader.get(sid) is None:
                        raise RuntimeError(f"{adapter.name}: session {sid} not found")
            before = _where_hits(reader)

            async def op(i: int, reader: Adapter = reader) -> None:
                await reader.get(order[i])

            lat, wall = await timed_loop(sizes.w3_gets, op)
            result = summarize(label, adapter, lat, wall)
            after = _where_hits(reader)
            served = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            result.extra.update({k: v for k, v in served.items() if v})
            sample = await reader.get(ids[0])
            to_dict = getattr(sample, "to_dict", None)
            if callable(to_dict):
                result.extra["blob_bytes"] = len(orjson.dumps(to_dict()))
            elif isinstance(sample, dict):
                result.extra["blob_bytes"] = len(orjson.dumps(sample))
            results.append(result)
        finally:
            await adapter.close_reader(reader)
    return results


# --- W4 -------------------------------------------------------------------------------------


async def w4_concurrent(adapter: Adapter, sizes: Sizes) -> list[Result]:
    """W4: concurrent tasks, each appending to and reading back its own session.

    ``W4-nolocal`` (agent-core with an in-process tier): the same, from a manager without that
    tier, so every get is served as another process would serve it.
    """
    results = [await _w4(adapter, sizes, "W4")]
    if "W4-nolocal" in adapter.workloads:
        view = await adapter.reader(local=False)
        try:
            results.append(await _w4(view, sizes, "W4-nolocal"))
        finally:
            await adapter.close_reader(view)
    return results


async def _w4(adapter: Adapter, sizes: Sizes, label: str) -> Result:
    tasks, rounds = sizes.w4_tasks, sizes.w4_rounds
    payloads = [data.checkpoint_data(i) for i in range(rounds)]

    async def make_sessions() -> list[str]:
        return [await adapter.create(data.user_id(i), data.context(i)) for i in range(tasks)]

    async def worker(sid: str, count: int, appends: list[int], gets: list[int]) -> None:
        clock = time.perf_counter_ns
        for r in range(count):
            began = clock()
            await adapter.append(sid, "step", payloads[r % rounds])
            mid = clock()
            await adapter.get(sid)
            appends.append(mid - began)
            gets.append(clock() - mid)

    warm_ids = await make_sessions()
    await asyncio.gather(*(worker(sid, 3, [], []) for sid in warm_ids))
    ids = await make_sessions()
    append_lat: list[int] = []
    get_lat: list[int] = []
    with settled_heap():
        start = time.perf_counter_ns()
        await asyncio.gather(*(worker(sid, rounds, append_lat, get_lat) for sid in ids))
        wall = time.perf_counter_ns() - start
    result = summarize(label, adapter, append_lat + get_lat, wall)
    a, g = sorted(append_lat), sorted(get_lat)
    result.extra.update(
        {
            "append_p50_ms": percentile(a, 50),
            "append_p99_ms": percentile(a, 99),
            "get_p50_ms": percentile(g, 50),
            "get_p99_ms": percentile(g, 99),
            "tasks": tasks,
            "rounds": rounds,
        }
    )
    return result


# --- W5 -------------------------------------------------------------------------------------


async def _w5(label: str, adapter: Adapter, sizes: Sizes) -> list[Result]:
    load_start = time.perf_counter()
    await adapter.load(sizes.w5_sessions, sizes.w5_users)
    load_s = time.perf_counter() - load_start
    rng = random.Random(5)
    users = [data.user_id(rng.randrange(sizes.w5_users)) for _ in range(sizes.w5_lists)]
    counts: list[int] = []
    for i in range(max(sizes.warmup // 2, 5)):
        await adapter.list_user(data.user_id(i % sizes.w5_users), 50)

    async def op(i: int) -> None:
        counts.append(await adapter.list_user(users[i], 50))

    lat, wall = await timed_loop(sizes.w5_lists, op)
    result = summarize(label, adapter, lat, wall)
    result.extra.update(
        {
            "sessions": sizes.w5_sessions,
            "users": sizes.w5_users,
            "rows_per_call": sum(counts) / len(counts),
            "load_s": load_s,
        }
    )
    return [result]


async def w5_list(adapter: Adapter, sizes: Sizes) -> list[Result]:
    """W5: one user's active sessions (limit 50) among many sessions of 200 users."""
    label = "W5" if sizes.w5_sessions < 1_000_000 else "W5@1M"
    return await _w5(label, adapter, sizes)


# --- W6 -------------------------------------------------------------------------------------


async def w6_sweep(adapter: Adapter, sizes: Sizes) -> list[Result]:
    """W6: fail the stale sessions (every ``w6_stale_every``-th) in batches while W4-like
    traffic (append + get on fresh sessions) runs; report how long the traffic was held up."""
    label = "W6" if sizes.w6_sessions < 1_000_000 else "W6@1M"
    stale = (sizes.w6_sessions + sizes.w6_stale_every - 1) // sizes.w6_stale_every
    load_start = time.perf_counter()
    await adapter.load(sizes.w6_sessions, sizes.w5_users, stale_every=sizes.w6_stale_every)
    load_s = time.perf_counter() - load_start
    traffic_ids = [
        await adapter.create(data.user_id(i), data.context(i))
        for i in range(sizes.w6_traffic_tasks)
    ]
    payload = data.checkpoint_data(0)
    stop = asyncio.Event()

    async def traffic(sid: str, out: list[int], limit: int | None) -> None:
        clock = time.perf_counter_ns
        done = 0
        while not stop.is_set() and (limit is None or done < limit):
            began = clock()
            await adapter.append(sid, "step", payload)
            await adapter.get(sid)
            out.append(clock() - began)
            done += 1
            # A driver that never suspends (raw sqlite3) would otherwise starve the sweep.
            await asyncio.sleep(0)

    baseline: list[int] = []
    during: list[int] = []
    # Warm-up (pool connections, prepared statements), then a baseline without a sweep.
    await asyncio.gather(*(traffic(sid, [], 5) for sid in traffic_ids))
    with settled_heap():
        await asyncio.gather(*(traffic(sid, baseline, 40) for sid in traffic_ids))
        baseline.sort()
        workers = [asyncio.create_task(traffic(sid, during, None)) for sid in traffic_ids]
        await asyncio.sleep(0.05)
        start = time.perf_counter_ns()
        swept = await adapter.sweep()
        wall = time.perf_counter_ns() - start
        stop.set()
        await asyncio.gather(*workers)
    batches = adapter.sweep_batches_ns
    result = summarize(label, adapter, batches, wall)
    # The sweep's throughput is in sessions failed per second, not batches.
    result.ops_per_s = swept / (wall / 1e9)
    during.sort()
    max_batch_ms = max(batches) / 1e6 if batches else float("nan")
    traffic_max_ms = during[-1] / 1e6 if during else float("nan")
    baseline_p99 = percentile(baseline, 99)
    result.extra.update(
        {
            "sessions": sizes.w6_sessions,
            "stale": stale,
            "swept": swept,
            "sweep_s": wall / 1e9,
            "batches": len(batches),
            "batch_p50_ms": percentile(sorted(batches), 50),
            "batch_max_ms": max_batch_ms,
            "traffic_ops": len(during),
            "traffic_p50_ms": percentile(during, 50),
            "traffic_p99_ms": percentile(during, 99),
            "traffic_max_ms": traffic_max_ms,
            "baseline_p99_ms": baseline_p99,
            "baseline_max_ms": baseline[-1] / 1e6 if baseline else float("nan"),
            # Held up by at most one batch: the slowest traffic op took no longer than the
            # slowest single batch plus the traffic's own p99 without a sweep.
            "blocked_at_most_one_batch": bool(traffic_max_ms <= max_batch_ms + baseline_p99),
            "load_s": load_s,
        }
    )
    return [result]


# --- memory bound of the in-process tier ----------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


async def mem_local_tier(sizes: Sizes) -> list[Result]:
    """MEM: ``mem_gets`` distinct gets through the in-process tier (``mem_entries`` entries).

    The store fabricates each session (1 KB context, 20 checkpoints of 200 B, fresh objects
    every time) so that only the manager and its tier keep memory. The configured bound is
    ``mem_entries`` entries; its size in bytes is measured when the tier is first full.
    """
    from agent_core.cache.local import LocalCache
    from agent_core.sessions import SessionManager
    from agent_core.sessions.session_models import AgentSession, SessionCheckpoint
    from agent_core.stores.memory import MemoryStore

    ctx_bytes = orjson.dumps(data.context(0))
    cp_bytes = [orjson.dumps(data.checkpoint_data(i)) for i in range(19)]
    created = datetime.now(UTC)

    class SyntheticStore(MemoryStore):
        """Answers every get with a freshly built session; holds nothing."""

        async def get(self, session_id: str, *, window: int) -> AgentSession | None:
            checkpoints = [SessionCheckpoint("session_created", created, {}, 1)]
            checkpoints += [
                SessionCheckpoint("step", created, orjson.loads(raw), seq)
                for seq, raw in enumerate(cp_bytes, start=2)
            ]
            return AgentSession(
                agent_type=data.AGENT_TYPE,
                user_id="user-0001",
                session_id=session_id,
                created_at=created,
                last_heartbeat=created,
                context=orjson.loads(ctx_bytes),
                checkpoints=checkpoints[-window:],
                version=20,
                checkpoint_count=20,
            )

        async def get_version(self, session_id: str) -> int | None:
            return 20

    local = LocalCache(max_entries=sizes.mem_entries)
    manager = SessionManager(store=SyntheticStore(), local_cache=local)
    await manager.open()
    try:
        await manager.get_session(str(uuid.UUID(int=10**30)))
        local.clear()
        # Raw int64 slots allocated up front: recording latencies creates no objects.
        latencies = array("q", bytes(8 * sizes.mem_gets))
        gc.collect()
        gc.freeze()
        rss_base = _rss_bytes()
        ids = (str(uuid.UUID(int=i + 1)) for i in range(sizes.mem_gets))
        clock = time.perf_counter_ns
        rss_full = rss_base
        start = clock()
        for i, sid in enumerate(ids):
            began = clock()
            await manager.get_session(sid)
            latencies[i] = clock() - began
            if i + 1 == sizes.mem_entries:
                gc.collect()
                rss_full = _rss_bytes()
        wall = clock() - start
        gc.collect()
        rss_end = _rss_bytes()
        entries = len(local)
    finally:
        gc.unfreeze()
        await manager.close()
    ordered = sorted(latencies)
    mib = 1024 * 1024
    bound = (rss_full - rss_base) / mib
    growth = (rss_end - rss_base) / mib
    return [
        Result(
            workload="MEM",
            config="ac-local-tier",
            family="agent-core",
            backend="memory",
            n=sizes.mem_gets,
            ops_per_s=sizes.mem_gets / (wall / 1e9),
            p50_ms=percentile(ordered, 50),
            p99_ms=percentile(ordered, 99),
            mean_ms=sum(ordered) / len(ordered) / 1e6,
            extra={
                "max_entries": sizes.mem_entries,
                "entries_at_end": entries,
                "rss_base_mib": rss_base / mib,
                "bound_mib": bound,
                "rss_growth_mib": growth,
                "within_bound_plus_50mib": bool(growth <= bound + 50),
            },
        )
    ]


WORKLOADS: dict[str, Callable[[Adapter, Sizes], Awaitable[list[Result]]]] = {
    "W1": w1_create,
    "W2": w2_append,
    "W3": w3_get,
    "W4": w4_concurrent,
    "W5": w5_list,
    "W6": w6_sweep,
}
