"""Reason codes: every item not sent carries one; the summary counts them and lists the first
problems; the log groups them; the troubleshooting guide shows the vocabulary as the module defines it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from polyv_connector import Credentials, Secret, SendOptions, SyncOptions, reasons, sync
from polyv_connector.engine.report import MAX_PROBLEMS
from polyv_connector.report import ParquetReport
from polyv_connector.simulator import FaultConfig, PolyvSimulator, RateLimitConfig
from polyv_connector.sources.parquet import ParquetSource
from polyv_connector.state.folder import SyncState
from tests.conftest import APP_ID, APP_SECRET, FAST, FIELDS, read_report, write_items

TROUBLESHOOTING = Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md"


def run(tmp_path: Path, creds: Credentials, rows: list, **kw: object):
    src = write_items(tmp_path / "in.parquet", rows)
    opts = SyncOptions(**{"send": FAST, **kw})  # type: ignore[arg-type]
    res = sync(ParquetSource(str(src)), creds, opts, ParquetReport(tmp_path / "report.parquet"))
    return res, read_report(tmp_path / "report.parquet")


def assert_every_unsent_row_has_a_known_code(res, rep: list[dict]) -> None:
    for row in rep:
        if row["status"] == "sent":
            assert row["reasonCode"] is None and row["reason"] is None, row
        else:
            assert row["reasonCode"] in reasons.BY_CODE, row
            assert reasons.BY_CODE[row["reasonCode"]].status == row["status"], row
            assert row["reason"], row
    counted: dict[str, int] = {}
    for row in rep:
        if row["reasonCode"]:
            counted[row["reasonCode"]] = counted.get(row["reasonCode"], 0) + 1
    assert res.counts_by_reason == counted
    assert res.to_dict()["countsByReason"] == dict(sorted(counted.items()))


def test_the_vocabulary_is_unique_and_the_docs_show_it() -> None:
    assert len(reasons.BY_CODE) == len(reasons.ALL)
    assert all(r.code == r.code.lower() and " " not in r.code for r in reasons.ALL)
    assert reasons.markdown_table() in TROUBLESHOOTING.read_text(encoding="utf-8")


def test_abort_causes_map_to_codes() -> None:
    assert reasons.for_abort_cause("blocked") == "blocked"
    assert reasons.for_abort_cause("auth") == reasons.for_abort_cause("clock") == "polyv_refused"
    assert reasons.for_abort_cause("stopped") == reasons.for_abort_cause(None) == "run_stopped"
    assert reasons.for_abort_cause("rejected") == "too_many_rejected"
    assert not reasons.is_retryable("polyv_rejected") and reasons.is_retryable("retries_exhausted")


def test_each_check_duplicate_and_refusal_has_its_code(tmp_path, sim, creds, caplog) -> None:
    caplog.set_level(logging.INFO, logger="polyv_connector")
    sim.set_faults(FaultConfig(poison_values=("POISON",)))
    rows = [
        ("ok", "PAY_STATUS", "1"),
        (None, "PAY_STATUS", "1"),
        ("", "PAY_STATUS", "1"),
        (" padded", "PAY_STATUS", "1"),
        ("v1", "PAY_STATUS", None),
        ("v2", "UNKNOWN_FIELD", "1"),
        ("v3", "F" * 65, "1"),
        ("v4", None, "1"),
        ("v5", " PAY_STATUS", "1"),
        ("d", "PAY_STATUS", "same"),
        ("d", "PAY_STATUS", "same"),
        ("c", "PAY_STATUS", "one"),
        ("c", "PAY_STATUS", "two"),
        ("p", "PAY_STATUS", "POISON"),
        (" ", "X" * 70, None),  # several checks fail: the first one names the code
    ]
    res, rep = run(tmp_path, creds, rows)
    codes = [r["reasonCode"] for r in rep]
    assert codes == [
        None,
        "blank_viewer_id",
        "blank_viewer_id",
        "padded_viewer_id",
        "null_value",
        "unknown_field",
        "field_id_too_long",
        "blank_field_id",
        "padded_field_id",
        None,
        "duplicate",
        "conflicting_duplicate",
        "conflicting_duplicate",
        "polyv_rejected",
        "blank_viewer_id",
    ]
    assert_every_unsent_row_has_a_known_code(res, rep)
    # The first problems, in input order, without the value.
    assert [p["rowNumber"] for p in res.problems] == [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14]
    assert set(res.problems[0]) == {"rowNumber", "viewerId", "reasonCode", "reason"}
    summary = json.dumps(res.to_dict())
    assert "POISON" not in summary and APP_SECRET not in summary
    # Grouped at WARNING: one line per (status, code), with a count and example rows.
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned[0] == "rejected: 3 item(s) blank_viewer_id (e.g. rows 1, 2, 14): viewerId is null"
    assert any(w.startswith("rejected: 2 item(s) conflicting_duplicate (e.g. rows 11, 12): ") for w in warned)
    assert len(warned) == len(set(warned)) == 9  # one line per (status, code), none twice
    assert any(w.startswith("failed: 1 item(s) polyv_rejected (e.g. rows 13): POLYV rejected") for w in warned)
    assert not any("duplicate (e.g." in w and w.startswith("duplicate") for w in warned)  # not a problem


def test_problems_stop_at_twenty_and_counts_cover_every_row(tmp_path, sim, creds) -> None:
    rows = [(f"v{i}", "PAY_STATUS", None) for i in range(50)] + [("ok", "PAY_STATUS", "1")]
    res, rep = run(tmp_path, creds, rows)
    assert len(res.problems) == MAX_PROBLEMS
    assert res.counts_by_reason == {"null_value": 50}
    assert_every_unsent_row_has_a_known_code(res, rep)


def test_unchanged_dry_run_and_unsendable_text_have_codes(tmp_path, sim, creds) -> None:
    src = tmp_path / "bytes.parquet"
    pq.write_table(
        pa.table(
            {
                "viewerId": pa.array([b"v1", b"v\xff2"], pa.binary()),
                "customFieldId": ["PAY_STATUS", "PAY_STATUS"],
                "customFieldValue": ["a", "b"],
            }
        ),
        src,
    )
    opts = SyncOptions(send=FAST, state_dir=str(tmp_path / "state"))
    first = sync(ParquetSource(str(src)), creds, opts, ParquetReport(tmp_path / "r1.parquet"))
    assert first.counts_by_reason == {"unsendable_text": 1}
    again = sync(ParquetSource(str(src)), creds, opts, ParquetReport(tmp_path / "r2.parquet"))
    assert again.counts_by_reason == {"unsendable_text": 1, "unchanged": 1}
    dry = SyncOptions(send=FAST, dry_run=True)
    planned = sync(ParquetSource(str(src)), creds, dry, ParquetReport(tmp_path / "r3.parquet"))
    assert planned.counts_by_reason == {"unsendable_text": 1, "dry_run": 1}
    assert SyncState(tmp_path / "state", APP_ID).load()[0].size == 1


def test_retries_exhausted_and_the_timeline_counts_retries_by_cause(tmp_path, sim, creds) -> None:
    sim.set_faults(FaultConfig(error_rate=1.0))
    send = SendOptions(backoff_base_s=0.001, backoff_max_s=0.01, max_rps=140, timeout_s=5, max_attempts=3)
    res, rep = run(tmp_path, creds, [(f"v{i}", "PAY_STATUS", "x") for i in range(5)], send=send)
    assert {r["reasonCode"] for r in rep} == {"retries_exhausted"}
    assert res.timeline is not None
    assert sum(res.timeline.requests) == 3 and sum(res.timeline.retries) == 2
    assert res.timeline.retries_by_cause == {"http_500": 2}
    assert res.timeline.budget_rps == 140.0
    assert res.timeline.latency_p50_s is not None and res.timeline.latency_p95_s is not None
    assert "timeline" not in res.to_dict()  # for the run page, not the XCom


def test_splits_are_on_the_timeline(tmp_path, sim, creds) -> None:
    sim.set_faults(FaultConfig(poison_values=("POISON",)))
    rows = [(f"v{i}", "PAY_STATUS", "POISON" if i == 5 else "ok") for i in range(8)]
    res, _ = run(tmp_path, creds, rows)
    assert res.timeline is not None
    # 8 -> 4 -> 2 -> 1: three splits, and 1 + 2 * 3 requests.
    assert sum(res.timeline.splits) == 3 and sum(res.timeline.requests) == res.requests_sent == 7


def test_refused_credentials_and_a_block_name_their_codes(tmp_path, sim) -> None:
    wrong = Credentials(APP_ID, Secret("not-the-secret"), sim.base_url)
    res, rep = run(tmp_path, wrong, [("a", "PAY_STATUS", "1"), ("b", "PAY_STATUS", "1")], check_fields=False)
    assert {r["reasonCode"] for r in rep} == {"polyv_refused"}
    assert res.counts_by_reason == {"polyv_refused": 2}

    limit = RateLimitConfig(max_requests=2, window_s=10.0, block_s=300.0, block_http_status=403)
    with PolyvSimulator(apps={APP_ID: APP_SECRET}, fields=FIELDS, rate_limit=limit) as s:
        creds = Credentials(APP_ID, Secret(APP_SECRET), s.base_url)
        rows = [(f"v{i}", "PAY_STATUS", "x") for i in range(30)]
        res, rep = run(tmp_path, creds, rows, send=SendOptions(batch_size=10, concurrency=1, max_rps=140))
    assert res.abort_cause == "blocked"
    assert res.counts_by_reason == {"blocked": 20}
    assert_every_unsent_row_has_a_known_code(res, rep)
