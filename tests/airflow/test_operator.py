"""``PolyvViewerFieldSyncOperator.execute`` in-process (connections from the environment, no DB).

Rendering of templates and the real task runner are covered by the DAG runs in test_dags_e2e.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polyv_connector.simulator import FaultConfig
from tests.airflow.support import APP_ID, PLANTED_SECRET, SAMPLE, conn_json, pg_exec, pg_rows

pytestmark = pytest.mark.airflow


class FakeTI:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def _context() -> dict[str, Any]:
    return {"ti": FakeTI(), "run_id": "manual__test"}


def _op(**kwargs: Any):
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    return PolyvViewerFieldSyncOperator(task_id="sync", **kwargs)


def _write(path: Path, rows: list[tuple[str | None, str | None, str | None]]) -> str:
    pq.write_table(
        pa.table(
            {
                "viewerId": [r[0] for r in rows],
                "customFieldId": [r[1] for r in rows],
                "customFieldValue": [r[2] for r in rows],
            }
        ),
        path,
    )
    return str(path)


def _strict(summary: dict[str, Any]) -> str:
    text = json.dumps(summary, allow_nan=False)
    assert PLANTED_SECRET not in text
    return text


def test_parquet_sync_returns_strict_json_summary(sim, polyv_env, tmp_path):
    report = tmp_path / "report.parquet"
    summary = _op(input_path=str(SAMPLE), report_path=str(report)).execute(_context())
    _strict(summary)
    assert summary["ok"] is True and summary["report"] == str(report)
    assert summary["counts"]["sent"] == 400 and summary["items"] == 404
    assert summary["requestsSent"] >= 1 and summary["airflowRunId"] == "manual__test"
    stored = {k: v for k, v in sim.values.items() if k[0] == APP_ID}
    assert len(stored) == 400 and stored[(APP_ID, "viewer-0001", "PAY_STATUS")] == "已支付"
    rows = pq.read_table(report).to_pylist()
    assert len(rows) == 404 and {r["runId"] for r in rows} == {summary["runId"]}


def test_wide_mapping_and_overrides(sim, polyv_env, tmp_path):
    src = tmp_path / "wide.parquet"
    pq.write_table(pa.table({"uid": ["a", "b", "c"], "pay": ["yes", "no", None], "vip": [1, 2, 3]}), src)
    summary = _op(
        input_path=str(src),
        report_path=str(tmp_path / "r.parquet"),
        viewer_id_column="uid",
        fields={"PAY_STATUS": "pay", "VIP_LEVEL": "vip"},
        batch_size=2,
        concurrency=1,
    ).execute(_context())
    assert summary["counts"]["sent"] == 5 and summary["counts"]["rejected"] == 1  # the null value
    assert sim.values[(APP_ID, "c", "VIP_LEVEL")] == "3"
    assert sim.stats.save_requests == 3  # 5 items in batches of 2


def test_dry_run_from_a_rendered_template_string(sim, polyv_env, tmp_path):
    summary = _op(
        input_path=str(SAMPLE), report_path=str(tmp_path / "r.parquet"), dry_run="True", full_refresh="False"
    ).execute(_context())
    assert summary["dryRun"] is True and summary["counts"]["dry_run"] == 400
    assert sim.stats.save_requests == 0 and not sim.values


def test_state_dir_and_full_refresh(sim, polyv_env, tmp_path):
    src = _write(tmp_path / "in.parquet", [("v1", "PAY_STATUS", "x"), ("v2", "PAY_STATUS", "y")])
    args = {"input_path": src, "report_path": str(tmp_path / "r.parquet"), "state_dir": str(tmp_path / "state")}
    assert _op(**args).execute(_context())["counts"]["sent"] == 2
    again = _op(**args).execute(_context())
    assert again["counts"]["unchanged"] == 2 and again["requestsSent"] == 0
    forced = _op(full_refresh="true", **args).execute(_context())
    assert forced["counts"]["sent"] == 2


def test_values_polyv_refuses_fail_the_task_without_retry_after_the_report(sim, polyv_env, tmp_path):
    # 'param validate error' is about the value: a retry would be refused the same way.
    from airflow.sdk.exceptions import AirflowFailException

    sim.set_faults(FaultConfig(poison_values=("POISON",)))
    src = _write(tmp_path / "in.parquet", [("v1", "PAY_STATUS", "ok"), ("v2", "PAY_STATUS", "POISON")])
    report = tmp_path / "r.parquet"
    context = _context()
    with pytest.raises(AirflowFailException) as raised:
        _op(input_path=src, report_path=str(report), max_attempts=1).execute(context)
    assert "failed 1" in str(raised.value) and str(report) in str(raised.value)
    assert "by reason: polyv_rejected 1" in str(raised.value)
    statuses = {r["viewerId"]: r["status"] for r in pq.read_table(report).to_pylist()}
    assert statuses == {"v1": "sent", "v2": "failed"}
    summary = context["ti"].pushed["return_value"]  # kept for alerting although the task failed
    assert summary["ok"] is False and summary["counts"]["failed"] == 1
    assert summary["countsByReason"] == {"polyv_rejected": 1}
    assert summary["problems"] == [
        {
            "rowNumber": 1,
            "viewerId": "v2",
            "reasonCode": "polyv_rejected",
            "reason": summary["problems"][0]["reason"],
        }
    ]
    assert "param validate error" in summary["problems"][0]["reason"]
    assert "POISON" not in _strict(summary)


def test_items_failed_after_their_retries_fail_the_task_retryably(sim, polyv_env, tmp_path):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    sim.set_faults(FaultConfig(error_rate=1.0))
    src = _write(tmp_path / "in.parquet", [("v1", "PAY_STATUS", "ok")])
    context = _context()
    try:
        with pytest.raises(AirflowException) as raised:
            _op(input_path=src, report_path=str(tmp_path / "r.parquet"), max_attempts=2).execute(context)
    finally:
        sim.set_faults(FaultConfig())  # the simulator is shared by the session: faults outlive reset()
    assert not isinstance(raised.value, AirflowFailException)  # a 5XX may pass later
    assert context["ti"].pushed["return_value"]["countsByReason"] == {"retries_exhausted": 1}


def test_a_failed_gate_fails_the_task_without_retry_counting_the_rejected(sim, polyv_env, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    src = _write(tmp_path / "in.parquet", [("v1", "PAY_STATUS", None), ("v2", "PAY_STATUS", "ok")])
    context = _context()
    with pytest.raises(AirflowFailException, match="data-quality gate failed"):
        _op(input_path=src, report_path=str(tmp_path / "r.parquet"), max_rejected_fraction=0.1).execute(context)
    summary = context["ti"].pushed["return_value"]
    assert summary["counts"]["rejected"] == 1 and summary["counts"]["not_attempted"] == 1
    assert summary["countsByReason"] == {"gate_failed": 1, "null_value": 1}
    assert sim.stats.save_requests == 0


def test_refused_credentials_fail_without_retry_and_without_the_secret(sim, monkeypatch, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    wrong = "WRONG-planted-secret-77aa"
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_DEFAULT", conn_json(sim.base_url, secret=wrong))
    report = tmp_path / "r.parquet"
    context = _context()
    with pytest.raises(AirflowFailException) as raised:
        _op(input_path=str(SAMPLE), report_path=str(report)).execute(context)
    message = str(raised.value)
    assert "invalid signature" in message and "not_attempted" in message
    assert wrong not in message and wrong not in json.dumps(context["ti"].pushed)
    statuses = [r["status"] for r in pq.read_table(report).to_pylist()]
    assert statuses.count("not_attempted") == 401 and "sent" not in statuses
    assert wrong not in report.read_bytes().decode("latin-1")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one source"),
        ({"input_path": "x.parquet", "source_conn_id": "w"}, "exactly one source"),
        ({"input_path": str(SAMPLE)}, "report_path"),
        ({"input_path": str(SAMPLE), "report_table": "t"}, "report_conn_id"),
        ({"input_path": str(SAMPLE), "report_path": "/tmp/x.parquet", "dry_run": "maybe"}, "dry_run"),
    ],
)
def test_configuration_errors_fail_without_retry(polyv_env, kwargs, match):
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match=match):
        _op(**kwargs).execute(_context())


def test_missing_input_fails_without_retry(polyv_env, tmp_path):
    # Exit-code contract: 2 (configuration or input error, nothing sent) is not retried;
    # a late file is a sensor's job, not a retry loop's.
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="input error"):
        _op(input_path=str(tmp_path / "late.parquet"), report_path=str(tmp_path / "r.parquet")).execute(_context())


def test_expectation_suite_is_wired_lazily(sim, polyv_env, tmp_path, monkeypatch):
    import polyv_connector.expectations as expectations

    calls: dict[str, Any] = {}

    class FakeValidator:
        @classmethod
        def from_file(cls, path, report_dir=None, setting=None):
            calls.update(path=path, report_dir=report_dir, setting=setting)
            return cls()

        def validate_chunk(self, items):
            return None

        def finish(self):
            return []

        def summary(self):
            return {"validation": {"suite": "s", "gateFailures": []}}

    monkeypatch.setattr(expectations, "SuiteValidator", FakeValidator)
    report = tmp_path / "r.parquet"
    op = _op(input_path=str(SAMPLE), report_path=str(report), expectation_suite_path=str(tmp_path / "s.json"))
    from polyv_connector.airflow.hooks import PolyvHook

    assert PolyvHook().resolve_run(op._given()).options.max_rejected_fraction == 0.05  # the CLI's default with a suite
    summary = op.execute(_context())
    assert calls == {"path": str(tmp_path / "s.json"), "report_dir": str(report), "setting": "expectation_suite_path"}
    assert summary["validation"] == {"suite": "s", "gateFailures": []}


@pytest.mark.slow
def test_bundled_expectation_suite(sim, polyv_env, tmp_path):
    report = tmp_path / "r.parquet"
    summary = _op(
        input_path=str(SAMPLE), report_path=str(report), expectation_suite_path="default", max_rejected_fraction="0.5"
    ).execute(_context())
    _strict(summary)
    assert summary["ok"] is True and summary["validation"]
    assert summary["counts"]["sent"] + summary["counts"]["rejected"] + summary["counts"]["duplicate"] == 404


def test_a_bad_suite_is_a_configuration_error(polyv_env, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    suite = tmp_path / "bad.json"
    suite.write_text("{not json")
    with pytest.raises(AirflowFailException, match="expectation_suite_path"):
        _op(input_path=str(SAMPLE), report_path=str(tmp_path / "r.parquet"), expectation_suite_path=str(suite)).execute(
            _context()
        )


@pytest.mark.postgres
def test_warehouse_source_and_report_table(sim, polyv_env, pg_schema, pg_warehouse_env):
    pg_exec(f"CREATE TABLE {pg_schema}.attrs (uid text, field text, val text, updated_at timestamptz)")
    pg_exec(
        f"INSERT INTO {pg_schema}.attrs SELECT 'u' || i, 'VIP_LEVEL', 'L' || i, now() FROM generate_series(1, 30) i"
    )
    summary = _op(
        source_conn_id="polyv_warehouse",
        source_sql=f"SELECT * FROM {pg_schema}.attrs WHERE uid <> %s",
        source_parameters=["u1"],
        viewer_id_column="uid",
        field_id_column="field",
        value_column="val",
        report_table=f"{pg_schema}.polyv_sync_report",
        state_table=f"{pg_schema}.polyv_sync_state",
        read_batch_rows=7,
    ).execute(_context())
    assert summary["counts"]["sent"] == 29
    assert summary["report"] == f"{pg_schema}.polyv_sync_report (connection polyv_warehouse)"
    assert sim.values[(APP_ID, "u30", "VIP_LEVEL")] == "L30"
    assert pg_rows(f'SELECT status, count(*), min("runId") FROM {pg_schema}.polyv_sync_report GROUP BY 1') == [
        ("sent", 29, summary["runId"])
    ]


def test_default_outlets():
    from polyv_connector.airflow.assets import report_place_assets, report_table_asset
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    op = _op(source_conn_id="wh", source_table="t", report_table="s.report", report_path="/data/r.parquet")
    # The report's places, not the run's file: the table, and the folder the file is in.
    assert op.outlets == report_place_assets(
        "dag", report_path="/data/r.parquet", report_table="s.report", conn_id="wh"
    )
    assert op.outlets[0] == report_table_asset("wh", "s.report")
    assert op.outlets[0].uri == "x-polyv-report-table://wh/s.report"
    assert op.outlets[1].uri == "file:///data"
    assert _op(input_path="x", report_path="s3://b/reports/r.parquet").outlets[0].uri == "s3://b/reports"
    explicit = PolyvViewerFieldSyncOperator(task_id="t", input_path="x", report_path="/r.parquet", outlets=[])
    assert explicit.outlets == []


def test_templated_report_gets_the_task_asset():
    from airflow.sdk import DAG, Asset, AssetAlias

    with DAG("d", schedule=None):
        op = _op(input_path="x", report_path="out/{{ ds }}.parquet")
    assert [a.uri for a in op.outlets if isinstance(a, Asset)] == ["x-polyv-report://d/sync"]
    # The real locations come at run time through the task's alias (tests/airflow/test_lineage.py).
    assert [a.name for a in op.outlets if isinstance(a, AssetAlias)] == ["polyv_sync/d/sync"]


def test_template_fields_cover_sql_tables_and_paths():
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    assert {
        "source_sql",
        "source_table",
        "report_table",
        "input_path",
        "report_path",
        "state_dir",
        "expectation_suite_path",
        "dry_run_setting",
        "full_refresh",
    } <= set(PolyvViewerFieldSyncOperator.template_fields)


def test_the_signature_takes_the_operator_settings_each_defaulting_to_not_given():
    """The signature is written out (Airflow's partial/expand read it) but follows the table."""
    import inspect

    from polyv_connector import runspec
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    parameters = inspect.signature(PolyvViewerFieldSyncOperator.__init__).parameters
    # polyv_conn_id and duckdb_external_access are the DAG author's alone: no run settings.
    author_only = ("polyv_conn_id", "duckdb_external_access")
    settings = {name: p for name, p in parameters.items() if name not in ("self", *author_only, "kwargs")}
    assert set(settings) == set(runspec.OPERATOR_SETTINGS)
    assert parameters["duckdb_external_access"].default is False
    assert {name: p.default for name, p in settings.items() if p.default is not None} == {}
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in settings.values())
    # The template fields come from the table too (dry_run lives in dry_run_setting), the same
    # as when they were written out here.
    assert set(PolyvViewerFieldSyncOperator.template_fields) == {
        *("input_path", "source_conn_id", "source_sql", "source_table", "source_parameters"),
        *("allowed_source_conn_ids", "allowed_polyv_conn_ids", "report_path", "report_conn_id"),
        *("report_table", "state_dir", "state_table", "state_conn_id", "diff_in_warehouse"),
        *("expectation_suite_path", "validation_dir", "report_dir", "allowed_input_prefixes"),
        *("allowed_suite_prefixes", "dry_run_setting", "full_refresh", "max_rejected_fraction"),
        *("lock_timeout", "budget_url", "budget_conn_id", "budget_rps", "partitions", "partition"),
        *("report_rows", "runs_table", "report_retention_days", "runs_retention_days"),
        # the change limits and what NULL means (issue 20): a trigger's params may set them
        *("max_changed_fraction", "change_limit_min_items", "max_source_shrink", "whole_source", "null_values"),
        # plan, then apply exactly the plan (issue 20)
        *("mode", "plan_path"),
    }


