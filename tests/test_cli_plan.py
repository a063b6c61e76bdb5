"""``polyv-sync plan`` and ``apply`` as real processes against the simulator: the apply sends the
plan's items, not the source's, and refuses an altered, foreign or stale plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polyv_connector import planfile
from tests.conftest import APP_ID, APP_SECRET, read_report, write_items

ROOT = Path(__file__).resolve().parents[1]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "polyv_connector.cli", *args], env=full, capture_output=True, text=True, timeout=120
    )


def _rows(n: int, value: str, field: str = "VIP_LEVEL") -> list[tuple[str, str, str]]:
    return [(f"v{i:05d}", field, f"{value}{i}") for i in range(n)]


@pytest.fixture
def synced(tmp_path, env, sim):
    """An account whose state knows 20 items (all sent)."""
    state = tmp_path / "state"
    src = write_items(tmp_path / "first.parquet", _rows(20, "a"))
    done = _cli(env, "run", "--input", str(src), "--report", str(tmp_path / "r0.parquet"), "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    return state


def _plan(env, tmp_path, src, state, *extra, verbose=False):
    out = tmp_path / "plan.parquet"
    done = _cli(
        env,
        *(["-v"] if verbose else []),
        "plan",
        "--out",
        str(out),
        "--input",
        str(src),
        "--report",
        str(tmp_path / "plan-report.parquet"),
        "--state-dir",
        str(state),
        *extra,
    )
    return done, out


def test_apply_sends_the_planned_values_not_what_the_source_says_now(tmp_path, env, sim, synced):
    rows = _rows(20, "a")
    rows[:5] = [(v, f, "b" + x[1:]) for v, f, x in rows[:5]]  # 5 changed
    rows.append(("v99999", "VIP_LEVEL", "new-one"))  # 1 new
    src = write_items(tmp_path / "second.parquet", rows)
    saves_before = sim.stats.save_requests
    done, plan = _plan(env, tmp_path, src, synced)
    assert done.returncode == 0, done.stderr
    assert sim.stats.save_requests == saves_before  # the plan sent nothing
    summary = planfile.read_summary(plan)
    assert summary["items"] == 6
    assert summary["byKind"]["changed"] == 5 and summary["byKind"]["new"] == 1
    assert summary["byField"]["VIP_LEVEL"]["changed"] == 5
    assert (tmp_path / "plan-report.html").read_text().count('id="plan"') == 1
    # The source changes again after the plan: the apply must not read it.
    write_items(src, _rows(21, "zzz"))
    report = tmp_path / "apply.parquet"
    applied = _cli(env, "apply", "--plan", str(plan), "--report", str(report))
    assert applied.returncode == 0, applied.stderr
    values = sim.values
    assert values[(APP_ID, "v00000", "VIP_LEVEL")] == "b0"
    assert values[(APP_ID, "v99999", "VIP_LEVEL")] == "new-one"
    assert values[(APP_ID, "v00010", "VIP_LEVEL")] == "a10"
    assert not any(v.startswith("zzz") for v in values.values())
    rows = read_report(report)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"sent"}
    # Recorded in the state: a run of the planned source now sends nothing.
    again = _cli(
        env,
        "run",
        "--input",
        str(tmp_path / "second.parquet"),
        "--report",
        str(tmp_path / "r2.parquet"),
        "--state-dir",
        str(synced),
    )
    assert again.returncode == 0


def test_a_plan_whose_state_moved_is_refused_and_sends_nothing(tmp_path, env, sim, synced):
    src = write_items(tmp_path / "second.parquet", _rows(20, "b"))
    done, plan = _plan(env, tmp_path, src, synced, "--change-limit-min-items", "10", "--max-changed-fraction", "none")
    assert done.returncode == 0, done.stderr
    other = write_items(tmp_path / "other.parquet", _rows(3, "c"))
    moved = _cli(
        env, "run", "--input", str(other), "--report", str(tmp_path / "r1.parquet"), "--state-dir", str(synced)
    )
    assert moved.returncode == 0, moved.stderr
    saves = sim.stats.save_requests
    applied = _cli(env, "apply", "--plan", str(plan), "--report", str(tmp_path / "apply.parquet"))
    assert applied.returncode == 2
    assert "changed since the plan" in applied.stderr or "moved since the plan" in applied.stderr
    assert sim.stats.save_requests == saves


def test_an_edited_plan_is_refused(tmp_path, env, sim, synced):
    src = write_items(tmp_path / "second.parquet", _rows(3, "b"))
    done, plan = _plan(env, tmp_path, src, synced)
    assert done.returncode == 0, done.stderr
    meta = pq.ParquetFile(plan).metadata.metadata
    table = pq.read_table(plan)
    values = table.column("customFieldValue").to_pylist()
    values[0] = "tampered"
    pq.write_table(table.set_column(2, "customFieldValue", pa.array(values)).replace_schema_metadata(meta), plan)
    saves = sim.stats.save_requests
    applied = _cli(env, "apply", "--plan", str(plan), "--report", str(tmp_path / "apply.parquet"))
    assert applied.returncode == 2
    assert "altered" in applied.stderr
    assert sim.stats.save_requests == saves


def test_a_plan_for_another_account_is_refused(tmp_path, env, sim, synced):
    src = write_items(tmp_path / "second.parquet", _rows(3, "b"))
    done, plan = _plan(env, tmp_path, src, synced)
    assert done.returncode == 0, done.stderr
    saves = sim.stats.save_requests
    other = {**env, "POLYV_APP_ID": "another-app"}
    applied = _cli(other, "apply", "--plan", str(plan), "--report", str(tmp_path / "apply.parquet"))
    assert applied.returncode == 2
    assert "another-app" in applied.stderr and "appId" in applied.stderr
    assert sim.stats.save_requests == saves


def test_apply_with_another_state_dir_is_refused(tmp_path, env, sim, synced):
    src = write_items(tmp_path / "second.parquet", _rows(3, "b"))
    done, plan = _plan(env, tmp_path, src, synced)
    assert done.returncode == 0, done.stderr
    applied = _cli(
        env,
        "apply",
        "--plan",
        str(plan),
        "--report",
        str(tmp_path / "a.parquet"),
        "--state-dir",
        str(tmp_path / "elsewhere"),
    )
    assert applied.returncode == 2
    assert "apply it with the plan's own state" in applied.stderr


def test_the_secret_is_in_neither_the_plan_nor_the_output(tmp_path, env, sim, synced):
    src = write_items(tmp_path / "second.parquet", _rows(3, "b"))
    summary_json = tmp_path / "s.json"
    done, plan = _plan(env, tmp_path, src, synced, "--summary-json", str(summary_json), verbose=True)
    assert done.returncode == 0, done.stderr
    assert APP_SECRET.encode() not in plan.read_bytes()
    assert APP_SECRET not in done.stdout + done.stderr
    applied = _cli(env, "-v", "apply", "--plan", str(plan), "--report", str(tmp_path / "a.parquet"))
    assert APP_SECRET not in applied.stdout + applied.stderr
    summary = json.loads(summary_json.read_text())
    assert summary["plan"]["items"] == 3 and APP_SECRET not in summary_json.read_text()


def test_a_breaching_plan_exits_0_with_the_breach_recorded_and_applies_as_planned(tmp_path, env, sim, synced):
    src = write_items(tmp_path / "second.parquet", _rows(20, "b"))  # every value changed
    saves = sim.stats.save_requests
    # The same source as a run: exit 4, nothing sent.
    run = _cli(
        env, "run", "--input", str(src), "--report", str(tmp_path / "r.parquet"), "--state-dir", str(synced),
        "--change-limit-min-items", "10",
    )  # fmt: skip
    assert run.returncode == 4 and sim.stats.save_requests == saves
    done, plan = _plan(env, tmp_path, src, synced, "--change-limit-min-items", "10")
    assert done.returncode == 0, done.stderr
    summary = planfile.read_summary(plan)
    assert summary["breached"] is True and summary["breaches"][0]["code"] == "change_limit"
    assert summary["items"] == 20 and summary["byKind"]["changed"] == 20
    assert sim.stats.save_requests == saves
    # Applying is the approval: limits are not checked again.
    applied = _cli(env, "apply", "--plan", str(plan), "--report", str(tmp_path / "apply.parquet"))
    assert applied.returncode == 0, applied.stderr
    assert sim.values[(APP_ID, "v00003", "VIP_LEVEL")] == "b3"


def test_a_plan_whose_data_quality_gate_fails_exits_4_and_writes_no_plan(tmp_path, env, sim, synced):
    src = write_items(tmp_path / "second.parquet", [("v1", "VIP_LEVEL", None), ("v2", "VIP_LEVEL", "x")])
    done, plan = _plan(env, tmp_path, src, synced, "--max-rejected-fraction", "0.1")
    assert done.returncode == 4, done.stderr
    assert not plan.exists() and not plan.with_name(plan.name + ".partial").exists()


def test_a_partition_plan_is_applied_to_its_own_slice(tmp_path, env, sim, synced):
    src = write_items(tmp_path / "second.parquet", _rows(20, "b"))
    done, plan = _plan(
        env, tmp_path, src, synced, "--partitions", "2", "--partition", "1", "--max-changed-fraction", "none"
    )
    assert done.returncode == 0, done.stderr
    summary = planfile.read_summary(plan)
    assert (summary["partitions"], summary["partition"]) == (2, 1) and 0 < summary["items"] < 20
    summary_json = tmp_path / "apply.json"
    applied = _cli(
        env, "apply", "--plan", str(plan), "--report", str(tmp_path / "a.parquet"), "--summary-json", str(summary_json)
    )
    assert applied.returncode == 0, applied.stderr
    result = json.loads(summary_json.read_text())
    assert (result["partitions"], result["partition"]) == (2, 1)
    assert result["counts"]["sent"] == summary["items"]
    changed = {v for (_, v, _), value in sim.values.items() if value.startswith("b")}
    assert len(changed) == summary["items"]
