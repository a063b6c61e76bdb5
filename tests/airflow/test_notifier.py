"""The example failure notifier: what its message says, where it goes, and that a real failed
task calls it with the summary the operator left in XCom."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from tests.airflow.support import PLANTED_SECRET, SAMPLE, conn_json

pytestmark = pytest.mark.airflow

SUMMARY = {
    "runId": "20261130T010203Z-abcd1234",
    "items": 10,
    "counts": {"sent": 5, "unchanged": 0, "duplicate": 1, "rejected": 2, "failed": 2, "in_doubt": 0},
    "countsByReason": {"polyv_rejected": 2, "null_value": 2, "duplicate": 1},
    "problems": [
        {"rowNumber": 3, "viewerId": "v3", "reasonCode": "null_value", "reason": "customFieldValue is null"},
        {"rowNumber": 7, "viewerId": "v7", "reasonCode": "polyv_rejected", "reason": "POLYV rejected this item"},
    ],
    "report": "/data/reports/r.parquet",
    "runPage": "/polyv/runs/20261130T010203Z-abcd1234.html",
    "gateFailures": [],
    "aborted": None,
}


class FakeTI:
    dag_id = "polyv_viewer_sync_parquet"
    task_id = "sync_viewer_fields"
    run_id = "manual__1"
    try_number = 2
    log_url = "http://airflow/log"

    def __init__(self, value: Any) -> None:
        self.value = value

    def xcom_pull(self, task_ids: str, key: str) -> Any:
        assert (task_ids, key) == (self.task_id, "return_value")
        return self.value


class Webhook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append({"path": self.path, "json": json.loads(body)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: ClassVar[list[dict[str, Any]]] = []
    handler = type("Hook", (Webhook,), {"received": received})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", received
    srv.shutdown()


def test_the_message_carries_counts_by_reason_problems_and_the_run_page():
    from polyv_connector.airflow.notifier import failure_message

    text = failure_message(SUMMARY, {"dag_id": "d", "task_id": "t", "run_id": "r", "error": "boom", "try_number": 1})
    assert text.splitlines()[0] == "POLYV sync failed: d.t, run r (try 1)"
    assert "items: 10 (sent 5, rejected 2, failed 2)" in text
    assert "by reason: null_value 2, polyv_rejected 2" in text  # duplicates are no problem
    assert "  row 3 viewer v3: null_value: customFieldValue is null" in text
    assert "run page: /polyv/runs/20261130T010203Z-abcd1234.html" in text
    assert "report: /data/reports/r.parquet" in text and "error: boom" in text
    # The run page is optional (another part of the provider adds it).
    without = failure_message({**SUMMARY, "runPage": None}, {})
    assert "run page" not in without and "by reason" in without
    assert "no run summary" in failure_message(None, {"error": "input_path: give exactly one source"})


def test_the_message_names_a_change_limit_with_its_numbers_and_the_changes():
    from polyv_connector.airflow.notifier import failure_message

    message = "6,000 changes planned for the account, 60.0% of the 10,000 items (max_changed_fraction)"
    summary = {
        **SUMMARY,
        "limitBreaches": [{"code": "change_limit", "setting": "max_changed_fraction", "message": message}],
        "changes": {"new": 0, "changed": 6000, "cleared": 0},
        "removed": 12,
    }
    text = failure_message(summary, {})
    assert f"change limit (change_limit): {message}" in text
    assert "changes: new 0, changed 6,000, cleared 0" in text
    assert "removed from the source (POLYV keeps their values): 12" in text
    hostile = {**summary, "limitBreaches": ["not a mapping"], "changes": "nope", "removed": "x"}
    assert "change limit" not in failure_message(hostile, {})


def test_posts_to_the_webhook_connection(webhook, monkeypatch):
    from polyv_connector.airflow.notifier import PolyvSyncFailureNotifier

    url, received = webhook
    monkeypatch.setenv(
        "AIRFLOW_CONN_POLYV_ALERTS",
        json.dumps({"conn_type": "http", "host": url, "extra": {"endpoint": "/hooks/T0KEN"}}),
    )
    notifier = PolyvSyncFailureNotifier("polyv_alerts")
    notifier({"ti": FakeTI(SUMMARY), "run_id": "manual__1", "exception": RuntimeError("failed 2")})
    [post] = received
    assert post["path"] == "/hooks/T0KEN"
    assert post["json"]["countsByReason"] == SUMMARY["countsByReason"]
    assert post["json"]["runPage"] == SUMMARY["runPage"]
    assert "by reason: null_value 2, polyv_rejected 2" in post["json"]["text"]
    assert post["json"]["text"] == notifier.last_message


def test_the_alert_is_scrubbed_of_the_secret_and_cut(webhook, monkeypatch):
    """The exception's text reaches the webhook, which Airflow's log masker never sees: the
    task's POLYV secret is scrubbed from it, and hostile viewerIds, reasons and errors are cut."""
    from polyv_connector.airflow.notifier import PolyvSyncFailureNotifier
    from polyv_connector.bounds import ERROR_CHARS, REASON_CHARS, VIEWER_ID_CHARS

    url, received = webhook
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_ALERTS", json.dumps({"conn_type": "http", "host": url}))
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_DEFAULT", conn_json("http://127.0.0.1:9"))

    class Task:
        polyv_conn_id = "polyv_default"

    long_viewer, long_reason = "v" * 50_000, "POLYV said: " + "r" * 50_000
    summary = {
        **SUMMARY,
        "problems": [{"rowNumber": 1, "viewerId": long_viewer, "reasonCode": "polyv_rejected", "reason": long_reason}],
        "aborted": f"stopped with {PLANTED_SECRET}",
    }
    # The secret straddling the cut point: scrubbed before cutting, no piece of it is left.
    error = RuntimeError("x" * (ERROR_CHARS - 10) + PLANTED_SECRET + " and " + PLANTED_SECRET)
    notifier = PolyvSyncFailureNotifier("polyv_alerts")
    notifier({"ti": FakeTI(summary), "task": Task(), "run_id": "manual__1", "exception": error})
    [post] = received
    sent = json.dumps(post["json"])
    assert PLANTED_SECRET not in sent and PLANTED_SECRET[:8] not in sent
    text = post["json"]["text"]
    assert "v" * VIEWER_ID_CHARS not in text and "v" * (VIEWER_ID_CHARS - 1) + "…" in text
    assert "r" * REASON_CHARS not in text
    assert len(text) < ERROR_CHARS * 3


