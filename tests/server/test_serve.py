"""``agent-core serve`` and ``agent-core keys`` as a user runs them: real processes, a real
uvicorn on a free port, a keep-alive HTTP client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

CLI = [sys.executable, "-m", "agent_core.cli"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=_env()
    )


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CORE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Served:
    def __init__(self, process: subprocess.Popen[str], lines: list[str]) -> None:
        self.process = process
        self.lines = lines
        self.url = lines[0].split()[2]


Start = Callable[..., Served]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Start]:
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str) -> Served:
        process = subprocess.Popen(
            [*CLI, "serve", "--port", "0", *args],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        processes.append(process)
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith(("ak_", "create an API key")):
                return Served(process, lines)
        raise AssertionError(
            f"serve did not start: {lines} {process.stderr and process.stderr.read()}"
        )

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def stop(served: Served) -> int:
    served.process.send_signal(signal.SIGTERM)
    return served.process.wait(20)


def test_serve_demo_prints_a_working_admin_key(serve: Start, tmp_path: Path) -> None:
    served = serve("--demo")
    key = served.lines[-1]
    assert key.startswith("ak_") and len(key) == 3 + 43
    assert any("dashboard" in line and served.url in line for line in served.lines)
    assert (tmp_path / "agent-core-demo.db").exists()
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=served.url, timeout=10) as client:  # one keep-alive connection
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        me = client.get("/v1/me", headers=auth).json()
        assert me["tenant"] == "demo" and me["role"] == "admin"
        deadline = time.monotonic() + 30
        items: list[object] = []
        while not items and time.monotonic() < deadline:
            items = client.get("/v1/sessions", headers=auth).json()["items"]
            time.sleep(0.2)
        assert items, "the demo fleet made no session"
        assert (
            client.get("/v1/sessions", headers={"Authorization": "Bearer ak_x"}).status_code == 401
        )
        assert "agent_core_http_requests_total" in client.get("/metrics").text
    assert stop(served) == 0


def test_keys_from_the_command_line_open_and_close_the_server(serve: Start, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'keys.db'}"
    created = run_cli(
        "keys", "create", "--tenant", "acme", "--role", "reader", "--store", store, cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.splitlines()[-1]
    assert key.startswith("ak_")
    listed = run_cli("keys", "list", "--store", store, cwd=tmp_path)
    assert listed.returncode == 0 and "acme" in listed.stdout and "reader" in listed.stdout
    assert key not in listed.stdout
    key_id = listed.stdout.splitlines()[2].split()[0]
    assert key_id in created.stdout

    served = serve("--store", store)
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=served.url, timeout=10) as client:
        assert client.get("/v1/sessions", headers=auth).status_code == 200
        assert (
            client.post("/v1/sessions", json={"agent_type": "x"}, headers=auth).status_code == 403
        )
        revoked = run_cli("keys", "revoke", key_id, "--store", store, cwd=tmp_path)
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 10  # the server trusts a key for key_cache_s (2 s)
        status = 200
        while status == 200 and time.monotonic() < deadline:
            status = client.get("/v1/sessions", headers=auth).status_code
            time.sleep(0.2)
        assert status == 401
    assert stop(served) == 0

    unknown = run_cli("keys", "revoke", "0123456789ab", "--store", store, cwd=tmp_path)
    assert unknown.returncode == 1 and "no API key" in unknown.stderr
    bad = run_cli("keys", "create", "--tenant", "no spaces", "--store", store, cwd=tmp_path)
    assert bad.returncode == 1 and "tenant" in bad.stderr
    listed = run_cli("keys", "list", "--store", store, "--json", cwd=tmp_path)
    assert '"revoked": true' in listed.stdout


def test_serve_refuses_bad_settings(tmp_path: Path) -> None:
    env = {**_env(), "AGENT_CORE_PORT": "eighty"}
    r = subprocess.run(
        [*CLI, "serve"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 1 and "AGENT_CORE_PORT" in r.stderr
