"""Benchmark: the partitioned DAG's nightly work on a large account, without Airflow.

In a throwaway PostgreSQL schema: a source table of ``--items`` long-form items (generated in
SQL), the sync state of a previous night (every item confirmed; written through
``SqlStateTable.record`` in large batches, since the keys are xxh3 hashes PostgreSQL cannot
compute), then ``--changed`` of the items changed in SQL. Each of ``--partitions`` partitions
then runs the engine in its own process, one after the other, as ``bench_partitions.py`` does:
the whole table read (``source_table``, the partition filter in the query), the diff against the
state, the changed items sent to the bundled POLYV simulator (no latency), a ``report_rows=changes``
report appended to a report table, and one runs-table row per partition written at the start
and completed at the end. Prints per partition its wall time, CPU time and peak RSS, and in all
the report rows and bytes (``pg_total_relation_size``, indexes included) and the runs-table rows.
Out of CI. Run:

    .venv/bin/python bench/bench_night.py [--items 20000000] [--partitions 4] [--changed 0.01]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

PG_DSN = os.environ.get("POLYV_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")
APP = "bench-night-app"
SECRET = "bench-night-secret"
FIELDS = ("PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER", "CITY")
STEP = 500_000


def _connect() -> Any:
    import psycopg

    return psycopg.connect(PG_DSN)


def seed(schema: str, items: int, changed: float) -> tuple[float, float]:
    """The source table and the state of a night where every item was confirmed; returns the
    seconds of each."""
    import numpy as np
    import psycopg

    from polyv_connector.fingerprints import key_hashes, value_fingerprints
    from polyv_connector.state.table import SqlStateTable

    started = time.perf_counter()
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {schema}.src (viewer_id text, custom_field_id text, custom_field_value text)")
        fields = "ARRAY[" + ", ".join(f"'{f}'" for f in FIELDS) + "]"
        conn.execute(
            f"INSERT INTO {schema}.src SELECT 'viewer-' || lpad((i / {len(FIELDS)})::text, 9, '0'), "
            f"({fields})[i % {len(FIELDS)} + 1], 'value-' || ((i * 7919) % 100003) "
            f"FROM generate_series(0::bigint, {items - 1}) i"
        )
    source_s = time.perf_counter() - started
    started = time.perf_counter()
    import pyarrow as pa
    import pyarrow.compute as pc

    state = SqlStateTable(_connect, f"{schema}.state", APP)
    state.begin("seed")
    for start in range(0, items, STEP):
        i = pa.array(np.arange(start, min(start + STEP, items)))
        viewer = pc.binary_join_element_wise(
            "viewer-", pc.utf8_lpad(pc.divide(i, len(FIELDS)).cast(pa.string()), 9, "0"), ""
        )
        field = pa.array(FIELDS).take(pc.remainder(i, len(FIELDS)))
        value = pc.binary_join_element_wise("value-", pc.remainder(pc.multiply(i, 7919), 100003).cast(pa.string()), "")
        keys = key_hashes(viewer, field, state.hash_family)[0]
        state.record(keys, value_fingerprints(value, state.hash_family))
    state.finish()
    state_s = time.perf_counter() - started
    every = max(1, round(1 / changed)) if changed > 0 else 0
    if every:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(
                f"UPDATE {schema}.src SET custom_field_value = custom_field_value || '-new' "
                f"WHERE ('x' || substr(md5(viewer_id || custom_field_id), 1, 8))::bit(32)::int % {every} = 0"
            )
    return source_s, state_s


def run_partition(schema: str, partitions: int, partition: int, base_url: str) -> dict[str, Any]:
    """The worker: one partition's night, its runs-table row written at start and end."""
    from polyv_connector.config import ColumnMapping, Credentials, Secret, SendOptions, SyncOptions
    from polyv_connector.engine.result import new_run_id
    from polyv_connector.progress import Progress
    from polyv_connector.run import sync
    from polyv_connector.sources.sql import SqlSource
    from polyv_connector.state.table import SqlStateTable
    from polyv_connector.warehouse.report_table import SqlReportTable
    from polyv_connector.warehouse.runs_table import RunsTable, RunStart, run_end_from_summary

    options = SyncOptions(
        send=SendOptions(max_rps=140, concurrency=8),
        mapping=ColumnMapping("viewer_id", "custom_field_id", "custom_field_value"),
        partitions=partitions,
        partition=partition,
        check_fields=False,
        report_rows="changes",
    )
    run_id = new_run_id()
    runs = RunsTable(_connect, f"{schema}.report_runs", dialect="postgresql")
    runs.start(
        RunStart(
            run_id=run_id,
            started_at=dt.datetime.now(dt.UTC),
            app_id=APP,
            partition=partition,
            partitions=partitions,
            report_rows="changes",
        )
    )
    result = sync(
        SqlSource(_connect, table=f"{schema}.src", dialect="postgresql"),
        Credentials(APP, Secret(SECRET), base_url),
        options,
        SqlReportTable(_connect, f"{schema}.report", dialect="postgresql"),
        state=SqlStateTable(_connect, f"{schema}.state", APP),
        run_id=run_id,
        progress=Progress(interval_s=1e9),
    )
    summary = result.to_dict()
    runs.finish(
        run_id,
        run_end_from_summary(
            summary,
            finished_at=dt.datetime.now(dt.UTC),
            timeline=result.timeline,
            report_rows_written=summary["reportRowsWritten"],
            report_rows_dropped=summary["reportRowsDropped"],
        ),
    )
    return {"items": result.items, "counts": result.counts, "rows": summary["reportRowsWritten"]}


