"""Retention on PostgreSQL, MariaDB and DuckDB: report rows and runs rows of runs started before
the cutoff go, in batches; newer ones stay; killed runs stay visible; a report folder too."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from polyv_connector.errors import ConfigError
from polyv_connector.warehouse.report_table import SqlReportTable
from polyv_connector.warehouse.retention import (
    apply_retention,
    check_retention_days,
    cutoffs,
    purge_report_folder,
)
from polyv_connector.warehouse.runs_table import RunEnd, RunsTable, RunStart
from tests.warehouse.engines import Engine
from tests.warehouse.support import PG_DSN, report_batch

NOW = dt.datetime(2026, 12, 7, 3, 0, tzinfo=dt.UTC)
# run -> (days before NOW it started, report rows, finished)
RUNS = {
    "ancient": (500, 4, True),
    "old-done": (40, 7, True),
    "old-killed": (35, 3, False),
    "new-done": (5, 7, True),
    "new-killed": (2, 2, False),
}


def _seed(engine: Engine) -> tuple[RunsTable, str, str]:
    kw = {"dialect": engine.dialect, **engine.table_kwargs()}
    report, runs_name = engine.table("report"), engine.table("report_runs")
    runs = RunsTable(engine.connect, runs_name, **kw)
    sink = SqlReportTable(engine.connect, report, **kw)
    for run_id, (days, rows, finished) in RUNS.items():
        started = NOW - dt.timedelta(days=days)
        runs.start(RunStart(run_id=run_id, started_at=started, app_id="app1"))
        sink.write(report_batch(run_id, rows))
        if finished:
            runs.finish(run_id, RunEnd(finished_at=started + dt.timedelta(minutes=5), outcome="ok", exit_code=0))
    sink.close()
    return runs, report, runs_name


def _report_counts(engine: Engine, report: str) -> dict[str, int]:
    return dict(engine.rows(f"SELECT {engine.q('runId')}, COUNT(*) FROM {report} GROUP BY 1"))


def test_old_rows_go_new_rows_stay_killed_runs_stay_visible(engine: Engine):
    runs, report, runs_name = _seed(engine)
    result = apply_retention(
        engine.connect,
        runs_name,
        report,
        report_retention_days=30,
        runs_retention_days=400,
        now=NOW,
        batch_rows=3,  # 7 rows of a run: three batches
        dialect=engine.dialect,
        **engine.table_kwargs(),
    )
    assert _report_counts(engine, report) == {"new-done": 7, "new-killed": 2}
    assert (result.report_rows_deleted, result.runs_purged, result.runs_rows_deleted) == (14, 3, 1)
    assert result.complete
    left = {r["runId"]: r for r in runs.select()}
    assert sorted(left) == ["new-done", "new-killed", "old-done", "old-killed"]
    # A killed run is visible as started and never finished, whether its report rows went or not.
    assert left["new-killed"]["finishedAt"] is None and left["old-killed"]["finishedAt"] is None
    assert left["old-killed"]["reportPurgedAt"] == NOW and left["new-killed"]["reportPurgedAt"] is None
    # Again: nothing left to do.
    again = apply_retention(
        engine.connect,
        runs_name,
        report,
        report_retention_days=30,
        runs_retention_days=400,
        now=NOW,
        dialect=engine.dialect,
        **engine.table_kwargs(),
    )
    assert (again.report_rows_deleted, again.runs_purged, again.runs_rows_deleted) == (0, 0, 0)


def test_retention_off_deletes_nothing(engine: Engine):
    runs, report, runs_name = _seed(engine)
    kw = {"now": NOW, "dialect": engine.dialect, **engine.table_kwargs()}
    result = apply_retention(engine.connect, runs_name, report, **kw)
    assert result.report_rows_deleted == 0
    assert sum(_report_counts(engine, report).values()) == sum(r for _, r, _ in RUNS.values())
    assert len(runs.select()) == len(RUNS)


def test_a_time_limit_stops_between_batches_and_the_next_call_goes_on(engine: Engine):
    _, report, runs_name = _seed(engine)
    ticks = iter(range(1000))
    kw = {"now": NOW, "batch_rows": 3, "dialect": engine.dialect, **engine.table_kwargs()}
    first = apply_retention(
        engine.connect, runs_name, report, report_retention_days=30, max_seconds=2, clock=lambda: next(ticks), **kw
    )
    assert not first.complete and 0 < first.report_rows_deleted < 14
    second = apply_retention(engine.connect, runs_name, report, report_retention_days=30, **kw)
    assert second.complete and first.report_rows_deleted + second.report_rows_deleted == 14
    assert set(_report_counts(engine, report)) == {"new-done", "new-killed"}


def test_runs_retention_alone_also_removes_the_report_rows_of_those_runs(engine: Engine):
    """A report row never outlives its run's record."""
    runs, report, runs_name = _seed(engine)
    kw = {"now": NOW, "dialect": engine.dialect, **engine.table_kwargs()}
    apply_retention(engine.connect, runs_name, report, runs_retention_days=400, **kw)
    assert "ancient" not in _report_counts(engine, report)
    assert "old-done" in _report_counts(engine, report)
    assert "ancient" not in {r["runId"] for r in runs.select()}


