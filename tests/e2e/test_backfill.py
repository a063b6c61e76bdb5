"""``airflow backfill create`` over three days of the nightly warehouse DAG, through a real scheduler.

A backfill has its own ``max_active_runs`` (10 unless given), not the DAG's (1): the scheduler
starts the three runs side by side, on one state table. The test makes that overlap certain
instead of hoping for it: it holds the state's lock itself (as a long nightly run would) until
all three task instances are deferred, then lets go. Each run must wait for the lock (the DAG's
``lock_timeout``) in the triggerer (``deferrable=True``), not in a worker slot, rather than fail
as busy; the three resume together, and each syncs its own day's rows exactly once (with a
5-second first deferral, Airflow failed runs resumed before it had seen their worker exit:
docs/airflow.md, "Waits that free the worker").
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from tests.e2e.conftest import APP_ID, PLANTED_SECRET
from tests.services import PG_DSN

pytestmark = [pytest.mark.airflow, pytest.mark.postgres, pytest.mark.slow, pytest.mark.e2e]

DAG_ID = "polyv_viewer_sync_warehouse"
TASK_ID = "sync_viewer_fields"
# The DAG runs at 02:00 UTC for the day before: these bounds give exactly the runs of
# 2025-03-01, 02 and 03 02:00, whose data intervals are [day 02:00, next day 02:00).
FROM, TO = "2025-03-01T02:00:00+00:00", "2025-03-03T02:00:00+00:00"
DAYS = [dt.datetime(2025, 3, d, 2, tzinfo=dt.UTC) for d in (1, 2, 3)]
PER_DAY = 5


def _connect() -> Any:
    import psycopg2

    return psycopg2.connect(PG_DSN)


def _rows(sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(PG_DSN) as conn:
        return conn.execute(sql, params or None).fetchall()  # type: ignore[arg-type]


def _source(schema: str) -> tuple[str, dict[dt.datetime, dict[tuple[str, str], str]]]:
    """Long-form attributes: ``PER_DAY`` distinct viewers in each run's interval, plus rows just
    outside the three intervals (which no run may send). Returns the table and each interval's rows."""
    import psycopg

    table = f"{schema}.viewer_attributes"
    expected: dict[dt.datetime, dict[tuple[str, str], str]] = {}
    rows: list[tuple[str, str, str, dt.datetime]] = []
    for n, start in enumerate(DAYS, 1):
        expected[start] = {}
        for i in range(PER_DAY):
            viewer, field = f"day{n}-viewer-{i}", "PAY_STATUS" if i % 2 else "VIP_LEVEL"
            expected[start][(viewer, field)] = f"day{n}-value-{i}"
            # From 02:00 (the interval's inclusive start) to 01:59 the next day (the last row).
            rows.append((viewer, field, f"day{n}-value-{i}", start + dt.timedelta(hours=5 * i)))
        rows.append((f"day{n}-viewer-last", "VIP_LEVEL", f"day{n}-last", start + dt.timedelta(hours=23, minutes=59)))
        expected[start][(f"day{n}-viewer-last", "VIP_LEVEL")] = f"day{n}-last"
    outside = [
        ("before-viewer", "VIP_LEVEL", "too-early", DAYS[0] - dt.timedelta(seconds=1)),
        ("after-viewer", "VIP_LEVEL", "too-late", DAYS[-1] + dt.timedelta(days=1)),  # the exclusive end
    ]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (viewer_id text, custom_field_id text, custom_field_value text, "  # type: ignore[arg-type]
            "updated_at timestamptz)"
        )
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s, %s)", rows + outside)  # type: ignore[arg-type]
    return table, expected


def _no_failed_task(stack) -> bool:
    """True, or fail at once (with the task's log) if a task failed while the lock was held."""
    for ti in stack.task_instances(DAG_ID):
        if ti["state"] in ("failed", "up_for_retry"):
            pytest.fail(
                f"{ti['run_id']} failed before the lock was released:\n"
                + stack.task_log_text(DAG_ID, ti["run_id"])[-4000:]
            )
    return True


