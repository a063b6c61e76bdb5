"""Benchmark: what the report table's indexes (runId; appId, viewerId) cost the report write.

On PostgreSQL, in a throwaway schema: the same report rows (``--rows``, default 1M, one run)
written with :class:`SqlReportTable` (the COPY path) into a table without the indexes and into
one with them, twice each (the second run appends to a table already holding the first), and
the table's size with its indexes. Prints rows/s per case and the indexed/plain time ratio.
Out of CI. Run:

    .venv/bin/python bench/bench_report_indexes.py [--rows 1000000] [--order random|sorted] [--indexes both|run|viewer]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
import uuid

import pyarrow as pa

from polyv_connector.model import report_schema
from polyv_connector.warehouse.report_table import SqlReportTable

PG_DSN = os.environ.get("POLYV_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")
BATCH = 100_000


def report_batches(run_id: str, rows: int, seed: int, order: str) -> list[pa.RecordBatch]:
    """Report rows as a quiet night writes them: one viewer each, most unchanged; viewers in
    input order (``random``: a source read without ORDER BY; ``sorted``: one read in key order)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    when = dt.datetime(2026, 12, 7, 2, 0, tzinfo=dt.UTC)
    shuffled = rng.permutation(rows)
    for start in range(0, rows, BATCH):
        n = min(BATCH, rows - start)
        numbers = np.arange(start, start + n)
        ids = shuffled[start : start + n] if order == "random" else numbers
        viewers = pa.array([f"viewer-{v:012d}" for v in ids])
        status = np.where(rng.random(n) < 0.01, "sent", "unchanged")
        sent = status == "sent"
        out.append(
            pa.record_batch(
                [
                    pa.array(numbers, pa.int64()),
                    viewers,
                    pa.array(["PAY_STATUS"] * n),
                    pa.array([f"value-{v % 1000}" for v in numbers]),
                    pa.array(status),
                    pa.array([None] * n, pa.string()),
                    pa.array([None] * n, pa.int64()),
                    pa.array([200 if s else None for s in sent], pa.int64()),
                    pa.array([None] * n, pa.string()),
                    pa.array(sent.astype(np.int64)),
                    pa.array([None] * n, pa.string()),
                    pa.array([run_id] * n),
                    pa.array([when if s else None for s in sent], pa.timestamp("us", tz="UTC")),
                    pa.array(["app-bench"] * n),
                    pa.array([None if s else "unchanged" for s in sent], pa.string()),
                    pa.array([None] * n, pa.int64()),
                    pa.array([None] * n, pa.int64()),
                    pa.array(["scheduled__2026-12-07"] * n),
                ],
                schema=report_schema(),
            )
        )
    return out


def write(table: str, batches: list[pa.RecordBatch]) -> float:
    import psycopg

    sink = SqlReportTable(lambda: psycopg.connect(PG_DSN), table, dialect="postgresql")
    began = time.perf_counter()
    for batch in batches:
        sink.write(batch)
    sink.close()
    return time.perf_counter() - began


def main() -> None:
    import psycopg

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--order", choices=("random", "sorted"), default="random", help="viewer order in the input")
    parser.add_argument(
        "--indexes", choices=("both", "run", "viewer"), default="both", help="the indexes of the indexed case"
    )
    args = parser.parse_args()
    schema = f"polyv_bench_idx_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        runs = [report_batches(f"20261207T02000{i}Z-bench{i:03d}", args.rows, i, args.order) for i in range(2)]
        results: dict[str, list[float]] = {"plain": [], "indexed": []}
        sizes = {}
        for case in ("plain", "indexed"):
            table = f"{schema}.report_{case}"
            SqlReportTable(lambda: psycopg.connect(PG_DSN), table, dialect="postgresql").close()
            kept = {"both": [], "run": ["viewer"], "viewer": ["run"]}[args.indexes]
            drop = {"plain": ["run", "viewer"], "indexed": kept}
            if drop[case]:
                with psycopg.connect(PG_DSN, autocommit=True) as conn:
                    names = ", ".join(f"{schema}.report_{case}_{what}_idx" for what in drop[case])
                    conn.execute(f"DROP INDEX {names}")
            for batches in runs:
                results[case].append(write(table, batches))
            with psycopg.connect(PG_DSN) as conn:
                row = conn.execute(
                    "SELECT pg_table_size(%s::regclass), pg_indexes_size(%s::regclass)", (table, table)
                ).fetchone()
                assert row is not None
                sizes[case] = (int(row[0]), int(row[1]))
        rows = args.rows
        print(
            f"report write through COPY, {rows:,} rows per run, viewers in {args.order} order, "
            f"indexed case: {args.indexes} index(es), PostgreSQL"
        )
        for case, times in results.items():
            rates = ", ".join(f"run {i + 1}: {t:.2f} s ({rows / t:,.0f} rows/s)" for i, t in enumerate(times))
            table_b, index_b = sizes[case]
            print(
                f"  {case:8s} {rates}; table {table_b / 2**20:,.0f} MiB + indexes {index_b / 2**20:,.0f} MiB "
                f"({(table_b + index_b) / (2 * rows):,.0f} bytes/row)"
            )
        for i in range(len(runs)):
            ratio = results["indexed"][i] / results["plain"][i]
            print(f"  run {i + 1}: indexed/plain time ratio {ratio:.2f} (+{(ratio - 1) * 100:.0f}%)")
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


if __name__ == "__main__":
    main()
