"""The runs table on PostgreSQL, MariaDB and DuckDB: written at start, completed at the end,
versioned and migrated like the report table."""

from __future__ import annotations

import datetime as dt

import pytest

from polyv_connector.errors import ConfigError
from polyv_connector.warehouse.runs_table import (
    SCHEMA,
    RunEnd,
    RunsTable,
    RunStart,
    run_end_from_summary,
    runs_table_name,
)
from polyv_connector.warehouse.schema import recorded_version
from tests.warehouse.engines import Engine

T0 = dt.datetime(2026, 12, 1, 22, 30, 5, 123456, tzinfo=dt.UTC)


def _runs(engine: Engine, name: str = "polyv_report_runs") -> RunsTable:
    return RunsTable(engine.connect, engine.table(name), dialect=engine.dialect, **engine.table_kwargs())


def _start(run_id: str, started_at: dt.datetime = T0, **kw) -> RunStart:
    given = {"app_id": "app1", "dag_id": "dag", "task_id": "sync", **kw}
    return RunStart(run_id=run_id, started_at=started_at, **given)


def test_a_run_is_visible_when_it_starts_and_complete_when_it_ends(engine: Engine):
    runs = _runs(engine)
    runs.start(_start("r1", airflow_run_id="manual__1", map_index=2, partition=2, partitions=4, report_rows="changes"))
    row = runs.get("r1")
    assert row is not None
    assert row["startedAt"] == T0 and row["finishedAt"] is None and row["outcome"] is None
    assert (row["appId"], row["dagId"], row["taskId"], row["mapIndex"]) == ("app1", "dag", "sync", 2)
    assert (row["partition"], row["partitions"], row["reportRows"]) == (2, 4, "changes")
    end = RunEnd(
        finished_at=T0 + dt.timedelta(minutes=3),
        outcome="items_unsuccessful",
        exit_code=1,
        counts_by_status={"sent": 10, "unchanged": 990, "failed": 1},
        counts_by_reason={"unchanged": 990, "retries_exhausted": 1},
        report_rows_written=11,
        report_rows_dropped={"unchanged": 990},
        requests=3,
        retries=2,
        splits=1,
        budget_wait_seconds=1.25,
        rows_read=1001,
        run_page="/r/dag/r1.html",
        report_location="s.report",
    )
    runs.finish("r1", end)
    row = runs.get("r1")
    assert row is not None
    assert row["finishedAt"] == T0 + dt.timedelta(minutes=3)
    assert (row["outcome"], row["exitCode"], row["stopCause"]) == ("items_unsuccessful", 1, None)
    assert row["countsByStatus"] == {"sent": 10, "unchanged": 990, "failed": 1}
    assert row["countsByReason"] == {"unchanged": 990, "retries_exhausted": 1}
    assert row["changesByKind"] is None  # not known: NULL, not {}
    assert row["reportRowsDropped"] == {"unchanged": 990} and row["reportRowsWritten"] == 11
    assert (row["requests"], row["retries"], row["splits"], row["rowsRead"]) == (3, 2, 1, 1001)
    assert row["budgetWaitSeconds"] == pytest.approx(1.25)
    assert (row["runPage"], row["reportLocation"]) == ("/r/dag/r1.html", "s.report")
    # The start's columns are kept.
    assert row["airflowRunId"] == "manual__1" and row["startedAt"] == T0


def test_a_killed_run_stays_started_and_never_finished(engine: Engine):
    runs = _runs(engine)
    runs.start(_start("killed"))
    runs.start(_start("done"))
    runs.finish("done", RunEnd(finished_at=T0, outcome="ok", exit_code=0))
    # A new process (the next run) sees both, the killed one unfinished.
    again = _runs(engine)
    assert again.get("killed")["finishedAt"] is None  # type: ignore[index]
    assert again.get("done")["finishedAt"] == T0  # type: ignore[index]


def test_start_twice_keeps_one_row(engine: Engine):
    runs = _runs(engine)
    runs.start(_start("r1"))
    runs.start(_start("r1", T0 + dt.timedelta(seconds=1)))
    assert [r["startedAt"] for r in runs.select()] == [T0 + dt.timedelta(seconds=1)]


def test_hostile_values_are_bound_not_spliced(engine: Engine):
    runs = _runs(engine)
    run_id = "r'); DROP TABLE x; --"
    runs.start(_start(run_id, dag_id=None, task_id='t"`\\'))
    assert runs.get(run_id)["taskId"] == 't"`\\'  # type: ignore[index]


