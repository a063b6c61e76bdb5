"""The warehouse test matrix: one :class:`Engine` per database (PostgreSQL, MariaDB, DuckDB).

Each engine is a real database: PostgreSQL in a throwaway schema of database ``test``, MariaDB
in a throwaway database ``polyv_engines_<random>`` on 127.0.0.1:3306 (root, no password;
mysqlclient, the MySQL provider's default client), DuckDB in a file under the test's tmp_path.
Use the ``engine`` fixture (import it into the test module) to run a test on all three.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.warehouse.support import MYSQL_HOST, MYSQL_PORT, PG_DSN


@dataclass
class Engine:
    """A real database the warehouse layer is tested on."""

    name: str  # postgresql, mariadb, duckdb
    dialect: str  # the warehouse layer's dialect name
    connect: Callable[[], Any]  # a DB-API connection factory, as the library takes it
    prefix: str  # what qualifies a table name: "schema." or ""
    placeholder: str
    identifier_format: str

    def table(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def q(self, name: str) -> str:
        return self.identifier_format.format(name)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql, params) if params is not None else cur.execute(sql)
            conn.commit()
        finally:
            conn.close()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.executemany(sql, rows)
            conn.commit()
        finally:
            conn.close()

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql, params) if params is not None else cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
        finally:
            conn.close()

    def source_kwargs(self) -> dict[str, Any]:
        return {"dialect": self.dialect}

    def table_kwargs(self) -> dict[str, Any]:
        return {"placeholder": self.placeholder, "identifier_format": self.identifier_format}


def mysql_connect(database: str | None = None, charset: str = "utf8mb4") -> Any:
    import MySQLdb

    kwargs: dict[str, Any] = {"host": MYSQL_HOST, "port": MYSQL_PORT, "user": "root", "passwd": "", "charset": charset}
    if database:
        kwargs["db"] = database
    return MySQLdb.connect(**kwargs)


@pytest.fixture
def mariadb_database(mysql_db: str) -> str:
    """A throwaway utf8mb4 database on the local MariaDB (default collation: case-insensitive):
    the warehouse tests' ``mysql_db``, under the name the engine matrix uses."""
    return mysql_db


def make_engine(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    if name == "postgresql":
        import psycopg

        schema = request.getfixturevalue("pg_schema")
        return Engine(name, "postgresql", lambda: psycopg.connect(PG_DSN), f"{schema}.", "%s", '"{}"')
    if name == "mariadb":
        database = request.getfixturevalue("mariadb_database")
        return Engine(name, "mysql", lambda: mysql_connect(database), f"{database}.", "%s", "`{}`")
    if name == "duckdb":
        import duckdb

        path = str(tmp_path / "warehouse.duckdb")
        return Engine(name, "duckdb", lambda: duckdb.connect(path), "", "?", '"{}"')
    raise ValueError(name)


ENGINES = [
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
    "duckdb",
]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    """Each engine in turn (PostgreSQL, MariaDB, DuckDB)."""
    return make_engine(request.param, request, tmp_path)
