"""The in-process bus: events reach this process's subscribers only."""

from __future__ import annotations

from agent_core.bus.base import EventBus, SessionEvent

__all__ = ["InProcessBus"]


class InProcessBus(EventBus):
    async def publish(self, event: SessionEvent, *, fenced: bool = True) -> None:
        self._dispatch(event)
