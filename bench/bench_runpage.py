"""Benchmark: the run page's size and render time for a big run, against a small run's page
rendered in the same process (the baseline).

    .venv/bin/python bench/bench_runpage.py [--hours 10] [--repeat 3]

The big run: ten hours of sending (36,000 timeline seconds), 15 reason codes, 20 problem rows,
a suite of 12 expectations. The small run: one minute, 4 codes, 2 problem rows, no suite. The
first render (in a fresh process: what a run pays at exit) is reported apart, beside what
importing matplotlib alone costs in a fresh process, when it is installed (the page's charts
were drawn with it before they were written as plain SVG, :mod:`polyv_connector.svgchart`).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time

from polyv_connector.engine.result import SyncResult
from polyv_connector.runpage import render_run_page
from polyv_connector.timeline import TimelineSummary


def make_result(seconds: int, codes: int, problems: int, expectations: int) -> SyncResult:
    rnd = random.Random(7)
    result = SyncResult(
        run_id="20261130T180000Z-bench000",
        app_id="bench-app",
        counts={"sent": seconds * 9_500, "unchanged": seconds * 400, "rejected": seconds * 80, "failed": seconds},
        items=seconds * 9_981,
        requests_sent=seconds * 96,
        requests_planned=seconds * 95,
        duration_s=float(seconds),
        report_location="/data/out/run.parquet",
        dry_run=False,
    )
    if expectations:
        result.extra["validation"] = {
            "suite": "bench",
            "success": False,
            "items": result.items,
            "itemsRejected": seconds * 20,
            "gateFailures": [],
            "expectations": [
                {
                    "type": "expect_column_values_to_match_regex",
                    "column": f"col_{i}",
                    "success": i % 3 != 0,
                    "unexpectedCount": i * 10,
                    "action": "reject_rows",
                    "error": None,
                }
                for i in range(expectations)
            ],
        }
    result.counts_by_reason = {f"reason_code_{i}": rnd.randint(1, 10_000) for i in range(codes)}
    result.problems = [
        {"rowNumber": i * 13, "viewerId": f"viewer-{i}", "reasonCode": "reason_code_1", "reason": "a reason " * 8}
        for i in range(problems)
    ]
    result.timeline = TimelineSummary(
        seconds=list(range(seconds)),
        requests=[min(100, int(rnd.gauss(95, 4))) for _ in range(seconds)],
        retries=[rnd.choice((0,) * 30 + (1, 2)) for _ in range(seconds)],
        splits=[rnd.choice((0,) * 300 + (1,)) for _ in range(seconds)],
        budget_rps=100.0,
        latency_p50_s=0.04,
        latency_p95_s=0.2,
        retries_by_cause={"http_500": 900, "timeout": 40},
        budget_wait_s=120.0,
    )
    return result


def timed(result: SyncResult, repeat: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        size = len(render_run_page(result).encode())
        times.append(time.perf_counter() - start)
    return statistics.median(times), size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    small = make_result(60, 4, 2, 0)
    big = make_result(int(args.hours * 3600), 15, 20, 12)
    start = time.perf_counter()
    render_run_page(small)
    first = time.perf_counter() - start
    small_s, small_b = timed(small, args.repeat)
    big_s, big_b = timed(big, args.repeat)
    print(f"first render: {first * 1000:.0f} ms")
    probe = "import time; t = time.perf_counter(); import matplotlib.figure; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if done.returncode == 0:
        print(f"baseline: importing matplotlib.figure alone: {float(done.stdout) * 1000:.0f} ms")
    print(f"small run (1 min, 4 codes):          {small_s * 1000:7.0f} ms  {small_b / 1024:7.1f} KiB")
    print(f"big run ({args.hours:g} h, 15 codes, 12 exp.): {big_s * 1000:7.0f} ms  {big_b / 1024:7.1f} KiB")
    print(f"ratio big/small: time x{big_s / small_s:.2f}, size x{big_b / small_b:.2f}")


if __name__ == "__main__":
    main()
