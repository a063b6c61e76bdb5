"""The example DAGs, run the way a worker runs them, against the simulator and real PostgreSQL.

Each test is one ``airflow dags test <dag> <date> -c <conf> --use-executor`` (templates rendered,
params validated, task supervised, logs written to files), then asserts on the DagRun state,
the simulator's stored values, the XCom summary and the report rows.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from urllib.parse import quote

import pyarrow.parquet as pq
import pytest

from tests.airflow.support import AIRFLOW_HOME, APP_ID, PLANTED_SECRET, SAMPLE, conn_json, pg_exec, pg_rows

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def _polyv(sim, secret: str = PLANTED_SECRET) -> dict[str, str]:
    return {"AIRFLOW_CONN_POLYV_DEFAULT": conn_json(sim.base_url, secret=secret)}


def _warehouse_env(sim) -> dict[str, str]:
    from tests.airflow.support import PG_URI

    return {**_polyv(sim), "AIRFLOW_CONN_POLYV_WAREHOUSE": PG_URI}


def _attrs_table(schema: str) -> str:
    """Long-form viewer attributes, one row every 6 hours over four days from 2025-03-01."""
    table = f"{schema}.viewer_attributes"
    pg_exec(
        f"CREATE TABLE {table} (viewer_id text, custom_field_id text, custom_field_value text, updated_at timestamptz)"
    )
    pg_exec(
        f"INSERT INTO {table} SELECT 'viewer-' || i, CASE WHEN i % 2 = 0 THEN 'PAY_STATUS' ELSE 'VIP_LEVEL' END, "
        "'value-' || i, timestamptz '2025-03-01 00:00+00' + (i * 6 || ' hours')::interval "
        "FROM generate_series(0, 15) i"
    )
    return table


def _stored(sim) -> dict[tuple[str, str], str]:
    return {(v, f): value for (app, v, f), value in sim.values.items() if app == APP_ID}


def _ti_url(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """Where the plugin serves a task instance's files (its extra links start so)."""
    return f"/polyv/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/{map_index}"


def _assert_success(run) -> None:
    assert run.returncode == 0 and run.state == "success", run.output[-5000:]


def test_parquet_dag_on_the_bundled_sample(run_dag, sim, tmp_path):
    # report_path is a name in the DAG's folder under the Variable polyv_report_dir (a trigger
    # cannot aim it elsewhere).
    folder = tmp_path / "polyv_viewer_sync_parquet"
    report = folder / "report.parquet"
    run = run_dag(
        "polyv_viewer_sync_parquet",
        "2025-03-02",
        {"report_path": report.name},
        env={**_polyv(sim), "AIRFLOW_VAR_POLYV_REPORT_DIR": str(tmp_path)},
    )
    _assert_success(run)
    summary = run.xcom
    assert summary["ok"] is True and summary["counts"]["sent"] == 400 and summary["report"] == str(report)
    assert summary["airflowRunId"] == run.run_id
    # The run page next to the report, absolute paths in the XCom, and the extra links' XComs.
    assert summary["reportPath"] == str(report) and summary["runPage"] == str(folder / "report.html")
    page = (folder / "report.html").read_text()
    assert 'data-count="sent"><b>400</b>' in page and 'href="report.parquet"' in page
    assert f"report: {report}" in run.log_text() and f"run page: {folder / 'report.html'}" in run.log_text()
    with sqlite3.connect(AIRFLOW_HOME / "airflow.db") as db:
        links = dict(
            db.execute("SELECT key, value FROM xcom WHERE run_id = ? AND key LIKE '_link_%'", (run.run_id,)).fetchall()
        )
    ti = _ti_url("polyv_viewer_sync_parquet", run.run_id, "sync_viewer_fields")
    assert json.loads(links["_link_RunPageLink"]) == f"{ti}/run-page/report.html"
    assert json.loads(links["_link_ReportLink"]) == f"{ti}/report/report.parquet"
    assert json.loads(links["_link_DataDocsLink"]) == ""  # no suite, no Data Docs
    stored = _stored(sim)
    assert len(stored) == 400 and stored[("viewer-0002", "VIP_LEVEL")] == "钻石会员"
    rows = pq.read_table(report).to_pylist()
    assert len(rows) == pq.read_metadata(SAMPLE).num_rows
    assert {r["runId"] for r in rows} == {summary["runId"]}
    counts = {s: sum(r["status"] == s for r in rows) for s in summary["counts"]}
    assert counts == summary["counts"]
    # The report file is the task's asset; the event carries the concrete location.
    with sqlite3.connect(AIRFLOW_HOME / "airflow.db") as db:
        extras = [
            json.loads(e)
            for (e,) in db.execute(
                "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                "WHERE a.uri = 'x-polyv-report://polyv_viewer_sync_parquet/sync_viewer_fields'"
            )
        ]
    assert any(e.get("runId") == summary["runId"] and e.get("report") == str(report) for e in extras)


