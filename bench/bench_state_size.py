"""Benchmark: bytes per item of the warehouse sync state on PostgreSQL, old layout vs compact.

Fills two state tables with the same N confirmed items in one run and measures each with
``pg_total_relation_size`` (table, TOAST and indexes):

* ``v2``: the layout of schema versions 1 and 2 (appId, xxh3 key and fp, syncedAt, viewerId,
  customFieldId, valueMd5, runId, runSeq; index on appId, key, syncedAt), one confirmed record
  per item, written as that release wrote them (index first, then the rows). A lower bound:
  the release also left dead "sent, unconfirmed" records behind until VACUUM.
* ``v3``: the compact layout (acct, key, fp; primary key acct, key), written through
  ``SqlStateTable.record`` in batches of 1,000 as a first sync does (random key order).

Goal (issue 11): <= 100 bytes per item with its index. Run:

    .venv/bin/python bench/bench_state_size.py [--items 1000000] [--dsn ...]

:func:`measure` is importable (``bench/bench_partitions.py`` prints the same figures).
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from polyv_connector.fingerprints import UNCONFIRMED, key_hashes, value_fingerprints
from polyv_connector.state.table import SqlStateTable

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
APP = "bench-app-1234567"
GOAL_BYTES = 100
_BATCH = 1_000

_V2_DDL = (
    '("appId" TEXT NOT NULL, "key" BIGINT NOT NULL, "fp" BIGINT NOT NULL, "syncedAt" DOUBLE PRECISION NOT NULL, '
    '"viewerId" TEXT, "customFieldId" TEXT, "valueMd5" TEXT, "runId" TEXT, "runSeq" BIGINT)'
)


def _sizes(cur: Any, table: str) -> tuple[int, int]:
    cur.execute(f"SELECT pg_total_relation_size('{table}'), pg_indexes_size('{table}')")
    total, indexes = cur.fetchone()
    return int(total), int(indexes)


def _fill_v2(cur: Any, table: str, items: int) -> None:
    """The old layout, as a first run of versions 1-2 left it (after compaction)."""
    cur.execute(f"CREATE TABLE {table} {_V2_DDL}")
    cur.execute(f'CREATE INDEX ON {table} ("appId", "key", "syncedAt")')
    # Keys are hashes: the index receives them in random order, as the release wrote them.
    cur.execute(
        f"INSERT INTO {table} SELECT '{APP}', ('x' || substr(md5('k' || i), 1, 16))::bit(64)::bigint, "
        "('x' || substr(md5('v' || i), 1, 16))::bit(64)::bigint, 1764500000 + i / 1000.0, "
        "'viewer-' || lpad(i::text, 9, '0'), 'VIP_LEVEL', md5('L' || (i %% 1000)), "
        "'20261130T180000Z-1a2b3c4d', 1 FROM generate_series(1, %s) i",
        (items,),
    )


def _fill_v3(connect: Any, table: str, items: int) -> float:
    """The compact layout through the real write path; returns the seconds it took."""
    state = SqlStateTable(connect, table, APP)
    started = time.perf_counter()
    state.begin("bench")
    step = 100_000
    for start in range(0, items, step):
        i = pa.array(np.arange(start, min(start + step, items)))
        viewer = pc.binary_join_element_wise("viewer-", pc.utf8_lpad(i.cast(pa.string()), 9, "0"), "")
        field = pa.array(["VIP_LEVEL"] * len(i))
        value = pc.binary_join_element_wise("L", pc.cast(pc.remainder(i, 1000), pa.string()), "")
        keys = key_hashes(viewer, field, state.hash_family)[0]
        fps = value_fingerprints(value, state.hash_family)
        for b in range(0, len(keys), _BATCH):
            state.record(keys[b : b + _BATCH], np.full(len(keys[b : b + _BATCH]), UNCONFIRMED))  # before sending
            state.record(keys[b : b + _BATCH], fps[b : b + _BATCH])  # confirmed
    state.finish()
    return time.perf_counter() - started


def measure(items: int = 1_000_000, dsn: str = DSN) -> dict[str, dict[str, float]]:
    """Bytes per item (total, of which indexes) of both layouts for ``items`` confirmed items."""
    import psycopg

    schema = f"polyv_bench_state_{uuid.uuid4().hex[:8]}"

    def connect() -> Any:
        return psycopg.connect(dsn)

    admin = psycopg.connect(dsn, autocommit=True)
    cur = admin.cursor()
    cur.execute(f"CREATE SCHEMA {schema}")
    try:
        old, new = f"{schema}.state_v2", f"{schema}.state_v3"
        started = time.perf_counter()
        _fill_v2(cur, old, items)
        v2_s = time.perf_counter() - started
        v3_s = _fill_v3(connect, new, items)
        out = {}
        for name, table, seconds in (("v2", old, v2_s), ("v3", new, v3_s)):
            total, indexes = _sizes(cur, table)
            out[name] = {"bytes_per_item": total / items, "index_bytes_per_item": indexes / items, "fill_s": seconds}
        return out
    finally:
        cur.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dsn", default=DSN)
    args = ap.parse_args()
    figures = measure(args.items, args.dsn)
    print(f"warehouse state on PostgreSQL, {args.items:,} confirmed items (pg_total_relation_size)")
    print("layout           bytes/item  of which index  fill time")
    labels = {"v2": "v2 (texts, xxh3)", "v3": "v3 (compact)"}
    for name, f in figures.items():
        print(f"{labels[name]:16} {f['bytes_per_item']:10.1f}  {f['index_bytes_per_item']:14.1f}  {f['fill_s']:8.1f}s")
    ratio = figures["v2"]["bytes_per_item"] / figures["v3"]["bytes_per_item"]
    verdict = "met" if figures["v3"]["bytes_per_item"] <= GOAL_BYTES else "NOT met"
    print(f"ratio            {ratio:.1f}x smaller; goal <= {GOAL_BYTES} bytes/item: {verdict}")
    print(f"v3 write rate    {args.items / figures['v3']['fill_s']:,.0f} items/s through SqlStateTable.record")


if __name__ == "__main__":
    main()
