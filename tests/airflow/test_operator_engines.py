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


def _run(conn_id: str) -> dict[str, Any]:
    return _op(
        source_conn_id=conn_id,
        source_table="attrs",
        viewer_id_column="uid",
        field_id_column="field",
        value_column="val",
        report_table="polyv_sync_report",
        state_table="polyv_sync_state",
        diff_in_warehouse=True,
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
