"""Benchmark: the two hash families of polyv_connector.fingerprints, per 1M items, in one run.

xxh3 is the folder state's; md5 is the warehouse state table's (a database computes the same
hashes itself, for the diff in the warehouse). Keys hash viewerId + customFieldId (4 fields
per viewer, as a wide source gives them); values hash the value's text. Run:

    .venv/bin/python bench/bench_hash_families.py [--items 1000000]
"""

from __future__ import annotations

import argparse
import time

import pyarrow as pa

from polyv_connector.fingerprints import HASH_FAMILIES, key_hashes, value_fingerprints


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    args = ap.parse_args()
    n = args.items
    viewers = pa.array([f"viewer-{i // 4:09d}" for i in range(n)])
    fields = pa.array([f"FIELD_{i % 4}" for i in range(n)])
    values = pa.array([f"value {i} 已支付" for i in range(n)])
    per_million = 1_000_000 / n
    seconds = {}
    for family in HASH_FAMILIES:
        started = time.perf_counter()
        key_hashes(viewers, fields, family)
        keys_s = time.perf_counter() - started
        started = time.perf_counter()
        value_fingerprints(values, family)
        values_s = time.perf_counter() - started
        seconds[family] = keys_s + values_s
        print(
            f"{family:5}: keys {keys_s * per_million:5.2f}s  values {values_s * per_million:5.2f}s  "
            f"total {seconds[family] * per_million:5.2f}s per 1M items"
        )
    print(f"ratio: md5 takes {seconds['md5'] / seconds['xxh3']:.1f}x the time of xxh3")


if __name__ == "__main__":
    main()
