"""The input rules for JSON values, in one place, and fast (de)serialization with orjson.

agent-core stores plain JSON only, and gives back exactly what it accepted (value and type) on
every backend: memory, SQLite and PostgreSQL. A value that breaks a rule is refused with an
``InvalidValue`` (a ``ValidationError``) naming the field and the path inside it, e.g.
``context["a"][3]``, before anything is written. The rules:

* Types: ``dict`` with ``str`` keys, ``list``, ``str``, ``int``, ``float``, ``bool`` and ``None``,
  exactly (no subclasses). A ``tuple`` is refused: it would read back as a list.
* Depth: at most ``MAX_DEPTH`` (128) nested containers; the top-level object is level 1.
* Strings (values and keys) are valid Unicode: no lone surrogate (U+D800..U+DFFF). U+0000 is
  fine.
* Integers lie in ``INT_MIN..INT_MAX``, the 64-bit signed range every backend round-trips.
* Floats are finite and not ``-0.0`` (PostgreSQL's ``jsonb`` has no negative zero; it would
  read back as ``0.0``). Every other float reads back as the same float: the PostgreSQL store
  writes the floats that ``jsonb`` would otherwise turn into integers (``abs(x) >= 2**53``) in
  plain decimal notation with a fraction (``1e16`` as ``10000000000000000.0``).
* Size: the compact JSON encoding (orjson's) is at most ``max_bytes`` (the manager's
  ``max_payload_bytes``), for each value written and for the context a ``patch_context`` would
  leave (``PayloadTooLarge``).

Names (agent type, user id, checkpoint names, lease owners, ...) follow the string rule too
(``check_text``). Object key order is kept by memory and SQLite; PostgreSQL's ``jsonb`` keeps
keys sorted, so a read there may list them in another order (equal dicts all the same).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

import orjson

from agent_core.errors import InvalidSessionId, InvalidValue, PayloadTooLarge

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "INT_MAX",
    "INT_MIN",
    "MAX_DEPTH",
    "check_text",
    "dumps",
    "encode_object",
    "encode_patched",
    "loads",
    "merge_patch",
    "validate_session_id",
    "validate_value",
]

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_DEPTH = 128
"""Most nested containers in a value (the top-level object is level 1). orjson refuses more
than 254 and cached sessions wrap checkpoint data in three more levels; PostgreSQL's merge patch
recurses once per level."""
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1

_TEXT_OK = frozenset({str, bool, type(None)})
_KEY_SHOWN = 40


class _Refused(Exception):
    """A rule broken somewhere inside a value; ``path`` collects the way back to the root."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str | int] = []


def _key_text(key: str) -> str:
    # json.dumps (ASCII mode) quotes any str, lone surrogates included, on one line.
    shown = key if len(key) <= _KEY_SHOWN else key[:_KEY_SHOWN] + "..."
    return json.dumps(shown)


def _where(what: str, path: list[str | int]) -> str:
    """``what`` followed by the path, root first: ``context["a"][3]``."""
    parts = [what]
    for step in reversed(path):
        parts.append(f"[{step}]" if isinstance(step, int) else f"[{_key_text(step)}]")
    return "".join(parts)


def _int_reason(value: int) -> str:
    shown = str(value) if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"
    return (
        f"{shown} is outside the 64-bit signed range {INT_MIN}..{INT_MAX} that every backend"
        " stores exactly"
    )


def _float_reason(value: float) -> str:
    if not math.isfinite(value):
        return f"{value!r} is not a JSON number (floats must be finite)"
    return "-0.0 (negative zero) cannot be stored: PostgreSQL reads it back as 0.0; use 0.0"


def _type_reason(value: Any) -> str:
    name = type(value).__name__
    if type(value) is tuple:
        return "tuple is not a JSON type: use a list (a tuple would read back as a list)"
    return f"{name} is not a JSON type (dict, list, str, int, float, bool or None)"


