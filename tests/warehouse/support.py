"""Helpers of the warehouse tests: PostgreSQL access and report batches (no Airflow here)."""

from __future__ import annotations

import ast
import datetime as dt
from typing import Any

import pyarrow as pa

from polyv_connector.model import report_schema
from tests.services import MYSQL_HOST, MYSQL_PORT, PG_DSN, mysql_connect, pg_exec, pg_rows

# The services' addresses and helpers live in tests/services.py; re-exported for this folder.
__all__ = [
    "MYSQL_HOST",
    "MYSQL_PORT",
    "PG_DSN",
    "Warehouse",
    "indexed_columns",
    "mysql_connect",
    "pg_exec",
    "pg_rows",
    "psycopg2_connect",
    "report_batch",
]


def psycopg2_connect() -> Any:
    import psycopg2

    return psycopg2.connect(PG_DSN)


def report_batch(run_id: str, n: int, start: int = 0) -> pa.RecordBatch:
    ts = dt.datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    return pa.record_batch(
        [
            pa.array(range(start, start + n), pa.int64()),
            pa.array([f"v{i}" for i in range(n)]),
            pa.array(["PAY_STATUS"] * n),
            pa.array(['已支付, "quoted"\nline' if i == 0 else ("" if i == 1 else None) for i in range(n)], pa.string()),
            pa.array(["sent" if i % 2 else "failed" for i in range(n)]),
            pa.array([None if i % 2 else "HTTP 500" for i in range(n)], pa.string()),
            pa.array([None if i % 2 else 20001 for i in range(n)], pa.int64()),
            pa.array([200] * n, pa.int64()),
            pa.array([f"req{i}" for i in range(n)]),
            pa.array([1] * n, pa.int64()),
            pa.array(["b1"] * n),
            pa.array([run_id] * n),
            pa.array([ts] * (n - 1) + [None], pa.timestamp("us", tz="UTC")),
            pa.array(["app1"] * n),
            pa.array([None if i % 2 else "polyv_rejected" for i in range(n)], pa.string()),
            pa.array([i % 3 for i in range(n)], pa.int64()),
            pa.array([3] * n, pa.int64()),
            pa.array(["manual__2025-05-06"] * n),
        ],
        schema=report_schema(),
    )


class Warehouse:
    """One engine of the warehouse matrix: a connection factory, a table name, plain SQL access."""

    def __init__(self, name: str, connect: Any, prefix: str, identifier_format: str) -> None:
        self.name = name
        self.connect = connect
        self.prefix = prefix  # "schema." / "database." or ""
        self.identifier_format = identifier_format

    def table(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def q(self, name: str) -> str:
        return self.identifier_format.format(name)

    def run(self, sql: str, rows: list[tuple] | None = None) -> list[tuple]:
        """Execute ``sql`` (with ``rows`` as executemany parameters) and commit; the rows read, if any."""
        conn = self.connect()
        try:
            cur = conn.cursor()
            if rows is not None:
                cur.executemany(sql, rows)
            else:
                cur.execute(sql)
            out = list(cur.fetchall()) if cur.description else []
            conn.commit()
            return [tuple(r) for r in out]
        finally:
            conn.close()

    @property
    def marker(self) -> str:
        return "?" if self.name == "duckdb" else "%s"


def indexed_columns(wh: Warehouse, table: str) -> list[str]:
    """The columns of the indexes on ``table`` (its own name, in the warehouse's schema/database)."""
    schema = wh.prefix.rstrip(".")
    if wh.name == "postgres":
        sql = f"SELECT indexdef FROM pg_indexes WHERE schemaname = '{schema}' AND tablename = '{table}'"
        return [d.split("(", 1)[1].rstrip(")") for (d,) in wh.run(sql)]
    if wh.name == "mariadb":
        return [r[4] for r in wh.run(f"SHOW INDEX FROM {schema}.{table}")]
    rows = wh.run(f"SELECT expressions FROM duckdb_indexes() WHERE table_name = '{table}'")
    return [c.strip('"') for (e,) in rows for c in (e if isinstance(e, list) else ast.literal_eval(e))]
