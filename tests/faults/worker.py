"""A worker process for the fault suite: mixed writes on shared sessions, every outcome logged.

Run as ``python -m tests.faults.worker CONFIG_JSON``. It writes one JSON line per operation to
``out``: the op, the session, and whether the store acknowledged it, or the error type. Only
acknowledged writes count; the suite then checks the store holds exactly those.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from agent_core.errors import AgentCoreError, InvalidTransition
from agent_core.sessions import SessionManager


async def mixed_writes(cfg: dict[str, Any]) -> None:
    rng = random.Random(cfg["worker"])
    manager = SessionManager.from_url(
        cfg["store_url"],
        cache_url=cfg.get("cache_url"),
        namespace=cfg["namespace"],
        store_options=cfg.get("store_options") or {},
        local_cache=cfg.get("local_cache", True),
    )
    worker = cfg["worker"]
    deadline = time.monotonic() + cfg.get("max_seconds", 120)
    with open(cfg["out"], "w", encoding="utf-8") as out:

        def log(**row: Any) -> None:
            out.write(json.dumps(row) + "\n")

        for i in range(cfg["ops"]):
            if time.monotonic() > deadline:
                break
            sid = rng.choice(cfg["sessions"])
            op = rng.choices(["append", "patch", "state", "read"], weights=[5, 3, 1, 2])[0]
            try:
                if op == "append":
                    cp = await manager.append_checkpoint(
                        sid, "w", {"w": worker, "i": i}, idempotency_key=f"{worker}-{i}"
                    )
                    log(op=op, sid=sid, i=i, ok=True, seq=cp.seq)
                elif op == "patch":
                    head = await manager.patch_context(sid, {f"w{worker}": i})
                    log(op=op, sid=sid, i=i, ok=True, version=head.version)
                elif op == "state":
                    target = rng.choice(["paused", "active"])
                    try:
                        head = await manager.set_state(sid, target)
                    except InvalidTransition:
                        log(op=op, sid=sid, i=i, ok=False, error="InvalidTransition")
                        continue
                    log(op=op, sid=sid, i=i, ok=True, version=head.version)
                else:
                    got = await manager.get_session(sid)
                    log(op=op, sid=sid, i=i, ok=True, version=got.version if got else None)
            except AgentCoreError as exc:
                log(op=op, sid=sid, i=i, ok=False, error=type(exc).__name__)
                await asyncio.sleep(0.02)
            out.flush()
        barrier = cfg.get("final_read_barrier")
        if barrier:
            # Read every session only once every worker has stopped writing: these reads must
            # all return what the store holds, whatever the caches went through.
            Path(f"{barrier}.{worker}").touch()
            while len(list(Path(barrier).parent.glob(Path(barrier).name + ".*"))) < cfg["workers"]:
                await asyncio.sleep(0.05)
            for sid in cfg["sessions"]:
                got = await manager.get_session(sid)
                log(op="final", sid=sid, ok=True, version=got.version if got else None)
    await manager.close()


async def leased_worker(cfg: dict[str, Any]) -> None:
    """Claim a session, then append forever (until killed or deadline), logging outcomes."""
    manager = SessionManager.from_url(
        cfg["store_url"],
        cache_url=cfg.get("cache_url"),
        namespace=cfg["namespace"],
        store_options=cfg.get("store_options") or {},
    )
    sid = cfg["session"]
    lease = await manager.claim(sid, cfg["owner"], timedelta(seconds=cfg["ttl"]))
    deadline = time.monotonic() + cfg.get("max_seconds", 30)
    with open(cfg["out"], "w", encoding="utf-8") as out:
        out.write(json.dumps({"claimed": lease.token}) + "\n")
        out.flush()
        i = 0
        while time.monotonic() < deadline:
            i += 1
            try:
                cp = await manager.append_checkpoint(
                    sid, "step", {"owner": cfg["owner"], "i": i}, lease=lease
                )
                out.write(json.dumps({"i": i, "ok": True, "seq": cp.seq}) + "\n")
            except AgentCoreError as exc:
                out.write(json.dumps({"i": i, "ok": False, "error": type(exc).__name__}) + "\n")
            out.flush()
            await asyncio.sleep(cfg.get("pause", 0.05))
    await manager.close()


def main() -> None:
    cfg = json.loads(sys.argv[1])
    job = {"mixed": mixed_writes, "leased": leased_worker}[cfg["job"]]
    asyncio.run(job(cfg))


if __name__ == "__main__":
    main()
