"""Turn source record batches into items: (rowNumber, viewerId, customFieldId, customFieldValue)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from polyv_connector.config import ColumnMapping
from polyv_connector.model import FIELD_ID, ROW_NUMBER, VALUE, VIEWER_ID
from polyv_connector.sources.text import to_text

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
    """
    n = batch.num_rows
    rows = pa.array(np.arange(first_row, first_row + n, dtype=np.int64))
    viewer = to_text(batch.column(mapping.viewer_id_column))
    if not mapping.is_wide:
        return pa.Table.from_arrays(
            [rows, viewer, to_text(batch.column(mapping.field_id_column)), to_text(batch.column(mapping.value_column))],
            schema=ITEM_SCHEMA,
        )
    k = len(mapping.fields)
    field_ids = pa.concat_arrays(
        [pa.array(np.full(n, field_id, dtype=object), pa.string()) for field_id, _ in mapping.fields]
    )
    values = pa.concat_arrays([to_text(batch.column(col)) for _, col in mapping.fields])
    field_major = pa.Table.from_arrays(
        [pa.concat_arrays([rows] * k), pa.concat_arrays([viewer] * k), field_ids, values],
        schema=ITEM_SCHEMA,
    )
    # Field-major concatenation put field f of row r at f*n + r; reorder to row-major.
    row_major = np.arange(n * k, dtype=np.int64).reshape(k, n).T.ravel()
    return field_major.take(pa.array(row_major))
