"""The operator with its sync state in a PostgreSQL table, and the diff pushed down into the warehouse (issue #5).

The state table on its own is tested in tests/state/test_table.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.airflow.support import APP_ID, PG_DSN, pg_exec, pg_rows
from tests.airflow.test_operator import _context, _op

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]


def _connect() -> Any:
    import psycopg2

    return psycopg2.connect(PG_DSN)


def _attrs(schema: str, n: int, changed: set[int] = frozenset()) -> None:
    pg_exec(f"DROP TABLE IF EXISTS {schema}.attrs")
    pg_exec(f"CREATE TABLE {schema}.attrs (uid text, field text, val text)")
    pg_exec(f"INSERT INTO {schema}.attrs SELECT 'u' || i, 'VIP_LEVEL', 'L' || i FROM generate_series(1, {n}) i")
    for i in changed:
        pg_exec(f"UPDATE {schema}.attrs SET val = 'new' WHERE uid = %s", (f"u{i}",))


def _sync(schema: str, **kw: Any) -> dict[str, Any]:
    return _op(
        source_conn_id="polyv_warehouse",
        source_table=f"{schema}.attrs",
        viewer_id_column="uid",
        field_id_column="field",
        value_column="val",
        report_table=f"{schema}.report",
        state_table=f"{schema}.polyv_sync_state",
        **kw,
    ).execute(_context())


def test_operator_keeps_state_in_the_warehouse(sim, polyv_env, pg_schema, pg_warehouse_env) -> None:
    _attrs(pg_schema, 50)
    assert _sync(pg_schema)["counts"]["sent"] == 50
    saves = sim.stats.save_requests
    again = _sync(pg_schema)
    assert again["counts"]["unchanged"] == 50
    assert sim.stats.save_requests == saves
    _attrs(pg_schema, 50, changed={7, 9})
    third = _sync(pg_schema)
    assert third["counts"]["sent"] == 2
    assert third["counts"]["unchanged"] == 48
    assert sim.values[(APP_ID, "u7", "VIP_LEVEL")] == "new"


def test_diff_in_the_warehouse_sends_only_changed_rows_out(sim, polyv_env, pg_schema, pg_warehouse_env) -> None:
    _attrs(pg_schema, 40)
    first = _sync(pg_schema, diff_in_warehouse=True)
    assert first["counts"]["sent"] == 40
    assert first["unchangedInWarehouse"] == 0
    _attrs(pg_schema, 40, changed={3})
    second = _sync(pg_schema, diff_in_warehouse=True)
    assert second["items"] == 1  # only the changed row left the warehouse
    assert second["counts"]["sent"] == 1
    assert second["unchangedInWarehouse"] == 39
    assert sim.values[(APP_ID, "u3", "VIP_LEVEL")] == "new"
    full = _sync(pg_schema, diff_in_warehouse=True, full_refresh=True)
    assert full["counts"]["sent"] == 40


def test_diff_in_the_warehouse_needs_the_state_on_the_source_connection(sim, polyv_env, tmp_path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="diff_in_warehouse"):
        _op(
            input_path=str(tmp_path / "x.parquet"), report_path=str(tmp_path / "r.parquet"), diff_in_warehouse=True
        ).execute(_context())


def test_warehouse_diff_ignores_a_confirmation_superseded_by_an_unconfirmed_send(
    sim, polyv_env, pg_schema, pg_warehouse_env
) -> None:
    """A killed run leaves 'sent, unconfirmed' after the old confirmation: the row is changed."""
    import pyarrow as pa

    from polyv_connector.fingerprints import key_hashes
    from polyv_connector.state.table import SqlStateTable

    _attrs(pg_schema, 5)
    _sync(pg_schema, diff_in_warehouse=True)
    st = SqlStateTable(_connect, f"{pg_schema}.polyv_sync_state", APP_ID)
    st.lock("killed")  # a run records under the lock, after every earlier run
    st.begin("killed")
    key = key_hashes(pa.array(["u2"]), pa.array(["VIP_LEVEL"]), st.hash_family)[0]
    st.record(key, np.zeros(1, np.uint64))  # the marker; the run died before confirmation
    st._conn.close()
    st.unlock()  # what the death of its process does to its session's advisory lock
    again = _sync(pg_schema, diff_in_warehouse=True)
    assert again["items"] == 1
    assert again["counts"]["sent"] == 1


def test_the_warehouse_diff_keeps_duplicate_keys_for_the_engine(sim, polyv_env, pg_schema, pg_warehouse_env) -> None:
    _attrs(pg_schema, 3)
    _sync(pg_schema, diff_in_warehouse=True)
    # A second row for u1 with another value: the confirmed one must not be filtered out alone.
    pg_exec(f"INSERT INTO {pg_schema}.attrs VALUES ('u1', 'VIP_LEVEL', 'other')")
    res = _sync(pg_schema, diff_in_warehouse=True)
    assert res["items"] == 2
    assert res["counts"]["rejected"] == 2  # the conflict is reported, nothing of it is sent
    assert res["unchangedInWarehouse"] == 2


def test_dry_run_with_the_warehouse_diff_does_not_touch_the_state(sim, polyv_env, pg_schema, pg_warehouse_env):
    import pyarrow as pa

    from polyv_connector.fingerprints import key_hashes
    from polyv_connector.state.table import SqlStateTable

    _attrs(pg_schema, 3)
    _sync(pg_schema, diff_in_warehouse=True)
    st = SqlStateTable(_connect, f"{pg_schema}.polyv_sync_state", APP_ID)
    st.lock("killed")
    st.begin("killed")
    st.record(key_hashes(pa.array(["u2"]), pa.array(["VIP_LEVEL"]), st.hash_family)[0], np.zeros(1, np.uint64))
    st._conn.close()
    st.unlock()
    before = pg_rows(f"SELECT count(*) FROM {pg_schema}.polyv_sync_state")
    dry = _sync(pg_schema, diff_in_warehouse=True, dry_run=True)
    assert dry["counts"]["dry_run"] == 1  # u2 is unconfirmed, so it would be sent
    assert pg_rows(f"SELECT count(*) FROM {pg_schema}.polyv_sync_state") == before  # nothing written


def test_a_second_task_on_one_state_table_is_busy_and_retryable(sim, polyv_env, pg_schema, pg_warehouse_env) -> None:
    """The warehouse state is locked with a PostgreSQL advisory lock: a run holding it (here a
    session of the test's own) makes a second run fail as busy, retryably, having sent nothing."""
    import threading

    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from polyv_connector.state.pg_lock import PgAdvisoryLock

    _attrs(pg_schema, 20)
    _sync(pg_schema)  # creates the state table
    sent_before = sim.stats.save_requests
    holder = PgAdvisoryLock(
        _connect, f"{pg_schema}.polyv_sync_state", APP_ID, "other-run", lock_tables=f"{pg_schema}.polyv_lock"
    )
    holder.acquire()
    try:
        with pytest.raises(AirflowException, match="busy") as raised:
            _sync(pg_schema, full_refresh=True)
        assert not isinstance(raised.value, AirflowFailException)
        assert "other-run" in str(raised.value)  # the holder is named
        assert sim.stats.save_requests == sent_before
        # With a lock timeout the task waits for the holder instead, then runs.
        threading.Timer(1.5, holder.release).start()
        summary = _sync(pg_schema, full_refresh=True, lock_timeout=30)
        assert summary["counts"]["sent"] == 20
    finally:
        holder.release()


def test_the_warehouse_diff_tells_new_from_changed_and_counts_removed(
    sim, polyv_env, pg_schema, pg_warehouse_env
) -> None:
    """Issue 20: the join that finds unchanged rows also tells new keys from changed ones, and
    ``removed`` is the state's key count minus the keys matched (no anti-join)."""
    _attrs(pg_schema, 40)
    first = _sync(pg_schema, diff_in_warehouse=True, whole_source=True)
    assert first["changes"] == {"new": 40, "changed": 0, "cleared": 0} and first["removed"] == 0
    _attrs(pg_schema, 40, changed={3, 5})
    pg_exec(f"DELETE FROM {pg_schema}.attrs WHERE uid IN ('u10', 'u11', 'u12')")
    pg_exec(f"INSERT INTO {pg_schema}.attrs VALUES ('w1', 'VIP_LEVEL', 'x')")
    second = _sync(pg_schema, diff_in_warehouse=True, whole_source=True)
    assert second["changes"] == {"new": 1, "changed": 2, "cleared": 0}
    assert second["unchangedInWarehouse"] == 35 and second["removed"] == 3
    # The same with the diff in the worker gives the same kinds and removed.
    pg_exec(f"UPDATE {pg_schema}.attrs SET val = 'newer' WHERE uid = 'u3'")
    local = _sync(pg_schema, whole_source=True)
    assert local["changes"] == {"new": 0, "changed": 1, "cleared": 0} and local["removed"] == 3


def test_the_warehouse_diff_stops_at_the_change_limit_and_the_shrink(
    sim, polyv_env, pg_schema, pg_warehouse_env
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    _attrs(pg_schema, 40)
    _sync(pg_schema, diff_in_warehouse=True, whole_source=True)
    _attrs(pg_schema, 40, changed=set(range(1, 31)))
    saves = sim.stats.save_requests
    with pytest.raises(AirflowFailException, match="max_changed_fraction"):
        _sync(pg_schema, diff_in_warehouse=True, change_limit_min_items=10)
    assert sim.stats.save_requests == saves
    pg_exec(f"DELETE FROM {pg_schema}.attrs WHERE uid NOT IN ('u1', 'u2')")
    with pytest.raises(AirflowFailException, match="max_source_shrink"):
        _sync(pg_schema, diff_in_warehouse=True, whole_source=True, max_changed_fraction="none")
    assert sim.stats.save_requests == saves


def test_the_warehouse_diff_hashes_null_as_empty_with_null_values_clear(
    sim, polyv_env, pg_schema, pg_warehouse_env
) -> None:
    _attrs(pg_schema, 10)
    pg_exec(f"UPDATE {pg_schema}.attrs SET val = NULL WHERE uid = 'u4'")
    first = _sync(pg_schema, diff_in_warehouse=True, null_values="clear")
    assert first["counts"]["sent"] == 10 and first["changes"]["cleared"] == 1
    assert sim.values[(APP_ID, "u4", "VIP_LEVEL")] == ""
    again = _sync(pg_schema, diff_in_warehouse=True, null_values="clear")
    assert again["items"] == 0 and again["unchangedInWarehouse"] == 10  # the cleared value is not resent


def test_partition_runs_on_the_state_table_count_per_slice(sim, polyv_env, pg_schema, pg_warehouse_env) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from polyv_connector.partitioning import partition_of

    _attrs(pg_schema, 60)
    slice0 = [i for i in range(1, 61) if partition_of(f"u{i}", 2) == 0]
    for k in range(2):
        _sync(pg_schema, diff_in_warehouse=True, partitions=2, partition=k, whole_source=True)
    _attrs(pg_schema, 60, changed=set(slice0))
    with pytest.raises(AirflowFailException, match="slice 0 of 2"):
        _sync(pg_schema, diff_in_warehouse=True, partitions=2, partition=0, change_limit_min_items=5)
    other = _sync(pg_schema, diff_in_warehouse=True, partitions=2, partition=1, change_limit_min_items=5)
    assert other["changes"] == {"new": 0, "changed": 0, "cleared": 0}
    pg_exec(f"DELETE FROM {pg_schema}.attrs WHERE uid = 'u{slice0[0]}'")
    shrunk = _sync(
        pg_schema, diff_in_warehouse=True, partitions=2, partition=0, whole_source=True, max_changed_fraction="none"
    )
    assert shrunk["removed"] == 1 and shrunk["changes"]["changed"] == len(slice0) - 1


def test_a_repeated_unchanged_row_is_no_change_with_the_warehouse_diff(sim, polyv_env, pg_schema, pg_warehouse_env):
    """A key the source holds twice leaves the warehouse (the engine reports the duplicate), and
    the join says POLYV holds its value: unchanged, as the diff in the worker finds it, so a
    source full of repeated rows does not look like a bulk change every night."""
    _attrs(pg_schema, 20)
    pg_exec(f"INSERT INTO {pg_schema}.attrs SELECT uid, field, val FROM {pg_schema}.attrs")
    first = _sync(pg_schema, diff_in_warehouse=True)
    assert first["counts"]["sent"] == 20 and first["counts"]["duplicate"] == 20
    saves = sim.stats.save_requests
    again = _sync(pg_schema, diff_in_warehouse=True)
    assert again["items"] == 40 and again["counts"]["unchanged"] == 20 and again["counts"]["duplicate"] == 20
    assert again["changes"] == {"new": 0, "changed": 0, "cleared": 0} and sim.stats.save_requests == saves
