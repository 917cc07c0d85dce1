"""JSON values: strict validation and fast (de)serialization with orjson.

agent-core stores only plain JSON: objects with string keys, arrays, strings, finite numbers,
booleans and null. Anything else (a datetime, a set, a custom object, NaN, an infinity) is
rejected *before* anything is written, instead of being coerced or stored half-way.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from agent_core.errors import InvalidSessionId, PayloadTooLarge, ValidationError

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "dumps",
    "encode_object",
    "loads",
    "merge_patch",
    "validate_session_id",
]

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
_MAX_DEPTH = 256
_INT_LIMIT = 2**63


def _check(value: Any, path: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ValidationError(f"{path}: nested deeper than {_MAX_DEPTH} levels")
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return
    if kind is int:
        if not -_INT_LIMIT <= value < _INT_LIMIT:
            raise ValidationError(f"{path}: integer {value} does not fit in 64 bits")
        return
    if kind is float:
        if not math.isfinite(value):
            raise ValidationError(f"{path}: {value!r} is not a JSON number")
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise ValidationError(f"{path}: object key {key!r} is not a string")
            _check(item, f"{path}.{key}", depth + 1)
        return
    if kind is list:
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]", depth + 1)
        return
    raise ValidationError(f"{path}: {kind.__name__} is not a JSON value")


def encode_object(value: Any, *, what: str, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """Validate that ``value`` is a JSON object and return its UTF-8 encoding.

    Raises ``ValidationError`` for anything that is not plain JSON and ``PayloadTooLarge`` when
    the encoding exceeds ``max_bytes``.
    """
    if type(value) is not dict:
        raise ValidationError(f"{what} must be a JSON object (dict), not {type(value).__name__}")
    _check(value, what, 0)
    encoded = orjson.dumps(value)
    if len(encoded) > max_bytes:
        raise PayloadTooLarge(f"{what} is {len(encoded)} bytes, over the limit of {max_bytes}")
    return encoded


def dumps(value: Any) -> bytes:
    """Encode an already validated value."""
    return orjson.dumps(value)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(data)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` if it is a canonical (lower-case) UUID string, else raise
    ``InvalidSessionId``."""
    if type(session_id) is not str or _UUID.fullmatch(session_id) is None:
        raise InvalidSessionId(f"malformed session id {session_id!r}: expected a UUID string")
    return session_id


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply an RFC 7396 JSON merge patch and return the result (``target`` is not modified)."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif type(value) is dict:
            current = result.get(key)
            result[key] = merge_patch(current if type(current) is dict else {}, value)
        else:
            result[key] = value
    return result
