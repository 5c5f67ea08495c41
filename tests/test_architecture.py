"""The house points one way: app.py -> pages/ -> core/, the command line (core/cli/) on top of core, the
benchmark (core/bench/) beside it, and no import circle anywhere.

The import graph is read from the source with `ast` (every `import` / `from` statement, also those inside
functions, relative ones resolved), not by importing: an import that only runs in one branch is still an
edge, and a test that needs torch to see the graph would be slow.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("core", "pages", "assets")  # packages of the project; app.py is the one top-level module
LIBRARY_MUST_NOT_IMPORT = ("assets", "streamlit", "pages")  # the UI, from the library's point of view

# Edges allowed to close a circle: none. Kept as a hook so a future temporary exception is explicit,
# named edge by edge (importer, imported); test_allowed_edges_still_exist keeps the list from going stale.
ALLOWED_CYCLE_EDGES: set[tuple[str, str]] = set()


def module_name(path: Path, repo: Path = REPO) -> str:
    parts = list(path.relative_to(repo).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(repo: Path = REPO) -> dict[str, Path]:
    files = [repo / "app.py"] if (repo / "app.py").exists() else []
    for root in ROOTS:
        files += sorted((repo / root).rglob("*.py"))
    return {module_name(f, repo): f for f in files if "node_modules" not in f.parts}


def _resolve(name: str, modules) -> str | None:
    """The project module `name` means: itself, or its longest dotted prefix that is one."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, source: str, modules, is_package: bool = False) -> list[tuple[str, int]]:
    """[(imported name, line)] of every import statement in `source`, absolute, external names included
    (so `streamlit` shows up); a `from P import x` where P.x is a project module names P.x."""
    out = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            for alias in node.names:
                sub = f"{base_name}.{alias.name}" if base_name else alias.name
                out.append((sub if sub in modules else base_name, node.lineno))
    return out


def import_graph(repo: Path = REPO) -> tuple[dict[str, set[str]], dict[str, list[tuple[str, int]]]]:
    """({module: project modules it imports}, {module: every (imported name, line), external ones too})."""
    modules = project_modules(repo)
    graph, raw = {}, {}
    for name, path in modules.items():
        raw[name] = imports_of(name, path.read_text(encoding="utf-8"), modules, is_package=path.name == "__init__.py")
        graph[name] = {r for imported, _ in raw[name] if (r := _resolve(imported, modules)) and r != name}
    return graph, raw


def find_cycle(graph: dict[str, set[str]], allowed: set[tuple[str, str]] = frozenset()) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None; edges in `allowed` are left out."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node):
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if (node, nxt) in allowed or nxt not in colour:
                continue
            if colour[nxt] == GREY:
                return stack[stack.index(nxt):] + [nxt]
            if colour[nxt] == WHITE and (found := visit(nxt)):
                return found
        stack.pop()
        colour[node] = BLACK
        return None

    for start in sorted(graph):
        if colour[start] == WHITE and (found := visit(start)):
            return found
    return None


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_violations(graph, raw) -> list[str]:
    """Every import that points the wrong way, as 'importer -> imported (line)'."""
    bad: list[str] = []
    for module, imports in raw.items():
        if not _in(module, "core"):
            continue
        cli_side = _in(module, "core.cli") or module == "core.__main__"
        for imported, line in dict.fromkeys(imports):  # `from x import a, b` is one import of x
            where = f"{module} -> {imported} (line {line})"
            if _in(imported, "core.cli") and not cli_side:
                bad.append(f"{where}: only the command line imports core.cli")
            if any(_in(imported, ui) for ui in LIBRARY_MUST_NOT_IMPORT):
                bad.append(f"{where}: the library never imports the UI")
            if _in(imported, "core.bench") and not (cli_side or _in(module, "core.bench")):
                bad.append(f"{where}: the benchmark is outside the library's import graph (only the CLI imports it)")
    return bad


# ------------------------------------------------------------------------------------ the house
@functools.cache
def _project_graph():
    return import_graph()