def test_without_a_connection_the_alert_is_logged(capsys):
    from polyv_connector.airflow.notifier import PolyvSyncFailureNotifier

    notifier = PolyvSyncFailureNotifier("no_such_connection_here")
    notifier({"ti": FakeTI(SUMMARY)})
    out = capsys.readouterr().out  # Airflow's task logging (structlog) writes it
    assert "'no_such_connection_here' is not defined: the alert is only logged" in out
    assert "by reason: null_value 2, polyv_rejected 2" in out and notifier.last_message


def test_a_webhook_that_fails_is_an_error_without_its_url(monkeypatch):
    from polyv_connector.airflow.notifier import PolyvSyncFailureNotifier

    monkeypatch.setenv(
        "AIRFLOW_CONN_POLYV_ALERTS", json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9/secret-T0KEN"})
    )
    with pytest.raises(RuntimeError) as raised:
        PolyvSyncFailureNotifier("polyv_alerts")({"ti": FakeTI(SUMMARY)})
    assert "T0KEN" not in str(raised.value) and "polyv_alerts" in str(raised.value)


@pytest.mark.parametrize(
    ("host", "schema", "port", "endpoint", "url"),
    [
        ("hooks.example.com", None, None, "/services/x", "https://hooks.example.com/services/x"),
        ("127.0.0.1", "http", 8080, "a", "http://127.0.0.1:8080/a"),
        ("http://h/base/", None, None, "/x", "http://h/base/x"),
        ("http://h/full", None, None, None, "http://h/full"),
    ],
)
def test_webhook_url_from_an_http_connection(host, schema, port, endpoint, url):
    from polyv_connector.airflow.notifier import webhook_url

    assert webhook_url(host, schema, port, endpoint) == url


def test_every_example_dag_alerts_on_failure():
    from airflow.dag_processing.dagbag import DagBag

    from polyv_connector.airflow.notifier import PolyvSyncFailureNotifier
    from tests.airflow.support import DAGS

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.dags
    for dag in bag.dags.values():
        for task in dag.tasks:
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(isinstance(c, PolyvSyncFailureNotifier) for c in callbacks), (dag.dag_id, task.task_id)


