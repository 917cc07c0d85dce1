"""``agent-core demo``: a small fleet of agents using every part of the session API.

Workers run agent jobs (graders, tutors, document pipelines) that checkpoint, patch their
context and heartbeat; some finish, one fails, one pauses, two are abandoned and later failed
by the supervisor's stale-session sweep, and one worker dies holding a lease: a standby worker
takes the session over once the lease expires and resumes from its last checkpoint, while the
dead worker's late write is fenced off. A watcher counts every event it saw.

Everything the demo prints is derived from what it reads back through the manager.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from agent_core.bus.base import EventKind, SessionEvent
from agent_core.cli_format import format_table, human_duration, make_manager, summarize
from agent_core.errors import ConfigurationError, LeaseHeld, LeaseLost, SessionNotFound
from agent_core.factory import hide_password
from agent_core.models import AgentSession, Lease, SessionCheckpoint
from agent_core.sessions.session_manager import SessionManager

__all__ = ["run"]

DEMO_DB = "agent-core-demo.db"
PIPELINE = ("fetch", "extract", "chunk", "embed", "index")
RUBRIC = ("load_rubric", "score_sections", "write_feedback")
LESSON = ("greet", "explain", "quiz")
STANDBY = "standby-worker"
AGENT_ORDER = ("grader", "tutor", "doc-pipeline", "supervisor")
STATES = ("active", "paused", "completed", "failed")


@dataclass(frozen=True)
class Timing:
    step: float
    """Seconds an agent 'works' between two checkpoints."""
    lease_ttl: timedelta
    max_age: timedelta
    """Heartbeat age after which the sweep fails a session."""


NORMAL = Timing(step=0.05, lease_ttl=timedelta(seconds=0.8), max_age=timedelta(seconds=1.5))
FAST = Timing(step=0.002, lease_ttl=timedelta(seconds=0.3), max_age=timedelta(seconds=0.4))


@dataclass(frozen=True)
class Job:
    agent_type: str
    user_id: str
    plan: tuple[str, ...]
    outcome: str
    """completed | failed | paused | abandoned (stops heartbeating) | dies (holding a lease)"""
    done: int | None = None
    """How many steps of the plan run before the outcome; ``None``: all of them."""
    detail: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> tuple[str, ...]:
        return self.plan if self.done is None else self.plan[: self.done]


JOBS = (
    Job("doc-pipeline", "carol", PIPELINE, "dies", done=3),
    Job("grader", "alice", RUBRIC, "completed", result={"score": 87}),
    Job("grader", "bob", RUBRIC, "completed", result={"score": 74}),
    Job("grader", "carol", RUBRIC, "failed", 2, "submission unreadable: PDF has no text layer"),
    Job("tutor", "alice", LESSON, "completed", result={"quiz": "4/5"}),
    Job("tutor", "bob", LESSON, "paused", 2, "the student's answer to question 2"),
    Job("tutor", "carol", LESSON, "abandoned", done=1),
    Job("doc-pipeline", "bob", PIPELINE, "completed", result={"chunks": 42}),
    Job("doc-pipeline", "alice", PIPELINE, "abandoned", done=2),
)


@dataclass
class Death:
    """What a worker that died holding a lease left behind."""

    session_id: str
    worker: str
    lease: Lease
    steps: int


class Demo:
    def __init__(self, manager: SessionManager, timing: Timing, workers: int) -> None:
        self.manager = manager
        self.timing = timing
        self.workers = workers
        self.session_ids: list[str] = []
        self.death: asyncio.Future[Death] = asyncio.get_running_loop().create_future()
        self.takeover_log: list[str] = []
        self.resumed_id = ""

    # --- agents ----------------------------------------------------------------------------

    async def run_jobs(self) -> None:
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for job in JOBS:
            queue.put_nowait(job)

        async def worker(name: str) -> None:
            while not queue.empty():
                await self.run_job(queue.get_nowait(), name)

        async with asyncio.TaskGroup() as group:
            for i in range(1, self.workers + 1):
                group.create_task(worker(f"worker-{i}"))

    async def run_job(self, job: Job, worker: str) -> None:
        m = self.manager
        session = await m.create_session(
            job.agent_type, job.user_id, context={"plan": list(job.plan)}, metadata={"demo": True}
        )
        self.session_ids.append(session.session_id)
        if job.agent_type == "tutor":
            await self.tutor(session, job, worker)
            return
        sid = session.session_id
        if job.outcome == "dies":
            lease = await m.claim(sid, worker, self.timing.lease_ttl)
            for step in job.steps:
                await self.step(sid, step, worker, lease)
            self.death.set_result(Death(sid, worker, lease, len(job.steps)))
            return
        for step in job.steps:
            await self.step(sid, step, worker, None)
        if job.outcome == "completed":
            await m.patch_context(sid, {"result": job.result})
            await m.set_state(sid, "completed")
        elif job.outcome == "failed":
            await m.set_state(sid, "failed", reason=job.detail)

    async def step(self, sid: str, step: str, worker: str, lease: Lease | None) -> None:
        """One unit of work: do it, record it, say we are alive (all fenced by the lease)."""
        await asyncio.sleep(self.timing.step)
        cp = await self.manager.append_checkpoint(sid, step, {"worker": worker}, lease=lease)
        await self.manager.patch_context(
            sid, {"progress": {"last_step": step, "seq": cp.seq}}, lease=lease
        )
        await self.manager.heartbeat(sid, lease=lease)

    async def tutor(self, session: AgentSession, job: Job, worker: str) -> None:
        """Tutors use the reference read-modify-write API (``update_session``, compare-and-set)."""
        for turn, step in enumerate(job.steps, start=1):
            await asyncio.sleep(self.timing.step)
            session.checkpoint(step, {"worker": worker, "turn": turn})
            session.context["turn"] = turn
            await self.manager.update_session(session)
        if job.outcome == "completed":
            session.complete(job.result)
        elif job.outcome == "paused":
            session.pause()
            session.context["waiting_for"] = job.detail
        else:
            return
        await self.manager.update_session(session)

    # --- the takeover ----------------------------------------------------------------------

    async def takeover(self) -> None:
        m, log = self.manager, self.takeover_log.append
        dead = await self.death
        sid, short, ttl = dead.session_id, dead.session_id[:8], self.timing.lease_ttl
        self.resumed_id = sid
        log(
            f"{dead.worker} holds the lease on doc-pipeline session {short} "
            f"(token {dead.lease.token}, ttl {human_duration(ttl)}) and dies after "
            f"{dead.steps} steps, without releasing it"
        )
        try:
            await m.claim(sid, STANDBY, ttl)
            log(f"{STANDBY} claims at once: granted (the lease had already run out)")
        except LeaseHeld as exc:
            log(f"{STANDBY} claims at once: refused, LeaseHeld ({exc})")
        lease = await self.claim_when_expired(sid)
        log(f"{STANDBY} claims after the ttl: granted, fencing token {lease.token}")

        # Resume from what the store says happened, not from anything the dead worker knew.
        session = await m.get_session(sid)
        if session is None:
            raise SessionNotFound(sid)
        last = (await all_checkpoints(m, sid))[-1]
        plan: list[str] = session.context["plan"]
        todo = plan[plan.index(last.name) + 1 :] if last.name in plan else plan
        log(
            f"{STANDBY} reads the session: last checkpoint #{last.seq} {last.name!r}, "
            f"context progress {summarize(session.context.get('progress', {}))} "
            f"-> resumes at {todo[0]!r}"
        )
        await self.step(sid, todo[0], STANDBY, lease)
        try:
            await m.append_checkpoint(sid, todo[0], {"worker": dead.worker}, lease=dead.lease)
            log(f"zombie {dead.worker} writes with token {dead.lease.token}: ACCEPTED (unexpected)")
        except LeaseLost as exc:
            log(
                f"zombie {dead.worker} wakes up, writes with token {dead.lease.token}: "
                f"rejected, LeaseLost ({exc})"
            )
        for step in todo[1:]:
            await self.step(sid, step, STANDBY, lease)
        await m.patch_context(sid, {"result": {"chunks": 17}, "resumed_by": STANDBY}, lease=lease)
        await m.set_state(sid, "completed", lease=lease)
        await m.release(lease)
        log(f"{STANDBY} finishes {', '.join(todo)}, completes the session and releases the lease")

    async def claim_when_expired(self, sid: str) -> Lease:
        loop = asyncio.get_running_loop()
        ttl = self.timing.lease_ttl.total_seconds()
        deadline = loop.time() + 10 * ttl + 5
        await asyncio.sleep(ttl * 1.1)
        while True:
            try:
                return await self.manager.claim(sid, STANDBY, self.timing.lease_ttl)
            except LeaseHeld:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(ttl / 10)

    # --- the supervisor --------------------------------------------------------------------

    async def sweep(self, supervisor: str, idle_since: float) -> int:
        """Wait until the abandoned sessions are older than max_age, then fail them."""
        loop = asyncio.get_running_loop()
        max_age = self.timing.max_age.total_seconds()
        await asyncio.sleep(max(0.0, idle_since + max_age * 1.25 - loop.time()))
        m = self.manager
        await m.heartbeat(supervisor)  # the supervisor itself is alive and must not be swept
        failed = await m.cleanup_stale_sessions(max_age=self.timing.max_age)
        await m.append_checkpoint(supervisor, "sweep", {"failed": failed, "max_age_s": max_age})
        await m.patch_context(supervisor, {"last_sweep": {"failed": failed}})
        return failed


async def all_checkpoints(manager: SessionManager, sid: str) -> list[SessionCheckpoint]:
    out: list[SessionCheckpoint] = []
    while True:
        page = await manager.list_checkpoints(sid, after_seq=len(out), limit=1000)
        out += page
        if len(page) < 1000:
            return out


async def watch(
    manager: SessionManager, seen: list[SessionEvent], ready: asyncio.Event, stop: asyncio.Event
) -> None:
    async with manager.events() as stream:
        ready.set()
        while True:
            try:
                seen.append(await stream.get(timeout=0.05))
            except TimeoutError:
                if stop.is_set():  # drained: nothing arrived since the work stopped
                    return


# --- output --------------------------------------------------------------------------------


def _title(text: str) -> None:
    print(f"\n== {text} ==")


def _agent_rank(kind: str) -> int:
    return AGENT_ORDER.index(kind) if kind in AGENT_ORDER else len(AGENT_ORDER)


def _sort_key(session: AgentSession) -> tuple[int, str]:
    return (_agent_rank(session.agent_type), session.user_id)


def _last_step(session: AgentSession) -> str:
    # Not every agent keeps its progress in the context: the checkpoint window always has it.
    return session.checkpoints[-1].name if session.checkpoints else "-"


def _outcome(session: AgentSession) -> str:
    ctx = session.context
    if "failure_reason" in ctx:
        return f"reason: {ctx['failure_reason']}"
    if "waiting_for" in ctx:
        return f"waiting for: {ctx['waiting_for']}"
    if "result" in ctx:
        extra = f", resumed by {ctx['resumed_by']}" if "resumed_by" in ctx else ""
        return f"result: {summarize(ctx['result'])}{extra}"
    if "last_sweep" in ctx:
        return f"last sweep failed {ctx['last_sweep'].get('failed')}"
    return ""


def print_sessions(sessions: Sequence[AgentSession]) -> None:
    _title("Sessions")
    rows = [
        [s.agent_type, s.user_id, s.session_id[:8], s.state.value, s.checkpoint_count, _outcome(s)]
        for s in sessions
    ]
    print(format_table(["agent_type", "user", "session", "state", "checkpoints", "outcome"], rows))
    _title("Sessions by agent type and state")
    counts = Counter((s.agent_type, s.state.value) for s in sessions)
    kinds = sorted({s.agent_type for s in sessions}, key=_agent_rank)
    per_kind = {k: [counts[k, st] for st in STATES] for k in kinds}
    totals = [sum(column) for column in zip(*per_kind.values(), strict=True)]
    table = [[k, *n, sum(n)] for k, n in per_kind.items()]
    table.append(["total", *totals, sum(totals)])
    print(format_table(["agent_type", *STATES, "total"], table))


def print_trail(trail: Sequence[SessionCheckpoint], session: AgentSession) -> None:
    rows = [
        [
            cp.seq or 0,
            cp.name,
            str(cp.data.get("worker", "-")),
            f"+{(cp.timestamp - session.created_at).total_seconds():.2f}s",
        ]
        for cp in trail
    ]
    print(format_table(["seq", "checkpoint", "by", "at"], rows))


def print_events(seen: Sequence[SessionEvent]) -> None:
    _title(f"Events seen by the watcher ({len(seen)})")
    by_kind: dict[EventKind, set[str]] = {}
    counts = Counter(event.kind for event in seen)
    for event in seen:
        by_kind.setdefault(event.kind, set()).add(event.session_id)
    rows = [[kind.value, counts[kind], len(by_kind[kind])] for kind in EventKind if counts[kind]]
    print(format_table(["kind", "events", "sessions"], rows))


# --- entry point ---------------------------------------------------------------------------


async def refuse_foreign_sessions(manager: SessionManager, url: str) -> None:
    """The demo's sweep fails every active session silent for a second: never on real data."""
    after = None
    while True:
        page = await manager.list_sessions(state="active", limit=1000, after=after)
        for session in page:
            if session.metadata.get("demo") is not True:
                raise ConfigurationError(
                    f"{url} holds active sessions the demo did not create (e.g. "
                    f"{session.session_id}), which its stale-session sweep would fail; "
                    "run the demo on an empty store"
                )
        if len(page) < 1000:
            return
        after = page[-1].session_id


