"""The runs table: one row per run (per partition when partitioned) next to the report table.

A run's row is written when the run starts (:meth:`RunsTable.start`) and completed when it ends
(:meth:`RunsTable.finish`): a run killed in between (``kill -9``, a lost worker) stays visible
as started and never finished (``finishedAt`` NULL). The table is named by ``runs_table``,
default ``<report_table>_runs`` (:func:`runs_table_name`); a name over the engine's identifier
limit is a :class:`~polyv_connector.errors.ConfigError` naming ``runs_table``.

Columns (camelCase, always quoted): who and what (``runId``, ``airflowRunId``, ``dagId``,
``taskId``, ``mapIndex``, ``appId``, ``partition``, ``partitions``), when (``startedAt``,
``finishedAt``, UTC), how it ended (``outcome``: the exit code's name such as ``ok`` or
``items_unsuccessful``; ``exitCode``; ``stopCause``), what it did (``countsByStatus``,
``countsByReason``, ``changesByKind`` (NULL when not known) and ``reportRowsDropped`` as JSON
text; ``reportRows``, the setting, and ``reportRowsWritten``; ``requests``, ``retries``,
``splits``, ``budgetWaitSeconds``, ``rowsRead``), where to look (``runPage``,
``reportLocation``) and ``reportPurgedAt``, set by retention
(:mod:`polyv_connector.warehouse.retention`) once the run's report rows were deleted.

Versioned like the report and state tables (:mod:`polyv_connector.warehouse.schema`): a later
version appends columns to :data:`SCHEMA_VERSIONS`, and an existing table gains them on open.
Indexed by ``runId`` and by ``startedAt`` (what retention reads). Every write is its own short
transaction on its own connection: the runs table never holds a lock for the length of a run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from polyv_connector.errors import ConfigError
from polyv_connector.model import RUNS_SUFFIX
from polyv_connector.warehouse import dbapi
from polyv_connector.warehouse.db_errors import database_error
from polyv_connector.warehouse.dialect import BIGINT, DOUBLE, TEXT, TIMESTAMP, dialect_named, dialect_of_connection
from polyv_connector.warehouse.identifiers import (
    check_table_name,
    identifier_too_long,
    quote_identifier,
    split_table_name,
    unquote_identifier,
    with_suffix,
)
from polyv_connector.warehouse.schema import Column, TableSchema, ensure_schema, existing_columns

log = logging.getLogger("polyv_connector")


SCHEMA_VERSIONS: list[tuple[int, list[Column]]] = [
    (
        1,
        [
            Column("runId", TEXT, not_null=True),
            Column("airflowRunId", TEXT),
            Column("dagId", TEXT),
            Column("taskId", TEXT),
            Column("mapIndex", BIGINT),
            Column("appId", TEXT),
            Column("partition", BIGINT),
            Column("partitions", BIGINT),
            Column("startedAt", TIMESTAMP, not_null=True),
            Column("finishedAt", TIMESTAMP),
            Column("outcome", TEXT),
            Column("exitCode", BIGINT),
            Column("stopCause", TEXT),
            Column("countsByStatus", TEXT),
            Column("countsByReason", TEXT),
            Column("changesByKind", TEXT),
            Column("reportRows", TEXT),
            Column("reportRowsWritten", BIGINT),
            Column("reportRowsDropped", TEXT),
            Column("requests", BIGINT),
            Column("retries", BIGINT),
            Column("splits", BIGINT),
            Column("budgetWaitSeconds", DOUBLE),
            Column("rowsRead", BIGINT),
            Column("runPage", TEXT),
            Column("reportLocation", TEXT),
            Column("reportPurgedAt", TIMESTAMP),
        ],
    ),
]
SCHEMA = TableSchema("runs", SCHEMA_VERSIONS)
#: Columns holding JSON text (objects of counts), decoded by :meth:`RunsTable.get`.
JSON_COLUMNS = frozenset({"countsByStatus", "countsByReason", "changesByKind", "reportRowsDropped"})
TIME_COLUMNS = frozenset({"startedAt", "finishedAt", "reportPurgedAt"})


def runs_table_name(report_table: str | None, runs_table: str | None, dialect: str, setting: str = "runs_table") -> str:
    """The runs table's name: ``runs_table`` when given, else ``<report_table>_runs``.

    :raises ConfigError: naming ``setting``, when neither is given, the name is not a table
        name, or it is over the engine's identifier limit (PostgreSQL would silently cut it,
        and two report tables could then share one runs table).
    """
    if runs_table and runs_table.strip():
        name = check_table_name(runs_table, setting)
    elif report_table and report_table.strip():
        name = with_suffix(check_table_name(report_table, "report_table"), RUNS_SUFFIX)
    else:
        raise ConfigError(setting, "give runs_table, or a report_table to name it after")
    problem = identifier_too_long(unquote_identifier(split_table_name(name)[-1]), dialect_named(dialect).name)
    if problem:
        raise ConfigError(setting, f"{problem}: give a shorter runs_table")
    return name


@dataclass(frozen=True)
class RunStart:
    """What is known of a run when it starts (written by :meth:`RunsTable.start`)."""

    run_id: str
    started_at: dt.datetime
    app_id: str | None = None
    airflow_run_id: str | None = None
    dag_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    partition: int | None = None
    partitions: int | None = None
    report_rows: str | None = None
    run_page: str | None = None
    report_location: str | None = None


@dataclass(frozen=True)
class RunEnd:
    """How a run ended (written by :meth:`RunsTable.finish`); ``None`` leaves a column as it was."""

    finished_at: dt.datetime
    outcome: str
    exit_code: int
    stop_cause: str | None = None
    counts_by_status: Mapping[str, int] | None = None
    counts_by_reason: Mapping[str, int] | None = None
    changes_by_kind: Mapping[str, int] | None = None
    report_rows_written: int | None = None
    report_rows_dropped: Mapping[str, int] | None = None
    requests: int | None = None
    retries: int | None = None
    splits: int | None = None
    budget_wait_seconds: float | None = None
    rows_read: int | None = None
    run_page: str | None = None
    report_location: str | None = None


def run_end_from_summary(
    summary: Mapping[str, Any],
    *,
    finished_at: dt.datetime,
    timeline: Any = None,
    report_rows_written: int | None = None,
    report_rows_dropped: Mapping[str, int] | None = None,
    changes_by_kind: Mapping[str, int] | None = None,
) -> RunEnd:
    """A :class:`RunEnd` from a run's summary (``SyncResult.to_dict()``, or the operator's XCom
    summary) and its timeline (``SyncResult.timeline``: retries, splits, budget wait)."""
    from polyv_connector import exit_codes

    code = int(summary.get("exitCode", exit_codes.INTERNAL.code))
    outcome = next((c.name for c in exit_codes.ALL if c.code == code), f"exit_{code}")
    return RunEnd(
        finished_at=finished_at,
        outcome=outcome,
        exit_code=code,
        stop_cause=summary.get("abortCause") or ("gate" if summary.get("gateFailures") else None),
        counts_by_status=summary.get("counts"),
        counts_by_reason=summary.get("countsByReason"),
        changes_by_kind=changes_by_kind,
        report_rows_written=report_rows_written,
        report_rows_dropped=report_rows_dropped,
        requests=summary.get("requestsSent"),
        retries=sum(timeline.retries) if timeline is not None else None,
        splits=sum(timeline.splits) if timeline is not None else None,
        budget_wait_seconds=timeline.budget_wait_s if timeline is not None else None,
        rows_read=summary.get("items"),
        run_page=summary.get("runPage"),
        report_location=summary.get("report"),
    )


# Python field -> column, for both dataclasses (camelCase of the field name).
def _column(field_name: str) -> str:
    head, *rest = field_name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def db_time(value: dt.datetime, dialect: str) -> dt.datetime:
    """``value`` as the engine's timestamp column takes it: aware UTC for PostgreSQL
    (``timestamptz``), naive UTC elsewhere (``DATETIME``/``TIMESTAMP`` have no zone, and a
    driver would otherwise shift an aware value by the session's zone)."""
    utc = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return utc if dialect in ("postgresql", "redshift") else utc.replace(tzinfo=None)


def as_utc(value: Any) -> Any:
    """A timestamp read back from any engine as an aware UTC datetime (naive ones are UTC)."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return value


def _json(value: Mapping[str, int] | None) -> str | None:
    return None if value is None else json.dumps(dict(value), sort_keys=True, separators=(",", ":"))


def index_name(table: str, what: str, dialect: str) -> str:
    """``<table's own name>_<what>_idx``, cut (with a hash of the whole) to the engine's limit."""
    import hashlib

    base = re.sub(r"\W", "_", unquote_identifier(split_table_name(table)[-1]))
    name = f"{base}_{what}_idx"
    if identifier_too_long(name, dialect) is None:
        return name
    digest = hashlib.md5(name.encode("utf-8")).hexdigest()[:8]
    return f"{base[:40]}_{digest}_{what}_idx"


def create_index(conn: Any, statement: str) -> None:
    """Run ``CREATE INDEX``, taking an index that is already there as done (MySQL has no
    ``IF NOT EXISTS`` for indexes: its error 1061 says so)."""
    try:
        with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
            cur.execute(statement)
    except Exception as exc:
        text = str(exc).lower()
        if "duplicate key name" in text or "already exists" in text:
            return
        raise


class RunsTable:
    """The runs table ``table`` reached through a ``DbApiHook`` or a DB-API connection factory.

    :param connection: a ``DbApiHook`` (anything with ``get_conn()``) or a zero-argument
        callable returning a new DB-API connection.
    :param table: ``[schema.]table`` (see :func:`runs_table_name` for the default).
    :param migrate: create/migrate the table when opened; ``False`` (a dry run) only checks it
        if it exists.
    """

    def __init__(
        self,
        connection: Any,
        table: str,
        *,
        dialect: str | None = None,
        placeholder: str | None = None,
        identifier_format: str | None = None,
        setting: str = "runs_table",
        migrate: bool = True,
    ) -> None:
        self.setting = setting
        self.table = check_table_name(table, setting)
        self._target = dbapi.resolve(
            connection, placeholder=placeholder, identifier_format=identifier_format, dialect=dialect
        )
        self.dialect = dialect_named(self._target.dialect).name
        problem = identifier_too_long(unquote_identifier(split_table_name(self.table)[-1]), self.dialect)
        if problem:
            raise ConfigError(setting, f"{problem}: give a shorter runs_table")
        self._starts: dict[str, RunStart] = {}
        self.prepare(migrate=migrate)

    # ---- SQL ------------------------------------------------------------------------------------
    def q(self, name: str) -> str:
        return quote_identifier(name, self._target.identifier_format)

    def column_type(self, column: Column) -> str:
        return dialect_named(self.dialect).column_type(column.kind)

    def create_table_sql(self) -> str:
        """``CREATE TABLE`` of the current schema version in this dialect."""
        columns = ",\n  ".join(
            f"{self.q(c.name)} {self.column_type(c)}" + (" NOT NULL" if c.not_null else "") for c in SCHEMA.columns()
        )
        guard = "IF NOT EXISTS " if dialect_named(self.dialect).if_not_exists else ""
        return f"CREATE TABLE {guard}{self.table} (\n  {columns}\n)"

    def create_index_sql(self) -> list[str]:
        """The indexes: by ``runId`` (start/finish, joins with the report) and by ``startedAt``
        (retention)."""
        d = dialect_named(self.dialect)
        return [
            d.create_index_sql(self.table, index_name(self.table, "run", self.dialect), [("runId", TEXT)]),
            d.create_index_sql(self.table, index_name(self.table, "started", self.dialect), [("startedAt", TIMESTAMP)]),
        ]

    # ---- the table ------------------------------------------------------------------------------
    def _open(self) -> Any:
        return self._target.open(ConfigError, self.setting, "runs")

    def prepare(self, *, migrate: bool = True) -> None:
        """Create the table and its indexes if absent; check and migrate an existing one."""
        conn = self._open()
        try:
            if self.dialect == "generic":  # a connection factory named no dialect: its driver tells
                self.dialect = dialect_of_connection(conn).name
            if existing_columns(conn, self.table) is None:
                if not migrate:
                    return
                try:
                    with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
                        cur.execute(self.create_table_sql())
                    for statement in self.create_index_sql():
                        create_index(conn, statement)
                    log.info("created the runs table %s", self.table)
                except Exception as exc:
                    if existing_columns(conn, self.table) is None:
                        raise database_error(exc, self.setting, f"cannot create the runs table {self.table}") from exc
            ensure_schema(
                conn,
                self._target,
                self.table,
                SCHEMA,
                self.column_type,
                setting=self.setting,
                hint="drop it or choose another runs_table",
                migrate=migrate,
            )
        finally:
            dbapi.close_quietly(conn)

    def _write(self, what: str, statements: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        """Run ``statements`` in one short transaction of their own; their row counts."""
        conn = self._open()
        try:
            counts = execute_each(conn, dialect_of_connection(conn).name, statements)
        except Exception as exc:
            raise database_error(exc, self.setting, f"cannot {what} in the runs table {self.table}") from exc
        finally:
            dbapi.close_quietly(conn)
        return counts

    def _insert_sql(self, values: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        columns = ", ".join(self.q(c) for c in values)
        marks = ", ".join([self._target.placeholder] * len(values))
        return f"INSERT INTO {self.table} ({columns}) VALUES ({marks})", tuple(values.values())

    def _start_values(self, run: RunStart) -> dict[str, Any]:
        values = {_column(f.name): getattr(run, f.name) for f in fields(run)}
        values["startedAt"] = db_time(run.started_at, self.dialect)
        return values

    def start(self, run: RunStart) -> None:
        """Write the run's row (``finishedAt`` NULL until :meth:`finish`); writing the same
        ``runId`` again replaces its row."""
        p = self._target.placeholder
        self._starts[run.run_id] = run
        self._write(
            "record the start of a run",
            [
                (f"DELETE FROM {self.table} WHERE {self.q('runId')} = {p}", (run.run_id,)),
                self._insert_sql(self._start_values(run)),
            ],
        )

    def finish(self, run_id: str, end: RunEnd) -> None:
        """Complete the run's row with how it ended. A run whose start was not recorded by this
        table (created meanwhile) gets a row now if this object recorded its start, else a
        warning: the end alone has no start time to keep."""
        values: dict[str, Any] = {}
        for f in fields(end):
            value = getattr(end, f.name)
            column = _column(f.name)
            if value is None and column not in ("stopCause",):
                continue
            if column in JSON_COLUMNS:
                value = _json(value)
            elif column in TIME_COLUMNS:
                value = db_time(value, self.dialect)
            values[column] = value
        p = self._target.placeholder
        sets = ", ".join(f"{self.q(c)} = {p}" for c in values)
        (updated,) = self._write(
            "record the end of a run",
            [(f"UPDATE {self.table} SET {sets} WHERE {self.q('runId')} = {p}", (*values.values(), run_id))],
        )
        if updated:
            return
        start = self._starts.get(run_id)
        if start is None:
            log.warning("the runs table %s has no row for run %s: its end is not recorded", self.table, run_id)
            return
        self._write("record a run", [self._insert_sql({**self._start_values(start), **values})])

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The run's row as a dict (JSON decoded, timestamps aware UTC), or ``None``."""
        rows = self.select(f"WHERE {self.q('runId')} = {self._target.placeholder}", (run_id,))
        return rows[0] if rows else None

    def select(self, where: str = "", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows matching ``where`` (SQL text of ours, values bound through ``params``)."""
        names = [c.name for c in SCHEMA.columns()]
        sql = f"SELECT {', '.join(self.q(n) for n in names)} FROM {self.table} {where}"
        conn = self._open()
        try:
            with dbapi.cursor(conn) as cur:
                cur.execute(sql, params)
                rows = cur.fetchall()
        finally:
            dbapi.close_quietly(conn)
        out = []
        for row in rows:
            record = dict(zip(names, row, strict=True))
            for name in JSON_COLUMNS:
                if record[name] is not None:
                    record[name] = json.loads(record[name])
            for name in TIME_COLUMNS:
                record[name] = as_utc(record[name])
            out.append(record)
        return out

    def started_by_place(self) -> dict[str, dt.datetime]:
        """Each run page and report location the table knows, with its run's start (what
        retention of a report folder goes by)."""
        places: dict[str, dt.datetime] = {}
        for row in self.select():
            for key in ("runPage", "reportLocation"):
                if row[key]:
                    places[row[key]] = row["startedAt"]
        return places


def execute_each(conn: Any, engine: str, statements: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
    """Run ``statements`` in one transaction of their own (committed, or rolled back on error);
    the rows each touched. DuckDB runs them on the connection itself: its cursors are separate
    connections with transactions of their own, and it answers a count row instead of rowcount."""
    if engine == "duckdb":
        counts = []
        conn.execute("BEGIN TRANSACTION")
        try:
            for sql, params in statements:
                conn.execute(sql, params)
                row = conn.fetchone()
                counts.append(int(row[0]) if row and row[0] is not None else 0)
            conn.commit()
        except Exception:
            dbapi.rollback_quietly(conn)
            raise
        return counts
    with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
        counts = []
        for sql, params in statements:
            cur.execute(sql, params)
            counts.append(max(int(getattr(cur, "rowcount", 0) or 0), 0))
    return counts
