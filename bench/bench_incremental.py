"""Benchmark: plan an N-item input against a sync state where a fraction changed (issue #5).

Builds the input and a state as if a previous run had confirmed every item, changes
``--changed`` of the values, then times one dry run (read, check, fingerprint, dedupe,
diff against the state, report) in a child process and reads its peak memory. Run:

    .venv/bin/python bench/bench_incremental.py [--items 10000000] [--changed 0.01]
"""

from __future__ import annotations

import argparse
import json
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
src, state, report = sys.argv[1:4]
t = time.perf_counter()
res = sync(ParquetSource(src), Credentials("bench", Secret("bench-secret"), "http://127.0.0.1:9"),
           SyncOptions(dry_run=True, check_fields=False, state_dir=state), ParquetReport(report),
           progress=Progress(interval_s=1e9))
print(json.dumps({"seconds": time.perf_counter() - t, "counts": res.counts,
                  "requests": res.requests_planned,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000_000)
    ap.add_argument("--changed", type=float, default=0.01)
    args = ap.parse_args()
    from polyv_connector.fingerprints import key_hashes, value_fingerprints
    from polyv_connector.state.folder import SyncState

    with tempfile.TemporaryDirectory() as tmp:
        src, state_dir = Path(tmp) / "in.parquet", Path(tmp) / "state"
        t = time.perf_counter()
        writer = None
        st = SyncState(state_dir, "bench")
        st.begin("seed")
        chunk = 1_000_000
        rng = np.random.default_rng(1)
        fields = pa.array(["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER"])
        for start in range(0, args.items, chunk):
            n = min(chunk, args.items - start)
            i = np.arange(start, start + n)
            viewer = pc.binary_join_element_wise("viewer-", pa.array(i // 4).cast(pa.string()), "")
            field = fields.take(pa.array(i % 4))
            old = pc.binary_join_element_wise("v", pa.array(i % 1000).cast(pa.string()), "")
            changed = rng.random(n) < args.changed
            new = pc.if_else(pa.array(changed), pc.binary_join_element_wise(old, "-new", ""), old)
            table = pa.table({"viewerId": viewer, "customFieldId": field, "customFieldValue": new})
            writer = writer or pq.ParquetWriter(src, table.schema)
            writer.write_table(table)
            ka, _ = key_hashes(viewer, field)
            st.record(ka, value_fingerprints(old))  # the "previous run" confirmed the old values
        writer.close()
        st.finish()
        print(f"setup: {args.items:,} items and their state in {time.perf_counter() - t:.1f}s")
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(src), str(state_dir), str(Path(tmp) / "r.parquet")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        res = json.loads(out.strip().splitlines()[-1])
        print(
            f"plan  : {args.items:,} items, {args.changed:.0%} changed: {res['seconds']:.1f}s "
            f"(target <= 30 s), peak RSS {res['peak_rss_mb']:,.0f} MB (target < 1024 MB)"
        )
        print(
            f"        would send {res['counts']['dry_run']:,} items in {res['requests']:,} requests; "
            f"unchanged {res['counts']['unchanged']:,}"
        )


if __name__ == "__main__":
    main()
