"""``dbapi.bulk_insert`` on each engine: every value comes back as written (the fast paths build
their own data: CSV for COPY, SQL literals for MySQL, Arrow for DuckDB)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from polyv_connector.warehouse import dbapi
from tests.warehouse.engines import Engine, make_engine

NASTY = [
    "plain",
    "it's",
    "back\\slash\\",
    "\\'",
    'quote"d',
    "nul\x00inside",
    "ctrl-z\x1a",
    "line\nbreak\r\n",
    "已支付 😀 𠀋",
    "",
    None,
    "trailing ",
    "%s %(x)s ?",
]


def _data() -> pa.Table:
    n = len(NASTY)
    return pa.table(
        {
            "n": pa.array(range(n), pa.int64()),
            "txt": pa.array(NASTY, pa.string()),
            "big": pa.array([None if i == 3 else (-(2**63) if i % 2 else 2**63 - 1) for i in range(n)], pa.int64()),
            "at": pa.array(
                [None if i == 4 else dt.datetime(2025, 5, 6, 7, 8, 9, i * 1001, tzinfo=dt.UTC) for i in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )


def _expected(engine: Engine) -> list[tuple]:
    rows = []
    for i, text in enumerate(NASTY):
        if engine.name == "postgresql" and text is not None:
            text = text.replace("\x00", dbapi.NUL_ESCAPE)  # PostgreSQL text cannot hold NUL
        at = None if i == 4 else dt.datetime(2025, 5, 6, 7, 8, 9, i * 1001)
        rows.append((i, text, None if i == 3 else (-(2**63) if i % 2 else 2**63 - 1), at))
    return rows


def test_bulk_insert_round_trips(engine: Engine) -> None:
    _round_trip(engine, "default")


@pytest.mark.mariadb
def test_mysql_literals_without_backslash_escapes(request: pytest.FixtureRequest, tmp_path) -> None:
    # NO_BACKSLASH_ESCAPES: a backslash is an ordinary character, only quotes are doubled.
    _round_trip(make_engine("mariadb", request, tmp_path), "NO_BACKSLASH_ESCAPES")


def _round_trip(engine: Engine, sql_mode: str) -> None:
    table = engine.table("bulk")
    ts = {"postgresql": "TIMESTAMP", "mariadb": "DATETIME(6)", "duckdb": "TIMESTAMP"}[engine.name]
    engine.execute(f"CREATE TABLE {table} (n BIGINT, txt TEXT, big BIGINT, {engine.q('at')} {ts})")
    conn = engine.connect()
    try:
        if sql_mode != "default":
            conn.cursor().execute(f"SET SESSION sql_mode = '{sql_mode}'")
        path = dbapi.bulk_insert(
            conn,
            table,
            ["n", "txt", "big", "at"],
            _data(),
            identifier_format=engine.identifier_format,
            placeholder=engine.placeholder,
            chunk_rows=4,
        )
        conn.commit()
    finally:
        conn.close()
    assert path == {"postgresql": "copy", "mariadb": "multirow", "duckdb": "arrow"}[engine.name]
    got = engine.rows(f"SELECT n, txt, big, {engine.q('at')} FROM {table} ORDER BY n")
    got = [(r[0], r[1], r[2], r[3].replace(tzinfo=None) if r[3] else None) for r in got]
    assert got == _expected(engine)


def test_report_table_is_one_transaction(engine: Engine) -> None:
    """A run that fails leaves no report rows behind; a run that closes leaves all of them."""
    from polyv_connector.warehouse.report_table import SqlReportTable
    from tests.warehouse.support import report_batch

    table = engine.table("polyv_sync_report")
    failed = SqlReportTable(engine.connect, table, dialect=engine.dialect)
    failed.write(report_batch("run-failed", 5))
    failed.write(report_batch("run-failed", 5, start=5))
    failed.abort()
    done = SqlReportTable(engine.connect, table, dialect=engine.dialect)
    done.write(report_batch("run-done", 7))
    done.close()
    q = engine.q
    assert engine.rows(f"SELECT {q('runId')}, COUNT(*) FROM {table} GROUP BY {q('runId')}") == [("run-done", 7)]
