"""The session models under the reference design's import path.

They live in the leaf module ``agent_core.models``; this module only re-exports them, so
``from agent_core.sessions.session_models import AgentSession`` keeps working.
"""

from __future__ import annotations

from agent_core.models import AgentSession, Lease, SessionCheckpoint, SessionState, utcnow

__all__ = [
    "AgentSession",
    "Lease",
    "SessionCheckpoint",
    "SessionState",
    "utcnow",
]