def test_arguments_pass_on_as_given_and_a_blank_state_table_keeps_no_state():
    from polyv_connector import runspec

    op = _op(input_path="x", report_path="r.parquet", batch_size=7, dry_run="true")
    given = op._given()
    assert set(given) == set(runspec.OPERATOR_SETTINGS)
    assert given["batch_size"] == 7 and given["dry_run"] == "true" and given["state_table"] is None
    spec = runspec.resolve(given, front="operator", env={})
    assert spec.options.send.batch_size == 7 and spec.options.dry_run
    assert spec.state_table == "polyv_sync_state"  # None: not given, the default applies
    assert runspec.resolve(_op(state_table="")._given(), front="operator", env={}).state_table is None


def test_openlineage_is_optional(sim, polyv_env, tmp_path, monkeypatch):
    """Without the OpenLineage provider the operator runs and reports no lineage (None)."""
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)  # import fails
    op = _op(input_path=str(SAMPLE), report_path=str(tmp_path / "r.parquet"))
    op.execute(_context())
    assert op.get_openlineage_facets_on_complete(None) is None


# The lineage with the real provider and client: tests/airflow/test_lineage.py.


def test_validation_results_are_written_without_a_parquet_report(sim, polyv_env, tmp_path, pg_schema, pg_warehouse_env):
    pg_exec(f"CREATE TABLE {pg_schema}.attrs (uid text, field text, val text)")
    pg_exec(f"INSERT INTO {pg_schema}.attrs VALUES ('u1', 'VIP_LEVEL', 'L1'), ('u2', 'VIP_LEVEL', 'L2')")
    summary = _op(
        source_conn_id="polyv_warehouse",
        source_table=f"{pg_schema}.attrs",
        viewer_id_column="uid",
        field_id_column="field",
        value_column="val",
        report_table=f"{pg_schema}.report",
        state_table="",
        expectation_suite_path="default",
        validation_dir=str(tmp_path / "dq"),
    ).execute(_context())
    result_json = Path(summary["validation"]["resultJson"])
    assert result_json.is_file()
    assert result_json.parent == tmp_path / "dq"
    assert Path(summary["validation"]["dataDocsPage"]).is_file()


