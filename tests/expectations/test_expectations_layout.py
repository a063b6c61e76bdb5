"""The expectations package's layout: one module per job, no import cycle, GX imported lazily.

Each check runs in a fresh interpreter: in the test session, GX and every module are
already imported, which would hide both a cycle and an eager import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "polyv_connector.expectations"
PACKAGE_DIR = REPO / "polyv_connector" / "expectations"
MODULES = sorted(f"{PACKAGE}.{p.stem}" for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__")
HEAVY = ("great_expectations", "pandas", "pyarrow", "numpy")


# Imports the package's modules without running its __init__ (which imports the validator,
# hence everything): a stand-in package object with the same __path__, so that the module
# named first really is imported first, alone with what it imports itself.
BARE_PACKAGE = (
    "import sys, types\n"
    "import polyv_connector\n"
    f"pkg = types.ModuleType({PACKAGE!r})\n"
    f"pkg.__path__ = [{str(PACKAGE_DIR)!r}]\n"
    f"sys.modules[{PACKAGE!r}] = pkg\n"
)


def run_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_package_is_split_by_job() -> None:
    assert {m.rsplit(".", 1)[1] for m in MODULES} >= {
        "planning",
        "evaluation",
        "gates",
        "results",
        "validator",
        "suite",
        "merge",
    }


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_every_module_imports_in_a_fresh_interpreter_in_either_order(order: str) -> None:
    # A cycle between two modules fails in one of the two orders ("partially initialized
    # module"), or leaves a name missing; each module's first import here is its own.
    modules = MODULES if order == "forward" else MODULES[::-1]
    code = BARE_PACKAGE + (
        "import importlib\n"
        f"for name in {modules!r}:\n"
        "    print(name, name in sys.modules)\n"
        "    importlib.import_module(name)\n"
    )
    lines = run_python(code).splitlines()
    assert [line.split()[0] for line in lines] == modules
    assert lines[0].endswith("False")  # the first one at least was imported alone


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_without_great_expectations_pandas_or_pyarrow(module: str) -> None:
    code = BARE_PACKAGE + (f"import {module}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    assert run_python(code) == "[]"


def test_the_package_does_not_import_great_expectations_at_import_time() -> None:
    code = (
        f"import sys\nfrom {PACKAGE} import SuiteValidator, bundled_suite_path\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    assert run_python(code) == "[]"


def _package_imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports anywhere: top level, in functions, under TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(f"{PACKAGE}."))
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:  # from polyv_connector.expectations import merge, ...
                found.update(f"{PACKAGE}.{a.name}" for a in node.names if f"{PACKAGE}.{a.name}" in MODULES)
            elif node.module.startswith(f"{PACKAGE}."):
                found.add(node.module)
    return found


def test_no_import_cycle_even_through_lazy_or_type_checking_imports() -> None:
    # A cycle hidden in a function body or under TYPE_CHECKING never fails an import, but it
    # still ties the modules together; so read every import statement, not just the executed ones.
    graph = {m: _package_imports(PACKAGE_DIR / f"{m.rsplit('.', 1)[1]}.py") for m in MODULES}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, (*path, module))
        done.add(module)

    for module in MODULES:
        visit(module, ())
    # Only the validator wires the parts together; they do not know it.
    assert not any(f"{PACKAGE}.validator" in deps for m, deps in graph.items() if m != f"{PACKAGE}.validator")
