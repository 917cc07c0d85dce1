"""What the dashboard's pages show, computed from a tenant's ``SessionManager``: no HTTP here.

``overview`` scans the session heads once per state (paged with the ``after`` cursor, up to
``SCAN_CAP`` a state) for the counts by state and agent type, and reads the recent trail of the
sessions updated in the last 24 hours for the activity chart; ``activity_svg`` draws that chart
as inline SVG, so the page needs no chart library and no script.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from markupsafe import Markup, escape

from agent_core.models import AgentSession, SessionState, utcnow

if TYPE_CHECKING:
    from agent_core.sessions.session_manager import SessionManager

__all__ = [
    "LIVE_STATES",
    "SCAN_CAP",
    "Activity",
    "Overview",
    "activity_svg",
    "overview",
]

#: The states a dashboard counts and filters by (deleted sessions are hidden from reads).
LIVE_STATES = (
    SessionState.ACTIVE,
    SessionState.PAUSED,
    SessionState.COMPLETED,
    SessionState.FAILED,
)
#: At most this many sessions are counted per state; the page then says "5000+".
SCAN_CAP = 5000
_PAGE = 1000
#: The activity chart reads the trail of at most this many recently updated sessions ...
_ACTIVITY_SESSIONS = 100
#: ... and at most this many of each one's newest checkpoints.
_ACTIVITY_TRAIL = 500
HOURS = 24


@dataclass
class Activity:
    """Per hour of the last ``HOURS`` (oldest first): checkpoints written, and how many
    distinct sessions wrote them (sessions at work)."""

    start: datetime
    checkpoints: list[int]
    working: list[int]
    sessions: int = 0
    """Sessions with at least one checkpoint in the whole window."""

    @property
    def total_checkpoints(self) -> int:
        return sum(self.checkpoints)


@dataclass
class Overview:
    counts: dict[SessionState, int]
    capped: set[SessionState]
    by_type: dict[str, dict[SessionState, int]]
    recent: list[AgentSession]
    activity: Activity
    agent_types: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


async def _heads(manager: SessionManager, state: SessionState) -> tuple[list[AgentSession], bool]:
    heads: list[AgentSession] = []
    after: str | None = None
    while len(heads) < SCAN_CAP:
        page = await manager.list_sessions(state=state, limit=_PAGE, after=after)
        heads.extend(page)
        if len(page) < _PAGE:
            return heads, False
        after = page[-1].session_id
    return heads[:SCAN_CAP], True


def _hour(start: datetime, when: datetime) -> int | None:
    index = int((when - start).total_seconds() // 3600)
    return index if 0 <= index < HOURS else None


async def _activity(manager: SessionManager, heads: list[AgentSession]) -> Activity:
    now = utcnow()
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
    recent = sorted(
        (h for h in heads if (h.updated_at or h.created_at) >= start),
        key=lambda h: h.updated_at or h.created_at,
        reverse=True,
    )[:_ACTIVITY_SESSIONS]
    checkpoints = [0] * HOURS
    working: list[set[str]] = [set() for _ in range(HOURS)]
    limit = asyncio.Semaphore(8)

    async def trail(head: AgentSession) -> None:
        async with limit:
            first = max(0, head.checkpoint_count - _ACTIVITY_TRAIL)
            for cp in await manager.list_checkpoints(
                head.session_id, after_seq=first, limit=_ACTIVITY_TRAIL
            ):
                index = _hour(start, cp.timestamp)
                if index is not None:
                    checkpoints[index] += 1
                    working[index].add(head.session_id)

    await asyncio.gather(*(trail(h) for h in recent))
    return Activity(
        start=start,
        checkpoints=checkpoints,
        working=[len(ids) for ids in working],
        sessions=len(set().union(*working)),
    )


async def overview(manager: SessionManager, *, recent: int = 8) -> Overview:
    """Counts by state and agent type, the most recently updated sessions, the activity."""
    scans = await asyncio.gather(*(_heads(manager, state) for state in LIVE_STATES))
    counts: dict[SessionState, int] = {}
    capped: set[SessionState] = set()
    by_type: dict[str, dict[SessionState, int]] = {}
    every: list[AgentSession] = []
    for state, (heads, cut) in zip(LIVE_STATES, scans, strict=True):
        counts[state] = len(heads)
        if cut:
            capped.add(state)
        for agent_type, n in Counter(h.agent_type for h in heads).items():
            by_type.setdefault(agent_type, dict.fromkeys(LIVE_STATES, 0))[state] = n
        every.extend(heads)
    every.sort(key=lambda h: h.updated_at or h.created_at, reverse=True)
    return Overview(
        counts=counts,
        capped=capped,
        by_type=dict(sorted(by_type.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))),
        recent=every[:recent],
        activity=await _activity(manager, every),
        agent_types=sorted(by_type),
    )


def activity_svg(activity: Activity, *, width: int = 560, height: int = 220) -> Markup:
    """A bar chart of checkpoints per hour with the sessions at work as a line, as SVG.

    Presentation attributes and classes only (no ``style=``), so a strict Content-Security-Policy
    allows it; every bar has a ``<title>`` for a tooltip and for screen readers.
    """
    left, right, top, bottom = 36, 8, 12, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([*activity.checkpoints, *activity.working, 1])
    # A round top for the axis: 1, 2, 5 x 10^n.
    scale = 1
    while scale * 10 < peak:
        scale *= 10
    ceiling = next(m * scale for m in (1, 2, 5, 10) if m * scale >= peak)
    step = plot_w / HOURS
    bar = max(step * 0.62, 1.0)

    def y(value: int) -> float:
        return top + plot_h - plot_h * value / ceiling

    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="chart-title" preserveAspectRatio="xMidYMid meet">',
        '<title id="chart-title">Checkpoints written and sessions started per hour, '
        "last 24 hours</title>",
    ]
    for tick in (0, ceiling // 2, ceiling):
        ty = y(tick)
        out.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}"/>'
            f'<text class="axis" x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    points = []
    for i, (cps, made) in enumerate(zip(activity.checkpoints, activity.working, strict=True)):
        hour = activity.start + timedelta(hours=i)
        x = left + i * step + (step - bar) / 2
        label = escape(f"{hour:%H}:00 UTC: {cps} checkpoints by {made} sessions")
        h = plot_h * cps / ceiling
        out.append(
            f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" '
            f'height="{max(h, 0):.1f}" rx="2"><title>{label}</title></rect>'
        )
        points.append(f"{left + i * step + step / 2:.1f},{y(made):.1f}")
        if i % 4 == 0:
            out.append(
                f'<text class="axis" x="{left + i * step + step / 2:.1f}" y="{height - 6}" '
                f'text-anchor="middle">{hour:%H}:00</text>'
            )
    out.append(f'<polyline class="line" points="{" ".join(points)}"/>')
    for point in points:
        px, py = point.split(",")
        out.append(f'<circle class="pt" cx="{px}" cy="{py}" r="2.5"/>')
    out.append("</svg>")
    return Markup("".join(out))
