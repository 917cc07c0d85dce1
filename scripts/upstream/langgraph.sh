#!/usr/bin/env bash
# LangGraph's own graph tests (the tests of the langgraph source distribution, the version
# installed here, that take a checkpointer: test_pregel.py, test_pregel_async.py, ...) with
# agent-core's AgentCoreSaver swapped in for their checkpointer fixtures.
#
#   bash scripts/upstream/langgraph.sh [sqlite|postgres|all]     (default: all)
#
# postgres: a throwaway PostgreSQL server (agent_core.devservers) for the length of the run, or
# $AGENT_CORE_TEST_POSTGRES_URL when set; one fresh schema per test. What is excluded and why:
# scripts/upstream/langgraph_plugin.py (EXCLUDED) and docs/integrations.md.
# Prints "passed: N" (and per selection: sync/async x backend); exits non-zero if a test fails
# or the sdist lacks the tests. Needs pytest-mock and syrupy (their conftest imports them).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
which="${1:-all}"
case "$which" in
sqlite | postgres) backends="$which" ;;
all) backends="sqlite,postgres" ;;
*)
    echo "usage: $0 [sqlite|postgres|all]" >&2
    exit 2
    ;;
esac

for module in pytest_mock syrupy; do
    if ! "$python" -c "import $module" 2>/dev/null; then
        echo "LangGraph's test suite needs $module (pip install pytest-mock syrupy)" >&2
        exit 2
    fi
done

version="$("$python" -c 'import importlib.metadata as m; print(m.version("langgraph"))')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "langgraph $version: downloading the source distribution"
"$python" -m pip download --quiet --no-deps --no-binary :all: "langgraph==$version" -d "$work"
tar -xzf "$work/langgraph-$version.tar.gz" -C "$work"
src="$work/langgraph-$version"
if [[ ! -f "$src/tests/conftest.py" || ! -f "$src/tests/test_pregel.py" ]]; then
    echo "the sdist of langgraph $version has no tests/conftest.py or tests/test_pregel.py" >&2
    exit 1
fi
# Every test module that takes the checkpointer fixtures; the plugin keeps the tests that do.
mapfile -t tests < <(cd "$src" && grep -l -E '\b(sync|async)_checkpointer\b' tests/test_*.py)
echo "test modules: ${tests[*]#tests/}"

# Their settings apply (we run from their tree), minus addopts (coverage, snapshot flags).
# NO_DOCKER: their own PostgreSQL/Redis stores and caches stay off (memory and SQLite only).
cd "$src"
run() { # $1: backend; output in $work/$1.log
    NO_DOCKER=true AGENT_CORE_UPSTREAM_BACKENDS="$1" \
        PYTHONPATH="$here:$src${PYTHONPATH:+:$PYTHONPATH}" \
        "$python" -m pytest -p langgraph_plugin -p no:cacheprovider -q -o addopts="" \
        -W ignore::DeprecationWarning "${tests[@]}" >"$work/$1.log" 2>&1
}
# The backends run side by side: the tests mostly wait (sleeps, round trips), so two runs take
# little more than one.
declare -A pids
for backend in ${backends//,/ }; do
    run "$backend" &
    pids[$backend]=$!
done
status=0
total=0
for backend in ${backends//,/ }; do
    echo "== $backend"
    if wait "${pids[$backend]}"; then
        grep -v -E '^[.sxFE]+ *(\[ *[0-9]+%\])?$' "$work/$backend.log" | tail -n 12
    else
        status=1
        cat "$work/$backend.log"
    fi
    count="$(sed -n 's/^passed: \([0-9]*\)$/\1/p' "$work/$backend.log" | tail -n 1)"
    total=$((total + ${count:-0}))
done
echo "passed: $total"
exit $status
