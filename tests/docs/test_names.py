"""Names in README.md and docs/ exist in the code.

Checked in the prose (tables included; code blocks are tests/docs/test_commands.py's): every
backticked snake_case or camelCase identifier (arguments, settings, params, columns, summary
keys) occurs in the code, but for a short list of other systems' names; every
backticked ``--flag`` is an option of ``polyv-sync`` (any subcommand) or on the short list of
other tools' flags below; every backticked ``polyv_*`` name occurs in the code (Variables,
connections, tables, DAG ids, arguments), and one shaped like a DAG id is one; every
``[polyv] key`` is a config setting the deployment declares; every ``polyv_connector.…`` dotted
path resolves to a module, or a name defined in one (read with ``ast``, nothing imported); every
backticked file path under the repository's folders exists. The "what to do" tables of
troubleshooting cover every exit code and every reason code.
"""

from __future__ import annotations

import argparse
import ast
import re
from functools import cache
from pathlib import Path

import pytest

from polyv_connector import exit_codes, reasons
from polyv_connector.cli import build_parser
from polyv_connector.deployment import DEPLOYMENT
from scripts.make_docs import dag_params
from tests.docs.markdown import DOC_FILES, ROOT, prose

PACKAGE = ROOT / "polyv_connector"
#: Flags of Airflow, ruff, pytest and friends the docs mention.
OTHER_FLAGS = frozenset(
    {"--conf", "--dag-id", "--from-date", "--to-date", "--use-executor", "--check", "--constraint", "--durations"}
)
#: Other systems' names the docs mention (GX, Kubernetes, PostgreSQL): not ours to find in the code.
OTHER_NAMES = frozenset(
    {"partial_unexpected_index_list", "pod_template_file", "search_path", "pg_read_server_files", "union_by_name"}
)
#: Folders whose backticked paths must exist.
PATH_ROOTS = ("polyv_connector/", "dags/", "scripts/", "tests/", "bench/", "expectations/", "docs/")
SPAN = re.compile(r"`([^`\n]+)`")


def _spans() -> list[tuple[Path, str]]:
    return [(p, m.group(1).strip()) for p in DOC_FILES for m in SPAN.finditer(prose(p))]


@cache
def _derived_names() -> frozenset[str]:
    """Names the code builds rather than spells: the lock tables from their prefix, and the
    state table an upgrade keeps beside the new one."""
    from polyv_connector import runspec
    from polyv_connector.state.db_locks import LOCK_TABLES

    state = runspec.SETTINGS["state_table"].default
    report = runspec.SETTINGS["report_table"].default or "polyv_sync_report"
    return frozenset({*(f"{LOCK_TABLES}_{s}" for s in ("seq", "lease", "holder")), f"{state}_v2", f"{report}_runs"})


def _refused_function(name: str) -> bool:
    """A database function the source-SQL check refuses: the docs name them as examples of its
    patterns (``pg_ls_dir`` for ``pg_ls_*``), so they are known when a pattern matches."""
    from polyv_connector.warehouse.refused import REFUSED_FUNCTIONS, _matcher

    return any((m := _matcher(d)) is not None and m.match(name.lower()) for d in REFUSED_FUNCTIONS)


@cache
def _script_flags() -> frozenset[str]:
    """The flags of the benchmark and helper scripts the docs run."""
    files = [*(ROOT / "bench").glob("*.py"), *(ROOT / "scripts").glob("*.py")]
    flag = re.compile(r"add_argument\(\s*\"(--[\w-]+)\"")
    return frozenset(f for p in files for f in flag.findall(p.read_text(encoding="utf-8")))


def _all_options(parser: argparse.ArgumentParser) -> set[str]:
    found: set[str] = set()
    for action in parser._actions:
        found |= {o for o in action.option_strings if o.startswith("--")}
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _all_options(sub)
    return found


@cache
def _code_text() -> str:
    files = [
        *PACKAGE.rglob("*.py"),
        *(ROOT / "dags").glob("*.py"),
        *(ROOT / "scripts").glob("*.py"),
        *(ROOT / "bench").glob("*.py"),
        *(ROOT / "expectations").glob("*.json"),
    ]
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


def _names_of(node: ast.stmt) -> set[str]:
    """The names a statement defines (a def, a class, an assignment, an import)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    if isinstance(node, ast.ImportFrom):
        return {a.asname or a.name for a in node.names}
    return set()


def _lazy_exports(tree: ast.Module) -> set[str]:
    """Names a module lists in ``__all__`` (a lazy export through a module ``__getattr__``)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and "__all__" in _names_of(node):
            return set(ast.literal_eval(node.value))
    return set()


