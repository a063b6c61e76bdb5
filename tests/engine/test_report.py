"""The report the engine writes: ``report_rows`` (every item, or all but the unchanged)."""

from __future__ import annotations

from pathlib import Path

from polyv_connector import SyncOptions, sync
from polyv_connector.report import ParquetReport
from polyv_connector.simulator import FaultConfig
from polyv_connector.sources.parquet import ParquetSource
from tests.conftest import FAST, read_report, write_items

ROWS = [(f"v{i}", "PAY_STATUS", f"x{i}") for i in range(300)]


def _run(tmp_path: Path, creds, rows, name: str, **kw):
    src = write_items(tmp_path / f"{name}.in.parquet", rows)
    opts = SyncOptions(send=FAST, state_dir=str(tmp_path / "state"), **kw)
    res = sync(ParquetSource(str(src)), creds, opts, ParquetReport(tmp_path / f"{name}.parquet"))
    return res, read_report(tmp_path / f"{name}.parquet")


def test_changes_leaves_out_only_the_unchanged_rows_and_counts_them(tmp_path, sim, creds) -> None:
    _run(tmp_path, creds, ROWS, "1", report_rows="changes")
    sim.set_faults(FaultConfig(poison_values=("new7",)))
    rows = list(ROWS)
    rows[3] = ("v3", "PAY_STATUS", "new3")
    rows[7] = ("v7", "PAY_STATUS", "new7")
    rows += [(None, "PAY_STATUS", "no viewer"), ("v9", "PAY_STATUS", "x9")]  # rejected, duplicate
    res, report = _run(tmp_path, creds, rows, "2", report_rows="changes")
    kept = {r["status"] for r in report}
    assert "unchanged" not in kept and {"sent", "failed", "rejected"} <= kept
    unchanged = res.counts["unchanged"]
    assert unchanged > 290 and len(report) == len(rows) - unchanged
    summary = res.to_dict()
    assert summary["reportRows"] == "changes"
    assert summary["reportRowsWritten"] == len(report)
    assert summary["reportRowsDropped"] == {"unchanged": unchanged}


def test_a_quiet_night_writes_an_empty_but_valid_report(tmp_path, sim, creds) -> None:
    _run(tmp_path, creds, ROWS, "1")
    res, report = _run(tmp_path, creds, ROWS, "2", report_rows="changes")
    assert res.counts["unchanged"] == 300 and report == []
    assert res.to_dict()["reportRowsWritten"] == 0


def test_all_is_the_default_and_dry_run_rows_are_changes(tmp_path, sim, creds) -> None:
    res, report = _run(tmp_path, creds, ROWS, "1")
    assert len(report) == 300 and res.to_dict()["reportRows"] == "all"
    changed = [(v, f, "dry") for v, f, _ in ROWS[:5]] + ROWS[5:]
    dry, report = _run(tmp_path, creds, changed, "2", dry_run=True, report_rows="changes")
    assert [r["status"] for r in report] == ["dry_run"] * 5 and dry.counts["unchanged"] == 295
