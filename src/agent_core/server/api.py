"""The ``/v1`` routes: sessions, context, state, heartbeats, checkpoints, leases, events, purge,
export. Every route authenticates (``Authorization: Bearer <key>``), checks the key's role and
works through the key's tenant's manager, so another tenant's session is, on every route,
exactly an unknown id (404). The formats are in ``docs/api.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response, StreamingResponse

from agent_core import codec
from agent_core.bus.base import EventKind, SessionEvent
from agent_core.errors import ConflictError, SessionNotFound, ValidationError
from agent_core.models import AgentSession, Lease, SessionCheckpoint, SessionState, utcnow
from agent_core.server.json import JSONResponse
from agent_core.server.keys import AuthenticationError, Principal, Role
from agent_core.server.metrics import Metrics
from agent_core.server.openapi import problem_responses
from agent_core.server.problems import PreconditionFailed, UnsupportedMediaType
from agent_core.server.schemas import (
    INT64_MAX,
    CheckpointIn,
    CheckpointOut,
    CheckpointPage,
    LeaseIn,
    LeaseOut,
    LeaseRenewal,
    LeaseStatus,
    LiveState,
    Me,
    PurgeIn,
    PurgeOut,
    SessionIn,
    SessionOut,
    SessionPage,
    StateIn,
)
from agent_core.sessions.limits import MAX_LIMIT
from agent_core.sessions.session_manager import SessionManager

__all__ = ["Caller", "router"]

router = APIRouter(prefix="/v1", tags=["sessions"])

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key (`agent-core keys create --tenant NAME`):"
    " `Authorization: Bearer ak_...`",
)
JSONL = "application/jsonl"
_FENCED_DELETE_ATTEMPTS = 5
MERGE_PATCH = "application/merge-patch+json"


# --- who is calling ------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """The authenticated caller, the manager of its tenant, and the metrics to count with."""

    principal: Principal
    manager: SessionManager
    metrics: Metrics

    async def run(self, operation: str, call: Any) -> Any:
        return await self.metrics.run(operation, call)


async def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise AuthenticationError("send an API key: Authorization: Bearer <key>")
    principal: Principal = await request.app.state.hub.authenticate(credentials.credentials)
    request.state.principal = principal
    return principal


def _caller(needed: Role) -> Callable[..., Any]:
    async def dependency(
        request: Request, principal: Annotated[Principal, Depends(_principal)]
    ) -> Caller:
        principal.require(needed)
        _check_body_type(request)
        manager = await request.app.state.hub.manager_for(principal.tenant)
        return Caller(principal, manager, request.app.state.metrics)

    return dependency


Reader = Annotated[Caller, Depends(_caller(Role.READER))]
Writer = Annotated[Caller, Depends(_caller(Role.WRITER))]
Admin = Annotated[Caller, Depends(_caller(Role.ADMIN))]


def _check_body_type(request: Request) -> None:
    """A body must be JSON (``application/json`` or ``application/*+json``): else 415."""
    headers = request.headers
    if headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers:
        return
    kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json")):
        return
    raise UnsupportedMediaType(f"send the body as application/json, not {kind or 'untyped'}")


# --- parameters ----------------------------------------------------------------------------

SessionIdPath = Annotated[
    str,
    Path(
        alias="session_id",
        description="a session id (UUID); anything else, like an unknown id, is a 404",
    ),
]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='the version the write expects: "7" or 7 (several, comma-separated); 412 '
        "when the session is at another version",
        max_length=1024,
    ),
]
LeaseToken = Annotated[
    int | None,
    Header(
        alias="Lease-Token",
        description="a lease's fencing token: the write commits only while that lease is live"
        " (else 409 LeaseLost)",
        ge=0,
        le=INT64_MAX,
    ),
]


def _session_id(value: str) -> str:
    """A path id that is not a session id names no session: 404, like an unknown one."""
    try:
        return codec.validate_session_id(value)
    except ValidationError:
        raise SessionNotFound(value) from None


def _lease(session_id: str, token: int | None) -> Lease | None:
    # The store fences on the token alone; owner and expiry are not compared.
    return None if token is None else Lease(session_id, "", token, utcnow())


def _versions(if_match: str | None) -> list[int] | None:
    """The versions an ``If-Match`` accepts; ``None`` when absent or ``*`` (no condition)."""
    if if_match is None or if_match.strip() == "*":
        return None
    out: list[int] = []
    for part in if_match.split(","):
        tag = part.strip().removeprefix("W/").strip().strip('"')
        if tag.isdigit() and len(tag) < 20:
            out.append(int(tag))
    return out


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


# --- encoding ------------------------------------------------------------------------------


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status, headers=headers)


def _session_json(session: AgentSession, status: int = 200, **headers: str) -> Response:
    return _json(session.to_dict(), status, {**_etag(session.version), **headers})


def _head(session: AgentSession) -> AgentSession:
    session.checkpoints = []
    return session


def _lease_json(lease: Lease) -> dict[str, Any]:
    return {
        "session_id": lease.session_id,
        "owner": lease.owner,
        "token": lease.token,
        "expires_at": lease.expires_at.isoformat(),
    }


def _checkpoint_json(cp: SessionCheckpoint) -> dict[str, Any]:
    return cp.to_dict()


# --- conditional writes --------------------------------------------------------------------


async def _conditional(
    caller: Caller,
    operation: str,
    session_id: str,
    versions: list[int],
    lease: Lease | None,
    change: Callable[[AgentSession], None],
) -> AgentSession:
    """Apply ``change`` to the session if it is at one of ``versions``: read, compare, write
    back with compare-and-set (a write in between is a 412 too)."""
    manager = caller.manager
    session: AgentSession | None = await caller.run("get_session", manager.get_session(session_id))
    if session is None:
        raise SessionNotFound(session_id)
    if session.version not in versions:
        raise PreconditionFailed(
            f"session {session_id} is at version {session.version}, not"
            f" {' or '.join(map(str, versions)) or 'a version'} (If-Match)"
        )
    change(session)
    try:
        await caller.run(operation, manager.update_session(session, lease=lease))
    except ConflictError:
        raise PreconditionFailed(
            f"session {session_id} changed while the conditional write ran (If-Match)"
        ) from None
    return session


def _become(target: SessionState, reason: str | None) -> Callable[[AgentSession], None]:
    def change(session: AgentSession) -> None:
        session.state.check_transition(target)
        session.state = target
        if target is SessionState.FAILED and reason is not None:
            session.context["failure_reason"] = reason

    return change


# --- sessions ------------------------------------------------------------------------------


@router.get("/me", response_model=Me, responses=problem_responses(), summary="The caller's key")
async def me(request: Request, caller: Reader) -> Any:
    p = caller.principal
    return _json(
        {
            "tenant": p.tenant,
            "role": p.role.value,
            "key_id": p.key_id,
        }
    )


@router.post(
    "/sessions",
    status_code=201,
    response_model=SessionOut,
    responses=problem_responses(409, 413, 415, 422),
    summary="Create a session",
)
async def create_session(body: SessionIn, caller: Writer) -> Any:
    session = await caller.run(
        "create_session",
        caller.manager.create_session(body.agent_type, body.user_id, body.context, body.metadata),
    )
    return _session_json(session, 201, Location=f"/v1/sessions/{session.session_id}")


@router.get(
    "/sessions",
    response_model=SessionPage,
    responses=problem_responses(422),
    summary="List sessions (heads), by id",
)
async def list_sessions(
    caller: Reader,
    state: Annotated[LiveState | None, Query(description="default: any live state")] = None,
    agent_type: Annotated[str | None, Query(max_length=256)] = None,
    user_id: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    after: Annotated[str | None, Query(description="the `next` of the previous page")] = None,
) -> Any:
    page = await caller.run(
        "list_sessions",
        caller.manager.list_sessions(
            state=state, agent_type=agent_type, user_id=user_id, limit=limit, after=after
        ),
    )
    nxt = page[-1].session_id if len(page) == limit else None
    return _json({"items": [s.to_dict() for s in page], "next": nxt})


@router.get(
    "/sessions/{session_id}",
    response_model=SessionOut,
    responses=problem_responses(404),
    summary="A session with its most recent checkpoints",
)
async def get_session(session_id: SessionIdPath, caller: Reader) -> Any:
    sid = _session_id(session_id)
    session = await caller.run("get_session", caller.manager.get_session(sid))
    if session is None:
        raise SessionNotFound(sid)
    return _session_json(session)


@router.patch(
    "/sessions/{session_id}/context",
    response_model=SessionOut,
    responses=problem_responses(404, 409, 412, 413, 415, 422),
    summary="Merge a JSON merge patch (RFC 7396) into the context",
)
async def patch_context(
    session_id: SessionIdPath,
    changes: Annotated[dict[str, Any], Body(media_type=MERGE_PATCH)],
    caller: Writer,
    if_match: IfMatch = None,
    lease_token: LeaseToken = None,
) -> Any:
    sid = _session_id(session_id)
    lease = _lease(sid, lease_token)
    versions = _versions(if_match)
    if versions is None:
        head = await caller.run(
            "patch_context", caller.manager.patch_context(sid, changes, lease=lease)
        )
    else:

        def change(session: AgentSession) -> None:
            codec.validate_value(changes, what="context changes")
            session.context = codec.merge_patch(session.context, changes)

        head = _head(await _conditional(caller, "update_session", sid, versions, lease, change))
    return _session_json(head)


@router.post(
    "/sessions/{session_id}/state",
    response_model=SessionOut,
    responses=problem_responses(404, 409, 412, 415, 422),
    summary="Move the session to another state",
)
async def set_state(
    session_id: SessionIdPath,
    body: StateIn,
    caller: Writer,
    if_match: IfMatch = None,
    lease_token: LeaseToken = None,
) -> Any:
    sid = _session_id(session_id)
    lease = _lease(sid, lease_token)
    versions = _versions(if_match)
    target = SessionState(body.state)
    if versions is None:
        head = await caller.run(
            "set_state", caller.manager.set_state(sid, target, body.reason, lease=lease)
        )
    else:
        change = _become(target, body.reason)
        head = _head(await _conditional(caller, "update_session", sid, versions, lease, change))
    return _session_json(head)


@router.post(
    "/sessions/{session_id}/heartbeat",
    response_model=SessionOut,
    responses=problem_responses(404, 409, 412),
    summary="Record a heartbeat (and renew the lease of Lease-Token)",
)
async def heartbeat(
    session_id: SessionIdPath,
    caller: Writer,
    if_match: IfMatch = None,
    lease_token: LeaseToken = None,
) -> Any:
    sid = _session_id(session_id)
    lease = _lease(sid, lease_token)
    versions = _versions(if_match)
    if versions is None:
        head = await caller.run("heartbeat", caller.manager.heartbeat(sid, lease=lease))
    else:
        head = _head(
            await _conditional(caller, "update_session", sid, versions, lease, lambda s: None)
        )
    return _session_json(head)


@router.delete(
    "/sessions/{session_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(404, 409, 412),
    summary="Soft-delete a session (kept for audit until purged)",
)
async def delete_session(
    session_id: SessionIdPath,
    caller: Writer,
    if_match: IfMatch = None,
    lease_token: LeaseToken = None,
) -> Response:
    sid = _session_id(session_id)
    versions = _versions(if_match)
    lease = _lease(sid, lease_token)
    if versions is None and lease is None:
        if not await caller.run("delete_session", caller.manager.delete_session(sid)):
            raise SessionNotFound(sid)
    elif versions is not None:
        change = _become(SessionState.DELETED, None)
        await _conditional(caller, "update_session", sid, versions, lease, change)
    else:
        # Fenced: a compare-and-set to ``deleted`` at the version just read, read again if a
        # write landed in between (the caller asked for no particular version).
        for attempt in range(_FENCED_DELETE_ATTEMPTS):
            current = await caller.run("get_session", caller.manager.get_session(sid))
            if current is None:
                raise SessionNotFound(sid)
            current.state.check_transition(SessionState.DELETED)
            current.state = SessionState.DELETED
            try:
                await caller.run(
                    "update_session", caller.manager.update_session(current, lease=lease)
                )
                break
            except ConflictError:
                if attempt == _FENCED_DELETE_ATTEMPTS - 1:
                    raise
    return Response(status_code=204)


# --- checkpoints ---------------------------------------------------------------------------


@router.post(
    "/sessions/{session_id}/checkpoints",
    status_code=201,
    response_model=CheckpointOut,
    responses=problem_responses(404, 409, 412, 413, 415, 422),
    summary="Append a checkpoint to the trail",
)
async def append_checkpoint(
    session_id: SessionIdPath,
    body: CheckpointIn,
    caller: Writer,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=256,
            description="a retry with the same key stores nothing and answers the first append",
        ),
    ] = None,
    if_match: IfMatch = None,
    lease_token: LeaseToken = None,
) -> Any:
    sid = _session_id(session_id)
    lease = _lease(sid, lease_token)
    versions = _versions(if_match)
    if versions is None:
        cp = await caller.run(
            "append_checkpoint",
            caller.manager.append_checkpoint(
                sid, body.name, body.data, idempotency_key=idempotency_key, lease=lease
            ),
        )
    else:
        if idempotency_key is not None:
            raise ValidationError("send either If-Match or Idempotency-Key, not both")
        added: list[SessionCheckpoint] = []

        def change(session: AgentSession) -> None:
            added.append(session.checkpoint(body.name, body.data))

        await _conditional(caller, "update_session", sid, versions, lease, change)
        cp = added[0]
    return _json(_checkpoint_json(cp), 201)


@router.get(
    "/sessions/{session_id}/checkpoints",
    response_model=CheckpointPage,
    responses=problem_responses(404, 422),
    summary="Page through the whole trail, oldest first",
)
async def list_checkpoints(
    session_id: SessionIdPath,
    caller: Reader,
    after_seq: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> Any:
    sid = _session_id(session_id)
    page = await caller.run(
        "list_checkpoints", caller.manager.list_checkpoints(sid, after_seq=after_seq, limit=limit)
    )
    nxt = page[-1].seq if len(page) == limit else None
    return _json({"items": [_checkpoint_json(cp) for cp in page], "next": nxt})


# --- leases --------------------------------------------------------------------------------


@router.get(
    "/sessions/{session_id}/lease",
    response_model=LeaseStatus,
    responses=problem_responses(404),
    summary="The live lease on the session, if any",
)
async def current_lease(session_id: SessionIdPath, caller: Reader) -> Any:
    sid = _session_id(session_id)
    lease = await caller.run("current_lease", caller.manager.current_lease(sid))
    return _json({"lease": None if lease is None else _lease_json(lease)})


@router.post(
    "/sessions/{session_id}/lease",
    status_code=201,
    response_model=LeaseOut,
    responses=problem_responses(404, 409, 415, 422),
    summary="Claim the session's lease (409 LeaseHeld while another owner holds it)",
)
async def claim(session_id: SessionIdPath, body: LeaseIn, caller: Writer) -> Any:
    sid = _session_id(session_id)
    lease = await caller.run(
        "claim", caller.manager.claim(sid, body.owner, timedelta(seconds=body.ttl_s))
    )
    return _json(_lease_json(lease), 201)


@router.put(
    "/sessions/{session_id}/lease",
    response_model=LeaseOut,
    responses=problem_responses(404, 409, 415, 422),
    summary="Renew a lease (409 LeaseLost once it is not the session's live lease)",
)
async def renew(session_id: SessionIdPath, body: LeaseRenewal, caller: Writer) -> Any:
    sid = _session_id(session_id)
    ttl = timedelta(seconds=body.ttl_s)
    current = await caller.run("current_lease", caller.manager.current_lease(sid))
    owner = current.owner if current is not None and current.token == body.token else ""
    lease = Lease(sid, owner, body.token, utcnow())
    renewed = await caller.run("renew", caller.manager.renew(lease, ttl))
    return _json(_lease_json(renewed))


@router.delete(
    "/sessions/{session_id}/lease",
    status_code=204,
    response_class=Response,
    responses=problem_responses(404, 409, 422),
    summary="Release a lease (the Lease-Token header names it)",
)
async def release(
    session_id: SessionIdPath,
    caller: Writer,
    lease_token: Annotated[
        int, Header(alias="Lease-Token", ge=0, le=INT64_MAX, description="the lease's token")
    ],
) -> Response:
    sid = _session_id(session_id)
    await caller.run("release", caller.manager.release(Lease(sid, "", lease_token, utcnow())))
    return Response(status_code=204)


# --- events --------------------------------------------------------------------------------


def _event_json(event: SessionEvent) -> bytes:
    body = {
        "kind": event.kind.value,
        "session_id": event.session_id,
        "version": event.version,
        "agent_type": event.agent_type,
        "user_id": event.user_id,
        "state": event.state,
        "at": event.at.isoformat(),
        "data": event.data,
    }
    return b"event: " + event.kind.value.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `event: <kind>` and `data: <JSON>` per session "
            "event; a comment line every 15 s keeps the stream open",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problem_responses(404, 422),
    },
    summary="Session events as they happen (Server-Sent Events)",
)
async def events(
    request: Request,
    caller: Reader,
    agent_type: Annotated[str | None, Query(max_length=256)] = None,
    user_id: Annotated[str | None, Query(max_length=256)] = None,
    session_id: Annotated[str | None, Query(description="one session (404 if unknown)")] = None,
    kinds: Annotated[
        list[EventKind] | None, Query(description="only these kinds (repeat the parameter)")
    ] = None,
) -> StreamingResponse:
    manager = caller.manager
    if session_id is not None:
        sid = _session_id(session_id)
        if await caller.run("get_session", manager.get_session(sid)) is None:
            raise SessionNotFound(sid)
    stream = manager.events(
        agent_type=agent_type, user_id=user_id, session_id=session_id, kinds=kinds
    )
    # Subscribed before the response starts: nothing published after it is missed.
    await stream.open()
    state = request.app.state
    tenant = caller.principal.tenant
    heartbeat_s: float = state.settings.sse_heartbeat_s or 15.0

    async def body() -> AsyncIterator[bytes]:
        metrics: Metrics = state.metrics
        metrics.event_streams += 1
        loop = asyncio.get_running_loop()
        last = loop.time()
        try:
            yield b": connected\n\n"
            while not state.stopping.is_set():
                try:
                    event = await stream.get(timeout=min(heartbeat_s, 0.5))
                except TimeoutError:
                    if loop.time() - last >= heartbeat_s:
                        last = loop.time()
                        yield b": keep-alive\n\n"
                    continue
                # Belt and braces: a bus that carries other tenants' events never leaks them.
                if getattr(event, "tenant", tenant) not in (tenant, None):
                    continue
                last = loop.time()
                yield _event_json(event)
        finally:
            metrics.event_streams -= 1
            with contextlib.suppress(Exception):
                await stream.close()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# --- governance ----------------------------------------------------------------------------


@router.post(
    "/purge",
    response_model=PurgeOut,
    responses=problem_responses(404, 415, 422),
    tags=["governance"],
    summary="Delete sessions for good (right to erasure): one session or every one of a user",
)
async def purge(body: PurgeIn, caller: Admin) -> Any:
    if (body.user_id is None) == (body.session_id is None):
        raise ValidationError("purge needs exactly one of user_id and session_id")
    sid = None if body.session_id is None else _session_id(body.session_id)
    count = await caller.run(
        "purge",
        caller.manager.purge(
            session_id=sid, user_id=body.user_id, actor=f"api-key:{caller.principal.key_id}"
        ),
    )
    if sid is not None and count == 0:
        raise SessionNotFound(sid)
    return _json({"purged": count})


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "JSON Lines: each session, its checkpoints, then an `end` line",
            "content": {JSONL: {"schema": {"type": "string"}}},
        },
        **problem_responses(422),
    },
    tags=["governance"],
    summary="Everything stored about a user, as JSON Lines (audited)",
)
async def export(
    caller: Admin, user_id: Annotated[str, Query(min_length=1, max_length=256)]
) -> StreamingResponse:
    lines = caller.manager.export(user_id, actor=f"api-key:{caller.principal.key_id}")

    async def body() -> AsyncIterator[bytes]:
        async with contextlib.aclosing(lines):
            async for line in lines:
                yield line

    return StreamingResponse(body(), media_type=JSONL)
