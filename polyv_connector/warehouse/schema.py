"""Versioned table schemas: the report and state tables migrate themselves, additively.

Each table module declares its columns as an ordered list of versions (:class:`TableSchema`):
version 1 is the table as first released, and each later version only *appends* columns. A
table is created with the current version's columns; an existing one is brought up to date by
:func:`ensure_schema`, which the table calls when it is opened (before the sync sends anything):

1. The table's columns are read with a zero-row ``SELECT * ... WHERE 1=0`` (names compared
   case-insensitively, as databases fold them). A table lacking a first-version column is not ours:
   :class:`~polyv_connector.errors.ConfigError`.
2. Columns of later versions that are missing are added with ``ALTER TABLE t ADD COLUMN c
   <type>`` (nullable: the rows already there have no value), all in one transaction. If the
   database refuses (most often: the role does not own the table), the ``ConfigError`` prints
   the exact DDL for the table's owner to run.
3. The version is recorded in ``polyv_schema_version`` (``table_name`` primary key: the
   table's own name, without schema or quotes; ``version``; ``migrated_at``, ISO-8601 UTC
   text), a table created when absent next to the migrated one (same catalog and schema). A
   table whose recorded version is newer than this code knows fails with a ``ConfigError``
   asking to upgrade polyv-connector: an older release must not write rows that lack the
   newer columns' meaning.

A dry run only checks (``migrate=False``): it adds and records nothing. The columns
themselves are the truth for what is missing, so a table is never migrated twice, a rerun is a
no-op, and two tasks migrating at once are fine (the loser finds the columns there). The record
is what tells an *older* release that a table is newer; writing it is best effort: a role that
may use the report table but neither read nor create the version table gets a warning, not a
failed run. Plain ``ALTER TABLE ... ADD COLUMN`` and ``VARCHAR``/``INTEGER`` keep this
cross-database (PostgreSQL, SQLite, MySQL, Snowflake...; SQL Server and Oracle spell it ``ADD``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from polyv_connector.errors import ConfigError
from polyv_connector.warehouse import dbapi
from polyv_connector.warehouse.identifiers import quote_identifier, split_table_name, unquote_identifier

log = logging.getLogger("polyv_connector")

VERSION_TABLE = "polyv_schema_version"
# Dialects whose ALTER TABLE takes ``ADD <column>`` and refuses ``ADD COLUMN``.
_ADD_WITHOUT_COLUMN = frozenset({"mssql", "oracle"})


@dataclass(frozen=True)
class Column:
    """One column of a table schema.

    :param name: the column name (always quoted in SQL, so it keeps its case).
    :param kind: what the table's ``column_type`` function turns into a SQL type.
    :param not_null: ``NOT NULL`` when the table is created; a column added by a migration is
        always nullable, since the rows already in the table have no value for it.
    """

    name: str
    kind: str
    not_null: bool = False


@dataclass(frozen=True)
class TableSchema:
    """The versions of one table's columns: ``[(1, [...]), (2, [columns added in 2]), ...]``.

    :param what: how messages name the table ("report", "state").
    :param versions: consecutive versions from ``first``, each with the columns it appends.
    :param first: the first version of this layout (1; later when a table's layout was
        rewritten wholesale, like the state table's version 3: the table's own code migrates
        the versions before ``first``, and versions after it append columns as usual).
    """

    what: str
    versions: Sequence[tuple[int, Sequence[Column]]]
    first: int = 1

    def __post_init__(self) -> None:
        numbers = [n for n, _ in self.versions]
        if numbers != list(range(self.first, self.first + len(numbers))):
            raise ValueError(
                f"schema versions must be {self.first}, {self.first + 1}, {self.first + 2}...; got {numbers}"
            )
        names = [c.name.casefold() for c in self.columns()]
        if len(names) != len(set(names)):
            raise ValueError("a column name appears twice in the schema versions")

    @property
    def current(self) -> int:
        """The newest version this code knows."""
        return self.versions[-1][0]

    def columns(self, version: int | None = None) -> list[Column]:
        """Every column of ``version`` (default: the current one), in table order."""
        upto = self.current if version is None else version
        return [c for n, added in self.versions if n <= upto for c in added]

    def version_of(self, present: Sequence[str]) -> int:
        """The newest version whose columns are all in ``present`` (0 if not even version 1's)."""
        have = {p.casefold() for p in present}
        found = 0
        for n, added in self.versions:
            if any(c.name.casefold() not in have for c in added):
                break
            found = n
        return found


def _quoter(identifier_format: str) -> Callable[[str], str]:
    def quote(name: str) -> str:
        return quote_identifier(name, identifier_format)

    return quote


def existing_columns(conn: Any, table: str) -> list[str] | None:
    """Column names of ``table`` from a zero-row probe, or ``None`` if it cannot be read (absent,
    most likely). A failed probe is rolled back: PostgreSQL refuses every statement after an
    error until the transaction ends."""
    try:
        with dbapi.cursor(conn) as cur:
            cur.execute(f"SELECT * FROM {table} WHERE 1=0")
            return [d[0] for d in cur.description or ()]
    except Exception:
        dbapi.rollback_quietly(conn)
        return None


def version_table(table: str) -> str:
    """Where the version of ``table`` is recorded: ``polyv_schema_version`` in its schema."""
    return ".".join([*split_table_name(table)[:-1], VERSION_TABLE])


def version_key(table: str) -> str:
    """The key of ``table`` in the version table: its own name, without schema or quotes."""
    return unquote_identifier(split_table_name(table)[-1])


def recorded_version(conn: Any, target: dbapi.Target, table: str) -> int | None:
    """The version recorded for ``table``, or ``None`` (no record, or no readable version table)."""
    q = _quoter(target.identifier_format)
    sql = f"SELECT {q('version')} FROM {version_table(table)} WHERE {q('table_name')} = {target.placeholder}"
    try:
        with dbapi.cursor(conn) as cur:
            cur.execute(sql, (version_key(table),))
            row = cur.fetchone()
    except Exception as exc:
        dbapi.rollback_quietly(conn)
        log.debug("no schema version recorded for %s: %s: %s", table, type(exc).__name__, exc)
        return None
    return None if row is None else int(row[0])


def add_columns_sql(
    table: str, columns: Sequence[Column], column_type: Callable[[Column], str], target: dbapi.Target
) -> list[str]:
    """The ``ALTER TABLE`` statements adding ``columns`` (nullable) to ``table``."""
    add = "ADD" if target.dialect in _ADD_WITHOUT_COLUMN else "ADD COLUMN"
    return [
        f"ALTER TABLE {table} {add} {quote_identifier(c.name, target.identifier_format)} {column_type(c)}"
        for c in columns
    ]


def version_table_sql(table: str, identifier_format: str) -> str:
    """The ``CREATE TABLE`` statement of the version table next to ``table``."""
    q = _quoter(identifier_format)
    return (
        f"CREATE TABLE {version_table(table)} ({q('table_name')} VARCHAR(255) NOT NULL PRIMARY KEY, "
        f"{q('version')} INTEGER NOT NULL, {q('migrated_at')} VARCHAR(40))"
    )


def ensure_schema(
    conn: Any,
    target: dbapi.Target,
    table: str,
    schema: TableSchema,
    column_type: Callable[[Column], str],
    *,
    setting: str,
    hint: str,
    migrate: bool = True,
) -> int:
    """Check the existing ``table`` against ``schema``, migrate it and record its version.

    :param conn: an open connection (left open; every change is committed or rolled back).
    :param target: the database's placeholder, identifier quoting and dialect.
    :param column_type: the SQL type of a column, without ``NOT NULL``.
    :param setting: the setting error messages point at (``report_table``, ``state_table``).
    :param hint: what to do about a table lacking version-1 columns (not ours).
    :param migrate: add missing columns and record the version; ``False`` (a dry run) only checks.
    :returns: the table's schema version after this call.
    :raises ConfigError: the table is not ours, is newer than this code, or cannot be migrated.
    """
    columns = existing_columns(conn, table)
    if columns is None:
        raise ConfigError(setting, f"cannot read the {schema.what} table {table}")
    recorded = recorded_version(conn, target, table)
    if recorded is not None and recorded > schema.current:
        raise ConfigError(
            setting,
            f"the {schema.what} table {table} has schema version {recorded}, newer than this "
            f"polyv-connector knows ({schema.current}); upgrade polyv-connector",
        )
    present = {c.casefold() for c in columns}
    lacking = [c.name for c in schema.columns(schema.first) if c.name.casefold() not in present]
    if lacking:
        raise ConfigError(
            setting, f"table {table} exists but lacks the {schema.what} column(s) {', '.join(lacking)}; {hint}"
        )
    version = schema.version_of(columns)
    if not migrate:
        return version
    missing = [c for c in schema.columns() if c.name.casefold() not in present]
    if missing:
        _add_columns(conn, target, table, schema, missing, column_type, setting, version)
        version = schema.current
    if recorded != version:
        record_version(conn, target, table, version)
    return version


def _add_columns(
    conn: Any,
    target: dbapi.Target,
    table: str,
    schema: TableSchema,
    missing: Sequence[Column],
    column_type: Callable[[Column], str],
    setting: str,
    version: int,
) -> None:
    ddl = add_columns_sql(table, missing, column_type, target)
    try:
        with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
            for statement in ddl:
                cur.execute(statement)
    except Exception as exc:
        # Another task may have migrated the table between our probe and our ALTER.
        now = existing_columns(conn, table)
        if now is not None and schema.version_of(now) == schema.current:
            return
        raise ConfigError(
            setting,
            f"the {schema.what} table {table} is at schema version {version} and this polyv-connector "
            f"needs version {schema.current}, but adding the column(s) failed ({type(exc).__name__}: "
            f"{str(exc).strip()}). Most often the role does not own the table: have its owner run "
            + "; ".join(ddl)
            + ";",
        ) from exc
    log.info(
        "migrated the %s table %s to schema version %d (added %s)",
        schema.what,
        table,
        schema.current,
        ", ".join(c.name for c in missing),
    )


def record_version(conn: Any, target: dbapi.Target, table: str, version: int) -> None:
    """Record ``version`` for ``table``, creating the version table if needed (best effort; a
    table whose layout changes wholesale, like the state table's version 3, records its own)."""
    meta = version_table(table)
    q = _quoter(target.identifier_format)
    try:
        if existing_columns(conn, meta) is None:
            try:
                with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
                    cur.execute(version_table_sql(table, target.identifier_format))
            except Exception:
                if existing_columns(conn, meta) is None:  # not created by another task meanwhile
                    raise
        key, now = version_key(table), dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        p = target.placeholder
        with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
            cur.execute(f"DELETE FROM {meta} WHERE {q('table_name')} = {p}", (key,))
            cur.execute(
                f"INSERT INTO {meta} ({q('table_name')}, {q('version')}, {q('migrated_at')}) VALUES ({p}, {p}, {p})",
                (key, version, now),
            )
    except Exception as exc:
        if recorded_version(conn, target, table) == version:  # recorded by another task meanwhile
            return
        log.warning(
            "could not record schema version %d of %s in %s (%s: %s); an older polyv-connector will "
            "not know the table is newer than it: let this role create that table, or read and write it",
            version,
            table,
            meta,
            type(exc).__name__,
            str(exc).strip(),
        )
