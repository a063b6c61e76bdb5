"""The warehouse DAGs' default query, rendered as Airflow renders it, on PostgreSQL and MariaDB.

A ``source_table`` whose columns are named otherwise (``user_id`` for ``viewer_id``) fails
before anything is sent with the column mapping's message (missing column(s) ..., found: ...),
as a ``source_sql: SELECT *`` does, not with the database's "column does not exist" (issue 17,
also found 4); a table of the right shape reads the rows of the data interval, its other
columns (``updated_at``) left alone.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest

from polyv_connector.airflow.params import SQL_OR_INTERVAL
from tests.airflow.support import APP_ID, pg_exec

pytestmark = pytest.mark.airflow

START = dt.datetime(2025, 3, 1, 2, tzinfo=dt.UTC)
END = START + dt.timedelta(days=1)
#: The DAG's column mapping (dags/polyv_viewer_sync_warehouse.py).
MAPPING = {"viewer_id_column": "viewer_id", "field_id_column": "custom_field_id", "value_column": "custom_field_value"}


class _TI:
    def xcom_push(self, key: str, value: Any) -> None:
        pass


def _rendered(table: str) -> str:
    """SQL_OR_INTERVAL as the DAG run renders it: no source_sql param, the table param given."""
    return jinja2.Template(SQL_OR_INTERVAL).render(
        params={"source_sql": None, "source_table": table}, data_interval_start=START, data_interval_end=END
    )


def _sync(conn_id: str, table: str, report: str) -> dict[str, Any]:
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    op = PolyvViewerFieldSyncOperator(
        task_id="sync",
        source_conn_id=conn_id,
        source_sql=_rendered(table),
        report_path=report,
        state_table="",  # no state: a default state table would outlive the test's schema
        **MAPPING,
    )
    # The trigger's params, as the DAG renders them: no source_sql, the table param.
    params = {"source_sql": None, "source_table": table}
    return op.execute({"ti": _TI(), "run_id": "manual__interval", "params": params})


def _fill(execute: Any, table: str, viewer_column: str) -> None:
    execute(
        f"CREATE TABLE {table} ({viewer_column} VARCHAR(32), custom_field_id VARCHAR(32), "
        "custom_field_value VARCHAR(32), updated_at TIMESTAMP)"
    )
    execute(
        f"INSERT INTO {table} VALUES ('u1', 'VIP_LEVEL', 'in', '2025-03-01 12:00:00'), "
        "('u2', 'VIP_LEVEL', 'out', '2025-03-02 12:00:00')"
    )


def _check(conn_id: str, good: str, renamed: str, sim: Any, tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    summary = _sync(conn_id, good, str(tmp_path / "good.parquet"))
    assert summary["counts"]["sent"] == 1 and sim.values[(APP_ID, "u1", "VIP_LEVEL")] == "in"
    sent_before = sim.stats.save_requests
    with pytest.raises(AirflowFailException) as raised:
        _sync(conn_id, renamed, str(tmp_path / "renamed.parquet"))
    message = str(raised.value)
    assert "missing column(s) viewer_id (found: user_id, custom_field_id" in message, message
    assert "alias the columns" in message and "LINE 1" not in message and "Unknown column" not in message
    # Named after the setting the person chose: the table param, not the query it became.
    assert f"source_table: {renamed}: missing column(s)" in message and "source_sql" not in message, message
    assert sim.stats.save_requests == sent_before  # nothing sent


def test_the_default_query_on_postgresql(sim, polyv_env, pg_schema, pg_warehouse_env, tmp_path) -> None:
    _fill(pg_exec, f"{pg_schema}.good", "viewer_id")
    _fill(pg_exec, f"{pg_schema}.renamed", "user_id")
    _check("polyv_warehouse", f"{pg_schema}.good", f"{pg_schema}.renamed", sim, tmp_path)


@pytest.fixture
def mysql_db(monkeypatch: pytest.MonkeyPatch, mariadb_available: bool) -> Iterator[str]:
    from tests.warehouse.engines import mysql_connect

    name = f"polyv_interval_{uuid.uuid4().hex[:10]}"
    conn = mysql_connect()
    conn.cursor().execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    conn.close()
    monkeypatch.setenv(
        "AIRFLOW_CONN_POLYV_MYSQL",
        json.dumps({"conn_type": "mysql", "host": "127.0.0.1", "port": 3306, "login": "root", "schema": name}),
    )
    try:
        yield name
    finally:
        conn = mysql_connect()
        conn.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()


@pytest.mark.mariadb
def test_the_default_query_on_mariadb(sim, polyv_env, mysql_db, tmp_path) -> None:
    from tests.warehouse.engines import mysql_connect

    conn = mysql_connect(mysql_db)
    try:

        def execute(sql: str) -> None:
            conn.cursor().execute(sql)
            conn.commit()

        _fill(execute, "good", "viewer_id")
        _fill(execute, "renamed", "user_id")
    finally:
        conn.close()
    _check("polyv_mysql", "good", "renamed", sim, tmp_path)


def test_the_default_query_on_duckdb(sim, polyv_env, tmp_path, monkeypatch) -> None:
    import duckdb

    path = str(tmp_path / "warehouse.duckdb")
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_DUCKDB", json.dumps({"conn_type": "duckdb", "host": path}))
    conn = duckdb.connect(path)
    try:
        _fill(conn.execute, "good", "viewer_id")
        _fill(conn.execute, "renamed", "user_id")
    finally:
        conn.close()
    _check("polyv_duckdb", "good", "renamed", sim, tmp_path)
