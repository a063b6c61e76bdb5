"""A task's record of its run: the runs table row (written at the start, completed at the end) and
retention at the end of the run, for the operator.

The runs table is kept next to a report table (``report_table``; ``runs_table`` names it,
default ``<report_table>_runs``): a table-only or Parquet-only DAG without a report table has
no runs table, its summary JSON and run page are its record. Retention (``report_retention_days``,
``runs_retention_days``) deletes old report rows and runs rows in bounded batches, and the
DAG's old report files (Parquet reports, run pages, summaries) in its report folder.

Nothing here fails a run once it has started: the runs table row and retention are records
and housekeeping, written after (or beside) the sends; a problem is a warning in the task log.
Making the runs table (create, migrate, check) does fail the run, before anything is sent, as
the report table does.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from polyv_connector.errors import ConfigError

if TYPE_CHECKING:
    from polyv_connector.engine.result import SyncResult
    from polyv_connector.run import Front
    from polyv_connector.runspec import RunSpec
    from polyv_connector.warehouse.runs_table import RunsTable

log = logging.getLogger("polyv_connector")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class RunRecord:
    """One task run's runs table row and end-of-run retention.

    :param runs: the runs table (None: the run has no report table, so no runs table).
    :param hook: the report table's connection (retention reaches both tables through it).
    :param report_table: the report table's name.
    :param folder: the DAG's report folder (its old files go with the retention).
    """

    spec: RunSpec
    front: Front
    runs: RunsTable | None
    hook: Any
    report_table: str | None
    folder: str | None
    run_id: str | None = None

    @classmethod
    def open(cls, spec: RunSpec, front: Front, facts: dict[str, Any], folder: str | None) -> RunRecord:
        """The run's record: the runs table made (created, migrated) now when there is a report
        table. :raises ConfigError: naming ``runs_table`` (too long a name, no report table, a
        table that cannot be made)."""
        hook = facts.get("report_hook")
        report_table = spec.report_table
        if spec.runs_table and not report_table:
            raise ConfigError(spec.label("runs_table"), "needs report_table: the runs table sits next to it")
        runs = None
        if report_table and hook is not None:
            from polyv_connector.warehouse import dbapi
            from polyv_connector.warehouse.runs_table import RunsTable, runs_table_name

            dialect = dbapi.resolve(hook).dialect
            name = runs_table_name(report_table, spec.runs_table, dialect, spec.label("runs_table"))
            runs = RunsTable(hook, name, setting=spec.label("runs_table"))
            facts["runs_table"] = name
        return cls(spec=spec, front=front, runs=runs, hook=hook, report_table=report_table, folder=folder)

    def start(self, run_id: str, *, app_id: str, run_page: str | None) -> None:
        """Write the run's row: a run killed from here on shows as started, never finished."""
        self.run_id = run_id
        if self.runs is None:
            return
        from polyv_connector.warehouse.runs_table import RunStart

        options, front = self.spec.options, self.front
        sliced = options.partitions > 1
        try:
            self.runs.start(
                RunStart(
                    run_id=run_id,
                    started_at=_now(),
                    app_id=app_id,
                    airflow_run_id=options.airflow_run_id,
                    dag_id=front.dag_id,
                    task_id=front.task_id,
                    map_index=front.map_index,
                    partition=options.partition if sliced else None,
                    partitions=options.partitions if sliced else None,
                    report_rows=options.report_rows,
                    run_page=run_page,
                    report_location=self.spec.report_path or self.report_table,
                )
            )
        except Exception as exc:
            log.warning("runs table: could not record the start of run %s: %s", run_id, exc)

    def finish(self, result: SyncResult, summary: dict[str, Any]) -> None:
        """Complete the run's row with how it ended (counts, requests, the report rows written)."""
        if self.runs is None or self.run_id is None:
            return
        from polyv_connector.warehouse.runs_table import run_end_from_summary

        try:
            end = run_end_from_summary(
                summary,
                finished_at=_now(),
                timeline=result.timeline,
                report_rows_written=summary.get("reportRowsWritten"),
                report_rows_dropped=summary.get("reportRowsDropped"),
            )
            self.runs.finish(self.run_id, end)
        except Exception as exc:
            log.warning("runs table: could not record the end of run %s: %s", self.run_id, exc)

    def retain(self) -> None:
        """Retention at the end of the run, bounded in time; what is left goes to the next run."""
        spec = self.spec
        report_days, runs_days = spec.report_retention_days, spec.runs_retention_days
        if not report_days and not runs_days:
            return
        from polyv_connector.warehouse.retention import END_OF_RUN_SECONDS, apply_retention, purge_report_folder

        started: dict[str, dt.datetime] = {}
        if self.runs is not None:
            try:
                apply_retention(
                    self.hook,
                    self.runs.table,
                    self.report_table,
                    report_retention_days=report_days,
                    runs_retention_days=runs_days,
                    max_seconds=END_OF_RUN_SECONDS,
                )
                started = self.runs.started_by_place()
            except Exception as exc:
                log.warning("retention: could not delete old rows (the next run tries again): %s", exc)
        if self.folder and report_days:
            try:
                purge_report_folder(self.folder, report_days, started_by_place=started)
            except Exception as exc:
                log.warning("retention: could not clean the report folder %s: %s", self.folder, exc)
