"""Benchmark: planning one large input as 1, 2 and 4 partitions, each partition its own process.

Planning is what a run does before it sends anything: read the Parquet input (each partition
filtering while it reads), check, fingerprint, find duplicates and plan, as a dry run (nothing
is sent, no request is made). Every partition is a separate process, run one after the other
so that they do not compete for this machine's cores; for each the script prints its wall time,
CPU seconds and peak RSS (``wait4``'s ``ru_maxrss``), and per N the ratios against N=1 measured
in the same run. On N workers the partitions run side by side, so a partitioned run takes about
its slowest partition's time. Run:

    .venv/bin/python bench/bench_partitions.py [--items 20000000] [--partitions 1,2,4] [--state-items 1000000]

The input is generated once and cached under the temp directory (``--cache``). Goal: peak RSS
per process falls roughly as 1/N; 20M items in 4 partitions under 600 MB each. Then, with a
PostgreSQL at hand, the warehouse state's bytes per item (``bench_state_size.py``; goal <= 100).
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

FIELDS = ["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER", "CITY"]
CHUNK = 1_000_000


def make_input(path: Path, items: int) -> None:
    """``items`` long-form items, five fields per viewer, in row groups of up to 1M rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tmp = path.with_suffix(".tmp")
    schema = pa.schema([("viewerId", pa.string()), ("customFieldId", pa.string()), ("customFieldValue", pa.string())])
    fields = pa.array(FIELDS)
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, items, CHUNK):
            i = np.arange(start, min(items, start + CHUNK), dtype=np.int64)
            viewer = pc.binary_join_element_wise("viewer-", pa.array(i // len(FIELDS)).cast(pa.string()), "")
            value = pc.binary_join_element_wise("value-", pa.array((i * 7919) % 100_003).cast(pa.string()), "")
            writer.write_table(
                pa.table([viewer, fields.take(pa.array(i % len(FIELDS))), value], schema=schema),
                row_group_size=CHUNK,
            )
    os.replace(tmp, path)


def cached_input(cache: Path, items: int) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"items-{items}.parquet"
    if not path.exists():
        started = time.perf_counter()
        make_input(path, items)
        print(f"generated {path} ({items:,} items) in {time.perf_counter() - started:.1f}s", flush=True)
    return path


def plan_one(path: str, partitions: int, partition: int) -> dict[str, object]:
    """The worker: plan one partition as a dry run; print what it planned as JSON."""
    from polyv_connector.config import Credentials, Secret, SyncOptions
    from polyv_connector.progress import Progress
    from polyv_connector.run import sync
    from polyv_connector.sources.parquet import ParquetSource

    options = SyncOptions(dry_run=True, check_fields=False, partitions=partitions, partition=partition)
    # Nothing is sent in a dry run without the field preflight: the address is never used.
    creds = Credentials("bench", Secret("bench-secret"), "http://127.0.0.1:9")
    result = sync(ParquetSource(path), creds, options, None, progress=Progress(interval_s=1e9))
    return {"items": result.items, "counts": result.counts, "requests": result.api_requests}


def run_worker(path: Path, partitions: int, partition: int) -> dict[str, float | int]:
    """Run one partition in a child process; its wall time, CPU time and peak RSS."""
    cmd = [sys.executable, __file__, "--worker", str(path), str(partitions), str(partition)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"partition {partition} of {partitions} failed ({proc.returncode}): {err[-2000:]}")
    planned = json.loads(out.strip().splitlines()[-1])
    if planned["requests"]:
        raise SystemExit(f"a dry run made {planned['requests']} request(s)")
    return {
        "items": int(planned["items"]),
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20_000_000)
    parser.add_argument("--partitions", default="1,2,4", help="the Ns to compare, comma-separated (first: baseline)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "polyv-bench-partitions")
    parser.add_argument(
        "--state-items",
        type=int,
        default=1_000_000,
        help="also measure the warehouse state's bytes per item on PostgreSQL for this many items (0: skip)",
    )
    parser.add_argument("--worker", nargs=3, metavar=("INPUT", "N", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        path, n, k = args.worker
        print(json.dumps(plan_one(path, int(n), int(k))))
        return

    path = cached_input(args.cache, args.items)
    ns = [int(n) for n in args.partitions.split(",")]
    print(f"planning {args.items:,} items (dry run, nothing sent), each partition in its own process")
    print(f"{'N':>3} {'k':>3} {'items':>12} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12}")
    summary: dict[int, dict[str, float]] = {}
    for n in ns:
        runs = []
        for k in range(n):
            r = run_worker(path, n, k)
            runs.append(r)
            print(
                f"{n:>3} {k:>3} {r['items']:>12,} {r['wall']:>8.1f} {r['cpu']:>8.1f} {r['rss_mb']:>12.0f}", flush=True
            )
        total = sum(int(r["items"]) for r in runs)
        if total != args.items:
            raise SystemExit(f"N={n}: the partitions planned {total:,} items, not {args.items:,}")
        summary[n] = {
            "wall_max": max(float(r["wall"]) for r in runs),
            "cpu_sum": sum(float(r["cpu"]) for r in runs),
            "rss_max": max(float(r["rss_mb"]) for r in runs),
        }
    base = summary[ns[0]]
    print()
    print(f"ratios against N={ns[0]} (same run):")
    print(
        f"{'N':>3} {'max peak RSS MB':>16} {'RSS ratio':>10} {'1/N':>6} {'slowest wall s':>15} {'wall ratio':>11} "
        f"{'total CPU s':>12} {'CPU ratio':>10}"
    )
    for n in ns:
        s = summary[n]
        print(
            f"{n:>3} {s['rss_max']:>16.0f} {s['rss_max'] / base['rss_max']:>10.2f} {ns[0] / n:>6.2f} "
            f"{s['wall_max']:>15.1f} {s['wall_max'] / base['wall_max']:>11.2f} "
            f"{s['cpu_sum']:>12.1f} {s['cpu_sum'] / base['cpu_sum']:>10.2f}"
        )
    if args.state_items:
        print_state_size(args.state_items)


def print_state_size(items: int) -> None:
    """The warehouse state's bytes per item on PostgreSQL (bench_state_size.measure)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_state_size", Path(__file__).with_name("bench_state_size.py"))
    if spec is None or spec.loader is None:
        print("\n(bench_state_size.py not found: no state size measured)")
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(f"\nwarehouse state on PostgreSQL, {items:,} confirmed items (bench_state_size.measure):")
    try:
        figures = module.measure(items)
    except Exception as exc:  # no PostgreSQL here: say so, the partition figures stand
        print(f"  skipped: {type(exc).__name__}: {exc}")
        return
    for name, f in figures.items():
        print(f"  {name}: {f['bytes_per_item']:.1f} bytes/item (indexes {f['index_bytes_per_item']:.1f})")
    verdict = "met" if figures["v3"]["bytes_per_item"] <= module.GOAL_BYTES else "NOT met"
    print(f"  goal <= {module.GOAL_BYTES} bytes/item: {verdict}")


if __name__ == "__main__":
    main()
