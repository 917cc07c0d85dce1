"""What every cache tier agrees on: the version that marks a deleted session.

A cache is never the source of truth: it only saves reads. Every entry carries the session
``version``; nothing replaces an entry with an older version, and an invalidation leaves a
*tombstone* at the new version so that a slow reader who loaded an older copy from the store
cannot put it back afterwards. The contract of a shared tier is ``agent_core.tiers.base``.
"""

from __future__ import annotations

__all__ = ["DELETED_VERSION"]

DELETED_VERSION = 2**62
"""Tombstone version of a deleted session: newer than any version a session can reach."""
