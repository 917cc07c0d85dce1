"""Smoke test of the benchmark suite: a tiny run on memory and SQLite produces its report.

No timing is asserted: performance is measured by ``python -m bench.run``, never in unit tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["ac-memory", "ac-sqlite", "raw-sqlite"]
RESULT_KEYS = {
    "workload",
    "config",
    "family",
    "backend",
    "n",
    "ops_per_s",
    "p50_ms",
    "p99_ms",
    "mean_ms",
    "extra",
    "skipped",
}


def test_quick_run_on_memory_and_sqlite_writes_table_and_json(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--configs",
            ",".join(CONFIGS),
            "--out",
            str(tmp_path),
            "--name",
            "smoke",
            "--no-chart",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "ops/s" in out and "p50 ms" in out and "x ops/s" in out
    assert "targets:" in out

    payload = json.loads((tmp_path / "smoke.json").read_text())
    assert {"mode", "command", "machine", "sizes", "results", "targets", "table"} <= set(payload)
    assert payload["mode"] == "quick"
    results = payload["results"]
    assert results
    for row in results:
        assert set(row) == RESULT_KEYS
    measured = {(r["workload"], r["config"]) for r in results if r["skipped"] is None}
    for workload in ("W1", "W2", "W3", "W4", "W5", "W6"):
        assert (workload, "ac-sqlite") in measured, workload
        assert (workload, "raw-sqlite") in measured, workload
    for workload in ("W1", "W2", "W3", "W4", "W5"):
        assert (workload, "ac-memory") in measured, workload
    assert ("W3-local", "ac-sqlite") in measured
    assert ("MEM", "ac-local-tier") in measured
    w2 = next(r for r in results if r["workload"] == "W2" and r["config"] == "ac-sqlite")
    assert w2["extra"]["growth"] > 0
    assert w2["n"] > 0 and w2["ops_per_s"] > 0 and w2["p99_ms"] >= w2["p50_ms"] > 0
    w6 = next(r for r in results if r["workload"] == "W6" and r["config"] == "ac-sqlite")
    assert w6["extra"]["swept"] == w6["extra"]["stale"]
    for target in payload["targets"]:
        assert {"target", "subject", "measured", "threshold", "met"} <= set(target)
