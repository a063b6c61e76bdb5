"""Versioned schemas of the report and state tables: record, migrate additively, refuse what is
newer, and print the DDL when the role may not alter the table. Real PostgreSQL and SQLite."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from polyv_connector.errors import ConfigError
from polyv_connector.model import REPORT_COLUMNS
from polyv_connector.state import table as state_table
from polyv_connector.state.table import SqlStateTable
from polyv_connector.warehouse import report_table
from polyv_connector.warehouse.report_table import SqlReportTable
from polyv_connector.warehouse.schema import Column, TableSchema, version_key, version_table
from tests.warehouse.support import PG_DSN, pg_exec, pg_rows, psycopg2_connect, report_batch

# A release after this one, simulated: the current versions plus one more column each.
NEXT_REPORT = len(report_table.SCHEMA_VERSIONS) + 1
STATE_NOW = state_table.SCHEMA.current
NEXT_STATE = STATE_NOW + 1
V2_REPORT = TableSchema("report", [*report_table.SCHEMA_VERSIONS, (NEXT_REPORT, [Column("laterColumn", "text")])])
V2_STATE = TableSchema(
    "state", [*state_table.SCHEMA_VERSIONS, (NEXT_STATE, [Column("partition", "TEXT")])], first=state_table.SCHEMA.first
)


def _columns(schema: str, table: str) -> list[str]:
    sql = "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
    return [r[0] for r in pg_rows(sql + " ORDER BY ordinal_position", (schema, table))]


def _recorded(schema: str) -> dict[str, int]:
    return dict(pg_rows(f"SELECT table_name, version FROM {schema}.polyv_schema_version"))


# ---- the declarations ------------------------------------------------------------------------
def test_the_report_schema_lists_the_report_columns_in_order() -> None:
    assert [c.name for c in report_table.SCHEMA.columns()] == list(REPORT_COLUMNS)
    # report 2: appId..., 3: indexes (no column); state 2: runSeq, 3: the compact layout (a
    # rewrite: its own first version)
    assert report_table.SCHEMA.current == 3 and state_table.SCHEMA.current == 3 == state_table.SCHEMA.first
    assert state_table.LEGACY_SCHEMA.current == 2
    assert [c.name for c in state_table.SCHEMA.columns()] == list(state_table.COLUMNS)


def test_versions_append_and_are_numbered_from_one() -> None:
    assert V2_REPORT.current == NEXT_REPORT
    assert [c.name for c in V2_REPORT.columns(NEXT_REPORT - 1)] == list(REPORT_COLUMNS)
    assert V2_REPORT.version_of([*REPORT_COLUMNS]) == NEXT_REPORT - 1
    assert V2_REPORT.version_of([c.upper() for c in [*REPORT_COLUMNS, "laterColumn"]]) == NEXT_REPORT  # folded names
    assert V2_REPORT.version_of(["rowNumber"]) == 0
    with pytest.raises(ValueError, match="1, 2, 3"):
        TableSchema("x", [(1, [Column("a", "text")]), (3, [Column("b", "text")])])
    with pytest.raises(ValueError, match="3, 4, 5"):
        TableSchema("x", [(1, [Column("a", "text")])], first=3)
    with pytest.raises(ValueError, match="twice"):
        TableSchema("x", [(1, [Column("a", "text")]), (2, [Column("A", "text")])])


def test_the_version_is_kept_next_to_the_table() -> None:
    assert version_table("report") == "polyv_schema_version"
    assert version_table('db.s."Odd.Name"') == "db.s.polyv_schema_version"
    assert version_key('db.s."Odd.Name"') == "Odd.Name"
    assert version_key("S.Report") == "report"  # unquoted names are case-insensitive


# ---- PostgreSQL ------------------------------------------------------------------------------
@pytest.mark.postgres
def test_a_fresh_table_records_the_current_version(pg_schema) -> None:
    SqlReportTable(psycopg2_connect, f"{pg_schema}.report").close()
    SqlStateTable(psycopg2_connect, f"{pg_schema}.state", "app")
    assert _recorded(pg_schema) == {"report": report_table.SCHEMA.current, "state": STATE_NOW}
    (migrated_at,) = pg_rows(f"SELECT migrated_at FROM {pg_schema}.polyv_schema_version WHERE table_name = 'report'")
    assert migrated_at[0].endswith("+00:00")


@pytest.mark.postgres
def test_a_table_made_before_versions_existed_is_recorded_without_change(pg_schema) -> None:
    SqlReportTable(psycopg2_connect, f"{pg_schema}.report").close()
    pg_exec(f"DROP TABLE {pg_schema}.polyv_schema_version")  # as a 0.1 release left it
    SqlReportTable(psycopg2_connect, f"{pg_schema}.report").close()
    assert _recorded(pg_schema) == {"report": report_table.SCHEMA.current}
    assert _columns(pg_schema, "report") == list(REPORT_COLUMNS)


@pytest.mark.postgres
def test_an_older_report_table_is_migrated_and_keeps_its_rows(pg_schema, monkeypatch, caplog) -> None:
    table = f"{pg_schema}.report"
    sink = SqlReportTable(psycopg2_connect, table)
    sink.write(report_batch("run-1", 5))
    sink.close()
    monkeypatch.setattr(report_table, "SCHEMA", V2_REPORT)
    caplog.set_level(logging.INFO, "polyv_connector")
    sink = SqlReportTable(psycopg2_connect, table)
    sink.write(report_batch("run-2", 2))  # the writer still names its columns: the new one stays NULL
    sink.close()
    assert _columns(pg_schema, "report") == [*REPORT_COLUMNS, "laterColumn"]
    assert pg_rows(f'SELECT "runId", count(*), count("laterColumn") FROM {table} GROUP BY 1 ORDER BY 1') == [
        ("run-1", 5, 0),
        ("run-2", 2, 0),
    ]
    assert _recorded(pg_schema) == {"report": NEXT_REPORT}
    assert f"migrated the report table {table} to schema version {NEXT_REPORT} (added laterColumn)" in caplog.text
    nullable = "SELECT is_nullable FROM information_schema.columns WHERE table_schema = %s AND column_name = %s"
    assert pg_rows(nullable, (pg_schema, "laterColumn")) == [("YES",)]


@pytest.mark.postgres
def test_a_compact_state_table_is_migrated_additively_and_keeps_its_records(pg_schema, monkeypatch) -> None:
    table = f"{pg_schema}.state"
    st = SqlStateTable(psycopg2_connect, table, "app")
    st.begin("r1")
    st.record(np.array([1, 2], np.uint64), np.array([10, 20], np.uint64))
    st.finish()
    monkeypatch.setattr(state_table, "SCHEMA", V2_STATE)
    keys, fps = SqlStateTable(psycopg2_connect, table, "app").load()
    assert (keys.tolist(), fps.tolist()) == ([1, 2], [10, 20])
    assert _columns(pg_schema, "state") == [*state_table.COLUMNS, "partition"]
    assert _recorded(pg_schema) == {"state": NEXT_STATE}


@pytest.mark.postgres
def test_a_dry_run_checks_the_state_table_but_migrates_nothing(pg_schema, monkeypatch) -> None:
    SqlStateTable(psycopg2_connect, f"{pg_schema}.state", "app")
    monkeypatch.setattr(state_table, "SCHEMA", V2_STATE)
    SqlStateTable(psycopg2_connect, f"{pg_schema}.state", "app", create=False).load()
    assert "partition" not in _columns(pg_schema, "state")
    assert _recorded(pg_schema) == {"state": STATE_NOW}


@pytest.mark.postgres
def test_rerunning_is_a_no_op(pg_schema, monkeypatch, caplog) -> None:
    table = f"{pg_schema}.report"
    SqlReportTable(psycopg2_connect, table).close()
    monkeypatch.setattr(report_table, "SCHEMA", V2_REPORT)
    SqlReportTable(psycopg2_connect, table).close()
    before = pg_rows(f"SELECT * FROM {pg_schema}.polyv_schema_version")
    caplog.set_level(logging.DEBUG, "polyv_connector")
    caplog.clear()  # only what the rerun logs
    SqlReportTable(psycopg2_connect, table).close()
    assert "migrated" not in caplog.text and "could not" not in caplog.text
    assert pg_rows(f"SELECT * FROM {pg_schema}.polyv_schema_version") == before  # not even rewritten
    assert _columns(pg_schema, "report") == [*REPORT_COLUMNS, "laterColumn"]


@pytest.mark.postgres
def test_a_table_newer_than_this_code_asks_for_an_upgrade(pg_schema) -> None:
    SqlReportTable(psycopg2_connect, f"{pg_schema}.report").close()
    pg_exec(f"UPDATE {pg_schema}.polyv_schema_version SET version = 7")
    with pytest.raises(ConfigError, match=r"report_table: .*schema version 7, newer .* upgrade polyv-connector"):
        SqlReportTable(psycopg2_connect, f"{pg_schema}.report")


@pytest.fixture
def read_write_role(pg_schema) -> Iterator[str]:
    """A role that may read and insert into the schema's tables, but owns none of them."""
    role = f"polyv_ro_{uuid.uuid4().hex[:8]}"
    pg_exec(f"CREATE ROLE {role} NOLOGIN")
    try:
        yield role
    finally:
        pg_exec(f"DROP OWNED BY {role}")
        pg_exec(f"DROP ROLE {role}")


