"""``SqlSource`` and ``SqlReportTable``: chunked reads and bulk report writes, generic and PostgreSQL.

The generic path runs on SQLite (any DB-API driver); PostgreSQL runs through psycopg 3 (what
Airflow's PostgresHook uses here) and psycopg2, with their server-side cursor and COPY paths.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import sqlite3
import uuid

import pyarrow as pa
import pytest

from polyv_connector.config import ColumnMapping
from polyv_connector.errors import ConfigError, InputError
from polyv_connector.items.convert import to_items
from polyv_connector.sources import sql as sql_source
from polyv_connector.sources.sql import SqlSource, _psycopg_streams_chunks, column_to_arrow
from polyv_connector.warehouse.report_table import SqlReportTable
from tests.airflow.support import PG_DSN, pg_exec, pg_rows
from tests.warehouse.support import report_batch as _report_batch

LONG = ColumnMapping()  # viewerId, customFieldId, customFieldValue


def _sqlite(path):
    def connect():
        return sqlite3.connect(path)

    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE attrs (VIEWERID TEXT, customfieldid TEXT, "customFieldValue" TEXT, n INT)')
        conn.executemany(
            "INSERT INTO attrs VALUES (?, ?, ?, ?)", [(f"v{i}", "PAY_STATUS", f"val{i}", i) for i in range(7)]
        )
    return connect


# ---- generic DB-API path (SQLite) --------------------------------------------------------------
def test_table_is_read_in_chunks_with_requested_names(tmp_path):
    source = SqlSource(_sqlite(tmp_path / "w.db"), table="attrs")
    source.check_columns(LONG)
    batches = list(source.batches(LONG.source_columns, 3))
    assert [b.num_rows for b in batches] == [3, 3, 1]
    # Names come back as requested, whatever case the database used.
    assert batches[0].schema.names == ["viewerId", "customFieldId", "customFieldValue"]
    assert pa.Table.from_batches(batches).column("viewerId").to_pylist() == [f"v{i}" for i in range(7)]


def test_query_with_parameters(tmp_path):
    source = SqlSource(
        _sqlite(tmp_path / "w.db"),
        sql="SELECT VIEWERID AS viewerId, n AS customFieldValue, 'VIP_LEVEL' AS customFieldId FROM attrs WHERE n >= ?;",
        parameters=[4],
    )
    source.check_columns(LONG)
    (batch,) = source.batches(LONG.source_columns, 100)
    items = to_items(batch, LONG, 0)
    assert items.column("customFieldValue").to_pylist() == ["4", "5", "6"]  # ints become text
    assert items.column("customFieldId").to_pylist() == ["VIP_LEVEL"] * 3


def test_wide_mapping_columns(tmp_path):
    mapping = ColumnMapping.wide("viewerid", {"PAY_STATUS": "customFieldValue", "VIP_LEVEL": "n"})
    source = SqlSource(_sqlite(tmp_path / "w.db"), table="attrs")
    source.check_columns(mapping)
    batches = list(source.batches(mapping.source_columns, 4))
    items = to_items(batches[0], mapping, 0)
    assert items.num_rows == 8 and items.column("customFieldId").to_pylist()[:2] == ["PAY_STATUS", "VIP_LEVEL"]


def test_missing_column_fails_before_sending(tmp_path):
    source = SqlSource(_sqlite(tmp_path / "w.db"), table="attrs")
    with pytest.raises(InputError, match=r"missing column\(s\) nope .*found: VIEWERID"):
        source.check_columns(ColumnMapping(value_column="nope"))


def test_bad_query_is_an_input_error(tmp_path):
    source = SqlSource(_sqlite(tmp_path / "w.db"), sql="SELECT * FROM no_such_table")
    source.check_columns(LONG)  # the probe cannot run: columns are checked on the first chunk
    with pytest.raises(InputError, match="the source query failed"):
        list(source.batches(LONG.source_columns, 10))


def test_exactly_one_of_sql_and_table():
    with pytest.raises(ConfigError):
        SqlSource(lambda: None, sql="SELECT 1", table="t")
    with pytest.raises(ConfigError):
        SqlSource(lambda: None, sql="  ", table=None)


def test_python_values_become_sendable_text():
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    cases = {
        "uuid": ([u, None], [str(u), None]),
        "decimal": ([decimal.Decimal("12.50"), None], ["12.50", None]),
        "json": ([{"a": 1, "b": "中"}, [1, 2]], ['{"a": 1, "b": "中"}', "[1, 2]"]),
        "time": ([dt.time(8, 30)], ["08:30:00"]),
        "interval": ([dt.timedelta(days=1)], ["1 day, 0:00:00"]),
        "float": ([1.0, 2.5, float("nan")], ["1", "2.5", "NaN"]),  # NaN is shown, and rejected
        "mixed": ([1, "a"], ["1", "a"]),
        "bool": ([True, False], ["true", "false"]),
        "date": ([dt.date(2025, 1, 2)], ["2025-01-02"]),
        "nulls": ([None, None], [None, None]),
    }
    for name, (values, expected) in cases.items():
        batch = pa.RecordBatch.from_arrays(
            [pa.array(["v"] * len(values)), pa.array(["F"] * len(values)), column_to_arrow(values)],
            names=["viewerId", "customFieldId", "customFieldValue"],
        )
        assert to_items(batch, LONG, 0).column("customFieldValue").to_pylist() == expected, name


# ---- PostgreSQL ----------------------------------------------------------------------------------
def _pg_attrs(schema: str, n: int) -> str:
    table = f"{schema}.attrs"
    pg_exec(
        f"CREATE TABLE {table} (viewer_id text, custom_field_id text, custom_field_value numeric, "
        "updated_at timestamptz)"
    )
    pg_exec(f"INSERT INTO {table} SELECT 'v' || i, 'PAY_STATUS', i / 4.0, now() FROM generate_series(1, {n}) i")
    return table


# This process's own: other test runs may share the server.
APP = f"polyv_src_test_{os.getpid()}"


def _psycopg3():
    import psycopg

    return psycopg.connect(PG_DSN + f" application_name={APP}")


def _psycopg2():
    import psycopg2

    return psycopg2.connect(PG_DSN + f" application_name={APP}")


@pytest.mark.postgres
@pytest.mark.parametrize("connect", [_psycopg3, _psycopg2], ids=["psycopg3", "psycopg2"])
def test_postgres_reads_through_a_server_side_cursor(pg_schema, connect):
    table = _pg_attrs(pg_schema, 25)
    mapping = ColumnMapping("viewer_id", "custom_field_id", "custom_field_value")
    source = SqlSource(connect, sql=f"SELECT * FROM {table} ORDER BY custom_field_value")
    source.check_columns(mapping)
    chunks = source.batches(mapping.source_columns, 10)
    try:
        first = next(chunks)
        (query,) = pg_rows("SELECT query FROM pg_stat_activity WHERE application_name = %s", (APP,))
    except BaseException:
        chunks.close()  # the source's connection, else it holds the schema the teardown drops
        raise
    if connect is _psycopg3 and _psycopg_streams_chunks():
        # psycopg 3 over libpq 17+: the query itself, streamed in chunks (no cursor declared);
        # the client holds one chunk, the socket the rest.
        assert query[0].startswith("SELECT * FROM"), query
    else:
        # While the generator is paused, the source's backend is inside a FETCH of a named
        # cursor: the server holds the result, the client one chunk.
        assert query[0].upper().startswith("FETCH") and "polyv_source_" in query[0]
    rest = list(chunks)
    assert [first.num_rows] + [b.num_rows for b in rest] == [10, 10, 5]
    values = to_items(first, mapping, 0).column("customFieldValue").to_pylist()
    # numeric keeps the database's own text form (scale included), as psql would print it.
    assert values[:2] == ["0.25000000000000000000", "0.50000000000000000000"]


@pytest.mark.postgres
def test_a_psycopg3_stream_reads_what_a_named_cursor_reads(pg_schema, monkeypatch):
    """The chunked stream and the named cursor's FETCHes load the same values (text format both
    ways), chunk for chunk, whatever the column types."""
    if not _psycopg_streams_chunks():
        pytest.skip("psycopg 3.2+ over libpq 17+ needed for chunked streams")
    table = f"{pg_schema}.typed"
    pg_exec(
        f"CREATE TABLE {table} AS SELECT 'v' || i AS viewer_id, 'F' || (i % 3) AS custom_field_id, "
        "CASE i % 6 WHEN 0 THEN (i / 7.0)::text WHEN 1 THEN NULL WHEN 2 THEN '' ELSE 'é\n' || i END AS value, "
        "i / 4.0 AS num, ('{\"a\": ' || i || '}')::jsonb AS doc, "
        "timestamptz '2025-03-01 00:00+00' + i * interval '1 minute' AS at "
        "FROM generate_series(1, 23) i"
    )
    columns = ["viewer_id", "custom_field_id", "value", "num", "doc", "at"]
    source = SqlSource(_psycopg3, sql=f"SELECT * FROM {table} ORDER BY viewer_id")
    streamed = list(source.batches(columns, 5))
    monkeypatch.setattr(sql_source, "streams_in_chunks", lambda conn: False)
    fetched = list(source.batches(columns, 5))
    assert [b.num_rows for b in streamed] == [5, 5, 5, 5, 3]
    assert [b.to_pylist() for b in streamed] == [b.to_pylist() for b in fetched]
    assert [b.schema for b in streamed] == [b.schema for b in fetched]


@pytest.mark.postgres
def test_a_psycopg3_stream_left_early_ends_its_query_and_connection(pg_schema):
    table = _pg_attrs(pg_schema, 50_000)
    source = SqlSource(_psycopg3, table=table)
    chunks = source.batches(["viewer_id", "custom_field_id", "custom_field_value"], 100)
    assert next(chunks).num_rows == 100
    chunks.close()
    assert pg_rows("SELECT query FROM pg_stat_activity WHERE application_name = %s", (APP,)) == []


@pytest.mark.postgres
@pytest.mark.parametrize("connect", [_psycopg3, _psycopg2], ids=["psycopg3", "psycopg2"])
def test_an_empty_postgres_result_still_has_its_columns_checked(pg_schema, connect):
    table = _pg_attrs(pg_schema, 3)
    source = SqlSource(connect, sql=f"SELECT * FROM {table} WHERE false")
    assert list(source.batches(["viewer_id", "custom_field_id", "custom_field_value"], 10)) == []
    with pytest.raises(InputError, match="nope"):
        list(source.batches(["viewer_id", "nope", "custom_field_value"], 10))


@pytest.mark.postgres
def test_postgres_through_the_airflow_hook(pg_schema, pg_warehouse_env):
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    table = _pg_attrs(pg_schema, 12)
    hook = PostgresHook(postgres_conn_id="polyv_warehouse")
    mapping = ColumnMapping("viewer_id", "custom_field_id", "custom_field_value")
    source = SqlSource(hook, table=table)
    source.check_columns(mapping)
    assert source._select(mapping.source_columns) == (
        f'SELECT "viewer_id", "custom_field_id", "custom_field_value" FROM {table}'
    )
    assert sum(b.num_rows for b in source.batches(mapping.source_columns, 5)) == 12


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["hook-psycopg3", "psycopg2"])
def test_postgres_report_table_uses_copy(pg_schema, pg_warehouse_env, driver):
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    table = f"{pg_schema}.polyv_sync_report"
    conn = PostgresHook(postgres_conn_id="polyv_warehouse") if driver.startswith("hook") else _psycopg2
    sink = SqlReportTable(conn, table, dialect="postgresql")
    sink.write(_report_batch("run-pg", 6))
    sink.write(_report_batch("run-pg", 4, start=6))
    assert sink.write_path == "copy"
    sink.close()
    rows = pg_rows(
        f'SELECT "rowNumber", "customFieldValue", "errorCode", "syncedAt", "runId" FROM {table} ORDER BY "rowNumber"'
    )
    assert len(rows) == 10
    assert rows[0][1] == '已支付, "quoted"\nline' and rows[1][1] == "" and rows[2][1] is None
    assert rows[0][2] == 20001 and rows[1][2] is None
    assert rows[0][3] == dt.datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC) and rows[5][3] is None
    types = dict(
        pg_rows(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'polyv_sync_report'",
            (pg_schema,),
        )
    )
    assert types["syncedAt"] == "timestamp with time zone" and types["rowNumber"] == "bigint"


@pytest.mark.postgres
def test_postgres_report_table_generic_fallback(pg_schema, pg_warehouse_env):
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    table = f"{pg_schema}.report_generic"
    sink = SqlReportTable(PostgresHook(postgres_conn_id="polyv_warehouse"), table, use_copy=False, chunk_rows=3)
    sink.write(_report_batch("run-x", 7))
    assert sink.write_path == "executemany"
    sink.close()
    assert pg_rows(f'SELECT count(*), count(DISTINCT "runId") FROM {table}') == [(7, 1)]


def test_decimal_text_does_not_depend_on_the_other_values_of_its_chunk() -> None:
    from decimal import Decimal

    from polyv_connector.sources.sql import column_to_arrow

    assert column_to_arrow([Decimal("1.5")]).to_pylist() == ["1.5"]
    assert column_to_arrow([Decimal("1.5"), Decimal("12.50")]).to_pylist() == ["1.5", "12.50"]


# ---- the source reads, never writes ---------------------------------------------------------------
def test_source_sql_must_be_one_read_only_query(tmp_path):
    connect = _sqlite(tmp_path / "w.db")
    for sql in (
        "SELECT 1; DROP TABLE attrs",
        "DELETE FROM attrs",
        "WITH d AS (DELETE FROM attrs RETURNING *) SELECT 1",
    ):
        with pytest.raises(ConfigError, match=r"^source_sql: "):
            SqlSource(connect, sql=sql, dialect="sqlite")  # a known dialect: refused at once
        source = SqlSource(connect, sql=sql)  # a plain factory: checked in the driver's dialect
        with pytest.raises(ConfigError, match=r"^source_sql: "):
            source.check_columns(LONG)  # on the first connection, before anything runs on it
    assert _sqlite_count(connect) == 7


def _sqlite_count(connect) -> int:
    conn = connect()
    try:
        return conn.execute("SELECT count(*) FROM attrs").fetchone()[0]
    finally:
        conn.close()


def test_sqlite_source_is_query_only(tmp_path):
    # A plain factory: the dialect comes from the driver (sqlite3) on the first connection.
    source = SqlSource(_sqlite(tmp_path / "w.db"), sql="SELECT VIEWERID AS viewerId FROM attrs")
    conn = source._open()
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM attrs")
    finally:
        conn.close()


def _read_all(source: SqlSource, mapping: ColumnMapping) -> list[pa.RecordBatch]:
    source.check_columns(mapping)
    return list(source.batches(mapping.source_columns, 2))


@pytest.mark.postgres
@pytest.mark.parametrize("connect", [_psycopg3, _psycopg2], ids=["psycopg3", "psycopg2"])
def test_postgres_source_reads_in_a_read_only_transaction(pg_schema, connect):
    table = _pg_attrs(pg_schema, 3)
    pg_exec(f"CREATE SEQUENCE {pg_schema}.seq")
    # What the parser cannot see: a query that writes through a function. The server refuses it.
    pg_exec(f"CREATE FUNCTION {pg_schema}.wipe() RETURNS text LANGUAGE sql AS $$ DELETE FROM {table} RETURNING 'x' $$")
    mapping = ColumnMapping("viewer_id", "custom_field_id", "custom_field_value")
    for value in (f"nextval('{pg_schema}.seq')::text", f"{pg_schema}.wipe()"):
        source = SqlSource(
            connect, sql=f"SELECT viewer_id, custom_field_id, {value} AS custom_field_value FROM {table}"
        )
        with pytest.raises(InputError, match=r"source_sql: the source query tried to write.*read-only transaction"):
            _read_all(source, mapping)
    assert pg_rows(f"SELECT count(*) FROM {table}") == [(3,)]
    assert pg_rows(f"SELECT last_value, is_called FROM {pg_schema}.seq") == [(1, False)]
    # A reading query still streams through the server-side cursor, inside the same guard.
    source = SqlSource(
        connect,
        sql=f"SELECT viewer_id, custom_field_id, current_setting('transaction_read_only') AS custom_field_value "
        f"FROM {table};  -- a trailing semicolon and comment are fine",
    )
    source.check_columns(mapping)
    values = [v for b in source.batches(mapping.source_columns, 2) for v in b.column(2).to_pylist()]
    assert values == ["on", "on", "on"]


def test_a_plain_factory_checks_the_query_before_any_use(tmp_path):
    # count_unchanged/_select may be the first to need the query text: it is checked then too.
    source = SqlSource(_sqlite(tmp_path / "w.db"), sql="SELECT 1; DELETE FROM attrs")
    with pytest.raises(ConfigError, match=r"^source_sql: must be exactly one SQL statement"):
        source._base_select(LONG.source_columns)
    ok = SqlSource(_sqlite(tmp_path / "w2.db"), sql="SELECT VIEWERID FROM attrs -- note")
    assert ok._base_select(LONG.source_columns) == "SELECT VIEWERID FROM attrs"
