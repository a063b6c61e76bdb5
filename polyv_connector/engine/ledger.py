"""What the run knows of each item: the spill file of the plan pass and the per-item arrays."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from polyv_connector.arrowconv import from_numpy
from polyv_connector.batching import item_table
from polyv_connector.items.convert import ITEM_SCHEMA
from polyv_connector.model import (
    FIELD_ID,
    PENDING,
    STATUS_CODE,
    STATUS_NAME,
    VALUE,
    VIEWER_ID,
)
from polyv_connector.planner import PlanNotes
from polyv_connector.sender import ItemsResult

log = logging.getLogger("polyv_connector")


REASON = "_reason"


REASON_CODE = "_reason_code"


SPILL_SCHEMA = ITEM_SCHEMA.append(pa.field(REASON, pa.string())).append(pa.field(REASON_CODE, pa.string()))


class Ledger:
    """Per-item facts of the run, as compact arrays indexed by item position."""

    def __init__(self, key_a: np.ndarray, fp: np.ndarray, rejected: np.ndarray) -> None:
        n = len(key_a)
        self.key_a, self.fp = key_a, fp
        self.status = np.zeros(n, dtype=np.int8)
        self.status[rejected] = STATUS_CODE["rejected"]
        self.attempts = np.zeros(n, dtype=np.int16)
        self.result_idx = np.full(n, -1, dtype=np.int32)
        self.results: list[ItemsResult] = []
        self.notes = PlanNotes.empty()  # duplicate / conflict reasons, by position
        #: The change kind of each item left to send after the diff (:mod:`~polyv_connector.engine.changes`);
        #: ``NO_CHANGE`` for every other item and for resends of unchanged values under a full refresh.
        self.kind = np.zeros(n, dtype=np.uint8)
        #: With the diff in the warehouse, what the state holds of each item, as the source says
        #: (:data:`~polyv_connector.model.KNOWN_COLUMN`: 0 not the key, 1 another value, 2 this value).
        self.known_in_source: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.status)

    def record(self, result: ItemsResult) -> None:
        self.result_idx[result.indices] = len(self.results)
        self.results.append(result)
        self.status[result.indices] = STATUS_CODE[result.status]
        self.attempts[result.indices] = result.attempts

    def counts(self) -> dict[str, int]:
        codes = np.bincount(self.status, minlength=len(STATUS_NAME) + 1)
        return {STATUS_NAME[c]: int(codes[c]) for c in STATUS_NAME}


def spill_batches(spill_path: Path) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(position of its first item, batch) for each spilled batch, in order."""
    # Read batch by batch, not memory-mapped: mapped pages would count as the process's
    # memory for the whole file.
    with pa.OSFile(str(spill_path)) as f:
        reader = pa.ipc.open_file(f)
        offset = 0
        for i in range(reader.num_record_batches):
            rb = reader.get_batch(i)
            yield offset, rb
            offset += rb.num_rows


def pending_chunks(spill_path: Path, ledger: Ledger) -> Iterator[tuple[np.ndarray, pa.Table]]:
    """(positions, item_table) of the pending items, spill batch by spill batch."""
    for offset, rb in spill_batches(spill_path):
        local = np.flatnonzero(ledger.status[offset : offset + rb.num_rows] == PENDING)
        if len(local):
            idx = from_numpy(local)
            yield (
                local + offset,
                item_table(rb.column(VIEWER_ID).take(idx), rb.column(FIELD_ID).take(idx), rb.column(VALUE).take(idx)),
            )
