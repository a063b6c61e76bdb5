"""The run page: self-contained (no URL to any asset, so it renders offline), the run's counts
and reasons, the timeline, the checks, the problem rows; and the CLI writing it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from polyv_connector.cli import main
from polyv_connector.engine.result import SyncResult
from polyv_connector.runpage import (
    MAX_TIMELINE_POINTS,
    PageLinks,
    links_for,
    page_path_for,
    render_run_page,
    write_run_page,
)
from polyv_connector.timeline import TimelineSummary
from tests.conftest import APP_SECRET, write_items

URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}", re.IGNORECASE)


def _result(seconds: int = 30, **extra: object) -> SyncResult:
    result = SyncResult(
        run_id="20261130T180000Z-abcd1234",
        app_id="demo-app",
        counts={"sent": 880, "unchanged": 100, "rejected": 15, "failed": 2},
        items=997,
        requests_sent=12,
        requests_planned=10,
        duration_s=12.5,
        report_location="/data/out/run.parquet",
        dry_run=False,
        extra=dict(extra),
    )
    result.counts_by_reason = {"blank_viewer_id": 9, "unknown_field": 6, "polyv_rejected": 2, "unchanged": 100}
    result.problems = [
        {"rowNumber": 3, "viewerId": "viewer-<b>3</b>", "reasonCode": "blank_viewer_id", "reason": "viewerId is blank"},
        {"rowNumber": 8, "viewerId": "v8", "reasonCode": "polyv_rejected", "reason": "param validate error"},
    ]
    result.timeline = TimelineSummary(
        seconds=list(range(seconds)),
        requests=[90 + s % 10 for s in range(seconds)],
        retries=[1 if s % 7 == 0 else 0 for s in range(seconds)],
        splits=[1 if s == 5 else 0 for s in range(seconds)],
        budget_rps=100.0,
        latency_p50_s=0.042,
        latency_p95_s=0.18,
        retries_by_cause={"http_500": 4, "timeout": 1},
        budget_wait_s=2.5,
    )
    return result


VALIDATION = {
    "validation": {
        "suite": "default",
        "success": False,
        "items": 997,
        "itemsRejected": 6,
        "gateFailures": ["too many rejected: 1.5% > 1%"],
        "expectations": [
            {
                "type": "expect_column_values_to_not_be_null",
                "column": "viewerId",
                "success": True,
                "unexpectedCount": 0,
                "action": "reject_rows",
                "error": None,
            },
            {
                "type": "expect_column_values_to_match_regex",
                "column": "customFieldValue",
                "success": False,
                "unexpectedCount": 6,
                "action": "reject_rows",
                "error": None,
            },
        ],
        "resultJson": "/data/out/run.validation.json",
        "dataDocsPage": "/data/out/run.data_docs/validations/default/run/x.html",
    }
}


def test_page_refers_to_no_external_url_at_all() -> None:
    page = render_run_page(
        _result(**VALIDATION), links=links_for("/data/out/run.html", "/data/out/run.parquet", VALIDATION["validation"])
    )
    # Nothing to fetch: no http(s) or protocol-relative URL anywhere (charts are inline SVG,
    # their namespaces and metadata stripped), no script, no external style sheet or image.
    assert not URL.search(page), URL.findall(page)[:5]
    assert "http:" not in page and "https:" not in page
    assert "<script" not in page.lower()
    assert not re.search(r"<link\b", page, re.IGNORECASE)
    assert not re.search(r"""(?:src|href)=["'](?!#|[A-Za-z0-9_.%-]+(?:/[A-Za-z0-9_.%-]+)*["'])""", page)
    # And the browser is told to load nothing even if something slipped in.
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert page.count("<svg") == 3  # status, reasons, timeline


def test_page_shows_counts_reasons_timeline_checks_and_problems() -> None:
    page = render_run_page(
        _result(**VALIDATION),
        links=PageLinks(report="run.parquet", data_docs="run.data_docs/index.html"),
        airflow_run_id="manual__2026-11-30T18:00:00+00:00",
    )
    for status, n in (("sent", 880), ("unchanged", 100), ("rejected", 15), ("failed", 2)):
        assert f'data-count="{status}"><b>{n:,}</b>' in page
        assert f'<td>{status}</td><td class="n">{n:,}</td>' in page
    assert '<code>blank_viewer_id</code></td><td class="n">9</td>' in page
    assert "NOT ALL SYNCED" in page and "manual__2026-11-30T18:00:00+00:00" in page
    # Timeline facts: totals, p50/p95, retries by cause, budget wait.
    assert "<b>42 ms</b><span>latency p50" in page and "<b>180 ms</b><span>latency p95" in page
    assert "<code>http_500</code> 4" in page and "<b>2.5 s</b><span>waiting for the budget" in page
    assert "budget 100/s" in page  # the budget line's legend, as SVG text
    # Checks: each expectation with its outcome, and the gate.
    assert "expect_column_values_to_match_regex" in page and "too many rejected" in page
    # Problem rows, escaped (a viewerId is data, never markup).
    assert "viewer-&lt;b&gt;3&lt;/b&gt;" in page and "viewer-<b>3" not in page
    assert "param validate error" in page
    assert 'href="run.parquet"' in page and 'href="run.data_docs/index.html"' in page


def test_clean_run_without_suite_or_sending() -> None:
    result = SyncResult("r1", "app", {"dry_run": 5}, 5, 0, 1, 0.1, "out.parquet", True)
    page = render_run_page(result)
    assert 'id="verdict">OK<' in page
    assert "Dry run: nothing was sent." in page and "No expectation suite" in page
    assert "No rejected, failed" in page


def test_long_run_timeline_is_bucketed() -> None:
    """Ten hours of sending stays a small page: the chart draws at most MAX_TIMELINE_POINTS steps."""
    small, big = render_run_page(_result(60)), render_run_page(_result(36_000))
    assert "(60 s buckets)" in big
    assert len(big) < 3 * len(small) and len(big) < 400_000
    assert MAX_TIMELINE_POINTS <= 600


def test_page_path_and_relative_links(tmp_path: Path) -> None:
    assert page_path_for("out/run.parquet") == "out/run.html"
    assert page_path_for("s3://b/k/run.parquet") == "s3://b/k/run.html"
    links = links_for(str(tmp_path / "run.html"), str(tmp_path / "run.parquet"), VALIDATION["validation"])
    assert links.report == "run.parquet"
    page = write_run_page(_result(**VALIDATION), str(tmp_path / "run.html"), report_path=str(tmp_path / "run.parquet"))
    assert page == str(tmp_path / "run.html") and Path(page).read_text().startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob("*.tmp-*"))


