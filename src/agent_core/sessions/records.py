"""Records: opaque byte values under ``(scope, key)``, for what the session model lacks.

Framework integrations keep their own data here (LangGraph checkpoints, blobs and writes,
OpenAI Agents SDK items, ADK app and user state), and so does the HTTP service (API keys). A
record may be attached to a session (``session_id``, which must then be live) and to a user
(``user_id``): ``purge`` of the session or of the user erases it, and ``export`` of the user
lists it. Records go straight to the store (no cache tier holds them) and are sealed at rest
like the rest of a session when the manager has ``encryption_keys``.

The rules (checked before anything is written, as for every other call):

* a scope or key is a non-empty string of valid Unicode without U+0000, at most
  ``limits.MAX_RECORD_NAME`` (1024) characters; keys and scopes sort by code point;
* a value is ``bytes`` of at most the manager's ``max_payload_bytes``;
* one call takes at most ``limits.MAX_LIMIT`` (10 000) items or keys, each key once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from agent_core import codec
from agent_core.errors import ValidationError
from agent_core.sessions import limits
from agent_core.stores.base import SEQ_KEY_DIGITS, RecordWrite

if TYPE_CHECKING:
    from agent_core.stores.base import SessionStore

__all__ = ["RecordsAPI", "check_items", "check_record_write"]


def _check_count(count: int, what: str) -> None:
    if count > limits.MAX_LIMIT:
        raise ValidationError(f"at most {limits.MAX_LIMIT} {what} per call, not {count}")


def _check_keys(keys: Sequence[str], what: str) -> list[str]:
    if isinstance(keys, str | bytes):
        raise ValidationError(f"{what} must be a sequence of keys, not one {type(keys).__name__}")
    out = [limits.check_record_name(key, "record key") for key in keys]
    _check_count(len(out), what)
    return out


def _check_cursor(value: str | None, what: str) -> None:
    if value is not None:
        limits.check_record_name(value, what, allow_empty=True)


def _check_user_and_keep(user_id: object, keep_existing: object) -> None:
    if user_id is not None:
        limits.check_name(user_id, "user_id", allow_empty=True)
    if not isinstance(keep_existing, bool):
        raise ValidationError(f"keep_existing must be a bool, not {keep_existing!r}")


def check_items(
    items: Sequence[tuple[str, bytes]], max_bytes: int, call: str, *, key_room: int = 0
) -> list[tuple[str, bytes]]:
    """``items`` checked as ``(key, value)`` pairs of distinct keys, each key short enough to
    take ``key_room`` more characters (a seq prefix)."""
    if isinstance(items, str | bytes):
        raise ValidationError("items must be a sequence of (key, value) pairs")
    checked: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise ValidationError(f"each item must be a (key, value) pair, not {item!r:.60}")
        key = limits.check_record_name(item[0], "record key")
        if len(key) + key_room > limits.MAX_RECORD_NAME:
            raise ValidationError(
                f"record key {key!r:.80} is longer than {limits.MAX_RECORD_NAME - key_room}"
                f" characters (its stored key takes a {key_room}-digit seq prefix)"
            )
        if key in seen:
            raise ValidationError(f"record key {key!r:.80} given twice in one {call}")
        seen.add(key)
        value = limits.check_record_value(item[1], "record value", max_bytes)
        checked.append((key, value))
    _check_count(len(checked), "items")
    return checked


def check_record_write(records: object, max_bytes: int) -> RecordWrite:
    """A validated copy of the ``records`` argument of ``append_checkpoint``."""
    if not isinstance(records, RecordWrite):
        raise ValidationError(f"records must be a RecordWrite, not {type(records).__name__}")
    limits.check_record_name(records.scope, "record scope")
    if not isinstance(records.key_prefix_seq, bool):
        raise ValidationError(f"key_prefix_seq must be a bool, not {records.key_prefix_seq!r}")
    room = SEQ_KEY_DIGITS if records.key_prefix_seq else 0
    items = check_items(records.items, max_bytes, "append_checkpoint", key_room=room)
    _check_user_and_keep(records.user_id, records.keep_existing)
    return replace(records, items=items)


class RecordsAPI:
    """The records part of ``SessionManager``'s API (it inherits this class). Each call
    validates, then goes to the store in one transaction."""

    store: SessionStore
    max_payload_bytes: int

    if TYPE_CHECKING:

        async def open(self) -> None: ...  # SessionManager.open

    async def put_records(
        self,
        scope: str,
        items: Sequence[tuple[str, bytes]],
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        keep_existing: bool = False,
    ) -> int:
        """Write ``(key, value)`` pairs into ``scope`` in one transaction; returns how many keys
        were written.

        A stored key is replaced, unless ``keep_existing`` (insert-if-absent: it keeps its
        value and is not counted). With ``session_id`` the records belong to that session (a
        purge of it erases them) and it must be live, else ``SessionNotFound`` and nothing is
        written; with ``user_id`` they belong to that user (``purge(user_id=...)`` erases
        them, ``export`` lists them). Each key at most once per call.
        """
        limits.check_record_name(scope, "record scope")
        checked = check_items(items, self.max_payload_bytes, "put_records")
        if session_id is not None:
            codec.validate_session_id(session_id)
        _check_user_and_keep(user_id, keep_existing)
        await self.open()
        return await self.store.put_records(
            scope, checked, session_id=session_id, user_id=user_id, keep_existing=keep_existing
        )

    async def get_records(self, scope: str, keys: Sequence[str]) -> dict[str, bytes]:
        """The values of those of ``keys`` stored in ``scope``; missing keys are left out."""
        limits.check_record_name(scope, "record scope")
        wanted = _check_keys(keys, "keys")
        await self.open()
        if not wanted:
            return {}
        return await self.store.get_records(scope, wanted)

    async def list_records(
        self,
        scope: str,
        *,
        prefix: str = "",
        after: str | None = None,
        before: str | None = None,
        limit: int = 1000,
        descending: bool = False,
    ) -> list[tuple[str, bytes]]:
        """``(key, value)`` pairs of ``scope`` whose key starts with ``prefix`` and lies
        strictly between ``after`` and ``before`` (``None``: unbounded), by code point order
        (largest first with ``descending``), at most ``limit`` (1 .. 10 000).

        Page forward with ``after=<last key>`` (or backward, descending, with
        ``before=<last key>``).
        """
        limits.check_record_name(scope, "record scope")
        limits.check_record_name(prefix, "prefix", allow_empty=True)
        _check_cursor(after, "after")
        _check_cursor(before, "before")
        limits.check_limit(limit)
        if not isinstance(descending, bool):
            raise ValidationError(f"descending must be a bool, not {descending!r}")
        await self.open()
        return await self.store.list_records(
            scope, prefix=prefix, after=after, before=before, limit=limit, descending=descending
        )

    async def delete_records(
        self,
        scope: str,
        *,
        keys: Sequence[str] | None = None,
        prefix: str | None = None,
    ) -> int:
        """Delete ``keys`` of ``scope``, or the keys starting with ``prefix``, or (neither)
        the whole scope, in one transaction; returns how many were deleted. Of concurrent
        deletions of one key exactly one counts it, so "delete returned 1" is an atomic pop.
        """
        limits.check_record_name(scope, "record scope")
        if keys is not None and prefix is not None:
            raise ValidationError("delete_records takes keys or a prefix, not both")
        wanted = None if keys is None else _check_keys(keys, "keys")
        if prefix is not None:
            limits.check_record_name(prefix, "prefix", allow_empty=True)
        await self.open()
        if wanted is not None and not wanted:
            return 0
        return await self.store.delete_records(scope, keys=wanted, prefix=prefix)

    async def list_scopes(
        self, prefix: str = "", *, limit: int = 1000, after: str | None = None
    ) -> list[str]:
        """Distinct scopes holding at least one record that start with ``prefix``, strictly
        after ``after``, in code point order, at most ``limit`` (1 .. 10 000)."""
        limits.check_record_name(prefix, "prefix", allow_empty=True)
        _check_cursor(after, "after")
        limits.check_limit(limit)
        await self.open()
        return await self.store.list_scopes(prefix, limit=limit, after=after)
