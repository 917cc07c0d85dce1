"""Agent sessions: models and the manager (the reference design's import paths).

Re-exports only, lazily (PEP 562 ``__getattr__``): importing ``agent_core.sessions.session_models``
runs this file first and must not load the manager, with its stores, caches and bus.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent_core.models import AgentSession, Lease, SessionCheckpoint, SessionState
    from agent_core.sessions.session_manager import SessionManager
    from agent_core.stores.base import RecordWrite

__all__ = [
    "AgentSession",
    "Lease",
    "RecordWrite",
    "SessionCheckpoint",
    "SessionManager",
    "SessionState",
]

_MODELS = "agent_core.models"
_HOME: dict[str, str] = {
    "AgentSession": _MODELS,
    "Lease": _MODELS,
    "RecordWrite": "agent_core.stores.base",
    "SessionCheckpoint": _MODELS,
    "SessionManager": "agent_core.sessions.session_manager",
    "SessionState": _MODELS,
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
