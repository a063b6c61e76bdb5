"""The plan pass: read, check and hash the input, spill it, and decide what to send."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from polyv_connector import reasons as reason_codes
from polyv_connector.arrowconv import from_numpy, scalar, strings, to_numpy
from polyv_connector.config import ColumnMapping, SyncOptions
from polyv_connector.engine.changes import KIND_NAMES
from polyv_connector.engine.ledger import REASON, REASON_CODE, SPILL_SCHEMA, Ledger, spill_batches
from polyv_connector.errors import InputError
from polyv_connector.fingerprints import HashFamily, ValueFingerprinter, first_key_hashes, key_hashes
from polyv_connector.items.checks import check_items_coded, code_where, merge_reasons
from polyv_connector.items.convert import convert_items
from polyv_connector.items.text import UnsupportedColumn
from polyv_connector.model import (
    FIELD_ID,
    KNOWN_COLUMN,
    PENDING,
    STATUS_CODE,
    VALUE,
    VIEWER_ID,
)
from polyv_connector.partitioning import WHOLE, Slice
from polyv_connector.planner import PlanNotes, plan_duplicates
from polyv_connector.progress import Progress
from polyv_connector.sender import Circuit
from polyv_connector.spill import create_file
from polyv_connector.state.store import StateRun

log = logging.getLogger("polyv_connector")


class Source(Protocol):
    """Where rows come from: Arrow record batches, nothing else.

    ``setting`` names the setting that chose the source (``--input``, ``source_sql``...), so
    that an input error points at it.
    """

    @property
    def setting(self) -> str: ...

    def check_columns(self, mapping: ColumnMapping) -> None: ...

    def unchanged_in_source(self, columns: list[str], part: Slice = WHOLE) -> int | None:
        """Items the source itself leaves out as unchanged (a diff run in the warehouse), or
        ``None`` when the source has no such diff. Called once, under the state's lock;
        ``part``: count within that slice only."""

    def batches(self, columns: list[str], batch_rows: int, part: Slice = WHOLE) -> Iterator[pa.RecordBatch]:
        """The source's rows; with ``part``, only the rows whose viewerId (``columns[0]``) falls
        in that slice (:mod:`polyv_connector.partitioning`), each exactly once. The engine
        passes ``part`` only to a partition run, so a source written for whole runs still works
        for them."""


class Validator(Protocol):
    """Row and run-level checks beyond the built-in ones (Great Expectations suites)."""

    def validate_chunk(self, items: pa.Table) -> pa.Array | None:
        """Reasons to reject each item of the chunk (null where fine), or None if all fine."""

    def finish(self) -> list[str]:
        """Run-level gate failures (each a reason a person can act on); empty when all pass."""

    def summary(self) -> dict[str, Any]:
        """What the validation found, strict JSON, merged into the run's summary."""


class PlanSink(Protocol):
    """Receives the items a run would send, with their change kind, before anything is sent
    (``polyv-sync plan``: :class:`polyv_connector.planfile.PlanWriter`)."""

    def write(self, viewer: pa.Array, field: pa.Array, value: pa.Array, kind: pa.Array) -> None: ...


#: A plan item's kind by :attr:`Ledger.kind` code; 0 (``NO_CHANGE``) is a resend of an unchanged
#: value under a full refresh.
PLAN_KINDS: tuple[str, ...] = ("unchanged", *(KIND_NAMES[c] for c in sorted(KIND_NAMES)))


def write_plan(spill_path: Path, ledger: Ledger, sink: PlanSink) -> None:
    """Stream the items still pending after the diff, with their kinds, into ``sink`` (read from
    the spill as they are: no request body is built)."""
    names = strings(PLAN_KINDS)
    for offset, rb in spill_batches(spill_path):
        local = np.flatnonzero(ledger.status[offset : offset + rb.num_rows] == PENDING)
        if not len(local):
            continue
        idx = from_numpy(local)
        kinds = pa.DictionaryArray.from_arrays(from_numpy(ledger.kind[local + offset].astype(np.int8)), names)
        sink.write(rb.column(VIEWER_ID).take(idx), rb.column(FIELD_ID).take(idx), rb.column(VALUE).take(idx), kinds)


#: Rows per record batch of the spill, whatever the read's chunk: the send pass and the report
#: read the spill back batch by batch while sending, so this bounds what each holds then (a
#: 200,000-item run peaked 15 MB lower than with batches of 65,536 rows, in the same time).
SPILL_BATCH_ROWS = 16_384


def load_state(state: StateRun | None, options: SyncOptions) -> tuple[np.ndarray, np.ndarray]:
    empty = np.empty(0, np.uint64), np.empty(0, np.uint64)
    if state is None:
        return empty
    # A partition run needs only its slice's keys (a store may return more: the folder state
    # returns all, its keys do not carry the viewer's partition).
    # Loaded under a full refresh too: its resends are sent all the same (the engine's diff
    # leaves them pending), but only new keys, changed values and clears count as changes.
    return state.load(reset_corrupt=options.reset_corrupt_state)


