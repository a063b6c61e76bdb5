"""The sync state in a warehouse table, next to the report (a :class:`~polyv_connector.state.store.StateStore`).

The table is compact (schema version 3): one row per confirmed item, three 64-bit integers,
indexed on ``key`` (on MySQL/MariaDB, whose tables are stored in their primary key, the
primary key ``(acct, key)``)::

    acct  BIGINT  the account: the first 64 bits of MD5(appId), so many accounts share a table
    key   BIGINT  the item's key in the ``md5`` hash family (fingerprints.key_hashes): its high
                  32 bits are the viewer's partition hash, so one partition's slice is
                  ``((key >> 32) & 4294967295) % N = k`` for any N
    fp    BIGINT  the first 64 bits of MD5(value): the value POLYV confirmed

Every hash is one the database computes itself (:class:`~polyv_connector.warehouse.dialect.Dialect`),
so the diff can run in the warehouse (:meth:`SqlStateTable.with_unchanged`) and an older
layout migrates in SQL. 83 bytes an item with its index on PostgreSQL, against 251 for the
layout of versions 1 and 2 (``bench/bench_state_size.py``, 1M items).

Writes follow the send: before a batch leaves, its keys' rows are deleted (an item in flight
is not vouched for: a source reverting to the old value must not be skipped); once POLYV
confirms a batch, its rows are written (delete and insert in one transaction, so the last
confirmation of a key wins). Each batch is committed before the next is recorded, so a task
killed at any point loses nothing: the retry resends at most the batches that were in flight.
One run writes an account's state (or, with partitions, each partition its own slice: their
keys are disjoint), under the run lock, so nothing needs ordering or compacting afterwards.

A table in the layout of versions 1 and 2 is migrated when opened outside a dry run
(:mod:`polyv_connector.state.table_migration`).

Beside the state, ``<table>_meta`` keeps one small metadata record (JSON text) per account and
slice (:meth:`SqlStateTable.write_meta`), a table versioned like the state table.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from polyv_connector.errors import ConfigError, StateError
from polyv_connector.fingerprints import UNCONFIRMED, HashFamily
from polyv_connector.model import KNOWN_COLUMN
from polyv_connector.partitioning import WHOLE, Slice
from polyv_connector.state import table_meta
from polyv_connector.state.db_locks import LOCK_TABLES
from polyv_connector.state.lease_lock import LeaseLock
from polyv_connector.state.locks import LockMode
from polyv_connector.state.partition_rules import acquire_slice
from polyv_connector.state.pg_lock import PgAdvisoryLock
from polyv_connector.state.row_filter import RowFilter
from polyv_connector.state.store import MetaRecord, Opening, Recorded
from polyv_connector.state.table_migration import LEGACY_SCHEMA, legacy_projection, migrate_legacy
from polyv_connector.warehouse import dbapi
from polyv_connector.warehouse.dialect import (
    BIGINT,
    Dialect,
    dialect_named,
    dialect_of_connection,
    placeholder_of,
)
from polyv_connector.warehouse.identifiers import (
    check_table_name,
    quote_identifier,
)
from polyv_connector.warehouse.schema import (
    Column,
    TableSchema,
    ensure_schema,
    existing_columns,
    recorded_version,
    version_key,
)

log = logging.getLogger("polyv_connector")

#: The compact layout, from schema version 3 (later versions may append columns as usual).
SCHEMA_VERSIONS: list[tuple[int, list[Column]]] = [
    (
        3,
        [
            Column("acct", BIGINT, not_null=True),
            Column("key", BIGINT, not_null=True),
            Column("fp", BIGINT, not_null=True),
        ],
    )
]
SCHEMA = TableSchema("state", SCHEMA_VERSIONS, first=3)
COLUMNS = tuple(c.name for c in SCHEMA.columns())
#: The columns every record writes (the primary key is the first two).
WRITTEN = ("acct", "key", "fp")
_KEY = ("acct", "key")

_FETCH_ROWS = 100_000
#: Keys per DELETE ... IN (...) and rows per multi-row INSERT: integers written as literals.
_CHUNK = 1_000
#: Keys remembered as deleted-and-unconfirmed at most (beyond: forgotten, deleted again if seen).
_MAX_IN_FLIGHT = 1_000_000
_SAFE_APP_ID = re.compile(r"^[A-Za-z0-9._:@-]+$")
_MASK32 = 4294967295


def account_hash(app_id: str) -> int:
    """The ``acct`` of an appId: the first 64 bits of its MD5, as a signed 64-bit integer."""
    return int.from_bytes(hashlib.md5(app_id.encode("utf-8")).digest()[:8], "big", signed=True)


def _signed(values: np.ndarray) -> list[int]:
    # tolist() makes the Python ints in C: 7x the rate of int() per item (the state writer
    # converts every confirmed key, holding the GIL the sending threads need).
    return np.asarray(values, np.uint64).view(np.int64).tolist()  # type: ignore[no-any-return]


class SqlStateTable(Opening):
    """Confirmed fingerprints of one appId in ``table`` (created if absent; an old layout migrated).

    :param connection: a ``DbApiHook`` (anything with ``get_conn()``) or a connection factory.
    :param table: ``[schema.]table``, as the database expects it written.
    :param app_id: the POLYV appId whose records this instance reads and writes.
    :param placeholder: the driver's parameter marker (default: the hook's, else ``%s``).
    :param identifier_format: quoting of column names (default: the hook's, else the dialect's).
    :param setting: the setting name error messages point at.
    :param create: create (or migrate) the table if needed; ``False`` in a dry run, which
        creates, migrates and writes nothing.
    :param load_for_local_diff: :meth:`load` returns the records, for the engine's diff. ``False``
        when the diff is done in the warehouse (this table is then the source's
        ``skip_unchanged``): only changed rows reach the engine, which needs no copy of the state.
        Confirmations are recorded either way. The database must be able to run that diff
        (PostgreSQL, MySQL/MariaDB, DuckDB): elsewhere a :class:`ConfigError` naming
        ``diff_in_warehouse``, before anything runs.
    """

    #: The records' hash family: the engine hashes keys and values the same way.
    hash_family: HashFamily = "md5"

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
            # The appId names the lock rows and the account; keep it to plain characters.
            raise ConfigError("login", "the appId may only hold letters, digits and . _ - : @ for the state table")
        self.app_id = app_id
        self.acct = account_hash(app_id)
        self._target = dbapi.resolve(connection, placeholder=placeholder, identifier_format=identifier_format)
        self._explicit_format = identifier_format
        self._explicit_placeholder = placeholder
        self.placeholder = self._target.placeholder
        self.identifier_format = self._target.identifier_format
        self.dialect: Dialect | None = None
        self._conn: Any = None
        self._run_id: str | None = None
        self.exists = False
        self.legacy = False  # a version 1/2 table a dry run reads as it is
        self._legacy_version = 0
        self.create = create  # False in a dry run: nothing is created, migrated or written
        self.load_for_local_diff = load_for_local_diff
        self.null_is_empty = False  # the warehouse diff hashes NULL as "" (null_values=clear)
        self._is_postgres = False
        self._lock: PgAdvisoryLock | LeaseLock | None = None
        self._slice_lock: PgAdvisoryLock | LeaseLock | None = None  # a partition run's own slice
        self._run_seq: int | None = None
        self._in_flight: set[int] = set()  # keys this run deleted before sending, unconfirmed since
        # The keys that may have a row (loaded, or written since), when the whole account was
        # loaded under the lock: a pre-mark deletes only those. None: unknown, delete every key.
        self._rows: RowFilter | None = None
        self.prepare(create)

    # ---- connections and SQL pieces ------------------------------------------------------------
    def _open(self) -> Any:
        conn = self._target.open(ConfigError, self.setting, "state")
        if self.dialect is None:
            self._learn(conn)
        assert self.dialect is not None
        self.dialect.prepare_connection(conn)
        return conn

    def _learn(self, conn: Any) -> None:
        """Take the dialect from the first connection's driver (the hook's name otherwise)."""
        dialect = dialect_of_connection(conn)
        if dialect.name == "generic" and self._target.dialect not in ("", "default"):
            dialect = dialect_named(self._target.dialect)
        self.dialect = dialect
        self._is_postgres = dbapi.driver_of(conn) in dbapi.PG_DRIVERS
        if self._explicit_format is None and self._target.identifier_format == '"{}"':
            # A connection factory says nothing of quoting: MySQL needs backticks.
            self.identifier_format = dialect.identifier_format
        if not self._explicit_placeholder:
            # The driver knows its parameter marker better than a hook's default does.
            self.placeholder = placeholder_of(conn) or self.placeholder
        self._target = replace(self._target, identifier_format=self.identifier_format, placeholder=self.placeholder)

    def _q(self, name: str) -> str:
        return quote_identifier(name, self.identifier_format)

    def _d(self) -> Dialect:
        if self.dialect is None:
            _close(self._open())
        assert self.dialect is not None
        return self.dialect

    def _slice_sql(self, part: Slice, key: str) -> str:
        if part.whole:
            return ""
        k, n = part.partition, part.partitions
        return f" AND ((({key} >> 32) & {_MASK32}) % {int(n)}) = {int(k)}"

    def _relation(self) -> str:
        """The records as a relation of (acct, key, fp): the table, or an old layout rehashed."""
        return legacy_projection(self) if self.legacy else self.table

    # ---- the table -----------------------------------------------------------------------------
    def create_table_sql(self, table: str | None = None) -> list[str]:
        """The statements creating the compact layout as ``table`` (default: this table and its index).

        Where the table is stored in its primary key (InnoDB) it is ``PRIMARY KEY (acct, key)``.
        Elsewhere an index on ``key`` alone: 20 bytes an entry on PostgreSQL against 28 for
        ``(acct, key)``, and every lookup gives the account too. Writes to a key are serialised
        by the run lock and delete before they insert, so no key has two rows of one account.
        """
        d = self._d()
        columns = ", ".join(
            f"{self._q(c.name)} {d.column_type(c.kind)}" + (" NOT NULL" if c.not_null else "") for c in SCHEMA.columns()
        )
        guard = "IF NOT EXISTS " if d.if_not_exists and table is None else ""
        target = table or self.table
        if d.clustered:
            key = ", ".join(self._q(c) for c in _KEY)
            return [f"CREATE TABLE {guard}{target} ({columns}, PRIMARY KEY ({key}))"]
        create = f"CREATE TABLE {guard}{target} ({columns})"
        return [create] if table is not None else [create, *self.create_index_sql()]

    def create_index_sql(self) -> list[str]:
        """The index of this table on ``key`` (none where the primary key is the table)."""
        d = self._d()
        if d.clustered:
            return []
        # Named after the table's own name reduced to word characters ("keyhash": the old
        # layout's index may still be called <name>_key_idx, beside it in the schema).
        index = re.sub(r"\W", "_", version_key(self.table))[:50] + "_keyhash_idx"
        return [d.create_index_sql(self.table, index, [("key", BIGINT)])]

    def prepare(self, create: bool = True) -> None:
        """Check the table; create it if absent, migrate an old layout (not in a dry run).

        A table that is neither layout is not ours: :class:`ConfigError`. So is one whose
        recorded schema version is newer than this code knows.
        """
        conn = self._open()
        try:
            columns = existing_columns(conn, self.table)
            if columns is not None:
                self._check_existing(conn, columns, migrate=create)
                return
            if not create:
                return
            try:
                with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
                    for statement in self.create_table_sql():
                        cur.execute(statement)
            except Exception as exc:
                # Two first runs at once (a backfill's dates): PostgreSQL can refuse the loser's
                # CREATE TABLE IF NOT EXISTS with a catalog unique violation. The table is there.
                columns = existing_columns(conn, self.table)
                if columns is None:
                    raise ConfigError(
                        self.setting, f"cannot create the state table {self.table}: {type(exc).__name__}: {exc}"
                    ) from exc
                log.info("the sync state table %s was created by another run meanwhile", self.table)
                self._check_existing(conn, columns, migrate=True)
                return
            self.exists = True
            log.info("created the sync state table %s (compact layout, schema version %d)", self.table, SCHEMA.current)
            self._ensure_schema(conn, migrate=True)  # records the version of the new table
        finally:
            dbapi.close_quietly(conn)
        if not self.load_for_local_diff:
            self._d().check_warehouse_diff()  # before anything runs

    def _column_type(self, column: Column) -> str:
        return self._d().column_type(column.kind)

    def _ensure_schema(self, conn: Any, migrate: bool) -> None:
        ensure_schema(
            conn,
            self._target,
            self.table,
            SCHEMA,
            self._column_type,
            setting=self.setting,
            hint="choose another state_table",
            migrate=migrate,
        )

    def _check_existing(self, conn: Any, columns: list[str], *, migrate: bool) -> None:
        present = {c.casefold() for c in columns}
        if "appid" not in present:
            # The compact layout (or not ours: ensure_schema says so), migrated additively.
            self._ensure_schema(conn, migrate)
            self.exists, self.legacy = True, False
            return
        recorded = recorded_version(conn, self._target, self.table)
        if recorded is not None and recorded > SCHEMA.current:
            raise ConfigError(
                self.setting,
                f"the state table {self.table} has schema version {recorded}, newer than this "
                f"polyv-connector knows ({SCHEMA.current}); upgrade polyv-connector",
            )
        version = LEGACY_SCHEMA.version_of(columns)
        if version == 0:
            raise ConfigError(
                self.setting,
                f"table {self.table} exists but is not a sync state table (columns: {', '.join(columns)}); "
                "choose another state_table",
            )
        self.exists = True
        self._legacy_version = version
        if not migrate:
            self.legacy = True
            log.info(
                "the sync state table %s has the layout of schema version %d; a dry run reads it as it is, "
                "the next run migrates it to version %d",
                self.table,
                version,
                SCHEMA.current,
            )
            return
        migrate_legacy(self, conn, version)

    # ---- StateStore ----------------------------------------------------------------------------
    def load(self, part: Slice = WHOLE) -> tuple[np.ndarray, np.ndarray]:
        """Sorted unique keys (uint64) of this account and their fingerprints; with a ``part``
        (k of n) only the keys whose viewer partition hash modulo ``n`` is ``k``."""
        part.validate()
        empty = np.empty(0, np.uint64), np.empty(0, np.uint64)
        self._rows = None
        if not self.exists or not self.load_for_local_diff:
            if not self.exists and part.whole:
                self._rows = RowFilter()  # no table yet: no rows
            return empty
        q = self._q
        sql = (
            f"SELECT {q('key')}, {q('fp')} FROM {self._relation()} polyv_state "
            f"WHERE {q('acct')} = {self.acct}{self._slice_sql(part, q('key'))}"
        )
        keys: list[np.ndarray] = []
        fps: list[np.ndarray] = []
        conn = self._open()
        try:
            with dbapi.closing(self._read_cursor(conn)) as cur:
                cur.execute(sql)
                while rows := cur.fetchmany(_FETCH_ROWS):
                    pair = np.array(rows, dtype=np.int64).reshape(-1, 2)
                    keys.append(pair[:, 0].copy())
                    fps.append(pair[:, 1].copy())
        except Exception as exc:
            raise StateError(f"cannot read the sync state table {self.table}: {type(exc).__name__}: {exc}") from exc
        finally:
            dbapi.rollback_quietly(conn)
            dbapi.close_quietly(conn)
        if not keys:
            if part.whole:
                self._rows = RowFilter()
            return empty
        key = np.concatenate(keys).view(np.uint64)
        fp = np.concatenate(fps).view(np.uint64)
        order = np.argsort(key, kind="stable")
        key, fp = key[order], fp[order]
        # Unique already (the primary key); an old layout's rare hash twins keep their first.
        uniq, first = np.unique(key, return_index=True)
        if part.whole:
            self._rows = RowFilter(uniq)
        return uniq, fp[first]

    def _read_cursor(self, conn: Any) -> Any:
        if self._is_postgres:
            # A named (server-side) cursor: the client holds one chunk, not the whole state.
            return conn.cursor(name=f"polyv_state_{uuid.uuid4().hex[:12]}")
        return conn.cursor()

    def begin(self, run_id: str) -> None:
        if not self.exists or self.legacy:
            self.legacy = False
            self.prepare(create=True)
        self._run_id = run_id
        self._conn = self._open()
        self._in_flight = set()
        if self._is_postgres:
            # This connection only deletes and inserts by key. A table that grew during the run
            # has no statistics yet, and PostgreSQL then scans it whole for every batch
            # (quadratic: 1M items took 5 minutes); by the index it is milliseconds.
            with dbapi.transaction(self._conn), dbapi.cursor(self._conn) as cur:
                cur.execute("SET enable_seqscan = off")

    def record(
        self, keys: np.ndarray, fps: np.ndarray, synced_at: float | None = None, items: pa.Table | None = None
    ) -> None:
        """Make one batch durable: its keys' rows replaced by ``(key, fp)`` where ``fp`` is a
        confirmation, deleted where it is ``UNCONFIRMED`` (sent, not yet confirmed). ``keys`` and
        ``fps`` are the ``md5`` family's; ``synced_at`` and ``items`` are not kept."""
        if self._conn is None:
            raise RuntimeError("SqlStateTable.begin() was not called")
        if isinstance(self._lock, LeaseLock):
            self._lock.check()  # a run whose lease was taken over must not write another's state
        keys = np.asarray(keys, np.uint64)
        fps = np.asarray(fps, np.uint64)
        confirmed = fps != UNCONFIRMED
        signed = _signed(keys)
        # Keys this run deleted before sending them have no row: no need to delete them again;
        # nor have keys the state never held (see RowFilter).
        gone = self._in_flight
        rows = self._rows
        candidates = signed if rows is None else _signed(keys[rows.may_have_row(keys)])
        to_delete = [k for k in candidates if k not in gone]
        if rows is not None and confirmed.any():
            rows.add(keys[confirmed])  # before the insert: the filter may say more, never less
        with dbapi.transaction(self._conn), dbapi.cursor(self._conn) as cur:
            if to_delete and self._d().name == "duckdb" and hasattr(cur, "register"):
                # DuckDB joins against the keys as Arrow: 4x the rate of literal IN lists.
                view = f"polyv_keys_{uuid.uuid4().hex[:8]}"
                cur.register(view, pa.table({"k": pa.array(to_delete, pa.int64())}))
                try:
                    cur.execute(
                        f"DELETE FROM {self.table} WHERE {self._q('acct')} = {self.acct} "
                        f"AND {self._q('key')} IN (SELECT k FROM {view})"
                    )
                finally:
                    cur.unregister(view)
                to_delete = []
            for start in range(0, len(to_delete), _CHUNK):
                part = to_delete[start : start + _CHUNK]
                cur.execute(
                    f"DELETE FROM {self.table} WHERE {self._q('acct')} = {self.acct} "
                    f"AND {self._q('key')} IN ({', '.join(map(str, part))})"
                )
            if confirmed.any():
                self._insert(cur, keys[confirmed], fps[confirmed])
        # Committed: durable before the next batch is sent or recorded.
        if len(gone) > _MAX_IN_FLIGHT:
            gone.clear()  # batches that failed for good: forget them (deleting again is harmless)
        if confirmed.all():  # the usual batch: one set operation in C, not a loop per key
            gone.difference_update(signed)
        elif not confirmed.any():
            gone.update(signed)
        else:  # mixed: in order, so that a key given twice ends as its last entry says
            for k, ok in zip(signed, confirmed.tolist(), strict=True):
                if ok:
                    gone.discard(k)
                else:
                    gone.add(k)

    def record_many(self, batches: Sequence[Recorded]) -> None:
        """Several batches as one :meth:`record` (one transaction, one bulk insert) when no key
        is in two of them, so that the result is that of recording them in order; else one
        :meth:`record` each."""
        if len(batches) == 1:
            keys, fps, _, _ = batches[0]
            self.record(keys, fps)
            return
        keys = np.concatenate([np.asarray(b[0], np.uint64) for b in batches])
        ordered = np.sort(keys)
        if np.any(ordered[1:] == ordered[:-1]):  # a key twice: the last write of it must win
            for keys, fps, _, _ in batches:
                self.record(keys, fps)
            return
        self.record(keys, np.concatenate([np.asarray(b[1], np.uint64) for b in batches]))

    def _insert(self, cur: Any, keys: np.ndarray, fps: np.ndarray) -> None:
        """Append rows (this account, ``keys``, ``fps``) by the engine's fastest path."""
        d, q = self._d(), self._q
        columns = ", ".join(q(c) for c in WRITTEN)
        if self._is_postgres:
            acct = np.full(len(keys), self.acct, np.int64)
            dbapi.copy_int64_into(cur, self.table, columns, [acct, keys.view(np.int64), fps.view(np.int64)])
            return
        rows = pa.table(
            {
                "acct": pa.array(np.full(len(keys), self.acct, np.int64)),
                "key": pa.array(keys.view(np.int64)),
                "fp": pa.array(fps.view(np.int64)),
            }
        )
        if d.name == "duckdb" and hasattr(cur, "register"):
            # DuckDB reads the Arrow table in place: no SQL text, no row-by-row binding.
            view = f"polyv_rows_{uuid.uuid4().hex[:8]}"
            cur.register(view, rows)
            try:
                cur.execute(f"INSERT INTO {self.table} ({columns}) SELECT {columns} FROM {view}")
            finally:
                cur.unregister(view)
            return
        ck, cf = _signed(keys), _signed(fps)
        for start in range(0, len(ck), _CHUNK):
            pairs = zip(ck[start : start + _CHUNK], cf[start : start + _CHUNK], strict=True)
            values = ", ".join(f"({self.acct}, {k}, {f})" for k, f in pairs)
            cur.execute(f"INSERT INTO {self.table} ({columns}) VALUES {values}")

    def finish(self) -> None:
        """End the run: release the connection (nothing to compact: a key has one row)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            dbapi.close_quietly(conn)

    def reset(self) -> None:
        """Forget everything confirmed for this appId."""
        self._rows = None
        if not self.exists:
            return
        if self.legacy:
            self.legacy = False
            self.prepare(create=True)
        conn = self._open()
        try:
            with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
                cur.execute(f"DELETE FROM {self.table} WHERE {self._q('acct')} = {self.acct}")
        finally:
            dbapi.close_quietly(conn)

    # ---- one run at a time ---------------------------------------------------------------------
    def lock(self, run_id: str, timeout_s: float = 0.0, mode: LockMode = "exclusive", part: Slice = WHOLE) -> int:
        """Hold this account's state: a PostgreSQL advisory lock, elsewhere a lease row renewed
        by a heartbeat (expiry 60 s). The lock tables live in the state table's schema.

        A partition run passes ``mode="shared"`` and its slice ``part``: it also holds the lock
        of its slice (``<table>|<appId>|slice-<k>-of-<N>``) exclusively, and is refused while
        runs with another number of partitions hold the account."""
        kind = PgAdvisoryLock if self._is_postgres else LeaseLock
        lock = kind(self._target.connect, self.table, self.app_id, run_id, mode=mode, lock_tables=self._lock_tables())
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
                lock_tables=self._lock_tables(),
                take_seq=False,
            )
            acquire_slice(lock, slice_lock, timeout_s, part.partitions, slice_lock.slice_holders)
            self._slice_lock = slice_lock
        self._lock, self._run_seq = lock, lock.seq
        return int(lock.seq or 0)

    def _lock_tables(self) -> str:
        """The lock tables' prefix: ``polyv_lock`` in the state table's schema."""
        schema = self.table.rsplit(".", 1)[0] + "." if "." in self.table else ""
        return f"{schema}{LOCK_TABLES}"

    def unlock(self) -> None:
        slice_lock, self._slice_lock = self._slice_lock, None
        if slice_lock is not None:
            slice_lock.release()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    # ---- position and metadata (state/table_meta.py) ------------------------------------------
    def position(self) -> str:
        """See :func:`~polyv_connector.state.table_meta.position`."""
        return table_meta.position(self)

    def read_meta(self, part: Slice = WHOLE) -> MetaRecord:
        """This account's and slice's metadata record (``{}`` if none); needs no lock."""
        return table_meta.read_meta(self, part)

    def write_meta(self, record: MetaRecord, part: Slice = WHOLE) -> None:
        """Replace this account's and slice's metadata record; needs the lock."""
        table_meta.write_meta(self, record, part)

    # ---- the diff in the warehouse -------------------------------------------------------------
    def prepare_warehouse_diff(self) -> None:
        """Check the database can run the diff (a no-op otherwise: each key has one row, so
        :meth:`with_unchanged` is a plain join)."""
        self._d().check_warehouse_diff()

    def exact(self, expr: str) -> str:
        """SQL: ``expr`` as a value that groups by its bytes (the source partitions keys by it)."""
        return self._d().binary(expr)

    def with_unchanged(self, rows: str, viewer: str, field: str, value: str) -> str:
        """SQL: the rows of the query ``rows``, each plus ``polyv_seen``: 1 where POLYV last
        confirmed its value (per this table), else 0; ``polyv_known``: 0 no key, 1 another value, 2 this one
        (one join on the key tells both).

        ``viewer``/``field``/``value`` are column names of ``rows`` (quoted here). The database
        hashes the row's texts as the engine does (MD5 of the UTF-8 bytes), so the match is
        byte-exact whatever the collation: ``ABC`` never matches the state of ``abc``. An item
        sent but not confirmed has no row, so it never matches.

        Why a join on hashes computed once per row: a correlated ``EXISTS`` hashed each row in
        its condition and looked the state up row by row through the index (issue #13: 1M
        lookups were most of a rerun); a join lets the database hash-join the account's state
        instead. No key has two rows of one account (see :meth:`create_table_sql`), so the
        ``LEFT JOIN`` keeps each source row exactly once.
        """
        if not self.exists:
            return f"SELECT polyv_rows.*, 0 AS polyv_seen, 0 AS {KNOWN_COLUMN} FROM ({rows}\n) polyv_rows"
        d, q = self._d(), self._q

        def col(name: str) -> str:
            return f"polyv_in.{q(name)}"

        # null_values=clear sends a NULL as the empty text: hashed so, it is not resent nightly.
        val = f"COALESCE({col(value)}, '')" if self.null_is_empty else col(value)
        hashed = (
            f"SELECT polyv_in.*, {d.key_hash(col(viewer), col(field))} AS polyv_key, "
            f"{d.value_hash(val)} AS polyv_fp FROM ({rows}\n) polyv_in"
        )
        state = f"SELECT {q('key')}, {q('fp')} FROM {self._relation()} polyv_all WHERE {q('acct')} = {self.acct}"
        return (
            f"SELECT polyv_rows.*, CASE WHEN polyv_st.{q('fp')} = polyv_rows.polyv_fp THEN 1 ELSE 0 END AS polyv_seen, "
            f"CASE WHEN polyv_st.{q('key')} IS NULL THEN 0 WHEN polyv_st.{q('fp')} = polyv_rows.polyv_fp THEN 2 "
            f"ELSE 1 END AS {KNOWN_COLUMN} "
            f"FROM ({hashed}) polyv_rows LEFT JOIN ({state}) polyv_st ON polyv_st.{q('key')} = polyv_rows.polyv_key"
        )

    def key_count(self, part: Slice = WHOLE) -> int:
        """Keys of this account (slice): see :func:`~polyv_connector.state.table_meta.key_count`."""
        return table_meta.key_count(self, part)


def _close(conn: Any) -> None:
    dbapi.rollback_quietly(conn)
    dbapi.close_quietly(conn)