def _slow_source(tmp_path: Path, n: int) -> str:
    return _write(tmp_path / "slow.parquet", [(f"viewer-{i}", "PAY_STATUS", f"v{i}") for i in range(n)])


def _statuses_of_a_stopped_run(report: Path, n: int) -> list[str]:
    statuses = pq.read_table(report).column("status").to_pylist()
    assert len(statuses) == n
    assert "sent" in statuses and set(statuses) <= {"sent", "in_doubt", "not_attempted"}
    return statuses


def test_on_kill_from_another_thread_stops_execute_with_a_complete_report(sim, polyv_env, tmp_path):
    import threading
    import time

    from airflow.sdk.exceptions import AirflowException

    sim.set_faults(FaultConfig(latency_s=0.05))
    n = 600
    op = _op(
        input_path=_slow_source(tmp_path, n),
        report_path=str(tmp_path / "r.parquet"),
        state_dir=str(tmp_path / "state"),
        batch_size=10,
        concurrency=2,
    )

    def kill() -> None:
        while not sim.values:
            time.sleep(0.01)
        op.on_kill()  # what Airflow's SIGTERM handler does, from outside execute()

    killer = threading.Thread(target=kill)
    killer.start()
    ctx = _context()
    started = time.monotonic()
    with pytest.raises(AirflowException, match="stopped"):
        op.execute(ctx)
    killer.join()
    assert time.monotonic() - started < 20
    statuses = _statuses_of_a_stopped_run(tmp_path / "r.parquet", n)
    summary = ctx["ti"].pushed["return_value"]
    assert summary["abortCause"] == "stopped" and summary["counts"]["sent"] == statuses.count("sent") < n