@pytest.mark.timeout(600)  # the stack's start (about 40-60 s) counts too; every wait inside is bounded
def test_three_day_backfill_runs_side_by_side_and_each_waits_for_the_lock(scheduler_stack, sim, pg_schema):
    from polyv_connector.state.pg_lock import PgAdvisoryLock

    stack = scheduler_stack
    table, expected = _source(pg_schema)
    report_table, state_table = f"{pg_schema}.polyv_sync_report", f"{pg_schema}.polyv_sync_state"
    conf = {"source_table": table, "report_table": report_table, "state_table": state_table}
    stack.wait_for_dag(DAG_ID)
    stack.airflow("dags", "unpause", DAG_ID)  # the scheduler queues no task of a paused DAG

    # Another run of this account holds the sync state (the same lock the task takes).
    holder = PgAdvisoryLock(_connect, state_table, APP_ID, "e2e-holder", lock_tables=f"{pg_schema}.polyv_lock")
    holder.acquire()
    try:
        created = stack.airflow(
            "backfill", "create", "--dag-id", DAG_ID, "--from-date", FROM, "--to-date", TO,
            "--dag-run-conf", json.dumps(conf),
        )  # fmt: skip
        runs = stack.runs(DAG_ID)
        assert [r["data_interval_start"] for r in runs] == DAYS, created.stdout + created.stderr
        assert {r["run_type"] for r in runs} == {"backfill"}
        backfill_max = stack.sql("SELECT max_active_runs FROM backfill WHERE dag_id = %s", (DAG_ID,))
        assert backfill_max == [(10,)]  # the backfill's own limit: the DAG's max_active_runs=1 does not apply

        # All three tasks start while the lock is held, find it taken and defer to the triggerer:
        # all three are deferred at once (none holds a worker slot while it waits).
        stack.wait_until(
            "the three backfill tasks to be deferred at once",
            lambda: (
                _no_failed_task(stack) and sum(ti["state"] == "deferred" for ti in stack.task_instances(DAG_ID)) == 3
            ),
            timeout=240,
        )
        assert sim.stats.save_requests == 0, "a deferred run sent something"
    finally:
        released = dt.datetime.now(dt.UTC)
        holder.release()

    runs = stack.wait_for_runs(DAG_ID, 3, timeout=240)
    tis = stack.task_instances(DAG_ID)
    logs = {r["run_id"]: stack.task_log_text(DAG_ID, r["run_id"]) for r in runs}
    assert [r["state"] for r in runs] == ["success"] * 3, "\n".join(text[-3000:] for text in logs.values())
    assert [ti["state"] for ti in tis] == ["success"] * 3 and {ti["try_number"] for ti in tis} == {1}
    # Each waited for the lock (started before it was released, done after), none failed as busy.
    for ti in tis:
        assert ti["start_date"] < released < ti["end_date"], (ti, released)
    for text in logs.values():
        assert "another run holds the sync state" in text and "deferring to the triggerer" in text, text[-3000:]
        assert "BusyError" not in text and "nothing was sent" not in text
        assert PLANTED_SECRET not in text

    # Each run synced its own day, once, under its own runId.
    by_run_id: dict[str, dt.datetime] = {}
    for run in runs:
        summary = stack.xcom(DAG_ID, run["run_id"], TASK_ID)
        assert summary["airflowRunId"] == run["run_id"] and summary["ok"] is True
        assert summary["counts"]["sent"] == PER_DAY + 1, summary
        by_run_id[summary["runId"]] = run["data_interval_start"]
    assert len(by_run_id) == 3
    report = _rows(f'SELECT "runId", "viewerId", "customFieldId", "customFieldValue", status FROM {report_table}')
    assert len(report) == 3 * (PER_DAY + 1)
    for run_id, day in by_run_id.items():
        mine = [r for r in report if r[0] == run_id]
        assert {(r[1], r[2]): r[3] for r in mine} == expected[day] and len(mine) == len(expected[day])
        assert {r[4] for r in mine} == {"sent"}

    # POLYV holds every value of the three days and nothing from outside them.
    everything = {k: v for day in expected.values() for k, v in day.items()}
    assert {(v, f): value for (app, v, f), value in sim.values.items() if app == APP_ID} == everything

    # The state: one row per key, each with the fingerprint of the value POLYV confirmed.
    import pyarrow as pa

    from polyv_connector.fingerprints import key_hashes, value_fingerprints

    state = _rows(f'SELECT "key", fp FROM {state_table}')
    pairs = list(everything.items())
    keys = key_hashes(pa.array([v for (v, _), _ in pairs]), pa.array([f for (_, f), _ in pairs]), "md5")[0]
    fps = value_fingerprints(pa.array([value for _, value in pairs]), "md5")
    assert sorted(state) == sorted(zip(keys.view("int64").tolist(), fps.view("int64").tolist(), strict=True))