def test_parquet_dag_with_the_bundled_suite_links_its_data_docs(run_dag, sim, tmp_path):
    """The Parquet DAG takes ``expectation_suite_path``; the run page shows the expectations and
    the Data Docs link points at this run's validation page, served like the page."""
    run = run_dag(
        "polyv_viewer_sync_parquet",
        "2025-03-05",
        {"report_path": "suite/run.parquet", "expectation_suite_path": "default"},
        env={**_polyv(sim), "AIRFLOW_VAR_POLYV_REPORT_DIR": str(tmp_path)},
    )
    summary = run.xcom
    assert summary and summary["validation"]["suite"], run.output[-3000:]
    docs = summary["validation"]["dataDocsPage"]
    assert Path(docs).is_file() and Path(docs).is_relative_to(tmp_path / "polyv_viewer_sync_parquet" / "suite")
    page = Path(summary["runPage"]).read_text(encoding="utf-8")
    assert 'id="expectations"' in page and summary["validation"]["expectations"][0]["type"] in page
    assert 'id="link-data-docs" href="run.data_docs/' in page
    with sqlite3.connect(AIRFLOW_HOME / "airflow.db") as db:
        (link,) = db.execute(
            "SELECT value FROM xcom WHERE run_id = ? AND key = '_link_DataDocsLink'", (run.run_id,)
        ).fetchone()
    ti = _ti_url("polyv_viewer_sync_parquet", run.run_id, "sync_viewer_fields")
    site = Path(summary["validation"]["dataDocs"]).parent
    assert json.loads(link) == f"{ti}/data-docs/{Path(docs).relative_to(site).as_posix()}"


@pytest.mark.postgres
def test_warehouse_dag_syncs_the_data_interval(run_dag, sim, pg_schema):
    table = _attrs_table(pg_schema)
    report_table = f"{pg_schema}.polyv_sync_report"
    run = run_dag(
        "polyv_viewer_sync_warehouse",
        "2025-03-03",
        {"source_table": table, "report_table": report_table, "state_table": f"{pg_schema}.polyv_sync_state"},
        env=_warehouse_env(sim),
    )
    _assert_success(run)
    start, end = (dt.datetime.fromisoformat(t).replace(tzinfo=dt.UTC) for t in run.data_interval)
    assert end - start == dt.timedelta(days=1)
    expected = {
        (v, f): value
        for v, f, value in pg_rows(
            f"SELECT viewer_id, custom_field_id, custom_field_value FROM {table} "
            "WHERE updated_at >= %s AND updated_at < %s",
            (start, end),
        )
    }
    assert len(expected) == 4  # four rows a day: the interval selects one day, not everything
    assert _stored(sim) == expected
    summary = run.xcom
    assert summary["counts"]["sent"] == 4 and summary["items"] == 4
    rows = pg_rows(f'SELECT "viewerId", "customFieldId", status, "runId", "requestId" FROM {report_table}')
    assert {(r[0], r[1]) for r in rows} == set(expected)
    assert {(r[2], r[3]) for r in rows} == {("sent", summary["runId"])}
    assert all(r[4] for r in rows)
    # The Airflow run id in the report table; a table-only report's page under the plugin's folder.
    assert pg_rows(f'SELECT DISTINCT "airflowRunId" FROM {report_table}') == [(run.run_id,)]
    assert summary["reportPath"] is None
    assert summary["runPage"].startswith(str(AIRFLOW_HOME / "polyv_reports" / "polyv_viewer_sync_warehouse"))
    assert 'data-count="sent"><b>4</b>' in Path(summary["runPage"]).read_text(encoding="utf-8")


