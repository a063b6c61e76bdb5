"""Hostile and broken paths, through the real CLI in a subprocess against the simulator.

Each case: how to set it up (args, environment, files), the exit code, a fragment of the one
error line, and what must be left untouched. A refused run must send nothing, leave the input
and any file it pointed at unchanged, and print no traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from polyv_connector.simulator import PolyvSimulator
from tests.conftest import APP_ID, APP_SECRET, FIELDS, write_items

ROWS = [("a", "PAY_STATUS", "1"), ("b", "VIP_LEVEL", "2")]


@dataclass
class Setup:
    """What a case runs with: extra CLI args, environment overrides, files that must not change."""

    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    keep: list[Path] = field(default_factory=list)
    report: str | None = None  # None: a fresh report path in an output folder


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path, Path], Setup]  # (tmp folder, input file) -> Setup
    code: int
    fragment: str
    needs_non_root: bool = False


def _fifo(tmp: Path, src: Path) -> Setup:
    fifo = tmp / "report.fifo"
    os.mkfifo(fifo)
    return Setup(report=str(fifo))


def _symlink(tmp: Path, src: Path) -> Setup:
    victim = tmp / "victim.txt"
    victim.write_text("precious")
    link = tmp / "link.parquet"
    link.symlink_to(victim)
    return Setup(report=str(link), keep=[victim])


def _existing_dir(tmp: Path, src: Path) -> Setup:
    (tmp / "adir").mkdir()
    return Setup(report=str(tmp / "adir"))


def _input_dir(tmp: Path, src: Path) -> Setup:
    data = tmp / "dataset"
    data.mkdir()
    part = write_items(data / "part-0.parquet", ROWS)
    return Setup(args=["--input", str(data)], report=str(data / "report.parquet"), keep=[part])


def _input_dir_nested(tmp: Path, src: Path) -> Setup:
    data = tmp / "dataset"
    (data / "sub").mkdir(parents=True)
    part = write_items(data / "part-0.parquet", ROWS)
    # Spelled with a detour through '..' and a trailing file name: still inside the input.
    return Setup(args=["--input", str(data)], report=str(data / "sub" / ".." / "r.parquet"), keep=[part])


def _summary_missing_dir(tmp: Path, src: Path) -> Setup:
    return Setup(args=["--summary-json", str(tmp / "no" / "such" / "dir" / "s.json")])


def _summary_is_input(tmp: Path, src: Path) -> Setup:
    return Setup(args=["--summary-json", str(src)])


def _summary_is_report(tmp: Path, src: Path) -> Setup:
    report = tmp / "out" / "same.parquet"
    return Setup(args=["--summary-json", str(report)], report=str(report))


def _state_dir_is_file(tmp: Path, src: Path) -> Setup:
    f = tmp / "state.txt"
    f.write_text("not a folder")
    return Setup(args=["--state-dir", str(f)], keep=[f])


def _dotdot_app_id(tmp: Path, src: Path) -> Setup:
    state = tmp / "state"
    state.mkdir()
    planted = tmp / "meta.json"  # what a state folder named '..' would hold: must survive
    planted.write_text("{}")
    return Setup(args=["--state-dir", str(state), "--reset-state"], env={"POLYV_APP_ID": ".."}, keep=[planted])


def _slash_app_id(tmp: Path, src: Path) -> Setup:
    state = tmp / "state"
    state.mkdir()
    return Setup(args=["--state-dir", str(state)], env={"POLYV_APP_ID": "../../etc"})


def _non_utf8_app_id(tmp: Path, src: Path) -> Setup:
    # A byte that is not UTF-8 reaches Python as a lone surrogate: it must fail before signing.
    return Setup(env={"POLYV_APP_ID": "app\udcff"})


def _long_app_id(tmp: Path, src: Path) -> Setup:
    return Setup(env={"POLYV_APP_ID": "a" * 65})


def _meta_is_list(tmp: Path, src: Path) -> Setup:
    state = tmp / "state"
    (state / APP_ID).mkdir(parents=True)
    meta = state / APP_ID / "meta.json"
    meta.write_text("[1, 2, 3]")
    return Setup(args=["--state-dir", str(state)], keep=[meta])


def _unreadable_input_dir(tmp: Path, src: Path) -> Setup:
    data = tmp / "locked"
    data.mkdir()
    write_items(data / "part-0.parquet", ROWS)
    data.chmod(0)
    return Setup(args=["--input", str(data)])


def _s3_unreachable(tmp: Path, src: Path) -> Setup:
    url = "s3://bucket/in.parquet?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"
    return Setup(args=["--input", url], env={"AWS_EC2_METADATA_DISABLED": "true"})


def _report_parent_is_file(tmp: Path, src: Path) -> Setup:
    blocker = tmp / "blocker"
    blocker.write_text("a file")
    return Setup(report=str(blocker / "r.parquet"), keep=[blocker])


def _report_is_suite_dir_like_input_file(tmp: Path, src: Path) -> Setup:
    # The report named through a symlinked folder that leads back to the input's folder.
    data = tmp / "dataset"
    data.mkdir()
    part = write_items(data / "part-0.parquet", ROWS)
    alias = tmp / "alias"
    alias.symlink_to(data)
    return Setup(args=["--input", str(data)], report=str(alias / "r.parquet"), keep=[part])


CASES = [
    Case("report is the input", lambda t, s: Setup(report=str(s)), 2, "--report: "),
    Case("report inside the input dir", _input_dir, 2, "inside the input directory"),
    Case("report inside the input dir via ..", _input_dir_nested, 2, "inside the input directory"),
    Case("report inside the input dir via symlink", _report_is_suite_dir_like_input_file, 2, "--report"),
    Case("report is /dev/null", lambda t, s: Setup(report="/dev/null"), 2, "not a regular file"),
    Case("report is a FIFO", _fifo, 2, "not a regular file"),
    Case("report is a symlink", _symlink, 2, "symbolic link"),
    Case("report is a directory", _existing_dir, 2, "is a directory"),
    Case("report folder is a file", _report_parent_is_file, 2, "--report"),
    Case("summary in a missing folder", _summary_missing_dir, 2, "--summary-json: "),
    Case("summary is the input", _summary_is_input, 2, "--summary-json: "),
    Case("summary is the report", _summary_is_report, 2, "--summary-json: "),
    Case("timeout inf", lambda t, s: Setup(args=["--timeout", "inf"]), 2, "--timeout: "),
    Case("timeout nan", lambda t, s: Setup(args=["--timeout", "nan"]), 2, "--timeout: "),
    Case("max-rps infinity", lambda t, s: Setup(args=["--max-rps", "Infinity"]), 2, "--max-rps: "),
    Case("state dir is a file", _state_dir_is_file, 2, "--state-dir: "),
    Case("appId '..' with --reset-state", _dotdot_app_id, 2, "POLYV_APP_ID: "),
    Case("appId with slashes", _slash_app_id, 2, "POLYV_APP_ID: "),
    Case("appId not UTF-8", _non_utf8_app_id, 2, "POLYV_APP_ID: "),
    Case("appId too long", _long_app_id, 2, "POLYV_APP_ID: "),
    Case("meta.json holds a list", _meta_is_list, 2, "not a JSON object"),
    Case("unreadable input dir", _unreadable_input_dir, 2, "--input: ", needs_non_root=True),
    Case("unreachable s3 input", _s3_unreachable, 75, "unavailable, retry later: --input: "),
]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polyv_connector.cli", "run", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        errors="replace",
    )


@pytest.fixture(scope="module")
def sim() -> PolyvSimulator:
    with PolyvSimulator(apps={APP_ID: APP_SECRET}, fields=FIELDS) as s:
        yield s  # type: ignore[misc]


def _env(sim: PolyvSimulator, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYV_")}
    env.update(
        {
            "POLYV_APP_ID": APP_ID,
            "POLYV_APP_SECRET": APP_SECRET,
            "POLYV_API_BASE_URL": sim.base_url,
            "POLYV_RUNTIME_DIR": env.get("TMPDIR", "/tmp"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
    )
    env.update(extra)
    return env


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_path_is_refused(case: Case, tmp_path: Path, sim: PolyvSimulator) -> None:
    if case.needs_non_root and os.geteuid() == 0:
        pytest.skip("root reads any folder: permissions cannot make it unreadable")
    src = write_items(tmp_path / "in.parquet", ROWS)
    setup = case.setup(tmp_path, src)
    report = setup.report or str(tmp_path / "out" / "r.parquet")
    args = ["--input", str(src), "--report", report, "--budget-rps", "100", *setup.args]
    kept = [src, *setup.keep]
    before = {p: _digest(p) for p in kept}
    dev_null_kind = os.stat("/dev/null").st_mode
    requests_before = sim.stats.api_requests
    try:
        proc = _run_cli(args, _env(sim, setup.env))
    finally:
        for p in tmp_path.iterdir():
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
    err_lines = [line for line in proc.stderr.splitlines() if line.startswith("polyv-sync:")]
    assert proc.returncode == case.code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(err_lines) == 1 and case.fragment in err_lines[0], proc.stderr
    assert sim.stats.api_requests == requests_before, "the simulator received a request"
    assert {p: _digest(p) for p in kept} == before
    assert os.stat("/dev/null").st_mode == dev_null_kind
    # Refused before anything was written: no report, no partial file next to it.
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())
    # The secret, and anything about it, stays out of every output.
    for text in (proc.stdout, proc.stderr):
        assert APP_SECRET not in text
    assert str(len(APP_SECRET)) not in err_lines[0]


def test_app_id_dotdot_leaves_the_parent_alone(tmp_path: Path, sim: PolyvSimulator) -> None:
    """The state folder of appId '..' would be the state dir's parent: nothing there changes."""
    src = write_items(tmp_path / "in.parquet", ROWS)
    state = tmp_path / "state"
    state.mkdir()
    listing = sorted(p.name for p in tmp_path.iterdir())
    proc = _run_cli(
        ["--input", str(src), "--report", str(tmp_path / "r.parquet"), "--state-dir", str(state), "--reset-state"],
        _env(sim, {"POLYV_APP_ID": ".."}),
    )
    assert proc.returncode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
    assert list(state.iterdir()) == []


