"""Another process with its own SessionManager, driven one JSON command per line.

Child: ``python -m tests.coherence.peer CONFIG_JSON`` opens a manager (PostgreSQL schema and
Valkey namespace ``ns``, in-process tier on unless ``local_cache`` is false), prints
``{"ready": true}`` and then answers each command line on stdin with one JSON line on stdout.

Parent: ``Peer`` starts the child (with this process's environment, so the same PYTHONPATH and
therefore the same ``agent_core``) and sends commands (``await peer.get(sid)``...).

``clock_offset_s`` in the config makes every ``utcnow`` the child's ``agent_core`` uses (the
module attributes and the dataclass default factories that captured it) run that many seconds
off the real clock, as on a machine whose clock is wrong.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def session_json(session: Any) -> dict[str, Any] | None:
    if session is None:
        return None
    return {
        "session_id": session.session_id,
        "version": session.version,
        "state": session.state.value,
        "user_id": session.user_id,
        "agent_type": session.agent_type,
        "context": session.context,
        "checkpoint_count": session.checkpoint_count,
        "checkpoints": [
            {"name": cp.name, "data": cp.data, "seq": cp.seq} for cp in session.checkpoints
        ],
    }


def event_json(event: Any) -> dict[str, Any]:
    return {
        "kind": event.kind.value,
        "session_id": event.session_id,
        "version": event.version,
        "agent_type": event.agent_type,
        "user_id": event.user_id,
    }


def skew_clock(offset_s: float) -> int:
    """Replace every ``utcnow`` that ``agent_core`` holds with one ``offset_s`` off; return
    how many references were replaced."""
    from agent_core.sessions import session_models

    real = session_models.utcnow

    def skewed() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=offset_s)

    replaced = 0
    for name, module in list(sys.modules.items()):
        if not (name == "agent_core" or name.startswith("agent_core.")) or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if attr == "utcnow" or value is real:
                setattr(module, attr, skewed)
                replaced += 1
            # Dataclass default factories (field(default_factory=utcnow)) live in __init__'s
            # closure and in the field objects.
            if isinstance(value, type) and value.__module__ == name:
                fields = getattr(value, "__dataclass_fields__", {})
                for f in fields.values():
                    if getattr(f, "default_factory", None) is real:
                        f.default_factory = skewed
                        replaced += 1
                init = vars(value).get("__init__")
                for cell in getattr(init, "__closure__", None) or ():
                    try:
                        if cell.cell_contents is real:
                            cell.cell_contents = skewed
                            replaced += 1
                    except ValueError:
                        pass
    return replaced


async def child(cfg: dict[str, Any]) -> None:
    import agent_core
    from agent_core.errors import AgentCoreError
    from agent_core.sessions import SessionManager

    skewed = 0
    if cfg.get("clock_offset_s"):
        # Import everything a manager uses first, so that every module is patched.
        import agent_core.bus.valkey
        import agent_core.cache.valkey
        import agent_core.stores.postgres

        skewed = skew_clock(float(cfg["clock_offset_s"]))

    manager = SessionManager.from_url(
        cfg["store"],
        cache_url=cfg.get("cache"),
        namespace=cfg["ns"],
        store_options={"schema": cfg["ns"]},
        cache_options=cfg.get("cache_options") or None,
        local_cache=cfg.get("local_cache", True),
    )
    streams: dict[str, Any] = {}
    leases: dict[str, Any] = {}
    out = sys.stdout

    def reply(**row: Any) -> None:
        out.write(json.dumps(row) + "\n")
        out.flush()

    async with manager:
        reply(ready=True, agent_core=agent_core.__file__, skewed=skewed)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            cmd = json.loads(line)
            op = cmd["op"]
            try:
                if op == "get":
                    got = await manager.get_session(cmd["sid"])
                    reply(session=session_json(got), hits_local=manager.stats["hits.local"])
                elif op == "listen":
                    stream = manager.events(**cmd.get("filters", {}))
                    await stream.open()
                    streams[cmd["name"]] = stream
                    reply(ok=True)
                elif op == "next_event":
                    try:
                        event = await streams[cmd["name"]].get(cmd["timeout"])
                    except TimeoutError:
                        reply(event=None)
                    else:
                        reply(event=event_json(event))
                elif op == "create":
                    created = await manager.create_session(
                        cmd["agent_type"], cmd.get("user_id", ""), cmd.get("context")
                    )
                    reply(session=session_json(created))
                elif op == "claim":
                    lease = await manager.claim(
                        cmd["sid"], cmd["owner"], timedelta(seconds=cmd["ttl"])
                    )
                    leases[cmd["sid"]] = lease
                    reply(token=lease.token, expires_at=lease.expires_at.isoformat())
                elif op == "heartbeat":
                    head = await manager.heartbeat(cmd["sid"], lease=leases.get(cmd["sid"]))
                    reply(version=head.version, last_heartbeat=head.last_heartbeat.isoformat())
                elif op == "patch":
                    head = await manager.patch_context(cmd["sid"], cmd["changes"])
                    reply(version=head.version)
                elif op == "cleanup":
                    count = await manager.cleanup_stale_sessions(timedelta(seconds=cmd["max_age"]))
                    reply(count=count)
                elif op == "reap":
                    expired, failed = await manager.reap(timedelta(seconds=cmd["max_age"]))
                    reply(expired=expired, failed=failed)
                elif op == "clock":
                    from agent_core.sessions import session_models

                    reply(
                        agent_core=session_models.utcnow().isoformat(),
                        real=datetime.now(UTC).isoformat(),
                    )
                elif op == "exit":
                    reply(ok=True)
                    break
                else:
                    reply(error=f"unknown op {op!r}")
            except (AgentCoreError, LookupError, TypeError, ValueError) as exc:
                reply(error=type(exc).__name__, message=str(exc))
        for stream in streams.values():
            await stream.close()


class Peer:
    """The parent's handle on a child process (see the module docstring)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.proc: asyncio.subprocess.Process | None = None
        self.agent_core_file = ""
        self.skewed = 0

    async def start(self) -> Peer:
        # The same environment as this process: the child imports the same agent_core.
        env = dict(os.environ)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.coherence.peer",
            json.dumps(self.cfg),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        first = await self._read(20)
        assert first.get("ready"), first
        self.agent_core_file = first["agent_core"]
        self.skewed = int(first.get("skewed", 0))
        import agent_core

        assert self.agent_core_file == agent_core.__file__, (
            f"the peer imported {self.agent_core_file}, this process {agent_core.__file__}"
        )
        return self

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("the peer process exited")
        return dict(json.loads(line))

    async def send(self, **cmd: Any) -> dict[str, Any]:
        """Send one command; its answer (an ``error`` key if the child raised)."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._read(float(cmd.get("timeout", 0)) + 10)

    async def get(self, sid: str) -> dict[str, Any] | None:
        got = await self.send(op="get", sid=sid)
        session: dict[str, Any] | None = got["session"]
        return session

    async def version(self, sid: str) -> int | None:
        got = await self.get(sid)
        return None if got is None else int(got["version"])

    async def close(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        try:
            if proc.returncode is None and proc.stdin is not None:
                proc.stdin.write(b'{"op": "exit"}\n')
                await proc.stdin.drain()
                proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 10)
        except (TimeoutError, OSError, ConnectionError):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def __aenter__(self) -> Peer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


if __name__ == "__main__":
    asyncio.run(child(json.loads(sys.argv[1])))
