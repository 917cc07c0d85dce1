"""The report of one run: a table on stdout, a JSON file and a PNG chart.

Ratios compare a row with the raw reference of the same workload in the same run:
``x ops/s`` = row throughput / reference throughput (higher is better, 1.0 = as fast as the
raw driver); ``x p50`` and ``x p99`` = row latency / reference latency (lower is better).
The reference of a row on SQLite is raw-sqlite; otherwise raw-valkey for W3 and raw-pg for the
rest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.workloads import Result

__all__ = ["Target", "evaluate_targets", "format_table", "format_targets", "write_chart"]

WORKLOAD_ORDER = [
    "W1",
    "W2",
    "W3",
    "W3-local",
    "W4",
    "W4-nolocal",
    "W5",
    "W5@1M",
    "W6",
    "W6@1M",
    "MEM",
]
SUBJECT = "ac-pg-valkey"


def reference_of(workload: str, backend: str) -> tuple[str, str] | None:
    """(workload, config) of the raw reference a row is compared with."""
    if workload == "MEM":
        return None
    base = {"W3-local": "W3", "W4-nolocal": "W4"}.get(workload, workload)
    if backend == "sqlite":
        return base, "raw-sqlite"
    if base == "W3":
        return base, "raw-valkey"
    return base, "raw-pg"


Index = dict[tuple[str, str], Result]


def index(results: Iterable[Result]) -> Index:
    return {(r.workload, r.config): r for r in results if r.skipped is None}


def ratios(result: Result, idx: Index) -> dict[str, float | None]:
    ref_key = reference_of(result.workload, result.backend)
    ref = idx.get(ref_key) if ref_key else None
    out: dict[str, float | None] = {"x_ops": None, "x_p50": None, "x_p99": None}
    if ref is None or ref is result or result.skipped is not None:
        return out
    if result.ops_per_s and ref.ops_per_s:
        out["x_ops"] = result.ops_per_s / ref.ops_per_s
    if result.p50_ms and ref.p50_ms:
        out["x_p50"] = result.p50_ms / ref.p50_ms
    if result.p99_ms and ref.p99_ms:
        out["x_p99"] = result.p99_ms / ref.p99_ms
    return out


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _notes(r: Result) -> str:
    e = r.extra
    if r.workload == "W2" and "growth" in e:
        first, last = e["first_mean_ms"], e["last_mean_ms"]
        return f"growth {e['growth']:.2f} (first {first:.3f} / last {last:.3f} ms)"
    if r.workload.startswith("W3"):
        parts = [
            f"{k.split('.', 1)[-1]}={v}" for k, v in e.items() if k.startswith(("hits", "reads"))
        ]
        if "blob_bytes" in e:
            parts.append(f"{e['blob_bytes']} B/doc")
        return " ".join(parts)
    if r.workload == "W4":
        return f"append p50 {e['append_p50_ms']:.2f} / get p50 {e['get_p50_ms']:.2f} ms"
    if r.workload.startswith("W5"):
        return f"{e['rows_per_call']:.0f} rows/call of {e['sessions']:,} sessions"
    if r.workload.startswith("W6"):
        return (
            f"{e['swept']:,} in {e['sweep_s']:.2f} s, {e['batches']} batches (max"
            f" {e['batch_max_ms']:.1f} ms); traffic max {e['traffic_max_ms']:.1f} ms"
            f" vs p99 {e['baseline_p99_ms']:.1f} ms alone"
        )
    if r.workload == "MEM":
        return (
            f"{e['max_entries']:,} entries = {e['bound_mib']:.0f} MiB full; RSS +"
            f"{e['rss_growth_mib']:.0f} MiB after {r.n:,} distinct gets"
        )
    return ""


def format_table(results: list[Result], order: list[str]) -> str:
    idx = index(results)
    rank = {name: i for i, name in enumerate(order)}
    rows = sorted(
        results,
        key=lambda r: (
            WORKLOAD_ORDER.index(r.workload) if r.workload in WORKLOAD_ORDER else 99,
            rank.get(r.config, 99),
        ),
    )
    header = (
        f"{'work':<8} {'config':<17} {'n':>7} {'ops/s':>10} {'p50 ms':>8} {'p99 ms':>8}"
        f"  {'ref':<11} {'x ops/s':>7} {'x p50':>6} {'x p99':>6}  notes"
    )
    lines = [header, "-" * len(header)]
    last = None
    for r in rows:
        if last is not None and r.workload != last:
            lines.append("")
        last = r.workload
        if r.skipped is not None:
            lines.append(f"{r.workload:<8} {r.config:<17} skipped: {r.skipped}")
            continue
        ref = reference_of(r.workload, r.backend)
        ratio = ratios(r, idx)
        is_ref = ref is not None and ref == (r.workload, r.config)
        ref_name = "(reference)" if is_ref else (ref[1] if ref and ref in idx else "-")
        lines.append(
            f"{r.workload:<8} {r.config:<17} {r.n:>7} {_fmt(r.ops_per_s, ',.0f'):>10}"
            f" {_fmt(r.p50_ms, '.3f'):>8} {_fmt(r.p99_ms, '.3f'):>8}  {ref_name:<11}"
            f" {_fmt(ratio['x_ops'], '.2f'):>7} {_fmt(ratio['x_p50'], '.2f'):>6}"
            f" {_fmt(ratio['x_p99'], '.2f'):>6}  {_notes(r)}"
        )
    return "\n".join(lines)


# --- targets ----------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    subject: str
    measured: float | None
    threshold: float
    higher_is_better: bool
    unit: str
    detail: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None or math.isnan(self.measured):
            return None
        if self.higher_is_better:
            return self.measured >= self.threshold
        return self.measured <= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.name,
            "subject": self.subject,
            "measured": self.measured,
            "threshold": self.threshold,
            "higher_is_better": self.higher_is_better,
            "unit": self.unit,
            "met": self.met,
            "detail": self.detail,
        }


def evaluate_targets(results: list[Result]) -> list[Target]:
    idx = index(results)

    def ops(w: str, c: str) -> float | None:
        r = idx.get((w, c))
        return r.ops_per_s if r else None

    def p50(w: str, c: str) -> float | None:
        r = idx.get((w, c))
        return r.p50_ms if r else None

    def extra(w: str, c: str, key: str) -> Any:
        r = idx.get((w, c))
        return r.extra.get(key) if r else None

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    targets: list[Target] = []

    def add(
        name: str,
        subject: str,
        value: float | None,
        threshold: float,
        higher: bool = True,
        unit: str = "x",
        detail: str = "",
    ) -> None:
        targets.append(Target(name, subject, value, threshold, higher, unit, detail))

    for s in (SUBJECT, "ac-pg"):
        add(
            "W1 create >= 0.6x raw asyncpg INSERT",
            s,
            div(ops("W1", s), ops("W1", "raw-pg")),
            0.6,
        )
        add(
            "W2 append >= 0.6x raw O(1) append",
            s,
            div(ops("W2", s), ops("W2", "raw-pg")),
            0.6,
        )
        add(
            "W2 growth (last 100 / first 100) <= 1.2",
            s,
            extra("W2", s, "growth"),
            1.2,
            False,
            "",
        )
        if s == SUBJECT:
            add(
                "W3 get from Valkey >= 0.7x raw redis-py GET",
                s,
                div(ops("W3", s), ops("W3", "raw-valkey")),
                0.7,
            )
        add(
            "W3 get from the local tier >= 20x raw redis-py GET",
            s,
            div(ops("W3-local", s), ops("W3", "raw-valkey")),
            20,
        )
        add(
            "W4 >= 0.6x raw PostgreSQL W4",
            s,
            div(ops("W4", s), ops("W4", "raw-pg")),
            0.6,
        )
        if s == SUBJECT:
            add(
                "W4 without the in-process tier >= 0.6x raw PostgreSQL W4",
                s,
                div(ops("W4-nolocal", s), ops("W4", "raw-pg")),
                0.6,
            )
        add(
            "W5 p50 <= 2x raw indexed SELECT (latency ratio)",
            s,
            div(p50("W5", s), p50("W5", "raw-pg")),
            2,
            False,
        )
        add(
            "W5 at 1,000,000 p50 <= 2x raw indexed SELECT (latency ratio)",
            s,
            div(p50("W5@1M", s), p50("W5@1M", "raw-pg")),
            2,
            False,
        )
    for w in ("W2", "W3", "W4", "W5"):
        add(
            f"{w} >= 2.5x LangGraph AsyncPostgresSaver",
            SUBJECT,
            div(ops(w, SUBJECT), ops(w, "langgraph-pg")),
            2.5,
        )
        add(
            f"{w} >= 5x ADK DatabaseSessionService (PostgreSQL)",
            SUBJECT,
            div(ops(w, SUBJECT), ops(w, "adk-pg")),
            5,
        )
    for w in ("W2", "W3"):
        add(
            f"{w} on SQLite >= 1x OpenAI SQLiteSession",
            "ac-sqlite",
            div(ops(w, "ac-sqlite"), ops(w, "openai-sqlite")),
            1,
        )
    for s in (SUBJECT, "ac-pg"):
        add(
            "W6 sweep of 100,000 stale among 1,000,000 <= 10 s",
            s,
            extra("W6@1M", s, "sweep_s"),
            10,
            False,
            "s",
        )
        for w in ("W6@1M", "W6"):
            r = idx.get((w, s))
            if r is None:
                continue
            add(
                f"{w}: traffic held up by at most one batch"
                " (max op latency <= max batch + p99 alone)",
                s,
                r.extra["traffic_max_ms"] - r.extra["batch_max_ms"] - r.extra["baseline_p99_ms"],
                0,
                False,
                "ms over",
                detail=(
                    f"traffic max {r.extra['traffic_max_ms']:.1f} ms, batch max"
                    f" {r.extra['batch_max_ms']:.1f} ms, p99 alone"
                    f" {r.extra['baseline_p99_ms']:.1f} ms"
                ),
            )
            break
    mem = idx.get(("MEM", "ac-local-tier"))
    if mem is not None:
        add(
            "Memory: distinct gets through the local tier stay within its bound + 50 MiB",
            "ac-local-tier",
            mem.extra["rss_growth_mib"] - mem.extra["bound_mib"],
            50,
            False,
            "MiB over bound",
            detail=(
                f"{mem.n:,} gets; bound {mem.extra['bound_mib']:.0f} MiB"
                f" ({mem.extra['max_entries']:,} entries); RSS growth"
                f" {mem.extra['rss_growth_mib']:.0f} MiB"
            ),
        )
    return targets


def format_targets(targets: list[Target]) -> str:
    lines = []
    missing = 0
    for t in targets:
        if t.met is None:
            missing += 1
            continue
        status = "MET " if t.met else "MISS"
        op = ">=" if t.higher_is_better else "<="
        value = f"{t.measured:.2f}{t.unit} (target {op} {t.threshold:g}{t.unit})"
        detail = f" [{t.detail}]" if t.detail else ""
        lines.append(f"{status} {t.name} — {t.subject}: {value}{detail}")
    if missing:
        lines.append(f"({missing} targets need workloads or configurations not run here)")
    return "\n".join(lines)


# --- files ------------------------------------------------------------------------------------


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


_COLORS = {"raw": "#888888", "agent-core": "#1f77b4", "peer": "#ff7f0e"}


def write_chart(path: Path, results: list[Result], order: list[str], title: str) -> bool:
    """One panel per workload: ops/s of every configuration (log scale). False if no
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return False
    done = [r for r in results if r.skipped is None and r.ops_per_s and r.workload != "MEM"]
    workloads = [w for w in WORKLOAD_ORDER if any(r.workload == w for r in done)]
    if not workloads:
        return False
    rank = {name: i for i, name in enumerate(order)}
    cols = 2
    rows = (len(workloads) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(13, 3.1 * rows), squeeze=False)
    for ax in axes.flat[len(workloads) :]:
        ax.set_visible(False)
    for ax, w in zip(axes.flat, workloads, strict=False):
        rs = sorted((r for r in done if r.workload == w), key=lambda r: rank.get(r.config, 99))
        names = [r.config for r in rs]
        values = [r.ops_per_s or 0.0 for r in rs]
        ax.barh(names, values, color=[_COLORS.get(r.family, "#2ca02c") for r in rs])
        ax.set_xscale("log")
        ax.invert_yaxis()
        unit = "sessions failed/s" if w.startswith("W6") else "ops/s"
        ax.set_title(f"{w} ({unit}, log scale)", fontsize=10)
        ax.tick_params(labelsize=8)
        for y, (v, r) in enumerate(zip(values, rs, strict=True)):
            what = "batch p50" if w.startswith("W6") else "p50"
            ax.text(v, y, f" {v:,.0f}  {what} {r.p50_ms:.3g} ms", va="center", fontsize=7)
        low = min(v for v in values if v > 0)
        ref_key = reference_of(w, "postgres")
        ref = next((r for r in done if ref_key and (r.workload, r.config) == ref_key), None)
        if ref is not None and ref.ops_per_s:
            ax.axvline(ref.ops_per_s, color="#444444", linestyle="--", linewidth=0.8)
            low = min(low, ref.ops_per_s)
            ax.text(ref.ops_per_s, -0.7, f" {ref.config}", fontsize=7, color="#444444", va="bottom")
        ax.set_xlim(left=low / 3, right=max(values) * 30)
    handles = [Patch(color=c) for c in _COLORS.values()]
    fig.legend(handles, list(_COLORS), loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
