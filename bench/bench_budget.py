"""Benchmark: the shared request budget's own cost, in acquisitions per second across processes.

Each of ``--procs`` real processes (spawn) opens the budget with an effectively unlimited rate
and calls ``acquire()`` in a loop for ``--seconds``; the figure is the sum over processes.
Goal: at least 10x the API's 150 requests/s, i.e. 1500/s. For comparison, the same loop on
pyrate-limiter's stock log buckets (``SQLiteBucket`` with its file lock, ``RedisBucket``), and on
a bare Redis GET (one round trip: the ceiling of any design that asks Redis once per request).
Only 127.0.0.1 is used (Redis on 6379, db 13). Run:

    PYTHONPATH=. .venv/bin/python bench/bench_budget.py [--procs 8] [--seconds 3]

These machines are shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
import uuid
from typing import Any

CTX = mp.get_context("spawn")
REDIS_URL = "redis://127.0.0.1:6379/13"
UNLIMITED = 1e6  # requests/s: the shared bucket never makes anyone wait


def _loop(kind: str, target: str, api: str, seconds: float, ready: Any, go: Any, out: Any) -> None:
    acquire: Any
    closer: Any = None
    if kind in ("machine", "redis"):
        from polyv_connector.budget import api_host_key, open_store
        from polyv_connector.budget.base import SharedBudget

        key = api_host_key(api)
        store = open_store(None if kind == "machine" else target, host_key=key)
        budget = SharedBudget(store, host_key=key, rate=UNLIMITED, run_id=f"bench-{os.getpid()}")
        budget.register()
        acquire, closer = budget.acquire, budget.close
    else:
        from pyrate_limiter import Rate, RateItem

        if kind == "redis-get":
            import redis

            client = redis.Redis(host="127.0.0.1", port=6379, db=13)

            def acquire() -> None:  # the ceiling: one bare round trip per acquisition
                client.get(target)

            ready.release()
            go.wait()
            count, end = 0, time.time() + seconds
            while time.time() < end:
                acquire()
                count += 1
            out.put(count)
            return
        if kind == "pyrate-sqlite":
            from pyrate_limiter.buckets import SQLiteBucket

            bucket: Any = SQLiteBucket.init_from_file(
                [Rate(10**9, 1000)], table="bench", db_path=target, use_file_lock=True
            )
        else:
            import redis
            from pyrate_limiter.buckets import RedisBucket

            client = redis.Redis(host="127.0.0.1", port=6379, db=13)
            bucket = RedisBucket.init([Rate(10**9, 1000)], client, target)

        def acquire() -> None:
            bucket.put(RateItem("bench", bucket.now()))

    ready.release()
    go.wait()
    count, end = 0, time.time() + seconds
    while time.time() < end:
        acquire()
        count += 1
    out.put(count)
    if closer:
        closer()


def measure(kind: str, target: str, procs: int, seconds: float) -> float:
    api = f"http://bench-{uuid.uuid4().hex[:8]}.invalid:80"  # a host key of its own; never contacted
    ready, go, out = CTX.Semaphore(0), CTX.Event(), CTX.Queue()
    workers = [CTX.Process(target=_loop, args=(kind, target, api, seconds, ready, go, out)) for _ in range(procs)]
    for w in workers:
        w.start()
    for _ in workers:
        ready.acquire(timeout=120)
    go.set()
    total: int = sum(int(out.get(timeout=120)) for _ in workers)
    for w in workers:
        w.join(timeout=30)
    if kind in ("redis", "pyrate-redis"):
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379, db=13)
        for key in client.scan_iter(match=f"polyv-connector:budget:{api_host_key_of(api)}:*"):
            client.delete(key)
        if kind == "pyrate-redis":
            client.delete(target)
        client.close()
    return total / seconds


def api_host_key_of(api: str) -> str:
    from polyv_connector.budget import api_host_key

    return api_host_key(api)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--no-baseline", action="store_true", help="skip pyrate-limiter's stock log buckets")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-budget-") as tmp:
        os.environ["POLYV_RUNTIME_DIR"] = tmp  # children inherit it: a machine-wide budget of our own
        cases = [("machine", ""), ("redis", REDIS_URL)]
        if not args.no_baseline:
            cases += [
                ("pyrate-sqlite", os.path.join(tmp, "pyrate.sqlite")),
                ("pyrate-redis", f"bench:{uuid.uuid4()}"),
                ("redis-get", "bench:absent"),
            ]
        print(f"{args.procs} processes x {args.seconds:g} s, load average before: {os.getloadavg()[0]:.1f}")
        for kind, target in cases:
            rate = measure(kind, target, args.procs, args.seconds)
            print(f"{kind:>14}: {rate:8.0f} acquisitions/s  ({rate / 150:.1f}x the API's 150/s)", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
