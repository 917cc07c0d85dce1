"""Every key and channel name agent-core uses in a shared cache, in one place.

Keys keep the reference design's format, ``{namespace}:session:{id}``, so they shard by
session id on Valkey Cluster (no multi-key operation ever spans two sessions).
"""

from __future__ import annotations

__all__ = ["events_channel", "session_key"]


def session_key(namespace: str, session_id: str) -> str:
    return f"{namespace}:session:{session_id}"


def events_channel(namespace: str) -> str:
    """The pub/sub channel that carries session events, and so cache invalidation."""
    return f"{namespace}:events"
