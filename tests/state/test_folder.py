"""Sync state: confirmed fingerprints per appId, durable logs, compaction, corruption."""

from __future__ import annotations

import numpy as np
import pytest

from polyv_connector.errors import StateError
from polyv_connector.state.folder import SyncState


def test_roundtrip_last_confirmation_wins(tmp_path) -> None:
    st = SyncState(tmp_path, "app")
    st.begin("run1")
    st.record(np.array([3, 1], np.uint64), np.array([30, 10], np.uint64))
    st.record(np.array([3], np.uint64), np.array([33], np.uint64))
    st.finish()
    keys, fps = SyncState(tmp_path, "app").load()
    assert keys.tolist() == [1, 3] and fps.tolist() == [10, 33]
    assert not list((tmp_path / "app").glob("log-*"))  # folded into base.parquet


def test_log_of_a_killed_run_is_read_and_a_torn_tail_ignored(tmp_path) -> None:
    st = SyncState(tmp_path, "app")
    st.begin("run1")
    st.record(np.array([1], np.uint64), np.array([10], np.uint64))
    log = next((tmp_path / "app").glob("log-*.arrows"))
    good = log.read_bytes()
    st.record(np.array([2], np.uint64), np.array([20], np.uint64))
    # Simulate SIGKILL in the middle of writing the second batch: cut the file short.
    full = log.read_bytes()
    log.write_bytes(full[: len(good) + (len(full) - len(good)) // 2])
    keys, fps = SyncState(tmp_path, "app").load()
    assert keys.tolist() == [1] and fps.tolist() == [10]


def test_states_are_separate_per_app(tmp_path) -> None:
    a = SyncState(tmp_path, "app-a")
    a.begin("r")
    a.record(np.array([1], np.uint64), np.array([1], np.uint64))
    a.finish()
    assert len(SyncState(tmp_path, "app-b").load()[0]) == 0


def test_corrupt_base_fails_with_a_clear_message(tmp_path) -> None:
    st = SyncState(tmp_path, "app")
    st.begin("r")
    st.record(np.array([1], np.uint64), np.array([1], np.uint64))
    st.finish()
    (tmp_path / "app" / "base.parquet").write_bytes(b"garbage")
    with pytest.raises(StateError, match=r"corrupt.*--reset-state"):
        SyncState(tmp_path, "app").load()


def test_state_of_another_app_in_the_folder_is_refused(tmp_path) -> None:
    st = SyncState(tmp_path, "app")
    st.begin("r")
    st.finish()
    (tmp_path / "app" / "meta.json").write_text('{"appId": "other", "fingerprint": "xxh3_64-v2"}')
    with pytest.raises(StateError, match="belongs to appId 'other'"):
        SyncState(tmp_path, "app").load()


def test_compaction_keeps_each_keys_confirmation_time(tmp_path) -> None:
    import pyarrow.parquet as pq

    st = SyncState(tmp_path, "app")
    st.begin("r1")
    st.record(np.array([1], np.uint64), np.array([10], np.uint64), synced_at=1000.0)
    st.record(np.array([2], np.uint64), np.array([20], np.uint64), synced_at=2000.0)
    st.record(np.array([1], np.uint64), np.array([11], np.uint64), synced_at=3000.0)
    st.finish()
    base = pq.read_table(tmp_path / "app" / "base.parquet").to_pylist()
    assert base == [{"key": 1, "fp": 11, "syncedAt": 3000.0}, {"key": 2, "fp": 20, "syncedAt": 2000.0}]


def test_state_whose_data_was_deleted_warns_and_sends_everything(tmp_path, caplog) -> None:
    import logging

    st = SyncState(tmp_path, "app")
    st.begin("r")
    st.record(np.array([1], np.uint64), np.array([1], np.uint64))
    st.finish()
    (tmp_path / "app" / "base.parquet").unlink()
    caplog.set_level(logging.INFO, logger="polyv_connector")
    keys, _ = SyncState(tmp_path, "app").load()
    assert len(keys) == 0
    assert "holds no confirmed items: every valid item will be sent" in caplog.text
