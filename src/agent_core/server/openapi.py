"""The OpenAPI document: every operation's error responses as ``application/problem+json``.

FastAPI describes bodies and parameters; this module adds the ``Problem`` schema and, on every
operation, a ``default`` problem response (so every status a route can answer is described),
the listed specific ones, and 401/403 on every authenticated route.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from agent_core.server.problems import PROBLEM_MEDIA_TYPE, Problem

__all__ = ["install", "problem_responses"]

_REF = {"$ref": "#/components/schemas/Problem"}
_DESCRIPTIONS = {
    400: "the request cannot be read",
    401: "no, unknown or revoked API key",
    403: "the key's role does not allow this call",
    404: "no such session in your tenant (or not a session id)",
    409: "a conflict: lease held or lost, concurrent write, or a transition not allowed",
    412: "If-Match names a version the session is no longer at",
    413: "a value or the body is too large",
    415: "the body is not JSON",
    422: "input outside the rules",
    503: "the store is unavailable: retry",
}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": _REF}}}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: these statuses, plus 401, 403 and 503, as problems."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, 401, 403, 503}):
        out[status] = _problem(_DESCRIPTIONS[status])
    out["default"] = _problem("any other error, as a problem")
    return out


_SESSION_REF = "#/components/schemas/SessionOut"
_ETAG = {
    "description": 'the session\'s version as a strong entity tag, e.g. "7" (send it back in'
    " If-Match)",
    "schema": {"type": "string"},
}


def _document_etag(response: dict[str, Any] | None) -> None:
    """Responses that carry a session also carry its version as ``ETag``."""
    if response is None:
        return
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    if schema.get("$ref") == _SESSION_REF:
        response.setdefault("headers", {})["ETag"] = _ETAG


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = Problem.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        for methods in schema.get("paths", {}).values():
            for operation in methods.values():
                responses = operation.setdefault("responses", {})
                responses.setdefault("default", _problem("any error, as a problem"))
                for status in ("200", "201"):
                    _document_etag(responses.get(status))
                # FastAPI's own 422 schema is replaced by the problem every 422 really is.
                if "422" in responses:
                    responses["422"] = _problem(_DESCRIPTIONS[422])
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
