"""The operator on MySQL/MariaDB and DuckDB connections, as a DAG author configures them.

``PolyvViewerFieldSyncOperator.execute`` in-process, the warehouse an Airflow connection from
the environment (the MySQL provider's ``MySqlHook`` with mysqlclient, the DuckDB provider's
``DuckDBHook`` on a file), the report and state tables in the same database, the diff in the
warehouse, and the database's errors mapped to Airflow's: configuration fails for good,
an unreachable database is retried.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.airflow.support import APP_ID
from tests.stack import free_port

pytestmark = pytest.mark.airflow


class _TI:
    def xcom_push(self, key: str, value: Any) -> None:
        pass


def _op(**kwargs: Any) -> Any:
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    return PolyvViewerFieldSyncOperator(task_id="sync", **kwargs)


@pytest.fixture
def mysql_conn(monkeypatch: pytest.MonkeyPatch, mariadb_available: bool) -> Iterator[str]:
    """``AIRFLOW_CONN_POLYV_MYSQL``: a throwaway database on the local MariaDB, utf8mb4."""
    from tests.warehouse.engines import mysql_connect

    name = f"polyv_engines_{uuid.uuid4().hex[:10]}"
    conn = mysql_connect()
    conn.cursor().execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    conn.close()
    extra = json.dumps({"charset": "utf8mb4"})
    monkeypatch.setenv(
        "AIRFLOW_CONN_POLYV_MYSQL",
        json.dumps(
            {"conn_type": "mysql", "host": "127.0.0.1", "port": 3306, "login": "root", "schema": name, "extra": extra}
        ),
    )
    try:
        yield name
    finally:
        conn = mysql_connect()
        conn.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()


@pytest.fixture
def duckdb_conn(tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "warehouse.duckdb")
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_DUCKDB", json.dumps({"conn_type": "duckdb", "host": path}))
    return path


def _fill(conn: Any) -> None:
    cur = conn.cursor()
    cur.execute("CREATE TABLE attrs (uid VARCHAR(32), field VARCHAR(32), val VARCHAR(64))")
    cur.executemany(
        "INSERT INTO attrs VALUES (%s, %s, %s)"
        if "MySQL" in type(conn).__module__
        else "INSERT INTO attrs VALUES (?, ?, ?)",
        [(f"u{i}", "VIP_LEVEL", "会员 😀" if i == 0 else f"L{i}") for i in range(40)],
    )
    conn.commit()


def _run(conn_id: str, **kwargs: Any) -> dict[str, Any]:
    return _op(
        source_conn_id=conn_id,
        source_table="attrs",
        viewer_id_column="uid",
        field_id_column="field",
        value_column="val",
        report_table="polyv_sync_report",
        state_table="polyv_sync_state",
        diff_in_warehouse=True,
        **kwargs,
    ).execute({"ti": _TI(), "run_id": "manual__engines"})


@pytest.mark.mariadb
def test_mysql_connection_end_to_end(sim, polyv_env, mysql_conn) -> None:
    from tests.warehouse.engines import mysql_connect

    conn = mysql_connect(mysql_conn)
    _fill(conn)
    conn.close()
    first = _run("polyv_mysql")
    assert first["counts"]["sent"] == 40
    assert sim.values[(APP_ID, "u0", "VIP_LEVEL")] == "会员 😀"
    conn = mysql_connect(mysql_conn)
    cur = conn.cursor()
    cur.execute("UPDATE attrs SET val = 'l1' WHERE uid = 'u1'")  # a case-only change
    conn.commit()
    second = _run("polyv_mysql")
    assert second["items"] == 1 and second["counts"]["sent"] == 1
    assert sim.values[(APP_ID, "u1", "VIP_LEVEL")] == "l1"
    cur.execute("SELECT status, COUNT(*) FROM polyv_sync_report GROUP BY status ORDER BY status")
    assert [tuple(r) for r in cur.fetchall()] == [("sent", 41)]
    conn.close()


@pytest.mark.mariadb
def test_mysql_errors_become_airflow_errors(sim, polyv_env, mysql_conn, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    monkeypatch.setenv("AIRFLOW_CONN_POLYV_BAD", "mysql://nobody:wrong@127.0.0.1:3306/" + mysql_conn)
    with pytest.raises(AirflowFailException, match="Access denied"):
        _run("polyv_bad")
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_DOWN", f"mysql://root@127.0.0.1:{free_port()}/{mysql_conn}")
    with pytest.raises(AirflowException, match="retry later") as raised:
        _run("polyv_down")
    assert not isinstance(raised.value, AirflowFailException)


def test_duckdb_connection_end_to_end(sim, polyv_env, duckdb_conn) -> None:
    import duckdb

    conn = duckdb.connect(duckdb_conn)
    _fill(conn)
    conn.close()
    first = _run("polyv_duckdb")
    assert first["counts"]["sent"] == 40
    conn = duckdb.connect(duckdb_conn)
    conn.execute("UPDATE attrs SET val = 'l1' WHERE uid = 'u1'")
    conn.close()
    second = _run("polyv_duckdb")
    assert second["items"] == 1 and second["counts"]["sent"] == 1
    conn = duckdb.connect(duckdb_conn)
    rows = conn.execute("SELECT status, count(*) FROM polyv_sync_report GROUP BY status").fetchall()
    conn.close()
    assert rows == [("sent", 41)]


# ---- the runs table and retention through the operator, on each engine -------------------------
# (PostgreSQL: tests/airflow/test_operator_records.py)
def _sql(conn_id: str, database: str, sql: str) -> list[tuple[Any, ...]]:
    """Run one statement on the test's MySQL database or DuckDB file; its rows (if any)."""
    if conn_id == "polyv_mysql":
        from tests.warehouse.engines import mysql_connect

        conn = mysql_connect(database)
        sql = sql.replace('"', "`")
    else:
        import duckdb

        conn = duckdb.connect(database)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        rows = [tuple(r) for r in cur.fetchall()] if cur.description else []
        conn.commit()
        return rows
    finally:
        conn.close()


