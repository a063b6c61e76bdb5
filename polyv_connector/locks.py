"""One run per sync state at a time: locks, their holders, and the run sequence number.

Two runs of one account that share a sync state must not interleave: each plans against
the state it loaded, so the later one would call items ``unchanged`` that the earlier one
has just changed in POLYV (a silent divergence), and both would compact the same folder at
once. A run therefore takes the state's lock *before* it loads the state and keeps it
until it has recorded and compacted everything.

Every lock here has the same small protocol (:class:`Lock`): ``acquire(timeout_s)`` tries
once (``timeout_s=0``) or polls until the timeout and then raises
:class:`~polyv_connector.errors.BusyError` naming the holder (runId, host, pid, since);
``release()``; a context manager; ``holder()``/``holders()`` to show who holds it; and a
``mode``: ``exclusive`` (a whole-account run) or ``shared`` (partition runs hold the
account's lock shared and their own slice exclusively).

* :class:`FileLock`: ``flock`` on a file in the state folder; the OS releases it when the
  process dies, so ``kill -9`` never leaves it locked.
* :class:`PgAdvisoryLock`: a PostgreSQL session advisory lock on a dedicated connection;
  PostgreSQL releases it when the session ends.
* :class:`LeaseLock`: a lease row with an expiry of at most 60 s that a heartbeat thread
  renews, for any DB-API database; an expired lease is taken over.

The store that grants a lock also hands the run a **run sequence number**, increasing by
one per lock taken on the account: records of the state are ordered by it, never by a
worker's clock (two hosts' clocks disagree; a lock's order is the order of the runs).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol

from polyv_connector.errors import BusyError, StateError
from polyv_connector.warehouse import dbapi
from polyv_connector.warehouse.identifiers import check_table_name

log = logging.getLogger("polyv_connector")

LockMode = Literal["exclusive", "shared"]
MODES: tuple[LockMode, ...] = ("exclusive", "shared")
#: A lease lasts at most this long without a heartbeat, so a dead holder blocks others ≤ 60 s.
MAX_LEASE_S = 60.0
#: Default prefix of the lock tables: ``<prefix>_seq``, ``<prefix>_lease``, ``<prefix>_holder``.
LOCK_TABLES = "polyv_lock"

SEQ_FILE = "runseq"
_SEQ_LOCK_FILE = "runseq.lock"


class Lock(Protocol):
    """What every lock offers. ``seq`` is the run sequence number handed out by ``acquire``."""

    mode: LockMode
    run_id: str

    @property
    def seq(self) -> int | None: ...

    @property
    def held(self) -> bool: ...

    def acquire(self, timeout_s: float = 0.0) -> None: ...

    def release(self) -> None: ...

    def holder(self) -> dict[str, object] | None: ...

    def holders(self) -> list[dict[str, object]]: ...

    def __enter__(self) -> Lock: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


# ---- holders and messages --------------------------------------------------------------------
def iso_utc(epoch_s: float) -> str:
    """``2026-11-30T15:10:13Z``: when a holder took the lock, for people to read."""
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _me(run_id: str, mode: LockMode, seq: int | None, lock: str) -> dict[str, object]:
    return {
        "runId": run_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": iso_utc(time.time()),
        "mode": mode,
        "seq": seq,
        "lock": lock,
    }


def describe(holder: dict[str, object]) -> str:
    """``run r-1 (pid 42 on host-a, exclusive since 2026-...Z)``."""
    return (
        f"run {holder.get('runId') or '(unknown)'} (pid {holder.get('pid') or '?'} on {holder.get('host') or '?'}, "
        f"{holder.get('mode') or '?'} since {holder.get('since') or '?'})"
    )


def busy_error(what: str, holders: list[dict[str, object]], timeout_s: float) -> BusyError:
    """The :class:`BusyError` a run gets when ``what`` stays held for ``timeout_s``."""
    waited = f" after waiting {timeout_s:g} s" if timeout_s > 0 else ""
    if not holders:
        # The holder got the lock a moment ago and has not written its description yet.
        who = "another run (it is starting; its description is not written yet)"
    elif len(holders) == 1:
        who = describe(holders[0])
    else:
        who = f"{len(holders)} runs: " + "; ".join(describe(h) for h in holders)
    holder: dict[str, object] = dict(holders[0]) if holders else {}
    if len(holders) > 1:
        holder["holders"] = holders
    return BusyError(f"{what} is held by {who}{waited}; nothing was sent: retry when that run has ended", holder=holder)


def _check_mode(mode: str) -> LockMode:
    if mode not in MODES:
        raise ValueError(f"lock mode must be 'exclusive' or 'shared', not {mode!r}")
    return mode


class _PollingLock:
    """``acquire`` as a loop over ``_try_acquire``: try once, then poll until the timeout."""

    what = "the lock"

    def __init__(self, run_id: str, mode: LockMode) -> None:
        self.run_id = run_id
        self.mode: LockMode = _check_mode(mode)
        self._seq: int | None = None
        self._held = False

    @property
    def seq(self) -> int | None:
        """The run sequence number this acquisition was given (None before, or if not asked for)."""
        return self._seq

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self, timeout_s: float = 0.0) -> None:
        """Take the lock, waiting up to ``timeout_s`` (0: try once); :class:`BusyError` if still held."""
        if self._held:
            raise RuntimeError(f"{self.what} is already held by this run")
        deadline = time.monotonic() + max(0.0, timeout_s)
        delay = 0.05
        while True:
            if self._try_acquire():
                self._held = True
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 0.5)
        self._give_up()
        raise busy_error(self.what, self.holders(), timeout_s)

    def release(self) -> None:
        """Give the lock back (a no-op if not held)."""
        if not self._held:
            return
        self._held = False
        self._release()

    def holder(self) -> dict[str, object] | None:
        """The first (oldest) holder's description, or None when free."""
        holders = self.holders()
        return holders[0] if holders else None

    def holders(self) -> list[dict[str, object]]:
        raise NotImplementedError

    def _try_acquire(self) -> bool:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _give_up(self) -> None:
        """Free what polling kept (a connection) when the lock stays held."""

    def __enter__(self) -> _PollingLock:
        if not self._held:
            self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