def test_no_import_cycle_in_the_project():
    graph, _ = _project_graph()
    assert {"app", "core", "core.cli", "core.train", "pages.train"} <= set(graph)  # the walk saw the project
    cycle = find_cycle(graph, ALLOWED_CYCLE_EDGES)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_layers_point_one_way():
    graph, raw = _project_graph()
    bad = layer_violations(graph, raw)
    assert not bad, "\n".join(bad)


def test_allowed_edges_still_exist():
    """An allow-list entry whose edge is gone must be deleted, so the list only shrinks."""
    graph, _ = _project_graph()
    stale = [f"{a} -> {b}" for a, b in ALLOWED_CYCLE_EDGES if b not in graph.get(a, ())]
    assert not stale, "remove from ALLOWED_CYCLE_EDGES: " + ", ".join(stale)


# --------------------------------------------------------------------- the checker checks itself
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_cycle_through_a_function_level_relative_import_is_found(tmp_path):
    """The old plug-board's circle, cli -> bench -> train -> selection -> cli, every edge but one an import
    inside a function (how the old code hid it)."""
    repo = _tree(tmp_path, {
        "app.py": "import pages.train\n",
        "pages/train.py": "from core import train\n",
        "core/__init__.py": "",
        "core/cli.py": "def cmd():\n    from .bench import run\n",
        "core/bench.py": "from . import train\n",
        "core/train.py": "def f():\n    from .selection import load\n",
        "core/selection.py": "def g():\n    from . import cli\n",
    })
    graph, raw = import_graph(repo)
    assert graph["core.selection"] == {"core.cli"} and graph["core.train"] == {"core.selection"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"core.cli", "core.bench", "core.train", "core.selection"}
    assert find_cycle(graph, {("core.selection", "core.cli")}) is None  # an allow-listed edge breaks it
    bad = layer_violations(graph, raw)
    assert any(b.startswith("core.selection -> core.cli") for b in bad)
    assert not any(b.startswith("core.train -> core.selection") for b in bad)  # a circle, but no layer broken


def test_library_reaching_into_the_ui_or_the_bench_is_flagged(tmp_path):
    repo = _tree(tmp_path, {
        "core/__init__.py": "",
        "core/bench/__init__.py": "from assets.scatter_component import build_payload\n",
        "core/cli/__init__.py": "from ..bench import run\nfrom . import _common\n",
        "core/cli/_common.py": "",
        "core/__main__.py": "from .cli import main\n",
        "core/report.py": "import streamlit as st\n",
        "core/curves.py": "from .cli._common import x\nfrom . import bench\n",
        "assets/scatter_component/__init__.py": "from core.report import class_colour\n",
    })
    graph, raw = import_graph(repo)
    assert graph["core.cli"] == {"core.bench", "core.cli._common"}
    bad = layer_violations(graph, raw)
    flagged = {b.split(" (")[0] for b in bad}
    assert flagged == {"core.bench -> assets.scatter_component", "core.report -> streamlit",
                       "core.curves -> core.cli._common", "core.curves -> core.bench"}
    assert find_cycle(graph) is None


@pytest.mark.parametrize("source, expected", [
    ("from ..paths import home\n", {"core.paths"}),
    ("from .. import paths\n", {"core.paths"}),
    ("from . import _common\n", {"core.cli._common"}),
    ("def f():\n    from ._common import x\n", {"core.cli._common"}),
    ("import core.paths as p\n", {"core.paths"}),
    ("from core.cli import _common, main\n", {"core.cli._common", "core.cli"}),
])
def test_relative_imports_resolve_from_the_importing_package(tmp_path, source, expected):
    repo = _tree(tmp_path, {"core/__init__.py": "", "core/paths.py": "", "core/cli/__init__.py": "",
                            "core/cli/_common.py": "", "core/cli/runs.py": source})
    graph, _ = import_graph(repo)
    assert graph["core.cli.runs"] == expected


def test_test_files_have_unique_names():
    """pytest imports test files by basename (rootdir-relative, no packages): two test_x.py in different
    folders stop the whole collection with "import file mismatch"."""
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(REPO)} and {path.relative_to(REPO)}")
        seen.setdefault(path.name, path)
    assert not clashes, "same test-file name twice: " + "; ".join(clashes)
