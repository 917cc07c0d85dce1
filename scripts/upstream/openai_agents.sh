#!/usr/bin/env bash
# The OpenAI Agents SDK's own session tests (tests/memory/test_session.py and
# test_session_limit.py of the openai-agents source distribution, the version installed here)
# with agent-core's AgentCoreSession swapped in for SQLiteSession.
#
#   bash scripts/upstream/openai_agents.sh [sqlite|postgres|all]     (default: all)
#
# sqlite: SQLiteSession(id) -> memory://, SQLiteSession(id, path) -> sqlite:///path;
# postgres: both on a throwaway PostgreSQL server (agent_core.devservers), or on
# $AGENT_CORE_TEST_POSTGRES_URL when set. What is deselected and why:
# scripts/upstream/openai_agents_plugin.py (DESELECTED) and docs/integrations.md.
# Prints "passed: N" per backend; exits non-zero if a test fails or the sdist lacks the tests.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
which="${1:-all}"
case "$which" in sqlite | postgres | all) ;; *)
    echo "usage: $0 [sqlite|postgres|all]" >&2
    exit 2
    ;;
esac

version="$("$python" -c 'import importlib.metadata as m; print(m.version("openai-agents"))')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "openai-agents $version: downloading the source distribution"
"$python" -m pip download --quiet --no-deps --no-binary :all: "openai-agents==$version" -d "$work"
tar -xzf "$work"/openai_agents-"$version".tar.gz -C "$work"
src="$work/openai_agents-$version"
tests=(tests/memory/test_session.py tests/memory/test_session_limit.py)
for t in "${tests[@]}"; do
    if [[ ! -f "$src/$t" ]]; then
        echo "the sdist of openai-agents $version has no $t; it has:" >&2
        (cd "$src" && find tests -maxdepth 2 -name '*session*' | sort) >&2
        exit 1
    fi
done

run() { # $1: backend label; the environment says which store
    echo "== $1"
    # The SDK's pytest settings (its pyproject.toml) apply: we run from its source tree. The
    # installed `agents` package is the one under test (same version as the sdist).
    (cd "$src" && PYTHONPATH="$here:$src" "$python" -m pytest -p openai_agents_plugin \
        -p no:cacheprovider -q -o addopts="" "${tests[@]}")
}

status=0
if [[ "$which" != postgres ]]; then
    run sqlite || status=1
fi
if [[ "$which" != sqlite ]]; then
    if [[ -n "${AGENT_CORE_TEST_POSTGRES_URL:-}" ]]; then
        AGENT_CORE_UPSTREAM_POSTGRES_URL="$AGENT_CORE_TEST_POSTGRES_URL" run postgres || status=1
    else
        # A throwaway server for the length of the run.
        export src here python
        tests_list="${tests[*]}"
        export tests_list
        "$python" - <<'EOF' || status=1
import os
import subprocess
import sys

from agent_core.devservers.postgres import PostgresServer

with PostgresServer() as server:
    env = dict(os.environ, AGENT_CORE_UPSTREAM_POSTGRES_URL=server.dsn)
    cmd = [os.environ["python"], "-m", "pytest", "-p", "openai_agents_plugin",
           "-p", "no:cacheprovider", "-q", "-o", "addopts=", *os.environ["tests_list"].split()]
    env["PYTHONPATH"] = os.environ["here"] + ":" + os.environ["src"]
    print("== postgres", flush=True)
    code = subprocess.call(cmd, cwd=os.environ["src"], env=env)
sys.exit(code)
EOF
    fi
fi
exit $status
