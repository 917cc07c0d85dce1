"""What the overview computes, on the in-memory store: counts by state and agent type, the
cap on the scan, the activity per hour, and the chart drawn from it."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from agent_core.models import SessionState, utcnow
from agent_core.server.dashboard import views
from agent_core.sessions.session_manager import SessionManager


async def test_counts_by_state_and_agent_type() -> None:
    async with SessionManager() as m:
        ids = [(await m.create_session("a" if i % 3 else "b", "u")).session_id for i in range(9)]
        await m.set_state(ids[0], SessionState.PAUSED)
        await m.set_state(ids[1], SessionState.COMPLETED)
        await m.set_state(ids[2], SessionState.FAILED, reason="x")
        await m.delete_session(ids[3])
        data = await views.overview(m)
    assert data.counts == {
        SessionState.ACTIVE: 5,
        SessionState.PAUSED: 1,
        SessionState.COMPLETED: 1,
        SessionState.FAILED: 1,
    }
    assert data.total == 8 and not data.capped
    assert data.by_type["a"][SessionState.ACTIVE] + data.by_type["b"][SessionState.ACTIVE] == 5
    assert list(data.by_type) == ["a", "b"]  # the busiest type first
    assert sum(sum(row.values()) for row in data.by_type.values()) == 8
    assert len(data.recent) == 8
    assert data.agent_types == ["a", "b"]


async def test_the_scan_stops_at_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "SCAN_CAP", 4)
    monkeypatch.setattr(views, "_PAGE", 3)
    async with SessionManager() as m:
        for _ in range(7):
            await m.create_session("a")
        data = await views.overview(m)
    assert data.counts[SessionState.ACTIVE] == 4
    assert data.capped == {SessionState.ACTIVE}


async def test_activity_counts_checkpoints_per_hour_and_sessions_at_work() -> None:
    async with SessionManager() as m:
        s = await m.create_session("a")
        t = await m.create_session("b")
        for sid, hours_ago in ((s.session_id, 3), (s.session_id, 3), (t.session_id, 3)):
            current = await m.get_session(sid)
            assert current is not None
            cp = current.checkpoint("step")
            cp.timestamp = utcnow() - timedelta(hours=hours_ago, minutes=1)
            await m.update_session(current)
        old = await m.get_session(t.session_id)
        assert old is not None
        old.checkpoint("too old").timestamp = utcnow() - timedelta(hours=30)
        await m.update_session(old)
        activity = (await views.overview(m)).activity
    assert len(activity.checkpoints) == len(activity.working) == views.HOURS
    # The two session_created checkpoints are in this hour; three steps 3 hours back.
    assert activity.checkpoints[-1] == 2 and activity.working[-1] == 2
    hour = activity.checkpoints.index(3)
    assert activity.working[hour] == 2
    assert activity.total_checkpoints == 5 and activity.sessions == 2


def test_the_chart_has_a_bar_and_a_point_per_hour_and_escapes_nothing_raw() -> None:
    start = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    chart = views.activity_svg(
        views.Activity(start=start, checkpoints=[i * 3 for i in range(24)], working=[1] * 24)
    )
    assert chart.count('<rect class="bar"') == 24
    assert chart.count('<circle class="pt"') == 24
    assert "style=" not in chart
    assert re.search(r">100</text>", chart)  # 69 at most: the axis rounds up to 100
