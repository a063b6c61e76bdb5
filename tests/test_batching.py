from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from polyv_connector.batching import item_table, make_batches

TRICKY = ["plain", 'quote"', "back\\slash", "nl\n", "ctl\x01\x1f", "中文", "😀", "\u200f", "", "tab\t"]


def test_body_is_the_json_array_polyv_expects_byte_exact() -> None:
    # The path the engine takes: item_table per chunk, make_batches across chunks, Batch.body().
    n = len(TRICKY)
    viewers = [f"v{t}" for t in TRICKY]
    chunks = [
        (np.arange(a, b), item_table(pa.array(viewers[a:b]), pa.array(["F"] * (b - a)), pa.array(TRICKY[a:b])))
        for a, b in ((0, 4), (4, n))
    ]
    (batch,) = make_batches(chunks, n, "run")
    body = batch.body()
    parsed = json.loads(body.decode("utf-8"))
    assert parsed == [
        {"viewerId": v, "customFieldId": "F", "customFieldValue": t} for v, t in zip(viewers, TRICKY, strict=True)
    ]
    # Same bytes as json.dumps(ensure_ascii=False, compact): non-ASCII is sent raw, not \\u-escaped.
    assert body == json.dumps(parsed, ensure_ascii=False, separators=(",", ":")).encode()


def test_batches_fill_across_chunks_and_halves_split_evenly() -> None:
    def chunk(start: int, n: int) -> tuple[np.ndarray, pa.Table]:
        ids = pa.array([f"v{i}" for i in range(start, start + n)])
        return np.arange(start, start + n), item_table(ids, pa.array(["F"] * n), pa.array(["x"] * n))

    batches = list(make_batches([chunk(0, 3), chunk(3, 4), chunk(7, 1)], 5, "run"))
    assert [len(b) for b in batches] == [5, 3]
    assert [b.batch_id for b in batches] == ["run-000000", "run-000001"]
    assert batches[0].indices.tolist() == [0, 1, 2, 3, 4]
    left, right = batches[0].halves()
    assert (left.batch_id, right.batch_id) == ("run-000000.0", "run-000000.1")
    assert [i["viewerId"] for i in json.loads(left.body())] == ["v0", "v1"]
    assert [i["viewerId"] for i in json.loads(right.body())] == ["v2", "v3", "v4"]