@pytest.mark.postgres
def test_backfill_dag_resyncs_a_whole_table(run_dag, sim, pg_schema):
    table = _attrs_table(pg_schema)
    report_table = f"{pg_schema}.resync_report"
    run = run_dag(
        "polyv_viewer_backfill",
        "2025-03-04",
        {"source_table": table, "report_table": report_table, "state_table": f"{pg_schema}.polyv_sync_state"},
        env=_warehouse_env(sim),
    )
    _assert_success(run)
    assert len(_stored(sim)) == 16
    assert run.xcom["counts"]["sent"] == 16
    assert pg_rows(f"SELECT status, count(*) FROM {report_table} GROUP BY 1") == [("sent", 16)]


def test_a_trigger_cannot_aim_the_report_outside_the_report_dir(run_dag, sim, tmp_path):
    victim = tmp_path / "dag_file.py"
    victim.write_text("# a DAG file the worker can write")
    run = run_dag(
        "polyv_viewer_sync_parquet",
        "2025-03-06",
        {"report_path": str(victim)},
        env={**_polyv(sim), "AIRFLOW_VAR_POLYV_REPORT_DIR": str(tmp_path / "reports")},
    )
    assert run.state == "failed", run.output[-5000:]
    assert victim.read_text() == "# a DAG file the worker can write"
    assert sim.stats.api_requests == 0
    assert "report_path" in run.log_text()


def test_refused_credentials_fail_the_run_after_the_report(run_dag, sim, tmp_path):
    wrong = "WRONG-planted-s3cr3t-e2e-0b9d"
    report = tmp_path / "polyv_viewer_sync_parquet" / "report.parquet"
    run = run_dag(
        "polyv_viewer_sync_parquet",
        "2025-03-05",
        {"report_path": report.name},
        env={**_polyv(sim, secret=wrong), "AIRFLOW_VAR_POLYV_REPORT_DIR": str(tmp_path)},
    )
    assert run.state == "failed", run.output[-5000:]
    assert not sim.values and sim.stats.save_requests == 0
    rows = pq.read_table(report).to_pylist()
    assert sum(r["status"] == "not_attempted" for r in rows) == 401
    assert run.xcom["ok"] is False and run.xcom["abortCause"] == "auth"
    logs = run.log_text()
    assert "did not sync every item" in logs and "invalid signature" in logs
    for text in (logs, run.output, json.dumps(run.xcom), report.read_bytes().decode("latin-1")):
        assert wrong not in text


@pytest.mark.postgres
def test_planted_secret_never_leaks(run_dag, sim, pg_schema, tmp_path):
    table = _attrs_table(pg_schema)
    report_table = f"{pg_schema}.polyv_sync_report"
    # Both report targets, and the connection's secret in the env JSON as users give it.
    run = run_dag(
        "polyv_viewer_backfill",
        "2025-03-06",
        {"source_table": table, "report_table": report_table, "state_table": f"{pg_schema}.polyv_sync_state"},
        env=_warehouse_env(sim),
    )
    _assert_success(run)
    assert run.task_logs, "no task log file was written under AIRFLOW_HOME/logs"
    every_log = "\n".join(p.read_text(errors="replace") for p in (AIRFLOW_HOME / "logs").rglob("*") if p.is_file())
    assert "POLYV sync" in every_log  # the scan reads real task logs
    assert PLANTED_SECRET not in every_log
    assert PLANTED_SECRET not in run.output
    assert PLANTED_SECRET not in json.dumps(run.xcom)
    page = Path(run.xcom["runPage"]).read_text(encoding="utf-8")
    assert "POLYV sync" in page and PLANTED_SECRET not in page
    rows = pg_rows(f"SELECT * FROM {report_table}")
    assert rows and PLANTED_SECRET not in repr(rows)
    with sqlite3.connect(AIRFLOW_HOME / "airflow.db") as db:
        for (value,) in db.execute("SELECT value FROM xcom"):
            assert PLANTED_SECRET not in str(value)
        for (extra,) in db.execute("SELECT extra FROM asset_event"):
            assert PLANTED_SECRET not in str(extra)
        for (fields,) in db.execute("SELECT rendered_fields FROM rendered_task_instance_fields"):
            assert PLANTED_SECRET not in str(fields)


