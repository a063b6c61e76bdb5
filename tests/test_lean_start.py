"""A run imports only what it uses: no pandas, charting library, Great Expectations or
database driver while the CLI's run is set up, nor in a whole plain Parquet run (issue 22).

Behaviour, not timing: each check runs in a fresh interpreter and reads its ``sys.modules``.
pyarrow imports pandas on its first conversion of a Python or NumPy value (pyarrow 26): the
run's conversions go through the arrays' buffers instead (``polyv_connector/arrowconv.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_items

#: Never loaded by a plain Parquet run (no suite, no warehouse, no state table).
NOT_IN_A_PLAIN_RUN = (
    "matplotlib",
    "great_expectations",
    "psycopg2",
    "duckdb",
    "MySQLdb",
    "sqlalchemy",
    "polyv_connector.simulator.server",  # the parser names the simulator command, nothing more
    "polyv_connector.sources.sql",  # nor the SQL source and its warehouse modules
    "polyv_connector.warehouse.confine",
)

SHOW = "print('LOADED', json.dumps(sorted(m for m in {names!r} if sys.modules.get(m) is not None)))"


def _loaded(code: str, env: dict[str, str], names: tuple[str, ...]) -> list[str]:
    script = f"import json, sys\n{code}\n{SHOW.format(names=names)}"
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("LOADED "))
    return list(json.loads(line.removeprefix("LOADED ")))


def test_setting_up_a_parquet_run_imports_no_pandas(tmp_path: Path, env: dict[str, str]) -> None:
    src = write_items(tmp_path / "in.parquet", [("a", "PAY_STATUS", "1")])
    code = f"""
from polyv_connector.cli import build_parser, spec_from_args
from polyv_connector.config import Credentials
from polyv_connector.run import Front, prepare
args = build_parser().parse_args(["run", "--input", {str(src)!r}, "--report", {str(tmp_path / "r.parquet")!r}])
spec = spec_from_args(args)
prepared = prepare(spec, Credentials.from_env(), Front(label=spec.label), check_columns=True)
import polyv_connector.engine.sync, polyv_connector.runpage, polyv_connector.svgchart
"""
    assert _loaded(code, env, ("pandas", *NOT_IN_A_PLAIN_RUN)) == []


def test_a_whole_plain_run_loads_no_pandas_chart_library_suite_or_driver(tmp_path: Path, env: dict[str, str]) -> None:
    # Some values need JSON escaping, one is rejected, one is a duplicate: the paths a plain run takes.
    rows = [(f"v{i}", "PAY_STATUS", f'"{i}\\n') for i in range(50)] + [
        ("v0", "PAY_STATUS", '"0\\n'),
        (" x", "PAY_STATUS", "1"),
    ]
    src = write_items(tmp_path / "in.parquet", rows)
    report = tmp_path / "r.parquet"
    code = f"""
from polyv_connector.cli import main
assert main(["run", "--input", {str(src)!r}, "--report", {str(report)!r}]) == 0
"""
    assert _loaded(code, env, ("pandas", *NOT_IN_A_PLAIN_RUN)) == []
    assert report.with_suffix(".html").exists()  # the page was drawn, without a chart library


def test_a_run_builds_no_other_commands_parser(tmp_path: Path, env: dict[str, str]) -> None:
    code = f"""
from polyv_connector import cli
cli.cmd_run = lambda args: 0
assert cli.main(["-v", "run", "--input", "x.parquet", "--report", {str(tmp_path / "r.parquet")!r}]) == 0
"""
    others = ("polyv_connector.cli_plan", "polyv_connector.history", "polyv_connector.simulator.cli")
    assert _loaded(code, env, others) == []
    assert _loaded("from polyv_connector import cli\ncli.build_parser()", env, others) == list(others)
