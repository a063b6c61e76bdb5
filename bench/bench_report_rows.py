"""Benchmark: a quiet-night rerun with ``report_rows=changes`` against ``report_rows=all``.

One account of ``--items`` items (default 1M) in a Parquet input, sent once to the bundled POLYV
simulator (no latency) with a folder state, so that every item is confirmed. Then the same
command reruns the same input twice per setting, in the order all, changes, all, changes
(nothing changed: every item ``unchanged``, nothing sent), each rerun writing its report to a
PostgreSQL report table (COPY, the schema v3 indexes) in a throwaway schema and to a Parquet
file. Prints each rerun's wall time, the report rows it wrote, the table's growth in bytes
(``pg_total_relation_size``, indexes included) and the Parquet file's size. Out of CI. Run:

    .venv/bin/python bench/bench_report_rows.py [--items 1000000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

PG_DSN = os.environ.get("POLYV_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")


def make_input(path: Path, items: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    i = np.arange(items)
    pq.write_table(
        pa.table(
            {
                "viewerId": pa.array([f"viewer-{v:09d}" for v in i]),
                "customFieldId": pa.array(["PAY_STATUS"] * items),
                "customFieldValue": pa.array([f"value-{(v * 7919) % 100_003}" for v in i]),
            }
        ),
        path,
        row_group_size=1_000_000,
    )


def table_bytes(table: str) -> int:
    import psycopg

    with psycopg.connect(PG_DSN) as conn:
        row = conn.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()
    return int(row[0]) if row else 0


def run_once(
    source: Path, state: Path, report: Path | None, table: str | None, report_rows: str, sim: Any
) -> dict[str, Any]:
    import psycopg

    from polyv_connector.config import Credentials, Secret, SendOptions, SyncOptions
    from polyv_connector.progress import Progress
    from polyv_connector.report import MultiReport, ParquetReport, ReportSink
    from polyv_connector.run import sync
    from polyv_connector.sources.parquet import ParquetSource
    from polyv_connector.warehouse.report_table import SqlReportTable

    sinks: list[ReportSink] = []
    if table:
        sinks.append(SqlReportTable(lambda: psycopg.connect(PG_DSN), table, dialect="postgresql"))
    if report:
        sinks.append(ParquetReport(report))
    sink = sinks[0] if len(sinks) == 1 else MultiReport(sinks)
    options = SyncOptions(
        send=SendOptions(max_rps=140, concurrency=8),
        state_dir=str(state),
        check_fields=False,
        report_rows=report_rows,  # type: ignore[arg-type]
    )
    creds = Credentials("bench-app", Secret("bench-secret"), sim.base_url)
    before = table_bytes(table) if table else 0
    started = time.perf_counter()
    result = sync(ParquetSource(str(source)), creds, options, sink, progress=Progress(interval_s=1e9))
    wall = time.perf_counter() - started
    summary = result.to_dict()
    return {
        "wall": wall,
        "rows": summary["reportRowsWritten"],
        "unchanged": result.counts["unchanged"],
        "sent": result.counts["sent"],
        "table_bytes": (table_bytes(table) - before) if table else 0,
        "file_bytes": report.stat().st_size if report else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    args = parser.parse_args()

    import psycopg

    from polyv_connector.simulator import PolyvSimulator

    schema = f"bench_rows_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    work = Path(tempfile.mkdtemp(prefix="polyv-bench-rows-"))
    try:
        source = work / "items.parquet"
        make_input(source, args.items)
        state = work / "state"
        with PolyvSimulator(apps={"bench-app": "bench-secret"}, fields=["PAY_STATUS"]) as sim:
            first = run_once(source, state, work / "first.parquet", None, "all", sim)
            print(f"first run: {first['sent']:,} sent in {first['wall']:.1f} s", flush=True)
            print(f"{'rerun':>6} {'report_rows':>11} {'wall s':>7} {'rows':>10} {'table bytes':>12} {'file bytes':>11}")
            results: dict[str, list[dict[str, Any]]] = {"all": [], "changes": []}
            for i, mode in enumerate(("all", "changes", "all", "changes")):
                r = run_once(source, state, work / f"rerun{i}.parquet", f"{schema}.polyv_sync_report", mode, sim)
                if r["sent"] or r["unchanged"] != args.items:
                    raise SystemExit(f"not a quiet night: {r}")
                results[mode].append(r)
                print(
                    f"{i + 1:>6} {mode:>11} {r['wall']:>7.1f} {r['rows']:>10,} {r['table_bytes']:>12,} "
                    f"{r['file_bytes']:>11,}",
                    flush=True,
                )
        best = {mode: min(r["wall"] for r in rs) for mode, rs in results.items()}
        print(
            f"best of two: all {best['all']:.1f} s, changes {best['changes']:.1f} s "
            f"({best['all'] / best['changes']:.1f}x faster, {best['all'] - best['changes']:.1f} s saved)"
        )
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
