"""The package's import layout: no import cycles, leaf modules, and lazy package ``__init__``s.

Cycles make import order matter (a module half-initialised when another reads from it), and an
eager ``__init__`` makes ``import agent_core.errors`` pay for the stores, caches and bus. These
tests read the source with ``ast`` rather than importing it, so they check every module that
exists, whatever other work is in flight.

What counts as an import edge ``A -> B`` (``B`` a module of ``agent_core``):

* ``import agent_core.x.y`` and ``from agent_core.x import y`` (absolute or relative) anywhere in
  ``A`` that runs: at module level, inside functions and methods, in ``try`` blocks and in the
  ``else`` branch of ``if TYPE_CHECKING``. A function-level import still runs, just later.
* ``from pkg import Name`` where ``pkg/__init__.py`` serves ``Name`` lazily (it defines a
  module-level ``__getattr__``) counts as an edge to ``Name``'s home module too, read from the
  package's ``if TYPE_CHECKING:`` imports: that is the module ``__getattr__`` will import.

What does not count:

* imports inside ``if TYPE_CHECKING:`` (never executed; they are how annotations avoid cycles);
* the implicit import of parent packages (``import agent_core.bus.base`` also runs
  ``agent_core/bus/__init__.py``): package ``__init__``s are kept free of eager imports instead,
  which ``test_package_inits_import_nothing_eagerly`` checks for the packages that re-export.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import agent_core

PACKAGE = "agent_core"
SRC = Path(agent_core.__file__).resolve().parent

# --- reading the source --------------------------------------------------------------------


def _module_name(src: Path, path: Path) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(src: Path = SRC) -> dict[str, Path]:
    return {_module_name(src, p): p for p in sorted(src.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@dataclass
class _Imports:
    """The imports of one module: ``(target module, imported names)`` pairs, by kind."""

    runtime: list[tuple[str, list[str]]] = field(default_factory=list)
    type_only: list[tuple[str, list[str]]] = field(default_factory=list)
    lazy_getattr: bool = False


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _read(module: str, path: Path) -> _Imports:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = _Imports()
    out.lazy_getattr = any(
        isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body
    )
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        sink = out.type_only if type_only else out.runtime
        if isinstance(node, ast.Import):
            sink.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve_from(module, is_package, node)
            sink.append((target, [alias.name for alias in node.names]))
        for sub in ast.iter_child_nodes(node):
            visit(sub, type_only)

    visit(tree, False)
    return out


def _ours(name: str, package: str = PACKAGE) -> bool:
    return name == package or name.startswith(package + ".")


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Runtime import edges between the modules of the package at ``src`` (see the module
    docstring); by default ``agent_core``."""
    package = src.name
    modules = _modules(src)
    imports = {name: _read(name, path) for name, path in modules.items()}
    # Names that a lazy package serves through __getattr__, and their home modules.
    lazy_homes: dict[str, dict[str, str]] = {}
    for name, found in imports.items():
        if found.lazy_getattr:
            lazy_homes[name] = {
                imported: target
                for target, names in found.type_only
                for imported in names
                if _ours(target, package)
            }
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, found in imports.items():
        for target, names in found.runtime:
            if not _ours(target, package):
                continue
            if not names:  # import agent_core.x.y
                graph[name].add(target)
                continue
            for imported in names:
                submodule = f"{target}.{imported}"
                if submodule in modules:  # from agent_core import codec
                    graph[name].add(submodule)
                    continue
                graph[name].add(target)
                home = lazy_homes.get(target, {}).get(imported)
                if home is not None:
                    graph[name].add(home)
        graph[name] &= modules.keys()  # drop what does not exist (yet): not our concern here
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan; the graph is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, by breadth-first search."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle in component {sorted(component)}")  # pragma: no cover


# --- the tests -----------------------------------------------------------------------------


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in cycles)


def test_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_function_level_imports() -> None:
    # cli imports the demo inside cmd_demo: that edge must be in the graph.
    assert "agent_core.demo" in import_graph()["agent_core.cli"]


