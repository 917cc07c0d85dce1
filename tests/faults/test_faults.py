"""The fault suite: real processes, real servers, real kills. Nothing acknowledged may be lost.

Each scenario is bounded in time and in operations, and writes the figures it produced to
``build/reliability.json`` (see docs/reliability.md for a run and the command).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent_core.errors import LeaseHeld
from agent_core.sessions import SessionManager

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.valkey]

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "build" / "reliability.json"


def record(scenario: str, figures: dict[str, Any]) -> None:
    FIGURES.parent.mkdir(exist_ok=True)
    data = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    data[scenario] = figures
    FIGURES.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(f"\n{scenario}: {json.dumps(figures, sort_keys=True)}")


def spawn(cfg: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults.worker", json.dumps(cfg)], cwd=ROOT, env=env
    )


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def servers(postgres_server: Any, valkey_server: Any) -> Iterator[tuple[Any, Any]]:
    yield postgres_server, valkey_server
    # A scenario that stopped a server must leave it running for the tests after it.
    if not valkey_server.running:
        valkey_server.start()
    if not postgres_server.running:
        postgres_server.start()


def new_config(pg: Any, valkey: Any) -> dict[str, Any]:
    namespace = f"f{uuid.uuid4().hex[:10]}"
    return {
        "store_url": pg.dsn,
        "cache_url": valkey.url,
        "namespace": namespace,
        "store_options": {"schema": namespace, "command_timeout": 2.0},
    }


def manager_for(cfg: dict[str, Any], **options: Any) -> SessionManager:
    return SessionManager.from_url(
        cfg["store_url"],
        cache_url=cfg["cache_url"],
        namespace=cfg["namespace"],
        store_options=cfg["store_options"],
        **options,
    )


async def audit(
    manager: SessionManager, sessions: list[str], logs: list[dict[str, Any]]
) -> dict[str, Any]:
    """Compare the store with every acknowledged write; return the figures."""
    acked: dict[str, Counter[str]] = defaultdict(Counter)
    appends: dict[str, set[tuple[int, int]]] = defaultdict(set)
    unknown: Counter[str] = Counter()
    for row in logs:
        if row["op"] in ("read", "final"):
            continue
        if row["ok"]:
            acked[row["sid"]][row["op"]] += 1
            if row["op"] == "append":
                appends[row["sid"]].add((row["w"], row["i"]))
        elif row["error"] == "StoreUnavailable":
            unknown[row["sid"]] += 1
    lost = duplicates = gaps = unexplained = 0
    for sid in sessions:
        trail: list[Any] = []
        after = 0
        while page := await manager.list_checkpoints(sid, after_seq=after, limit=1000):
            trail += page
            after = page[-1].seq
        seqs = [cp.seq for cp in trail]
        gaps += seqs != list(range(1, len(trail) + 1))
        stored = [(cp.data["w"], cp.data["i"]) for cp in trail[1:]]
        duplicates += len(stored) - len(set(stored))
        lost += len(appends[sid] - set(stored))
        head = await manager.store.get(sid, window=0)
        assert head is not None
        writes = 1 + sum(acked[sid].values())
        lost += max(0, writes - head.version)
        # Writes that failed with StoreUnavailable may have committed: only they may explain
        # a version above the acknowledged count.
        unexplained += max(0, head.version - writes - unknown[sid])
    return {
        "acknowledged_writes": sum(sum(c.values()) for c in acked.values()),
        "failed_with_typed_error": sum(1 for r in logs if not r["ok"]),
        "lost": lost,
        "duplicates": duplicates,
        "sessions_with_seq_gaps": gaps,
        "unexplained_versions": unexplained,
    }


async def test_8_processes_x_500_mixed_writes_lose_nothing(
    servers: tuple[Any, Any], tmp_path: Path
) -> None:
    pg, valkey = servers
    cfg = new_config(pg, valkey)
    async with manager_for(cfg) as manager:
        sessions = [(await manager.create_session("fleet", "u")).session_id for _ in range(6)]
        started = time.monotonic()
        procs = [
            spawn(
                {
                    **cfg,
                    "job": "mixed",
                    "worker": w,
                    "ops": 500,
                    "sessions": sessions,
                    "out": str(tmp_path / f"w{w}.jsonl"),
                    "max_seconds": 240,
                }
            )
            for w in range(8)
        ]
        codes = [await asyncio.to_thread(p.wait, 300) for p in procs]
        elapsed = time.monotonic() - started
        logs = []
        for w in range(8):
            for row in read_log(tmp_path / f"w{w}.jsonl"):
                row["w"] = w
                logs.append(row)
        figures = await audit(manager, sessions, logs)
        errors = Counter(r["error"] for r in logs if not r["ok"])
        figures.update(
            processes=8,
            ops_per_process=500,
            seconds=round(elapsed, 1),
            operations_logged=len(logs),
            errors=dict(errors),
        )
        record("a_mixed_writes", figures)
    assert codes == [0] * 8
    assert len(logs) == 8 * 500
    assert set(errors) <= {"InvalidTransition"}
    assert figures["lost"] == figures["duplicates"] == figures["sessions_with_seq_gaps"] == 0
    assert figures["unexplained_versions"] == 0


async def test_killed_lease_holder_is_replaced_and_a_zombie_is_fenced(
    servers: tuple[Any, Any], tmp_path: Path
) -> None:
    pg, valkey = servers
    cfg = new_config(pg, valkey)
    ttl, interval = 1.0, 0.2
    async with manager_for(cfg) as manager:
        dead = (await manager.create_session("pipeline")).session_id
        zombie_sid = (await manager.create_session("pipeline")).session_id

        victim = spawn(
            {
                **cfg,
                "job": "leased",
                "session": dead,
                "owner": "victim",
                "ttl": ttl,
                "out": str(tmp_path / "victim.jsonl"),
            }
        )
        zombie = spawn(
            {
                **cfg,
                "job": "leased",
                "session": zombie_sid,
                "owner": "zombie",
                "ttl": ttl,
                "out": str(tmp_path / "zombie.jsonl"),
                "max_seconds": 20,
            }
        )
        for log in ("victim", "zombie"):
            for _ in range(200):
                if sum(r.get("ok", False) for r in read_log(tmp_path / f"{log}.jsonl")) >= 3:
                    break
                await asyncio.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        zombie.send_signal(signal.SIGSTOP)
        killed_at = time.monotonic()
        victim.wait(10)

        async def reaper() -> None:
            while True:
                await manager.reap(max_age=timedelta(hours=1))
                await asyncio.sleep(interval)

        reaping = asyncio.create_task(reaper())
        taken = zombie_lease = None
        refused = 0
        try:
            while taken is None or zombie_lease is None:
                try:
                    if taken is None:
                        taken = await manager.claim(dead, "heir", timedelta(seconds=30))
                        taken_after = time.monotonic() - killed_at
                    if zombie_lease is None:
                        zombie_lease = await manager.claim(
                            zombie_sid, "heir", timedelta(seconds=30)
                        )
                except LeaseHeld:
                    refused += 1
                    await asyncio.sleep(0.05)
                assert time.monotonic() - killed_at < ttl + interval + 5
        finally:
            reaping.cancel()
        # The new owner resumes from the last checkpoint the dead worker stored.
        session = await manager.get_session(dead)
        assert session is not None
        last_victim = [r for r in read_log(tmp_path / "victim.jsonl") if r.get("ok")][-1]
        assert session.checkpoints[-1].data["i"] == last_victim["i"]
        resumed = await manager.append_checkpoint(dead, "resumed", lease=taken)
        assert resumed.seq == session.checkpoint_count + 1

        before = len(read_log(tmp_path / "zombie.jsonl"))
        await manager.append_checkpoint(zombie_sid, "heir-step", lease=zombie_lease)
        zombie.send_signal(signal.SIGCONT)
        await asyncio.sleep(1.5)
        zombie.send_signal(signal.SIGKILL)
        zombie.wait(10)
        after_wake = read_log(tmp_path / "zombie.jsonl")[before:]
        trail = await manager.list_checkpoints(zombie_sid, limit=1000)
        heir_seq = next(cp.seq for cp in trail if cp.name == "heir-step")
        zombie_writes_after = [
            cp for cp in trail if cp.data.get("owner") == "zombie" and cp.seq > heir_seq
        ]
        figures = {
            "lease_ttl_s": ttl,
            "reaper_interval_s": interval,
            "claimed_after_kill_s": round(taken_after, 2),
            "claims_refused_while_lease_live": refused,
            "zombie_writes_attempted_after_wake": len(after_wake),
            "zombie_writes_accepted_after_wake": sum(r["ok"] for r in after_wake),
            "zombie_checkpoints_after_takeover": len(zombie_writes_after),
        }
        record("b_lease_takeover", figures)
    assert taken.token > 1 and zombie_lease.token > 1
    assert taken_after <= ttl + interval + 1.0
    assert len(after_wake) > 0
    assert all(r["error"] == "LeaseLost" for r in after_wake)
    assert zombie_writes_after == []


async def test_valkey_kill_and_postgres_restart_under_load(
    servers: tuple[Any, Any], tmp_path: Path
) -> None:
    pg, valkey = servers
    if not (pg.can_restart and not valkey.external):
        pytest.skip("needs servers this test session started")
    cfg = new_config(pg, valkey)
    async with manager_for(cfg) as manager:
        sessions = [(await manager.create_session("fleet", "u")).session_id for _ in range(4)]
        procs = [
            spawn(
                {
                    **cfg,
                    "job": "mixed",
                    "worker": w,
                    "ops": 100_000,
                    "sessions": sessions,
                    "out": str(tmp_path / f"w{w}.jsonl"),
                    "max_seconds": 9,
                    "final_read_barrier": str(tmp_path / "barrier"),
                    "workers": 4,
                }
            )
            for w in range(4)
        ]
        await asyncio.sleep(2)
        valkey.kill()
        await asyncio.sleep(0.5)
        valkey.start()
        await asyncio.sleep(2)
        await asyncio.to_thread(pg.restart)
        codes = [await asyncio.to_thread(p.wait, 120) for p in procs]
        logs = []
        for w in range(4):
            for row in read_log(tmp_path / f"w{w}.jsonl"):
                row["w"] = w
                logs.append(row)
        figures = await audit(manager, sessions, logs)
        errors = Counter(r["error"] for r in logs if not r["ok"])

        # After recovery every process, every tier, serves the store's version.
        stale = 0
        fresh_manager = manager_for(cfg)
        async with fresh_manager:
            for sid in sessions:
                truth = await manager.store.get_version(sid)
                for m in (manager, fresh_manager):
                    got = await m.get_session(sid)
                    stale += got is None or got.version != truth
        final_reads = [r for r in logs if r["op"] == "final"]
        for row in final_reads:
            stale += row["version"] != await manager.store.get_version(row["sid"])
        figures.update(
            processes=4,
            errors=dict(errors),
            stale_reads_after_recovery=stale,
            final_reads_in_workers=len(final_reads),
            cache_errors=sum(v for k, v in manager.stats.items() if k.startswith("cache_errors")),
        )
        record("c_valkey_and_postgres_restart", figures)
    assert codes == [0] * 4
    assert set(errors) <= {"InvalidTransition", "StoreUnavailable"}
    assert errors["StoreUnavailable"] > 0, "the PostgreSQL restart was not felt: test is void"
    assert figures["lost"] == figures["duplicates"] == figures["sessions_with_seq_gaps"] == 0
    assert figures["unexplained_versions"] == 0
    assert len(final_reads) == 4 * len(sessions)
    assert stale == 0
