"""NumPy arrays to Arrow arrays and back through their buffers, without pyarrow's pandas check.

pyarrow imports pandas (37 MB, about 0.2 s) on its first conversion of a NumPy array or a Python
value (``pa.array``, ``pa.scalar``, ``Array.to_numpy``): its shim checks whether the value is a
pandas object. A plain run uses no pandas, so the conversions on its path go through the arrays'
buffers instead, with public pyarrow APIs only (``pa.Array.from_buffers``, ``pa.py_buffer``,
``Array.buffers``): zero-copy for fixed-width numbers, one bit-packing for booleans. Anything
else (nulls, strings, other types) falls back to pyarrow's own conversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

#: The fixed-width types converted through their buffers, and their NumPy dtypes.
_FIXED: dict[pa.DataType, np.dtype[Any]] = {
    pa.int8(): np.dtype(np.int8),
    pa.int16(): np.dtype(np.int16),
    pa.int32(): np.dtype(np.int32),
    pa.int64(): np.dtype(np.int64),
    pa.uint8(): np.dtype(np.uint8),
    pa.uint16(): np.dtype(np.uint16),
    pa.uint32(): np.dtype(np.uint32),
    pa.uint64(): np.dtype(np.uint64),
    pa.float32(): np.dtype(np.float32),
    pa.float64(): np.dtype(np.float64),
}
_BY_DTYPE = {dtype: arrow for arrow, dtype in _FIXED.items()}


def _validity(mask: np.ndarray | None) -> pa.Buffer | None:
    """The validity bitmap of ``mask`` (true = null), or None when nothing is null."""
    if mask is None or not mask.any():
        return None
    return pa.py_buffer(np.packbits(~np.asarray(mask, np.bool_), bitorder="little"))


def from_numpy(values: np.ndarray, type: pa.DataType | None = None, mask: np.ndarray | None = None) -> pa.Array:
    """``values`` (1-d, a fixed-width number or bool dtype) as an Arrow array; null where ``mask``.

    Zero-copy for numbers (the array keeps ``values`` alive); booleans are bit-packed.
    ``type``, when given and not the dtype's, is cast to.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError("from_numpy takes a 1-d array")
    validity = _validity(mask)
    if arr.dtype == np.bool_:
        bits = np.packbits(arr, bitorder="little")
        out = pa.Array.from_buffers(pa.bool_(), len(arr), [validity, pa.py_buffer(bits)])
    else:
        arrow = _BY_DTYPE.get(arr.dtype) if arr.dtype.isnative else None
        if arrow is None:
            return pa.array(arr, type, mask=mask)  # not a fixed-width number: pyarrow's conversion
        out = pa.Array.from_buffers(arrow, len(arr), [validity, pa.py_buffer(np.ascontiguousarray(arr))])
    return out if type is None or type == out.type else out.cast(type)


def column(values: Sequence[Any], type: pa.DataType) -> pa.Array:
    """Python values (None for null) as an Arrow array of ``type``: string, bool or a
    fixed-width number; through the buffers (no pandas check)."""
    mask = np.fromiter((v is None for v in values), np.bool_, len(values))
    if pa.types.is_string(type):
        return strings(["" if v is None else v for v in values], mask)
    if type == pa.bool_():
        return from_numpy(np.fromiter((bool(v) for v in values), np.bool_, len(values)), mask=mask)
    dtype = _FIXED.get(type)
    if dtype is None:
        return pa.array(values, type)  # another type: pyarrow's conversion
    filled = np.fromiter((0 if v is None else v for v in values), dtype, len(values))
    return from_numpy(filled, mask=mask)


def repeat(value: str | bool | int | float | None, n: int, type: pa.DataType) -> pa.Array:
    """``value`` ``n`` times as an Arrow array of ``type`` (null when ``value`` is None)."""
    if value is None:
        return pa.nulls(n, type)
    return pa.repeat(scalar(value).cast(type), n)


def to_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A fixed-width number or bool Arrow array without nulls as a NumPy array (read-only for
    numbers: zero-copy when ``values`` is one chunk); anything else through ``to_numpy``."""
    if isinstance(values, pa.ChunkedArray):
        if values.num_chunks == 1:
            return to_numpy(values.chunk(0))
        if values.num_chunks == 0:
            dtype = _FIXED.get(values.type)
            if dtype is not None:
                return np.empty(0, dtype)
            if values.type == pa.bool_():
                return np.empty(0, np.bool_)
        return np.concatenate([to_numpy(chunk) for chunk in values.chunks]) if values.num_chunks else values.to_numpy()
    if values.null_count == 0:
        n, offset = len(values), values.offset
        dtype = _FIXED.get(values.type)
        if dtype is not None:
            data = values.buffers()[1]
            if data is None:
                return np.empty(0, dtype)
            return np.frombuffer(data, dtype=dtype, count=n, offset=offset * dtype.itemsize)
        if values.type == pa.bool_():
            data = values.buffers()[1]
            if data is None or n == 0:
                return np.empty(0, np.bool_)
            bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
            return bits[offset : offset + n].astype(np.bool_)
    converted: np.ndarray = values.to_numpy(zero_copy_only=False)
    return converted


def strings(values: Sequence[str], mask: np.ndarray | None = None) -> pa.Array:
    """Python strings as an Arrow string array (through its offsets and data); null where ``mask``."""
    data = [v.encode() for v in values]
    offsets = np.zeros(len(data) + 1, np.int64)
    np.cumsum(np.fromiter((len(d) for d in data), np.int64, len(data)), out=offsets[1:])
    if offsets[-1] < 2**31:
        return pa.Array.from_buffers(
            pa.string(),
            len(data),
            [_validity(mask), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(data))],
        )
    big = [_validity(mask), pa.py_buffer(offsets), pa.py_buffer(b"".join(data))]
    return pa.Array.from_buffers(pa.large_string(), len(data), big).cast(pa.string())


def scalar(value: str | bytes | bool | int | float) -> pa.Scalar:
    """A Python str, bytes, bool, int or float as an Arrow scalar (string, binary, bool, int64,
    float64)."""
    if isinstance(value, bytes):
        offsets = pa.py_buffer(np.array([0, len(value)], np.int32))
        return pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(value)])[0]
    if isinstance(value, str):
        return strings([value])[0]
    if isinstance(value, bool):
        return from_numpy(np.array([value], np.bool_))[0]
    if isinstance(value, int):
        return from_numpy(np.array([value], np.int64))[0]
    return from_numpy(np.array([value], np.float64))[0]


def null_strings(length: int) -> pa.Array:
    """A string array of ``length`` nulls."""
    return pa.nulls(length, pa.string())


def null_string(type: pa.DataType | None = None) -> pa.Scalar:
    """A null scalar of ``type`` (default: string)."""
    return pa.nulls(1, type or pa.string())[0]