def plan_pass(
    source: Source,
    options: SyncOptions,
    known_fields: Callable[[], set[str] | None],
    validator: Validator | None,
    spill_path: Path,
    progress: Progress,
    circuit: Circuit,
    *,
    family: HashFamily = "xxh3",
) -> Ledger:
    """Read, check and hash the input (keys and values in the state's hash ``family``).

    ``known_fields()`` gives the account's customFieldIds (None: not checked); it is first
    called once the first chunk is read and hashed, so the request behind it overlaps that.
    """
    key_a: list[np.ndarray] = []
    fps: list[np.ndarray] = []
    rejected: list[np.ndarray] = []
    known: list[np.ndarray] = []  # with the diff in the warehouse: what the state holds (KNOWN_COLUMN)
    first_row = 0
    fingerprint = ValueFingerprinter(family)
    progress.start("planning", 0)
    create_file(spill_path)  # a full copy of the input: readable by the owner only
    with pa.OSFile(str(spill_path), "wb") as sink, pa.ipc.new_file(sink, SPILL_SCHEMA) as spill:
        columns, part = options.mapping.source_columns, options.slice
        # Only a partition run passes its slice: a source written for whole runs still works.
        read = (
            source.batches(columns, options.read_batch_rows)
            if part.whole
            else source.batches(columns, options.read_batch_rows, part)
        )
        # rowNumber counts the rows of this run's own read (its slice), from 0.
        for batch in read:
            abort = circuit.abort
            if abort is not None and abort.cause == "stopped":
                # Stopped before anything was sent: no report (the input was not read whole).
                raise abort
            if KNOWN_COLUMN in batch.schema.names:
                at = batch.schema.get_field_index(KNOWN_COLUMN)
                known.append(np.asarray(to_numpy(batch.column(at)), dtype=np.uint8))
                batch = batch.remove_column(at)
            try:
                items, unsendable = convert_items(batch, options.mapping, first_row)
            except (pa.ArrowInvalid, UnsupportedColumn) as exc:
                raise InputError(
                    source.setting,
                    f"rows {first_row}-{first_row + batch.num_rows - 1}: cannot turn a value into text: {exc}",
                ) from exc
            first_row += batch.num_rows
            if options.null_values == "clear":
                # NULL means "empty this field": the empty text, before every check.
                at = items.schema.get_field_index(VALUE)
                items = items.set_column(at, items.schema.field(at), pc.fill_null(items.column(at), scalar("")))
            # Hashed before the checks, which wait for the field list (see known_fields).
            key_a.append(
                first_key_hashes(
                    items.column(VIEWER_ID).combine_chunks(), items.column(FIELD_ID).combine_chunks(), family
                )
            )
            fps.append(fingerprint(items.column(VALUE).combine_chunks()))
            reasons, codes = check_items_coded(items, known_fields())
            if unsendable is not None:  # invalid UTF-8, inf/NaN, dates past 9999: rejected, named
                reasons = merge_reasons(unsendable, reasons)
                codes = pc.coalesce(code_where(unsendable, reason_codes.UNSENDABLE_TEXT.code), codes)
            extra = validator.validate_chunk(items) if validator else None
            if extra is not None:
                reasons = merge_reasons(reasons, extra)
                codes = pc.coalesce(codes, code_where(extra, reason_codes.EXPECTATION_FAILED.code))
            rejected.append(to_numpy(reasons.is_valid()))
            spill.write_table(
                items.append_column(SPILL_SCHEMA.field(REASON), reasons).append_column(
                    SPILL_SCHEMA.field(REASON_CODE), codes
                ),
                max_chunksize=SPILL_BATCH_ROWS,
            )
            progress.advance(items.num_rows)
            # Hand this chunk's buffers back to the OS now: the Arrow pool keeps freed pages, and
            # kept, each chunk's temporaries added to the run's peak memory (issue 22).
            del items, reasons, codes, extra
            pa.default_memory_pool().release_unused()
    progress.finish()

    def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        joined = np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
        parts.clear()  # free the chunks now: at 10M items each list holds 80 MB
        return joined

    ledger = Ledger(cat(key_a, np.uint64), cat(fps, np.uint64), cat(rejected, bool))
    if known:
        ledger.known_in_source = cat(known, np.uint8)
    items_per_row = max(1, len(options.mapping.fields))
    dup = plan_duplicates(
        ledger.key_a,
        lambda positions: second_key_hashes_at(spill_path, positions, family),
        ledger.fp,
        ledger.status == PENDING,
    )
    ledger.status[dup.duplicate] = STATUS_CODE["duplicate"]
    ledger.status[dup.conflicting] = STATUS_CODE["rejected"]
    ledger.notes = PlanNotes.from_plan(dup, items_per_row)
    return ledger


def second_key_hashes_at(spill_path: Path, positions: np.ndarray, family: HashFamily) -> np.ndarray:
    """The second key hash of the spilled items at ``positions`` (ascending), read back from the
    spill: only duplicate candidates need it, so the plan pass does not compute it for all."""
    out = np.empty(len(positions), dtype=np.uint64)
    for offset, rb in spill_batches(spill_path):
        lo, hi = np.searchsorted(positions, [offset, offset + rb.num_rows])
        if lo == hi:
            continue
        idx = from_numpy(positions[lo:hi] - offset)
        out[lo:hi] = key_hashes(rb.column(VIEWER_ID).take(idx), rb.column(FIELD_ID).take(idx), family)[1]
    return out


def rejected_fraction_gate(ledger: Ledger, options: SyncOptions) -> list[str]:
    limit = options.max_rejected_fraction
    if limit is None or len(ledger) == 0:
        return []
    rejected = int(np.count_nonzero(ledger.status == STATUS_CODE["rejected"]))
    fraction = rejected / len(ledger)
    if fraction > limit:
        return [
            f"{rejected:,} of {len(ledger):,} items rejected ({fraction:.1%}), above the "
            f"ceiling of {limit:.1%} (max_rejected_fraction); fix the source or raise the ceiling"
        ]
    return []
