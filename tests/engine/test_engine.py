"""The sync engine end to end against the simulator: every bad input of issue #2."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polyv_connector import Credentials, InputError, Secret, SendOptions, SyncOptions, exit_codes, sync
from polyv_connector.model import REPORT_COLUMNS
from polyv_connector.reasons import stopped_reason
from polyv_connector.report import ParquetReport
from polyv_connector.simulator import FaultConfig, PolyvSimulator, RateLimitConfig
from polyv_connector.sources.parquet import ParquetSource
from polyv_connector.state.store import Opening
from tests.conftest import APP_ID, APP_SECRET, FAST, FIELDS, read_report, write_items


def run(tmp_path: Path, creds: Credentials, rows: list, **kw: object):
    src = write_items(tmp_path / "in.parquet", rows)
    opts = SyncOptions(**{"send": FAST, **kw})  # type: ignore[arg-type]
    res = sync(ParquetSource(str(src)), creds, opts, ParquetReport(tmp_path / "report.parquet"))
    return res, read_report(tmp_path / "report.parquet")


def by_row(report: list[dict]) -> dict[int, dict]:
    return {r["rowNumber"]: r for r in report}


def test_clean_input_is_stored_and_reported_sent(tmp_path, sim, creds) -> None:
    rows = [(f"v{i}", "PAY_STATUS", f"val{i}") for i in range(2500)]
    res, rep = run(tmp_path, creds, rows)
    assert res.exit_code == exit_codes.OK.code and res.counts["sent"] == 2500
    assert res.requests_sent == 3  # save batches of 1000, 1000 and 500
    assert res.api_requests == 4  # and the preflight field list
    assert [r["rowNumber"] for r in rep] == list(range(2500))
    assert list(rep[0]) == list(REPORT_COLUMNS)
    assert all(r["status"] == "sent" and r["reason"] is None and r["requestId"] for r in rep)
    assert sim.values[(APP_ID, "v2499", "PAY_STATUS")] == "val2499"


def test_bad_ids_and_values_are_rejected_with_reasons_and_never_sent(tmp_path, sim, creds) -> None:
    rows = [
        ("ok", "PAY_STATUS", "1"),
        (None, "PAY_STATUS", "1"),
        ("", "PAY_STATUS", "1"),
        ("   ", "PAY_STATUS", "1"),
        (" padded", "PAY_STATUS", "1"),
        ("v1", "PAY_STATUS", None),
        ("v2", "UNKNOWN_FIELD", "1"),
        ("v3", "F" * 65, "1"),
        ("v4", None, "1"),
    ]
    res, rep = run(tmp_path, creds, rows)
    r = by_row(rep)
    assert r[0]["status"] == "sent"
    expected = {
        1: "viewerId is null",
        2: "viewerId is blank",
        3: "viewerId is blank",
        4: "leading or trailing whitespace",
        5: "customFieldValue is null",
        6: "does not exist in this POLYV account",
        7: "longer than 64",
        8: "customFieldId is null",
    }
    for row, text in expected.items():
        assert r[row]["status"] == "rejected", r[row]
        assert text in r[row]["reason"], r[row]
    assert set(sim.values) == {(APP_ID, "ok", "PAY_STATUS")}
    assert res.exit_code == exit_codes.OK.code  # rejected rows are reported, not failures of the run


def test_every_failed_check_of_a_row_is_reported(tmp_path, sim, creds) -> None:
    _, rep = run(tmp_path, creds, [(" ", "X" * 70, None)])
    reason = rep[0]["reason"]
    assert "viewerId is blank" in reason and "longer than 64" in reason and "customFieldValue is null" in reason


def test_duplicates_identical_sent_once_conflicting_all_rejected(tmp_path, sim, creds) -> None:
    rows = [
        ("a", "PAY_STATUS", "x"),
        ("a", "PAY_STATUS", "x"),
        ("a", "PAY_STATUS", "x"),
        ("b", "PAY_STATUS", "1"),
        ("b", "PAY_STATUS", "2"),
        ("c", "PAY_STATUS", "z"),
    ]
    res, rep = run(tmp_path, creds, rows)
    r = by_row(rep)
    assert [r[i]["status"] for i in range(6)] == ["sent", "duplicate", "duplicate", "rejected", "rejected", "sent"]
    assert "duplicate of row 0" in r[1]["reason"]
    assert "rows 4" in r[3]["reason"] and "rows 3" in r[4]["reason"]
    assert (APP_ID, "b", "PAY_STATUS") not in sim.values
    assert sum(len(b) for b in sim.received_batches) == 2


def test_duplicates_found_across_chunks_of_the_spill(tmp_path, sim, creds) -> None:
    # The second key hash of the candidates is read back from the spill, chunk by chunk.
    rows = [(f"v{i}", "PAY_STATUS", f"x{i}") for i in range(20)]
    rows += [("v3", "PAY_STATUS", "x3"), ("v18", "PAY_STATUS", "other"), ("v3", "PAY_STATUS", "x3")]
    res, rep = run(tmp_path, creds, rows, read_batch_rows=7)
    r = by_row(rep)
    assert [r[i]["status"] for i in (3, 20, 22)] == ["sent", "duplicate", "duplicate"]
    assert [r[i]["status"] for i in (18, 21)] == ["rejected", "rejected"]
    assert "duplicate of row 3" in r[22]["reason"] and "rows 21" in r[18]["reason"]
    assert res.counts["sent"] == 19


UNICODE_VALUES = [
    "已支付",
    "مرحبا بالعالم",
    "👩‍💻🚀",
    "\u200fRTL\u200e mark",
    "line1\nline2\r\n",
    'quote " and \\ slash',
    "tab\tend",
    "\u0000nul",
    "e\u0301",
]


def test_unicode_values_arrive_byte_exact(tmp_path, sim, creds) -> None:
    rows = [(f"用户{i}", "VIP_LEVEL", v) for i, v in enumerate(UNICODE_VALUES)]
    res, _ = run(tmp_path, creds, rows)
    assert res.counts["sent"] == len(UNICODE_VALUES)
    for i, v in enumerate(UNICODE_VALUES):
        stored = sim.values[(APP_ID, f"用户{i}", "VIP_LEVEL")]
        assert stored.encode("utf-8") == v.encode("utf-8")


def test_poison_item_in_a_batch_of_1000_is_isolated(tmp_path, sim, creds) -> None:
    sim.set_faults(FaultConfig(poison_values=("POISON",)))
    rows = [(f"v{i}", "PAY_STATUS", "POISON" if i == 637 else f"ok{i}") for i in range(1000)]
    res, rep = run(tmp_path, creds, rows)
    r = by_row(rep)
    assert r[637]["status"] == "failed"
    assert "param validate error" in r[637]["reason"] and r[637]["errorCode"] == 20002
    assert r[637]["httpStatus"] == 400 and r[637]["requestId"]
    assert res.counts["sent"] == 999 and len(sim.values) == 999
    assert res.exit_code == exit_codes.ITEMS_UNSUCCESSFUL.code
    # Bisection costs about 2*log2(1000) extra requests, not one per item.
    assert res.requests_sent <= 1 + 2 * 10


def test_missing_column_fails_before_any_request(tmp_path, sim, creds) -> None:
    pq.write_table(pa.table({"viewerId": ["a"], "customFieldId": ["PAY_STATUS"]}), tmp_path / "in.parquet")
    with pytest.raises(InputError, match="customFieldValue") as exc:
        sync(ParquetSource(str(tmp_path / "in.parquet")), creds, SyncOptions(), ParquetReport(tmp_path / "r.parquet"))
    assert exc.value.setting == "--input"
    assert sim.stats.api_requests == 0


def test_corrupt_parquet_fails_before_any_request(tmp_path, sim, creds) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        sync(ParquetSource(str(bad)), creds, SyncOptions(), ParquetReport(tmp_path / "r.parquet"))
    assert sim.stats.api_requests == 0


def test_missing_input_fails_naming_the_setting(tmp_path, sim, creds) -> None:
    with pytest.raises(InputError, match="--input: no such file"):
        sync(ParquetSource(str(tmp_path / "nope.parquet")), creds, SyncOptions(), None)
    assert sim.stats.api_requests == 0


def test_empty_input_writes_an_empty_report(tmp_path, sim, creds) -> None:
    res, rep = run(tmp_path, creds, [])
    assert res.items == 0 and rep == [] and res.exit_code == exit_codes.OK.code
    assert sim.stats.save_requests == 0


def test_dry_run_sends_nothing_and_counts_requests(tmp_path, sim, creds) -> None:
    rows = [(f"v{i}", "PAY_STATUS", "x") for i in range(2001)]
    res, rep = run(tmp_path, creds, rows, dry_run=True)
    assert res.counts["dry_run"] == 2001 and res.requests_planned == 3
    assert sim.stats.save_requests == 0 and not sim.values
    assert "would make 3 save requests" in res.summary_line()


def test_invalid_signature_stops_the_run_at_once(tmp_path, sim) -> None:
    wrong = Credentials(APP_ID, Secret("not-the-secret"), sim.base_url)
    res, rep = run(tmp_path, wrong, [("a", "PAY_STATUS", "1")] * 3, check_fields=False)
    assert res.exit_code == exit_codes.ABORTED.code and res.abort_cause == "auth"
    assert "invalid signature" in res.aborted and "appSecret" in res.aborted
    assert sim.stats.save_requests == 1
    assert {r["status"] for r in rep} == {"not_attempted", "duplicate"}
    # One failure, said once: each row says why in short, never the whole message again.
    unsent = [r for r in rep if r["status"] == "not_attempted"]
    assert unsent and all(r["reason"] == stopped_reason("auth") for r in unsent)
    assert all(res.aborted not in p["reason"] and "invalid signature" not in p["reason"] for p in res.problems)


def test_unknown_app_stops_the_run_during_preflight(tmp_path, sim) -> None:
    wrong = Credentials("no-such-app", Secret(APP_SECRET), sim.base_url)
    res, rep = run(tmp_path, wrong, [("a", "PAY_STATUS", "1")])
    assert res.abort_cause == "auth" and "application not found" in res.aborted
    assert sim.stats.save_requests == 0 and rep[0]["status"] == "not_attempted"


def test_clock_skew_is_named(tmp_path) -> None:
    # The server's clock is 20 minutes ahead of ours: beyond the 15 minutes corrected automatically.
    import time

    with PolyvSimulator(apps={APP_ID: APP_SECRET}, fields=FIELDS, clock=lambda: time.time() + 1200) as s:
        res, rep = run(tmp_path, Credentials(APP_ID, Secret(APP_SECRET), s.base_url), [("a", "PAY_STATUS", "1")])
    assert res.abort_cause == "clock" and "clock" in res.aborted
    assert rep[0]["status"] == "not_attempted"


def test_block_opens_the_circuit_and_reports_the_rest_not_attempted(tmp_path) -> None:
    limit = RateLimitConfig(max_requests=4, window_s=10.0, block_s=300.0, block_http_status=403)
    with PolyvSimulator(apps={APP_ID: APP_SECRET}, fields=FIELDS, rate_limit=limit) as s:
        creds = Credentials(APP_ID, Secret(APP_SECRET), s.base_url)
        rows = [(f"v{i}", "PAY_STATUS", "x") for i in range(10_000)]
        res, rep = run(tmp_path, creds, rows, send=SendOptions(batch_size=1000, concurrency=1, max_rps=140))
        blocked_after = s.stats.blocked_responses
    assert res.abort_cause == "blocked" and "blocked for 5 minutes" in res.aborted
    assert blocked_after == 1  # nothing more was sent after the first block
    assert res.counts["sent"] == 3000 and res.counts["not_attempted"] == 7000
    assert res.exit_code == exit_codes.ABORTED.code
    na = [r for r in rep if r["status"] == "not_attempted"]
    # The stop's message is said once (the summary's aborted), not copied into 7,000 rows.
    assert "qps exceeds number of calls" in res.aborted
    assert {r["reason"] for r in na} == {
        "not sent: the run stopped before sending this item (blocked); see the run's error (aborted)"
    }


class _Html(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._html()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._html()

    def _html(self) -> None:
        body = b"<html><body>Welcome to nginx</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture
def html_server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_server_answering_html_fails_rows_with_a_reason(tmp_path, html_server) -> None:
    creds = Credentials(APP_ID, Secret(APP_SECRET), html_server)
    res, rep = run(
        tmp_path,
        creds,
        [("a", "PAY_STATUS", "1")],
        check_fields=False,
        send=SendOptions(max_attempts=3, backoff_base_s=0.001),
    )
    assert rep[0]["status"] == "failed" and "non-JSON" in rep[0]["reason"] and rep[0]["attempts"] == 3
    assert res.exit_code == exit_codes.ITEMS_UNSUCCESSFUL.code


def test_hanging_server_times_out_and_fails_rows(tmp_path, sim, creds) -> None:
    sim.set_faults(FaultConfig(hang_s=30))
    res, rep = run(
        tmp_path,
        creds,
        [("a", "PAY_STATUS", "1")],
        send=SendOptions(max_attempts=2, timeout_s=0.3, backoff_base_s=0.001),
    )
    assert rep[0]["status"] == "failed" and "timed out" in rep[0]["reason"]
    assert rep[0]["attempts"] == 2


def test_wide_form_one_item_per_mapped_field(tmp_path, sim, creds) -> None:
    import datetime as dt

    pq.write_table(
        pa.table(
            {
                "user_id": ["u1", "u2"],
                "pay": [True, False],
                "vip": [3, None],
                "joined": [dt.date(2024, 1, 31), dt.date(2025, 2, 1)],
            }
        ),
        tmp_path / "wide.parquet",
    )
    from polyv_connector import ColumnMapping

    opts = SyncOptions(
        send=FAST,
        mapping=ColumnMapping.wide("user_id", {"PAY_STATUS": "pay", "VIP_LEVEL": "vip", "COURSE_PROGRESS": "joined"}),
    )
    res = sync(ParquetSource(str(tmp_path / "wide.parquet")), creds, opts, ParquetReport(tmp_path / "r.parquet"))
    rep = read_report(tmp_path / "r.parquet")
    assert [(r["rowNumber"], r["customFieldId"]) for r in rep] == [
        (0, "PAY_STATUS"),
        (0, "VIP_LEVEL"),
        (0, "COURSE_PROGRESS"),
        (1, "PAY_STATUS"),
        (1, "VIP_LEVEL"),
        (1, "COURSE_PROGRESS"),
    ]
    assert sim.values[(APP_ID, "u1", "PAY_STATUS")] == "true"
    assert sim.values[(APP_ID, "u1", "VIP_LEVEL")] == "3"
    assert sim.values[(APP_ID, "u2", "COURSE_PROGRESS")] == "2025-02-01"
    assert rep[4]["status"] == "rejected" and res.counts["sent"] == 5


def test_directory_input_reads_files_in_name_order(tmp_path, sim, creds) -> None:
    d = tmp_path / "parts"
    d.mkdir()
    write_items(d / "part-1.parquet", [("b", "PAY_STATUS", "2")])
    write_items(d / "part-0.parquet", [("a", "PAY_STATUS", "1")])
    res = sync(ParquetSource(str(d)), creds, SyncOptions(send=FAST), ParquetReport(tmp_path / "r.parquet"))
    rep = read_report(tmp_path / "r.parquet")
    assert [(r["rowNumber"], r["viewerId"]) for r in rep] == [(0, "a"), (1, "b")]
    assert res.counts["sent"] == 2


@pytest.mark.slow
def test_acceptance_20k_rows_with_faults_and_bad_rows(tmp_path, sim, creds) -> None:
    """Issue #2's done-when: 20% 5XX, 5% resets, bad rows sprinkled into 20,000 rows."""
    sim.set_faults(FaultConfig(error_rate=0.20, reset_rate=0.05, poison_values=("POISON",), seed=7))
    rows: list = []
    bad: dict[int, str] = {}
    for i in range(20_000):
        kind = i % 997
        if kind == 1:
            rows.append((None, "PAY_STATUS", "x"))
            bad[i] = "rejected"
        elif kind == 2:
            rows.append(("  ", "PAY_STATUS", "x"))
            bad[i] = "rejected"
        elif kind == 3:
            rows.append((f"u{i}", "NOPE", "x"))
            bad[i] = "rejected"
        elif kind == 4:
            rows.append((f"u{i}", "PAY_STATUS", None))
            bad[i] = "rejected"
        elif kind == 5:
            rows.append((f"u{i}", "PAY_STATUS", "POISON"))
            bad[i] = "failed"
        elif kind == 6:
            rows.append((f" u{i}", "PAY_STATUS", "x"))
            bad[i] = "rejected"  # whitespace-padded id
        elif kind == 7:
            rows.append((f"u{i}", "F" * 65, "x"))
            bad[i] = "rejected"
        elif kind == 11:  # an identical duplicate of the (valid) row before it
            rows.append(rows[i - 1])
            bad[i] = "duplicate"
        elif kind == 21:  # conflicts with the (valid) row before it: both rejected
            rows.append((rows[i - 1][0], rows[i - 1][1], "other"))
            bad[i] = bad[i - 1] = "rejected"
        else:
            rows.append((f"u{i}", "VIP_LEVEL", UNICODE_VALUES[i % len(UNICODE_VALUES)] + str(i)))
    res, rep = run(
        tmp_path,
        creds,
        rows,
        send=SendOptions(max_attempts=10, backoff_base_s=0.001, backoff_max_s=0.01, max_rps=140, timeout_s=5),
    )
    assert len(rep) == 20_000 and [r["rowNumber"] for r in rep] == list(range(20_000))
    assert res.counts["duplicate"] == 21 and res.counts["failed"] == 21  # 20,000 = 20 x 997 + 60
    for r in rep:
        if r["rowNumber"] in bad:
            assert r["status"] == bad[r["rowNumber"]] and r["reason"], r
        else:
            assert r["status"] == "sent", r
            viewer, field, value = rows[r["rowNumber"]]
            assert sim.values[(APP_ID, viewer, field)].encode("utf-8") == value.encode("utf-8")
    assert sim.stats.blocked_responses == 0
    assert sim.stats.faults_5xx > 0 and sim.stats.resets > 0
    assert res.exit_code == exit_codes.ITEMS_UNSUCCESSFUL.code


