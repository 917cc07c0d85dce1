"""Session ids for framework units.

agent-core session ids are UUIDs; a framework names its unit (a LangGraph thread, an Agents SDK
session, an ADK session) with any string. Each adapter maps that string onto one deterministic
session id, so the same thread always finds the same session from any process without a lookup
table, and two tenants' units of the same name never collide.
"""

from __future__ import annotations

import uuid

__all__ = ["session_id_for"]

# Fixed forever: changing it would orphan every session an adapter ever created.
_NAMESPACE = uuid.UUID("6f1f2c1e-8d55-4a8e-9a43-2f3b0c7a1d01")


def session_id_for(framework: str, external_id: str, *, tenant: str | None = None) -> str:
    """The agent-core session id of ``framework``'s unit named ``external_id``.

    ``framework`` is a short fixed name ("langgraph", "openai-agents", "adk"); ``tenant`` is the
    manager's tenant (``None`` and ``""`` are the same, un-tenanted, space).
    """
    name = f"{framework}\x00{tenant or ''}\x00{external_id}"
    return str(uuid.uuid5(_NAMESPACE, name))
