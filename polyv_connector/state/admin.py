"""What ``polyv-sync state status|unlock`` show and do, for a folder or the lock tables, without taking a lock."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, Literal

from polyv_connector.state.db_locks import LOCK_TABLES, LockTables, close, lock_key, lock_name, marker
from polyv_connector.state.flock import read_file_seq
from polyv_connector.state.folder import SyncState
from polyv_connector.state.lease_lock import lease_holders
from polyv_connector.state.locks import describe
from polyv_connector.state.pg_lock import pg_advisory_holders


# ---- the lock tables --------------------------------------------------------------------------
def table_lock_status(
    connect: Callable[[], Any],
    table: str,
    app_id: str,
    *,
    kind: Literal["lease", "advisory"] = "lease",
    slice_: str | None = None,
    lock_tables: str = LOCK_TABLES,
) -> dict[str, object]:
    """Who holds the lock on ``table``'s state of ``app_id``, and the last run sequence number.

    ``{"appId", "table", "lock", "name", "holder", "holders", "lastRunSeq"}``; for leases,
    ``holders`` also lists expired leases (``"expired": true``) that no one has taken over yet.
    """
    tables = LockTables(lock_tables)
    name = lock_name(table, app_id, slice_)
    conn = connect()
    try:
        tables.ensure(conn, lease_table=kind == "lease", holder_table=kind == "advisory")
        if kind == "lease":
            holders = lease_holders(conn, name, tables, expired=True)
            live = [h for h in holders if not h["expired"]]
        else:
            holders = live = pg_advisory_holders(conn, lock_key(table, app_id, slice_), tables)
        last = tables.last_seq(conn, lock_name(table, app_id))
    finally:
        close(conn)
    return {
        "appId": app_id,
        "table": table,
        "lock": kind,
        "name": name,
        "holder": live[0] if live else None,
        "holders": holders,
        "lastRunSeq": last,
    }


def table_lock_unlock(
    connect: Callable[[], Any],
    table: str,
    app_id: str,
    *,
    kind: Literal["lease", "advisory"] = "lease",
    slice_: str | None = None,
    lock_tables: str = LOCK_TABLES,
    force: bool = False,
) -> str:
    """Remove what a dead holder left behind; returns what was done, for people to read.

    Leases: expired ones are removed; a live one only with ``force`` (for a holder you know is
    gone: otherwise its lease expires by itself within 60 s of its last heartbeat). Advisory
    locks: PostgreSQL releases them when their session ends, so there is nothing to unlock;
    descriptions of ended sessions are removed and a live holder's session is named.
    """
    tables = LockTables(lock_tables)
    name = lock_name(table, app_id, slice_)
    conn = connect()
    try:
        tables.ensure(conn, lease_table=kind == "lease", holder_table=kind == "advisory")
        m = marker(conn)
        if kind == "advisory":
            key = lock_key(table, app_id, slice_)
            live = pg_advisory_holders(conn, key, tables)
            cur = conn.cursor()
            keep = [int(str(h["backendPid"])) for h in live] or [-1]
            cur.execute(f"DELETE FROM {tables.holder} WHERE lock_key = %s AND NOT (backend_pid = ANY(%s))", (key, keep))
            conn.commit()
            if not live:
                return f"{name} is not locked: PostgreSQL released its advisory lock when the holder's session ended"
            return (
                f"{name} is held by {'; '.join(describe(h) for h in live)}: nothing to unlock, PostgreSQL releases "
                "an advisory lock when its session ends (to end a stuck one: SELECT pg_terminate_backend("
                f"{', '.join(str(h['backendPid']) for h in live)}))"
            )
        holders = lease_holders(conn, name, tables, expired=True)
        gone = [h for h in holders if h["expired"] or force]
        cur = conn.cursor()
        for h in gone:
            cur.execute(f"DELETE FROM {tables.lease} WHERE name = {m} AND holder_id = {m}", (name, h["holderId"]))
        conn.commit()
    finally:
        close(conn)
    left = [h for h in holders if h not in gone]
    if not holders:
        return f"{name} is not locked"
    text = f"removed {len(gone)} lease(s) on {name}" + (": " + "; ".join(describe(h) for h in gone) if gone else "")
    if left:
        text += (
            f"; still held by {'; '.join(describe(h) for h in left)} (its lease expires "
            f"{min(float(str(h['expiresInS'])) for h in left):g} s after its last heartbeat; force removes it)"
        )
    return text


# ---- the folder store ----------------------------------------------------------------------
def state_status(state_dir: str | os.PathLike[str], app_id: str) -> dict[str, object]:
    """Who holds the state's lock and how big the state is, read without taking the lock.

    ``{"appId", "path", "lock": "file", "holder", "holders", "keys", "bytesOnDisk",
    "logsPending", "lastRunSeq"}``; ``holder`` is None when no run holds it.
    """
    state = SyncState(state_dir, app_id)
    holders = state.holders()
    keys, _ = state.load()
    files = [p for p in state.path.rglob("*") if p.is_file()] if state.path.exists() else []
    size = 0
    for p in files:
        with contextlib.suppress(FileNotFoundError):
            size += p.stat().st_size
    return {
        "appId": app_id,
        "path": str(state.path),
        "lock": "file",
        "holder": holders[0] if holders else None,
        "holders": holders,
        "keys": len(keys),
        "bytesOnDisk": size,
        "logsPending": len(state._logs()),
        "lastRunSeq": read_file_seq(state.path) if state.path.exists() else 0,
    }


def state_unlock(state_dir: str | os.PathLike[str], app_id: str) -> str:
    """Nothing to force for a folder state: say why, and who holds it (removes dead holders' descriptions)."""
    state = SyncState(state_dir, app_id)
    holders = state.holders()  # drops the descriptions of holders that died
    text = (
        f"nothing to unlock for {state.path}: its lock is an OS lock (flock) that the operating system "
        "releases when the holding process ends, even on kill -9"
    )
    if not holders:
        return text + "; no run holds it now"
    return text + "; held now by the live " + "; ".join(describe(h) for h in holders) + ": stop that run to release it"