def _fresh_demo_store() -> str:
    path = Path.cwd() / DEMO_DB
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return f"sqlite:///{path}"


@dataclass
class Report:
    sessions: list[AgentSession]
    resumed: AgentSession | None
    trail: list[SessionCheckpoint]
    failed: int
    events: list[SessionEvent]


async def play(manager: SessionManager, demo: Demo) -> Report:
    """The whole scenario, watched from start to end; returns what was read back."""
    seen: list[SessionEvent] = []
    ready, stop = asyncio.Event(), asyncio.Event()
    watcher = asyncio.create_task(watch(manager, seen, ready, stop))
    try:
        await ready.wait()
        supervisor = await manager.create_session(
            "supervisor", "ops", context={"role": "sweeps stale sessions"}, metadata={"demo": True}
        )
        sup = supervisor.session_id
        await manager.append_checkpoint(sup, "watch_started")
        async with asyncio.TaskGroup() as group:
            group.create_task(demo.run_jobs())
            group.create_task(demo.takeover())
        failed = await demo.sweep(sup, asyncio.get_running_loop().time())

        ids = [*demo.session_ids, sup]
        sessions = [s for s in [await manager.get_session(i) for i in ids] if s is not None]
        sessions.sort(key=_sort_key)
        resumed = await manager.get_session(demo.resumed_id)
        trail = await all_checkpoints(manager, demo.resumed_id)
    finally:
        stop.set()
        await watcher
    return Report(sessions, resumed, trail, failed, seen)


