"""Benchmark: what a plan costs (issue 20): the plan file's size per item, and the time of
``plan`` against a plain dry run of the same input in the same command, plus the apply's
verification of the plan (HMAC and the items' checksum, one read of the file).

Builds an N-item long-form input (four fields per viewer, values of a few characters) whose every
item is a change (no state: all ``new``), then, each in a child process (its own peak memory):
a dry run, and the same dry run writing the plan. Stays out of CI (10M items take minutes). Run:

    .venv/bin/python bench/bench_plan.py [--items 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

CHILD = r"""
import json, resource, sys, time
from polyv_connector.config import Credentials, Secret, SyncOptions
from polyv_connector.run import sync
from polyv_connector.progress import Progress
from polyv_connector.report import ParquetReport
from polyv_connector.sources.parquet import ParquetSource
src, report, plan = sys.argv[1:4]
writer = None
if plan != "-":
    from polyv_connector.planfile import PlanWriter
    writer = PlanWriter(plan)
creds = Credentials("bench", Secret("bench-secret"), "http://127.0.0.1:9")
t = time.perf_counter()
res = sync(ParquetSource(src), creds, SyncOptions(dry_run=True, check_fields=False), ParquetReport(report),
           progress=Progress(interval_s=1e9), plan=writer)
out = {"seconds": time.perf_counter() - t, "items": res.items}
if writer is not None:
    t2 = time.perf_counter()
    writer.close({"appId": "bench"}, "bench-secret")
    out["close_seconds"] = time.perf_counter() - t2
    out["seconds"] = time.perf_counter() - t
    from polyv_connector import planfile
    t3 = time.perf_counter()
    planfile.verify(plan, "bench", "bench-secret")
    out["verify_seconds"] = time.perf_counter() - t3
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def _child(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.parquet"
        t = time.perf_counter()
        writer = None
        fields = pa.array(["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER"])
        for start in range(0, args.items, 1_000_000):
            n = min(1_000_000, args.items - start)
            i = np.arange(start, start + n)
            viewer = pc.binary_join_element_wise("viewer-", pa.array(i // 4).cast(pa.string()), "")
            # Distinct values (a score, an id, a date): the plan cannot shrink them to a dictionary.
            value = pc.binary_join_element_wise("value-", pa.array(i * 7919 % 10_000_019).cast(pa.string()), "")
            table = pa.table(
                {"viewerId": viewer, "customFieldId": fields.take(pa.array(i % 4)), "customFieldValue": value}
            )
            writer = writer or pq.ParquetWriter(src, table.schema)
            writer.write_table(table)
        assert writer is not None
        writer.close()
        per_item = src.stat().st_size / args.items
        print(f"setup: {args.items:,} items in {time.perf_counter() - t:.1f}s (input {per_item:.1f} B/item)")
        dry = _child(str(src), str(Path(tmp) / "dry.parquet"), "-")
        plan_path = Path(tmp) / "plan.parquet"
        plan = _child(str(src), str(Path(tmp) / "plan-report.parquet"), str(plan_path))
        size = os.path.getsize(plan_path)
        print(f"dry run:  {dry['seconds']:.2f}s, peak RSS {dry['peak_rss_mb']:.0f} MB")
        print(
            f"plan:     {plan['seconds']:.2f}s (of which signing and closing {plan['close_seconds']:.2f}s), "
            f"peak RSS {plan['peak_rss_mb']:.0f} MB"
        )
        print(f"ratio plan / dry run: {plan['seconds'] / dry['seconds']:.2f}x")
        print(f"plan file: {size / 1e6:.1f} MB, {size / args.items:.2f} bytes per item")
        print(f"apply's verification (HMAC + checksum of every item): {plan['verify_seconds']:.2f}s")


if __name__ == "__main__":
    main()
