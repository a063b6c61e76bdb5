"""Migrating a sync state table of versions 1 and 2 into the compact layout (version 3).

A table in the layout of versions 1 and 2 (texts, xxh3 hashes, one record per send) is
migrated when opened outside a dry run: the latest confirmed record of each key is rehashed
in SQL from its viewerId, customFieldId and valueMd5 into a new table, which takes the old
one's name; the old table is kept as ``<name>_v2`` (drop it once satisfied). A dry run reads
an old table as it is, through the same SQL (:func:`legacy_projection`).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from polyv_connector.errors import ConfigError
from polyv_connector.warehouse import dbapi
from polyv_connector.warehouse.dialect import BIGINT, DOUBLE, TEXT
from polyv_connector.warehouse.identifiers import split_table_name, unquote_identifier
from polyv_connector.warehouse.schema import Column, TableSchema, existing_columns, record_version, version_key

if TYPE_CHECKING:
    from polyv_connector.state.table import SqlStateTable

log = logging.getLogger("polyv_connector")

#: The layout of versions 1 and 2 (kept to recognise and migrate such a table).
LEGACY_VERSIONS: list[tuple[int, list[Column]]] = [
    (
        1,
        [
            Column("appId", TEXT, not_null=True),
            Column("key", BIGINT, not_null=True),
            Column("fp", BIGINT, not_null=True),
            Column("syncedAt", DOUBLE, not_null=True),
            Column("viewerId", TEXT),
            Column("customFieldId", TEXT),
            Column("valueMd5", TEXT),
            Column("runId", TEXT),
        ],
    ),
    (2, [Column("runSeq", BIGINT)]),
]
LEGACY_SCHEMA = TableSchema("state", LEGACY_VERSIONS)


def legacy_projection(t: SqlStateTable) -> str:
    """SQL: the latest confirmed record of each key of a version 1/2 table, in the compact form."""
    d, q = t._d(), t._q
    acct_expr = d.hex_to_int64(f"SUBSTR({d.md5_hex(d.text(q('appId')))}, 1, 16)")
    # Version 1 had no run sequence: its records count as older than any run's.
    run_seq = f"COALESCE({q('runSeq')}, 0)" if t._legacy_version >= 2 else "0"
    latest = (
        f"SELECT {q('appId')}, {q('viewerId')}, {q('customFieldId')}, {q('valueMd5')}, {q('fp')}, "
        f"ROW_NUMBER() OVER (PARTITION BY {q('appId')}, {q('key')} "
        f"ORDER BY {run_seq} DESC, {q('syncedAt')} DESC) AS polyv_rn "
        f"FROM {t.table}"
    )
    return (
        f"(SELECT {acct_expr} AS {q('acct')}, {d.key_hash(q('viewerId'), q('customFieldId'))} AS {q('key')}, "
        f"{d.value_hash_of_md5(q('valueMd5'))} AS {q('fp')} FROM ({latest}) polyv_latest "
        f"WHERE polyv_rn = 1 AND {q('fp')} <> 0 AND {q('viewerId')} IS NOT NULL "
        f"AND {q('customFieldId')} IS NOT NULL AND {q('valueMd5')} IS NOT NULL)"
    )


def _names(t: SqlStateTable) -> tuple[str, str, str]:
    """(schema prefix with its dot, or ''; the table's own name; a name for the old table)."""
    parts = split_table_name(t.table)
    prefix = ".".join(parts[:-1]) + "." if len(parts) > 1 else ""
    own = version_key(t.table)
    return prefix, own, f"{own}_v2"


def migrate_legacy(t: SqlStateTable, conn: Any, version: int) -> None:
    """Rewrite a version 1/2 table into the compact layout under the same name (see the module)."""
    from polyv_connector.state.table import SCHEMA, WRITTEN  # the layout migrated to (imports this module)

    d = t._d()
    prefix, own, old_name = _names(t)
    new_name = f"{own}_v3_{uuid.uuid4().hex[:8]}"
    new_table = prefix + d.quote(new_name)
    try:
        with _migration_lock(t, conn):
            # Another task may have migrated it while this one waited for the lock.
            now = existing_columns(conn, t.table) or []
            if "appid" not in {c.casefold() for c in now}:
                t.exists, t.legacy = True, False
                return
            if existing_columns(conn, prefix + d.quote(old_name)) is not None:
                old_name = f"{old_name}_{uuid.uuid4().hex[:8]}"
            t.legacy = True  # for the projection below
            q = t._q
            # GROUP BY: two old keys hashing to one new key (odds 2^-64) keep one row.
            insert = (
                f"INSERT INTO {new_table} ({', '.join(q(c) for c in WRITTEN)}) "
                f"SELECT {q('acct')}, {q('key')}, MIN({q('fp')}) FROM {legacy_projection(t)} "
                f"polyv_old GROUP BY {q('acct')}, {q('key')}"
            )
            with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
                for statement in t.create_table_sql(new_table):
                    cur.execute(statement)
                cur.execute(insert)
                cur.execute(f"SELECT COUNT(*) FROM {new_table}")
                kept = int(cur.fetchone()[0])
                _swap(t, cur, new_table, own, old_name)
                # Indexed once filled: one bulk build, and DuckDB renames no indexed table.
                for statement in t.create_index_sql():
                    cur.execute(statement)
            t.legacy = False
            t.exists = True
            record_version(conn, t._target, t.table, SCHEMA.current)
            log.info("the state table %s now has the compact layout", t.table)
    except ConfigError:
        raise
    except Exception as exc:
        dbapi.rollback_quietly(conn)
        _drop_quietly(t, conn, new_table)
        raise ConfigError(
            t.setting,
            f"cannot migrate the state table {t.table} from schema version {version} to {SCHEMA.current}: "
            f"{type(exc).__name__}: {str(exc).strip()}. Most often the role may not create or rename "
            "tables there; or run once with full_refresh on a new state_table",
        ) from exc
    log.warning(
        "migrated the sync state table %s to the compact layout (schema version %d): %s confirmed item(s) "
        "kept; the old table is now %s%s: drop it once satisfied (DROP TABLE %s%s)",
        t.table,
        SCHEMA.current,
        f"{kept:,}",
        prefix,
        old_name,
        prefix,
        d.quote(old_name),
    )


def _swap(t: SqlStateTable, cur: Any, new_table: str, own: str, old_name: str) -> None:
    d = t._d()
    prefix = _names(t)[0]
    if d.name == "mysql":
        # One statement, atomic: MySQL commits around DDL, so no transaction could hold both.
        cur.execute(f"RENAME TABLE {t.table} TO {prefix}{d.quote(old_name)}, {new_table} TO {t.table}")
        return
    if d.name == "duckdb":
        # DuckDB renames no table an index depends on: the old table's index goes first.
        parts = split_table_name(t.table)
        where = f"table_name = {d.literal(own)}"
        if len(parts) > 1:
            where += f" AND schema_name = {d.literal(unquote_identifier(parts[-2]))}"
        cur.execute(f"SELECT schema_name, index_name FROM duckdb_indexes() WHERE {where}")
        for schema, index in cur.fetchall():
            cur.execute(f"DROP INDEX {d.quote(schema)}.{d.quote(index)}")
    cur.execute(d.rename_table_sql(t.table, old_name))
    cur.execute(d.rename_table_sql(new_table, own))


@contextmanager
def _migration_lock(t: SqlStateTable, conn: Any) -> Iterator[None]:
    """One migration at a time per table (PostgreSQL and MySQL; elsewhere the database's own
    write lock and the re-check of the columns do)."""
    d = t._d()
    name = f"polyv_state_migrate:{version_key(t.table)}"
    # End the transaction the probes opened: its share lock on the old table would deadlock
    # with the task that holds the migration lock and renames that table.
    dbapi.rollback_quietly(conn)
    if d.name == "postgresql":
        key = int.from_bytes(hashlib.md5(name.encode()).digest()[:8], "big", signed=True)
        with dbapi.cursor(conn) as cur:
            cur.execute(f"SELECT pg_advisory_lock({key})")
        conn.commit()  # a session lock: it outlives this transaction
        try:
            yield
        finally:
            with dbapi.cursor(conn) as cur:
                cur.execute(f"SELECT pg_advisory_unlock({key})")
            conn.commit()
        return
    if d.name == "mysql":
        lock = "polyv_" + hashlib.md5(name.encode()).hexdigest()[:40]
        with dbapi.cursor(conn) as cur:
            cur.execute(f"SELECT GET_LOCK('{lock}', 600)")
        try:
            yield
        finally:
            with dbapi.cursor(conn) as cur:
                cur.execute(f"SELECT RELEASE_LOCK('{lock}')")
        return
    yield


def _drop_quietly(t: SqlStateTable, conn: Any, table: str) -> None:
    try:
        with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
    except Exception as exc:
        log.warning("could not drop the unfinished table %s: %s: %s", table, type(exc).__name__, exc)
