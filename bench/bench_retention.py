"""Benchmark: retention on PostgreSQL, batched deletes against dropping day partitions.

In a throwaway schema, two report tables (the current schema with its indexes) each hold
``--old-runs`` runs of ``--rows-per-run`` rows started 31 days ago and before (default 10 runs
of 1M: 10M rows to delete) and one run of a day ago that must stay: a plain table, and a table
made with ``day_partitions`` (one partition per run day). Each runs table knows the runs.
:func:`~polyv_connector.warehouse.retention.apply_retention` with a 30-day report retention
then deletes the old runs: batch by batch on the plain table, by dropping whole partitions on
the other. Prints each time, the rows left, and the ratio. Out of CI. Run:

    .venv/bin/python bench/bench_retention.py [--old-runs 10] [--rows-per-run 1000000] [--batch-rows 10000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
import uuid
from typing import Any

from polyv_connector.warehouse.report_table import SqlReportTable
from polyv_connector.warehouse.retention import apply_retention
from polyv_connector.warehouse.runs_table import RunsTable, RunStart

PG_DSN = os.environ.get("POLYV_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")
NOW = dt.datetime.now(dt.UTC)


def connect() -> Any:
    import psycopg

    return psycopg.connect(PG_DSN)


def seed(schema: str, name: str, partitioned: bool, runs: list[tuple[str, dt.datetime]], rows: int) -> str:
    table = f"{schema}.{name}"
    sink = SqlReportTable(connect, table, dialect="postgresql", day_partitions=partitioned)
    runs_table = RunsTable(connect, f"{table}_runs", dialect="postgresql")
    with connect() as conn:
        for run_id, started in runs:
            if partitioned:
                sink.add_day_partitions(conn, today=started.date())
            runs_table.start(RunStart(run_id=run_id, started_at=started, app_id="app-bench"))
            date = ', "runDate"' if partitioned else ""
            date_value = ", %s" if partitioned else ""
            conn.execute(
                f'INSERT INTO {table} ("rowNumber", "viewerId", "customFieldId", "customFieldValue", status, '
                f'attempts, "runId", "appId", "reasonCode"{date}) '
                f"SELECT g, 'viewer-' || lpad(g::text, 12, '0'), 'PAY_STATUS', 'value-' || (g %% 1000), "
                f"'unchanged', 0, %s, 'app-bench', 'unchanged'{date_value} FROM generate_series(1, %s) g",
                (run_id, *([started.date()] if partitioned else []), rows),
            )
            conn.commit()
        conn.execute(f"ANALYZE {table}")
        conn.commit()
    return table


def count(table: str) -> int:
    with connect() as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    import psycopg

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old-runs", type=int, default=10)
    parser.add_argument("--rows-per-run", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    args = parser.parse_args()
    schema = f"polyv_bench_ret_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    runs = [(f"old-{i:03d}", NOW - dt.timedelta(days=31 + i)) for i in range(args.old_runs)]
    runs.append(("new-000", NOW - dt.timedelta(days=1)))
    old_rows = args.old_runs * args.rows_per_run
    try:
        timings = {}
        for name, partitioned in (("report_plain", False), ("report_days", True)):
            began = time.perf_counter()
            table = seed(schema, name, partitioned, runs, args.rows_per_run)
            seeded = time.perf_counter() - began
            began = time.perf_counter()
            result = apply_retention(
                connect,
                f"{table}_runs",
                table,
                report_retention_days=30,
                now=NOW,
                batch_rows=args.batch_rows,
                dialect="postgresql",
            )
            timings[name] = time.perf_counter() - began
            left = count(table)
            assert left == args.rows_per_run, f"{name}: {left} rows left"
            print(
                f"{name:13s} seeded {old_rows + args.rows_per_run:,} rows in {seeded:.0f} s; retention "
                f"{timings[name]:.2f} s: {result.report_rows_deleted:,} rows deleted in batches of "
                f"{args.batch_rows:,}, {len(result.partitions_dropped)} partition(s) dropped; {left:,} rows left"
            )
        plain, days = timings["report_plain"], timings["report_days"]
        print(
            f"deleting {old_rows:,} rows of {args.old_runs} old runs: batched deletes {plain:.1f} s "
            f"({old_rows / plain:,.0f} rows/s), dropping day partitions {days:.2f} s; ratio {plain / days:,.0f}x"
        )
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


if __name__ == "__main__":
    main()
