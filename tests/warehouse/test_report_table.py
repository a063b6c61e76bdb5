"""``SqlReportTable`` on the generic DB-API path (SQLite); the PostgreSQL COPY path through
Airflow's hook is in tests/airflow/test_sql_source.py."""

from __future__ import annotations

import sqlite3

import pytest

from polyv_connector.errors import ConfigError
from polyv_connector.model import REPORT_COLUMNS
from polyv_connector.warehouse.report_table import SqlReportTable
from tests.warehouse.support import report_batch


def test_report_table_generic_executemany(tmp_path):
    path = tmp_path / "r.db"
    sink = SqlReportTable(lambda: sqlite3.connect(path), "report", dialect="sqlite", placeholder="?", chunk_rows=2)
    sink.write(report_batch("run-1", 5))
    assert sink.write_path == "executemany"  # SQLite has no bulk path of its own
    sink.write(report_batch("run-1", 3, start=5))
    sink.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            'SELECT "rowNumber", "customFieldValue", status, "runId" FROM report ORDER BY "rowNumber"'
        ).fetchall()
        names = [d[0] for d in conn.execute("SELECT * FROM report").description]
    assert names == list(REPORT_COLUMNS)
    assert len(rows) == 8 and rows[0][1] == '已支付, "quoted"\nline' and rows[1][1] == "" and rows[2][1] is None
    # A second run appends (the table exists and is checked, not recreated).
    sink = SqlReportTable(lambda: sqlite3.connect(path), "report", dialect="sqlite", placeholder="?")
    sink.write(report_batch("run-2", 2))
    sink.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute('SELECT "runId", count(*) FROM report GROUP BY 1 ORDER BY 1').fetchall() == [
            ("run-1", 8),
            ("run-2", 2),
        ]


def test_report_table_abort_leaves_nothing(tmp_path):
    path = tmp_path / "r.db"
    sink = SqlReportTable(lambda: sqlite3.connect(path), "report", dialect="sqlite", placeholder="?")
    sink.write(report_batch("run-1", 4))
    sink.abort()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM report").fetchone() == (0,)


def test_existing_incompatible_table_fails_early(tmp_path):
    path = tmp_path / "r.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE report (a TEXT)")
    with pytest.raises(ConfigError, match="lacks the report column"):
        SqlReportTable(lambda: sqlite3.connect(path), "report", dialect="sqlite", placeholder="?")


def test_create_table_types_per_dialect():
    sink = SqlReportTable.__new__(SqlReportTable)
    sink.table, sink.identifier_format = "s.report", '"{}"'
    sink.dialect = "postgresql"
    ddl = sink.create_table_sql()
    assert ddl.startswith("CREATE TABLE IF NOT EXISTS s.report")
    assert '"syncedAt" TIMESTAMPTZ' in ddl and '"rowNumber" BIGINT NOT NULL' in ddl
    sink.dialect = "mssql"
    assert "IF NOT EXISTS" not in sink.create_table_sql()
    assert '"reason" NVARCHAR(MAX)' in sink.create_table_sql()
