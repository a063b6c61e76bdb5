"""The package's import graph, read with ``ast`` (nothing is imported): no circle between modules
at module level, and no arrow from a lower layer up to a higher one.

An import inside a function runs when the function does, so it cannot close a circle at import
time; it still counts for the layer rules (a lower layer must not know a higher one at all).
Imports under ``if TYPE_CHECKING:`` name types only and never run: they count for neither.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "polyv_connector"

#: (importing modules, imported modules, why): a module name or a package prefix ending in ".".
FORBIDDEN = [
    ("polyv_connector.warehouse.", "polyv_connector.state.", "warehouse/ is database plumbing under the state"),
    ("polyv_connector.state.", "polyv_connector.engine.", "the state is recorded into by the engine, not the reverse"),
    ("polyv_connector.paths", "polyv_connector.runspec", "paths.py is a leaf: it knows paths, not settings"),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _target(name: str) -> str | None:
    """The package module ``name`` is, or lies in (``a.b.C`` -> ``a.b``), None outside the package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, nodes: list[ast.AST], top: bool) -> Iterator[tuple[str, bool]]:
    """(imported package module, at module level) for each import in ``nodes``."""
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from _imports(module, node.orelse, top)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                found = _target(alias.name)
                if found:
                    yield found, top
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                # ``from a import b`` imports the module a.b when there is one, else a name of a.
                found = _target(f"{base}.{alias.name}")
                if found:
                    yield found, top
        inner_top = top and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for field in ("body", "orelse", "finalbody", "handlers"):
            children = getattr(node, field, None)
            if isinstance(children, list):
                yield from _imports(module, [c for c in children if isinstance(c, ast.AST)], inner_top)


@cache
def _edges() -> dict[str, set[tuple[str, bool]]]:
    graph: dict[str, set[tuple[str, bool]]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[module] = {(t, top) for t, top in _imports(module, list(tree.body), True) if t != module}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _matches(module: str, pattern: str) -> bool:
    return module.startswith(pattern) if pattern.endswith(".") else module == pattern


def test_the_graph_reader_sees_the_package():
    graph = _edges()
    assert "polyv_connector.run" in graph
    assert ("polyv_connector.errors", True) in graph["polyv_connector.run"]
    # A lazy import (inside a function) is seen, and known as not at module level.
    assert ("polyv_connector.run", False) in graph["polyv_connector.airflow.hooks"]


def test_the_circle_finder_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_at_module_level():
    module_level = {m: {t for t, top in edges if top} for m, edges in _edges().items()}
    assert _circles(module_level) == []


@pytest.mark.parametrize(("importer", "imported", "why"), FORBIDDEN, ids=[f"{a}->{b}" for a, b, _ in FORBIDDEN])
def test_no_arrow_up_the_layers(importer, imported, why):
    wrong = sorted(
        f"{module} imports {target}"
        for module, edges in _edges().items()
        if _matches(module, importer)
        for target, _ in edges
        if _matches(target, imported)
    )
    assert wrong == [], why
