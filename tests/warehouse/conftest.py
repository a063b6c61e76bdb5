"""Fixtures of the warehouse tests: the engine matrix (no Airflow). PostgreSQL and MariaDB, and their
throwaway schema and database (``pg_schema``, ``mysql_db``), come from tests/services.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.warehouse.engines import engine, mariadb_database  # noqa: F401 (the engine matrix's fixtures)


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
        "duckdb",
    ]
)
def warehouse(request: pytest.FixtureRequest, tmp_path) -> Any:
    """Each warehouse engine in turn: PostgreSQL (a throwaway schema), MariaDB (a throwaway
    database) and DuckDB (a file)."""
    from tests.warehouse.support import PG_DSN, Warehouse, mysql_connect

    if request.param == "postgres":
        import psycopg

        schema = request.getfixturevalue("pg_schema")
        return Warehouse("postgres", lambda: psycopg.connect(PG_DSN), f"{schema}.", '"{}"')
    if request.param == "mariadb":
        database = request.getfixturevalue("mysql_db")
        return Warehouse("mariadb", lambda: mysql_connect(database), f"{database}.", "`{}`")
    import duckdb

    path = str(tmp_path / "warehouse.duckdb")
    return Warehouse("duckdb", lambda: duckdb.connect(path), "", '"{}"')