class _Redirect(http.server.BaseHTTPRequestHandler):
    def _redirect(self) -> None:
        self.send_response(302)
        self.send_header("Location", "http://127.0.0.1:9/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _redirect

    def log_message(self, *a: object) -> None:
        pass


def test_redirects_are_not_followed_and_stop_the_run(tmp_path) -> None:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        creds = Credentials(APP_ID, Secret(APP_SECRET), f"http://127.0.0.1:{srv.server_address[1]}")
        res, rep = run(tmp_path, creds, [("a", "PAY_STATUS", "1")], check_fields=False)
    finally:
        srv.shutdown()
    assert res.abort_cause == "endpoint"
    assert rep[0]["status"] == "not_attempted"


def test_text_that_is_not_utf8_is_rejected_and_the_rest_is_sent(tmp_path, sim, creds) -> None:
    pq.write_table(
        pa.table(
            {
                "viewerId": pa.array([b"\xff\xfe", b"ok"], pa.binary()),
                "customFieldId": ["PAY_STATUS", "PAY_STATUS"],
                "customFieldValue": ["x", "y"],
            }
        ),
        tmp_path / "in.parquet",
    )
    res = sync(
        ParquetSource(str(tmp_path / "in.parquet")),
        creds,
        SyncOptions(send=FAST),
        ParquetReport(tmp_path / "report.parquet"),
    )
    rep = read_report(tmp_path / "report.parquet")
    assert [r["status"] for r in rep] == ["rejected", "sent"]
    assert rep[0]["viewerId"] == "\\xff\\xfe"  # shown as backslashreplace writes it
    assert "viewerId is not valid UTF-8 text (byte \\xff at byte 0)" in rep[0]["reason"]
    assert sim.values == {(APP_ID, "ok", "PAY_STATUS"): "y"}
    assert res.exit_code == exit_codes.OK.code


def test_a_broken_state_disk_still_writes_the_report(tmp_path, sim, creds) -> None:
    class FullDisk(Opening):
        app_id = APP_ID
        hash_family = "xxh3"

        def lock(self, run_id, timeout_s=0.0, mode="exclusive"):
            return 1

        def unlock(self):
            pass

        def load(self, part=None):
            import numpy as np

            return np.empty(0, np.uint64), np.empty(0, np.uint64)

        def begin(self, run_id):
            pass

        def record(self, keys, fps, synced_at=None, items=None):
            raise OSError(28, "No space left on device")

        def finish(self):
            pass

        def reset(self):
            pass

        def read_meta(self, part=None):
            return {}

        def write_meta(self, record, part=None):
            raise OSError(28, "No space left on device")

    src = write_items(tmp_path / "in.parquet", [("a", "PAY_STATUS", "1")])
    res = sync(
        ParquetSource(str(src)), creds, SyncOptions(send=FAST), ParquetReport(tmp_path / "r.parquet"), state=FullDisk()
    )
    rep = read_report(tmp_path / "r.parquet")
    assert res.abort_cause == "internal"
    assert "No space left on device" in res.aborted
    assert rep[0]["status"] == "not_attempted"
    assert sim.stats.save_requests == 0  # the unconfirmed marker could not be written: nothing left


def test_a_40x_that_rejects_every_item_alone_stops_the_run(tmp_path, sim, creds) -> None:
    """Bisection is for isolating bad items; when everything is 'bad', the request is refused."""
    rows = [(f"v{i}", "PAY_STATUS", "P") for i in range(3000)]
    sim.set_faults(FaultConfig(poison_values=("P",)))
    res, rep = run(tmp_path, creds, rows, send=SendOptions(concurrency=1, max_rps=140))
    assert res.abort_cause == "rejected"
    assert res.requests_sent < 300  # not 3 * (2*1000 - 1)
    assert {r["status"] for r in rep} == {"failed", "not_attempted"}