def _retention_after_a_run(conn_id: str, database: str, sim: Any) -> None:
    """An old run's report rows and runs row are gone after the next run; a run killed after its
    start stays in the runs table, started and never finished."""
    from airflow.sdk.exceptions import AirflowException

    from polyv_connector.engine import sync as engine_sync

    old = _run(conn_id)
    # The first run started 40 days ago (one value has changed since: the next run reports it).
    aged = 'UPDATE polyv_sync_report_runs SET "startedAt" = "startedAt" - INTERVAL 40 DAY WHERE "runId" = '
    _sql(conn_id, database, aged + f"'{old['runId']}'")
    _sql(conn_id, database, "UPDATE attrs SET val = 'changed' WHERE uid = 'u1'")
    new = _run(conn_id, report_retention_days=30, runs_retention_days=35)
    assert _sql(conn_id, database, 'SELECT DISTINCT "runId" FROM polyv_sync_report') == [(new["runId"],)]
    assert _sql(conn_id, database, 'SELECT "runId" FROM polyv_sync_report_runs') == [(new["runId"],)]

    original = engine_sync._locked_run

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the worker died")

    engine_sync._locked_run = killed  # type: ignore[assignment]
    try:
        with pytest.raises((RuntimeError, AirflowException)):
            _run(conn_id)
    finally:
        engine_sync._locked_run = original  # type: ignore[assignment]
    rows = _sql(conn_id, database, 'SELECT "runId", "finishedAt", "outcome" FROM polyv_sync_report_runs')
    assert len(rows) == 2
    assert [(f, o) for r, f, o in rows if r != new["runId"]] == [(None, None)]
    assert [(o,) for r, f, o in rows if r == new["runId"]] == [("ok",)]


@pytest.mark.mariadb
def test_mysql_retention_after_a_run_and_killed_runs_unfinished(sim, polyv_env, mysql_conn) -> None:
    from tests.warehouse.engines import mysql_connect

    conn = mysql_connect(mysql_conn)
    _fill(conn)
    conn.close()
    _retention_after_a_run("polyv_mysql", mysql_conn, sim)


def test_duckdb_retention_after_a_run_and_killed_runs_unfinished(sim, polyv_env, duckdb_conn) -> None:
    import duckdb

    conn = duckdb.connect(duckdb_conn)
    _fill(conn)
    conn.close()
    _retention_after_a_run("polyv_duckdb", duckdb_conn, sim)