def _as(role: str) -> Any:
    def connect() -> Any:
        import psycopg2

        conn = psycopg2.connect(PG_DSN)
        with conn.cursor() as cur:
            cur.execute(f"SET ROLE {role}")
        conn.commit()
        return conn

    return connect


@pytest.mark.postgres
def test_a_role_that_may_not_alter_the_table_gets_the_ddl_to_run(pg_schema, read_write_role, monkeypatch) -> None:
    table = f"{pg_schema}.report"
    SqlReportTable(psycopg2_connect, table).close()  # version 1, made by its owner
    pg_exec(f"GRANT USAGE ON SCHEMA {pg_schema} TO {read_write_role}")
    pg_exec(f"GRANT SELECT, INSERT ON {table} TO {read_write_role}")
    monkeypatch.setattr(report_table, "SCHEMA", V2_REPORT)
    with pytest.raises(ConfigError) as raised:
        SqlReportTable(_as(read_write_role), table)
    message = str(raised.value)
    assert message.startswith("report_table: ")
    assert f'ALTER TABLE {table} ADD COLUMN "laterColumn" TEXT;' in message
    assert f"schema version {NEXT_REPORT - 1}" in message and f"version {NEXT_REPORT}" in message and "owner" in message
    assert "laterColumn" not in _columns(pg_schema, "report")
    # Once the owner has migrated it, the same role opens it without altering anything.
    SqlReportTable(psycopg2_connect, table).close()
    sink = SqlReportTable(_as(read_write_role), table)
    sink.write(report_batch("run-ro", 3))
    sink.close()
    assert pg_rows(f"SELECT count(*) FROM {table}") == [(3,)]


