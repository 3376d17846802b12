"""The house rules a newcomer relies on, checked: an import graph without cycles, small
modules, one install name for the baselines, a short README, nothing pointing outside."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "strcvit_bench").rglob("*.py"), *(ROOT / "baselines").rglob("*.py")])
MAX_LINES = 350


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "baselines":  # installed as strcvit_bench.baselines
        rel = Path("strcvit_bench", *rel.parts)
    name = ".".join(rel.with_suffix("").parts)
    return name.removesuffix(".__init__")


MODULES = {module_name(p) for p in SOURCES}


def imports(path: Path, module_scope_only: bool = False) -> list[str]:
    """Modules `path` imports (relative imports resolved; `from package import submodule` is
    the submodule), at module scope or anywhere."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_scope_only else ast.walk(tree)
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            out += subs if len(subs) == len(node.names) else [base, *subs]
    return out


def package_of(module: str) -> str | None:
    """The unit of the package graph: strcvit_bench's first-level package or module."""
    parts = module.split(".")
    if parts[0] != "strcvit_bench" or len(parts) == 1:
        return None
    return parts[1]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_import_graph_has_no_cycle():
    """Every import counts, lazy ones inside functions too: a cycle between packages is a cycle
    in the design (evaluation → training → streams → evaluation was one)."""
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        mine = package_of(module_name(path))
        for target in imports(path):
            theirs = package_of(target)
            if mine and theirs and theirs != mine:
                graph.setdefault(mine, set()).add(theirs)
    assert graph["training"] >= {"evaluation", "methods"}  # the graph is read, not empty
    assert find_cycle(graph) is None, f"package import cycle: {' -> '.join(find_cycle(graph) or [])}"
    assert "training" not in graph.get("evaluation", set())


def test_the_module_import_graph_has_no_cycle_at_import_time():
    modules = {module_name(p): p for p in SOURCES}
    graph = {m: {t for t in imports(p, module_scope_only=True) if t in modules and t != m} for m, p in modules.items()}
    assert find_cycle(graph) is None, f"module import cycle: {' -> '.join(find_cycle(graph) or [])}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_is_small(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_baselines_are_imported_by_their_installed_name():
    """`baselines` is also a PyPI package: ours installs as strcvit_bench.baselines only."""
    files = [*SOURCES, *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in files
                 if any(t == "baselines" or t.startswith("baselines.") for t in imports(p))]
    assert offenders == []


def test_pyproject_installs_every_package_folder():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {module_name(p) for p in SOURCES if p.name == "__init__.py"}
    assert listed == folders
    assert config["package-dir"]["strcvit_bench.baselines"] == "baselines"


def test_the_cli_and_the_registries_import_without_torch():
    code = ("import sys, strcvit_bench.cli\n"
            "from strcvit_bench.methods.registry import METHODS\n"
            "assert 'strlora' in METHODS.names()\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_readme_is_a_front_page_and_nothing_points_outside_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert len(readme) <= 15_000
    for link in ("docs/extending.md", "docs/methods.md", "docs/metrics.md", "docs/streams.md"):
        assert link in readme and (ROOT / link).is_file()
    files = [ROOT / "README.md", ROOT / "pyproject.toml", *(ROOT / "docs").glob("*.md"), *SOURCES,
             *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").glob("*.*"), *(ROOT / "stream_specs").glob("*")]
    needles = ("../" + "shared", "DESIGN" + ".md")  # spelled apart, so this file holds neither
    outside = [str(p.relative_to(ROOT)) for p in files
               if p.is_file() and any(s in p.read_text(errors="replace") for s in needles)]
    assert outside == []
