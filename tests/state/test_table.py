"""The sync state in a warehouse table: PostgreSQL and SQLite (the other engines: test_state_engines)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from tests.warehouse.support import PG_DSN, pg_exec, pg_rows


def _connect() -> Any:
    import psycopg2

    return psycopg2.connect(PG_DSN)


@pytest.mark.postgres
def test_state_table_roundtrip_markers_and_apps(pg_schema) -> None:
    import pyarrow as pa

    from polyv_connector.state.table import SqlStateTable
    from polyv_connector.warehouse.dialect import POSTGRESQL

    table = f"{pg_schema}.state"
    st = SqlStateTable(_connect, table, "app-a")
    st.begin("run1")
    items = pa.table({"viewerId": ["v1", "v2"], "customFieldId": ["F", "F"], "customFieldValue": ["x", "y"]})
    st.record(np.array([1, 2**63 + 5], np.uint64), np.array([0, 0], np.uint64))  # in flight
    st.record(np.array([1, 2**63 + 5], np.uint64), np.array([11, 2**64 - 1], np.uint64), items=items)  # confirmed
    st.finish()
    keys, fps = SqlStateTable(_connect, table, "app-a").load()
    assert keys.tolist() == [1, 2**63 + 5]  # unsigned, whatever the sign BIGINT stores
    assert fps.tolist() == [11, 2**64 - 1]
    # One row per key.
    assert pg_rows(f"SELECT count(*) FROM {table}") == [(2,)]
    st.begin("run2")
    st.record(np.array([1], np.uint64), np.array([0], np.uint64))  # sent again, in flight
    st.finish()
    assert pg_rows(f"SELECT count(*) FROM {table}") == [(1,)]  # key 1 in flight again: not vouched for
    # The database computes the fingerprints itself: the first 64 bits of MD5, two's complement.
    value_fp = pg_rows(f"SELECT {POSTGRESQL.value_hash('%s')}", ("x",))[0][0]
    assert value_fp == int(hashlib.md5(b"x").hexdigest()[:16], 16) - 2**64  # 9dd4...: the high bit set
    assert len(SqlStateTable(_connect, table, "app-b").load()[0]) == 0
    SqlStateTable(_connect, table, "app-a").reset()
    assert pg_rows(f"SELECT count(*) FROM {table}") == [(0,)]


@pytest.mark.postgres
def test_several_confirmed_batches_in_one_write_end_as_if_recorded_in_order(pg_schema) -> None:
    from polyv_connector.partitioning import WHOLE
    from polyv_connector.state.store import StateRun
    from polyv_connector.state.table import SqlStateTable

    table = f"{pg_schema}.state"
    st = SqlStateTable(_connect, table, "app-a")
    run = StateRun(st, "run1", WHOLE, 1, dry_run=False)
    u = np.uint64
    run.record(np.array([1, 2, 3, 4], u), np.zeros(4, u))  # the chunk's pre-mark
    run.record_many(
        [(np.array([1, 2], u), np.array([11, 12], u), 1.0, None), (np.array([3], u), np.array([13], u), 2.0, None)]
    )
    # A key in two batches: the last confirmation wins, as recorded one by one.
    run.record_many(
        [(np.array([4], u), np.array([14], u), 3.0, None), (np.array([4], u), np.array([24], u), 4.0, None)]
    )
    st.finish()
    keys, fps = SqlStateTable(_connect, table, "app-a").load()
    assert dict(zip(keys.tolist(), fps.tolist(), strict=True)) == {1: 11, 2: 12, 3: 13, 4: 24}
    assert pg_rows(f"SELECT count(*) FROM {table}") == [(4,)]


@pytest.mark.postgres
def test_pre_marks_delete_only_keys_that_may_have_a_row(pg_schema) -> None:
    """A first run's pre-marks delete nothing (no key has a row); a key confirmed earlier in
    the run, or loaded from the state, is deleted when it is pre-marked again."""
    import io

    import psycopg2
    import psycopg2.extras

    from polyv_connector.partitioning import WHOLE
    from polyv_connector.state.store import StateRun
    from polyv_connector.state.table import SqlStateTable

    statements = io.StringIO()

    def connect() -> Any:
        conn = psycopg2.connect(PG_DSN, connection_factory=psycopg2.extras.LoggingConnection)
        conn.initialize(statements)
        return conn

    def deletes() -> list[str]:
        found = [line for line in statements.getvalue().splitlines() if line.startswith(f"DELETE FROM {table} ")]
        statements.seek(0)
        statements.truncate()
        return found

    table, u = f"{pg_schema}.state", np.uint64
    first = StateRun(SqlStateTable(connect, table, "app-a"), "run1", WHOLE, 1, dry_run=False)
    first.load()
    keys = np.arange(1, 2001, dtype=u)
    first.record(keys, np.zeros(2000, u))  # the chunk's pre-mark
    assert deletes() == []
    first.record(keys[:1000], keys[:1000] + u(100))  # confirmed
    first.record(keys[:1], np.zeros(1, u))  # the same key sent again in this run
    assert deletes() == [f'DELETE FROM {table} WHERE "acct" = {first.store.acct} AND "key" IN (1)']
    first.store.finish()
    rerun = StateRun(SqlStateTable(connect, table, "app-a"), "run2", WHOLE, 2, dry_run=False)
    loaded, _ = rerun.load()
    assert loaded.tolist() == list(range(2, 1001))
    rerun.record(np.array([5, 1500], u), np.zeros(2, u))  # 5 has a row, 1500 never had one
    assert [d.rsplit("IN ", 1)[1] for d in deletes()] == ["(5)"]
    rerun.store.finish()
    assert len(SqlStateTable(connect, table, "app-a").load()[0]) == 998


@pytest.mark.postgres
def test_a_batch_confirming_some_keys_leaves_each_key_as_its_last_entry_says(pg_schema) -> None:
    """Keys sent and not confirmed are known to have no row (no DELETE when pre-marked again);
    within one batch a key given twice ends as its last entry says, whole batches in one go."""
    from polyv_connector.partitioning import WHOLE
    from polyv_connector.state.store import StateRun
    from polyv_connector.state.table import SqlStateTable

    table, u = f"{pg_schema}.state", np.uint64
    st = SqlStateTable(_connect, table, "app-a")
    run = StateRun(st, "run1", WHOLE, 1, dry_run=False)
    run.load()
    run.record(np.array([1, 2, 3], u), np.zeros(3, u))  # a pre-mark: all in flight
    assert st._in_flight == {1, 2, 3}
    run.record(np.array([1, 2], u), np.array([11, 12], u))  # all confirmed
    assert st._in_flight == {3}
    run.record(np.array([7, 7, 8, 8, 3], u), np.array([0, 17, 18, 0, 13], u))  # mixed, 7 and 8 twice
    assert st._in_flight == {8}
    run.record(np.array([2**63 + 1], u), np.zeros(1, u))  # in flight, stored signed
    assert st._in_flight == {8, -(2**63) + 1}
    st.finish()
    keys, fps = SqlStateTable(_connect, table, "app-a").load()
    stored = dict(zip(keys.tolist(), fps.tolist(), strict=True))
    assert {k: stored[k] for k in (1, 2, 3, 7)} == {1: 11, 2: 12, 3: 13, 7: 17}


@pytest.mark.postgres
def test_dry_run_does_not_create_the_state_table(pg_schema) -> None:
    from polyv_connector.state.table import SqlStateTable

    st = SqlStateTable(_connect, f"{pg_schema}.state", "app", create=False)
    assert len(st.load()[0]) == 0
    assert pg_rows("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (pg_schema,)) == [(0,)]


@pytest.mark.postgres
def test_a_table_name_cannot_smuggle_sql_through_the_index(pg_schema) -> None:
    from polyv_connector.state.table import SqlStateTable

    pg_exec(f"CREATE TABLE {pg_schema}.victim (x int)")
    table = f'{pg_schema}."s ON {pg_schema}.victim(x); DROP TABLE {pg_schema}.victim; --"'
    SqlStateTable(_connect, table, "app")
    tables = "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1"
    names = [r[0] for r in pg_rows(tables, (pg_schema,))]
    assert "victim" in names  # still there
    assert any(n.startswith("s ON") for n in names)  # the oddly named state table was created


def test_state_table_generic_path_on_sqlite(tmp_path) -> None:
    """SQLite (the generic SQL, no COPY): the last record of a key wins, one row per key."""
    import sqlite3

    import pyarrow as pa

    from polyv_connector.state.table import SqlStateTable, account_hash

    path = tmp_path / "w.db"
    st = SqlStateTable(lambda: sqlite3.connect(path), "state", "app")
    st.begin("r1")
    items = pa.table({"viewerId": ["v1"], "customFieldId": ["F"], "customFieldValue": ["x"]})
    st.record(np.array([7], np.uint64), np.array([0], np.uint64), synced_at=1.0)
    st.record(np.array([7], np.uint64), np.array([70], np.uint64), synced_at=2.0, items=items)
    st.record(np.array([7], np.uint64), np.array([71], np.uint64), synced_at=3.0, items=items)
    st.finish()
    keys, fps = SqlStateTable(lambda: sqlite3.connect(path), "state", "app").load()
    assert keys.tolist() == [7]
    assert fps.tolist() == [71]
    rows = sqlite3.connect(path).execute('SELECT "acct", "key", "fp" FROM state').fetchall()
    assert rows == [(account_hash("app"), 7, 71)]


@pytest.mark.postgres
def test_the_warehouse_diff_is_wired_at_construction(pg_schema) -> None:
    """The state table is the source's ``skip_unchanged`` and loads nothing for a local diff."""
    import pyarrow as pa

    from polyv_connector.fingerprints import key_hashes, value_fingerprints
    from polyv_connector.sources.sql import SqlSource
    from polyv_connector.state.table import SqlStateTable

    attrs, table = f"{pg_schema}.attrs", f"{pg_schema}.state"
    pg_exec(f"CREATE TABLE {attrs} (uid text, field text, val text)")
    pg_exec(f"INSERT INTO {attrs} VALUES ('u1', 'F', 'a'), ('u2', 'F', 'b'), ('u3', 'F', 'c')")
    st = SqlStateTable(_connect, table, "app")
    st.begin("r1")
    confirmed = pa.table({"viewerId": ["u1", "u2"], "customFieldId": ["F", "F"], "customFieldValue": ["a", "old"]})
    keys = key_hashes(confirmed.column("viewerId"), confirmed.column("customFieldId"), st.hash_family)[0]
    st.record(keys, value_fingerprints(confirmed.column("customFieldValue"), st.hash_family), items=confirmed)
    st.finish()

    st = SqlStateTable(_connect, table, "app", load_for_local_diff=False)
    assert len(st.load()[0]) == 0  # the engine gets no copy of the state
    source = SqlSource(_connect, table=attrs, skip_unchanged=st)
    columns = ["uid", "field", "val"]
    assert source.count_unchanged(columns) == 1  # u1: confirmed with this value
    rows = pa.Table.from_batches(list(source.batches(columns, 10)))
    assert sorted(rows.column("uid").to_pylist()) == ["u2", "u3"]  # changed, and never sent


@pytest.mark.postgres
def test_first_runs_creating_the_state_table_at_once_all_open_it(pg_schema) -> None:
    """A backfill starts several dates side by side on a new state table: PostgreSQL can refuse
    all but one ``CREATE TABLE IF NOT EXISTS`` (a catalog unique violation); the others must open
    the table their neighbour made, not fail (seen in tests/e2e/test_backfill.py)."""
    import threading

    import psycopg

    from polyv_connector.state.table import SqlStateTable

    errors: list[BaseException] = []
    for trial in range(8):
        table = f"{pg_schema}.state_{trial}"
        start = threading.Barrier(3)

        def open_table(table: str = table, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                assert SqlStateTable(lambda: psycopg.connect(PG_DSN), table, "app").exists
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_table) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors[:3]
