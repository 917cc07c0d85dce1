"""What the integration benchmarks share: timing a set of workers' calls, and a PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Jobs = list[list[Callable[[], Awaitable[Any]]]]
"""One list of calls per worker."""


@dataclass
class Timing:
    """The latency of every call of a timed run (seconds) and the run's wall time."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Calls per second."""
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        """The ``q`` quantile of the latencies, in milliseconds."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def timed(jobs: Jobs) -> Timing:
    """Run each worker's calls in order, the workers at once; time every call and the whole."""
    timing = Timing()

    async def worker(mine: list[Callable[[], Awaitable[Any]]]) -> None:
        for job in mine:
            start = time.perf_counter()
            await job()
            timing.latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(worker(mine) for mine in jobs))
    timing.seconds = time.perf_counter() - started
    return timing


@contextlib.contextmanager
def postgres(url: str | None, **server_options: Any) -> Iterator[str]:
    """``url`` when given, else a throwaway dev server's DSN for the length of the block
    (``server_options`` go to ``agent_core.devservers.postgres.PostgresServer``)."""
    if url is not None:
        yield url
        return
    from agent_core.devservers.postgres import PostgresServer

    with PostgresServer(**server_options) as server:
        yield server.dsn
