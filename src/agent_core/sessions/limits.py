"""Every input rule of the manager, written once: names, payloads, limits, leases, TTLs, options.

Each per-call check raises a ``ValidationError`` subclass (or ``LeaseLost`` for a lease of
another session) before anything is written; the JSON rules themselves live in
``agent_core.codec``. Constructor options are checked by ``check_options`` and raise
``ConfigurationError`` (a ``ValueError``), as every other constructor option of agent-core does.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any, TypeGuard

from agent_core import codec
from agent_core.errors import (
    ConfigurationError,
    InvalidValue,
    LeaseLost,
    PayloadTooLarge,
    ValidationError,
)
from agent_core.sessions.session_models import AgentSession, Lease, SessionState

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_CHECKPOINT_WINDOW",
    "MAX_LEASE_TTL",
    "MAX_LIMIT",
    "MAX_PAYLOAD_BYTES",
    "MAX_RECORD_NAME",
    "MAX_SESSION_TTL_HOURS",
    "MIN_PAYLOAD_BYTES",
    "check_after_seq",
    "check_batch_size",
    "check_lease",
    "check_limit",
    "check_max_age",
    "check_name",
    "check_options",
    "check_payload",
    "check_record_name",
    "check_record_value",
    "check_session",
    "check_session_ttl_hours",
    "check_ttl",
]

_MAX_NAME = 256
MAX_LIMIT = 10_000
"""Most rows one listing call returns (``list_sessions``, ``list_checkpoints``)."""
MAX_BATCH_SIZE = 100_000
"""Largest batch of the stale sweep and the lease reaper (each batch is one transaction)."""
MAX_CHECKPOINT_WINDOW = 10_000
"""Most checkpoints a ``get_session`` returns (and the caches keep) per session."""
MIN_PAYLOAD_BYTES = 2
"""``max_payload_bytes`` must at least admit ``{}``."""
MAX_PAYLOAD_BYTES = 64 * 2**20
"""Largest ``max_payload_bytes``: 64 MiB, well inside what PostgreSQL ``jsonb``, Valkey values
and the in-process tier's byte bound hold."""
MAX_SESSION_TTL_HOURS = 100 * 365 * 24
"""Largest ``session_ttl_hours`` (a hundred years): any more overflows the cache TTLs."""
MAX_LEASE_TTL = timedelta(days=365)
"""Longest lease: a year, far inside every backend's timestamp range."""


def check_lease(session_id: str, lease: Lease | None) -> None:
    if lease is not None and lease.session_id != session_id:
        raise LeaseLost(f"the lease is for session {lease.session_id}, not {session_id}")


def check_name(value: object, what: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, not {type(value).__name__}")
    if not value and not allow_empty:
        raise ValidationError(f"{what} must not be empty")
    if len(value) > _MAX_NAME:
        raise ValidationError(f"{what} is longer than {_MAX_NAME} characters")
    return codec.check_text(value, what)


MAX_RECORD_NAME = 1024
"""Longest record scope or key, in characters."""


def check_record_name(value: object, what: str, *, allow_empty: bool = False) -> str:
    """A record scope, key, prefix or cursor: a string of valid Unicode, at most
    ``MAX_RECORD_NAME`` characters, without U+0000 (PostgreSQL text cannot hold it, and an
    escape would break the code point order of keys)."""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, not {type(value).__name__}")
    if not value and not allow_empty:
        raise ValidationError(f"{what} must not be empty")
    if len(value) > MAX_RECORD_NAME:
        raise ValidationError(f"{what} is longer than {MAX_RECORD_NAME} characters")
    if "\x00" in value:
        raise InvalidValue(f"{what} contains U+0000, which records do not store")
    return codec.check_text(value, what)


def check_record_value(value: object, what: str, max_bytes: int) -> bytes:
    """A record value: ``bytes`` (or a ``bytearray``/``memoryview``, copied) of at most
    ``max_bytes``."""
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise InvalidValue(f"{what} must be bytes, not {type(value).__name__}")
    if len(value) > max_bytes:
        raise PayloadTooLarge(f"{what} is {len(value)} bytes, over the limit of {max_bytes}")
    return value


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_limit(limit: object) -> None:
    if not _is_int(limit) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be an integer between 1 and {MAX_LIMIT}, not {limit!r}")


def check_after_seq(after_seq: object) -> None:
    if not _is_int(after_seq) or after_seq < 0:
        raise ValidationError(f"after_seq must be an integer >= 0, not {after_seq!r}")


def check_batch_size(batch_size: object) -> None:
    if not _is_int(batch_size) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValidationError(
            f"batch_size must be an integer between 1 and {MAX_BATCH_SIZE}, not {batch_size!r}"
        )


def check_ttl(ttl: object) -> None:
    if not isinstance(ttl, timedelta):
        raise ValidationError(f"lease ttl must be a timedelta, not {type(ttl).__name__}")
    if ttl <= timedelta(0):
        raise ValidationError("lease ttl must be positive")
    if ttl > MAX_LEASE_TTL:
        raise ValidationError(f"lease ttl must be at most {MAX_LEASE_TTL.days} days")


def check_max_age(max_age: object) -> None:
    if not isinstance(max_age, timedelta):
        raise ValidationError(f"max_age must be a timedelta, not {type(max_age).__name__}")
    if max_age < timedelta(0):
        raise ValidationError("max_age must not be negative")


def check_payload(value: Any, what: str, max_bytes: int) -> None:
    codec.encode_object(value, what=what, max_bytes=max_bytes)


def check_session(session: AgentSession, max_bytes: int) -> None:
    """Everything ``create_session`` and ``update_session`` store, checked before any write."""
    codec.validate_session_id(session.session_id)
    check_name(session.agent_type, "agent_type")
    check_name(session.user_id, "user_id", allow_empty=True)
    if not isinstance(session.state, SessionState):
        raise ValidationError(f"state must be a SessionState, not {session.state!r}")
    check_payload(session.context, "context", max_bytes)
    check_payload(session.metadata, "metadata", max_bytes)
    for cp in session.pending_checkpoints:
        check_name(cp.name, "checkpoint name")
        check_payload(cp.data, "checkpoint data", max_bytes)


def _int_option(value: object, name: str, low: int, high: int) -> None:
    if not _is_int(value) or not low <= value <= high:
        raise ConfigurationError(
            f"{name} must be an integer between {low} and {high}, not {value!r}"
        )


def check_session_ttl_hours(hours: object) -> None:
    if (
        not isinstance(hours, int | float)
        or isinstance(hours, bool)
        or not math.isfinite(hours)
        or not 0 < hours <= MAX_SESSION_TTL_HOURS
    ):
        raise ConfigurationError(
            f"session_ttl_hours must be a number above 0 and at most {MAX_SESSION_TTL_HOURS},"
            f" not {hours!r}"
        )


def check_options(
    *,
    session_ttl_hours: object,
    checkpoint_window: object,
    max_payload_bytes: object,
    cleanup_batch_size: object,
) -> None:
    """The manager's constructor options; ``ConfigurationError`` for the first bad one."""
    check_session_ttl_hours(session_ttl_hours)
    _int_option(checkpoint_window, "checkpoint_window", 1, MAX_CHECKPOINT_WINDOW)
    _int_option(max_payload_bytes, "max_payload_bytes", MIN_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES)
    _int_option(cleanup_batch_size, "cleanup_batch_size", 1, MAX_BATCH_SIZE)