def test_versioned_like_the_report_table(engine: Engine):
    _runs(engine)
    conn = engine.connect()
    try:
        from polyv_connector.warehouse import dbapi

        target = dbapi.resolve(engine.connect, dialect=engine.dialect, **engine.table_kwargs())
        assert recorded_version(conn, target, engine.table("polyv_report_runs")) == SCHEMA.current
    finally:
        conn.close()


def test_an_older_table_gains_new_columns_on_open(engine: Engine, monkeypatch: pytest.MonkeyPatch):
    """A table of the current version gains the columns of a next version on open, rows kept
    and the new version recorded (the report table's migration, applied to the runs table)."""
    from polyv_connector.warehouse import runs_table
    from polyv_connector.warehouse.dialect import TEXT
    from polyv_connector.warehouse.schema import Column, TableSchema

    runs = _runs(engine)
    runs.start(_start("old"))
    nxt = TableSchema("runs", [*runs_table.SCHEMA_VERSIONS, (SCHEMA.current + 1, [Column("laterColumn", TEXT)])])
    monkeypatch.setattr(runs_table, "SCHEMA", nxt)
    again = _runs(engine)
    row = again.get("old")
    assert row is not None and row["laterColumn"] is None and row["startedAt"] == T0
    conn = engine.connect()
    try:
        from polyv_connector.warehouse import dbapi

        target = dbapi.resolve(engine.connect, dialect=engine.dialect, **engine.table_kwargs())
        assert recorded_version(conn, target, engine.table("polyv_report_runs")) == SCHEMA.current + 1
    finally:
        conn.close()


def test_a_foreign_table_is_refused(engine: Engine):
    engine.execute(f"CREATE TABLE {engine.table('foreign_runs')} (a INTEGER)")
    with pytest.raises(ConfigError, match="runs_table"):
        _runs(engine, "foreign_runs")


def test_finish_without_a_recorded_start_writes_the_row_this_object_started(engine: Engine):
    runs = _runs(engine)
    runs.start(_start("r1"))
    engine.execute(f"DELETE FROM {engine.table('polyv_report_runs')}")
    runs.finish("r1", RunEnd(finished_at=T0, outcome="ok", exit_code=0))
    assert runs.get("r1")["outcome"] == "ok"  # type: ignore[index]


def test_default_name_and_identifier_limit():
    assert runs_table_name("s.polyv_report", None, "postgresql") == "s.polyv_report_runs"
    assert runs_table_name('"My Report"', None, "postgresql") == '"My Report_runs"'
    assert runs_table_name("s.report", "s.other", "mysql") == "s.other"
    long = "r" * 60
    runs_table_name(long, None, "duckdb")  # DuckDB has no limit our names reach
    with pytest.raises(ConfigError, match="runs_table") as err:
        runs_table_name(long, None, "postgresql")
    assert "63 bytes" in str(err.value)
    with pytest.raises(ConfigError, match="runs_table"):
        runs_table_name("r" * 61, None, "mysql")
    with pytest.raises(ConfigError, match="runs_table"):
        runs_table_name("report", "x; DROP TABLE y", "postgresql")


def test_run_end_from_summary():
    from polyv_connector.timeline import TimelineSummary

    timeline = TimelineSummary([0, 1], [3, 2], [1, 1], [0, 1], 100.0, None, None, budget_wait_s=0.5)
    summary = {
        "exitCode": 3,
        "abortCause": "blocked",
        "counts": {"sent": 1},
        "countsByReason": {},
        "requestsSent": 5,
        "items": 9,
        "report": "r.parquet",
        "runPage": "r.html",
    }
    end = run_end_from_summary(summary, finished_at=T0, timeline=timeline, report_rows_dropped={"unchanged": 2})
    assert (end.outcome, end.exit_code, end.stop_cause) == ("aborted", 3, "blocked")
    assert (end.requests, end.retries, end.splits, end.budget_wait_seconds) == (5, 2, 1, 0.5)
    assert (end.rows_read, end.report_location, end.run_page) == (9, "r.parquet", "r.html")
    gate = run_end_from_summary({"exitCode": 4, "gateFailures": ["x"]}, finished_at=T0)
    assert (gate.outcome, gate.stop_cause, gate.retries) == ("gate", "gate", None)
