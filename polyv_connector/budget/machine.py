"""The machine-wide budget: one SQLite database in a runtime directory, no server to run.

Every process on the machine that opens the same directory shares it. The database holds, per
POLYV API host: the registry of runs, the state of the shared GCRA bucket (one row: the
library's algorithm, stepped inside one ``BEGIN IMMEDIATE`` transaction), and the block.

Why not pyrate-limiter's own ``SQLiteBucket``: it keeps one row per request and takes a file
lock around a count and an insert; measured on this machine with 8 processes it admitted about
500/s in all, below the 1500/s goal. One row of GCRA state in a WAL database admits an order of
magnitude more (see docs/budget.md).
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from pathlib import Path

from pyrate_limiter import Rate
from pyrate_limiter.abstracts.algorithm import ADMITTED, Decision

from polyv_connector.budget.base import ALGORITHM, BudgetStore, RunInfo, take_with
from polyv_connector.errors import ConfigError, DependencyUnavailable

RUNTIME_DIR_ENV = "POLYV_RUNTIME_DIR"
DB_NAME = "request-budget.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    host_key TEXT NOT NULL, run_id TEXT NOT NULL, info TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (host_key, run_id)
);
CREATE TABLE IF NOT EXISTS bucket (host_key TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS block (host_key TEXT PRIMARY KEY, until REAL NOT NULL);
"""


def default_runtime_dir() -> Path:
    """``$POLYV_RUNTIME_DIR``, else ``/tmp/polyv-connector-<uid>`` (the machine-wide default)."""
    configured = os.environ.get(RUNTIME_DIR_ENV)
    if configured:
        return Path(configured)
    return Path("/tmp") / f"polyv-connector-{os.getuid()}"


def prepare_dir(directory: Path, setting: str, *, private: bool) -> None:
    """Create ``directory`` if needed and check it is usable; ConfigError naming ``setting`` if not.

    ``private``: the default directory sits in the world-writable /tmp, so it must be a real
    directory owned by us (another user could otherwise pre-create it and steer or stall us).
    """
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(directory)
    except OSError as exc:
        raise ConfigError(setting, f"cannot create the request-budget directory {directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(setting, f"the request-budget directory {directory} is not a directory")
    if private and info.st_uid != os.getuid():
        raise ConfigError(
            setting,
            f"the request-budget directory {directory} belongs to another user; set ${RUNTIME_DIR_ENV} to a "
            "directory of yours",
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(setting, f"the request-budget directory {directory} is not writable")


class MachineStore(BudgetStore):
    """A SQLite database shared by every process of this machine (see the module docstring)."""

    def __init__(self, db_path: Path, host_key: str, setting: str) -> None:
        self.place = f"sqlite://{db_path}"
        self._path = db_path
        self._host_key = host_key
        self._setting = setting
        # One connection per process, serialised by a lock: the transactions are tiny, and
        # BEGIN IMMEDIATE serialises the processes anyway.
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(str(db_path), timeout=10.0, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: no fsync per commit; a budget lost in a power cut costs nothing.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(setting, f"cannot use the request-budget database {db_path}: {exc}") from None

    def _tx(self) -> sqlite3.Connection:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            # Busy for the whole 10-s timeout, or the disk went away: retrying later may help.
            raise DependencyUnavailable(self._setting, f"the request-budget database {self._path}: {exc}") from None
        return self._conn

    def take(self, rates: list[Rate], now_ms: int) -> tuple[float | None, Decision]:
        with self._lock:
            conn = self._tx()
            try:
                row = conn.execute("SELECT until FROM block WHERE host_key = ?", (self._host_key,)).fetchone()
                if row is not None and row[0] * 1000 > now_ms:
                    conn.execute("ROLLBACK")
                    return float(row[0]), ADMITTED
                row = conn.execute("SELECT state FROM bucket WHERE host_key = ?", (self._host_key,)).fetchone()
                state = None if row is None else tuple(json.loads(row[0]))
                new_state, decision = take_with(ALGORITHM, rates, state, now_ms)
                if decision.allowed:
                    conn.execute(
                        "INSERT INTO bucket (host_key, state) VALUES (?, ?) "
                        "ON CONFLICT (host_key) DO UPDATE SET state = excluded.state",
                        (self._host_key, json.dumps(list(new_state))),
                    )
                conn.execute("COMMIT")
                return None, decision
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def heartbeat(self, run: RunInfo, ttl_s: float) -> list[RunInfo]:
        with self._lock:
            conn = self._tx()
            try:
                conn.execute(
                    "INSERT INTO runs (host_key, run_id, info, expires) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (host_key, run_id) DO UPDATE SET info = excluded.info, expires = excluded.expires",
                    (self._host_key, run.run_id, json.dumps(run.to_json()), run.last_seen + ttl_s),
                )
                conn.execute("DELETE FROM runs WHERE expires < ?", (run.last_seen,))
                rows = conn.execute("SELECT info FROM runs WHERE host_key = ?", (self._host_key,)).fetchall()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return [RunInfo.from_json(json.loads(r[0])) for r in rows]

    def runs(self, now: float) -> list[RunInfo]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT info FROM runs WHERE host_key = ? AND expires >= ?", (self._host_key, now)
            ).fetchall()
        return [RunInfo.from_json(json.loads(r[0])) for r in rows]

    def unregister(self, run_id: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM runs WHERE host_key = ? AND run_id = ?", (self._host_key, run_id))

    def set_block(self, until: float, now: float) -> float:
        with self._lock:
            conn = self._tx()
            try:
                conn.execute(
                    "INSERT INTO block (host_key, until) VALUES (?, ?) "
                    "ON CONFLICT (host_key) DO UPDATE SET until = max(until, excluded.until)",
                    (self._host_key, until),
                )
                row = conn.execute("SELECT until FROM block WHERE host_key = ?", (self._host_key,)).fetchone()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return float(row[0])

    def get_block(self, now: float) -> float | None:
        with self._lock:
            row = self._conn.execute("SELECT until FROM block WHERE host_key = ?", (self._host_key,)).fetchone()
        return float(row[0]) if row is not None and row[0] > now else None

    def clear_block(self) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM block WHERE host_key = ?", (self._host_key,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
