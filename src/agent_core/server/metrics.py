"""Prometheus metrics in the text exposition format (0.0.4), with no dependency.

* ``agent_core_http_requests_total{method,route,status}`` and
  ``agent_core_http_request_duration_seconds{method,route}`` (a histogram): every request, by
  route template (``/v1/sessions/{session_id}``), never by raw path, so ids do not explode the
  label space; unmatched paths count as route ``"unmatched"``.
* ``agent_core_operations_total{operation,outcome}`` and
  ``agent_core_operation_duration_seconds{operation}``: each manager call a route makes
  (``outcome`` is ``ok`` or the error class).
* ``agent_core_http_errors_total{code}``: problem responses by ``code`` (the error class).
* ``agent_core_cache_reads_total{tier}``: session reads served by the in-process tier
  (``local``), the shared cache (``shared``) or the store (``store``), summed over the
  service's managers; ``agent_core_cache_errors_total{tier}`` likewise.
* ``agent_core_event_streams`` (a gauge): open ``/v1/events`` streams.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from agent_core.sessions.session_manager import SessionManager

__all__ = ["CONTENT_TYPE", "Metrics", "MetricsMiddleware"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_T = TypeVar("_T")
Labels = tuple[tuple[str, str], ...]


class _Histogram:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.count += 1
        self.sum += seconds


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """The service's counters; ``render()`` is what ``GET /metrics`` answers."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.requests: Counter[Labels] = Counter()
        self.request_seconds: defaultdict[Labels, _Histogram] = defaultdict(_Histogram)
        self.operations: Counter[Labels] = Counter()
        self.operation_seconds: defaultdict[Labels, _Histogram] = defaultdict(_Histogram)
        self.errors: Counter[str] = Counter()
        self.event_streams = 0
        self.managers: Callable[[], Iterable[SessionManager]] = list

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests[(("method", method), ("route", route), ("status", str(status)))] += 1
        self.request_seconds[(("method", method), ("route", route))].observe(seconds)

    def error(self, code: str) -> None:
        self.errors[code] += 1

    @asynccontextmanager
    async def operation(self, name: str) -> AsyncIterator[None]:
        """Count and time one manager call."""
        start = self.clock()
        outcome = "ok"
        try:
            yield
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self.operations[(("operation", name), ("outcome", outcome))] += 1
            self.operation_seconds[(("operation", name),)].observe(self.clock() - start)

    async def run(self, name: str, call: Awaitable[_T]) -> _T:
        async with self.operation(name):
            return await call

    def render(self) -> str:
        out: list[str] = []

        def counter(name: str, help_text: str, values: Iterable[tuple[Labels, float]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} counter")
            out.extend(f"{name}{_labels(labels)} {_number(v)}" for labels, v in values)

        def histogram(
            name: str, help_text: str, values: Iterable[tuple[Labels, _Histogram]]
        ) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} histogram")
            for labels, hist in values:
                running = 0
                for bound, count in zip((*BUCKETS, float("inf")), hist.buckets, strict=True):
                    running += count
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    bucket = _labels(labels, 'le="' + le + '"')
                    out.append(f"{name}_bucket{bucket} {running}")
                out.append(f"{name}_sum{_labels(labels)} {_number(hist.sum)}")
                out.append(f"{name}_count{_labels(labels)} {hist.count}")

        counter(
            "agent_core_http_requests_total",
            "HTTP requests by method, route template and status.",
            sorted(self.requests.items()),
        )
        histogram(
            "agent_core_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            sorted(self.request_seconds.items()),
        )
        counter(
            "agent_core_operations_total",
            "Session manager calls by operation and outcome (ok or the error class).",
            sorted(self.operations.items()),
        )
        histogram(
            "agent_core_operation_duration_seconds",
            "Session manager call latency by operation.",
            sorted(self.operation_seconds.items()),
        )
        counter(
            "agent_core_http_errors_total",
            "Problem responses by code (the error class).",
            sorted(((("code", code),), n) for code, n in self.errors.items()),
        )
        stats: Counter[str] = Counter()
        for manager in self.managers():
            stats.update(manager.stats)
        reads = {"local": "hits.local", "shared": "hits.shared", "store": "reads.store"}
        counter(
            "agent_core_cache_reads_total",
            "Session reads by the tier that served them (local, shared, store).",
            [((("tier", tier),), stats[key]) for tier, key in reads.items()],
        )
        cache_errors = sorted(
            (key.removeprefix("cache_errors."), n)
            for key, n in stats.items()
            if key.startswith("cache_errors.")
        )
        counter(
            "agent_core_cache_errors_total",
            "Cache tier failures (logged, counted, served from the store).",
            [((("tier", tier),), n) for tier, n in cache_errors],
        )
        out.append("# HELP agent_core_event_streams Open /v1/events streams.")
        out.append("# TYPE agent_core_event_streams gauge")
        out.append(f"agent_core_event_streams {self.event_streams}")
        return "\n".join(out) + "\n"


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and status (pure ASGI, so a
    streamed response is timed to its last byte)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = self.metrics.clock()
        status = 500
        code: str | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status, code
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request(scope["method"], template, status, self.metrics.clock() - start)
            code = scope.get("state", {}).get("problem_code")
            if status >= 400:
                self.metrics.error(code or str(status))