def test_cli_writes_the_page_and_prints_its_path(tmp_path, env, sim, capsys) -> None:
    src = write_items(tmp_path / "in.parquet", [("a", "PAY_STATUS", "1"), ("", "VIP_LEVEL", "2")])
    code = main(
        [
            "run",
            "--input",
            str(src),
            "--report",
            str(tmp_path / "r.parquet"),
            "--summary-json",
            str(tmp_path / "s.json"),
        ]
    )
    out = capsys.readouterr().out
    page = tmp_path / "r.html"
    assert code == 0 and f"run page: {page}" in out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["runPage"] == str(page)
    # Where the time went, the page's own drawing included (it is written before the summary).
    phases = summary["phaseSeconds"]
    assert list(phases) == ["readAndPlan", "budgetWait", "sending", "report", "page"]
    assert all(v >= 0 for v in phases.values()) and summary["concurrency"] >= 1
    text = page.read_text()
    assert 'data-phase="sending"' in text
    assert 'data-count="sent"><b>1</b>' in text and 'data-count="rejected"><b>1</b>' in text
    assert APP_SECRET not in text and not URL.search(text)


@pytest.mark.parametrize("seconds", [0, 1])
def test_tiny_timelines_render(seconds: int) -> None:
    page = render_run_page(_result(seconds))
    assert ("timeline-none" in page) == (seconds == 0)


def test_page_shows_changes_removed_and_a_change_limit() -> None:
    from polyv_connector.engine.changes import Breach

    result = _result()
    result.changes = {"new": 3, "changed": 4, "cleared": 1}
    result.removed = 12
    result.breaches = [Breach("change_limit", "7 changes planned <above> the limit (max_changed_fraction)", "x")]
    page = render_run_page(result)
    assert 'id="verdict">CHANGE LIMIT</span>' in page
    assert 'data-count="changes: new"' in page and 'data-count="changes: changed"' in page
    assert 'data-count="removed (POLYV keeps them)"' in page
    assert "&lt;above&gt;" in page and "<above>" not in page
    quiet = _result()
    quiet.changes = {"new": 0, "changed": 0, "cleared": 0}
    assert "removed (POLYV keeps them)" not in render_run_page(quiet)