def test_warehouse_dag_can_be_backfilled_over_a_date_range(airflow_db):
    """``airflow backfill create`` accepts the nightly DAG and its params (dry run: no scheduler here)."""
    import subprocess

    from tests.airflow.support import BIN, subprocess_env

    env = subprocess_env()
    reserialize = subprocess.run(
        [str(BIN / "airflow"), "dags", "reserialize"], env=env, capture_output=True, text=True, timeout=120
    )
    assert reserialize.returncode == 0, reserialize.stderr[-3000:]
    backfill = subprocess.run(
        [
            str(BIN / "airflow"),
            "backfill",
            "create",
            "--dag-id",
            "polyv_viewer_sync_warehouse",
            "--from-date",
            "2025-03-01",
            "--to-date",
            "2025-03-03",
            "--dry-run",
            "--dag-run-conf",
            json.dumps({"source_table": "analytics.viewer_attributes", "full_refresh": True}),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert backfill.returncode == 0, backfill.stdout[-3000:] + backfill.stderr[-3000:]
    assert "2025-03-01 02:00:00+00:00" in backfill.stdout and "2025-03-02 02:00:00+00:00" in backfill.stdout


def test_execution_timeout_fails_the_task_after_writing_the_whole_report(run_dag, sim, tmp_path):
    # A run slower than its execution_timeout: Airflow raises AirflowTaskTimeout in execute()
    # (SIGALRM), then calls on_kill(). The report must still hold one row per item.
    import pyarrow as pa

    from polyv_connector.simulator import FaultConfig

    n = 6000
    src = tmp_path / "many.parquet"
    pq.write_table(
        pa.table(
            {
                "viewerId": [f"viewer-{i}" for i in range(n)],
                "customFieldId": ["PAY_STATUS"] * n,
                "customFieldValue": [f"v{i}" for i in range(n)],
            }
        ),
        src,
    )
    report = tmp_path / "polyv_viewer_sync_parquet" / "report.parquet"
    env = {
        "AIRFLOW_CONN_POLYV_DEFAULT": conn_json(sim.base_url, batch_size=10, concurrency=2),
        "AIRFLOW__CORE__DEFAULT_TASK_EXECUTION_TIMEOUT": "10",
        # The DAG confines trigger-time paths: the report is a name under the report folder,
        # the input under an allowed prefix.
        "AIRFLOW_VAR_POLYV_REPORT_DIR": str(tmp_path),
        "AIRFLOW_VAR_POLYV_INPUT_PREFIXES": json.dumps([str(tmp_path)]),
    }
    sim.set_faults(FaultConfig(latency_s=0.05))  # 600 requests over 2 workers: about 15 s
    try:
        run = run_dag(
            "polyv_viewer_sync_parquet", "2025-03-05", {"input_path": str(src), "report_path": report.name}, env=env
        )
    finally:
        sim.set_faults(FaultConfig())
    assert run.state == "failed", run.output[-5000:]
    logs = run.log_text()
    assert "AirflowTaskTimeout" in logs or "Timeout" in logs, logs[-5000:]
    statuses = pq.read_table(report).column("status").to_pylist()
    assert len(statuses) == n
    assert "sent" in statuses and set(statuses) <= {"sent", "in_doubt", "not_attempted"}
    # POLYV holds every item reported sent; an in_doubt one may or may not be there.
    assert 0 < statuses.count("sent") <= len(_stored(sim)) <= statuses.count("sent") + statuses.count("in_doubt") < n


# ---- a read-only source connection ----------------------------------------------------------------
@pytest.fixture
def pg_roles(pg_schema):
    """A reader and a writer LOGIN role with random names (pg_hba trusts 127.0.0.1), dropped after.

    The reader may only read: USAGE on the schema and, as the test grants, SELECT on tables. The
    writer may create tables in the schema (report, state, lock and schema-version tables).
    """
    import uuid

    suffix = uuid.uuid4().hex[:10]
    reader, writer = f"polyv_reader_{suffix}", f"polyv_writer_{suffix}"
    pg_exec(f"CREATE ROLE {reader} LOGIN")
    pg_exec(f"CREATE ROLE {writer} LOGIN")
    try:
        pg_exec(f"GRANT USAGE ON SCHEMA {pg_schema} TO {reader}")
        pg_exec(f"GRANT USAGE, CREATE ON SCHEMA {pg_schema} TO {writer}")
        yield reader, writer
    finally:
        # DROP OWNED drops the writer's tables and revokes every grant to either role.
        pg_exec(f"DROP OWNED BY {reader}, {writer} CASCADE")
        pg_exec(f"DROP ROLE {reader}")
        pg_exec(f"DROP ROLE {writer}")


def _role_uri(role: str) -> str:
    from urllib.parse import urlsplit

    from tests.airflow.support import PG_URI

    parts = urlsplit(PG_URI)
    return f"postgresql://{role}@{parts.hostname}:{parts.port or 5432}{parts.path}"


@pytest.mark.postgres
def test_warehouse_dag_with_a_read_only_source_role(run_dag, sim, pg_schema, pg_roles):
    """The source connection's role can only SELECT (the source and the state table); the report
    and the state are written through a writer connection; the diff in the warehouse still works."""
    from polyv_connector.state.table import SqlStateTable

    reader, writer = pg_roles
    table = _attrs_table(pg_schema)
    report_table, state_table = f"{pg_schema}.polyv_sync_report", f"{pg_schema}.polyv_sync_state"
    pg_exec(f"GRANT SELECT ON {table} TO {reader}")
    # The state table, created by the writer as a first run would, then readable by the reader.
    import psycopg

    SqlStateTable(lambda: psycopg.connect(_role_uri(writer)), state_table, APP_ID)
    pg_exec(f"GRANT SELECT ON {state_table} TO {reader}")
    # The setup is what it claims to be: the reader cannot write.
    with psycopg.connect(_role_uri(reader)) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"DELETE FROM {table}")
    env = {
        **_polyv(sim),
        "AIRFLOW_CONN_POLYV_WAREHOUSE": _role_uri(reader),
        "AIRFLOW_CONN_POLYV_WRITER": _role_uri(writer),
        "AIRFLOW_VAR_POLYV_REPORT_CONN_ID": "polyv_writer",
        "AIRFLOW_VAR_POLYV_STATE_CONN_ID": "polyv_writer",
        "AIRFLOW_VAR_POLYV_DIFF_IN_WAREHOUSE": "true",
    }
    conf = {"source_table": table, "report_table": report_table, "state_table": state_table}
    first = run_dag("polyv_viewer_sync_warehouse", "2025-03-03", conf, env=env)
    _assert_success(first)
    assert first.xcom["counts"]["sent"] == 4 and len(_stored(sim)) == 4
    # The whole table by a trigger-time query: the four rows POLYV has stay in the warehouse.
    all_rows = f"SELECT viewer_id, custom_field_id, custom_field_value FROM {table};"
    second = run_dag("polyv_viewer_sync_warehouse", "2025-03-04", {**conf, "source_sql": all_rows}, env=env)
    _assert_success(second)
    assert second.xcom["unchangedInWarehouse"] == 4 and second.xcom["counts"]["sent"] == 12
    assert len(_stored(sim)) == 16
    assert pg_rows(f"SELECT count(*) FROM {report_table}") == [(16,)]
    # Everything written was written by the writer; the reader owns nothing and can write nothing.
    owners = dict(pg_rows("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = %s", (pg_schema,)))
    assert owners.pop("viewer_attributes") == "postgres"
    assert owners and set(owners.values()) == {writer}, owners
    assert pg_rows(
        "SELECT bool_or(has_table_privilege(%s, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
        (reader, pg_schema),
    ) == [(False,)]


@pytest.mark.postgres
def test_backfill_dag_refuses_a_source_connection_outside_the_allowlist(run_dag, sim, pg_schema):
    table = _attrs_table(pg_schema)
    env = {**_warehouse_env(sim), "AIRFLOW_CONN_POLYV_OTHER": _role_uri("postgres")}
    conf = {
        "source_conn_id": "polyv_other",
        "source_table": table,
        "report_table": f"{pg_schema}.resync_report",
        "state_table": f"{pg_schema}.polyv_sync_state",
    }
    run = run_dag("polyv_viewer_backfill", "2025-03-07", conf, env=env)
    assert run.state == "failed", run.output[-5000:]
    assert "source_conn_id: connection 'polyv_other' is not an allowed source connection" in run.log_text()
    assert sim.stats.save_requests == 0 and not _stored(sim)
    assert pg_rows("SELECT to_regclass(%s) IS NULL", (f"{pg_schema}.resync_report",)) == [(True,)]
    # The DAG author lists it: the same trigger reads it.
    allowed = run_dag(
        "polyv_viewer_backfill",
        "2025-03-08",
        conf,
        env={**env, "AIRFLOW_VAR_POLYV_SOURCE_CONN_IDS": '["polyv_warehouse", "polyv_other"]'},
    )
    _assert_success(allowed)
    assert allowed.xcom["counts"]["sent"] == 16
