"""A run that reads 0 rows says so (issue 17, also found 1): it is not success-with-nothing-to-do.

The warning reaches the log (WARNING), the summary (``warnings``), and the run page (a visible
notice); the exit code stays 0. In Airflow the data interval is added to it.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from polyv_connector import Credentials, SyncOptions, exit_codes, sync
from polyv_connector.airflow import interval
from polyv_connector.engine.result import FIRST_LOAD_DOC
from polyv_connector.report import ParquetReport
from polyv_connector.runpage import render_run_page
from polyv_connector.simulator import PolyvSimulator
from polyv_connector.sources.parquet import ParquetSource
from polyv_connector.summary_keys import BY_NAME
from tests.conftest import FAST, write_items


def _run(tmp_path: Path, creds: Credentials, rows: list) -> object:
    src = write_items(tmp_path / "in.parquet", rows)
    return sync(ParquetSource(str(src)), creds, SyncOptions(send=FAST), ParquetReport(tmp_path / "report.parquet"))


def test_a_run_that_reads_0_rows_warns_in_the_log_summary_and_page(
    tmp_path: Path, sim: PolyvSimulator, creds: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="polyv_connector"):
        res = _run(tmp_path, creds, [])
    assert res.exit_code == exit_codes.OK.code  # nothing is wrong with the run as such
    summary = res.to_dict()
    assert "warnings" in BY_NAME and len(summary["warnings"]) == 1
    warning = summary["warnings"][0]
    assert warning.startswith("read 0 rows from ") and FIRST_LOAD_DOC in warning
    assert any(r.levelno == logging.WARNING and r.getMessage() == warning for r in caplog.records)
    page = render_run_page(res)
    assert "OK, WITH WARNINGS" in page and 'class="notice"' in page and "read 0 rows from" in page


def test_a_run_that_reads_rows_has_no_warning(tmp_path: Path, sim: PolyvSimulator, creds: Credentials) -> None:
    res = _run(tmp_path, creds, [("v1", "PAY_STATUS", "1")])
    assert res.to_dict()["warnings"] == [] and 'class="notice"' not in render_run_page(res)


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, fmt: str, *args: object) -> None:
        self.lines.append(fmt % args)


def test_airflow_adds_the_data_interval_to_the_0_row_warning(
    tmp_path: Path, sim: PolyvSimulator, creds: Credentials
) -> None:
    res = _run(tmp_path, creds, [])
    start = dt.datetime(2025, 3, 1, 2, tzinfo=dt.UTC)
    context = {
        "data_interval_start": start,
        "data_interval_end": start + dt.timedelta(days=1),
        "logical_date": dt.datetime(2025, 3, 3, tzinfo=dt.UTC),
    }
    log = _Log()
    interval.note_zero_rows(res, context, log)
    (warning,) = res.warnings
    assert "a run dated 2025-03-03T00:00:00+00:00 reads updated_at in [2025-03-01T02:00:00+00:00, " in warning
    assert "2025-03-02T02:00:00+00:00)" in warning and len(log.lines) == 1
    # A run without a data interval (a manual run of an unscheduled DAG) keeps the plain warning.
    (tmp_path / "b").mkdir()
    res2 = _run(tmp_path / "b", creds, [])
    interval.note_zero_rows(res2, {"data_interval_start": None}, log)
    assert "updated_at" not in res2.warnings[0]