# ---- a folder: flock ---------------------------------------------------------------------------
def read_file_seq(directory: str | os.PathLike[str]) -> int:
    """The last run sequence number handed out in ``directory`` (0 if none yet)."""
    path = Path(directory) / SEQ_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return 0
    try:
        return int(text)
    except ValueError as exc:
        raise StateError(f"the run counter {path} is unreadable ({text[:40]!r}); delete it to start over") from exc


def next_file_seq(directory: str | os.PathLike[str], floor: Callable[[], int] | None = None) -> int:
    """Hand out the next run sequence number of ``directory`` (durably: fsync'ed before returning).

    ``floor`` returns a number the counter must exceed (the highest sequence number found in
    the state's logs), so a deleted or restored counter file cannot reorder runs.
    """
    directory = Path(directory)
    # The counter has its own short exclusive flock: shared holders of the state's lock take
    # numbers concurrently, and each must get a different one.
    fd = os.open(directory / _SEQ_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current = read_file_seq(directory)
        if floor is not None:
            current = max(current, floor())
        seq = current + 1
        _durable_replace(directory / SEQ_FILE, f"{seq}\n".encode())
        return seq
    finally:
        os.close(fd)  # releases the flock


def _durable_replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileLock(_PollingLock):
    """An OS lock (``flock``) on ``<directory>/<name>``, released by the OS when the process dies.

    Each holder describes itself in ``<name>.holders/<host>-<pid>-<token>.json``, a file it
    keeps ``flock``-ed too: a description whose file is not locked belongs to a dead process
    and is removed by the next reader, so a killed holder is never shown as holding.
    Not for NFS (``flock`` is local there).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        run_id: str,
        *,
        mode: LockMode = "exclusive",
        name: str = "lock",
        take_seq: bool = True,
        seq_floor: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(run_id, mode)
        self.directory = Path(directory)
        self.name = name
        self.path = self.directory / name
        self.holders_dir = self.directory / f"{name}.holders"
        self.what = f"the lock {self.path}"
        self.take_seq = take_seq
        self._seq_floor = seq_floor
        self._fd: int | None = None
        self._holder_fd: int | None = None
        self._holder_path: Path | None = None

    def _try_acquire(self) -> bool:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            op = fcntl.LOCK_EX if self.mode == "exclusive" else fcntl.LOCK_SH
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    os.close(fd)
                    return False
                raise
            # Someone removed the folder (or the lock file) while we opened it: the lock we hold
            # is on an orphan inode that others would not see. Try again on the current file.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                return False
        except BaseException:
            os.close(fd)
            raise
        # From here the descriptor belongs to self: _close_all() closes it (exactly once).
        self._fd = fd
        try:
            self._seq = next_file_seq(self.directory, self._seq_floor) if self.take_seq else None
            self._write_holder()
        except BaseException:
            self._close_all()
            raise
        return True

    def _write_holder(self) -> None:
        self.holders_dir.mkdir(exist_ok=True)
        me = _me(self.run_id, self.mode, self._seq, str(self.path))
        final = self.holders_dir / f"{_safe(str(me['host']))}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        # Written under a dot-name and renamed: a reader never sees a description whose file is
        # not yet locked (it would take it for a dead holder's and remove it).
        tmp = final.with_name("." + final.name + ".tmp")
        hfd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._holder_fd = hfd
        fcntl.flock(hfd, fcntl.LOCK_EX)
        os.write(hfd, json.dumps(me).encode())
        os.fsync(hfd)
        os.replace(tmp, final)
        self._holder_path = final

    def _close_all(self) -> None:
        if self._holder_path is not None:
            with contextlib.suppress(OSError):
                self._holder_path.unlink()
            self._holder_path = None
        if self._holder_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._holder_fd)
            self._holder_fd = None
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def _release(self) -> None:
        self._close_all()

    def __del__(self) -> None:
        # A lock object dropped without release() (an exception path) must not keep the
        # process's descriptors, hence the lock, until the process ends.
        self._close_all()

    def holders(self) -> list[dict[str, object]]:
        """Live holders, oldest first; removes the descriptions dead processes left behind."""
        try:
            entries = sorted(self.holders_dir.iterdir())
        except FileNotFoundError:
            return []
        found: list[dict[str, object]] = []
        for path in entries:
            hidden = path.name.startswith(".")
            if hidden:
                # A description being written, or one a writer died writing: only the latter,
                # old enough not to be in progress, is cleaned up.
                with contextlib.suppress(OSError):
                    if time.time() - path.stat().st_mtime > 60 and not _is_flocked(path):
                        path.unlink()
                continue
            if path.suffix != ".json":
                continue
            try:
                if not _is_flocked(path):
                    path.unlink(missing_ok=True)  # its process is gone, and the OS released its lock
                    continue
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return sorted(found, key=lambda h: str(h.get("since", "")))


def file_slice_holders(directory: str | os.PathLike[str], prefix: str = "lock-") -> dict[str, list[dict[str, object]]]:
    """Live holders of every slice lock (``<prefix>slice-<k>-of-<N>``) in ``directory``, by slice name."""
    found: dict[str, list[dict[str, object]]] = {}
    for holders_dir in sorted(Path(directory).glob(f"{prefix}slice-*-of-*.holders")):
        name = holders_dir.name.removesuffix(".holders")
        holders = FileLock(directory, "", name=name).holders()
        if holders:
            found[name.removeprefix(prefix)] = holders
    return found


def _is_flocked(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                return True
            raise
        return False
    finally:
        os.close(fd)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:64] or "_"


# ---- databases: shared pieces ----------------------------------------------------------------
def lock_name(table: str, app_id: str, slice_: str | None = None) -> str:
    """The name of an account's (or one slice's) lock: ``<table>|<appId>[|<slice>]``."""
    return f"{table}|{app_id}" + ("" if slice_ is None else f"|{slice_}")


def lock_key(table: str, app_id: str, slice_: str | None = None) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` (the same in every process and version)."""
    digest = hashlib.blake2b(b"polyv-connector-lock\0" + lock_name(table, app_id, slice_).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _marker(conn: Any) -> str:
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


def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def _rollback(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.rollback()


class _Tables:
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
                    _rollback(conn)
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
        if cur.rowcount == 0:
            cur.execute(f"INSERT INTO {self.seq} (name, seq) VALUES ({m}, {int(increment)})", (name,))
        cur.execute(f"SELECT seq FROM {self.seq} WHERE name = {m}", (name,))
        return int(cur.fetchone()[0])

    def last_seq(self, conn: Any, name: str) -> int:
        cur = conn.cursor()
        try:
            cur.execute(f"SELECT seq FROM {self.seq} WHERE name = {_marker(conn)}", (name,))
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


# ---- PostgreSQL: advisory locks --------------------------------------------------------------
class PgAdvisoryLock(_PollingLock):
    """A PostgreSQL session advisory lock on (table, appId[, slice]), held on its own connection.

    ``connect`` is a zero-argument factory of DB-API connections (psycopg 3 or psycopg2). The
    lock lives as long as its connection: PostgreSQL releases it when the session ends (the
    process died, the network broke). Who holds it is read from ``pg_locks`` joined with the
    holder descriptions in ``<lock_tables>_holder`` (rows of ended sessions are ignored), and
    from ``pg_stat_activity`` for a session that has not described itself yet.
    """

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
        self.key = lock_key(table, app_id, slice_)
        self.tables = _Tables(lock_tables)
        self.take_seq = take_seq
        self.what = f"the lock on {self.name} (PostgreSQL advisory lock {self.key})"
        self._conn: Any = None
        self._backend_pid: int | None = None
        self._tables_ready = False

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

    def _ready(self, conn: Any) -> None:
        if not self._tables_ready:
            self.tables.ensure(conn, holder_table=True)
            self._tables_ready = True

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
                    me = _me(self.run_id, self.mode, self._seq, self.name)
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
                    _rollback(conn)
                    raise

            _contended(attempt, self.what)
        finally:
            _close(conn)

    def _give_up(self) -> None:
        self._drop_conn()

    def _drop_conn(self) -> None:
        if self._conn is not None:
            _close(self._conn)
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
            _close(conn)

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
            _close(conn)


def pg_advisory_holders(conn: Any, key: int, tables: _Tables) -> list[dict[str, object]]:
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
class LeaseLock(_PollingLock):
    """A lease row in ``<lock_tables>_lease`` that a heartbeat thread renews; for any DB-API database.

    A lease expires ``expiry_s`` (≤ 60 s) after its last renewal, judged by the database's
    clock; an expired lease is taken over by the next run. The heartbeat renews it every
    ``heartbeat_s`` (default ``expiry_s / 3``). A holder whose lease was taken over (it
    stalled longer than the expiry) notices at its next heartbeat: :attr:`lost` becomes
    true and :meth:`check` raises, so it stops before writing to a state it no longer owns.
    """

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
        super().__init__(run_id, mode)
        if not 0 < expiry_s <= MAX_LEASE_S:
            raise ValueError(f"a lease expires after at most {MAX_LEASE_S:g} s, not {expiry_s!r}")
        self._connect = connect
        self.name = lock_name(table, app_id, slice_)
        self.seq_name = lock_name(table, app_id)
        self.tables = _Tables(lock_tables)
        self.expiry_s = expiry_s
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else expiry_s / 3
        self.take_seq = take_seq
        self.what = f"the lease on {self.name}"
        self.holder_id = uuid.uuid4().hex
        self._tables_ready = False
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
            if not self._tables_ready:
                self.tables.ensure(conn, lease_table=True)
                self._tables_ready = True
            got = _contended(lambda: self._attempt(conn), self.what)
        finally:
            _close(conn)
        if got:
            self._lost = False
            self._stop.clear()
            self._thread = threading.Thread(target=self._heartbeat, name=f"lease-{self.run_id}", daemon=True)
            self._thread.start()
        return got

    def _attempt(self, conn: Any) -> bool:
        m = _marker(conn)
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
            _rollback(conn)
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
                m = _marker(conn)
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
                    _rollback(conn)
                    _close(conn)
                conn = None
                if time.monotonic() - renewed > self.expiry_s:
                    self._lost = True  # it may have expired and been taken over meanwhile
                    break
        if conn is not None:
            _close(conn)

    def _release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        conn = self._connect()
        try:
            m = _marker(conn)
            cur = conn.cursor()
            cur.execute(
                f"DELETE FROM {self.tables.lease} WHERE name = {m} AND holder_id = {m}", (self.name, self.holder_id)
            )
            conn.commit()
        except Exception as exc:
            _rollback(conn)
            # The lease then expires by itself within expiry_s.
            log.warning(
                "could not remove %s: %s (it expires within %g s)", self.what, type(exc).__name__, self.expiry_s
            )
        finally:
            _close(conn)

    def holders(self) -> list[dict[str, object]]:
        conn = self._connect()
        try:
            if not self._tables_ready:
                self.tables.ensure(conn, lease_table=True)
                self._tables_ready = True
            return lease_holders(conn, self.name, self.tables)
        finally:
            _close(conn)

    def slice_holders(self) -> dict[str, list[dict[str, object]]]:
        """Live holders of every slice lease of this lease's account, by slice name."""
        prefix = self.seq_name + "|"
        conn = self._connect()
        try:
            if not self._tables_ready:
                self.tables.ensure(conn, lease_table=True)
                self._tables_ready = True
            cur = conn.cursor()
            try:
                cur.execute(
                    f"SELECT DISTINCT name FROM {self.tables.lease} WHERE name LIKE {_marker(conn)}", (prefix + "%",)
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
            _close(conn)


def lease_holders(conn: Any, name: str, tables: _Tables, *, expired: bool = False) -> list[dict[str, object]]:
    """Leases on ``name``, oldest first: the live ones, or (``expired=True``) all with an ``expired`` flag."""
    m = _marker(conn)
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


# ---- status and unlock for the lock tables ---------------------------------------------------
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
    tables = _Tables(lock_tables)
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
        _close(conn)
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
    tables = _Tables(lock_tables)
    name = lock_name(table, app_id, slice_)
    conn = connect()
    try:
        tables.ensure(conn, lease_table=kind == "lease", holder_table=kind == "advisory")
        m = _marker(conn)
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
        _close(conn)
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


# ---- partition runs ----------------------------------------------------------------------------
def refuse_other_partitionings(partitions: int, slice_holders: dict[str, list[dict[str, object]]]) -> None:
    """Raise :class:`BusyError` if a live slice lock of the account belongs to another number of partitions.

    Called by a partition run *after* it holds its own slice lock: of two runs with different
    N that start together, at least one sees the other (both may, then both stop), so slices
    that overlap (k of 2 and j of 4 share items) are never planned and sent at once.
    """
    from polyv_connector.partitioning import parse_slice_name

    for name, holders in sorted(slice_holders.items()):
        other = parse_slice_name(name)
        if other is None or other.partitions == partitions or not holders:
            continue
        raise BusyError(
            f"runs with {other.partitions} partitions hold this account now ({describe(holders[0])} holds "
            f"{other}), and this run has {partitions} partitions: slices of different partition counts "
            "overlap, so they never run at once; nothing was sent: retry when those runs have ended, "
            f"or run with partitions={other.partitions}",
            holder=dict(holders[0]),
        )


def acquire_slice(
    account: _PollingLock,
    slice_lock: _PollingLock,
    timeout_s: float,
    partitions: int,
    slice_holders: Callable[[], dict[str, list[dict[str, object]]]],
) -> None:
    """A partition run's locks: the account's (``shared``), then its slice's (``exclusive``),
    within ``timeout_s`` in all; then :func:`refuse_other_partitionings`. On any failure
    nothing stays held."""
    if account.mode != "shared" or slice_lock.mode != "exclusive":
        raise ValueError("a partition run holds the account's lock shared and its slice's exclusively")
    started = time.monotonic()
    account.acquire(timeout_s)
    try:
        slice_lock.acquire(max(0.0, timeout_s - (time.monotonic() - started)))
        try:
            refuse_other_partitionings(partitions, slice_holders())
        except BaseException:
            slice_lock.release()
            raise
    except BaseException:
        account.release()
        raise
