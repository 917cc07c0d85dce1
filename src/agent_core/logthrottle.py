"""Warnings that repeat (a server down for a minute fails every call) are logged once per
interval per kind, with a count of the ones held back, instead of flooding the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["LogThrottle"]


class LogThrottle:
    """``warning(key, msg, *args)`` logs the first warning of ``key``, then at most one per
    ``interval`` seconds, saying how many of that kind were held back since the last one."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = self._clock()
        if now < self._next.get(key, -float("inf")):
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._next[key] = now + self.interval
        if held:
            self.logger.warning(
                msg + " (and %d more like it in the last %.0f s)", *args, held, self.interval
            )
        else:
            self.logger.warning(msg, *args)
