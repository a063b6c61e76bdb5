"""The table store's locks: a PostgreSQL advisory lock, or a lease row for any DB-API database.

* :class:`PgAdvisoryLock`: a PostgreSQL session advisory lock on a dedicated connection;
  PostgreSQL releases it when the session ends.
* :class:`LeaseLock`: a lease row with an expiry of at most 60 s that a heartbeat thread
  renews, for any DB-API database; an expired lease is taken over.

Both keep the account's run counter in ``<lock_tables>_seq`` and share one base
(:class:`DbLock`): the lock's name, its account's counter and the lock tables.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from polyv_connector.errors import BusyError, StateError
from polyv_connector.state.locks import LockMode, PollingLock, iso_utc, self_description
from polyv_connector.warehouse import dbapi
from polyv_connector.warehouse.identifiers import check_table_name

log = logging.getLogger("polyv_connector")

#: A lease lasts at most this long without a heartbeat, so a dead holder blocks others ≤ 60 s.
MAX_LEASE_S = 60.0
#: Default prefix of the lock tables: ``<prefix>_seq``, ``<prefix>_lease``, ``<prefix>_holder``.
LOCK_TABLES = "polyv_lock"


def lock_name(table: str, app_id: str, slice_: str | None = None) -> str:
    """The name of an account's (or one slice's) lock: ``<table>|<appId>[|<slice>]``."""
    return f"{table}|{app_id}" + ("" if slice_ is None else f"|{slice_}")


def lock_key(table: str, app_id: str, slice_: str | None = None) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` (the same in every process and version)."""
    digest = hashlib.blake2b(b"polyv-connector-lock\0" + lock_name(table, app_id, slice_).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def marker(conn: Any) -> str:
    module = sys.modules.get(dbapi.driver_of(conn))
    return "?" if getattr(module, "paramstyle", "format") == "qmark" else "%s"


_NOW_SQL = {
    "psycopg": "EXTRACT(EPOCH FROM CLOCK_TIMESTAMP())",
    "psycopg2": "EXTRACT(EPOCH FROM CLOCK_TIMESTAMP())",
    "sqlite3": "(julianday('now') - 2440587.5) * 86400.0",
    "pymysql": "UNIX_TIMESTAMP(NOW(6))",
    "MySQLdb": "UNIX_TIMESTAMP(NOW(6))",
}


def _db_now(cur: Any, conn: Any) -> float:
    """The database's clock in epoch seconds: lease expiry is judged by one clock, not each worker's."""
    sql = _NOW_SQL.get(dbapi.driver_of(conn))
    if sql is None:
        return time.time()  # an unknown database: fall back to this worker's clock
    cur.execute(f"SELECT {sql}")
    return float(cur.fetchone()[0])


def close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def rollback(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.rollback()


class LockTables:
    """The lock tables under one prefix, and the SQL shared by the lease and advisory locks."""

    def __init__(self, prefix: str) -> None:
        self.seq = check_table_name(f"{prefix}_seq", "lock_tables")
        self.lease = check_table_name(f"{prefix}_lease", "lock_tables")
        self.holder = check_table_name(f"{prefix}_holder", "lock_tables")

    def ensure(self, conn: Any, *, holder_table: bool = False, lease_table: bool = False) -> None:
        """Create the tables that are missing (idempotent; concurrent creators are tolerated)."""
        ddl = [
            f"CREATE TABLE IF NOT EXISTS {self.seq} (name VARCHAR(255) NOT NULL PRIMARY KEY, seq BIGINT NOT NULL)",
        ]
        if lease_table:
            ddl.append(
                f"CREATE TABLE IF NOT EXISTS {self.lease} (name VARCHAR(255) NOT NULL, holder_id VARCHAR(64) NOT NULL, "
                "run_id VARCHAR(255), host VARCHAR(255), pid BIGINT, since DOUBLE PRECISION, "
                "expires_at DOUBLE PRECISION NOT NULL, mode VARCHAR(16) NOT NULL, seq BIGINT, "
                "PRIMARY KEY (name, holder_id))"
            )
        if holder_table:
            ddl.append(
                f"CREATE TABLE IF NOT EXISTS {self.holder} (lock_key BIGINT NOT NULL, backend_pid BIGINT NOT NULL, "
                "name VARCHAR(255), run_id VARCHAR(255), host VARCHAR(255), pid BIGINT, since DOUBLE PRECISION, "
                "mode VARCHAR(16), seq BIGINT, PRIMARY KEY (lock_key, backend_pid))"
            )
        for sql in ddl:
            for attempt in range(3):
                cur = conn.cursor()
                try:
                    cur.execute(sql)
                    conn.commit()
                    break
                except Exception:
                    # Two first runs creating the same table at once: PostgreSQL may refuse the
                    # loser (a catalog unique violation) although the table now exists.
                    rollback(conn)
                    if attempt == 2:
                        raise
                    time.sleep(0.05)
                finally:
                    with contextlib.suppress(Exception):
                        cur.close()

    def bump_seq(self, cur: Any, m: str, name: str, increment: int) -> int:
        """Add ``increment`` to the counter ``name`` in the caller's transaction; return its value.

        The UPDATE also serialises lock operations on the account: the second run's UPDATE
        waits for the first run's transaction (PostgreSQL, MySQL) or database lock (SQLite).
        """
        cur.execute(f"UPDATE {self.seq} SET seq = seq + {int(increment)} WHERE name = {m}", (name,))
        if cur.rowcount == 0 and not self._counted(cur, m, name):
            cur.execute(f"INSERT INTO {self.seq} (name, seq) VALUES ({m}, {int(increment)})", (name,))
        cur.execute(f"SELECT seq FROM {self.seq} WHERE name = {m}", (name,))
        return int(cur.fetchone()[0])

    def _counted(self, cur: Any, m: str, name: str) -> bool:
        """Whether the counter ``name`` exists: MySQL's row count is the rows *changed*, so an
        increment of 0 (a slice's lock) counts none even when the row is there."""
        cur.execute(f"SELECT 1 FROM {self.seq} WHERE name = {m}", (name,))
        return cur.fetchone() is not None

    def last_seq(self, conn: Any, name: str) -> int:
        cur = conn.cursor()
        try:
            cur.execute(f"SELECT seq FROM {self.seq} WHERE name = {marker(conn)}", (name,))
            row = cur.fetchone()
            return int(row[0]) if row else 0
        finally:
            with contextlib.suppress(Exception):
                cur.close()


def _begin_write(cur: Any, conn: Any) -> None:
    # SQLite: take the database's write lock up front. A deferred transaction that reads first
    # and writes second deadlocks against another such transaction (SQLITE_BUSY at once).
    if dbapi.driver_of(conn) == "sqlite3" and not conn.in_transaction:
        cur.execute("BEGIN IMMEDIATE")


def _contended(attempt: Callable[[], bool], what: str) -> bool:
    """Run one acquisition attempt; a database error from a concurrent attempt is retried briefly.

    Only "the lock is held" may make a run give up: two runs racing for a free lock both
    retry for up to a second rather than one reporting a holder that does not exist.
    """
    deadline = time.monotonic() + 1.0
    while True:
        try:
            return attempt()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise StateError(f"cannot take {what}: {type(exc).__name__}: {exc}") from exc
            time.sleep(0.05)


class DbLock(PollingLock):
    """What the advisory lock and the lease share: the lock's name, its account's counter, the lock tables.

    ``connect`` is a zero-argument factory of DB-API connections. ``take_seq``: the account's
    lock hands out the run sequence number; a slice's lock does not.
    """

    #: The lock table this kind of lock needs besides the counter: ``holder`` or ``lease``.
    _table_kind: ClassVar[str] = ""

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
        take_seq: bool = True,
    ) -> None:
        super().__init__(run_id, mode)
        self._connect = connect
        self.name = lock_name(table, app_id, slice_)
        self.seq_name = lock_name(table, app_id)
        self.tables = LockTables(lock_tables)
        self.take_seq = take_seq
        self._tables_ready = False

    def _ready(self, conn: Any) -> None:
        if not self._tables_ready:
            self.tables.ensure(conn, holder_table=self._table_kind == "holder", lease_table=self._table_kind == "lease")
            self._tables_ready = True


# ---- PostgreSQL: advisory locks --------------------------------------------------------------
class PgAdvisoryLock(DbLock):
    """A PostgreSQL session advisory lock on (table, appId[, slice]), held on its own connection.

    ``connect`` is a zero-argument factory of DB-API connections (psycopg 3 or psycopg2). The
    lock lives as long as its connection: PostgreSQL releases it when the session ends (the
    process died, the network broke). Who holds it is read from ``pg_locks`` joined with the
    holder descriptions in ``<lock_tables>_holder`` (rows of ended sessions are ignored), and
    from ``pg_stat_activity`` for a session that has not described itself yet.
    """

    _table_kind = "holder"

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
        take_seq: bool = True,
    ) -> None:
        super().__init__(
            connect, table, app_id, run_id, slice_=slice_, mode=mode, lock_tables=lock_tables, take_seq=take_seq
        )
        self.key = lock_key(table, app_id, slice_)
        self.what = f"the lock on {self.name} (PostgreSQL advisory lock {self.key})"
        self._conn: Any = None
        self._backend_pid: int | None = None

    def _lock_conn(self) -> Any:
        if self._conn is None:
            conn = self._connect()
            conn.autocommit = True  # never idle in a transaction for the run's life
            cur = conn.cursor()
            cur.execute("SELECT set_config('application_name', %s, false)", (f"polyv-connector {self.run_id}"[:63],))
            cur.execute("SELECT pg_backend_pid()")
            self._backend_pid = int(cur.fetchone()[0])
            self._conn = conn
        return self._conn

    def _try_acquire(self) -> bool:
        try:
            conn = self._lock_conn()
            cur = conn.cursor()
            fn = "pg_try_advisory_lock" if self.mode == "exclusive" else "pg_try_advisory_lock_shared"
            cur.execute(f"SELECT {fn}(%s)", (self.key,))
            if not cur.fetchone()[0]:
                return False
        except Exception:
            self._drop_conn()
            raise
        try:
            self._describe_self()
        except BaseException:
            self._release()
            raise
        return True

    def _describe_self(self) -> None:
        conn = self._connect()
        try:
            self._ready(conn)

            def attempt() -> bool:
                cur = conn.cursor()
                try:
                    self._seq = self.tables.bump_seq(cur, "%s", self.seq_name, 1) if self.take_seq else None
                    me = self_description(self.run_id, self.mode, self._seq, self.name)
                    # A row of the same backend pid is an ended session's (pids are reused).
                    cur.execute(
                        f"DELETE FROM {self.tables.holder} WHERE lock_key = %s AND backend_pid = %s",
                        (self.key, self._backend_pid),
                    )
                    cur.execute(
                        f"INSERT INTO {self.tables.holder} (lock_key, backend_pid, name, run_id, host, pid, since, "
                        "mode, seq) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (
                            self.key,
                            self._backend_pid,
                            self.name,
                            self.run_id,
                            me["host"],
                            me["pid"],
                            time.time(),
                            self.mode,
                            self._seq,
                        ),
                    )
                    conn.commit()
                    return True
                except Exception:
                    rollback(conn)
                    raise

            _contended(attempt, self.what)
        finally:
            close(conn)

    def _give_up(self) -> None:
        self._drop_conn()

    def _drop_conn(self) -> None:
        if self._conn is not None:
            close(self._conn)
        self._conn = None

    def _release(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            cur = conn.cursor()
            fn = "pg_advisory_unlock" if self.mode == "exclusive" else "pg_advisory_unlock_shared"
            cur.execute(f"SELECT {fn}(%s)", (self.key,))
            cur.execute(
                f"DELETE FROM {self.tables.holder} WHERE lock_key = %s AND backend_pid = %s",
                (self.key, self._backend_pid),
            )
        except Exception as exc:
            # Closing the session below releases the lock anyway.
            log.warning("could not unlock %s cleanly: %s: %s", self.what, type(exc).__name__, exc)
        finally:
            self._drop_conn()

    def holders(self) -> list[dict[str, object]]:
        conn = self._connect()
        try:
            self._ready(conn)
            return pg_advisory_holders(conn, self.key, self.tables)
        finally:
            close(conn)

    def slice_holders(self) -> dict[str, list[dict[str, object]]]:
        """Live holders of every slice lock of this lock's account, by slice name."""
        prefix = self.seq_name + "|"
        conn = self._connect()
        try:
            self._ready(conn)
            cur = conn.cursor()
            try:
                cur.execute(
                    f"SELECT DISTINCT name, lock_key FROM {self.tables.holder} WHERE name LIKE %s", (prefix + "%",)
                )
                rows = cur.fetchall()
                conn.commit()
            finally:
                with contextlib.suppress(Exception):
                    cur.close()
            found: dict[str, list[dict[str, object]]] = {}
            for name, key in rows:
                if str(name).startswith(prefix):
                    live = [h for h in pg_advisory_holders(conn, int(key), self.tables) if h.get("lock") == name]
                    if live:
                        found[str(name).removeprefix(prefix)] = live
            return found
        finally:
            close(conn)


def pg_advisory_holders(conn: Any, key: int, tables: LockTables) -> list[dict[str, object]]:
    """Sessions holding advisory lock ``key`` in this database, described, oldest first."""
    cur = conn.cursor()
    try:
        cur.execute(
            "SELECT l.pid, l.mode, a.application_name, CAST(a.client_addr AS TEXT), "
            "EXTRACT(EPOCH FROM a.backend_start), h.run_id, h.host, h.pid, h.since, h.seq, h.name "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            f"LEFT JOIN {tables.holder} h ON h.lock_key = %s AND h.backend_pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND CAST(l.classid AS BIGINT) = %s AND CAST(l.objid AS BIGINT) = %s",
            (key, (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
        )
        rows = cur.fetchall()
        conn.commit()
    finally:
        with contextlib.suppress(Exception):
            cur.close()
    found: list[dict[str, object]] = []
    for backend, pg_mode, app_name, addr, started, run_id, host, pid, since, seq, name in rows:
        app = str(app_name or "")
        found.append(
            {
                "runId": run_id
                or (app.removeprefix("polyv-connector ") if app.startswith("polyv-connector ") else None),
                "host": host or addr or "local socket",
                "pid": pid,
                "since": iso_utc(float(since if since is not None else started)),
                "mode": "exclusive" if pg_mode == "ExclusiveLock" else "shared",
                "seq": seq,
                "lock": name,
                "backendPid": backend,
                "applicationName": app,
            }
        )
    return sorted(found, key=lambda h: str(h["since"]))


# ---- any DB-API database: leases -------------------------------------------------------------
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
            got = _contended(lambda: self._attempt(conn), self.what)
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
            _begin_write(cur, conn)
            seq = self.tables.bump_seq(cur, m, self.seq_name, 1 if self.take_seq else 0)
            now = _db_now(cur, conn)
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
                now = _db_now(cur, conn)
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
        now = _db_now(cur, conn)
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
