"""Request batches as plain, frozen data, built by pure functions.

A batch's items are JSON-encoded column-wise with Arrow when it is sent (one JSON object per
item, escaped only where a string needs it), so its body is a join of objects, not a Python loop
of dicts. Signing happens later, at send time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from polyv_connector.arrowconv import from_numpy, scalar, strings
from polyv_connector.model import FIELD_ID, VALUE, VIEWER_ID

_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'


def json_string_literals(values: pa.Array) -> pa.Array:
    """Each string as a JSON string literal (quoted, escaped as ``json.dumps(ensure_ascii=False)``).

    Most viewer data needs no escaping: those values are just quoted, vectorised; the few
    holding quotes, backslashes or control characters go through ``json.dumps``.
    """
    quoted = pc.binary_join_element_wise(scalar('"'), values, scalar('"'), scalar(""))
    needs = pc.match_substring_regex(values, _NEEDS_ESCAPE)
    if not pc.any(needs).as_py():
        return quoted
    special = pc.filter(values, needs).to_pylist()
    escaped = strings([json.dumps(s, ensure_ascii=False) for s in special])
    return pc.replace_with_mask(quoted, needs, escaped)


def json_objects(viewer_ids: pa.Array, field_ids: pa.Array, values: pa.Array) -> pa.Array:
    """One compact JSON object per item: ``{"viewerId":..,"customFieldId":..,"customFieldValue":..}``."""
    return pc.binary_join_element_wise(
        scalar('{"viewerId":'),
        json_string_literals(viewer_ids),
        scalar(',"customFieldId":'),
        json_string_literals(field_ids),
        scalar(',"customFieldValue":'),
        json_string_literals(values),
        scalar("}"),
        scalar(""),
    )


def item_table(viewer_ids: pa.Array, field_ids: pa.Array, values: pa.Array) -> pa.Table:
    """Items ready to batch: the three strings. Each batch builds its JSON objects when it is sent
    (:meth:`Batch.body`), in the sending thread: built for a whole chunk ahead, they were the
    largest thing the run held while sending and stood between the plan and the first request."""
    return pa.table({VIEWER_ID: viewer_ids, FIELD_ID: field_ids, VALUE: values})


@dataclass(frozen=True)
class Batch:
    """Items for one save request. ``batch_id`` is stable within a run ("<run>-000012", "…-000012.0.1")."""

    batch_id: str
    indices: np.ndarray  # int64 positions of the items in the run
    items: pa.Table  # viewerId, customFieldId, customFieldValue (see item_table)

    def __len__(self) -> int:
        return len(self.indices)

    def body(self) -> bytes:
        """The JSON array POLYV expects, UTF-8 encoded (strings byte-exact, not \\u-escaped)."""
        items = self.items
        objects = json_objects(
            items.column(VIEWER_ID).combine_chunks(),
            items.column(FIELD_ID).combine_chunks(),
            items.column(VALUE).combine_chunks(),
        )
        as_list = pa.ListArray.from_arrays(from_numpy(np.array([0, len(objects)], np.int32)), objects)
        joined: str = pc.binary_join(as_list, scalar(","))[0].as_py()
        return b"[" + joined.encode("utf-8") + b"]"

    def halves(self) -> tuple[Batch, Batch]:
        """Split in two (for isolating items the server rejects)."""
        mid = len(self) // 2
        return (
            Batch(self.batch_id + ".0", self.indices[:mid], self.items.slice(0, mid)),
            Batch(self.batch_id + ".1", self.indices[mid:], self.items.slice(mid)),
        )


def make_batches(
    chunks: Iterable[tuple[np.ndarray, pa.Table]],
    batch_size: int,
    run_id: str,
    first_batch_no: int = 0,
) -> Iterator[Batch]:
    """Group items, given as chunks of (positions, item_table) in run order, into batches.

    Batches fill across chunk boundaries, so sparse pending items still make full requests.
    """
    batch_no = first_batch_no
    pend_idx: list[np.ndarray] = []
    pend_items: list[pa.Table] = []
    pending = 0
    for idx, items in chunks:
        pos = 0
        while pos < len(idx):
            take = min(batch_size - pending, len(idx) - pos)
            pend_idx.append(idx[pos : pos + take])
            pend_items.append(items.slice(pos, take))
            pending += take
            pos += take
            if pending == batch_size:
                yield Batch(f"{run_id}-{batch_no:06d}", np.concatenate(pend_idx), pa.concat_tables(pend_items))
                batch_no += 1
                pend_idx, pend_items, pending = [], [], 0
    if pending:
        yield Batch(f"{run_id}-{batch_no:06d}", np.concatenate(pend_idx), pa.concat_tables(pend_items))
