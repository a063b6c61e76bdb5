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

import logging
from typing import Any

import pyarrow as pa

from polyv_connector.errors import ConfigError
from polyv_connector.model import REPORT_COLUMNS
from polyv_connector.warehouse import dbapi
from polyv_connector.warehouse.db_errors import database_error
from polyv_connector.warehouse.dialect import BIGINT, TEXT, TIMESTAMP, dialect_named, dialect_of_connection
from polyv_connector.warehouse.identifiers import check_table_name, quote_identifier
from polyv_connector.warehouse.schema import Column, TableSchema, ensure_schema, existing_columns

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
]
SCHEMA = TableSchema("report", SCHEMA_VERSIONS)


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
        self.prepare()

    # ---- the table ---------------------------------------------------------------------------
    def column_type(self, column: Column) -> str:
        """The SQL type of a report column in this dialect (without ``NOT NULL``)."""
        return dialect_named(self.dialect).column_type(column.kind)

    def create_table_sql(self) -> str:
        """The ``CREATE TABLE`` statement for this dialect (the current schema version)."""
        columns = ",\n  ".join(
            f"{quote_identifier(c.name, self.identifier_format)} {self.column_type(c)}"
            + (" NOT NULL" if c.not_null else "")
            for c in SCHEMA.columns()
        )
        guard = "IF NOT EXISTS " if dialect_named(self.dialect).if_not_exists else ""
        return f"CREATE TABLE {guard}{self.table} (\n  {columns}\n)"

    def prepare(self) -> None:
        """Create the table if absent; check an existing one and bring it to the current schema
        version (:func:`~polyv_connector.warehouse.schema.ensure_schema`)."""
        conn = self._open()
        try:
            if existing_columns(conn, self.table) is None:
                try:
                    with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
                        cur.execute(self.create_table_sql())
                    log.info("created the report table %s", self.table)
                except Exception as exc:
                    # Another task may have created it between our probe and our CREATE.
                    if existing_columns(conn, self.table) is None:
                        raise database_error(exc, self.setting, f"cannot create the report table {self.table}") from exc
            # Quoted identifiers keep their case, but some databases report them folded: the
            # check is case-insensitive.
            ensure_schema(
                conn,
                self._target,
                self.table,
                SCHEMA,
                self.column_type,
                setting=self.setting,
                hint="drop it or choose another report_table",
            )
        finally:
            dbapi.close_quietly(conn)

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
