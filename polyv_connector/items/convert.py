"""Turn source record batches into items: (rowNumber, viewerId, customFieldId, customFieldValue)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from polyv_connector.arrowconv import from_numpy, repeat
from polyv_connector.config import ColumnMapping
from polyv_connector.errors import InputError
from polyv_connector.items.checks import merge_reasons
from polyv_connector.items.text import UnsupportedColumn, checked_text
from polyv_connector.model import FIELD_ID, ROW_NUMBER, VALUE, VIEWER_ID
from polyv_connector.partitioning import Slice, in_slice

# Items are a pa.Table with exactly these columns, in this order.
ITEM_SCHEMA = pa.schema(
    [
        pa.field(ROW_NUMBER, pa.int64(), nullable=False),
        pa.field(VIEWER_ID, pa.string()),
        pa.field(FIELD_ID, pa.string()),
        pa.field(VALUE, pa.string()),
    ]
)


def to_items(batch: pa.RecordBatch | pa.Table, mapping: ColumnMapping, first_row: int) -> pa.Table:
    """Items of one source batch whose first row is source row ``first_row`` (0-based).

    Long form keeps one item per row; wide form yields one item per (row, mapped field),
    row-major, so the items of a source row stay together and share its rowNumber.
    Values that cannot be sent are only shown (see :func:`convert_items` for why).
    """
    return convert_items(batch, mapping, first_row)[0]


def _named(item_column: str, source_column: str) -> str:
    return item_column if item_column == source_column else f"{item_column} (column {source_column})"


def convert_items(
    batch: pa.RecordBatch | pa.Table, mapping: ColumnMapping, first_row: int
) -> tuple[pa.Table, pa.Array | None]:
    """:func:`to_items` plus, per item, why its text cannot be sent (null where it can).

    Invalid UTF-8, non-finite floats and dates outside years 1-9999 become such reasons
    instead of errors: the items' strings are always valid UTF-8 (a display form for the
    rejected ones), so nothing downstream (JSON bodies, the report, Data Docs) trips over them.
    ``None`` when every item converts.
    """
    n = batch.num_rows
    rows = from_numpy(np.arange(first_row, first_row + n, dtype=np.int64))
    viewer, viewer_why = checked_text(
        batch.column(mapping.viewer_id_column), _named(VIEWER_ID, mapping.viewer_id_column)
    )
    if not mapping.is_wide:
        field, field_why = checked_text(
            batch.column(mapping.field_id_column), _named(FIELD_ID, mapping.field_id_column)
        )
        value, value_why = checked_text(batch.column(mapping.value_column), _named(VALUE, mapping.value_column))
        items = pa.Table.from_arrays([rows, viewer, field, value], schema=ITEM_SCHEMA)
        found = [r for r in (viewer_why, field_why, value_why) if r is not None]
        return items, merge_reasons(*found) if found else None
    k = len(mapping.fields)
    field_ids = pa.concat_arrays([repeat(field_id, n, pa.string()) for field_id, _ in mapping.fields])
    converted = [checked_text(batch.column(col), _named(VALUE, col)) for _, col in mapping.fields]
    values = pa.concat_arrays([text for text, _ in converted])
    field_major = pa.Table.from_arrays(
        [pa.concat_arrays([rows] * k), pa.concat_arrays([viewer] * k), field_ids, values],
        schema=ITEM_SCHEMA,
    )
    # Field-major concatenation put field f of row r at f*n + r; reorder to row-major.
    row_major = from_numpy(np.arange(n * k, dtype=np.int64).reshape(k, n).T.ravel())
    if viewer_why is None and all(why is None for _, why in converted):
        return field_major.take(row_major), None
    none = pa.nulls(n, pa.string())
    value_why = pa.concat_arrays([none if why is None else why for _, why in converted])
    found = [pa.concat_arrays([viewer_why] * k)] if viewer_why is not None else []
    reasons = merge_reasons(*found, value_why)
    return field_major.take(row_major), reasons.take(row_major)


def rows_in_slice(batch: pa.RecordBatch, viewer_column: str, part: Slice, setting: str) -> pa.RecordBatch:
    """The rows of ``batch`` whose viewerId falls in ``part``: a source's filter while reading.

    The viewerId is hashed as the text its items get (:func:`convert_items`' conversion), so
    this agrees with what a database computes from the same text.
    """
    if part.whole:
        return batch
    try:
        viewer, _ = checked_text(batch.column(viewer_column), _named(VIEWER_ID, viewer_column))
    except (pa.ArrowInvalid, UnsupportedColumn) as exc:
        raise InputError(setting, f"column {viewer_column!r}: cannot turn a viewerId into text: {exc}") from exc
    return batch.filter(from_numpy(in_slice(viewer, part)))
