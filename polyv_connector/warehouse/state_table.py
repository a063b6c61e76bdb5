"""The sync state in a warehouse table, next to the report (a :class:`~polyv_connector.state.StateStore`).

One row per record: ``appId``, ``key`` and ``fp`` (the engine's 64-bit key hash and value
fingerprint, stored as signed BIGINT), ``syncedAt`` (epoch seconds), and, for confirmed
items, ``viewerId``, ``customFieldId`` and ``valueMd5`` (MD5 of the value's UTF-8 text, so
the warehouse can compute the diff itself: see :meth:`SqlStateTable.unchanged_filter`).
``fp = 0`` marks a batch sent but not confirmed. The last record of a key wins; ``finish()``
deletes the superseded ones.

Each confirmed batch is committed before the next is recorded, so a task killed at any
point loses nothing: the retry resends at most the batches that were in flight. The table's
schema is versioned: one made by an older release gains the newer columns when opened (see
:mod:`polyv_connector.warehouse.schema`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from typing import Any

import numpy as np
import pyarrow as pa

from polyv_connector.errors import ConfigError, StateError
from polyv_connector.locks import LeaseLock, LockMode, PgAdvisoryLock, acquire_slice
from polyv_connector.model import FIELD_ID, VALUE, VIEWER_ID
from polyv_connector.partitioning import WHOLE, Slice
from polyv_connector.warehouse import dbapi
from polyv_connector.warehouse.identifiers import check_table_name, quote_identifier
from polyv_connector.warehouse.schema import Column, TableSchema, ensure_schema, existing_columns

log = logging.getLogger("polyv_connector")

# The state table's columns by schema version (see polyv_connector.warehouse.schema); a column's
# kind is its SQL type, the same on every database the state table supports.
SCHEMA_VERSIONS: list[tuple[int, list[Column]]] = [
    (
        1,
        [
            Column("appId", "TEXT", not_null=True),
            Column("key", "BIGINT", not_null=True),
            Column("fp", "BIGINT", not_null=True),
            Column("syncedAt", "DOUBLE PRECISION", not_null=True),
            Column("viewerId", "TEXT"),
            Column("customFieldId", "TEXT"),
            Column("valueMd5", "TEXT"),
            Column("runId", "TEXT"),
        ],
    ),
    # The run sequence number the lock handed out: records are ordered by it, never by a
    # worker's clock (records of version 1 have none and count as older than any run).
    (2, [Column("runSeq", "BIGINT")]),
]
SCHEMA = TableSchema("state", SCHEMA_VERSIONS)
COLUMNS = tuple(c.name for c in SCHEMA.columns())
_FETCH_ROWS = 100_000


_SAFE_APP_ID = re.compile(r"^[A-Za-z0-9._:@-]+$")


def _column_type(column: Column) -> str:
    return column.kind


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class SqlStateTable:
    """Confirmed fingerprints of one appId in ``table`` (created if absent).

    :param connection: a ``DbApiHook`` (anything with ``get_conn()``) or a connection factory.
    :param table: ``[schema.]table``, as the database expects it written.
    :param app_id: the POLYV appId whose records this instance reads and writes.
    :param placeholder: the driver's parameter marker (default: the hook's, else ``%s``).
    :param identifier_format: quoting of column names (default: the hook's, else ``"{}"``).
    :param setting: the setting name error messages point at.
    :param create: create the table if absent; ``False`` in a dry run, which creates, compacts
        and writes nothing.
    :param load_for_local_diff: :meth:`load` returns the records, for the engine's diff. ``False``
        when the diff is done in the warehouse (this table is then the source's
        ``skip_unchanged``): only changed rows reach the engine, which needs no copy of the state.
        Confirmations are recorded either way.
    """

    def __init__(
        self,
        connection: Any,
        table: str,
        app_id: str,
        *,
        placeholder: str | None = None,
        identifier_format: str | None = None,
        setting: str = "state_table",
        create: bool = True,
        load_for_local_diff: bool = True,
    ) -> None:
        self.setting = setting
        self.table = check_table_name(table, setting)
        if not _SAFE_APP_ID.match(app_id):
            # The appId is written into the warehouse diff's SQL as a literal.
            raise ConfigError("login", "the appId may only hold letters, digits and . _ - : @ for the state table")
        self.app_id = app_id
        self._target = dbapi.resolve(connection, placeholder=placeholder, identifier_format=identifier_format)
        self.placeholder = self._target.placeholder
        self.identifier_format = self._target.identifier_format
        self._conn: Any = None
        self._run_id: str | None = None
        self._q = {c: quote_identifier(c, self.identifier_format) for c in COLUMNS}
        self.exists = False
        self.create = create  # False in a dry run: nothing is created, compacted or written
        self.load_for_local_diff = load_for_local_diff
        self._compacted = False
        self._is_postgres = False
        self._lock: PgAdvisoryLock | LeaseLock | None = None
        self._slice_lock: PgAdvisoryLock | LeaseLock | None = None  # a partition run's own slice
        self._run_seq: int | None = None
        self.prepare(create)

    # ---- the table ---------------------------------------------------------------------------
    def _open(self) -> Any:
        return self._target.open(ConfigError, self.setting, "state")

    def _ensure_schema(self, conn: Any, migrate: bool) -> None:
        ensure_schema(
            conn,
            self._target,
            self.table,
            SCHEMA,
            _column_type,
            setting=self.setting,
            hint="choose another state_table",
            migrate=migrate,
        )

    def prepare(self, create: bool = True) -> None:
        """Check the table and bring it to the current schema version; create it and its index
        if absent. Without ``create`` (a dry run) nothing is created or migrated, only checked."""
        conn = self._open()
        try:
            self._is_postgres = dbapi.driver_of(conn) in dbapi.PG_DRIVERS
            if existing_columns(conn, self.table) is not None:
                self._ensure_schema(conn, migrate=create)
                self.exists = True
                return
            if not create:
                return
            columns = ", ".join(
                f"{quote_identifier(c.name, self.identifier_format)} {c.kind}" + (" NOT NULL" if c.not_null else "")
                for c in SCHEMA.columns()
            )
            try:
                with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
                    cur.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ({columns})")
            except Exception as exc:
                # Two first runs at once (a backfill's dates): PostgreSQL can refuse the loser's
                # CREATE TABLE IF NOT EXISTS with a catalog unique violation. The table is there.
                if existing_columns(conn, self.table) is None:
                    raise ConfigError(
                        self.setting, f"cannot create the state table {self.table}: {type(exc).__name__}: {exc}"
                    ) from exc
                log.info("the sync state table %s was created by another run meanwhile", self.table)
                self._ensure_schema(conn, migrate=True)
                self.exists = True
                return
            self.exists = True
            log.info("created the sync state table %s", self.table)
            self._ensure_schema(conn, migrate=True)  # records the version of the new table
            # The index is an optimisation, in its own transaction: its failure must not undo
            # the table. Its name is derived from the table's, reduced to word characters.
            index = quote_identifier(re.sub(r"\W", "_", self.table)[:50] + "_key_idx", self.identifier_format)
            try:
                with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
                    cur.execute(
                        f"CREATE INDEX IF NOT EXISTS {index} ON {self.table} "
                        f"({self._q['appId']}, {self._q['key']}, {self._q['syncedAt']})"
                    )
            except Exception as exc:
                log.warning("could not index the sync state table %s: %s", self.table, type(exc).__name__)
        finally:
            dbapi.close_quietly(conn)

    # ---- StateStore --------------------------------------------------------------------------
    def load(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.exists or not self.load_for_local_diff:
            return np.empty(0, np.uint64), np.empty(0, np.uint64)
        conn = self._open()
        keys: list[np.ndarray] = []
        fps: list[np.ndarray] = []
        at: list[np.ndarray] = []
        seqs: list[np.ndarray] = []
        try:
            with dbapi.cursor(conn) as cur:
                cur.execute(
                    f"SELECT {self._q['key']}, {self._q['fp']}, {self._q['syncedAt']}, "
                    f"COALESCE({self._q['runSeq']}, 0) FROM {self.table} "
                    f"WHERE {self._q['appId']} = {self.placeholder}",
                    (self.app_id,),
                )
                while rows := cur.fetchmany(_FETCH_ROWS):
                    k, f, s, r = zip(*rows, strict=True)
                    keys.append(np.array(k, dtype=np.int64).view(np.uint64))
                    fps.append(np.array(f, dtype=np.int64).view(np.uint64))
                    at.append(np.array(s, dtype=np.float64))
                    seqs.append(np.array(r, dtype=np.int64))
        except Exception as exc:
            raise StateError(f"cannot read the sync state table {self.table}: {type(exc).__name__}: {exc}") from exc
        finally:
            dbapi.close_quietly(conn)
        if not keys:
            return np.empty(0, np.uint64), np.empty(0, np.uint64)
        key, fp, when = np.concatenate(keys), np.concatenate(fps), np.concatenate(at)
        # Oldest first, so the last record of a key wins below: by the run that held the lock,
        # then (within one run, one process's clock) by time.
        order = np.lexsort((when, np.concatenate(seqs)))
        key, fp = key[order][::-1], fp[order][::-1]
        uniq, first = np.unique(key, return_index=True)
        return uniq, fp[first]

    def begin(self, run_id: str) -> None:
        if not self.exists:
            self.prepare(create=True)
        self._run_id = run_id
        self._conn = self._open()

    def record(
        self, keys: np.ndarray, fps: np.ndarray, synced_at: float | None = None, items: pa.Table | None = None
    ) -> None:
        if self._conn is None:
            raise RuntimeError("SqlStateTable.begin() was not called")
        if isinstance(self._lock, LeaseLock):
            self._lock.check()  # a run whose lease was taken over must not write another's state
        n = len(keys)
        viewer = field = md5 = pa.nulls(n, pa.string())
        if items is not None:
            viewer, field = items.column(VIEWER_ID), items.column(FIELD_ID)
            md5 = pa.array(
                [hashlib.md5(v.encode("utf-8")).hexdigest() for v in items.column(VALUE).to_pylist()], pa.string()
            )
        table = pa.table(
            {
                "appId": pa.array([self.app_id] * n, pa.string()),
                "key": pa.array(np.asarray(keys, np.uint64).view(np.int64)),
                "fp": pa.array(np.asarray(fps, np.uint64).view(np.int64)),
                "syncedAt": pa.array(np.full(n, synced_at or time.time())),
                "viewerId": viewer,
                "customFieldId": field,
                "valueMd5": md5,
                "runId": pa.array([self._run_id] * n, pa.string()),
                "runSeq": pa.array([self._run_seq] * n, pa.int64()),
            }
        )
        with dbapi.cursor(self._conn) as cur:
            columns_sql = ", ".join(self._q.values())
            if dbapi.driver_of(self._conn) in dbapi.PG_DRIVERS:
                # viewerId is kept for people to read; PostgreSQL text cannot hold NUL.
                dbapi.copy_into(cur, self.table, columns_sql, dbapi.escape_nul(table))
            else:
                dbapi.insert_rows(cur, self.table, columns_sql, self.placeholder, table)
            self._conn.commit()  # durable before the next batch is sent or recorded

    def finish(self) -> None:
        """Delete the records a later one of the same key superseded; release the connection."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            self.compact(conn)
        except Exception as exc:  # an optimisation here: the records stay correct without it
            log.warning("could not compact the sync state table %s: %s", self.table, type(exc).__name__)
        finally:
            dbapi.close_quietly(conn)

    def compact(self, conn: Any = None) -> None:
        """Keep only the last record of each key (raises if the database refuses)."""
        own = conn is None
        conn = conn or self._open()
        q = self._q
        try:
            with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
                cur.execute(
                    f"DELETE FROM {self.table} WHERE {q['appId']} = {self.placeholder} AND EXISTS ("
                    f"SELECT 1 FROM {self.table} newer WHERE newer.{q['appId']} = {self.table}.{q['appId']} "
                    f"AND newer.{q['key']} = {self.table}.{q['key']} "
                    f"AND {self._newer('newer', self.table)})",
                    (self.app_id,),
                )
        finally:
            if own:
                dbapi.close_quietly(conn)

    def reset(self) -> None:
        if not self.exists:
            return
        conn = self._open()
        try:
            with dbapi.cursor(conn) as cur:
                cur.execute(f"DELETE FROM {self.table} WHERE {self._q['appId']} = {self.placeholder}", (self.app_id,))
            conn.commit()
        finally:
            dbapi.close_quietly(conn)

    def _newer(self, a: str, b: str) -> str:
        """SQL: the record aliased ``a`` supersedes ``b`` (a later run, or later within the run)."""
        q = self._q
        seq_a, seq_b = f"COALESCE({a}.{q['runSeq']}, 0)", f"COALESCE({b}.{q['runSeq']}, 0)"
        return f"({seq_a} > {seq_b} OR ({seq_a} = {seq_b} AND {a}.{q['syncedAt']} > {b}.{q['syncedAt']}))"

    # ---- one run at a time --------------------------------------------------------------------
    def lock(self, run_id: str, timeout_s: float = 0.0, mode: LockMode = "exclusive", part: Slice = WHOLE) -> int:
        """Hold this account's state: a PostgreSQL advisory lock, elsewhere a lease row renewed
        by a heartbeat (expiry 60 s). The lock tables live in the state table's schema.

        A partition run passes ``mode="shared"`` and its slice ``part``: it also holds the lock
        of its slice (``<table>|<appId>|slice-<k>-of-<N>``) exclusively, and is refused while
        runs with another number of partitions hold the account."""
        schema = self.table.rsplit(".", 1)[0] + "." if "." in self.table else ""
        kind = PgAdvisoryLock if self._is_postgres else LeaseLock
        lock = kind(self._target.connect, self.table, self.app_id, run_id, mode=mode, lock_tables=f"{schema}polyv_lock")
        if part.whole:
            lock.acquire(timeout_s)
        else:
            slice_lock = kind(
                self._target.connect,
                self.table,
                self.app_id,
                run_id,
                slice_=part.name,
                mode="exclusive",
                lock_tables=f"{schema}polyv_lock",
                take_seq=False,
            )
            acquire_slice(lock, slice_lock, timeout_s, part.partitions, slice_lock.slice_holders)
            self._slice_lock = slice_lock
        self._lock, self._run_seq = lock, lock.seq
        return int(lock.seq or 0)

    def unlock(self) -> None:
        slice_lock, self._slice_lock = self._slice_lock, None
        if slice_lock is not None:
            slice_lock.release()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    # ---- the diff in the warehouse -----------------------------------------------------------
    def prepare_warehouse_diff(self) -> None:
        """Compact first, so that each key has one record and :meth:`unchanged_filter` can be a
        plain semi-join (a killed run may have left superseded records behind). Not in a dry
        run, which must not touch the state: the filter then checks for newer records itself."""
        if not self.exists or not self.create:
            return
        try:
            self.compact()
        except Exception as exc:
            raise StateError(
                f"cannot compact the sync state table {self.table} before the diff in the "
                f"warehouse: {type(exc).__name__}: {exc}"
            ) from exc
        self._compacted = True

    def unchanged_filter(self, alias: str, viewer: str, field: str, value: str) -> str:
        """A SQL condition, true for source rows whose value POLYV last confirmed (per this table).

        ``alias`` is the source relation's alias; ``viewer``/``field``/``value`` are its column
        names (quoted here). Needs ``md5()`` and ``CAST(... AS TEXT)`` (tested on PostgreSQL). After
        :meth:`prepare_warehouse_diff` every key has one record, so an item sent but unconfirmed
        (its record has ``fp = 0`` and no ``valueMd5``) never matches.
        """
        q = self._q
        if not self.exists:
            return "1=0"
        if not self._compacted:
            self.prepare_warehouse_diff()
        newer = (
            ""
            if self._compacted
            else (
                f" AND NOT EXISTS (SELECT 1 FROM {self.table} newer WHERE newer.{q['appId']} = st.{q['appId']} "
                f"AND newer.{q['key']} = st.{q['key']} AND {self._newer('newer', 'st')})"
            )
        )

        def col(name: str) -> str:
            return f"{alias}.{quote_identifier(name, self.identifier_format)}"

        return (
            f"EXISTS (SELECT 1 FROM {self.table} st WHERE st.{q['appId']} = {_sql_literal(self.app_id)} "
            f"AND st.{q['viewerId']} = CAST({col(viewer)} AS TEXT) "
            f"AND st.{q['customFieldId']} = CAST({col(field)} AS TEXT) "
            f"AND st.{q['valueMd5']} = md5(CAST({col(value)} AS TEXT)){newer})"
        )
