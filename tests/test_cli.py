"""The ``agent-core`` command line, in process (``main([...])``) and as a real subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from agent_core.cli import format_table, human_duration, main, parse_duration
from agent_core.sessions.session_manager import SessionManager

ENV_VARS = ("AGENT_CORE_STORE_URL", "AGENT_CORE_CACHE_URL", "AGENT_CORE_NAMESPACE")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, float]:
    """Run ``agent-core demo --fast`` once as a real process; (store URL, stdout, seconds)."""
    workdir = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{workdir / 'demo.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "agent_core.cli", "demo", "--fast", "--store", url],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return url, proc.stdout, elapsed


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out: str) -> list[list[str]]:
    """The data rows of the first table in ``out`` (after its ``---`` separator)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("---")) + 1
    rows = []
    for line in lines[start:]:
        if not line.strip() or line.startswith("("):
            break
        rows.append(line.split())
    return rows


def resumed_id(stdout: str) -> str:
    match = re.search(r"agent-core sessions show (\S+) --store", stdout)
    assert match is not None
    return match.group(1)


# --- demo ----------------------------------------------------------------------------------


def test_demo_shows_takeover_sweep_and_events(demo_run: tuple[str, str, float]) -> None:
    url, out, elapsed = demo_run
    assert elapsed < 10
    assert "claims at once: refused, LeaseHeld" in out
    assert "claims after the ttl: granted, fencing token 2" in out
    assert "last checkpoint #4 'chunk'" in out
    assert "-> resumes at 'embed'" in out
    assert "writes with token 1: rejected, LeaseLost" in out
    assert "cleanup_stale_sessions(max_age=0.4s): failed 2" in out
    assert out.count("reason: heartbeat_timeout") == 2
    assert "reason: submission unreadable" in out
    assert "== Events seen by the watcher" in out
    for kind in ("created", "checkpoint", "context", "heartbeat", "state", "claimed"):
        assert re.search(rf"^{kind}\s+\d+\s+\d+$", out, re.MULTILINE), kind
    assert f"agent-core sessions ls --store {url}" in out
    assert re.search(r"^total\s+1\s+1\s+5\s+3\s+10$", out, re.MULTILINE)


def test_demo_trail_of_resumed_session(demo_run: tuple[str, str, float]) -> None:
    _, out, _ = demo_run
    trail = out.split("Checkpoint trail of the resumed session", 1)[1]
    rows = table_rows(trail)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("1", "session_created", "-"),
        ("2", "fetch", "worker-1"),
        ("3", "extract", "worker-1"),
        ("4", "chunk", "worker-1"),
        ("5", "embed", "standby-worker"),
        ("6", "index", "standby-worker"),
    ]


def test_demo_default_store_is_fresh_each_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for _ in range(2):
        code, out, err = run(capsys, "demo", "--fast", "--workers", "2")
        assert code == 0, err
    assert (tmp_path / "agent-core-demo.db").exists()
    url = f"sqlite:///{tmp_path / 'agent-core-demo.db'}"
    assert f"--store {url}" in out
    code, out, _ = run(capsys, "sessions", "ls", "--store", url)
    assert code == 0
    assert len(table_rows(out)) == 10
    # Only the supervisor is still active, so a zero max-age fails exactly one session.
    code, out, _ = run(capsys, "cleanup", "--max-age", "0s", "--store", url)
    assert code == 0
    assert out.startswith("failed 1 stale session")
    code, out, _ = run(capsys, "cleanup", "--max-age", "0", "--store", url)
    assert out.startswith("failed 0 stale session")


def test_demo_refuses_a_store_with_foreign_active_sessions(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'real.db'}"

    async def seed() -> None:
        async with SessionManager.from_url(url) as manager:
            await manager.create_session("billing", "dave")

    asyncio.run(seed())
    code, out, err = run(capsys, "demo", "--fast", "--store", url)
    assert code == 1
    assert out == ""
    assert "holds active sessions the demo did not create" in err
    assert len(err.splitlines()) == 1