def test_without_a_report_table_old_runs_rows_go(engine: Engine):
    _, _, runs_name = _seed(engine)
    result = apply_retention(
        engine.connect,
        runs_name,
        None,
        report_retention_days=30,
        runs_retention_days=400,
        now=NOW,
        dialect=engine.dialect,
        **engine.table_kwargs(),
    )
    assert result.runs_rows_deleted == 1


@pytest.mark.postgres
def test_day_partitions_are_dropped_whole(pg_schema):
    import psycopg

    def connect():
        return psycopg.connect(PG_DSN)

    report, runs_name = f"{pg_schema}.report", f"{pg_schema}.report_runs"
    sink = SqlReportTable(connect, report, day_partitions=True)
    runs = RunsTable(connect, runs_name)
    conn = connect()
    old_day = (NOW - dt.timedelta(days=40)).date()
    sink.add_day_partitions(conn, today=old_day)  # the days around 40 days ago, as runs then made them
    conn.close()
    for run_id, days in (("old", 40), ("new", 1)):
        started = NOW - dt.timedelta(days=days)
        runs.start(RunStart(run_id=run_id, started_at=started))
        with psycopg.connect(PG_DSN) as c:
            c.execute(
                f'INSERT INTO {report} ("rowNumber", status, attempts, "runId", "runDate") '
                "SELECT g, 'unchanged', 0, %s, %s FROM generate_series(1, 50) g",
                (run_id, started.date()),
            )
    result = apply_retention(connect, runs_name, report, report_retention_days=30, now=NOW)
    assert f'"{pg_schema}"."report_p{old_day:%Y%m%d}"' in result.partitions_dropped
    # Every dropped partition's day ended before the cutoff; the default partition stays.
    cutoff_day = (NOW - dt.timedelta(days=30)).date()
    for name in result.partitions_dropped:
        assert dt.datetime.strptime(name[-9:-1], "%Y%m%d").date() < cutoff_day
    with psycopg.connect(PG_DSN) as c:
        assert dict(c.execute(f'SELECT "runId", count(*) FROM {report} GROUP BY 1').fetchall()) == {"new": 50}
        assert c.execute("SELECT to_regclass(%s)", (f"{pg_schema}.report_pdefault",)).fetchone()[0] is not None
    assert result.report_rows_deleted == 0 and result.runs_purged == 1  # the rows went with the partition


def test_cutoffs_and_days():
    assert cutoffs(30, 400, NOW) == (NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=400))
    assert cutoffs(500, 400, NOW)[0] == NOW - dt.timedelta(days=400)  # never past the runs record
    assert cutoffs(None, None, NOW) == (None, None)
    assert check_retention_days(None, "x") is None and check_retention_days(" 30 ", "x") == 30
    for bad in ("0", "-1", "ten", "1.5"):
        with pytest.raises(ConfigError, match="report_retention_days"):
            check_retention_days(bad, "report_retention_days")


