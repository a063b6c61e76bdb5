"""Change limits (issue 20) through real ``polyv-sync`` processes against the simulator: a 10,000
item account whose source changed 60% of its values, a whole source that came back with 30% of
its rows, NULL values cleared, a first load stopped half-way and resumed, and hostile limits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from polyv_connector.simulator import FaultConfig, PolyvSimulator
from polyv_connector.state.folder import SyncState
from tests.conftest import APP_ID, APP_SECRET, write_items

ROOT = Path(__file__).resolve().parents[2]
N = 10_000


def _rows(n: int, tag: str = "x") -> list[tuple[str | None, str | None, str | None]]:
    return [(f"viewer-{i}", "PAY_STATUS", f"{tag}{i}") for i in range(n)]


def _args(tmp: Path, sim: PolyvSimulator, src: Path, name: str, *extra: str) -> tuple[list[str], dict[str, str]]:
    env = {
        **os.environ,
        "POLYV_APP_ID": APP_ID,
        "POLYV_APP_SECRET": APP_SECRET,
        "POLYV_API_BASE_URL": sim.base_url,
        "PYTHONPATH": str(ROOT),
    }
    args = [sys.executable, "-m", "polyv_connector.cli", "run", "--input", str(src), "--no-check-fields"]
    args += ["--report", str(tmp / f"{name}.parquet"), "--summary-json", str(tmp / f"{name}.json")]
    args += ["--state-dir", str(tmp / "state"), *extra]
    return args, env


def _cli(tmp: Path, sim: PolyvSimulator, rows: list, name: str, *extra: str) -> tuple[int, dict, str]:
    src = write_items(tmp / f"{name}.in.parquet", rows)
    args, env = _args(tmp, sim, src, name, *extra)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    summary_path = tmp / f"{name}.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return done.returncode, summary, done.stdout + done.stderr


def _state(tmp: Path) -> dict[str, bytes]:
    root = tmp / "state"
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "runseq" and not p.name.endswith(".lock")
    }


@pytest.fixture
def fast_sim():
    with PolyvSimulator(apps={APP_ID: APP_SECRET}, rate_limit=None) as s:
        yield s


def test_60_percent_changed_exits_4_sends_nothing_and_keeps_the_state(tmp_path, fast_sim) -> None:
    code, first, _ = _cli(tmp_path, fast_sim, _rows(N), "first")
    assert code == 0 and first["counts"]["sent"] == N and first["changes"]["new"] == N
    state, saves, values = _state(tmp_path), fast_sim.stats.save_requests, dict(fast_sim.values)
    changed = _rows(6000, "new") + _rows(N)[6000:]
    code, summary, out = _cli(tmp_path, fast_sim, changed, "second")
    assert code == 4 and fast_sim.stats.save_requests == saves and fast_sim.values == values
    assert _state(tmp_path) == state
    assert summary["exitCode"] == 4 and summary["changes"] == {"new": 0, "changed": 6000, "cleared": 0}
    (breach,) = summary["limitBreaches"]
    assert breach["code"] == "change_limit" and breach["setting"] == "max_changed_fraction"
    assert "6,000 changes" in breach["message"] and "10,000 items" in breach["message"]
    assert summary["countsByReason"] == {"change_limit": 6000, "unchanged": 4000}
    assert "change limit reached, nothing is sent" in out and "changes planned: new 0, changed 6,000" in out
    report = pq.read_table(tmp_path / "second.parquet")
    assert report.num_rows == N
    assert set(report.column("status").to_pylist()) == {"not_attempted", "unchanged"}
    assert sorted(set(report.column("reasonCode").to_pylist())) == ["change_limit", "unchanged"]
    # The setting that overrides it: the same source with the limit raised is sent.
    code, summary, _ = _cli(tmp_path, fast_sim, changed, "third", "--max-changed-fraction", "1")
    assert code == 0 and summary["counts"]["sent"] == 6000
    assert fast_sim.values[(APP_ID, "viewer-0", "PAY_STATUS")] == "new0"


def test_a_whole_source_with_30_percent_of_its_rows_exits_4(tmp_path, fast_sim) -> None:
    code, first, _ = _cli(tmp_path, fast_sim, _rows(N), "first", "--whole-source")
    assert code == 0 and first["removed"] == 0
    saves = fast_sim.stats.save_requests
    code, summary, _ = _cli(tmp_path, fast_sim, _rows(3000), "second", "--whole-source")
    assert code == 4 and fast_sim.stats.save_requests == saves
    assert [b["code"] for b in summary["limitBreaches"]] == ["source_shrank"]
    assert summary["limitBreaches"][0]["setting"] == "max_source_shrink"
    assert summary["removed"] == 7000
    # Without --whole-source the same file is a delta: nothing changed, nothing is sent.
    code, summary, _ = _cli(tmp_path, fast_sim, _rows(3000), "third")
    assert code == 0 and summary["removed"] is None and summary["counts"]["unchanged"] == 3000


def test_null_values_clear_sends_empty_values_and_reject_keeps_rejecting(tmp_path, fast_sim) -> None:
    rows = [("a", "PAY_STATUS", None), ("b", "PAY_STATUS", "1")]
    code, summary, _ = _cli(tmp_path, fast_sim, rows, "reject", "--expectations", "default")
    # Today's behaviour: the NULL is rejected, and half the items rejected trips the suite's gate.
    assert code == 4 and summary["countsByReason"]["null_value"] == 1 and summary["gateFailures"]
    assert (APP_ID, "a", "PAY_STATUS") not in fast_sim.values
    code, summary, _ = _cli(tmp_path, fast_sim, rows, "clear", "--null-values", "clear", "--expectations", "default")
    assert code == 0 and summary["counts"]["sent"] == 2 and summary["changes"]["cleared"] == 1
    assert summary["validation"]["success"] is True
    assert fast_sim.values[(APP_ID, "a", "PAY_STATUS")] == ""
    report = pq.read_table(tmp_path / "clear.parquet").to_pylist()
    assert report[0]["status"] == "sent" and report[0]["customFieldValue"] == ""


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--max-changed-fraction", "abc"), ("--max-changed-fraction", "-1"), ("--max-source-shrink", "1.5")],
)
def test_a_hostile_limit_exits_2_naming_the_flag_before_any_request(tmp_path, fast_sim, flag, value) -> None:
    code, _, out = _cli(tmp_path, fast_sim, _rows(3), "bad", flag, value)
    assert code == 2 and f"configuration error: {flag}" in out
    assert fast_sim.stats.api_requests == 0


def test_a_first_load_stopped_half_way_is_resumed_without_tripping_the_limit(tmp_path) -> None:
    """The bug this guards against: the rerun of an interrupted first load saw most items as
    changes against what the state knew and stopped. The limit counts what the state knew as of
    the last *completed* run: none yet, so the first-run exemption holds."""
    rows = _rows(3000)
    src = write_items(tmp_path / "in.parquet", rows)
    with PolyvSimulator(apps={APP_ID: APP_SECRET}, faults=FaultConfig(latency_s=0.05), rate_limit=None) as slow:
        args, env = _args(tmp_path, slow, src, "first", "--batch-size", "10", "--concurrency", "2")
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(slow.values) < 1200:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        stored = len(slow.values)
        assert 1000 < stored < 3000
        assert SyncState(tmp_path / "state", APP_ID).read_meta() == {}  # not completed: no record
        slow.set_faults(FaultConfig())
        args, env = _args(tmp_path, slow, src, "second", "--batch-size", "1000")
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        summary = json.loads((tmp_path / "second.json").read_text())
    assert done.returncode == 0, done.stderr
    # Keys pre-marked before the stop are held unconfirmed: resent, not counted as changes; the
    # rest are new keys.
    assert summary["limitBreaches"] == [] and summary["changes"]["changed"] == 0
    assert summary["counts"]["sent"] >= 3000 - stored
    assert summary["counts"]["sent"] + summary["counts"]["unchanged"] == 3000
    assert SyncState(tmp_path / "state", APP_ID).read_meta()["knownItems"] == 3000
