"""Every input rule of the manager, written once: names, payloads, limits, leases, TTLs.

Each check raises a ``ValidationError`` subclass (or ``LeaseLost`` for a lease of another
session) before anything is written.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from agent_core import codec
from agent_core.errors import LeaseLost, ValidationError
from agent_core.sessions.session_models import AgentSession, Lease, SessionState

__all__ = [
    "check_lease",
    "check_limit",
    "check_name",
    "check_payload",
    "check_session",
    "check_ttl",
]

_MAX_NAME = 256


def check_lease(session_id: str, lease: Lease | None) -> None:
    if lease is not None and lease.session_id != session_id:
        raise LeaseLost(f"the lease is for session {lease.session_id}, not {session_id}")


def check_name(value: object, what: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, not {type(value).__name__}")
    if not value and not allow_empty:
        raise ValidationError(f"{what} must not be empty")
    if len(value) > _MAX_NAME:
        raise ValidationError(f"{what} is longer than {_MAX_NAME} characters")
    return value


def check_limit(limit: int) -> None:
    if limit < 1 or limit > 10_000:
        raise ValidationError("limit must be between 1 and 10000")


def check_ttl(ttl: timedelta) -> None:
    if ttl <= timedelta(0):
        raise ValidationError("lease ttl must be positive")


def check_payload(value: Any, what: str, max_bytes: int) -> None:
    codec.encode_object(value, what=what, max_bytes=max_bytes)


def check_session(session: AgentSession, max_bytes: int) -> None:
    """Everything ``create_session`` and ``update_session`` store, checked before any write."""
    codec.validate_session_id(session.session_id)
    check_name(session.agent_type, "agent_type")
    check_name(session.user_id, "user_id", allow_empty=True)
    if not isinstance(session.state, SessionState):
        raise ValidationError(f"state must be a SessionState, not {session.state!r}")
    check_payload(session.context, "context", max_bytes)
    check_payload(session.metadata, "metadata", max_bytes)
    for cp in session.pending_checkpoints:
        check_name(cp.name, "checkpoint name")
        check_payload(cp.data, "checkpoint data", max_bytes)