# ---- a report folder -----------------------------------------------------------------------------
def _aged(path, days: float) -> None:
    path.write_bytes(b"x")
    when = (NOW - dt.timedelta(days=days)).timestamp()
    os.utime(path, (when, when))


def test_a_report_folder_loses_old_reports_pages_and_summaries_only(tmp_path):
    folder = tmp_path / "polyv_reports" / "dag"
    (folder / "sub").mkdir(parents=True)
    for name, days in (
        ("old.parquet", 40),
        ("old.html", 40),
        ("old.json", 40),
        ("sub/old.parquet", 40),
        ("new.parquet", 3),
        ("notes.txt", 400),
    ):
        _aged(folder / name, days)
    _aged(folder / "known.html", 1)  # written lately, but its run started long ago
    deleted = purge_report_folder(
        folder, 30, now=NOW, started_by_place={str(folder / "known.html"): NOW - dt.timedelta(days=31)}
    )
    assert sorted(p.relative_to(folder).as_posix() for p in deleted) == [
        "known.html",
        "old.html",
        "old.json",
        "old.parquet",
        "sub/old.parquet",
    ]
    assert sorted(p.name for p in folder.iterdir()) == ["new.parquet", "notes.txt", "sub"]
    assert purge_report_folder(folder, None, now=NOW) == []


def test_a_report_folder_never_follows_symlinks_out(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    _aged(outside / "precious.parquet", 400)
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "linked_dir").symlink_to(outside, target_is_directory=True)
    (folder / "linked.parquet").symlink_to(outside / "precious.parquet")
    os.utime(folder / "linked.parquet", ((NOW - dt.timedelta(days=400)).timestamp(),) * 2, follow_symlinks=False)
    assert purge_report_folder(folder, 30, now=NOW) == []
    assert (outside / "precious.parquet").exists() and (folder / "linked.parquet").is_symlink()
    # A symlinked report folder itself is not entered either.
    assert purge_report_folder(tmp_path / "linked_root_missing", 30, now=NOW) == []
    (tmp_path / "root_link").symlink_to(outside, target_is_directory=True)
    assert purge_report_folder(tmp_path / "root_link", 30, now=NOW) == []
    assert (outside / "precious.parquet").exists()


@pytest.mark.postgres
def test_batched_deletes_on_a_partitioned_table_touch_no_other_run(pg_schema):
    """Row addresses (ctid) repeat from one partition to the next: a batch must still delete
    only the rows of its own run."""
    import psycopg

    def connect():
        return psycopg.connect(PG_DSN)

    report, runs_name = f"{pg_schema}.report", f"{pg_schema}.report_runs"
    SqlReportTable(connect, report, day_partitions=True)
    runs = RunsTable(connect, runs_name)
    today = dt.datetime.now(dt.UTC).date()
    # A run started long ago that wrote its report today, and a recent one that wrote yesterday.
    for run_id, days, written in (("old", 40, today), ("new", 1, today - dt.timedelta(days=1))):
        runs.start(RunStart(run_id=run_id, started_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=days)))
        with psycopg.connect(PG_DSN) as c:
            c.execute(
                f'INSERT INTO {report} ("rowNumber", status, attempts, "runId", "runDate") '
                "SELECT g, 'unchanged', 0, %s, %s FROM generate_series(1, 50) g",
                (run_id, written),
            )
    result = apply_retention(connect, runs_name, report, report_retention_days=30, batch_rows=7)
    assert result.partitions_dropped == [] and result.report_rows_deleted == 50
    with psycopg.connect(PG_DSN) as c:
        assert dict(c.execute(f'SELECT "runId", count(*) FROM {report} GROUP BY 1').fetchall()) == {"new": 50}
