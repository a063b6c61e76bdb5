"""Retention: the report rows and runs records of old runs are deleted, a little at a time.

Off unless set (an upgrade never deletes history by surprise): ``report_retention_days`` keeps
the report rows of the runs *started* (the runs table's ``startedAt``) in that many days, across
the whole report table (every account); ``runs_retention_days`` does the same for the runs
table's own rows. A report row never outlives its run's record: with both set, the report's
cutoff is the later of the two.

How (:func:`apply_retention`):

1. On a PostgreSQL report table partitioned by day (``day_partitions``), every partition whose
   whole day ends before the cutoff is dropped (:func:`drop_old_partitions`): a catalog change,
   not a row-by-row delete. Each drop waits at most a few seconds for the table's lock and is
   left to the next run when another run is writing.
2. The runs started before the cutoff whose report rows are still there (``reportPurgedAt``
   NULL) are taken a few at a time, oldest first; each one's report rows are deleted in batches
   of ``batch_rows`` rows, each batch its own short transaction (a row lock held for the time
   of one small batch, never a lock that blocks another run's writes for long), then the run is
   marked ``reportPurgedAt``. Rows left by a partition drop are nearly none.
3. The runs rows older than the runs retention whose report rows are gone are deleted, in
   batches too.

A run killed before it finished keeps its row like any other (``finishedAt`` NULL) until the
runs retention removes it. Report rows of runs the runs table never knew (written before it
existed) are left alone. ``max_seconds`` bounds the work of one call (at the end of a run):
what is left is done by the next call, since each step resumes where the last stopped.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyv_connector.errors import ConfigError
from polyv_connector.parsers import retention_days as check_retention_days
from polyv_connector.warehouse import dbapi
from polyv_connector.warehouse.db_errors import database_error
from polyv_connector.warehouse.dialect import dialect_named, dialect_of_connection
from polyv_connector.warehouse.identifiers import (
    check_table_name,
    quote_identifier,
    split_table_name,
    unquote_identifier,
)
from polyv_connector.warehouse.runs_table import db_time, execute_each

log = logging.getLogger("polyv_connector")

__all__ = ["apply_retention", "check_retention_days", "purge_report_folder"]

#: How long the retention at the end of a run may take; the next run goes on from there.
END_OF_RUN_SECONDS = 120.0
#: Report rows deleted per statement (and per transaction).
DEFAULT_BATCH_ROWS = 10_000
#: Runs taken per look-up of old runs.
RUNS_PER_LOOKUP = 100
#: How long dropping a partition waits for the report table's lock.
DROP_LOCK_TIMEOUT = "5s"
#: Files of a report folder that retention deletes: Parquet reports, run pages, summaries.
REPORT_FILE_SUFFIXES = (".parquet", ".html", ".json")


def cutoffs(
    report_retention_days: int | None, runs_retention_days: int | None, now: dt.datetime
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The report's and the runs table's cutoffs (runs started before them go), ``None`` when
    off. The report's is never earlier than the runs table's: a report row never outlives its
    run's record."""
    runs = now - dt.timedelta(days=runs_retention_days) if runs_retention_days else None
    report = now - dt.timedelta(days=report_retention_days) if report_retention_days else None
    if runs is not None and (report is None or report < runs):
        report = runs
    return report, runs


@dataclass
class RetentionResult:
    """What one :func:`apply_retention` call deleted, and whether it got through everything."""

    report_rows_deleted: int = 0
    runs_purged: int = 0
    runs_rows_deleted: int = 0
    partitions_dropped: list[str] = field(default_factory=list)
    complete: bool = True


