"""The one entry of a run into the state (open), the non-blocking try, the position and the
metadata record: on the folder store and the table store on PostgreSQL, MariaDB and DuckDB."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from polyv_connector.errors import BusyError, StateError
from polyv_connector.partitioning import WHOLE, Slice
from polyv_connector.state.store import StateStore

KEYS = np.array([3, 1 << 40, (7 << 32) + 5], np.uint64)
FPS = np.array([11, 12, 13], np.uint64)


def _sorted(keys: np.ndarray, fps: np.ndarray) -> list[tuple[int, int]]:
    return sorted(zip(keys.tolist(), fps.tolist(), strict=True))


def test_open_locks_loads_records_and_finishes(new_store: Callable[[], StateStore]) -> None:
    store = new_store()
    with store.open("run-1", WHOLE, 0.0) as run:
        assert run.seq is not None and run.seq >= 1
        keys, fps = run.load()
        assert len(keys) == 0 and len(fps) == 0
        run.record(KEYS, FPS)
    # Finished and unlocked: the next run takes it at once and plans against what was recorded.
    with new_store().open("run-2", WHOLE, 0.0) as later:
        assert later.seq is not None and run.seq is not None and later.seq > run.seq
        assert _sorted(*later.load()) == _sorted(KEYS, FPS)


@pytest.mark.contended
def test_open_holds_the_state_for_the_run(new_store: Callable[[], StateStore]) -> None:
    with new_store().open("run-1"), pytest.raises(BusyError, match="run-1"):
        new_store().lock("run-2")


def _fail_inside(store: StateStore) -> None:
    with store.open("run-1") as run:
        run.record(KEYS, FPS)
        raise RuntimeError("boom")


def test_a_run_that_fails_lets_the_lock_go(new_store: Callable[[], StateStore]) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        _fail_inside(new_store())
    with new_store().open("run-2") as later:  # not held any more
        assert later.seq is not None


def test_a_dry_run_takes_no_lock_and_records_nothing(new_store: Callable[[], StateStore]) -> None:
    holder = new_store()
    holder.lock("run-1")
    try:
        with new_store().open("dry", dry_run=True) as run:  # reads beside the holder
            assert run.seq is None
            run.load()
            with pytest.raises(RuntimeError, match="dry run"):
                run.record(KEYS, FPS)
            with pytest.raises(RuntimeError, match="dry run"):
                run.write_meta({"items": 1})
    finally:
        holder.unlock()


@pytest.mark.contended
def test_try_open_yields_none_while_another_run_holds_the_state(new_store: Callable[[], StateStore]) -> None:
    with new_store().open("run-1"), new_store().try_open("run-2") as other:
        assert other is None
    with new_store().try_open("run-3") as free:
        assert free is not None
        free.record(KEYS, FPS)
    assert _sorted(*new_store().load()) == _sorted(KEYS, FPS)


@pytest.mark.contended
def test_try_open_for_a_slice_is_refused_beside_a_whole_run(new_store: Callable[[], StateStore]) -> None:
    with new_store().open("whole"), new_store().try_open("part", Slice(0, 2)) as part:
        assert part is None
    with new_store().try_open("part-0", Slice(0, 2)) as a, new_store().try_open("part-1", Slice(1, 2)) as b:
        assert a is not None and b is not None  # slices of one partitioning run side by side


def test_the_position_changes_whenever_a_run_changes_the_state(new_store: Callable[[], StateStore]) -> None:
    store = new_store()
    start = store.position()
    assert new_store().position() == start  # a value, the same from every handle
    with new_store().open("dry", dry_run=True) as run:
        run.load()
    assert store.position() == start  # a dry run changes nothing
    with new_store().open("run-1") as run:
        run.record(KEYS, FPS)
    first = store.position()
    assert first != start
    with new_store().open("run-2") as run:
        run.record(KEYS[:1], np.array([99], np.uint64))  # one value changed
    second = store.position()
    assert second not in (start, first)
    with new_store().open("run-3") as run:
        run.load()
        mid = store.position()  # another process sees the run while it holds the state...
        run.record(KEYS[1:2], np.array([98], np.uint64))
        assert store.position() != mid  # ...and each change it makes
    assert store.position() != second


def test_the_metadata_record_is_per_account_and_slice(new_store: Callable[[], StateStore]) -> None:
    store = new_store()
    assert store.read_meta() == {}
    with store.open("run-1") as run:
        assert run.read_meta() == {}
        run.write_meta({"items": 1200, "source": "whole", "ratio": 0.5})
    assert new_store().read_meta() == {"items": 1200, "source": "whole", "ratio": 0.5}
    assert new_store().read_meta(Slice(1, 2)) == {}
    with new_store().open("part-1", Slice(1, 2)) as part:
        part.write_meta({"items": 7})
        assert part.read_meta() == {"items": 7}
    with new_store().open("run-2") as run:
        run.write_meta({"items": 1300})  # replaced, not merged
    assert new_store().read_meta() == {"items": 1300}
    assert new_store().read_meta(Slice(1, 2)) == {"items": 7}


def test_the_metadata_record_needs_the_lock_and_survives_a_reset(new_store: Callable[[], StateStore]) -> None:
    store = new_store()
    with pytest.raises(StateError, match="lock"):
        store.write_meta({"items": 1})
    with store.open("run-1") as run:
        run.record(KEYS, FPS)
        run.write_meta({"items": 3})
    holder = new_store()
    holder.lock("reset")
    try:
        holder.reset()
    finally:
        holder.unlock()
    assert len(new_store().load()[0]) == 0  # the confirmations are forgotten...
    assert new_store().read_meta() == {"items": 3}  # ...what was learnt about the source is not


def test_a_metadata_record_that_is_not_json_is_not_trusted(new_store: Callable[[], StateStore]) -> None:
    with new_store().open("run-1") as run:
        with pytest.raises(ValueError, match="JSON"):
            run.write_meta({"ratio": float("nan")})  # strict JSON only
        run.write_meta({"items": 3})
    store = new_store()
    _corrupt_meta(store)
    with pytest.raises(StateError, match="metadata"):
        store.read_meta()


def _corrupt_meta(store: StateStore) -> None:
    from polyv_connector.state.folder import SyncState
    from polyv_connector.state.table import SqlStateTable
    from polyv_connector.state.table_meta import meta_table

    if isinstance(store, SyncState):
        (store.path / f"meta-{WHOLE.name}.json").write_text("{not json")
        return
    assert isinstance(store, SqlStateTable)
    conn = store._open()
    try:
        cur = conn.cursor()
        cur.execute(f"UPDATE {meta_table(store)} SET {store._q('record')} = 'not json'")
        conn.commit()
    finally:
        conn.close()


def test_the_metadata_table_is_versioned_beside_the_state_table(request: pytest.FixtureRequest, tmp_path) -> None:
    """The table store keeps the records in ``<table>_meta``, its schema version recorded as the
    state table's is (DuckDB here; the same code on every database)."""
    from polyv_connector.state.table import SqlStateTable
    from polyv_connector.state.table_meta import META_SCHEMA, meta_table
    from polyv_connector.warehouse.schema import recorded_version
    from tests.warehouse.engines import make_engine

    engine = make_engine("duckdb", request, tmp_path)
    store = SqlStateTable(engine.connect, "state", "app-a", **engine.table_kwargs())
    with store.open("run-1") as run:
        run.write_meta({"items": 1})
    conn = engine.connect()
    try:
        assert recorded_version(conn, store._target, meta_table(store)) == META_SCHEMA.current == 1
    finally:
        conn.close()
    dry = SqlStateTable(engine.connect, "fresh", "app-a", create=False, **engine.table_kwargs())
    assert dry.read_meta() == {}  # a dry run creates nothing to read it
    conn = engine.connect()
    try:
        assert engine.rows("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'fresh_meta'") == [(0,)]
    finally:
        conn.close()
