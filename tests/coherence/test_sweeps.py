"""Sweeps and lease expiry, run from somewhere else than the applications (items 8 and 17)."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime, timedelta
from typing import Any

import pytest

from agent_core.errors import LeaseHeld
from agent_core.sessions import SessionState
from tests.coherence.conftest import Hybrid, Spawn, eventually
from tests.coherence.peer import ROOT

pytestmark = [pytest.mark.postgres, pytest.mark.valkey]


async def run_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent_core.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("AGENT_CORE_")}
        | {"PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return int(proc.returncode or 0), out.decode(errors="replace")


# --- item 8 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sweeper", ["cli-cleanup", "cli-reaper", "api-cleanup", "api-reap"])
async def test_f08_a_sweep_given_only_the_store_reaches_apps_that_read_through_valkey(
    hybrid: Hybrid, spawn: Spawn, cfg: dict[str, Any], sweeper: str
) -> None:
    writer = await hybrid()
    sid = (await writer.create_session("tutor", "u")).session_id
    app = await hybrid()
    app_process = await spawn()
    for _ in range(2):  # cached in Valkey and in both apps' in-process tiers
        got = await app.get_session(sid)
        assert got is not None and got.state is SessionState.ACTIVE
        assert (await app_process.get(sid) or {}).get("state") == "active"

    async def sweep(*, with_cache: bool) -> tuple[bool, str]:
        """Run the sweep; (refused, what it said)."""
        if sweeper.startswith("cli"):
            # The schema travels in the DSN as a server setting (the CLI has no option for it).
            store = f"{cfg['store']}?search_path={cfg['ns']}"
            args = ["--store", store, "--namespace", cfg["ns"]]
            if with_cache:
                args += ["--cache", cfg["cache"]]
            if sweeper == "cli-cleanup":
                args += ["cleanup", "--max-age", "0s"]
            else:
                args += ["reaper", "--once", "--max-age", "0s"]
            code, output = await run_cli(*args)
            return code != 0, output
        sweeper_process = await spawn(cache=cfg["cache"] if with_cache else None)
        op = "cleanup" if sweeper == "api-cleanup" else "reap"
        answer = await sweeper_process.send(op=op, max_age=0)
        await sweeper_process.close()
        # The child answers library errors and a few builtin ones; only the first are clear.
        assert answer.get("error") not in ("LookupError", "TypeError", "ValueError"), answer
        return "error" in answer, f"{answer.get('error')}: {answer.get('message')}"

    refused, said = await sweep(with_cache=False)
    if refused:
        # Refusing is fine if nothing changed, and if the same sweep with the cache works.
        head = await writer.store.get(sid, window=0)
        assert head is not None and head.state is SessionState.ACTIVE and head.version == 1, said
        refused, said = await sweep(with_cache=True)
        assert not refused, f"the sweep refused even with the cache: {said}"
    head = await writer.store.get(sid, window=0)
    assert head is not None
    assert head.state is SessionState.FAILED, f"the sweep did not fail the session: {said}"

    async def states() -> tuple[str | None, str | None]:
        got = await app.get_session(sid)
        other = await app_process.get(sid)
        return (
            None if got is None else got.state.value,
            None if other is None else other["state"],
        )

    ok, seen, took = await eventually(states, lambda s: s == ("failed", "failed"), 1.0)
    assert ok, f"apps (this process, another) read {seen} {took:.1f}s after the sweep returned"


# --- item 17 --------------------------------------------------------------------------------


async def test_f17_a_worker_whose_clock_is_slow_is_not_reaped_while_it_heartbeats(
    hybrid: Hybrid, spawn: Spawn
) -> None:
    worker = await spawn(clock_offset_s=-20 * 60)
    assert worker.skewed > 0
    clock = await worker.send(op="clock")
    lag = datetime.fromisoformat(clock["real"]) - datetime.fromisoformat(clock["agent_core"])
    assert timedelta(minutes=19) < lag < timedelta(minutes=21), "the clock skew did not apply"

    created = await worker.send(op="create", agent_type="pipeline", user_id="u")
    sid = created["session"]["session_id"]
    claimed = await worker.send(op="claim", sid=sid, owner="slow-clock", ttl=60)
    assert "error" not in claimed, claimed
    beat = await worker.send(op="heartbeat", sid=sid)
    assert "error" not in beat, beat

    reaper = await hybrid()
    await reaper.reap(max_age=timedelta(minutes=15))
    await reaper.cleanup_stale_sessions(max_age=timedelta(minutes=15))

    got = await reaper.get_session(sid)
    assert got is not None
    assert got.state is SessionState.ACTIVE, "a heartbeating worker was reaped"
    with pytest.raises(LeaseHeld):
        await reaper.claim(sid, "someone-else", timedelta(seconds=30))
    beat = await worker.send(op="heartbeat", sid=sid)  # still its lease, still alive
    assert "error" not in beat, f"the worker lost its live lease: {beat}"
