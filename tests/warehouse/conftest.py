"""Fixtures of the warehouse tests: a throwaway schema on the local PostgreSQL (no Airflow)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.warehouse.engines import engine, mariadb_database  # noqa: F401 (the engine matrix's fixtures)
from tests.warehouse.support import PG_DSN


@pytest.fixture(scope="session")
def pg_available() -> bool:
    import psycopg

    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and not reachable at {PG_DSN!r}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_DSN!r}: {exc}")
    return True


@pytest.fixture
def pg_schema(pg_available: bool) -> Iterator[str]:
    """A throwaway schema in database ``test``, dropped afterwards."""
    import psycopg

    name = f"polyv_wh_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture(scope="session")
def mariadb_available() -> bool:
    from tests.warehouse.support import MYSQL_HOST, MYSQL_PORT, mysql_connect

    try:
        mysql_connect().close()
    except Exception as exc:
        where = f"{MYSQL_HOST}:{MYSQL_PORT}"
        if os.environ.get("CI"):
            pytest.fail(f"MariaDB is required in CI and not reachable at {where}: {exc}")
        pytest.skip(f"MariaDB not reachable at {where}: {exc}")
    return True


@pytest.fixture
def mysql_db(mariadb_available: bool) -> Iterator[str]:
    """A throwaway database on the local MariaDB, dropped afterwards."""
    from tests.warehouse.support import mysql_connect

    name = f"polyv_dialect_{uuid.uuid4().hex[:10]}"
    conn = mysql_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    finally:
        conn.close()
    try:
        yield name
    finally:
        conn = mysql_connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name}")
        finally:
            conn.close()


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
