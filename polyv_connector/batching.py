"""Request batches as plain, frozen data, built by pure functions.

Items are JSON-encoded column-wise with Arrow (one JSON object per item, escaped only where
a string needs it), so a batch's body is a join of ready-made objects, not a Python loop of
dicts. Signing happens later, at send time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'


def json_string_literals(values: pa.Array) -> pa.Array:
    """Each string as a JSON string literal (quoted, escaped as ``json.dumps(ensure_ascii=False)``).

    Most viewer data needs no escaping: those values are just quoted, vectorised; the few
    holding quotes, backslashes or control characters go through ``json.dumps``.
    """
    quoted = pc.binary_join_element_wise(pa.scalar('"'), values, pa.scalar('"'), "")
    needs = pc.match_substring_regex(values, _NEEDS_ESCAPE)
    if not pc.any(needs).as_py():
        return quoted
    special = pc.filter(values, needs).to_pylist()
    escaped = pa.array([json.dumps(s, ensure_ascii=False) for s in special], pa.string())
    return pc.replace_with_mask(quoted, needs, escaped)


def json_objects(viewer_ids: pa.Array, field_ids: pa.Array, values: pa.Array) -> pa.Array:
    """One compact JSON object per item: ``{"viewerId":..,"customFieldId":..,"customFieldValue":..}``."""
    return pc.binary_join_element_wise(
        pa.scalar('{"viewerId":'), json_string_literals(viewer_ids),
        pa.scalar(',"customFieldId":'), json_string_literals(field_ids),
        pa.scalar(',"customFieldValue":'), json_string_literals(values), pa.scalar("}"), "",
    )


@dataclass(frozen=True)
class Batch:
    """Items for one save request. ``batch_id`` is stable within a run ("<run>-000012", "…-000012.0.1")."""

    batch_id: str
    indices: np.ndarray  # int64 positions of the items in the run
    objects: pa.Array  # the items' JSON objects (see json_objects)

    def __len__(self) -> int:
        return len(self.indices)

    def body(self) -> bytes:
        """The JSON array POLYV expects, UTF-8 encoded (strings byte-exact, not \\u-escaped)."""
        as_list = pa.ListArray.from_arrays(pa.array([0, len(self.objects)], pa.int32()), self.objects)
        return b"[" + pc.binary_join(as_list, ",")[0].as_py().encode("utf-8") + b"]"

    def halves(self) -> tuple[Batch, Batch]:
        """Split in two (for isolating items the server rejects)."""
        mid = len(self) // 2
        return (Batch(self.batch_id + ".0", self.indices[:mid], self.objects.slice(0, mid)),
                Batch(self.batch_id + ".1", self.indices[mid:], self.objects.slice(mid)))


def encode_body(viewer_ids: Iterable[str], field_ids: Iterable[str], values: Iterable[str]) -> bytes:
    """Encode items as a JSON array body (convenience for callers holding Python strings)."""
    objects = json_objects(pa.array(list(viewer_ids), pa.string()), pa.array(list(field_ids), pa.string()),
                           pa.array(list(values), pa.string()))
    return Batch("", np.arange(len(objects)), objects).body()


def make_batches(
    chunks: Iterable[tuple[np.ndarray, pa.Array]],
    batch_size: int,
    run_id: str,
    first_batch_no: int = 0,
) -> Iterator[Batch]:
    """Group items, given as chunks of (positions, JSON objects) in run order, into batches.

    Batches fill across chunk boundaries, so sparse pending items still make full requests.
    """
    batch_no = first_batch_no
    pend_idx: list[np.ndarray] = []
    pend_obj: list[pa.Array] = []
    pending = 0
    for idx, objects in chunks:
        pos = 0
        while pos < len(idx):
            take = min(batch_size - pending, len(idx) - pos)
            pend_idx.append(idx[pos:pos + take])
            pend_obj.append(objects.slice(pos, take))
            pending += take
            pos += take
            if pending == batch_size:
                yield Batch(f"{run_id}-{batch_no:06d}", np.concatenate(pend_idx), pa.concat_arrays(pend_obj))
                batch_no += 1
                pend_idx, pend_obj, pending = [], [], 0
    if pending:
        yield Batch(f"{run_id}-{batch_no:06d}", np.concatenate(pend_idx), pa.concat_arrays(pend_obj))
