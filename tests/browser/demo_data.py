"""A demo fleet of agent sessions for the dashboard's screenshots and browser tests.

Deterministic (a seeded RNG): the same sessions, states, contexts and trail every run. The
trail's checkpoints carry timestamps spread over the last 24 hours (a checkpoint keeps the time
its writer gave it), so the overview's activity chart has a day of history to show.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agent_core.models import SessionState, utcnow
from agent_core.sessions.session_manager import SessionManager

USERS = ["ana.lima", "ben.okafor", "chen.wei", "dana.ross", "eli.kaplan", "fatima.zahra"]


@dataclass(frozen=True)
class _Kind:
    agent_type: str
    steps: tuple[str, ...]
    weight: int


KINDS = [
    _Kind(
        "support-triage",
        ("classified", "kb_search", "draft_reply", "customer_replied", "escalated", "resolved"),
        5,
    ),
    _Kind("code-review", ("diff_fetched", "lint_run", "review_comments", "approved"), 4),
    _Kind("research-assistant", ("web_search", "read_source", "summarize", "cite_sources"), 3),
    _Kind("invoice-extractor", ("ocr_done", "fields_extracted", "validated", "posted"), 3),
    _Kind("onboarding-guide", ("welcome_sent", "accounts_created", "training_assigned"), 2),
]


def _context(kind: str, rng: random.Random, n: int) -> dict[str, Any]:
    if kind == "support-triage":
        return {
            "ticket": f"T-{4800 + n}",
            "channel": rng.choice(["email", "chat", "phone"]),
            "priority": rng.choice(["low", "normal", "normal", "high"]),
            "summary": rng.choice(
                [
                    "Refund not received after 10 days",
                    "Cannot reset password from the mobile app",
                    "Invoice shows the wrong VAT number",
                    "Export to CSV times out for large workspaces",
                ]
            ),
            "customer": {"plan": rng.choice(["team", "business", "enterprise"]), "seats": n % 40},
        }
    if kind == "code-review":
        return {
            "repo": rng.choice(["acme/billing", "acme/web", "acme/ingest"]),
            "pull_request": 1400 + n,
            "files_changed": rng.randint(2, 30),
            "model": "reviewer-large",
        }
    if kind == "research-assistant":
        return {
            "question": rng.choice(
                [
                    "Which EU rules apply to storing chat transcripts?",
                    "Compare vector index options for 50M documents",
                    "Summarise last quarter's churn interviews",
                ]
            ),
            "sources_read": rng.randint(3, 14),
        }
    if kind == "invoice-extractor":
        return {
            "invoice": f"INV-2026-{n:04d}",
            "vendor": rng.choice(["Northwind", "Globex", "Initech", "Umbrella Corp"]),
            "total": round(rng.uniform(120, 9800), 2),
            "currency": rng.choice(["EUR", "USD", "GBP"]),
        }
    return {"employee": f"new-hire-{n}", "team": rng.choice(["sales", "platform", "support"])}


def _step_data(step: str, rng: random.Random) -> dict[str, Any]:
    choices: dict[str, dict[str, Any]] = {
        "classified": {"intent": "billing", "confidence": round(rng.uniform(0.7, 0.99), 2)},
        "kb_search": {"hits": rng.randint(1, 9), "top": "kb/refunds-policy"},
        "draft_reply": {"tokens": rng.randint(120, 600)},
        "lint_run": {"warnings": rng.randint(0, 7)},
        "review_comments": {"comments": rng.randint(1, 12), "blocking": rng.randint(0, 2)},
        "web_search": {"query": "retention of chat transcripts GDPR", "results": 10},
        "read_source": {"url": "https://example.org/paper.pdf", "pages": rng.randint(2, 30)},
        "fields_extracted": {"fields": 14, "low_confidence": ["due_date"]},
        "validated": {"ok": True},
    }
    return choices.get(step, {})


async def seed(
    manager: SessionManager, *, sessions: int = 48, now: datetime | None = None
) -> list[str]:
    """Create the demo fleet through ``manager``; returns the session ids, oldest first.

    The first id is the showcase session (an active support triage with a long trail, a lease
    and a rich context): the screenshots open it.
    """
    rng = random.Random(7)
    now = now or utcnow()
    ids: list[str] = []
    weights = [k.weight for k in KINDS]
    for n in range(sessions):
        kind = KINDS[0] if n == 0 else rng.choices(KINDS, weights)[0]
        user = USERS[n % len(USERS)] if n else "ana.lima"
        session = await manager.create_session(
            kind.agent_type,
            user,
            context=_context(kind.agent_type, rng, n),
            metadata={"region": rng.choice(["eu-west", "us-east"]), "release": "2026.11.3"},
        )
        ids.append(session.session_id)
        if n == 0:
            continue  # the showcase session's trail is written last, as it happens
        # A trail spread over the last day, busier in the working hours.
        steps = rng.randint(2, 9)
        current = await manager.get_session(session.session_id)
        assert current is not None
        at = now - timedelta(hours=rng.uniform(1, 23.5))
        for i in range(steps):
            step = kind.steps[i % len(kind.steps)]
            cp = current.checkpoint(step, _step_data(step, rng))
            at = min(at + timedelta(minutes=rng.uniform(2, 55)), now - timedelta(seconds=30))
            cp.timestamp = at
        await manager.update_session(current)
        roll = rng.random()
        if roll < 0.38:
            await manager.set_state(session.session_id, SessionState.COMPLETED)
        elif roll < 0.50:
            await manager.set_state(
                session.session_id,
                SessionState.FAILED,
                reason=rng.choice(["tool_timeout", "rate_limited", "heartbeat_timeout"]),
            )
        elif roll < 0.60:
            await manager.set_state(session.session_id, SessionState.PAUSED)
        else:
            await manager.heartbeat(session.session_id)
            if rng.random() < 0.4:
                await manager.claim(
                    session.session_id,
                    f"worker-{rng.choice(['eu', 'us'])}-{rng.randint(1, 6)}",
                    timedelta(minutes=10),
                )
    showcase = ids[0]
    for i in range(11):
        step = KINDS[0].steps[i % len(KINDS[0].steps)]
        await manager.append_checkpoint(showcase, step, _step_data(step, rng))
    await manager.patch_context(
        showcase, {"assignee": "support-bot-7", "sentiment": "frustrated", "sla_minutes_left": 42}
    )
    await manager.claim(showcase, "worker-eu-3", timedelta(minutes=10))
    await manager.heartbeat(showcase)
    return ids
