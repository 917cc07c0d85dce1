"""agent-core: durable, fast and correct sessions for AI agents."""

from agent_core.errors import (
    AgentCoreError,
    ConflictError,
    InvalidSessionId,
    InvalidTransition,
    LeaseHeld,
    LeaseLost,
    PayloadTooLarge,
    SessionNotFound,
    StoreUnavailable,
    ValidationError,
)
from agent_core.sessions import (
    AgentSession,
    Lease,
    SessionCheckpoint,
    SessionManager,
    SessionState,
)

__all__ = [
    "AgentCoreError",
    "AgentSession",
    "ConflictError",
    "InvalidSessionId",
    "InvalidTransition",
    "Lease",
    "LeaseHeld",
    "LeaseLost",
    "PayloadTooLarge",
    "SessionCheckpoint",
    "SessionManager",
    "SessionNotFound",
    "SessionState",
    "StoreUnavailable",
    "ValidationError",
]
__version__ = "0.1.0"