def test_import_graph_rules(tmp_path: Path) -> None:
    """What counts as an edge, on a made-up package."""
    files = {
        "__init__.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from pkg.b import B\n"
            "else:\n"
            "    import pkg.e\n"
            "def __getattr__(name): ...\n"
        ),
        "a.py": "def f():\n    from pkg import B\n",
        "b.py": "try:\n    from . import c\nexcept ImportError:\n    pass\n",
        "c.py": "from .sub.d import D\nimport os, pkg.sub\n",
        "e.py": "",
        "sub/__init__.py": "",
        "sub/d.py": "from ..c import x\nfrom pkg import e\nimport json\n",
    }
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert import_graph(tmp_path / "pkg") == {
        "pkg": {"pkg.e"},
        "pkg.a": {"pkg", "pkg.b"},  # the lazy re-export resolves to its home module
        "pkg.b": {"pkg.c"},
        "pkg.c": {"pkg.sub", "pkg.sub.d"},
        "pkg.e": set(),
        "pkg.sub": set(),
        "pkg.sub.d": {"pkg.c", "pkg.e"},
    }
    assert find_cycles(import_graph(tmp_path / "pkg")) == [["pkg.c", "pkg.sub.d", "pkg.c"]]


LEAVES = {"agent_core.errors": set(), "agent_core.models": {"agent_core.errors"}}


@pytest.mark.parametrize("module", sorted(LEAVES))
def test_leaf_modules_import_nothing_of_the_package(module: str) -> None:
    # Every import counts here, TYPE_CHECKING ones included: a leaf stays a leaf for mypy too.
    found = _read(module, _modules()[module])
    targets = {t for t, _ in [*found.runtime, *found.type_only] if _ours(t)}
    assert targets <= LEAVES[module], f"{module} imports {sorted(targets - LEAVES[module])}"


@pytest.mark.parametrize("package", ["agent_core", "agent_core.sessions"])
def test_package_inits_import_nothing_eagerly(package: str) -> None:
    found = _read(package, _modules()[package])
    assert found.lazy_getattr
    assert [t for t, _ in found.runtime if _ours(t)] == []


def _loaded_after(statement: str) -> set[str]:
    code = (
        f"import sys, json\n{statement}\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({PACKAGE!r}))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout))


HEAVY = (
    "agent_core.stores",
    "agent_core.sessions.session_manager",
    "agent_core.cache",
    "agent_core.bus",
    "agent_core.tiers",
)


def _heavy(loaded: set[str]) -> Iterator[str]:
    for name in sorted(loaded):
        if any(name == h or name.startswith(h + ".") for h in HEAVY):
            yield name


@pytest.mark.parametrize(
    "statement",
    [
        "import agent_core.errors",
        "import agent_core.models",
        "from agent_core.sessions.session_models import AgentSession",
        "from agent_core import ConflictError, AgentSession",
    ],
)
def test_light_imports_stay_light(statement: str) -> None:
    loaded = _loaded_after(statement)
    assert list(_heavy(loaded)) == [], f"{statement!r} loaded {list(_heavy(loaded))}"


def test_errors_import_loads_only_errors() -> None:
    assert _loaded_after("import agent_core.errors") == {"agent_core", "agent_core.errors"}


def test_models_import_loads_only_models_and_errors() -> None:
    loaded = _loaded_after("import agent_core.models")
    assert loaded == {"agent_core", "agent_core.errors", "agent_core.models"}


def test_reexports_are_the_same_objects() -> None:
    from agent_core import errors, models
    from agent_core.sessions import session_models

    for name in session_models.__all__:
        assert getattr(session_models, name) is getattr(models, name)
    assert set(session_models.__all__) == set(models.__all__)
    assert agent_core.ConflictError is errors.ConflictError
    assert agent_core.AgentSession is models.AgentSession
    with pytest.raises(AttributeError):
        _ = agent_core.NoSuchName  # the lazy __getattr__ still refuses unknown names


def test_lazy_manager_reexports() -> None:
    # Loads the manager: fails while the manager itself cannot be imported.
    from agent_core import SessionManager
    from agent_core.sessions import AgentSession
    from agent_core.sessions import SessionManager as FromSessions
    from agent_core.sessions.session_manager import SessionManager as Home

    assert SessionManager is FromSessions is Home
    assert AgentSession is agent_core.AgentSession
    assert set(agent_core.__all__) <= set(dir(agent_core))
