"""Request batches as plain, frozen data, built by pure functions.

A batch holds the items' positions in the run (``indices``) and their three strings.
Bodies are encoded here; signing happens later, at send time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Batch:
    """Items for one save request. ``batch_id`` is stable within a run ("<run>-000012", "…-000012.0.1")."""

    batch_id: str
    indices: np.ndarray  # int64 positions of the items in the run
    viewer_ids: tuple[str, ...]
    field_ids: tuple[str, ...]
    values: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.viewer_ids)

    def body(self) -> bytes:
        """The JSON array POLYV expects, UTF-8 encoded (strings byte-exact, not \\u-escaped)."""
        return encode_body(self.viewer_ids, self.field_ids, self.values)

    def halves(self) -> tuple[Batch, Batch]:
        """Split in two (for isolating items the server rejects)."""
        mid = len(self) // 2
        return (self._slice(0, mid, ".0"), self._slice(mid, len(self), ".1"))

    def _slice(self, start: int, stop: int, suffix: str) -> Batch:
        return Batch(self.batch_id + suffix, self.indices[start:stop], self.viewer_ids[start:stop],
                     self.field_ids[start:stop], self.values[start:stop])


def encode_body(viewer_ids: Iterable[str], field_ids: Iterable[str], values: Iterable[str]) -> bytes:
    """Encode items as a compact JSON array of ``{viewerId, customFieldId, customFieldValue}``."""
    return json.dumps(
        [{"viewerId": v, "customFieldId": f, "customFieldValue": x}
         for v, f, x in zip(viewer_ids, field_ids, values, strict=True)],
        ensure_ascii=False, separators=(",", ":"),
    ).encode("utf-8")


def make_batches(
    chunks: Iterable[tuple[np.ndarray, list[str], list[str], list[str]]],
    batch_size: int,
    run_id: str,
    first_batch_no: int = 0,
) -> Iterator[Batch]:
    """Group items (given as chunks of indices and strings, in run order) into batches.

    Batches fill across chunk boundaries, so sparse pending items still make full requests.
    """
    batch_no = first_batch_no
    pend_idx: list[np.ndarray] = []
    pend_v: list[str] = []
    pend_f: list[str] = []
    pend_x: list[str] = []
    for idx, viewers, fields, values in chunks:
        pos = 0
        while pos < len(idx):
            take = min(batch_size - len(pend_v), len(idx) - pos)
            pend_idx.append(idx[pos:pos + take])
            pend_v.extend(viewers[pos:pos + take])
            pend_f.extend(fields[pos:pos + take])
            pend_x.extend(values[pos:pos + take])
            pos += take
            if len(pend_v) == batch_size:
                yield Batch(f"{run_id}-{batch_no:06d}", np.concatenate(pend_idx), tuple(pend_v),
                            tuple(pend_f), tuple(pend_x))
                batch_no += 1
                pend_idx, pend_v, pend_f, pend_x = [], [], [], []
    if pend_v:
        yield Batch(f"{run_id}-{batch_no:06d}", np.concatenate(pend_idx), tuple(pend_v),
                    tuple(pend_f), tuple(pend_x))
