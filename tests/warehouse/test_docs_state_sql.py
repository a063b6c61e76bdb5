"""The guide's SQL resetting one account of the state table (docs/warehouses.md) runs as written,
on each engine it names."""

from __future__ import annotations

import numpy as np
import pytest

from polyv_connector.state.table import SqlStateTable
from tests.warehouse.support import Warehouse


def _reset_sql(engine: str) -> str:
    """The reset statement of the guide's SQL per engine (tests/warehouse/test_docs_sql.py
    runs those blocks whole, on DuckDB too)."""
    from tests.warehouse.test_docs_sql import docs_sql

    return docs_sql({"PostgreSQL": "postgresql", "MySQL / MariaDB": "mysql"}[engine])[0]


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param("PostgreSQL", marks=pytest.mark.postgres),
        pytest.param("MySQL / MariaDB", marks=pytest.mark.mariadb),
    ],
)
def test_the_guide_resets_one_account(engine: str, request: pytest.FixtureRequest) -> None:
    if engine == "PostgreSQL":
        import psycopg

        from tests.warehouse.support import PG_DSN

        schema = request.getfixturevalue("pg_schema")
        wh = Warehouse("postgres", lambda: psycopg.connect(f"{PG_DSN} options=-csearch_path={schema}"), "", '"{}"')
    else:
        from tests.warehouse.support import mysql_connect

        database = request.getfixturevalue("mysql_db")
        wh = Warehouse("mariadb", lambda: mysql_connect(database), "", "`{}`")
    for app in ("app-a", "app-b"):
        st = SqlStateTable(wh.connect, "polyv_sync_state", app)
        st.begin("r")
        st.record(np.array([1, 2], np.uint64), np.array([3, 4], np.uint64))
        st.finish()
    wh.run(_reset_sql(engine).replace("<appId>", "app-a"))
    assert len(SqlStateTable(wh.connect, "polyv_sync_state", "app-a").load()[0]) == 0
    assert len(SqlStateTable(wh.connect, "polyv_sync_state", "app-b").load()[0]) == 2