def _bad_scalar(item: Any) -> str | None:
    """Why a non-container ``item`` breaks a rule, or ``None`` if it is fine (strings are
    checked for Unicode separately)."""
    kind = type(item)
    if kind in _TEXT_OK:
        return None
    if kind is int:
        return None if INT_MIN <= item <= INT_MAX else _int_reason(item)
    if kind is float:
        if math.isfinite(item) and (item != 0.0 or math.copysign(1.0, item) > 0):
            return None
        return _float_reason(item)
    return _type_reason(item)


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _walk(value: dict[str, Any] | list[Any], depth: int) -> None:
    """Check every rule but the Unicode one inside ``value``, a container at level ``depth``."""
    is_dict = type(value) is dict
    pairs: Iterable[tuple[Any, Any]] = (
        value.items() if isinstance(value, dict) else enumerate(value)
    )
    for key, item in pairs:
        if is_dict and type(key) is not str:
            raise _Refused(f"object key {_short(key)} is not a string")
        kind = type(item)
        if kind in _TEXT_OK:
            continue
        try:
            if kind is dict or kind is list:
                if depth >= MAX_DEPTH:
                    raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
                _walk(item, depth + 1)
            else:
                reason = _bad_scalar(item)
                if reason is not None:
                    raise _Refused(reason)
        except _Refused as exc:
            exc.path.append(key)
            raise


def _surrogate(text: str) -> str | None:
    """Why ``text`` is not valid Unicode, or ``None``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"lone surrogate U+{ord(text[exc.start]):04X} at index {exc.start}"
    return None


def _find_bad_text(value: Any) -> None:
    """Raise ``_Refused`` at the first string (or key) in ``value`` that is not valid Unicode."""
    if type(value) is str:
        reason = _surrogate(value)
        if reason is not None:
            raise _Refused(f"string is not valid Unicode: {reason}")
    elif type(value) is dict:
        for key, item in value.items():
            reason = _surrogate(key)
            if reason is not None:
                raise _Refused(f"object key {_key_text(key)} is not valid Unicode: {reason}")
            try:
                _find_bad_text(item)
            except _Refused as exc:
                exc.path.append(key)
                raise
    elif type(value) is list:
        for index, item in enumerate(value):
            try:
                _find_bad_text(item)
            except _Refused as exc:
                exc.path.append(index)
                raise


def validate_value(value: Any, *, what: str) -> bytes:
    """Check ``value`` (any JSON value) against every rule but size; return its encoding."""
    try:
        if type(value) is dict or type(value) is list:
            _walk(value, 1)
        else:
            reason = _bad_scalar(value)
            if reason is not None:
                raise _Refused(reason)
    except _Refused as exc:
        raise InvalidValue(f"{_where(what, exc.path)}: {exc.reason}") from None
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        # After the walk, the only thing orjson can still refuse is a lone surrogate.
        try:
            _find_bad_text(value)
        except _Refused as found:
            raise InvalidValue(f"{_where(what, found.path)}: {found.reason}") from None
        raise InvalidValue(f"{what}: cannot be encoded as JSON: {exc}") from None


def encode_object(value: Any, *, what: str, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """Check that ``value`` is a JSON object within every rule and return its UTF-8 encoding.

    Raises ``InvalidValue`` for a broken rule (the message names ``what`` and the path inside
    it) and ``PayloadTooLarge`` when the encoding exceeds ``max_bytes``.
    """
    if type(value) is not dict:
        raise InvalidValue(f"{what} must be a JSON object (dict), not {type(value).__name__}")
    encoded = validate_value(value, what=what)
    if len(encoded) > max_bytes:
        raise PayloadTooLarge(f"{what} is {len(encoded)} bytes, over the limit of {max_bytes}")
    return encoded


def encode_patched(
    merged: dict[str, Any], max_bytes: int | None, *, what: str = "context"
) -> bytes:
    """The encoding of the context a ``patch_context`` would leave; ``PayloadTooLarge`` (so the
    store writes nothing) when it is over ``max_bytes``. ``merged`` is already valid: it merges
    a valid patch into a valid context."""
    encoded = orjson.dumps(merged)
    if max_bytes is not None and len(encoded) > max_bytes:
        raise PayloadTooLarge(
            f"{what} after the patch would be {len(encoded)} bytes, over the limit of {max_bytes}"
        )
    return encoded


def check_text(value: str, what: str) -> str:
    """Refuse a string that is not valid Unicode (a lone surrogate); return it otherwise."""
    if not value.isascii():
        reason = _surrogate(value)
        if reason is not None:
            raise InvalidValue(f"{what} is not valid Unicode: {reason}")
    return value


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
