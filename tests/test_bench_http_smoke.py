"""Smoke test of the HTTP benchmark: a tiny run on SQLite starts ``agent-core serve``'s app and
``adk api_server``'s app under uvicorn, drives every operation through both and through the
library calls underneath, and writes its table and JSON.

No timing is asserted: performance is measured by ``python -m bench.http_service``, never
in unit tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = {"agent-core HTTP", "agent-core library", "ADK HTTP", "ADK library"}


def test_quick_run_on_sqlite_measures_every_subject_and_writes_table_and_json(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.http_service",
            "--quick",
            "--backends",
            "sqlite",
            "--out",
            str(tmp_path),
            "--name",
            "smoke",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "| backend | op | mode | subject | ops/s |" in out
    assert "HTTP µs/req" in out and "targets:" in out

    payload = json.loads((tmp_path / "smoke.json").read_text())
    assert {"command", "machine", "sizes", "rounds", "rows", "blocks", "targets"} <= set(payload)
    assert payload["mode"] == "quick" and payload["rounds"] == 1
    rows = payload["rows"]
    measured = {(r["op"], r["mode"], r["subject"]) for r in rows}
    for op in ("create", "append", "get"):
        for mode in ("seq", "conc"):
            for subject in SUBJECTS:
                assert (op, mode, subject) in measured, (op, mode, subject)
    for mode in ("seq", "conc"):
        assert ("noop", mode, "agent-core HTTP") in measured
        assert ("noop", mode, "ADK HTTP") in measured
    for r in rows:
        assert r["backend"] == "sqlite"
        assert r["n"] > 0 and r["ops_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
        if r["subject"] == "agent-core HTTP" and r["op"] != "noop":
            # compared with ADK at the same layer and with the library underneath
            assert r["vs_adk"] is not None and r["http_us"] is not None
        if r["subject"] == "agent-core HTTP" and r["mode"] == "seq":
            # the server's own split, read from its /metrics
            assert r["app_us"] is not None and r["app_us"] > 0
            if r["op"] != "noop":
                assert r["manager_us"] is not None and 0 < r["manager_us"] <= r["app_us"]
    get = [t for t in payload["targets"] if t["backend"] == "sqlite"]
    assert {t["mode"] for t in get} == {"seq", "conc"}
    for t in get:
        assert t["met"] == (t["measured"] >= t["threshold"])
        assert len(t["rounds"]) == 1