def test_demo_on_memory_store(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "demo", "--fast", "--store", "memory://", "--workers", "1")
    assert code == 0
    assert "nothing was kept" in out


# --- sessions ls / show --------------------------------------------------------------------


def test_sessions_ls_lists_the_demo(
    capsys: pytest.CaptureFixture[str], demo_run: tuple[str, str, float]
) -> None:
    url = demo_run[0]
    code, out, _ = run(capsys, "sessions", "ls", "--store", url)
    assert code == 0
    assert out.splitlines()[0].split() == [
        "session_id",
        "agent_type",
        "user_id",
        "state",
        "version",
        "checkpoints",
        "heartbeat_age",
    ]
    rows = table_rows(out)
    assert len(rows) == 10
    assert sorted({r[1] for r in rows}) == ["doc-pipeline", "grader", "supervisor", "tutor"]
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)


def test_sessions_ls_filters(
    capsys: pytest.CaptureFixture[str], demo_run: tuple[str, str, float]
) -> None:
    url = demo_run[0]
    _, out, _ = run(capsys, "sessions", "ls", "--store", url, "--state", "failed")
    assert [r[3] for r in table_rows(out)] == ["failed"] * 3
    # Global options also work before the subcommand.
    _, out, _ = run(capsys, "--store", url, "sessions", "ls", "--agent-type", "tutor")
    assert sorted(r[2] for r in table_rows(out)) == ["alice", "bob", "carol"]
    _, out, _ = run(capsys, "sessions", "ls", "--store", url, "--user", "ops", "--state", "active")
    assert [(r[1], r[3]) for r in table_rows(out)] == [("supervisor", "active")]


def test_sessions_ls_pages_and_json(
    capsys: pytest.CaptureFixture[str], demo_run: tuple[str, str, float]
) -> None:
    url = demo_run[0]
    _, out, _ = run(capsys, "sessions", "ls", "--store", url, "--json")
    everything = [s["session_id"] for s in json.loads(out)]
    assert len(everything) == 10
    _, out, _ = run(capsys, "sessions", "ls", "--store", url, "--limit", "4")
    assert f"(more may follow: --after {everything[3]})" in out
    _, out, _ = run(
        capsys, "sessions", "ls", "--store", url, "--json", "--limit", "4", "--after", everything[3]
    )
    assert [s["session_id"] for s in json.loads(out)] == everything[4:8]


def test_sessions_show_trail(
    capsys: pytest.CaptureFixture[str], demo_run: tuple[str, str, float]
) -> None:
    url, stdout, _ = demo_run
    sid = resumed_id(stdout)
    code, out, _ = run(capsys, "sessions", "show", sid, "--store", url)
    assert code == 0
    assert re.search(rf"^session_id\s+{sid}$", out, re.MULTILINE)
    assert re.search(r"^state\s+completed$", out, re.MULTILINE)
    assert '"resumed_by": "standby-worker"' in out
    assert "checkpoint trail (last 6 of 6):" in out
    rows = table_rows(out.split("checkpoint trail", 1)[1])
    assert [r[1] for r in rows] == [
        "session_created",
        "fetch",
        "extract",
        "chunk",
        "embed",
        "index",
    ]
    assert '{"worker":"standby-worker"}' in rows[-1][-1]

    code, out, _ = run(capsys, "sessions", "show", sid, "--store", url, "--checkpoints", "2")
    assert "checkpoint trail (last 2 of 6):" in out
    code, out, _ = run(capsys, "sessions", "show", sid, "--store", url, "--json")
    shown = json.loads(out)
    assert shown["state"] == "completed"
    assert [cp["seq"] for cp in shown["checkpoints"]] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("session_id", "message"),
    [
        ("not-a-session", "malformed session id"),
        ("00000000-0000-4000-8000-000000000000", "not found"),
    ],
)
def test_sessions_show_bad_id(
    capsys: pytest.CaptureFixture[str],
    demo_run: tuple[str, str, float],
    session_id: str,
    message: str,
) -> None:
    code, out, err = run(capsys, "sessions", "show", session_id, "--store", demo_run[0])
    assert code == 1
    assert out == ""
    assert err.startswith("agent-core: error: ")
    assert message in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_sessions_show_bad_id_in_a_subprocess(demo_run: tuple[str, str, float]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent_core.cli", "sessions", "show", "nope"],
        env={**os.environ, "AGENT_CORE_STORE_URL": demo_run[0]},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        == "agent-core: error: malformed session id 'nope': expected a UUID string"
    )