class _Sql:
    """The statements retention runs, for one engine."""

    def __init__(self, conn: Any, target: dbapi.Target, report_table: str | None, runs_table: str) -> None:
        self.engine = dialect_of_connection(conn).name
        if self.engine == "generic":
            self.engine = dialect_named(target.dialect).name
        self.p = target.placeholder
        self.fmt = target.identifier_format
        self.report = report_table
        self.runs = runs_table

    def q(self, name: str) -> str:
        return quote_identifier(name, self.fmt)

    def old_runs(self, limit: int) -> str:
        return (
            f"SELECT {self.q('runId')} FROM {self.runs} WHERE {self.q('startedAt')} < {self.p} "
            f"AND {self.q('reportPurgedAt')} IS NULL ORDER BY {self.q('startedAt')} LIMIT {int(limit)}"
        )

    def delete_report_batch(self, limit: int) -> str:
        """Delete about ``limit`` report rows of one run (``runId`` bound :meth:`batch_params`
        times)."""
        run, n = self.q("runId"), int(limit)
        if self.engine == "postgresql":
            # ctid is a row's address within its own partition: the same address in another
            # partition is another row, so the run is named outside the subquery too.
            return (
                f"DELETE FROM {self.report} WHERE {run} = {self.p} AND ctid = ANY(ARRAY("
                f"SELECT ctid FROM {self.report} WHERE {run} = {self.p} LIMIT {n}))"
            )
        if self.engine == "mysql":
            return f"DELETE FROM {self.report} WHERE {run} = {self.p} LIMIT {n}"
        if self.engine in ("duckdb", "sqlite"):
            return (
                f"DELETE FROM {self.report} WHERE rowid IN (SELECT rowid FROM {self.report} WHERE {run} = {self.p} "
                f"LIMIT {n})"
            )
        return f"DELETE FROM {self.report} WHERE {run} = {self.p}"  # one statement: no portable LIMIT

    def batch_params(self, run_id: str) -> tuple[str, ...]:
        return (run_id, run_id) if self.engine == "postgresql" else (run_id,)

    def mark_purged(self) -> str:
        return f"UPDATE {self.runs} SET {self.q('reportPurgedAt')} = {self.p} WHERE {self.q('runId')} = {self.p}"

    def old_purged_runs(self, limit: int) -> str:
        return (
            f"SELECT {self.q('runId')} FROM {self.runs} WHERE {self.q('startedAt')} < {self.p} "
            f"AND {self.q('reportPurgedAt')} IS NOT NULL ORDER BY {self.q('startedAt')} LIMIT {int(limit)}"
        )

    def delete_runs(self, count: int) -> str:
        marks = ", ".join([self.p] * count)
        return f"DELETE FROM {self.runs} WHERE {self.q('runId')} IN ({marks})"


def _execute(conn: Any, engine: str, sql: str, params: tuple[Any, ...]) -> int:
    """``sql`` in a transaction of its own; the rows it touched."""
    return execute_each(conn, engine, [(sql, params)])[0]


def _query(conn: Any, sql: str, params: tuple[Any, ...]) -> list[Any]:
    with dbapi.cursor(conn) as cur:
        cur.execute(sql, params)
        rows = [r[0] for r in cur.fetchall()]
    conn.commit()  # a read leaves no transaction open (PostgreSQL would hold its snapshot)
    return rows


