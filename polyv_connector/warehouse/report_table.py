"""The per-item report written to a warehouse table (a :class:`~polyv_connector.report.ReportSink`).

The table is created if absent (and checked if present) *before* the sync sends anything, so a
missing permission or an incompatible table fails the task early. Its schema is versioned: a
table made by an older release gains the newer columns when opened (see
:mod:`polyv_connector.warehouse.schema`). Each run appends its rows,
tagged with the run's ``runId``, in one transaction committed by :meth:`close`: a failed task
never leaves half a report behind.

Writing is bulk, never row by row: PostgreSQL (psycopg 3 or psycopg2) gets ``COPY ... FROM
STDIN`` with CSV built by Arrow from each record batch; any other database gets
``executemany`` in chunks, through the hook's placeholder and identifier quoting. Column names
are camelCase and always quoted, so they keep their case everywhere.

Works with any common-sql ``DbApiHook`` or a plain DB-API connection factory; nothing here
imports Airflow.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pyarrow as pa

from polyv_connector.errors import ConfigError
from polyv_connector.model import REPORT_COLUMNS
from polyv_connector.warehouse import dbapi
from polyv_connector.warehouse.db_errors import database_error
from polyv_connector.warehouse.dialect import BIGINT, TEXT, TIMESTAMP, dialect_named, dialect_of_connection
from polyv_connector.warehouse.identifiers import (
    check_table_name,
    identifier_too_long,
    quote_identifier,
    split_table_name,
    unquote_identifier,
    with_suffix,
)
from polyv_connector.warehouse.schema import (
    Column,
    TableSchema,
    ensure_schema,
    existing_columns,
    record_version,
    recorded_version,
)

log = logging.getLogger("polyv_connector")

_TEXT, _BIGINT, _TIMESTAMP = TEXT, BIGINT, TIMESTAMP

# The report table's columns by schema version (see polyv_connector.warehouse.schema). A new
# report column goes into a new version, appended here and to model.REPORT_COLUMNS, which lists
# every column of the current version in this order; existing tables then gain it on open.
SCHEMA_VERSIONS: list[tuple[int, list[Column]]] = [
    (
        1,
        [
            Column("rowNumber", _BIGINT, not_null=True),
            Column("viewerId", _TEXT),
            Column("customFieldId", _TEXT),
            Column("customFieldValue", _TEXT),
            Column("status", _TEXT, not_null=True),
            Column("reason", _TEXT),
            Column("errorCode", _BIGINT),
            Column("httpStatus", _BIGINT),
            Column("requestId", _TEXT),
            Column("attempts", _BIGINT, not_null=True),
            Column("batchId", _TEXT),
            Column("runId", _TEXT, not_null=True),
            Column("syncedAt", _TIMESTAMP),
        ],
    ),
    # Many accounts and partitions share one table: each row says whose and which slice it is;
    # reasonCode is the stable code of the human ``reason``; airflowRunId links to the DAG run.
    (
        2,
        [
            Column("appId", _TEXT),
            Column("reasonCode", _TEXT),
            Column("partition", _BIGINT),
            Column("partitions", _BIGINT),
            Column("airflowRunId", _TEXT),
        ],
    ),
    # Version 3 adds no column: the indexes by run (runId) and by account and viewer (appId,
    # viewerId), what retention and `polyv-sync history` read (see INDEXES below).
    (3, []),
]
SCHEMA = TableSchema("report", SCHEMA_VERSIONS)
#: The version that brought the indexes: a table recorded below it gets them when opened.
INDEXES_VERSION = 3
#: The report table's indexes: (name suffix, columns as (name, kind)).
INDEXES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("run", (("runId", _TEXT),)),
    ("viewer", (("appId", _TEXT), ("viewerId", _TEXT))),
)
#: Engines without secondary indexes (they prune by storage metadata instead): none is created.
NO_INDEXES = frozenset({"redshift", "snowflake", "bigquery", "databricks", "trino"})
#: The day-partition column of a report table made with ``day_partitions`` (PostgreSQL only):
#: the UTC date the run wrote its report, filled by the column's default.
RUN_DATE = "runDate"
#: Day partitions made ahead of need when the table is opened (the default partition takes
#: rows of any day without one).
DAYS_AHEAD = 7
#: How long creating a partition waits for the table's lock before leaving it to the next run.
PARTITION_LOCK_TIMEOUT = "5s"


#: What each bulk-write path of :func:`~polyv_connector.warehouse.dbapi.bulk_insert` is, for the log.
_PATHS = {
    "copy": "PostgreSQL COPY",
    "multirow": "multi-row INSERT statements",
    "arrow": "DuckDB reading the Arrow batches",
    "executemany": "the generic path: executemany in chunks; no bulk path is known for this database",
}


class SqlReportTable:
    """Appends the report to ``table`` through a ``DbApiHook`` or a DB-API connection factory.

    :param connection: a ``DbApiHook`` (anything with ``get_conn()``) or a zero-argument
        callable returning a new DB-API connection.
    :param table: ``[schema.]table``, as the database expects it written.
    :param dialect: SQL dialect for the column types (default: the hook's ``dialect_name``).
    :param placeholder: parameter marker for the generic path (default: the hook's, else ``%s``).
    :param identifier_format: quoting of column names (default: the hook's, else ``"{}"``).
    :param chunk_rows: rows per ``executemany`` call on the generic path.
    :param use_copy: allow the PostgreSQL ``COPY`` fast path.
    :param location: how the summary names this report (default: the table name).
    :param setting: the setting name error messages point at.
    :param day_partitions: create a *new* table partitioned by day (PostgreSQL only; an
        existing table keeps its layout): retention then drops whole days
        (:mod:`polyv_connector.warehouse.retention`) instead of deleting rows.
    """

    def __init__(
        self,
        connection: Any,
        table: str,
        *,
        dialect: str | None = None,
        placeholder: str | None = None,
        identifier_format: str | None = None,
        chunk_rows: int = 5_000,
        use_copy: bool = True,
        location: str | None = None,
        setting: str = "report_table",
        day_partitions: bool = False,
    ) -> None:
        self.setting = setting
        self.table = check_table_name(table, setting)
        self._target = dbapi.resolve(
            connection, placeholder=placeholder, identifier_format=identifier_format, dialect=dialect
        )
        self.dialect = self._target.dialect
        self.placeholder = self._target.placeholder
        self.identifier_format = self._target.identifier_format
        self.chunk_rows = chunk_rows
        self.use_copy = use_copy
        self.location = location or self.table
        self.rows_written = 0
        self._conn: Any = None
        #: How rows were last written: ``copy``, ``multirow``, ``arrow`` or ``executemany``
        #: (see :func:`~polyv_connector.warehouse.dbapi.bulk_insert`); ``None`` before the first.
        self.write_path: str | None = None
        self._closed = False
        self.day_partitions = day_partitions
        self.prepare()

    # ---- the table ---------------------------------------------------------------------------
    def column_type(self, column: Column) -> str:
        """The SQL type of a report column in this dialect (without ``NOT NULL``)."""
        return dialect_named(self.dialect).column_type(column.kind)

    def create_table_sql(self) -> str:
        """The ``CREATE TABLE`` statement for this dialect (the current schema version)."""
        columns = [
            f"{quote_identifier(c.name, self.identifier_format)} {self.column_type(c)}"
            + (" NOT NULL" if c.not_null else "")
            for c in SCHEMA.columns()
        ]
        partitioned = ""
        if getattr(self, "day_partitions", False):  # checked to be PostgreSQL when opened
            # Filled by the default: the engine writes the report's own columns only.
            columns.append(
                f"{quote_identifier(RUN_DATE, self.identifier_format)} DATE NOT NULL "
                "DEFAULT ((now() AT TIME ZONE 'UTC')::date)"
            )
            partitioned = f" PARTITION BY RANGE ({quote_identifier(RUN_DATE, self.identifier_format)})"
        guard = "IF NOT EXISTS " if dialect_named(self.dialect).if_not_exists else ""
        return f"CREATE TABLE {guard}{self.table} (\n  " + ",\n  ".join(columns) + f"\n){partitioned}"

    def create_index_sql(self) -> list[str]:
        """The indexes of :data:`INDEXES` (MySQL: text columns by a prefix, within its key limit)."""
        d = dialect_named(self.dialect)
        return [d.create_index_sql(self.table, self.index_name(suffix), cols) for suffix, cols in INDEXES]

    def index_name(self, what: str) -> str:
        """``<table's own name>_<what>_idx``, within the engine's identifier limit."""
        from polyv_connector.warehouse.runs_table import index_name

        return index_name(self.table, what, dialect_named(self.dialect).name)

    def prepare(self) -> None:
        """Create the table if absent; check an existing one and bring it to the current schema
        version (:func:`~polyv_connector.warehouse.schema.ensure_schema`), indexes included."""
        conn = self._open()
        try:
            if self.day_partitions:
                self._check_day_partitions(dialect_of_connection(conn).name)
            recorded = recorded_version(conn, self._target, self.table)
            if existing_columns(conn, self.table) is None:
                try:
                    with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
                        cur.execute(self.create_table_sql())
                    log.info("created the report table %s", self.table)
                except Exception as exc:
                    # Another task may have created it between our probe and our CREATE.
                    if existing_columns(conn, self.table) is None:
                        raise database_error(exc, self.setting, f"cannot create the report table {self.table}") from exc
            elif self.day_partitions and not self.is_day_partitioned(conn):
                log.warning(
                    "the report table %s exists and is not partitioned by day: day partitions apply to new "
                    "tables only; retention deletes its old rows in batches instead",
                    self.table,
                )
            # Quoted identifiers keep their case, but some databases report them folded: the
            # check is case-insensitive.
            version = ensure_schema(
                conn,
                self._target,
                self.table,
                SCHEMA,
                self.column_type,
                setting=self.setting,
                hint="drop it or choose another report_table",
            )
            if (recorded is None or recorded < INDEXES_VERSION) and version >= INDEXES_VERSION:
                self._add_indexes(conn)
            if self.day_partitions and self.is_day_partitioned(conn):
                self.add_day_partitions(conn)
        finally:
            dbapi.close_quietly(conn)

    def _add_indexes(self, conn: Any) -> None:
        """The indexes of schema version 3 (a migration: once per table). On a large table this
        builds each index once, blocking writes meanwhile on PostgreSQL: create them beforehand
        with ``CREATE INDEX CONCURRENTLY`` under the same names to avoid that. A role that may
        not create them gets a warning (they speed reads, the report is right without them) and
        the table stays recorded at the version before, so the next run tries again."""
        from polyv_connector.warehouse.runs_table import create_index

        if self.dialect in NO_INDEXES:
            log.debug("the report table %s: %s has no secondary indexes; none created", self.table, self.dialect)
            return
        statements = self.create_index_sql()
        try:
            for (suffix, _), statement in zip(INDEXES, statements, strict=True):
                if not self._index_exists(conn, self.index_name(suffix)):
                    create_index(conn, statement)
        except Exception as exc:
            dbapi.rollback_quietly(conn)
            record_version(conn, self._target, self.table, INDEXES_VERSION - 1)
            log.warning(
                "could not create the indexes of the report table %s (%s: %s); reading one run or one "
                "viewer stays slow until its owner runs: %s;",
                self.table,
                type(exc).__name__,
                str(exc).strip(),
                "; ".join(statements),
            )
            return
        log.info("indexed the report table %s by runId and by (appId, viewerId)", self.table)

    def _index_exists(self, conn: Any, index: str) -> bool:
        """Whether PostgreSQL has ``index`` beside the table (checked in the catalog: CREATE
        INDEX IF NOT EXISTS would first wait for the table's lock); elsewhere ``False``, and the
        CREATE itself tells."""
        if dialect_of_connection(conn).name != "postgresql":
            return False
        parts = split_table_name(self.table)
        name = ".".join([*parts[:-1], quote_identifier(index, '"{}"')])
        with dbapi.cursor(conn) as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
            row = cur.fetchone()
        conn.commit()
        return bool(row and row[0])

    # ---- day partitions (PostgreSQL) --------------------------------------------------------------
    def _check_day_partitions(self, engine: str) -> None:
        if engine != "postgresql":
            raise ConfigError(
                "report_day_partitions", f"day partitions are offered on PostgreSQL only, not on {engine}"
            )
        longest = unquote_identifier(split_table_name(self.partition_name(None))[-1]) + "xx"
        problem = identifier_too_long(longest, engine)
        if problem:
            raise ConfigError(self.setting, f"its day partitions would be too long ({problem}): shorten report_table")

    def partition_name(self, day: dt.date | None) -> str:
        """The partition of ``day`` (``<table>_pYYYYMMDD``), or the default one (``None``)."""
        return with_suffix(self.table, "_pdefault" if day is None else f"_p{day:%Y%m%d}")

    def is_day_partitioned(self, conn: Any) -> bool:
        """Whether the table is a PostgreSQL table partitioned (by day, as this class makes it)."""
        if dialect_of_connection(conn).name != "postgresql":
            return False
        with dbapi.cursor(conn) as cur:
            cur.execute("SELECT count(*) FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", (self.table,))
            row = cur.fetchone()
        conn.commit()
        return bool(row and row[0])

    def add_day_partitions(self, conn: Any, today: dt.date | None = None) -> list[str]:
        """Create the partitions of yesterday to :data:`DAYS_AHEAD` days ahead and the default
        one, those that are missing; the names created. Each waits at most
        :data:`PARTITION_LOCK_TIMEOUT` for the table's lock (another run writing its report):
        a partition left out is made by a later run, and the default partition holds its rows."""
        today = today or dt.datetime.now(dt.UTC).date()
        wanted: list[tuple[str, str]] = [(self.partition_name(None), "DEFAULT")]
        for offset in range(-1, DAYS_AHEAD + 1):
            day = today + dt.timedelta(days=offset)
            bounds = f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + dt.timedelta(days=1)).isoformat()}')"
            wanted.append((self.partition_name(day), bounds))
        created = []
        for name, bounds in wanted:
            with dbapi.cursor(conn) as cur:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
                row = cur.fetchone()
            conn.commit()
            if row and row[0]:
                continue
            try:
                with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
                    cur.execute(f"SET LOCAL lock_timeout = '{PARTITION_LOCK_TIMEOUT}'")
                    cur.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {self.table} {bounds}")
                created.append(name)
            except Exception as exc:
                log.warning(
                    "could not create the report partition %s now (%s: %s); a later run will",
                    name,
                    type(exc).__name__,
                    str(exc).strip(),
                )
        if created:
            log.info("created the report partition(s) %s", ", ".join(created))
        return created

    # ---- ReportSink --------------------------------------------------------------------------
    def _open(self) -> Any:
        return self._target.open(ConfigError, self.setting, "report")

    def write(self, batch: pa.RecordBatch) -> None:
        """Append one record batch (report schema) inside the run's transaction."""
        if batch.num_rows == 0:
            return
        if self._conn is None:
            # Opened on the first write: the report comes after sending, which may take hours.
            self._conn = self._open()
            if dialect_of_connection(self._conn).name == "duckdb":
                # DuckDB's Python connection commits each statement unless a transaction is
                # open: the run's rows must stand or fall together (close commits, abort rolls back).
                self._conn.execute("BEGIN TRANSACTION")
        if self.dialect in ("postgresql", "redshift"):
            # PostgreSQL text cannot hold NUL: stored escaped (docs/report.md#text-in-the-report), so the
            # report of items POLYV confirmed can always be written (a psycopg connection is
            # escaped by bulk_insert itself).
            batch = dbapi.escape_nul(batch)
        path = dbapi.bulk_insert(
            self._conn,
            self.table,
            list(REPORT_COLUMNS),
            batch,
            identifier_format=self.identifier_format,
            placeholder=self.placeholder,
            chunk_rows=self.chunk_rows,
            use_copy=self.use_copy,
        )
        if path != self.write_path:
            self.write_path = path
            level = logging.INFO if path != "executemany" else logging.WARNING
            log.log(level, "writing the report table %s with %s (%s)", self.table, path, _PATHS[path])
        self.rows_written += batch.num_rows

    def close(self) -> None:
        """Commit the run's rows (one transaction) and release the connection."""
        if self._closed:
            return
        self._closed = True
        if self._conn is None:
            return
        try:
            self._conn.commit()
            log.info("wrote %s report row(s) to %s", f"{self.rows_written:,}", self.table)
        finally:
            dbapi.close_quietly(self._conn)
            self._conn = None

    def abort(self) -> None:
        """Roll back whatever this run wrote (the sync failed before the report was complete)."""
        if self._closed:
            return
        self._closed = True
        if self._conn is not None:
            dbapi.rollback_quietly(self._conn)
            dbapi.close_quietly(self._conn)
            self._conn = None
