"""Every key a run's summary can hold is declared (and so documented) in summary_keys."""

from __future__ import annotations

import ast
from pathlib import Path

from polyv_connector.engine.result import SyncResult
from polyv_connector.summary_keys import BY_NAME, SUMMARY_KEYS

PACKAGE = Path(__file__).resolve().parents[1] / "polyv_connector"


def _tree(relative: str) -> ast.Module:
    return ast.parse((PACKAGE / relative).read_text(encoding="utf-8"))


def _dict_keys(node: ast.AST) -> set[str]:
    return {
        str(k.value) for d in ast.walk(node) if isinstance(d, ast.Dict) for k in d.keys if isinstance(k, ast.Constant)
    }


def test_names_are_unique() -> None:
    assert len(BY_NAME) == len(SUMMARY_KEYS)


def test_to_dict_holds_only_declared_keys() -> None:
    result = SyncResult("r", "a", {}, 0, 0, 0, 0.0, None, False)
    keys = set(result.to_dict())
    assert keys <= set(BY_NAME), keys - set(BY_NAME)
    assert {k.name for k in SUMMARY_KEYS if k.where == "always"} == keys


def test_keys_the_engine_adds_are_declared() -> None:
    """The ``extra=`` of every SyncResult the engine builds, and the report fallback's keys."""
    found: set[str] = set()
    engine = sorted((PACKAGE / "engine").glob("*.py"))
    nodes = [n for path in engine for n in ast.walk(_tree(str(path.relative_to(PACKAGE))))]
    for node in nodes:
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "SyncResult":
            for kw in node.keywords:
                if kw.arg == "extra":
                    found |= _dict_keys(kw.value)
        if isinstance(node, ast.FunctionDef) and any(
            isinstance(c, ast.Constant) and c.value == "reportFallback" for c in ast.walk(node)
        ):
            found |= _dict_keys(node)
    assert {"unchangedInWarehouse", "partition", "partitions", "reportFallback", "reportError"} <= found
    assert found <= set(BY_NAME), found - set(BY_NAME)


def test_keys_the_front_ends_add_are_declared() -> None:
    added: set[str] = set()
    for node in ast.walk(_tree("airflow/summary.py")):
        if isinstance(node, ast.FunctionDef) and node.name == "task_summary":
            for sub in ast.walk(node):
                if isinstance(sub, ast.Subscript) and isinstance(sub.ctx, ast.Store):
                    added.add(sub.slice.value)  # type: ignore[attr-defined]
    for node in ast.walk(_tree("cli.py")):
        if isinstance(node, ast.Dict) and None in node.keys:  # {**result.to_dict(), "runPage": ...}
            added |= {str(k.value) for k in node.keys if isinstance(k, ast.Constant)}
    added |= set(_dict_keys(_tree("expectations/results.py")) & {"validation"})
    assert {"airflowRunId", "reportPath", "runPage", "validation"} <= added
    assert added <= set(BY_NAME), added - set(BY_NAME)
