"""Repeated warnings are rate-limited with a count (a server down fails every call)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from agent_core.logthrottle import LogThrottle
from agent_core.sessions import SessionManager


def test_one_warning_per_interval_and_kind_with_the_count_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttle = LogThrottle(logging.getLogger("t.throttle"), interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t.throttle"):
        for i in range(50):
            throttle.warning("get", "get failed: %s", i)
            throttle.warning("set", "set failed: %s", i)
        now[0] = 10.5
        throttle.warning("get", "get failed: %s", "again")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "get failed: 0",
        "set failed: 0",
        "get failed: again (and 49 more like it in the last 10 s)",
    ]


@pytest.mark.valkey
@pytest.mark.postgres
async def test_a_manager_cut_off_from_valkey_does_not_flood_the_log(
    postgres_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ns = f"lt{uuid.uuid4().hex[:10]}"
    # A port nobody listens on: every Valkey call fails at once.
    async with SessionManager.from_url(
        postgres_server.dsn,
        cache_url="valkey://127.0.0.1:1/0",
        namespace=ns,
        store_options={"schema": ns},
    ) as manager:
        session = await manager.create_session("agent", "u")
        with caplog.at_level(logging.WARNING, logger="agent_core"):
            for _ in range(100):
                await manager.patch_context(session.session_id, {"n": 1})
                await manager.get_session(session.session_id)
        failures = sum(v for k, v in manager.stats.items() if k.startswith("cache_errors"))
    assert failures >= 100  # every call did meet the outage...
    tier_lines = [r for r in caplog.records if r.name == "agent_core.tiers.coherence"]
    assert 1 <= len(tier_lines) <= 4, [r.getMessage() for r in tier_lines]  # ...a few lines said so