@pytest.mark.postgres
def test_a_role_that_may_not_record_the_version_is_warned_not_failed(pg_schema, read_write_role, caplog) -> None:
    table = f"{pg_schema}.report"
    SqlReportTable(psycopg2_connect, table).close()
    pg_exec(f"DROP TABLE {pg_schema}.polyv_schema_version")  # a table made before versions existed
    pg_exec(f"GRANT USAGE ON SCHEMA {pg_schema} TO {read_write_role}")
    pg_exec(f"GRANT SELECT, INSERT ON {table} TO {read_write_role}")
    caplog.set_level(logging.INFO, "polyv_connector")
    SqlReportTable(_as(read_write_role), table).close()
    assert f"could not record schema version {report_table.SCHEMA.current}" in caplog.text


# ---- SQLite ----------------------------------------------------------------------------------
def test_sqlite_tables_are_versioned_and_migrated(tmp_path, monkeypatch) -> None:
    path = tmp_path / "w.db"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path)

    sink = SqlReportTable(connect, "report", dialect="sqlite", placeholder="?")
    sink.write(report_batch("run-1", 3))
    sink.close()
    SqlStateTable(connect, "state", "app", placeholder="?")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT table_name, version FROM polyv_schema_version ORDER BY 1").fetchall() == [
            ("report", NEXT_REPORT - 1),
            ("state", STATE_NOW),
        ]
    monkeypatch.setattr(report_table, "SCHEMA", V2_REPORT)
    monkeypatch.setattr(state_table, "SCHEMA", V2_STATE)
    for _ in range(2):  # the second time is a no-op
        SqlReportTable(connect, "report", dialect="sqlite", placeholder="?").close()
        SqlStateTable(connect, "state", "app", placeholder="?")
    with sqlite3.connect(path) as conn:
        assert [d[0] for d in conn.execute("SELECT * FROM report").description][-1] == "laterColumn"
        assert [d[0] for d in conn.execute("SELECT * FROM state").description][-1] == "partition"
        assert conn.execute("SELECT count(*), count(laterColumn) FROM report").fetchone() == (3, 0)
        assert conn.execute("SELECT table_name, version FROM polyv_schema_version ORDER BY 1").fetchall() == [
            ("report", NEXT_REPORT),
            ("state", NEXT_STATE),
        ]