def _defined(module: Path, names: list[str]) -> bool:
    """Whether ``names`` (``Class.attr`` at most two deep) are defined at the module's top level."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    if len(names) == 1 and names[0] in _lazy_exports(tree):
        return True
    scope: list[ast.stmt] = tree.body
    for name in names:
        found = next((node for node in scope if name in _names_of(node)), None)
        if found is None:
            return False
        scope = found.body if isinstance(found, ast.ClassDef | ast.FunctionDef) else []
    return True


def resolves(dotted: str) -> bool:
    """Whether ``polyv_connector.a.b.Name.attr`` names a module or something defined in one."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        module = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if module.is_file():
            return i == len(parts) or _defined(module, parts[i:])
    return False


def test_flags_exist() -> None:
    known = _all_options(build_parser()) | OTHER_FLAGS | _script_flags()
    bad = {
        (p.name, flag)
        for p, span in _spans()
        if span.startswith("--")
        for flag in [re.split(r"[ =\[]", span)[0]]
        if flag not in known
    }
    assert bad == set()


def test_polyv_names_exist() -> None:
    dags = dag_params()
    bad = set()
    for p, span in _spans():
        for name in re.findall(r"\bpolyv_[a-z0-9_]+\b", span):
            if name.startswith(("polyv_viewer_sync", "polyv_viewer_backfill")) and name not in dags:
                bad.add((p.name, name, "not a DAG id"))
            elif name not in _derived_names() and not re.search(rf"\b{name}\b", _code_text()):
                bad.add((p.name, name, "not in the code"))
    assert bad == set()


def test_identifiers_exist() -> None:
    """Every backticked snake_case name (an argument, a setting, a param, a column, a table) and
    camelCase name (a summary key, a report column) occurs in the code."""
    bad = set()
    for p, span in _spans():
        for name in re.findall(r"^(?:[a-z][a-z0-9]*_[a-z0-9_]+|[a-z]+[A-Z][A-Za-z0-9]*)$", span):
            known = name in OTHER_NAMES or name in _derived_names() or _refused_function(name)
            if not known and not re.search(rf"\b{name}\b", _code_text()):
                bad.add((p.name, name))
    assert bad == set()


def test_polyv_config_settings_exist() -> None:
    declared = {s.name for s in DEPLOYMENT if s.kind == "config"}
    text = "\n".join(prose(p) for p in DOC_FILES)
    named = {f"[polyv] {k}" for k in re.findall(r"\[polyv\] (\w+)", text)}
    assert named and named <= declared, named - declared


def test_dotted_paths_resolve() -> None:
    bad = {
        (p.name, dotted)
        for p, span in _spans()
        for dotted in re.findall(r"\bpolyv_connector(?:\.[A-Za-z_]\w*)+", span)
        if not resolves(dotted.rstrip("."))
    }
    assert bad == set()


def test_files_named_exist() -> None:
    bad = set()
    for p, span in _spans():
        path = (span.split() or [""])[0].rstrip(".,:;")
        checked = path.startswith(PATH_ROOTS) and "<" not in path and "*" not in path
        if checked and not (ROOT / path).exists():
            bad.add((p.name, path))
    assert bad == set()


def test_troubleshooting_says_what_to_do_for_every_code() -> None:
    text = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    by_exit = text.split("### What to do, by exit code", 1)[1].split("##", 1)[0]
    rows = {c for line in by_exit.splitlines() for c in re.findall(r"^\| ([\d, ]+) \|", line)}
    numbers = {int(n) for row in rows for n in row.split(",")}
    assert numbers == {e.code for e in exit_codes.ALL}
    by_reason = text.split("### What to do, by reason code", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z_]+)`", by_reason))
    assert {r.code for r in reasons.ALL} <= named


@pytest.mark.parametrize(
    ("dotted", "exists"),
    [
        ("polyv_connector.runspec.SETTINGS", True),
        ("polyv_connector.engine.result.SyncResult.to_dict", True),
        ("polyv_connector.sync", True),
        ("polyv_connector.airflow", True),
        ("polyv_connector.runspec.NOPE", False),
        ("polyv_connector.nope", False),
    ],
)
def test_the_path_resolver(dotted: str, exists: bool) -> None:
    assert resolves(dotted) is exists
