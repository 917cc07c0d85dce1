"""Deterministic payloads shared by every configuration, so all of them store the same bytes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = [
    "AGENT_TYPE",
    "CHECKPOINT_BYTES",
    "CONTEXT_BYTES",
    "checkpoint_data",
    "context",
    "json_size",
    "session_document",
    "session_id",
    "user_id",
]

AGENT_TYPE = "bench-agent"
CONTEXT_BYTES = 1000
CHECKPOINT_BYTES = 200


def json_size(value: Any) -> int:
    return len(orjson.dumps(value))


def _pad(base: dict[str, Any], target: int) -> dict[str, Any]:
    """``base`` plus a ``pad`` string that brings its compact JSON to ``target`` bytes."""
    out = dict(base)
    out["pad"] = ""
    missing = target - json_size(out)
    out["pad"] = "x" * max(missing, 0)
    return out


def context(i: int) -> dict[str, Any]:
    """A session context of about 1 KB of compact JSON."""
    base = {
        "task": "grade-exam",
        "exam": i,
        "course": f"course-{i % 37}",
        "rubric": [{"q": q, "points": 5, "keywords": ["alpha", "beta", "gamma"]} for q in range(6)],
        "settings": {"strict": True, "language": "en", "temperature": 0.2, "max_steps": 40},
    }
    return _pad(base, CONTEXT_BYTES)


def checkpoint_data(i: int) -> dict[str, Any]:
    """A checkpoint payload of about 200 B of compact JSON."""
    base = {"step": i, "tool": "grader", "score": i % 20, "ok": True}
    return _pad(base, CHECKPOINT_BYTES)


def user_id(i: int) -> str:
    return f"user-{i:04d}"


def session_id(prefix: str, i: int) -> str:
    """A canonical UUID string, deterministic in (prefix, i)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}/{i}"))


def session_document(sid: str, uid: str, ctx: dict[str, Any], checkpoints: int) -> dict[str, Any]:
    """The JSON document a hand-written cache would keep for a session with ``checkpoints``
    checkpoints: the same fields and sizes as agent-core's cached entry."""
    now = datetime.now(UTC).isoformat()
    trail = [{"name": "session_created", "timestamp": now, "data": {}, "seq": 1}]
    trail += [
        {"name": "step", "timestamp": now, "data": checkpoint_data(n), "seq": n + 2}
        for n in range(checkpoints - 1)
    ]
    return {
        "session_id": sid,
        "agent_type": AGENT_TYPE,
        "user_id": uid,
        "state": "active",
        "created_at": now,
        "updated_at": now,
        "last_heartbeat": now,
        "context": ctx,
        "checkpoints": trail,
        "metadata": {},
        "version": checkpoints,
        "checkpoint_count": checkpoints,
    }