def test_execution_timeout_writes_the_report_then_lets_the_timeout_fail_the_task(sim, polyv_env, tmp_path):
    import signal

    from airflow.sdk.exceptions import AirflowTaskTimeout

    # As Airflow enforces execution_timeout: SIGALRM, whose handler raises in execute().
    def on_alarm(_signum: int, _frame: Any) -> None:
        raise AirflowTaskTimeout("Timeout, PID: test")

    sim.set_faults(FaultConfig(latency_s=0.05))
    n = 600
    op = _op(
        input_path=_slow_source(tmp_path, n), report_path=str(tmp_path / "r.parquet"), batch_size=10, concurrency=2
    )
    ctx = _context()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(AirflowTaskTimeout):
            op.execute(ctx)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    op.on_kill()  # Airflow calls it after the timeout: harmless once execute() is over
    statuses = _statuses_of_a_stopped_run(tmp_path / "r.parquet", n)
    summary = ctx["ti"].pushed["return_value"]
    assert summary["abortCause"] == "stopped" and "AirflowTaskTimeout" in summary["aborted"]
    assert summary["counts"]["sent"] == statuses.count("sent")


def test_a_failed_task_logs_its_exit_code_once_and_the_stop_once(sim, monkeypatch, tmp_path, capsys, caplog):
    """Wrong appSecret: one ERROR line with exitCode, its meaning and abortCause before the
    exception; POLYV's message once in the log, once in the exception, never in the rows.
    (The task SDK logs through structlog to stdout, outside the Task Runner.)"""
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("AIRFLOW_CONN_POLYV_DEFAULT", conn_json(sim.base_url, secret="WRONG-planted-secret-77aa"))
    report = tmp_path / "r.parquet"
    with pytest.raises(AirflowFailException) as raised:
        _op(input_path=str(SAMPLE), report_path=str(report)).execute(_context())
    # The task SDK's structlog lines go to stdout; the connector's own logger reaches stdout or
    # pytest's log capture, depending on which test configured logging first.
    logged = "".join(capsys.readouterr()) + caplog.text
    errors = [line for line in logged.splitlines() if "exitCode" in line]
    assert len(errors) == 1 and "POLYV sync failed: exitCode 3 (aborted: POLYV stopped the run" in errors[0]
    assert "abortCause auth" in errors[0] and ("[error" in errors[0] or errors[0].startswith("ERROR"))
    assert logged.count("invalid signature") == 1, logged
    assert str(raised.value).count("invalid signature") == 1
    assert not any("invalid signature" in (r["reason"] or "") for r in pq.read_table(report).to_pylist())


