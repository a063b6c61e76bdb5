"""Benchmark: the incremental diff in Python vs pushed down into PostgreSQL (issue #5).

Loads N long-form rows into a PostgreSQL table, fills a state table as if a previous run had
confirmed all of them, changes ``--changed`` of the values, then plans a dry run twice in the
same process: (a) every row read out of the warehouse and diffed by the engine, (b) the diff
as an anti-join in the warehouse, so only changed rows leave it. Run:

    .venv/bin/python bench/bench_warehouse_diff.py [--rows 1000000] [--changed 0.01] [--dsn ...]
"""

from __future__ import annotations

import argparse
import time
import uuid

import psycopg2
import pyarrow as pa
import pyarrow.compute as pc

from polyv_connector.config import ColumnMapping, Credentials, Secret, SyncOptions
from polyv_connector.fingerprints import key_hashes, value_fingerprints
from polyv_connector.progress import Progress
from polyv_connector.run import sync
from polyv_connector.sources.sql import SqlSource
from polyv_connector.state.table import SqlStateTable

APP = "bench-app"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--changed", type=float, default=0.01)
    ap.add_argument("--dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=test")
    args = ap.parse_args()
    schema = f"polyv_bench_{uuid.uuid4().hex[:8]}"

    def connect():
        return psycopg2.connect(args.dsn)

    admin = connect()
    admin.autocommit = True
    cur = admin.cursor()
    cur.execute(f"CREATE SCHEMA {schema}")
    try:
        t = time.perf_counter()
        cur.execute(f"CREATE TABLE {schema}.attrs (viewer_id text, field_id text, value text)")
        cur.execute(
            f"INSERT INTO {schema}.attrs SELECT 'viewer-' || i, 'VIP_LEVEL', 'L' || (i % 1000) "
            f"FROM generate_series(1, {args.rows}) i"
        )
        state = SqlStateTable(connect, f"{schema}.polyv_sync_state", APP)
        state.begin("seed")
        step = 100_000
        for start in range(1, args.rows + 1, step):
            i = pa.array(range(start, min(start + step, args.rows + 1)))
            viewer = pc.binary_join_element_wise("viewer-", i.cast(pa.string()), "")
            field = pa.array(["VIP_LEVEL"] * len(i))
            value = pc.binary_join_element_wise("L", pa.array([x % 1000 for x in i.to_pylist()]).cast(pa.string()), "")
            items = pa.table({"viewerId": viewer, "customFieldId": field, "customFieldValue": value})
            family = state.hash_family
            state.record(key_hashes(viewer, field, family)[0], value_fingerprints(value, family), items=items)
        state.finish()
        every = max(1, round(1 / args.changed))
        cur.execute(f"UPDATE {schema}.attrs SET value = value || '-new' WHERE substr(viewer_id, 8)::int % {every} = 0")
        cur.execute(f"ANALYZE {schema}.attrs")
        cur.execute(f"ANALYZE {schema}.polyv_sync_state")
        print(f"setup : {args.rows:,} rows and their state in PostgreSQL in {time.perf_counter() - t:.1f}s")

        creds = Credentials(APP, Secret("bench-secret"), "http://127.0.0.1:9")
        opts = SyncOptions(
            dry_run=True,
            check_fields=False,
            read_batch_rows=50_000,
            mapping=ColumnMapping("viewer_id", "field_id", "value"),
        )
        results = {}
        for mode in ("python", "warehouse"):
            in_warehouse = mode == "warehouse"
            st = SqlStateTable(
                connect, f"{schema}.polyv_sync_state", APP, create=False, load_for_local_diff=not in_warehouse
            )
            source = SqlSource(connect, table=f"{schema}.attrs", skip_unchanged=st if in_warehouse else None)
            t = time.perf_counter()
            res = sync(source, creds, opts, None, state=st, progress=Progress(interval_s=1e9))
            results[mode] = (time.perf_counter() - t, res)
            print(
                f"{mode:9}: {time.perf_counter() - t:6.1f}s, {res.items:>9,} rows left the warehouse, "
                f"{res.counts['dry_run']:,} to send, {res.counts['unchanged']:,} unchanged in Python"
            )
        ratio = results["python"][0] / results["warehouse"][0]
        print(f"ratio    : the diff in the warehouse is {ratio:.1f}x faster for {args.changed:.0%} changed")
    finally:
        cur.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


if __name__ == "__main__":
    main()
