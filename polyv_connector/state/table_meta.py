"""The table store's position and its metadata records, in ``<table>_meta`` beside the state.

One record (JSON text) per account and slice, e.g. the item count of the last whole-source
run; the table is versioned like the state table (:mod:`polyv_connector.warehouse.schema`). A
reset keeps the records: it forgets confirmations, not what was learnt about the source.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from polyv_connector.errors import StateError
from polyv_connector.partitioning import WHOLE, Slice
from polyv_connector.state.db_locks import LockTables, lock_name
from polyv_connector.state.store import MetaRecord
from polyv_connector.state.table_migration import legacy_projection
from polyv_connector.warehouse import dbapi
from polyv_connector.warehouse.dialect import BIGINT, DOUBLE, TEXT
from polyv_connector.warehouse.identifiers import split_table_name
from polyv_connector.warehouse.schema import Column, TableSchema, ensure_schema, existing_columns, version_key

if TYPE_CHECKING:
    from polyv_connector.state.table import SqlStateTable

#: The metadata table beside the state: one record per account and slice.
META_SCHEMA = TableSchema(
    "state metadata",
    [
        (
            1,
            [
                Column("acct", BIGINT, not_null=True),
                Column("slice", TEXT, not_null=True),
                Column("record", TEXT, not_null=True),
                Column("updatedAt", DOUBLE),
            ],
        )
    ],
)


def position(t: SqlStateTable) -> str:
    """The account's last run sequence number and a checksum of its rows (count, sums of keys
    and fingerprints): any run that took the lock or changed a row changes it. Read without
    the lock; it reads the account's rows once, so call it per run, not per batch."""
    q = t._q
    conn = t._open()
    try:
        if existing_columns(conn, t.table) is None:
            rows = "none"
        else:
            relation = legacy_projection(t) if t.legacy else t.table
            with dbapi.cursor(conn) as cur:
                cur.execute(
                    f"SELECT COUNT(*), SUM({q('key')}), SUM({q('fp')}) FROM {relation} polyv_state "
                    f"WHERE {q('acct')} = {t.acct}"
                )
                count, keys, fps = cur.fetchone()
            rows = f"{int(count)}:{int(keys or 0)}:{int(fps or 0)}"
        dbapi.rollback_quietly(conn)
        try:
            seq = LockTables(t._lock_tables()).last_seq(conn, lock_name(t.table, t.app_id))
        except Exception:
            seq = 0  # no lock table yet: no run ever took the lock
    except Exception as exc:
        raise StateError(f"cannot read the sync state table {t.table}: {type(exc).__name__}: {exc}") from exc
    finally:
        dbapi.rollback_quietly(conn)
        dbapi.close_quietly(conn)
    return f"{seq}|{rows}"


def key_count(t: SqlStateTable, part: Slice = WHOLE) -> int:
    """Keys the account (slice) holds, counted in the database (read without the lock)."""
    if not t.exists:
        return 0
    conn = t._open()
    try:
        with dbapi.cursor(conn) as cur:
            cur.execute(
                f"SELECT COUNT(*) FROM {t._relation()} polyv_state "
                f"WHERE {t._q('acct')} = {t.acct}{t._slice_sql(part, t._q('key'))}"
            )
            return int(cur.fetchone()[0])
    except Exception as exc:
        raise StateError(f"cannot count the sync state table {t.table}: {type(exc).__name__}: {exc}") from exc
    finally:
        dbapi.rollback_quietly(conn)
        dbapi.close_quietly(conn)


def meta_table(t: SqlStateTable) -> str:
    parts = split_table_name(t.table)
    prefix = ".".join(parts[:-1]) + "." if len(parts) > 1 else ""
    return prefix + t._d().quote(f"{version_key(t.table)}_meta")


def _meta_ready(t: SqlStateTable, conn: Any, *, create: bool) -> bool:
    """Whether the metadata table is there (created, or brought up to date, if ``create``)."""
    table = meta_table(t)
    if existing_columns(conn, table) is None:
        if not create:
            return False
        d = t._d()
        columns = ", ".join(
            f"{t._q(c.name)} {d.column_type(c.kind)}" + (" NOT NULL" if c.not_null else "")
            for c in META_SCHEMA.columns()
        )
        guard = "IF NOT EXISTS " if d.if_not_exists else ""
        try:
            with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
                cur.execute(f"CREATE TABLE {guard}{table} ({columns})")
        except Exception:
            # Another run created it meanwhile (the catalog race of the state table's prepare).
            if existing_columns(conn, table) is None:
                raise
    ensure_schema(
        conn,
        t._target,
        table,
        META_SCHEMA,
        t._column_type,
        setting=t.setting,
        hint="choose another state_table",
        migrate=create,
    )
    return True


def read_meta(t: SqlStateTable, part: Slice = WHOLE) -> MetaRecord:
    """This account's and slice's metadata record (``{}`` if none); needs no lock."""
    part.validate()
    conn = t._open()
    try:
        if not _meta_ready(t, conn, create=False):
            return {}
        q = t._q
        with dbapi.cursor(conn) as cur:
            cur.execute(
                f"SELECT {q('record')} FROM {meta_table(t)} WHERE {q('acct')} = {t.acct} "
                f"AND {q('slice')} = {t.placeholder}",
                (part.name,),
            )
            row = cur.fetchone()
    finally:
        dbapi.rollback_quietly(conn)
        dbapi.close_quietly(conn)
    if row is None:
        return {}
    try:
        record = json.loads(row[0])
    except ValueError as exc:
        raise StateError(f"the metadata of {part} in {meta_table(t)} is not JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise StateError(f"the metadata of {part} in {meta_table(t)} is not a JSON object")
    return record


def write_meta(t: SqlStateTable, record: MetaRecord, part: Slice = WHOLE) -> None:
    """Replace this account's and slice's metadata record; needs the lock (each slice's run
    writes its own row). A reset keeps it: it forgets confirmations, not the source."""
    part.validate()
    if t._lock is None:
        raise StateError(f"SqlStateTable.write_meta() on {t.table} needs the state's lock: call lock(run_id)")
    data = json.dumps(record, allow_nan=False, sort_keys=True)
    conn = t._open()
    try:
        _meta_ready(t, conn, create=True)
        q, m = t._q, t.placeholder
        table = meta_table(t)
        with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
            cur.execute(f"DELETE FROM {table} WHERE {q('acct')} = {t.acct} AND {q('slice')} = {m}", (part.name,))
            cur.execute(
                f"INSERT INTO {table} ({q('acct')}, {q('slice')}, {q('record')}, {q('updatedAt')}) "
                f"VALUES ({t.acct}, {m}, {m}, {m})",
                (part.name, data, time.time()),
            )
    finally:
        dbapi.close_quietly(conn)
