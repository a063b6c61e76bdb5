"""The table store's database locks: what the two kinds share.

* :class:`DbLock`: the base of :class:`~polyv_connector.state.pg_lock.PgAdvisoryLock` (a
  PostgreSQL session advisory lock) and :class:`~polyv_connector.state.lease_lock.LeaseLock` (a
  lease row with an expiry that a heartbeat renews, for any DB-API database): the lock's name,
  its account's counter and the lock tables.
* :class:`LockTables`: the lock tables; both kinds keep the account's run counter in
  ``<lock_tables>_seq``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, ClassVar

from polyv_connector.errors import StateError
from polyv_connector.state.locks import LockMode, PollingLock
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


def db_now(cur: Any, conn: Any) -> float:
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


def begin_write(cur: Any, conn: Any) -> None:
    # SQLite: take the database's write lock up front. A deferred transaction that reads first
    # and writes second deadlocks against another such transaction (SQLITE_BUSY at once).
    if dbapi.driver_of(conn) == "sqlite3" and not conn.in_transaction:
        cur.execute("BEGIN IMMEDIATE")


def contended(attempt: Callable[[], bool], what: str) -> bool:
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
