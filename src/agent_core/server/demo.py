"""The demo fleet of ``agent-core serve --demo``: ``agent_core.demo``'s agents, in rounds, in
the background of the server until it shuts down.

Each round plays the whole ``agent-core demo`` scenario (graders, tutors, document pipelines, a
worker dying with a lease and a standby taking over, the supervisor's stale-session sweep) in
tenant ``demo``; the sessions of the last ``KEEP_ROUNDS`` rounds are kept and older ones purged,
so the store stays small however long the server runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from agent_core import demo
from agent_core.errors import AgentCoreError

__all__ = ["KEEP_ROUNDS", "PAUSE_S", "TENANT", "run_fleet"]

logger = logging.getLogger(__name__)

TENANT = "demo"
KEEP_ROUNDS = 5
PAUSE_S = 3.0
WORKERS = 4


async def run_fleet(
    app: Any, *, pause_s: float = PAUSE_S, timing: demo.Timing = demo.NORMAL
) -> None:
    """Play rounds until ``app.state.stopping`` is set (or the task is cancelled)."""
    manager = await app.state.hub.manager_for(TENANT)
    stopping: asyncio.Event = app.state.stopping
    rounds: deque[list[str]] = deque()
    number = 0
    while not stopping.is_set():
        number += 1
        fleet = demo.Demo(manager, timing, WORKERS)
        try:
            report = await demo.play(manager, fleet)
        except (AgentCoreError, ExceptionGroup) as exc:
            logger.warning("demo round %d failed: %s", number, exc)
        else:
            logger.info(
                "demo round %d: %d sessions, %d events",
                number,
                len(report.sessions),
                len(report.events),
            )
        rounds.append([*fleet.session_ids])
        while len(rounds) > KEEP_ROUNDS:
            for session_id in rounds.popleft():
                try:
                    await manager.purge(session_id=session_id, actor="demo")
                except AgentCoreError as exc:
                    logger.warning("demo could not purge %s: %s", session_id, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), pause_s)
