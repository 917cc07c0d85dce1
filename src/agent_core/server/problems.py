"""Errors as RFC 9457 problem details (``application/problem+json``), mapped in one table.

Every library error class maps to exactly one status here (``STATUS``); the first entry whose
class the error is an instance of wins, so subclasses come before their bases. A problem's
``type`` is ``/docs/errors#<slug>`` on the same server (a page generated from this table), its
``code`` the error class's name. Request validation errors (FastAPI/pydantic), malformed JSON,
oversized bodies and unknown routes are problems too; nothing a client sends can turn into a
500.
"""

from __future__ import annotations

import html
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from agent_core import errors
from agent_core.server.keys import AuthenticationError, KeyNotFound, PermissionDenied

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "STATUS",
    "BadRequest",
    "DeclaredSizeLimit",
    "PreconditionFailed",
    "Problem",
    "UnsupportedMediaType",
    "install",
    "problem_response",
    "status_of",
]

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "/docs/errors#"


class PreconditionFailed(errors.AgentCoreError):
    """``If-Match`` named a version the session is no longer at."""


class UnsupportedMediaType(errors.AgentCoreError):
    """A request body that is not JSON (or not merge-patch JSON where that is asked for)."""


class BadRequest(errors.AgentCoreError):
    """A request the server cannot read at all (a malformed header, say)."""


@dataclass(frozen=True)
class _Entry:
    error: type[BaseException]
    status: int
    title: str
    meaning: str


STATUS: tuple[_Entry, ...] = (
    _Entry(AuthenticationError, 401, "Unauthorized", "no, unknown or revoked API key"),
    _Entry(PermissionDenied, 403, "Forbidden", "the key's role does not allow the call"),
    _Entry(
        errors.SessionNotFound,
        404,
        "Not Found",
        "no live session has this id in your tenant (unknown, deleted, another tenant's, or "
        "not a session id at all)",
    ),
    _Entry(KeyNotFound, 404, "Not Found", "no API key has this id"),
    _Entry(errors.LeaseHeld, 409, "Conflict", "another owner holds a live lease"),
    _Entry(errors.LeaseLost, 409, "Conflict", "the Lease-Token is no longer the session's lease"),
    _Entry(errors.ConflictError, 409, "Conflict", "a concurrent write won (or the id is taken)"),
    _Entry(errors.InvalidTransition, 409, "Conflict", "the state machine does not allow it"),
    _Entry(PreconditionFailed, 412, "Precondition Failed", "If-Match names an older version"),
    _Entry(errors.PayloadTooLarge, 413, "Content Too Large", "a value or body over the limit"),
    _Entry(UnsupportedMediaType, 415, "Unsupported Media Type", "send application/json"),
    _Entry(BadRequest, 400, "Bad Request", "the request cannot be read"),
    _Entry(errors.ValidationError, 422, "Unprocessable Content", "input outside the rules"),
    _Entry(errors.StoreUnavailable, 503, "Service Unavailable", "the store did not answer"),
    _Entry(errors.NotOpenError, 503, "Service Unavailable", "the service is shutting down"),
    _Entry(errors.CacheUnavailable, 503, "Service Unavailable", "a cache tier failed"),
    _Entry(errors.AgentCoreError, 500, "Internal Server Error", "a server-side fault"),
)
"""Library error class -> status, most specific first (the one place that decides)."""

_HTTP_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(BaseModel):
    """An RFC 9457 problem; ``code`` is the error class, ``errors`` lists validation errors."""

    type: str = Field(description="URI of the problem type's documentation")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    code: str = Field(description="the error class, e.g. SessionNotFound")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="for validation errors: where and what"
    )


def _slug(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def status_of(error: BaseException) -> tuple[int, str]:
    """``(status, title)`` of a library error: the first matching entry of ``STATUS``."""
    for entry in STATUS:
        if isinstance(error, entry.error):
            return entry.status, entry.title
    return 500, "Internal Server Error"


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        # A lone surrogate somewhere in an echoed name: ASCII-escaped JSON carries it.
        return json.dumps(body, ensure_ascii=True, default=str).encode()


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": TYPE_BASE + _slug(code),
        "title": title or _HTTP_TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if extra:
        body.update(extra)
    return Response(_dumps(body), status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _note(request: Request, code: str) -> None:
    # Read by the metrics middleware: errors by type.
    request.scope.setdefault("state", {})["problem_code"] = code


def error_response(error: BaseException) -> Response:
    status, title = status_of(error)
    headers = {"Retry-After": "1"} if status == 503 else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="agent-core"'}
    if status >= 500:
        logger.error("%s: %s", type(error).__name__, error)
    return problem_response(status, type(error).__name__, str(error), title=title, headers=headers)


def _loc(loc: Any) -> list[Any]:
    return [part if isinstance(part, int) else str(part) for part in loc]


async def _agent_core_error(request: Request, exc: Exception) -> Response:
    _note(request, type(exc).__name__)
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    found = [
        {"loc": _loc(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": err.get("type")}
        for err in exc.errors()
    ]
    first = found[0] if found else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"])
    detail = f"{where}: {first['msg']}" if where else str(first["msg"])
    _note(request, "RequestValidationError")
    return problem_response(422, "RequestValidationError", detail, extra={"errors": found})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "RouteNotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}.get(
        exc.status_code, "HTTPError"
    )
    headers = dict(exc.headers) if exc.headers else None
    _note(request, code)
    return problem_response(exc.status_code, code, str(exc.detail), headers=headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    _note(request, "InternalError")
    return problem_response(500, "InternalError", "an unexpected error; see the server log")


def install(app: FastAPI) -> None:
    """Register the handlers and the ``/docs/errors`` page on ``app``."""
    app.add_exception_handler(errors.AgentCoreError, _agent_core_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

    @app.get("/docs/errors", include_in_schema=False)
    async def problem_types() -> HTMLResponse:
        return HTMLResponse(render_types())


class DeclaredSizeLimit:
    """Refuses a body whose ``Content-Length`` is over the limit with a 413 problem before
    reading it (FastAPI's ``max_body_size`` also stops a chunked body once it grows past)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length":
                    declared = value.strip()
                    if declared.isdigit() and int(declared) > self.max_body_bytes:
                        scope.setdefault("state", {})["problem_code"] = "PayloadTooLarge"
                        response = problem_response(
                            413,
                            "PayloadTooLarge",
                            f"the body is larger than {self.max_body_bytes} bytes",
                            headers={"Connection": "close"},
                        )
                        await response(scope, receive, send)
                        return
        await self.app(scope, receive, send)


def render_types() -> str:
    rows = [(entry.error.__name__, entry.status, entry.title, entry.meaning) for entry in STATUS]
    rows += [
        ("RequestValidationError", 422, "Unprocessable Content", "the request breaks the schema"),
        ("RouteNotFound", 404, "Not Found", "no such route"),
        ("MethodNotAllowed", 405, "Method Not Allowed", "the route has no such method"),
        ("InternalError", 500, "Internal Server Error", "a bug; see the server log"),
    ]
    items = "\n".join(
        f'<tr id="{_slug(name)}"><td><code>{html.escape(name)}</code></td><td>{status}</td>'
        f"<td>{html.escape(title)}</td><td>{html.escape(meaning)}</td></tr>"
        for name, status, title, meaning in rows
    )
    return (
        "<!doctype html><title>agent-core problem types</title><h1>Problem types</h1>"
        "<table><tr><th>code</th><th>status</th><th>title</th><th>meaning</th></tr>"
        f"{items}</table>"
    )
