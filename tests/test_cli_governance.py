"""The governance commands and the edges of the command line: export, purge, retention, audit;
read-only commands that never create a store; bad arguments as one line, never a traceback."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent_core.cli import main
from agent_core.sessions.session_manager import SessionManager
from agent_core.sessions.session_models import SessionState

ENV_VARS = ("AGENT_CORE_STORE_URL", "AGENT_CORE_CACHE_URL", "AGENT_CORE_NAMESPACE")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cli(*argv: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    return subprocess.run(
        [sys.executable, "-m", "agent_core.cli", *argv],
        env=env,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("agent-core"), err
    assert "error:" in lines[0], err
    return lines[0]


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[str, list[str]]:
    """A SQLite store with three sessions of user ``u`` (one deleted, one completed) and one
    of ``other``; (URL, u's session ids)."""
    url = f"sqlite:///{tmp_path / 'seeded.db'}"

    async def seed() -> list[str]:
        async with SessionManager.from_url(url) as manager:
            ids = []
            for i in range(3):
                session = await manager.create_session("tutor", "u", {"secret": f"s{i}"})
                await manager.append_checkpoint(session.session_id, "step", {"n": i})
                ids.append(session.session_id)
            await manager.delete_session(ids[0])
            await manager.set_state(ids[1], SessionState.COMPLETED)
            await manager.create_session("tutor", "other")
            return ids

    return url, asyncio.run(seed())


def stored_users(url: str) -> list[str]:
    async def read() -> list[str]:
        async with SessionManager.from_url(url) as manager:
            users = []
            for user in ("u", "other"):
                heads = await manager.store.list_user_sessions(user)
                users += [h.user_id for h in heads]
            return users

    return asyncio.run(read())


# --- read-only commands never create a store -----------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["sessions", "ls"],
        ["sessions", "show", "00000000-0000-4000-8000-000000000000"],
        ["export", "--user", "u"],
        ["retention", "show"],
        ["audit"],
        ["purge", "--user", "u", "--yes"],
    ],
)
def test_read_only_commands_do_not_create_a_sqlite_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv, "--store", "sqlite:///typo.db")
    assert code != 0
    assert out == ""
    line = one_error_line(err)
    assert "typo.db" in line and "does not exist" in line
    assert list(tmp_path.iterdir()) == []


def test_sessions_ls_on_a_missing_file_in_a_subprocess(tmp_path: Path) -> None:
    proc = cli("sessions", "ls", "--store", f"sqlite:///{tmp_path / 'typo.db'}")
    assert proc.returncode != 0
    assert proc.stdout == ""
    one_error_line(proc.stderr)
    assert not (tmp_path / "typo.db").exists()


# --- bad arguments: one line, no traceback -------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["cleanup", "--max-age", "800000d"],
        ["cleanup", "--max-age", "99999999999999999999d"],
        ["reaper", "--once", "--max-age", "1e400"],
        ["retention", "set", "--deleted-days", "-3"],
        ["retention", "set", "--terminal-days", "lots"],
        ["audit", "--limit", "0"],
        ["export"],
        ["purge", "--user", "u", "--session", "x"],
    ],
)
def test_bad_arguments_are_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    one_error_line(err)


def test_huge_max_age_in_a_subprocess(tmp_path: Path) -> None:
    proc = cli("cleanup", "--max-age", "800000d", "--store", f"sqlite:///{tmp_path / 'x.db'}")
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "800000d" in line and "too long" in line


@pytest.mark.parametrize(
    "cache",
    [
        "valkey://:hunter2@localhost:notaport/0",
        "valkey://user:hunter2@[::1/0",
        "valkey://:hunter2@/0",
    ],
)
def test_malformed_cache_url_is_one_line_with_the_password_hidden(
    capsys: pytest.CaptureFixture[str], seeded: tuple[str, list[str]], cache: str
) -> None:
    url, _ = seeded
    code, out, err = run(capsys, "sessions", "ls", "--store", url, "--cache", cache)
    assert code == 1
    assert out == ""
    line = one_error_line(err)
    assert "hunter2" not in line
    assert "cache URL" in line


def test_retention_set_needs_a_value(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "retention", "set", "--store", f"sqlite:///{tmp_path / 'r.db'}")
    assert code == 1
    assert "--deleted-days" in one_error_line(err)


# --- purge ---------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_purge_without_yes_and_without_a_tty_refuses_and_changes_nothing(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    seeded: tuple[str, list[str]],
) -> None:
    url, _ = seeded
    monkeypatch.setattr(sys, "stdin", io.StringIO("yes\n"))  # not a terminal
    code, out, err = run(capsys, "purge", "--user", "u", "--store", url)
    assert code == 1
    assert out == ""
    assert "--yes" in one_error_line(err)
    assert stored_users(url) == ["u", "u", "u", "other"]
    # Nothing was audited either: nothing happened.
    code, out, _ = run(capsys, "audit", "--store", url, "--json")
    assert code == 0 and json.loads(out) == []


