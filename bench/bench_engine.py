"""Benchmark: rows/s from Parquet to request bodies, and end to end against the simulator.

Both are compared with a naive baseline measured in the same run (pandas iterrows, one dict
per row, json.dumps, one sequential requests.post per batch). Run:

    .venv/bin/python bench/bench_engine.py [--rows 1000000] [--e2e-rows 300000]

Figures are ratios against the baseline, since these machines are shared and noisy.
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

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import requests

from polyv_connector.batching import make_batches
from polyv_connector.config import Credentials, Secret, SendOptions, SyncOptions
from polyv_connector.engine.ledger import pending_chunks as _pending_chunks
from polyv_connector.engine.plan import plan_pass as _plan_pass
from polyv_connector.progress import Progress
from polyv_connector.run import sync
from polyv_connector.sender import Circuit
from polyv_connector.signing import signed_params
from polyv_connector.sources.parquet import ParquetSource

APP, SECRET = "bench-app", "bench-secret-value"


def make_input(path: Path, rows: int) -> None:
    fields = ["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER"]
    table = pa.table(
        {
            "viewerId": [f"viewer-{i // 4:08d}" for i in range(rows)],
            "customFieldId": [fields[i % 4] for i in range(rows)],
            "customFieldValue": [f"值-{i % 977}" for i in range(rows)],
        }
    )
    pq.write_table(table, path, row_group_size=128_000)


def ours_prepare(path: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        spill = Path(tmp) / "spill.arrow"
        opts = SyncOptions()
        ledger = _plan_pass(
            ParquetSource(str(path)), opts, lambda: None, None, spill, Progress(interval_s=1e9), Circuit()
        )
        n = 0
        for batch in make_batches(_pending_chunks(spill, ledger), 1000, "bench"):
            n += len(batch.body())
        return n


def naive_prepare(path: Path, post: object | None = None) -> int:
    df = pd.read_parquet(path)
    n = 0
    batch: list[dict[str, str]] = []
    for _, row in df.iterrows():
        batch.append(
            {
                "viewerId": row["viewerId"],
                "customFieldId": row["customFieldId"],
                "customFieldValue": row["customFieldValue"],
            }
        )
        if len(batch) == 1000:
            body = json.dumps(batch)
            n += len(body)
            if post:
                post(body)  # type: ignore[operator]
            batch = []
    if batch:
        body = json.dumps(batch)
        n += len(body)
        if post:
            post(body)  # type: ignore[operator]
    return n


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def start_simulator(port: int, latency_ms: int) -> subprocess.Popen[str]:
    env = {**os.environ, "POLYV_APP_ID": APP, "POLYV_APP_SECRET": SECRET}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "polyv_connector.cli",
            "simulator",
            "--port",
            str(port),
            "--latency-ms",
            str(latency_ms),
            "--max-requests",
            "100000",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "POLYV simulator listening on ..."
    return proc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--baseline-rows", type=int, default=200_000)
    ap.add_argument("--e2e-rows", type=int, default=300_000)
    ap.add_argument("--latency-ms", type=int, default=50)
    ap.add_argument("--max-rps", type=float, default=100.0)
    ap.add_argument("--port", type=int, default=8791)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big, small, e2e = Path(tmp) / "big.parquet", Path(tmp) / "small.parquet", Path(tmp) / "e2e.parquet"
        make_input(big, args.rows)
        make_input(small, args.baseline_rows)
        make_input(e2e, args.e2e_rows)

        t_ours = timed(ours_prepare, big)
        t_naive = timed(naive_prepare, small)
        r_ours, r_naive = args.rows / t_ours, args.baseline_rows / t_naive
        print(f"prepare  ours : {args.rows:>9,} rows in {t_ours:6.2f}s = {r_ours:>11,.0f} rows/s")
        print(f"prepare  naive: {args.baseline_rows:>9,} rows in {t_naive:6.2f}s = {r_naive:>11,.0f} rows/s")
        print(f"prepare  ratio: {r_ours / r_naive:.1f}x (target >= 20x)")

        sim = start_simulator(args.port, args.latency_ms)
        try:
            base = f"http://127.0.0.1:{args.port}"
            creds = Credentials(APP, Secret(SECRET), base)
            opts = SyncOptions(send=SendOptions(max_rps=args.max_rps), check_fields=False)
            t = time.perf_counter()
            res = sync(ParquetSource(str(e2e)), creds, opts, None, progress=Progress(interval_s=1e9))
            t_e2e = time.perf_counter() - t
            assert res.counts["sent"] == args.e2e_rows, res.summary_line()
            cap = args.max_rps * 1000
            rate = args.e2e_rows / t_e2e
            print(
                f"e2e      ours : {args.e2e_rows:>9,} rows in {t_e2e:6.2f}s = {rate:>11,.0f} rows/s "
                f"({rate / cap:.0%} of the cap {cap:,.0f} rows/s = --max-rps {args.max_rps:g} x 1000; "
                f"{args.latency_ms} ms latency)"
            )

            session = requests.Session()

            def post(body: str) -> None:
                q = signed_params({"appId": APP, "timestamp": str(int(time.time() * 1000))}, SECRET)
                r = session.post(
                    base + "/live/v4/user/custom-field/viewer-value/save",
                    params=q,
                    data=body.encode(),
                    headers={"Content-Type": "application/json"},
                )
                r.raise_for_status()

            nb = min(args.baseline_rows, 50_000)
            make_input(small, nb)
            t_base = timed(naive_prepare, small, post)
            r_base = nb / t_base
            print(f"e2e      naive: {nb:>9,} rows in {t_base:6.2f}s = {r_base:>11,.0f} rows/s")
            print(
                f"e2e      ratio: {rate / r_base:.1f}x faster than the naive loop; "
                f"{rate / cap:.0%} of the rate cap (target >= 90%)"
            )
        finally:
            sim.terminate()
            sim.wait()


if __name__ == "__main__":
    main()