def test_a_task_logs_its_source_and_interval_and_warns_on_0_rows(sim, polyv_env, tmp_path, capsys, caplog):
    import datetime as dt

    empty = _write(tmp_path / "empty.parquet", [])
    start = dt.datetime(2025, 3, 1, 2, tzinfo=dt.UTC)
    context = {
        **_context(),
        "data_interval_start": start,
        "data_interval_end": start + dt.timedelta(days=1),
        "logical_date": dt.datetime(2025, 3, 3, tzinfo=dt.UTC),
    }
    summary = _op(input_path=empty, report_path=str(tmp_path / "r.parquet")).execute(context)
    # The task SDK's structlog lines go to stdout; the connector's own logger reaches stdout or
    # pytest's log capture, depending on which test configured logging first.
    logged = "".join(capsys.readouterr()) + caplog.text
    infos = [line for line in logged.splitlines() if "[info" in line]
    assert any(f"source: input_path {empty}" in line for line in infos)
    interval = (
        "data interval: [2025-03-01T02:00:00+00:00, 2025-03-02T02:00:00+00:00) (run dated 2025-03-03T00:00:00+00:00)"
    )
    assert any(interval in line for line in infos)
    (warning,) = summary["warnings"]
    assert warning.startswith("read 0 rows from") and "reads updated_at in [2025-03-01T02:00:00+00:00" in warning
    assert summary["exitCode"] == 0
    assert any("warning" in line.lower() and "read 0 rows" in line for line in logged.splitlines())
    page = Path(summary["runPage"]).read_text()
    assert 'class="notice"' in page and "read 0 rows" in page