# --- migrate, reaper, options --------------------------------------------------------------


def test_migrate_prints_the_schema_version(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # No --store and no environment: the default file in the working directory.
    code, out, _ = run(capsys, "migrate")
    assert code == 0
    assert re.fullmatch(r"schema version [1-9]\d* \(sqlite:///agent-core\.db\)\n", out)
    assert (tmp_path / "agent-core.db").exists()


def test_store_url_from_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AGENT_CORE_STORE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    code, out, _ = run(capsys, "migrate")
    assert code == 0
    assert "env.db" in out
    assert not (tmp_path / "agent-core.db").exists()


def test_reaper_once_expires_leases(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reaper.db'}"

    async def seed() -> None:
        async with SessionManager.from_url(url) as manager:
            session = await manager.create_session("grader", "erin")
            await manager.claim(session.session_id, "worker-x", timedelta(milliseconds=1))
            await asyncio.sleep(0.01)

    asyncio.run(seed())
    code, out, _ = run(capsys, "reaper", "--once", "--interval", "1", "--store", url)
    assert code == 0
    assert out.splitlines()[0] == f"reaper on {url}: every 1s, stale after 2d"
    assert out.splitlines()[1].endswith("expired_leases=1 failed_stale=0")
    code, out, _ = run(capsys, "reaper", "--once", "--max-age", "0s", "--store", url)
    assert out.splitlines()[1].endswith("expired_leases=0 failed_stale=1")


def test_unknown_store_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--store", "mysql://root:hunter2@db/x", "sessions", "ls")
    assert code == 1
    assert out == ""
    assert err == (
        "agent-core: error: unknown store URL scheme 'mysql'"
        " (known: memory, postgres, postgresql, sqlite)\n"
    )


def test_unreachable_store_hides_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--store", "sqlite:////nonexistent-dir/x.db", "migrate")
    assert code == 1
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["cleanup", "--max-age", "5x"],
        ["sessions", "ls", "--state", "bogus"],
        ["sessions", "ls", "--limit", "0"],
        ["demo", "--workers", "0"],
        ["reaper", "--interval", "-1"],
        [],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "error:" in err


# --- helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("48h", 172800), ("2d", 172800), ("0s", 0), ("2.5", 2.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_human_duration() -> None:
    values = [0, 0.4, 42, 90, 3600, 90061]
    assert [human_duration(timedelta(seconds=s)) for s in values] == [
        "0s",
        "0.4s",
        "42s",
        "1m30s",
        "1h",
        "1d1h",
    ]


def test_format_table_aligns_columns() -> None:
    table = format_table(["name", "count"], [["a", 1], ["longer", 200]])
    assert table.splitlines() == [
        "name    count",
        "------  -----",
        "a           1",
        "longer    200",
    ]


@pytest.mark.postgres
@pytest.mark.valkey
def test_demo_runs_in_hybrid_mode_on_throwaway_dev_servers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--dev-servers", "--fast"]) == 0
    out = capsys.readouterr().out
    assert "started PostgreSQL at postgresql://" in out
    assert "store postgresql://" in out
    assert "LeaseLost" in out and "heartbeat_timeout" in out
    assert list(tmp_path.iterdir()) == []  # nothing left behind: the servers were throwaway
