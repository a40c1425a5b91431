"""The import structure, walked with ``ast``: no import cycle among the project's modules, and the model library
``ifdd/`` never imports the distributed side (ray, optuna, mlflow, orchestrator)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ifdd", "orchestrator")
FORBIDDEN_IN_IFDD = ("ray", "optuna", "mlflow", "orchestrator")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every import in the file (module level and inside functions), resolved to a project module when it is one;
    third-party imports keep their top-level name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            # the longest prefix that is a project module (``from x import y`` may name a function y)
            while name and name not in modules and "." in name:
                name = name.rpartition(".")[0]
            found.add(name)
    found.discard(here)
    return found


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> the project modules it imports, module -> everything it imports)."""
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    modules = {module_name(p) for p in files}
    everything = {module_name(p): imports_of(p, modules) for p in files}
    return {m: imps & modules for m, imps in everything.items()}, everything


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycle_in_the_project():
    project, _ = graph()
    assert find_cycle(project) is None, " -> ".join(find_cycle(project))


def test_ifdd_never_imports_the_distributed_side():
    _, everything = graph()
    bad = {m: sorted(i for i in imps if i.split(".")[0] in FORBIDDEN_IN_IFDD)
           for m, imps in everything.items() if m.split(".")[0] == "ifdd"}
    assert not {m: b for m, b in bad.items() if b}


@pytest.mark.parametrize("edges,cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
])
def test_the_cycle_finder_finds_a_planted_cycle(edges, cycle):
    assert find_cycle(edges) == cycle


def test_the_walker_sees_lazy_imports_inside_functions():
    edges, everything = graph()
    # the commands import their work inside their functions (a fast `ifdd --help`): those edges count
    assert "orchestrator.search.runner" in edges["orchestrator.commands.search"]
    assert "ray" in everything["orchestrator.ray_session"]
