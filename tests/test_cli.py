"""The command line: exit codes, configuration errors that name the setting, and the secret."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from polyv_connector.cli import fewer_malloc_arenas, main
from polyv_connector.simulator import FaultConfig
from tests.conftest import APP_SECRET, write_items


def cli(*args: str) -> int:
    return main(list(args))


def test_run_exit_0_and_summary(tmp_path, env, sim, capsys) -> None:
    src = write_items(tmp_path / "in.parquet", [("a", "PAY_STATUS", "1"), ("b", "VIP_LEVEL", "2")])
    code = cli(
        "run", "--input", str(src), "--report", str(tmp_path / "r.parquet"), "--summary-json", str(tmp_path / "s.json")
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "2 items: sent 2" in out and f"report: {tmp_path / 'r.parquet'}" in out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["counts"]["sent"] == 2 and summary["ok"] is True and summary["exitCode"] == 0


def test_report_rows_changes_on_a_rerun_writes_only_what_changed(tmp_path, env, sim) -> None:
    rows = [(f"v{i}", "PAY_STATUS", str(i)) for i in range(20)]
    src = write_items(tmp_path / "in.parquet", rows)
    common = ("--state-dir", str(tmp_path / "state"), "--report-rows", "changes")
    assert cli("run", "--input", str(src), "--report", str(tmp_path / "r1.parquet"), *common) == 0
    src = write_items(tmp_path / "in.parquet", [("v0", "PAY_STATUS", "new"), *rows[1:]])
    summary_json = str(tmp_path / "s.json")
    report = str(tmp_path / "r2.parquet")
    assert cli("run", "--input", str(src), "--report", report, "--summary-json", summary_json, *common) == 0
    assert pq.read_table(report).column("viewerId").to_pylist() == ["v0"]
    summary = json.loads(Path(summary_json).read_text())
    assert summary["reportRowsWritten"] == 1 and summary["reportRowsDropped"] == {"unchanged": 19}


def test_run_exit_1_when_rows_fail(tmp_path, env, sim) -> None:
    sim.set_faults(FaultConfig(poison_values=("BAD",)))
    src = write_items(tmp_path / "in.parquet", [("a", "PAY_STATUS", "BAD"), ("b", "PAY_STATUS", "ok")])
    assert cli("run", "--input", str(src), "--report", str(tmp_path / "r.parquet")) == 1
    statuses = pq.read_table(tmp_path / "r.parquet").column("status").to_pylist()
    assert statuses == ["failed", "sent"]


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["--batch-size", "1001"], "--batch-size"),
        (["--concurrency", "0"], "--concurrency"),
        (["--max-rps", "500"], "--max-rps"),
        (["--field", "PAY_STATUS"], "--field"),
        (["--input", "/no/such/file.parquet"], "--input"),
        (["--viewer-id-column", "user_id"], "--input"),
    ],
)
def test_bad_configuration_exits_2_naming_the_setting(tmp_path, env, sim, capsys, args, setting) -> None:
    src = write_items(tmp_path / "in.parquet", [("a", "PAY_STATUS", "1")])
    base = ["run", "--input", str(src), "--report", str(tmp_path / "r.parquet")]
    code = cli(*base, *args)
    err = capsys.readouterr().err
    assert code == 2 and f"configuration error: {setting}" in err
    assert sim.stats.api_requests == 0


def test_missing_secret_exits_2_naming_the_variable(tmp_path, env, sim, monkeypatch, capsys) -> None:
    monkeypatch.delenv("POLYV_APP_SECRET")
    src = write_items(tmp_path / "in.parquet", [("a", "PAY_STATUS", "1")])
    assert cli("run", "--input", str(src), "--report", str(tmp_path / "r.parquet")) == 2
    assert "POLYV_APP_SECRET" in capsys.readouterr().err
    assert sim.stats.api_requests == 0


def test_wrong_secret_exits_3(tmp_path, env, sim, monkeypatch, capsys, caplog) -> None:
    monkeypatch.setenv("POLYV_APP_SECRET", "wrong-secret-value")
    src = write_items(tmp_path / "in.parquet", [("a", "PAY_STATUS", "1")])
    assert cli("run", "--input", str(src), "--report", str(tmp_path / "r.parquet")) == 3
    out, err = capsys.readouterr()
    # Said once, where sending stopped (the log, on stderr; pytest may capture it as log
    # records); the summary line names the cause.
    assert (out + err + caplog.text).count("invalid signature") == 1, out + err + caplog.text
    assert "STOPPED (auth)" in out


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys; from polyv_connector.cli import build_parser\n"
        "try:\n    build_parser().parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('pandas', 'pyarrow', 'great_expectations', 'airflow') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]")


def test_planted_secret_appears_in_no_output(tmp_path, env, sim, capsys, caplog) -> None:
    """Logs (DEBUG included), stdout/stderr, exceptions, the summary and the report never hold the secret."""
    caplog.set_level(logging.DEBUG)
    sim.set_faults(FaultConfig(error_rate=0.3, poison_values=("BAD",), seed=3))
    rows = [(f"v{i}", "PAY_STATUS", "BAD" if i == 5 else APP_SECRET[: i % 20]) for i in range(300)]
    rows.append((APP_SECRET[:3], "NOPE", None))
    src = write_items(tmp_path / "in.parquet", rows)
    report = tmp_path / "r.parquet"
    cli(
        "-v",
        "run",
        "--input",
        str(src),
        "--report",
        str(report),
        "--summary-json",
        str(tmp_path / "s.json"),
        "--batch-size",
        "50",
    )
    # A wrong-secret run exercises the abort path's messages too.
    import os

    os.environ["POLYV_APP_SECRET"] = APP_SECRET + "-x"
    cli("-v", "run", "--input", str(src), "--report", str(tmp_path / "r2.parquet"))
    os.environ["POLYV_APP_SECRET"] = APP_SECRET
    captured = capsys.readouterr()
    outputs = {
        "stdout": captured.out,
        "stderr": captured.err,
        "logs": caplog.text,
        "summary": (tmp_path / "s.json").read_text(),
        "report": pq.read_table(report).to_pandas().drop(columns=["customFieldValue"]).to_csv(),
        "report2": pq.read_table(tmp_path / "r2.parquet").to_pandas().drop(columns=["customFieldValue"]).to_csv(),
    }
    assert outputs["logs"] and outputs["stdout"]
    for name, text in outputs.items():
        assert APP_SECRET not in text, name
    # Values are the user's own data and may contain anything; the report keeps them as sent.
    assert sim.stats.save_requests > 0


def test_secret_objects_do_not_leak_through_repr_or_pickle() -> None:
    import pickle

    from polyv_connector.config import Credentials, Secret

    c = Credentials("app", Secret(APP_SECRET), "http://x")
    assert APP_SECRET not in repr(c) and APP_SECRET not in str(c)
    with pytest.raises(TypeError):
        pickle.dumps(c)


def test_simulator_subcommand_is_wired(tmp_path) -> None:
    from polyv_connector.cli import build_parser

    args = build_parser().parse_args(["simulator", "--port", "0"])
    assert args.func.__module__ == "polyv_connector.simulator.cli"


def test_module_entrypoint_runs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "polyv_connector.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "Exit status" in out and "run" in out


def test_secret_that_is_not_text_is_refused_without_showing_it(tmp_path, env, sim, monkeypatch, capsys) -> None:
    from polyv_connector.config import Credentials, Secret
    from polyv_connector.errors import ConfigError

    bad = Credentials("app", Secret("abc\udcffdefgh"), "http://x")
    with pytest.raises(ConfigError) as exc:
        bad.validate()
    assert "abc" not in str(exc.value)
    assert "\udcff" not in str(exc.value)


def test_urllib3_debug_lines_do_not_carry_the_signature(tmp_path, env, sim, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="urllib3")
    src = write_items(tmp_path / "in.parquet", [("a", "PAY_STATUS", "1")])
    from polyv_connector import SyncOptions, sync
    from polyv_connector.config import Credentials
    from polyv_connector.report import ParquetReport
    from polyv_connector.sources.parquet import ParquetSource

    sync(ParquetSource(str(src)), Credentials.from_env(), SyncOptions(), ParquetReport(tmp_path / "r.parquet"))
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert any("custom-field" in line for line in lines)
    assert all("sign=***" in line for line in lines if "sign=" in line)


def test_input_that_breaks_mid_run_leaves_no_partial_report(tmp_path, env, sim, capsys) -> None:
    import pyarrow as pa

    # The second row group's page header is garbage: the file opens, then breaks while read.
    # (Text that is not UTF-8 no longer breaks a run: such rows are rejected, see tests/hostile.)
    path = tmp_path / "in.parquet"
    rows = 2_000
    table = pa.table(
        {
            "viewerId": [f"v{i}" for i in range(rows)],
            "customFieldId": ["PAY_STATUS"] * rows,
            "customFieldValue": ["x"] * rows,
        }
    )
    pq.write_table(table, path, row_group_size=1_000, compression="none")
    offset = pq.ParquetFile(path).metadata.row_group(1).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    code = cli("run", "--input", str(path), "--report", str(tmp_path / "r.parquet"))
    assert code == 2
    assert "corrupt Parquet data" in capsys.readouterr().err
    assert list(tmp_path.glob("r.parquet*")) == []


def _run_help() -> str:
    import argparse

    from polyv_connector.cli import add_run_arguments

    parser = argparse.ArgumentParser(
        prog="polyv-sync run", formatter_class=lambda prog: argparse.HelpFormatter(prog, width=1000)
    )
    add_run_arguments(parser)
    return parser.format_help()


def _flag_help(help_text: str, flag: str) -> str:
    line = next(line for line in help_text.splitlines() if line.strip().startswith(flag + " "))
    return line.strip()[len(flag) :].strip()


def test_no_check_fields_help_says_the_flag_skips_the_check() -> None:
    from polyv_connector import runspec
    from polyv_connector.cli import add_run_arguments, spec_from_args

    text = _flag_help(_run_help(), "--no-check-fields")
    assert text.startswith("skip the preflight of the customFieldIds"), text
    # ... and the flag does what its help says: the check is off.
    import argparse

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    args = parser.parse_args(["--input", "in.parquet", "--report", "r.parquet", "--no-check-fields"])
    assert spec_from_args(args).options.check_fields is False
    assert runspec.SETTINGS["check_fields"].default is True  # the operator argument keeps the positive text
    assert runspec.SETTINGS["check_fields"].help_for("operator").startswith("preflight")


def test_every_switch_that_turns_a_default_on_setting_off_says_so() -> None:
    from polyv_connector import runspec

    help_text = _run_help()
    for setting in runspec.SETTINGS.values():
        if setting.cli and setting.default is True:
            text = _flag_help(help_text, setting.cli)
            assert text.split()[0] in ("skip", "do", "don't", "turn", "never"), (setting.cli, text)


def test_top_level_help_shows_no_rest_markup() -> None:
    from polyv_connector.cli import build_parser

    text = build_parser().format_help()
    assert "polyv-sync: the command line over polyv_connector.sync." in text
    assert "``" not in text and ":mod:" not in text and ":func:" not in text


def test_the_program_ends_with_its_exit_code_and_everything_written(tmp_path, env, sim) -> None:
    """``polyv-sync`` (main() with no arguments) ends the process without the interpreter's
    teardown: the exit code, the printed lines, the report, the page and the summary are all
    there all the same."""
    sim.set_faults(FaultConfig(poison_values=("BAD",)))
    src = write_items(tmp_path / "in.parquet", [("a", "PAY_STATUS", "BAD"), ("b", "PAY_STATUS", "ok")])
    summary = tmp_path / "s.json"
    args = ["run", "--input", str(src), "--report", str(tmp_path / "r.parquet"), "--summary-json", str(summary)]
    done = subprocess.run(
        [sys.executable, "-m", "polyv_connector.cli", *args], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert done.returncode == 1, done.stderr
    assert "2 items: sent 1, failed 1" in done.stdout and "run page: " in done.stdout
    assert json.loads(summary.read_text())["exitCode"] == 1
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 2 and (tmp_path / "r.html").exists()


@pytest.mark.parametrize(("given", "seen"), [(None, "0"), ("1", "1")])
def test_the_program_defaults_mimallocs_eager_arena_commit_off_before_pyarrow_loads(given, seen) -> None:
    # 40-50 MB of a 200k-item run's peak memory (docs/benchmarks.md); a value in the
    # environment wins, and main(argv) called from Python leaves the environment alone.
    script = (
        "import os, sys\nimport polyv_connector.cli as cli\n"
        "cli._run = lambda argv: print(os.environ.get('MIMALLOC_ARENA_EAGER_COMMIT'), 'pyarrow' in sys.modules) or 0\n"
        "cli.main(['--help'] if sys.argv[1:] else None)\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "MIMALLOC_ARENA_EAGER_COMMIT"}
    if given is not None:
        environ["MIMALLOC_ARENA_EAGER_COMMIT"] = given
    program = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environ)
    assert program.returncode == 0 and program.stdout.split() == [seen, "False"], program.stderr
    called = subprocess.run([sys.executable, "-c", script, "x"], capture_output=True, text=True, env=environ)
    assert called.stdout.split() == [given or "None", "False"], called.stderr


@pytest.mark.parametrize(("given", "seen"), [(None, "system"), ("mimalloc", "mimalloc")])
def test_the_programs_arrow_memory_pool_is_the_c_librarys_unless_the_environment_says(given, seen) -> None:
    # mimalloc kept freed buffers in arenas of its own: 7-9 MB of a 200k-item run's peak
    # (docs/benchmarks.md). The pool pyarrow really uses is checked, after the program's start.
    script = (
        "import sys\nimport polyv_connector.cli as cli\n"
        "def run(argv):\n"
        "    import pyarrow as pa\n"
        "    print(pa.default_memory_pool().backend_name)\n"
        "    return 0\n"
        "cli._run = run\n"
        "cli.main(['--help'] if sys.argv[1:] else None)\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if given is not None:
        environ["ARROW_DEFAULT_MEMORY_POOL"] = given
    program = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environ)
    assert program.returncode == 0 and program.stdout.split() == [seen], program.stderr
    # Called from Python (the operator, a test), the process's allocator is its owner's.
    called = subprocess.run([sys.executable, "-c", script, "x"], capture_output=True, text=True, env=environ)
    assert called.stdout.split() == [given or "mimalloc"], called.stderr


def test_the_program_caps_the_c_librarys_malloc_arenas_unless_the_environment_sets_them() -> None:
    # Each sending thread's arena kept its freed pages (3-5 MB of a 200k-item run's peak).
    assert fewer_malloc_arenas({"MALLOC_ARENA_MAX": "8"}) is False  # glibc read it at start
    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc":
        assert fewer_malloc_arenas({}) is True
    script = (
        "import sys\nimport polyv_connector.cli as cli\n"
        "capped = []\n"
        "cli.fewer_malloc_arenas = lambda environ: capped.append(dict(environ)) or True\n"
        "cli._run = lambda argv: print(len(capped)) or 0\n"
        "cli.main(['--help'] if sys.argv[1:] else None)\n"
    )
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True).stdout.split() == ["1"]
    called = subprocess.run([sys.executable, "-c", script, "x"], capture_output=True, text=True)
    assert called.stdout.split() == ["0"], called.stderr
