"""The report table's indexes (schema version 3: by runId, by appId and viewerId) on PostgreSQL,
MariaDB and DuckDB, added to an older table by a migration; PostgreSQL day partitions."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from polyv_connector.errors import ConfigError
from polyv_connector.warehouse import dbapi, report_table
from polyv_connector.warehouse.report_table import SqlReportTable
from polyv_connector.warehouse.schema import TableSchema, recorded_version
from tests.warehouse.engines import Engine
from tests.warehouse.support import PG_DSN, report_batch


def index_columns(engine: Engine, table: str) -> set[tuple[str, ...]]:
    """The column lists of the indexes on ``table`` (its own name, in the engine's schema)."""
    schema = engine.prefix.rstrip(".")
    if engine.name == "postgresql":
        rows = engine.rows(
            "SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace ns ON ns.oid = c.relnamespace "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum "
            "WHERE ns.nspname = %s AND c.relname = %s GROUP BY i.indexrelid",
            (schema, table),
        )
        return {tuple(r[0]) for r in rows}
    if engine.name == "mariadb":
        rows = engine.rows(
            "SELECT index_name, column_name FROM information_schema.statistics "
            "WHERE table_schema = %s AND table_name = %s ORDER BY index_name, seq_in_index",
            (schema, table),
        )
        found: dict[str, list[str]] = {}
        for index, column in rows:
            found.setdefault(index, []).append(column)
        return {tuple(v) for v in found.values()}
    rows = engine.rows("SELECT expressions FROM duckdb_indexes() WHERE table_name = ?", (table,))
    # DuckDB lists an index's expressions as text: "[runId, a]".
    return {tuple(c.strip().strip('"') for c in str(e).strip("[]").split(",")) for (e,) in rows}


def _sink(engine: Engine, name: str = "report", **kw) -> SqlReportTable:
    return SqlReportTable(engine.connect, engine.table(name), dialect=engine.dialect, **engine.table_kwargs(), **kw)


def _recorded(engine: Engine, name: str) -> int | None:
    conn = engine.connect()
    try:
        target = dbapi.resolve(engine.connect, dialect=engine.dialect, **engine.table_kwargs())
        return recorded_version(conn, target, engine.table(name))
    finally:
        conn.close()


def test_a_new_report_table_is_indexed_by_run_and_by_viewer(engine: Engine):
    sink = _sink(engine)
    sink.write(report_batch("run-1", 3))
    sink.close()
    assert {("runId",), ("appId", "viewerId")} <= index_columns(engine, "report")
    assert _recorded(engine, "report") == report_table.SCHEMA.current == report_table.INDEXES_VERSION


def test_a_version_2_table_gains_the_indexes_and_keeps_its_rows(engine: Engine, monkeypatch, caplog):
    v2 = TableSchema("report", report_table.SCHEMA_VERSIONS[:2])
    monkeypatch.setattr(report_table, "SCHEMA", v2)
    sink = _sink(engine)  # as the release before made it: no indexes, version 2 recorded
    sink.write(report_batch("run-1", 4))
    sink.close()
    assert index_columns(engine, "report") == set()
    assert _recorded(engine, "report") == 2
    monkeypatch.undo()
    caplog.set_level(logging.INFO, "polyv_connector")
    sink = _sink(engine)
    sink.write(report_batch("run-2", 2))
    sink.close()
    assert {("runId",), ("appId", "viewerId")} <= index_columns(engine, "report")
    assert _recorded(engine, "report") == 3
    assert "indexed the report table" in caplog.text
    counts = engine.rows(f"SELECT {engine.q('runId')}, COUNT(*) FROM {engine.table('report')} GROUP BY 1 ORDER BY 1")
    assert counts == [("run-1", 4), ("run-2", 2)]


def test_indexes_already_there_are_taken_as_done(engine: Engine):
    """A table whose version record is lost (or whose owner made the indexes beforehand) is
    opened without error: MySQL's duplicate key name, IF NOT EXISTS elsewhere."""
    _sink(engine).close()
    engine.execute(f"DELETE FROM {engine.table('polyv_schema_version')}")
    _sink(engine).close()
    assert _recorded(engine, "report") == 3
    assert len([c for c in index_columns(engine, "report") if c == ("runId",)]) == 1


@pytest.mark.postgres
def test_a_role_that_may_not_index_is_warned_and_retried(pg_schema, caplog):
    import uuid

    import psycopg

    v2 = TableSchema("report", report_table.SCHEMA_VERSIONS[:2])
    table = f"{pg_schema}.report"
    role = f"polyv_ro_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE, CREATE ON SCHEMA {pg_schema} TO {role}")
    try:
        orig = report_table.SCHEMA
        report_table.SCHEMA = v2
        try:
            SqlReportTable(lambda: psycopg.connect(PG_DSN), table).close()
        finally:
            report_table.SCHEMA = orig
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"GRANT SELECT, INSERT ON {table} TO {role}")
            conn.execute(f"GRANT SELECT, INSERT, DELETE ON {pg_schema}.polyv_schema_version TO {role}")
        as_role = PG_DSN.replace("user=postgres", f"user={role}")
        caplog.set_level(logging.WARNING, "polyv_connector")
        sink = SqlReportTable(lambda: psycopg.connect(as_role), table)
        sink.write(report_batch("run-1", 2))
        sink.close()  # the report is written all the same
        assert "could not create the indexes of the report table" in caplog.text
        assert 'CREATE INDEX "report_run_idx" ON' in caplog.text  # the DDL for the owner
        with psycopg.connect(PG_DSN) as conn:
            assert conn.execute(f"SELECT version FROM {pg_schema}.polyv_schema_version").fetchone() == (2,)
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


