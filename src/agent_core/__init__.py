"""agent-core: durable, fast and correct sessions for AI agents.

This package only re-exports, and lazily (PEP 562 ``__getattr__``): ``import agent_core.errors``
or ``import agent_core.models`` runs this file first, and must not drag in the manager with its
stores, caches and bus. A name is imported from its home module on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from agent_core.models import AgentSession, Lease, SessionCheckpoint, SessionState
    from agent_core.sessions.session_manager import SessionManager

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

_ERRORS = "agent_core.errors"
_MODELS = "agent_core.models"
_HOME: dict[str, str] = {
    "AgentCoreError": _ERRORS,
    "AgentSession": _MODELS,
    "ConflictError": _ERRORS,
    "InvalidSessionId": _ERRORS,
    "InvalidTransition": _ERRORS,
    "Lease": _MODELS,
    "LeaseHeld": _ERRORS,
    "LeaseLost": _ERRORS,
    "PayloadTooLarge": _ERRORS,
    "SessionCheckpoint": _MODELS,
    "SessionManager": "agent_core.sessions.session_manager",
    "SessionNotFound": _ERRORS,
    "SessionState": _MODELS,
    "StoreUnavailable": _ERRORS,
    "ValidationError": _ERRORS,
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
