"""The Python layer has one direction (Note [Conversion plan] in python/sbsconv/plan.py): no
module of python/sbsconv imports, at its top or inside a function, a module that imports it
back, directly or around a longer circle; and the user's options know nothing of the rest."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "python" / "sbsconv"
EXTENSIONS = ("sbsconv._core",)  # compiled: imports nothing of the package


def module_files() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its text. `from P import m`
    where every name is a submodule is an edge to those submodules only (Python runs P's
    __init__ first, but that is the package's own loading, not this module's dependency)."""
    files = module_files()
    known = set(files) | set(EXTENSIONS)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in known)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
                if len(subs) < len(node.names) and base in known:
                    edges.add(base)
                edges.update(subs)
        graph[name] = edges - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert "sbsconv.plan" in graph and "sbsconv.conversion" in graph
    circles = cycles(graph)
    described = ["; ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in circles]
    assert circles == [], "\n".join(described)


def test_the_cycle_finder_finds_a_circle():
    # the check itself can fail: a circle of three and a self-contained chain
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_options_import_nothing_of_the_package_but_errors():
    # ConvertOptions is what the user asked: pure data, its vocabulary and its checks (the plan
    # does the rest)
    assert import_graph()["sbsconv.options"] <= {"sbsconv.errors"}


def test_every_entry_point_builds_its_run_with_the_one_plan_builder():
    # convert, export_depth and the parts of split films build their engine runs in
    # sbsconv.plan; none assembles the engine's options itself
    for module in ("conversion", "exporting"):
        text = (PACKAGE / f"{module}.py").read_text()
        assert "build_plan(" in text and "_core.Engine(" not in text
    assert (PACKAGE / "engine.py").read_text().count("_core.Engine(") == 1
