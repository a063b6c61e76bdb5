"""Partition runs over SQL sources (the filter pushed into the query on PostgreSQL, MariaDB and
DuckDB, filtered while reading elsewhere) and the lock rules of the warehouse state table."""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

import pyarrow as pa
import pytest

from polyv_connector.config import SyncOptions
from polyv_connector.errors import BusyError
from polyv_connector.partitioning import Slice, partition_of
from polyv_connector.report import ParquetReport
from polyv_connector.run import sync
from polyv_connector.sources.sql import SqlSource
from polyv_connector.state.table import SqlStateTable
from tests.conftest import FAST, FIELDS
from tests.warehouse.support import PG_DSN, mysql_connect

COLUMNS = ["viewerId", "customFieldId", "customFieldValue"]
N = 3

VIEWERS = [f"viewer-{i}" for i in range(60)] + ["张三", "emoji-😀", "a b", "\t", "", "   ", None]


def _rows() -> list[tuple[Any, str, str]]:
    rows = [(v, FIELDS[i % len(FIELDS)], f"v{i}") for i, v in enumerate(VIEWERS)]
    rows.append(("viewer-3", FIELDS[3 % len(FIELDS)], "v3"))  # a duplicate: caught within its partition
    return rows


def _read_all(source: SqlSource, part: Slice) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for batch in source.batches(COLUMNS, 7, part):
        out.extend(zip(*(batch.column(c).to_pylist() for c in COLUMNS), strict=True))
    return out


def _check_every_row_once(source: SqlSource, pushed: bool) -> None:
    source.check_columns(SyncOptions().mapping)
    assert (source._partition_sql(COLUMNS, Slice(1, N)) is not None) == pushed
    parts = [_read_all(source, Slice(k, N)) for k in range(N)]
    assert collections.Counter(r for p in parts for r in p) == collections.Counter(_rows())
    for k, rows in enumerate(parts):
        assert all(partition_of(r[0], N) == k for r in rows)


def _pg_source(schema: str) -> SqlSource:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE {schema}.attrs ("viewerId" TEXT, "customFieldId" TEXT, "customFieldValue" TEXT)')
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {schema}.attrs VALUES (%s, %s, %s)", _rows())
    return SqlSource(lambda: psycopg.connect(PG_DSN), table=f"{schema}.attrs")


@pytest.mark.postgres
def test_postgres_partitions_filter_in_the_query(pg_schema) -> None:
    _check_every_row_once(_pg_source(pg_schema), pushed=True)


@pytest.mark.postgres
def test_postgres_partition_syncs_report_each_item_once(pg_schema, tmp_path, creds, sim) -> None:
    source = _pg_source(pg_schema)
    reports = []
    for k in range(N):
        options = SyncOptions(send=FAST, partitions=N, partition=k)
        sync(source, creds, options, ParquetReport(tmp_path / f"r{k}.parquet"))
        reports.append(pa.parquet.read_table(tmp_path / f"r{k}.parquet").to_pylist())
    seen = collections.Counter(
        (r["viewerId"], r["customFieldId"], r["customFieldValue"]) for rep in reports for r in rep
    )
    assert seen == collections.Counter(_rows())
    statuses = collections.Counter(r["status"] for rep in reports for r in rep)
    assert statuses["duplicate"] == 1
    for k, rep in enumerate(reports):
        assert [r["rowNumber"] for r in rep] == list(range(len(rep)))
        assert {(r["partition"], r["partitions"]) for r in rep} == {(k, N)}


@pytest.mark.postgres
def test_postgres_integer_viewer_ids_are_filtered_while_reading(pg_schema) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(
            f'CREATE TABLE {pg_schema}.ints ("viewerId" BIGINT, "customFieldId" TEXT, "customFieldValue" TEXT)'
        )
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {pg_schema}.ints VALUES (%s, 'PAY_STATUS', 'x')", [(i,) for i in range(50)])
    source = SqlSource(lambda: psycopg.connect(PG_DSN), table=f"{pg_schema}.ints")
    source.check_columns(SyncOptions().mapping)
    assert source._partition_sql(COLUMNS, Slice(0, 2)) is None  # not text: hashed as the text sent
    parts = [_read_all(source, Slice(k, 2)) for k in range(2)]
    assert sorted(r[0] for p in parts for r in p) == list(range(50))
    assert all(partition_of(str(r[0]), 2) == k for k, p in enumerate(parts) for r in p)


@pytest.mark.mariadb
def test_mariadb_partitions_filter_in_the_query(mysql_db) -> None:
    conn = mysql_connect(mysql_db)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE attrs (viewerId VARCHAR(64), customFieldId VARCHAR(64), customFieldValue VARCHAR(64)) "
                "CHARACTER SET utf8mb4"
            )
            cur.executemany("INSERT INTO attrs VALUES (%s, %s, %s)", _rows())
        conn.commit()
    finally:
        conn.close()
    source = SqlSource(lambda: mysql_connect(mysql_db), table="attrs", identifier_format="`{}`")
    _check_every_row_once(source, pushed=True)


def test_duckdb_partitions_filter_in_the_query(tmp_path) -> None:
    import duckdb

    path = str(tmp_path / "w.duckdb")
    with duckdb.connect(path) as conn:
        conn.execute('CREATE TABLE attrs ("viewerId" VARCHAR, "customFieldId" VARCHAR, "customFieldValue" VARCHAR)')
        conn.executemany("INSERT INTO attrs VALUES (?, ?, ?)", _rows())
    _check_every_row_once(SqlSource(lambda: duckdb.connect(path), table="attrs"), pushed=True)