def apply_retention(
    connection: Any,
    runs_table: str,
    report_table: str | None = None,
    *,
    report_retention_days: int | None = None,
    runs_retention_days: int | None = None,
    now: dt.datetime | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    max_seconds: float | None = None,
    dialect: str | None = None,
    placeholder: str | None = None,
    identifier_format: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RetentionResult:
    """Delete the report rows and runs rows of runs older than the retention (see the module).

    :param connection: a ``DbApiHook`` or a DB-API connection factory reaching both tables.
    :param runs_table: the runs table (:func:`~polyv_connector.warehouse.runs_table.runs_table_name`).
    :param report_table: the report table, ``None`` when there is none.
    :param now: the time retention counts back from (default: now, UTC).
    :param max_seconds: stop after about this long (``complete`` is then ``False``).
    """
    result = RetentionResult()
    if not report_retention_days and not runs_retention_days:
        return result
    now = now or dt.datetime.now(dt.UTC)
    report_cutoff, runs_cutoff = cutoffs(report_retention_days, runs_retention_days, now)
    runs_table = check_table_name(runs_table, "runs_table")
    report_table = check_table_name(report_table, "report_table") if report_table else None
    target = dbapi.resolve(connection, placeholder=placeholder, identifier_format=identifier_format, dialect=dialect)
    deadline = None if max_seconds is None else clock() + max_seconds
    conn = target.open(ConfigError, "runs_table", "runs")
    try:
        sql = _Sql(conn, target, report_table, runs_table)
        try:
            if report_table and report_cutoff is not None:
                if sql.engine == "postgresql":
                    result.partitions_dropped = drop_old_partitions(conn, report_table, report_cutoff)
                _purge_report_rows(conn, sql, report_cutoff, now, batch_rows, deadline, clock, result)
            else:
                _mark_without_report(conn, sql, report_cutoff, now, deadline, clock, result)
            if result.complete and runs_cutoff is not None:
                _purge_runs_rows(conn, sql, runs_cutoff, deadline, clock, result)
        except Exception as exc:
            raise database_error(exc, "report_retention_days", "retention could not delete old rows") from exc
    finally:
        dbapi.close_quietly(conn)
    log.info(
        "retention: deleted %s report row(s) of %d run(s)%s and %d runs row(s)%s",
        f"{result.report_rows_deleted:,}",
        result.runs_purged,
        f", dropped {len(result.partitions_dropped)} day partition(s)" if result.partitions_dropped else "",
        result.runs_rows_deleted,
        "" if result.complete else "; stopped by its time limit, the next run goes on",
    )
    return result


def _out_of_time(deadline: float | None, clock: Callable[[], float], result: RetentionResult) -> bool:
    if deadline is not None and clock() >= deadline:
        result.complete = False
        return True
    return False


def _purge_report_rows(
    conn: Any,
    sql: _Sql,
    cutoff: dt.datetime,
    now: dt.datetime,
    batch_rows: int,
    deadline: float | None,
    clock: Callable[[], float],
    result: RetentionResult,
) -> None:
    since = db_time(cutoff, sql.engine)
    while True:
        run_ids = _query(conn, sql.old_runs(RUNS_PER_LOOKUP), (since,))
        if not run_ids:
            return
        for run_id in run_ids:
            while True:
                if _out_of_time(deadline, clock, result):
                    return
                deleted = _execute(conn, sql.engine, sql.delete_report_batch(batch_rows), sql.batch_params(run_id))
                result.report_rows_deleted += deleted
                if deleted < batch_rows:
                    break
            _execute(conn, sql.engine, sql.mark_purged(), (db_time(now, sql.engine), run_id))
            result.runs_purged += 1


def _mark_without_report(
    conn: Any,
    sql: _Sql,
    cutoff: dt.datetime | None,
    now: dt.datetime,
    deadline: float | None,
    clock: Callable[[], float],
    result: RetentionResult,
) -> None:
    """No report table (a Parquet-only report): old runs have no rows to delete; marked as purged
    so the runs retention may remove them."""
    if cutoff is None:
        return
    since = db_time(cutoff, sql.engine)
    while not _out_of_time(deadline, clock, result):
        run_ids = _query(conn, sql.old_runs(RUNS_PER_LOOKUP), (since,))
        if not run_ids:
            return
        for run_id in run_ids:
            _execute(conn, sql.engine, sql.mark_purged(), (db_time(now, sql.engine), run_id))


def _purge_runs_rows(
    conn: Any,
    sql: _Sql,
    cutoff: dt.datetime,
    deadline: float | None,
    clock: Callable[[], float],
    result: RetentionResult,
) -> None:
    since = db_time(cutoff, sql.engine)
    while not _out_of_time(deadline, clock, result):
        run_ids = _query(conn, sql.old_purged_runs(RUNS_PER_LOOKUP), (since,))
        if not run_ids:
            return
        result.runs_rows_deleted += _execute(conn, sql.engine, sql.delete_runs(len(run_ids)), tuple(run_ids))


# ---- PostgreSQL day partitions -----------------------------------------------------------------
def day_partitions(conn: Any, report_table: str) -> dict[str, dt.date]:
    """The day partitions of ``report_table`` (``<table>_pYYYYMMDD``, as
    :class:`~polyv_connector.warehouse.report_table.SqlReportTable` makes them): qualified name
    -> day. Empty for a table that is not partitioned."""
    base = unquote_identifier(split_table_name(report_table)[-1])
    pattern = re.compile(re.escape(base) + r"_p(\d{8})$")
    with dbapi.cursor(conn) as cur:
        cur.execute(
            "SELECT n.nspname, c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = to_regclass(%s)",
            (report_table,),
        )
        rows = cur.fetchall()
    conn.commit()
    found: dict[str, dt.date] = {}
    for schema, name in rows:
        match = pattern.match(name)
        if match:
            day = dt.datetime.strptime(match.group(1), "%Y%m%d").date()
            found[f"{quote_identifier(schema)}.{quote_identifier(name)}"] = day
    return found


def drop_old_partitions(conn: Any, report_table: str, cutoff: dt.datetime) -> list[str]:
    """Drop the day partitions of ``report_table`` whose whole day ends at or before ``cutoff``
    (every row there was written, so its run started, before the cutoff); the names dropped.

    Each drop waits at most :data:`DROP_LOCK_TIMEOUT` for the lock (it needs the table to itself
    for a moment): while another run writes its report, the partition is left to the next call.
    """
    last_day = cutoff.astimezone(dt.UTC).date()  # partitions of days before it end by the cutoff
    dropped = []
    for name, day in sorted(day_partitions(conn, report_table).items(), key=lambda kv: kv[1]):
        if day >= last_day:
            continue
        try:
            with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
                cur.execute(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'")
                cur.execute(f"DROP TABLE {name}")
            dropped.append(name)
        except Exception as exc:
            log.warning("retention: could not drop %s now (%s: %s); the next run will", name, type(exc).__name__, exc)
    return dropped


# ---- a report folder ---------------------------------------------------------------------------
def purge_report_folder(
    folder: str | os.PathLike[str],
    retention_days: int | None,
    *,
    now: dt.datetime | None = None,
    started_by_place: Mapping[str, dt.datetime] | None = None,
) -> list[Path]:
    """Delete the Parquet reports, run pages and summaries (:data:`REPORT_FILE_SUFFIXES`) in a
    DAG's report ``folder`` (and its subfolders) older than ``retention_days``; the files deleted.

    A file's age is its run's start when ``started_by_place`` knows the file (its absolute path:
    :meth:`RunsTable.started_by_place <polyv_connector.warehouse.runs_table.RunsTable.started_by_place>`),
    else its modification time. Symlinks are never followed nor deleted: nothing outside the
    folder is touched. ``None`` (retention off) deletes nothing.
    """
    if not retention_days:
        return []
    now = now or dt.datetime.now(dt.UTC)
    cutoff = now - dt.timedelta(days=retention_days)
    root = Path(folder)
    try:
        if root.is_symlink() or not root.is_dir():
            return []
    except OSError:
        return []
    known = {os.path.abspath(k): v for k, v in (started_by_place or {}).items()}
    deleted: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        # os.walk lists a symlink to a folder among dirnames but never enters it (followlinks off).
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        for name in filenames:
            if not name.lower().endswith(REPORT_FILE_SUFFIXES):
                continue
            path = os.path.join(dirpath, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):  # a symlink, FIFO or device: never ours to delete
                continue
            started = known.get(os.path.abspath(path))
            when = started if started is not None else dt.datetime.fromtimestamp(info.st_mtime, dt.UTC)
            if when < cutoff:
                try:
                    os.unlink(path)
                except OSError as exc:
                    log.warning("retention: could not delete %s: %s", path, exc)
                    continue
                deleted.append(Path(path))
    if deleted:
        log.info("retention: deleted %d old report file(s) in %s", len(deleted), root)
    return deleted