def worker(schema: str, partitions: int, partition: int, base_url: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", schema, str(partitions), str(partition), base_url]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    out, err = proc.communicate()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"partition {partition} failed: {err[-3000:]}")
    done: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    done.update(wall=wall, cpu=usage.ru_utime + usage.ru_stime, rss_mb=usage.ru_maxrss / 1024)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        schema, n, k, url = args.worker
        print(json.dumps(run_partition(schema, int(n), int(k), url)))
        return

    import psycopg

    from polyv_connector.simulator import PolyvSimulator

    schema = f"bench_night_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        source_s, state_s = seed(schema, args.items, args.changed)
        print(f"seeded {args.items:,} items: source {source_s:.0f} s, state {state_s:.0f} s", flush=True)
        head = ("k", 3), ("items", 12), ("sent", 9), ("unchanged", 12), ("rows", 9), ("wall s", 8), ("CPU s", 7)
        print(" ".join(f"{name:>{width}}" for name, width in head), f"{'RSS MB':>7}")
        total_wall = 0.0
        with PolyvSimulator(apps={APP: SECRET}, fields=list(FIELDS)) as sim:
            for k in range(args.partitions):
                r = worker(schema, args.partitions, k, sim.base_url)
                total_wall += r["wall"]
                print(
                    f"{k:>3} {r['items']:>12,} {r['counts']['sent']:>9,} {r['counts']['unchanged']:>12,} "
                    f"{r['rows']:>9,} {r['wall']:>8.1f} {r['cpu']:>7.1f} {r['rss_mb']:>7.0f}",
                    flush=True,
                )
        with psycopg.connect(PG_DSN) as conn:
            rows, size = conn.execute(
                f"SELECT count(*), pg_total_relation_size('{schema}.report') FROM {schema}.report"
            ).fetchone()
            runs = conn.execute(f'SELECT count(*) FROM {schema}.report_runs WHERE "finishedAt" IS NOT NULL').fetchone()
        print(
            f"total: {total_wall:.0f} s partitions one after the other; report {rows:,} rows, {size:,} bytes "
            f"({size / max(rows, 1):.0f} bytes a row with indexes); runs table {runs[0]} finished row(s)"
        )
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
