"""The engine cuts what people read: a hostile viewerId and POLYV's own error text (issue 19 row 8).

A 100 KB viewerId and a 1 MB error text from the simulator reach ``problems``, the log and the
report's ``reason`` column no longer than :mod:`polyv_connector.bounds` allows; the report keeps
the whole viewerId (it is the item's key).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pyarrow as pa
import pytest

from polyv_connector import Credentials, SyncOptions, sync
from polyv_connector.bounds import CUT_MARK, REASON_CHARS, VIEWER_ID_CHARS
from polyv_connector.engine.report import cut_texts
from polyv_connector.report import ParquetReport
from polyv_connector.simulator import FaultConfig, PolyvSimulator
from polyv_connector.sources.parquet import ParquetSource
from tests.conftest import FAST, read_report, write_items

HUGE_VIEWER = "v" * 100_000
HUGE_ERROR = "param validate error: " + "E" * 1_000_000


def test_a_huge_viewer_id_and_error_text_are_cut_where_people_read_them(
    tmp_path: Path, sim: PolyvSimulator, creds: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    sim.set_faults(FaultConfig(poison_values=("P",), poison_message=HUGE_ERROR))
    rows = [(HUGE_VIEWER, "PAY_STATUS", "P"), ("v2", "PAY_STATUS", "P")]
    src = write_items(tmp_path / "in.parquet", rows)
    opts = SyncOptions(send=dataclasses.replace(FAST, concurrency=1), check_fields=False)
    with caplog.at_level(logging.WARNING, logger="polyv_connector"):
        res = sync(ParquetSource(str(src)), creds, opts, ParquetReport(tmp_path / "report.parquet"))
    report = read_report(tmp_path / "report.parquet")

    assert res.problems, "the POLYV refusal must be listed"
    for problem in res.problems:
        assert len(problem["viewerId"]) <= VIEWER_ID_CHARS
        assert len(problem["reason"]) <= REASON_CHARS
    huge = next(p for p in res.problems if p["viewerId"].startswith("vvvv"))
    assert huge["viewerId"].endswith(CUT_MARK)
    assert any(p["reason"].endswith(CUT_MARK) for p in res.problems)
    for row in report:
        assert row["reason"] is None or len(row["reason"]) <= REASON_CHARS
    assert report[0]["viewerId"] == HUGE_VIEWER  # the report keeps the key whole
    assert any("EEEE" in (r["reason"] or "") for r in report)  # cut, not dropped
    # The example reason logged per status and code is cut too.
    for record in caplog.records:
        if record.levelno == logging.WARNING and record.getMessage().startswith(("failed:", "not_attempted:")):
            assert len(record.getMessage()) < REASON_CHARS + 200
    assert "E" * (REASON_CHARS + 1) not in caplog.text


def test_cut_texts_cuts_like_cut_and_keeps_nulls() -> None:
    from polyv_connector.bounds import cut

    texts = pa.array(["short", None, "é" * 10, "x" * 9], pa.string())
    assert cut_texts(texts, 8).to_pylist() == ["short", None, cut("é" * 10, 8), cut("x" * 9, 8)]