def test_a_change_limit_fails_the_task_without_retry_sending_nothing(sim, polyv_env, tmp_path):
    """Issue 20: the limits are operator arguments (templated: a trigger's text is parsed)."""
    from airflow.sdk.exceptions import AirflowFailException

    state = str(tmp_path / "state")
    rows = [(f"v{i}", "PAY_STATUS", f"x{i}") for i in range(40)]
    first = _op(input_path=_write(tmp_path / "a.parquet", rows), report_path=str(tmp_path / "a.r.parquet"))
    first.state_dir = state
    assert first.execute(_context())["changes"] == {"new": 40, "changed": 0, "cleared": 0}
    saves = sim.stats.save_requests
    changed = [(v, f, "new") for v, f, _ in rows[:30]] + rows[30:]
    context = _context()
    kwargs = dict(input_path=_write(tmp_path / "b.parquet", changed), state_dir=state, change_limit_min_items="10")
    with pytest.raises(AirflowFailException, match="change limit: 30 changes planned") as raised:
        _op(report_path=str(tmp_path / "b.r.parquet"), max_changed_fraction="0.5", **kwargs).execute(context)
    assert "max_changed_fraction" in str(raised.value)
    summary = context["ti"].pushed["return_value"]
    assert summary["exitCode"] == 4 and summary["limitBreaches"][0]["code"] == "change_limit"
    assert summary["countsByReason"] == {"change_limit": 30, "unchanged": 10}
    assert sim.stats.save_requests == saves
    _strict(summary)
    ok = _op(report_path=str(tmp_path / "c.r.parquet"), max_changed_fraction="none", **kwargs).execute(_context())
    assert ok["counts"]["sent"] == 30 and ok["changes"]["changed"] == 30