def test_the_corpus_control_run_succeeds(tmp_path: Path, sim: PolyvSimulator) -> None:
    """The harness itself works: a sane run with every output set exits 0 and writes them."""
    src = write_items(tmp_path / "in.parquet", ROWS)
    report, summary = tmp_path / "out" / "r.parquet", tmp_path / "s.json"
    proc = _run_cli(
        [
            "--input",
            str(src),
            "--report",
            str(report),
            "--summary-json",
            str(summary),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        _env(sim, {}),
    )
    assert proc.returncode == 0, proc.stderr
    assert report.is_file() and json.loads(summary.read_text())["ok"] is True
    assert (tmp_path / "state" / APP_ID / "meta.json").is_file()


# A filesystem plugin with a bug, registered the way fsspec plugins are: the CLI must answer with
# one line and 70, never a traceback and never 1 (which means "some items failed").
_BROKEN_FS = """
import sys
import fsspec
from fsspec.spec import AbstractFileSystem

class BrokenFS(AbstractFileSystem):
    protocol = "brokenfs"

    def info(self, path, **kwargs):
        raise RuntimeError("a bug in a filesystem plugin")

    def ls(self, path, detail=True, **kwargs):
        raise RuntimeError("a bug in a filesystem plugin")

fsspec.register_implementation("brokenfs", BrokenFS)
from polyv_connector.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_an_unexpected_error_is_one_line_and_exit_70(tmp_path: Path, sim: PolyvSimulator, verbose: bool) -> None:
    args = ["-v"] if verbose else []
    args += ["run", "--input", "brokenfs://bucket/in.parquet", "--report", str(tmp_path / "r.parquet")]
    requests_before = sim.stats.api_requests
    proc = subprocess.run(
        [sys.executable, "-c", _BROKEN_FS, *args],
        env=_env(sim, {}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 70, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("polyv-sync:")]
    assert len(lines) == 1 and "internal error: RuntimeError: a bug in a filesystem plugin" in lines[0]
    assert ("Traceback" in proc.stderr) is verbose  # the details only when asked for
    assert APP_SECRET not in proc.stderr + proc.stdout
    assert sim.stats.api_requests == requests_before
