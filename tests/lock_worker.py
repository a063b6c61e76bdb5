"""A separate process for the lock tests: takes a lock (or runs locked syncs of a folder state).

    python -m tests.lock_worker lock <kind> <target> <run_id> <mode> <timeout_s> <hold_s> [expiry_s]
    python -m tests.lock_worker sync <state_dir> <run_id> <value> <runs> <keys>
    python -m tests.lock_worker compact-loop <state_dir> <runs> <keys>

Prints one JSON line per event on stdout (``acquired``, ``busy``, ``released``, ``synced``).
``hold_s < 0`` holds until killed. Kinds: file, sqlite-lease, pg-advisory, pg-lease.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from typing import Any

import numpy as np

from polyv_connector.errors import BusyError
from polyv_connector.state.flock import FileLock
from polyv_connector.state.folder import SyncState
from polyv_connector.state.lease_lock import LeaseLock
from polyv_connector.state.pg_lock import PgAdvisoryLock
from tests.services import PG_DSN

STATE_TABLE = "polyv_state"
APP = "app-1"


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "pid": os.getpid(), **fields}, default=str), flush=True)


def pg_connect() -> Any:
    import psycopg

    return psycopg.connect(PG_DSN)


def make_lock(kind: str, target: str, run_id: str, mode: str, expiry_s: float = 60.0, slice_: str | None = None) -> Any:
    """``target``: the directory (file), the SQLite file (sqlite-lease) or the schema (pg-*)."""
    if kind == "file":
        return FileLock(target, run_id, mode=mode)  # type: ignore[arg-type]
    if kind == "sqlite-lease":
        return LeaseLock(
            lambda: sqlite3.connect(target, timeout=10),
            STATE_TABLE,
            APP,
            run_id,
            mode=mode,  # type: ignore[arg-type]
            expiry_s=expiry_s,
            slice_=slice_,
        )
    tables = f"{target}.polyv_lock"
    if kind == "pg-advisory":
        return PgAdvisoryLock(pg_connect, f"{target}.{STATE_TABLE}", APP, run_id, mode=mode, lock_tables=tables)  # type: ignore[arg-type]
    if kind == "pg-lease":
        return LeaseLock(
            pg_connect,
            f"{target}.{STATE_TABLE}",
            APP,
            run_id,
            mode=mode,  # type: ignore[arg-type]
            lock_tables=tables,
            expiry_s=expiry_s,
        )
    raise ValueError(kind)


def cmd_lock(kind: str, target: str, run_id: str, mode: str, timeout_s: str, hold_s: str, expiry_s: str = "60") -> int:
    lock = make_lock(kind, target, run_id, mode, float(expiry_s))
    try:
        lock.acquire(float(timeout_s))
    except BusyError as exc:
        emit("busy", message=str(exc), holder=exc.holder)
        return 5
    emit("acquired", seq=lock.seq, run_id=run_id)
    hold = float(hold_s)
    if hold < 0:
        while True:
            time.sleep(3600)
    time.sleep(hold)
    lost = bool(getattr(lock, "lost", False))
    lock.release()
    emit("released", lost=lost)
    return 0


def cmd_sync(state_dir: str, run_id: str, value: str, runs: str, keys: str) -> int:
    """``runs`` locked runs, each confirming every key with ``value * 1000 + i``."""
    n = int(keys)
    for i in range(int(runs)):
        state = SyncState(state_dir, APP, implicit_lock=False)
        with state.locked(f"{run_id}-{i}", timeout_s=60) as seq:
            state.load()
            state.begin(f"{run_id}-{i}")
            fp = int(value) * 1000 + i
            for part in np.array_split(np.arange(n, dtype=np.uint64), 4):
                state.record(part, np.full(len(part), fp, np.uint64))
            state.finish()
            emit("synced", seq=seq, fp=fp)
    return 0


def cmd_compact_loop(state_dir: str, runs: str, keys: str) -> int:
    """Many short locked runs: every key gets the run's number, then the run compacts."""
    n = int(keys)
    for i in range(1, int(runs) + 1):
        state = SyncState(state_dir, APP, implicit_lock=False)
        with state.locked(f"w{i}", timeout_s=60):
            state.begin(f"w{i}")
            state.record(np.arange(n, dtype=np.uint64), np.full(n, i, np.uint64))
            state.finish()
        emit("synced", fp=i)
    return 0


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    sys.exit({"lock": cmd_lock, "sync": cmd_sync, "compact-loop": cmd_compact_loop}[command](*args))
