"""The one lifecycle every store, cache, bus and manager shares: open, close, ``async with``."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AsyncResource"]


class AsyncResource:
    """``async with resource:`` opens it and closes it; whoever opens a resource closes it."""

    async def open(self) -> None:
        """Acquire connections, files or tasks. Default: nothing to do."""

    async def close(self) -> None:
        """Release what ``open`` acquired (never an injected client or pool)."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