@pytest.mark.slow
def test_a_failed_dag_run_posts_the_alert_with_the_xcom_summary(run_dag, sim, tmp_path, webhook):
    # Wrong credentials: POLYV refuses the run, the task fails for good, the callback alerts.
    url, received = webhook
    env = {
        "AIRFLOW_CONN_POLYV_DEFAULT": conn_json(sim.base_url, secret="WRONG-planted-secret-77aa"),
        "AIRFLOW_CONN_POLYV_ALERTS": json.dumps({"conn_type": "http", "host": url, "extra": {"endpoint": "/alert"}}),
        "AIRFLOW_VAR_POLYV_REPORT_DIR": str(tmp_path),
    }
    run = run_dag(
        "polyv_viewer_sync_parquet", "2025-03-05", {"report_path": "r.parquet", "input_path": str(SAMPLE)}, env=env
    )
    assert run.state == "failed", run.output[-3000:]
    assert len(received) == 1, run.output[-3000:]
    alert = received[0]["json"]
    assert alert["countsByReason"]["polyv_refused"] > 0 and alert["runId"] == run.xcom["runId"]
    assert (
        "by reason: polyv_refused" in alert["text"] and "polyv_viewer_sync_parquet.sync_viewer_fields" in alert["text"]
    )
    assert "WRONG-planted-secret-77aa" not in json.dumps(alert) and PLANTED_SECRET not in json.dumps(alert)
    # The summary was pushed: the links and the alert read it without an XCom miss.
    assert "XCom not found" not in run.output, run.output[-3000:]
    assert "POLYV sync failed: exitCode 3 (aborted:" in run.output and "abortCause auth" in run.output


@pytest.mark.slow
def test_a_task_that_fails_before_its_summary_logs_no_xcom_misses(run_dag, sim, tmp_path, webhook):
    """A configuration error fails before any summary: the extra links (computed when the task
    ends) and the alert ask the operator, not XCom, so the log holds no "XCom not found" errors
    before the real one."""
    url, received = webhook
    env = {
        "AIRFLOW_CONN_POLYV_DEFAULT": conn_json(sim.base_url),
        "AIRFLOW_CONN_POLYV_ALERTS": json.dumps({"conn_type": "http", "host": url, "extra": {"endpoint": "/alert"}}),
        "AIRFLOW_VAR_POLYV_REPORT_DIR": str(tmp_path),
    }
    run = run_dag(
        "polyv_viewer_sync_parquet",
        "2025-03-06",
        {"report_path": "r.parquet", "input_path": str(tmp_path / "no.parquet")},
        env=env,
    )
    assert run.state == "failed", run.output[-3000:]
    assert "XCom not found" not in run.output, run.output[-5000:]
    assert "POLYV sync failed: exitCode 2" in run.output, run.output[-3000:]
    assert len(received) == 1 and "no run summary" in received[0]["json"]["text"]


def test_a_stop_is_said_once_and_rows_with_one_reason_are_one_line():
    """Wrong appSecret: the stop's message once (its ``stopped`` line), not also as ``error:``,
    and the not-attempted rows, which share one reason, as one line with a count."""
    from polyv_connector.airflow.failures import failure_message as operator_message
    from polyv_connector.airflow.notifier import failure_message
    from polyv_connector.engine.result import SyncResult
    from polyv_connector.reasons import stopped_reason

    stop = "POLYV refused the credentials: invalid signature; check the connection's appSecret"
    reason = stopped_reason("auth")
    result = SyncResult(
        run_id="20261130T010203Z-abcd1234",
        app_id="app",
        counts={"not_attempted": 6},
        items=6,
        requests_sent=1,
        requests_planned=1,
        duration_s=0.1,
        report_location="/r.parquet",
        dry_run=False,
        aborted=stop,
        abort_cause="auth",
        counts_by_reason={"polyv_refused": 6},
        problems=[
            {"rowNumber": i, "viewerId": f"v{i}", "reasonCode": "polyv_refused", "reason": reason} for i in range(6)
        ],
    )
    text = failure_message(result.to_dict(), {"error": operator_message(result)})
    assert text.count("invalid signature") == 1 and "error:" not in text
    assert f"  6 rows (rows 0, 1, 2 and 3 more): polyv_refused: {reason}" in text
    assert text.count(reason) == 1
    # An error the summary does not say is kept.
    assert "error: the worker ran out of memory" in failure_message(
        result.to_dict(), {"error": "the worker ran out of memory"}
    )
