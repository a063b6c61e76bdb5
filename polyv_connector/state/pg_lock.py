"""The table store's lock on PostgreSQL: a session advisory lock on a dedicated connection.

PostgreSQL releases it when the session ends. The base it shares with the lease lock is
:class:`polyv_connector.state.db_locks.DbLock`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from polyv_connector.state.db_locks import LOCK_TABLES, DbLock, LockTables, close, contended, lock_key, rollback
from polyv_connector.state.locks import LockMode, iso_utc, self_description

log = logging.getLogger("polyv_connector")


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

            contended(attempt, self.what)
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