# ---- day partitions (PostgreSQL) ---------------------------------------------------------------
@pytest.mark.postgres
def test_day_partitions_make_a_partitioned_table_whose_rows_land_in_todays_partition(pg_schema):
    import psycopg

    table = f"{pg_schema}.report"
    sink = SqlReportTable(lambda: psycopg.connect(PG_DSN), table, day_partitions=True)
    sink.write(report_batch("run-1", 5))
    sink.close()
    today = dt.datetime.now(dt.UTC).date()
    with psycopg.connect(PG_DSN) as conn:
        parts = {
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = to_regclass(%s)",
                (table,),
            )
        }
        where = conn.execute(f'SELECT tableoid::regclass::text, "runDate" FROM {table}').fetchall()
    assert "report_pdefault" in parts and f"report_p{today:%Y%m%d}" in parts
    assert f"report_p{today + dt.timedelta(days=report_table.DAYS_AHEAD):%Y%m%d}" in parts
    assert {w for w, _ in where} == {f"{pg_schema}.report_p{today:%Y%m%d}"} and {d for _, d in where} == {today}
    # Indexed like any report table (the partitions inherit the indexes).
    with psycopg.connect(PG_DSN) as conn:
        defs = [r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s", (pg_schema,))]
    assert any(f'ON ONLY {pg_schema}.report USING btree ("runId")' in d for d in defs)
    # Opened again: nothing to create, nothing fails.
    SqlReportTable(lambda: psycopg.connect(PG_DSN), table, day_partitions=True).close()


@pytest.mark.postgres
def test_day_partitions_leave_an_existing_table_as_it_is(pg_schema, caplog):
    import psycopg

    table = f"{pg_schema}.report"
    SqlReportTable(lambda: psycopg.connect(PG_DSN), table).close()
    caplog.set_level(logging.WARNING, "polyv_connector")
    SqlReportTable(lambda: psycopg.connect(PG_DSN), table, day_partitions=True).close()
    assert "day partitions apply to new tables only" in caplog.text


def test_day_partitions_are_postgresql_only(engine: Engine):
    if engine.name == "postgresql":
        pytest.skip("offered there")
    with pytest.raises(ConfigError, match="report_day_partitions"):
        _sink(engine, day_partitions=True)


@pytest.mark.postgres
def test_day_partition_names_must_fit_postgresql(pg_schema):
    import psycopg

    with pytest.raises(ConfigError, match="report_table"):
        SqlReportTable(lambda: psycopg.connect(PG_DSN), f"{pg_schema}.{'r' * 55}", day_partitions=True)


def test_engines_without_secondary_indexes_get_none(tmp_path):
    """A warehouse without CREATE INDEX (Snowflake, BigQuery, Redshift...) is not asked for one,
    so it does not warn on every run: SQLite stands in, its dialect named snowflake."""
    import sqlite3

    path = tmp_path / "r.db"
    SqlReportTable(lambda: sqlite3.connect(path), "report", dialect="snowflake", placeholder="?").close()
    with sqlite3.connect(path) as conn:
        assert (
            conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'").fetchall()
            == []
        )
    SqlReportTable(lambda: sqlite3.connect(path), "report2", dialect="sqlite", placeholder="?").close()
    with sqlite3.connect(path) as conn:
        names = {
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'")
        }
    assert names == {"report2_run_idx", "report2_viewer_idx"}


@pytest.mark.postgres
def test_the_guides_concurrent_index_statements_run_and_the_migration_takes_them(pg_schema):
    """docs/retention.md tells the owner of a large version-2 table to build the indexes with
    ``CREATE INDEX CONCURRENTLY`` beforehand: those statements run as written, and the next run's
    migration finds the indexes instead of building them again."""
    import re
    from pathlib import Path

    import psycopg

    guide = (Path(__file__).resolve().parents[2] / "docs" / "retention.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"^```sql postgresql\n(.*?)^```", guide, re.S | re.M)
    v2 = TableSchema("report", report_table.SCHEMA_VERSIONS[:2])
    table = f"{pg_schema}.polyv_sync_report"
    orig = report_table.SCHEMA
    report_table.SCHEMA = v2
    try:
        SqlReportTable(lambda: psycopg.connect(PG_DSN), table).close()
    finally:
        report_table.SCHEMA = orig
    with psycopg.connect(PG_DSN, autocommit=True) as conn:  # CONCURRENTLY runs outside a transaction
        conn.execute(f"SET search_path TO {pg_schema}")
        for statement in (s.strip() for s in block.split(";")):
            if statement:
                conn.execute(statement)
    SqlReportTable(lambda: psycopg.connect(PG_DSN), table).close()
    with psycopg.connect(PG_DSN) as conn:
        assert conn.execute(f"SELECT version FROM {pg_schema}.polyv_schema_version").fetchone() == (3,)
        defs = [
            r[0]
            for r in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = 'polyv_sync_report'",
                (pg_schema,),
            )
        ]
    # Each index once, under the guide's name: the migration built no second copy.
    assert len([d for d in defs if d.endswith('("runId")')]) == 1
    assert len([d for d in defs if d.endswith('("appId", "viewerId")')]) == 1
    assert any("polyv_sync_report_run_idx" in d for d in defs)