def test_purge_refuses_in_a_subprocess_without_a_tty(seeded: tuple[str, list[str]]) -> None:
    url, _ = seeded
    proc = cli("purge", "--user", "u", "--store", url)
    assert proc.returncode == 1
    assert "--yes" in one_error_line(proc.stderr)
    assert stored_users(url) == ["u", "u", "u", "other"]


def test_purge_asks_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    seeded: tuple[str, list[str]],
) -> None:
    url, _ = seeded
    monkeypatch.setattr(sys, "stdin", _Terminal("no\n"))
    code, out, err = run(capsys, "purge", "--user", "u", "--store", url)
    assert code == 1
    assert "3 session(s) of user 'u'" in err and "nothing purged" in err
    assert stored_users(url) == ["u", "u", "u", "other"]

    monkeypatch.setattr(sys, "stdin", _Terminal("yes\n"))
    code, out, err = run(capsys, "purge", "--user", "u", "--store", url, "--actor", "dpo")
    assert code == 0, err
    assert out == "purged 3 session(s) of user 'u' (audited as 'dpo')\n"
    assert stored_users(url) == ["other"]


def test_purge_with_yes_defaults_the_actor_to_the_os_user(
    capsys: pytest.CaptureFixture[str], seeded: tuple[str, list[str]]
) -> None:
    url, _ = seeded
    code, out, err = run(capsys, "purge", "--user", "u", "--yes", "--store", url)
    assert code == 0, err
    assert out.startswith("purged 3 session(s)")
    code, out, _ = run(capsys, "audit", "--store", url, "--json", "--action", "purge")
    (entry,) = json.loads(out)
    import getpass

    assert entry["actor"] == getpass.getuser()
    assert (entry["user_id"], entry["session_count"]) == ("u", 3)
    assert "s0" not in out and "secret" not in out


# --- export, audit, retention --------------------------------------------------------------


def test_export_writes_json_lines_and_is_audited(
    capsys: pytest.CaptureFixture[str], seeded: tuple[str, list[str]]
) -> None:
    url, ids = seeded
    proc = cli("export", "--user", "u", "--store", url, "--actor", "dpo")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["type"] for line in lines] == [
        *["session", "checkpoint", "checkpoint"] * 3,
        "end",
    ]
    assert sorted(line["session_id"] for line in lines if line["type"] == "session") == sorted(ids)
    assert {line["state"] for line in lines if line["type"] == "session"} == {
        "deleted",
        "completed",
        "active",
    }
    assert lines[-1] == {"type": "end", "user_id": "u", "sessions": 3, "checkpoints": 6}

    code, out, _ = run(capsys, "audit", "--store", url, "--user", "u")
    assert code == 0
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [(r[2], r[3], r[4], r[5]) for r in rows] == [("dpo", "export", "u", "3")]


def test_retention_set_show_and_the_reaper_applies_it(
    capsys: pytest.CaptureFixture[str], seeded: tuple[str, list[str]]
) -> None:
    url, _ = seeded
    code, out, _ = run(capsys, "retention", "show", "--store", url)
    assert (code, out) == (0, "no retention policies: sessions are kept until purged\n")
    code, out, err = run(
        capsys, "retention", "set", "--deleted-days", "0", "--store", url, "--actor", "dpo"
    )
    assert code == 0, err
    assert "purged after 0 day(s)" in out and "kept until purged" in out
    code, out, _ = run(
        capsys,
        "retention",
        "set",
        "--terminal-days",
        "30",
        "--namespace",
        "other-ns",
        "--store",
        url,
    )
    assert code == 0
    code, out, _ = run(capsys, "retention", "show", "--store", url, "--json")
    policies = {p["namespace"]: p for p in json.loads(out)}
    assert (policies["agent_core"]["deleted_days"], policies["agent_core"]["terminal_days"]) == (
        0,
        None,
    )
    assert policies["agent_core"]["updated_by"] == "dpo"
    assert (policies["other-ns"]["deleted_days"], policies["other-ns"]["terminal_days"]) == (
        None,
        30,
    )
    code, out, _ = run(capsys, "retention", "show", "--store", url)
    assert "agent_core *" in out

    code, out, err = run(capsys, "reaper", "--once", "--store", url)
    assert code == 0, err
    assert out.splitlines()[2].endswith("retention purged_deleted=1 purged_terminal=0")
    assert stored_users(url) == ["u", "u", "other"]
    # Keep the deleted-days setting, add terminal-days: the completed session goes next.
    run(capsys, "retention", "set", "--terminal-days", "0", "--store", url)
    code, out, _ = run(capsys, "reaper", "--once", "--store", url)
    assert out.splitlines()[2].endswith("retention purged_deleted=0 purged_terminal=1")
    assert stored_users(url) == ["u", "other"]

    code, out, _ = run(capsys, "audit", "--store", url, "--json")
    actions = [(e["action"], e["session_count"]) for e in json.loads(out)]
    assert actions == [
        ("retention_set", 0),
        ("retention_set", 0),
        ("retention", 1),
        ("retention_set", 0),
        ("retention", 1),
    ]