def test_whole_source_and_null_values_are_operator_arguments(sim, polyv_env, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    state = str(tmp_path / "state")
    rows = [(f"v{i}", "PAY_STATUS", f"x{i}") for i in range(20)]
    src = _write(tmp_path / "a.parquet", rows)
    first = _op(input_path=src, report_path=str(tmp_path / "a.r.parquet"), state_dir=state, whole_source="True")
    assert first.execute(_context())["removed"] == 0
    shrunk = _write(tmp_path / "b.parquet", [*rows[:5], ("v0", "VIP_LEVEL", None)])
    with pytest.raises(AirflowFailException, match="max_source_shrink"):
        _op(input_path=shrunk, report_path=str(tmp_path / "b.r.parquet"), state_dir=state, whole_source=True).execute(
            _context()
        )
    done = _op(
        input_path=shrunk,
        report_path=str(tmp_path / "c.r.parquet"),
        state_dir=state,
        whole_source=True,
        max_source_shrink="none",
        null_values="clear",
    ).execute(_context())
    assert done["removed"] == 15 and done["changes"]["cleared"] == 1
    assert sim.values[(APP_ID, "v0", "VIP_LEVEL")] == ""


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_changed_fraction": "abc"}, "max_changed_fraction"),
        ({"max_changed_fraction": "-1"}, "max_changed_fraction"),
        ({"max_source_shrink": "2"}, "max_source_shrink"),
        ({"change_limit_min_items": "lots"}, "change_limit_min_items"),
        ({"null_values": "drop"}, "null_values"),
        ({"whole_source": "maybe"}, "whole_source"),
    ],
)
def test_hostile_limits_from_a_trigger_fail_before_any_request(sim, polyv_env, tmp_path, kwargs, match):
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match=match):
        _op(input_path=str(SAMPLE), report_path=str(tmp_path / "r.parquet"), **kwargs).execute(_context())
    assert sim.stats.api_requests == 0