def print_report(report: Report, timing: Timing, takeover_log: Sequence[str]) -> None:
    _title("Lease takeover")
    for line in takeover_log:
        print(f"- {line}")
    if report.resumed is not None:
        print(f"\nCheckpoint trail of the resumed session {report.resumed.session_id[:8]}:")
        print_trail(report.trail, report.resumed)
    max_age = human_duration(timing.max_age)
    _title(f"Stale sessions (no heartbeat for {max_age})")
    print(f"supervisor ran cleanup_stale_sessions(max_age={max_age}): failed {report.failed}")
    stale = [s for s in report.sessions if s.context.get("failure_reason") == "heartbeat_timeout"]
    rows = [
        [s.agent_type, s.user_id, s.session_id[:8], s.state.value, _last_step(s)] for s in stale
    ]
    print(format_table(["agent_type", "user", "session", "state", "last step"], rows))
    print_sessions(report.sessions)
    print_events(report.events)


async def run(args: argparse.Namespace) -> int:
    # Only an explicit --store: AGENT_CORE_STORE_URL may well point at a real database.
    explicit: str | None = getattr(args, "store", None)
    url = explicit or _fresh_demo_store()
    timing = FAST if args.fast else NORMAL
    shown = hide_password(url)
    async with make_manager(args, url) as manager:
        if explicit:
            await refuse_foreign_sessions(manager, shown)
        workers = f"{args.workers} worker{'s' if args.workers > 1 else ''}"
        print(f"agent-core demo: {len(JOBS)} agent jobs on {workers}, store {shown}")
        print(
            f"(lease ttl {human_duration(timing.lease_ttl)}, "
            f"stale after {human_duration(timing.max_age)} without heartbeat)"
        )
        demo = Demo(manager, timing, args.workers)
        report = await play(manager, demo)
    print_report(report, timing, demo.takeover_log)
    print()
    if url.startswith("memory:"):
        print(f"Store {shown}: in-process only, nothing was kept.")
    else:
        quoted = shlex.quote(shown)
        print(f"Store {shown}. Inspect with:")
        print(f"  agent-core sessions ls --store {quoted}")
        print(f"  agent-core sessions show {demo.resumed_id} --store {quoted}")
    return 0