def test_sqlite_partitions_filter_while_reading(tmp_path) -> None:
    path = str(tmp_path / "w.sqlite")
    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE attrs ("viewerId" TEXT, "customFieldId" TEXT, "customFieldValue" TEXT)')
        conn.executemany("INSERT INTO attrs VALUES (?, ?, ?)", _rows())
    _check_every_row_once(SqlSource(lambda: sqlite3.connect(path), table="attrs"), pushed=False)


# ---- the state table's locks -----------------------------------------------------------------
def _pg_state(schema: str) -> SqlStateTable:
    import psycopg2

    return SqlStateTable(lambda: psycopg2.connect(PG_DSN), f"{schema}.polyv_sync_state", "app-1")


def _lock_rules(make: Any) -> None:
    a, b, whole, four = make(), make(), make(), make()
    a.lock("run-a", mode="shared", part=Slice(0, 2))
    b.lock("run-b", mode="shared", part=Slice(1, 2))  # both slices at once
    try:
        with pytest.raises(BusyError) as info:
            whole.lock("run-whole")
        assert "run-a" in str(info.value) or "run-b" in str(info.value)
        with pytest.raises(BusyError) as info:
            four.lock("run-four", mode="shared", part=Slice(2, 4))
        assert "2 partitions" in str(info.value) and "this run has 4 partitions" in str(info.value)
        again = make()
        with pytest.raises(BusyError):
            again.lock("run-retry", mode="shared", part=Slice(1, 2))  # slice 1 is held by run-b
    finally:
        a.unlock()
        b.unlock()
    whole.lock("run-whole")  # free once the partitions are done
    try:
        with pytest.raises(BusyError):
            four.lock("run-four", mode="shared", part=Slice(2, 4))
    finally:
        whole.unlock()
    four.lock("run-four", mode="shared", part=Slice(2, 4))
    four.unlock()


@pytest.mark.postgres
def test_state_table_lock_rules_on_postgres(pg_schema) -> None:
    _lock_rules(lambda: _pg_state(pg_schema))


def test_state_table_lock_rules_with_leases(tmp_path) -> None:
    path = str(tmp_path / "state.sqlite")
    _lock_rules(lambda: SqlStateTable(lambda: sqlite3.connect(path, timeout=10), "polyv_sync_state", "app-1"))


@pytest.mark.postgres
def test_partition_runs_keep_one_state_that_any_partition_count_reads(pg_schema, tmp_path, creds, sim) -> None:
    """N=3 runs fill the state table; runs with N=2 then find every item unchanged, each
    loading only its own slice's keys."""
    source = _pg_source(pg_schema)

    def state() -> SqlStateTable:
        return SqlStateTable(_pg_connect, f"{pg_schema}.polyv_sync_state", "test-app")

    for k in range(N):
        sync(source, creds, SyncOptions(send=FAST, partitions=N, partition=k), None, state=state())
    sent = sim.stats.save_requests
    assert sent > 0
    whole_keys, _ = state().load()
    for k in range(2):
        keys, _ = state().load(Slice(k, 2))
        assert 0 < len(keys) < len(whole_keys)
        result = sync(source, creds, SyncOptions(send=FAST, partitions=2, partition=k), None, state=state())
        assert result.counts["sent"] == 0 and result.counts["unchanged"] > 0
    assert sim.stats.save_requests == sent  # nothing resent after changing N


def _pg_connect() -> Any:
    import psycopg2

    return psycopg2.connect(PG_DSN)


@pytest.mark.postgres
def test_partition_runs_with_the_diff_in_the_warehouse(pg_schema, creds, sim) -> None:
    import psycopg

    table = f"{pg_schema}.polyv_sync_state"
    _pg_source(pg_schema)  # creates and fills attrs

    def run(k: int) -> Any:
        state = SqlStateTable(_pg_connect, table, "test-app", load_for_local_diff=False)
        source = SqlSource(lambda: psycopg.connect(PG_DSN), table=f"{pg_schema}.attrs", skip_unchanged=state)
        return sync(source, creds, SyncOptions(send=FAST, partitions=N, partition=k), None, state=state)

    first = [run(k) for k in range(N)]
    assert sum(r.counts["sent"] for r in first) == 63  # 60 viewers, 张三, emoji, "a b"; blank and null rejected
    changed = "viewer-5"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"""UPDATE {pg_schema}.attrs SET "customFieldValue" = 'new' WHERE "viewerId" = %s""", (changed,))
    second = [run(k) for k in range(N)]
    # Only the changed row. viewer-3's key, which the source holds twice, is always read (the
    # engine must see both rows), and the join says POLYV holds its value: unchanged, not resent.
    expected = [int(k == partition_of(changed, N)) for k in range(N)]
    assert [r.counts["sent"] for r in second] == expected
    assert sum(r.changes["changed"] for r in second) == 1 and sum(r.changes["new"] for r in second) == 0
    # Each partition counted only its own slice's unchanged rows, in the warehouse.
    unchanged = [r.extra["unchangedInWarehouse"] for r in second]
    assert sum(unchanged) == 61 and all(u > 0 for u in unchanged)
