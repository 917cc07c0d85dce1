"""Agent sessions: models and the manager (the reference design's import paths)."""

from agent_core.sessions.session_manager import SessionManager
from agent_core.sessions.session_models import (
    AgentSession,
    Lease,
    SessionCheckpoint,
    SessionState,
)

__all__ = ["AgentSession", "Lease", "SessionCheckpoint", "SessionManager", "SessionState"]
