"""The partitioned DAG on a real Airflow: N mapped tasks, each one slice, one report with every row once."""

from __future__ import annotations

import collections
import sqlite3

import pytest

from polyv_connector.partitioning import partition_of
from tests.airflow.support import AIRFLOW_HOME, APP_ID, PG_URI, PLANTED_SECRET, conn_json, pg_exec, pg_rows

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.postgres]

N = 3


def _attributes(schema: str) -> tuple[str, list[tuple[str | None, str, str]]]:
    """60 rows (a duplicate and a null viewerId among them)."""
    rows: list[tuple[str | None, str, str]] = [
        (f"viewer-{i}", "PAY_STATUS" if i % 2 else "VIP_LEVEL", f"value-{i}") for i in range(58)
    ]
    rows += [("viewer-4", "VIP_LEVEL", "value-4"), (None, "PAY_STATUS", "x")]
    table = f"{schema}.viewer_attributes"
    pg_exec(
        f"CREATE TABLE {table} (viewer_id text, custom_field_id text, custom_field_value text, updated_at timestamptz)"
    )
    for row in rows:
        pg_exec(f"INSERT INTO {table} VALUES (%s, %s, %s, timestamptz '2025-03-02 12:00+00')", row)
    return table, rows


def test_partitioned_dag_runs_every_partition_and_reports_each_row_once(run_dag, sim, pg_schema):
    table, rows = _attributes(pg_schema)
    report_table = f"{pg_schema}.polyv_sync_report"
    run = run_dag(
        "polyv_viewer_sync_partitioned",
        "2025-03-03",
        {
            "partitions": N,
            # The whole table (the default query reads the data interval's rows).
            "source_sql": f"SELECT viewer_id, custom_field_id, custom_field_value FROM {table}",
            "report_table": report_table,
            "state_table": f"{pg_schema}.polyv_sync_state",
        },
        env={
            "AIRFLOW_CONN_POLYV_DEFAULT": conn_json(sim.base_url, secret=PLANTED_SECRET),
            "AIRFLOW_CONN_POLYV_WAREHOUSE": PG_URI,
        },
        timeout=300,
    )
    assert run.returncode == 0 and run.state == "success", run.output[-5000:]
    with sqlite3.connect(AIRFLOW_HOME / "airflow.db") as db:
        tasks = db.execute(
            "SELECT map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = 'sync_partition'",
            ("polyv_viewer_sync_partitioned", run.run_id),
        ).fetchall()
    assert sorted(tasks) == [(k, "success") for k in range(N)]

    report = pg_rows(
        f'SELECT "viewerId", "customFieldId", "customFieldValue", status, partition, partitions, "rowNumber" '
        f"FROM {report_table}"
    )
    assert collections.Counter(r[:3] for r in report) == collections.Counter(rows)  # every row exactly once
    assert {r[5] for r in report} == {N}
    for k in range(N):
        mine = [r for r in report if r[4] == k]
        assert mine and all(partition_of(r[0], N) == k for r in mine)
        assert sorted(r[6] for r in mine) == list(range(len(mine)))  # rowNumber within the partition
    statuses = collections.Counter(r[3] for r in report)
    assert statuses == {"sent": 58, "duplicate": 1, "rejected": 1}
    stored = {(v, f): value for (app, v, f), value in sim.values.items() if app == APP_ID}
    assert stored == {(v, f): value for v, f, value in rows if v is not None}
    assert PLANTED_SECRET not in run.output and PLANTED_SECRET not in run.log_text()
