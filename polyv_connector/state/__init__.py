"""The sync state: what POLYV last confirmed, per account, and one run at a time over it.

* :mod:`~polyv_connector.state.store`: the contract (:class:`StateStore`) and the one entry a run
  uses, ``store.open(run_id, part, timeout_s, dry_run)``; the lock, load and records it orders.
* :mod:`~polyv_connector.state.folder`: the folder store (:class:`SyncState`).
* :mod:`~polyv_connector.state.table` and :mod:`~polyv_connector.state.table_migration`: the
  warehouse table store (:class:`SqlStateTable`) and its migration from versions 1 and 2.
* :mod:`~polyv_connector.state.locks` (the protocol), :mod:`~polyv_connector.state.flock`,
  :mod:`~polyv_connector.state.db_locks` (the base of :mod:`~polyv_connector.state.pg_lock` and
  :mod:`~polyv_connector.state.lease_lock`), :mod:`~polyv_connector.state.partition_rules` and
  :mod:`~polyv_connector.state.admin` (``polyv-sync state status|unlock``).

The stores load lazily from here: importing this package imports neither NumPy nor pyarrow.
"""

from __future__ import annotations

from typing import Any

from polyv_connector.state.store import StateRun, StateStore

__all__ = ["SqlStateTable", "StateRun", "StateStore", "SyncState"]


def __getattr__(name: str) -> Any:
    if name == "SyncState":
        from polyv_connector.state.folder import SyncState

        return SyncState
    if name == "SqlStateTable":
        from polyv_connector.state.table import SqlStateTable

        return SqlStateTable
    raise AttributeError(name)
