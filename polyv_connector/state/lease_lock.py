"""The table store's lock on any DB-API database: a lease row with an expiry of at most 60 s
that a heartbeat thread renews; an expired lease is taken over.

The base it shares with the advisory lock is :class:`polyv_connector.state.db_locks.DbLock`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from polyv_connector.errors import BusyError
from polyv_connector.state.db_locks import (
    LOCK_TABLES,
    MAX_LEASE_S,
    DbLock,
    LockTables,
    begin_write,
    close,
    contended,
    db_now,
    marker,
    rollback,
)
from polyv_connector.state.locks import LockMode, iso_utc

log = logging.getLogger("polyv_connector")


class LeaseLock(DbLock):
    """A lease row in ``<lock_tables>_lease`` that a heartbeat thread renews; for any DB-API database.

    A lease expires ``expiry_s`` (≤ 60 s) after its last renewal, judged by the database's
    clock; an expired lease is taken over by the next run. The heartbeat renews it every
    ``heartbeat_s`` (default ``expiry_s / 3``). A holder whose lease was taken over (it
    stalled longer than the expiry) notices at its next heartbeat: :attr:`lost` becomes
    true and :meth:`check` raises, so it stops before writing to a state it no longer owns.
    """

    _table_kind = "lease"

    def __init__(
        self,
        connect: Callable[[], Any],
        table: str,
        app_id: str,
        run_id: str,
        *,
        slice_: str | None = None,
        mode: LockMode = "exclusive",
        lock_tables: str = LOCK_TABLES,
        expiry_s: float = MAX_LEASE_S,
        heartbeat_s: float | None = None,
        take_seq: bool = True,
    ) -> None:
        super().__init__(
            connect, table, app_id, run_id, slice_=slice_, mode=mode, lock_tables=lock_tables, take_seq=take_seq
        )
        if not 0 < expiry_s <= MAX_LEASE_S:
            raise ValueError(f"a lease expires after at most {MAX_LEASE_S:g} s, not {expiry_s!r}")
        self.expiry_s = expiry_s
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else expiry_s / 3
        self.what = f"the lease on {self.name}"
        self.holder_id = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost = False

    @property
    def lost(self) -> bool:
        """True once the heartbeat found the lease gone (expired and taken over, or deleted)."""
        return self._lost

    def check(self) -> None:
        """Raise :class:`BusyError` if this run no longer holds its lease."""
        if self._lost:
            raise BusyError(
                f"{self.what} was lost (not renewed within {self.expiry_s:g} s, then taken over or removed); "
                "stop: another run may now own the state",
                holder=self.holder() or {},
            )

    def _try_acquire(self) -> bool:
        conn = self._connect()
        try:
            self._ready(conn)
            got = contended(lambda: self._attempt(conn), self.what)
        finally:
            close(conn)
        if got:
            self._lost = False
            self._stop.clear()
            self._thread = threading.Thread(target=self._heartbeat, name=f"lease-{self.run_id}", daemon=True)
            self._thread.start()
        return got

    def _attempt(self, conn: Any) -> bool:
        m = marker(conn)
        cur = conn.cursor()
        try:
            begin_write(cur, conn)
            seq = self.tables.bump_seq(cur, m, self.seq_name, 1 if self.take_seq else 0)
            now = db_now(cur, conn)
            cur.execute(
                f"SELECT run_id, host, pid, mode FROM {self.tables.lease} WHERE name = {m} AND expires_at < {m}",
                (self.name, now),
            )
            for run_id, host, pid, mode in cur.fetchall():
                log.warning(
                    "taking over the expired %s lease of run %s (pid %s on %s) on %s",
                    mode,
                    run_id,
                    pid,
                    host,
                    self.name,
                )
            cur.execute(f"DELETE FROM {self.tables.lease} WHERE name = {m} AND expires_at < {m}", (self.name, now))
            cur.execute(f"SELECT mode FROM {self.tables.lease} WHERE name = {m}", (self.name,))
            modes = [r[0] for r in cur.fetchall()]
            if modes and (self.mode == "exclusive" or "exclusive" in modes):
                conn.rollback()  # the counter is not advanced for a run that did not get the lock
                return False
            cur.execute(
                f"INSERT INTO {self.tables.lease} (name, holder_id, run_id, host, pid, since, expires_at, mode, seq) "
                f"VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {m}, {m}, {m})",
                (
                    self.name,
                    self.holder_id,
                    self.run_id,
                    socket.gethostname(),
                    os.getpid(),
                    time.time(),
                    now + self.expiry_s,
                    self.mode,
                    seq if self.take_seq else None,
                ),
            )
            conn.commit()
            self._seq = seq if self.take_seq else None
            return True
        except Exception:
            rollback(conn)
            raise
        finally:
            with contextlib.suppress(Exception):
                cur.close()

    def _heartbeat(self) -> None:
        conn: Any = None
        renewed = time.monotonic()
        while not self._stop.wait(self.heartbeat_s):
            try:
                if conn is None:
                    conn = self._connect()
                m = marker(conn)
                cur = conn.cursor()
                now = db_now(cur, conn)
                cur.execute(
                    f"UPDATE {self.tables.lease} SET expires_at = {m} WHERE name = {m} AND holder_id = {m}",
                    (now + self.expiry_s, self.name, self.holder_id),
                )
                found = cur.rowcount
                conn.commit()
                if found == 0:
                    self._lost = True
                    log.error("%s was taken over or removed: this run no longer holds it", self.what)
                    break
                renewed = time.monotonic()
            except Exception as exc:
                log.warning("could not renew %s: %s: %s", self.what, type(exc).__name__, exc)
                if conn is not None:
                    rollback(conn)
                    close(conn)
                conn = None
                if time.monotonic() - renewed > self.expiry_s:
                    self._lost = True  # it may have expired and been taken over meanwhile
                    break
        if conn is not None:
            close(conn)

    def _release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        conn = self._connect()
        try:
            m = marker(conn)
            cur = conn.cursor()
            cur.execute(
                f"DELETE FROM {self.tables.lease} WHERE name = {m} AND holder_id = {m}", (self.name, self.holder_id)
            )
            conn.commit()
        except Exception as exc:
            rollback(conn)
            # The lease then expires by itself within expiry_s.
            log.warning(
                "could not remove %s: %s (it expires within %g s)", self.what, type(exc).__name__, self.expiry_s
            )
        finally:
            close(conn)

    def holders(self) -> list[dict[str, object]]:
        conn = self._connect()
        try:
            self._ready(conn)
            return lease_holders(conn, self.name, self.tables)
        finally:
            close(conn)

    def slice_holders(self) -> dict[str, list[dict[str, object]]]:
        """Live holders of every slice lease of this lease's account, by slice name."""
        prefix = self.seq_name + "|"
        conn = self._connect()
        try:
            self._ready(conn)
            cur = conn.cursor()
            try:
                cur.execute(
                    f"SELECT DISTINCT name FROM {self.tables.lease} WHERE name LIKE {marker(conn)}", (prefix + "%",)
                )
                names = [str(r[0]) for r in cur.fetchall()]
                conn.commit()
            finally:
                with contextlib.suppress(Exception):
                    cur.close()
            found: dict[str, list[dict[str, object]]] = {}
            for name in names:
                if name.startswith(prefix):
                    live = lease_holders(conn, name, self.tables)
                    if live:
                        found[name.removeprefix(prefix)] = live
            return found
        finally:
            close(conn)


def lease_holders(conn: Any, name: str, tables: LockTables, *, expired: bool = False) -> list[dict[str, object]]:
    """Leases on ``name``, oldest first: the live ones, or (``expired=True``) all with an ``expired`` flag."""
    m = marker(conn)
    cur = conn.cursor()
    try:
        now = db_now(cur, conn)
        cur.execute(
            f"SELECT run_id, host, pid, since, mode, seq, expires_at, holder_id FROM {tables.lease} WHERE name = {m}",
            (name,),
        )
        rows = cur.fetchall()
        conn.commit()
    finally:
        with contextlib.suppress(Exception):
            cur.close()
    found: list[dict[str, object]] = []
    for run_id, host, pid, since, mode, seq, expires_at, holder_id in rows:
        is_expired = float(expires_at) < now
        if is_expired and not expired:
            continue
        found.append(
            {
                "runId": run_id,
                "host": host,
                "pid": pid,
                "since": iso_utc(float(since)),
                "mode": mode,
                "seq": seq,
                "lock": name,
                "expiresInS": round(float(expires_at) - now, 1),
                "expired": is_expired,
                "holderId": holder_id,
            }
        )
    return sorted(found, key=lambda h: str(h["since"]))
