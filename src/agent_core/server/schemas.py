"""Request and response bodies of the API, as pydantic models (for validation and OpenAPI).

Requests are strict (no coercion, unknown fields refused). Responses are written from the
library's own ``to_dict()`` shapes with orjson; these models describe them for ``/openapi.json``.
JSON values inside ``context``, ``metadata`` and checkpoint ``data`` follow the library's
input rules (``agent_core.codec``): a value outside them is a 422 (``InvalidValue``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent_core.sessions.limits import MAX_LEASE_TTL

__all__ = [
    "INT64_MAX",
    "CheckpointIn",
    "CheckpointOut",
    "CheckpointPage",
    "LeaseIn",
    "LeaseOut",
    "LeaseRenewal",
    "LeaseStatus",
    "Me",
    "PurgeIn",
    "PurgeOut",
    "SessionIn",
    "SessionOut",
    "SessionPage",
    "StateIn",
]

INT64_MAX = 2**63 - 1
MAX_TTL_S = MAX_LEASE_TTL.total_seconds()

LiveState = Literal["active", "paused", "completed", "failed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SessionIn(_Strict):
    agent_type: str = Field(min_length=1, max_length=256, examples=["grader"])
    user_id: str = Field(default="", max_length=256, examples=["user-42"])
    context: dict[str, Any] = Field(default_factory=dict, examples=[{"exam": 7}])
    metadata: dict[str, Any] = Field(default_factory=dict)


class StateIn(_Strict):
    state: LiveState
    reason: str | None = Field(default=None, max_length=256)


class CheckpointIn(_Strict):
    name: str = Field(min_length=1, max_length=256, examples=["graded"])
    data: dict[str, Any] | None = Field(default=None, examples=[{"score": 17}])


class LeaseIn(_Strict):
    owner: str = Field(min_length=1, max_length=256, examples=["worker-1"])
    ttl_s: float = Field(gt=0, le=MAX_TTL_S, allow_inf_nan=False, examples=[30])


class LeaseRenewal(_Strict):
    token: int = Field(ge=0, le=INT64_MAX)
    ttl_s: float = Field(gt=0, le=MAX_TTL_S, allow_inf_nan=False)


class PurgeIn(_Strict):
    user_id: str | None = Field(default=None, max_length=256)
    session_id: str | None = None


class CheckpointOut(BaseModel):
    seq: int
    name: str
    timestamp: datetime
    data: dict[str, Any]


class SessionOut(BaseModel):
    session_id: str
    agent_type: str
    user_id: str
    state: Literal["active", "paused", "completed", "failed", "deleted"]
    created_at: datetime
    updated_at: datetime
    last_heartbeat: datetime
    context: dict[str, Any]
    checkpoints: list[CheckpointOut] = Field(
        description="the most recent checkpoints (empty in lists and after writes)"
    )
    metadata: dict[str, Any]
    version: int
    checkpoint_count: int


class SessionPage(BaseModel):
    items: list[SessionOut]
    next: str | None = Field(description="pass as ?after= for the next page; null at the end")


class CheckpointPage(BaseModel):
    items: list[CheckpointOut]
    next: int | None = Field(description="pass as ?after_seq= for the next page; null at the end")


class LeaseOut(BaseModel):
    session_id: str
    owner: str
    token: int = Field(description="the fencing token: send it as Lease-Token")
    expires_at: datetime


class LeaseStatus(BaseModel):
    lease: LeaseOut | None


class PurgeOut(BaseModel):
    purged: int


class Me(BaseModel):
    tenant: str
    role: Literal["reader", "writer", "admin"]
    key_id: str
