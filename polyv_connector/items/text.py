"""Deterministic conversion of any supported Arrow column to text (what POLYV receives).

Rules (also in the README):
* strings pass through unchanged (no trimming: values arrive byte-exact);
* integers in decimal, no ``.0``; floats that hold an integer value likewise (``3.0`` -> ``3``),
  others in the shortest round-trip form (``0.1``), NaN as null;
* booleans ``true`` / ``false``;
* dates ``YYYY-MM-DD``; timestamps ``YYYY-MM-DDTHH:MM:SS[.ffffff]`` with the fraction
  only when non-zero (trailing zeros dropped), time-zone-aware ones converted to UTC with
  a ``Z`` suffix; decimals as written by Arrow (``12.50``);
* binary as the UTF-8 text it holds; other types (lists, structs, maps) are refused.

:func:`to_text` is the plain conversion; :func:`checked_text` is what the engine uses: it also
says, per row, why a value cannot be sent (invalid UTF-8, inf/NaN, dates outside years
1-9999), and returns text that is always valid UTF-8.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from polyv_connector.arrowconv import from_numpy, null_string, scalar, strings, to_numpy


class UnsupportedColumn(TypeError):
    """The column's Arrow type has no text form defined here."""


def to_text(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Return ``array`` as a ``pa.string()`` array, following the module's rules."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    typ = array.type
    if pat.is_dictionary(typ):
        return to_text(array.dictionary_decode())
    if pat.is_string(typ):
        return array
    if pat.is_large_string(typ) or pat.is_string_view(typ):
        return array.cast(pa.string())
    if pat.is_null(typ):
        return pa.nulls(len(array), pa.string())
    if pat.is_integer(typ) or pat.is_decimal(typ):
        return array.cast(pa.string())
    if pat.is_boolean(typ):
        return pc.if_else(array, scalar("true"), scalar("false")).cast(pa.string())
    if pat.is_floating(typ):
        return _float_text(array)
    if pat.is_date(typ):
        return pc.strftime(array.cast(pa.date32()).cast(pa.timestamp("s")), format="%Y-%m-%d")
    if pat.is_timestamp(typ):
        return _timestamp_text(array)
    if pat.is_binary(typ) or pat.is_large_binary(typ) or pat.is_binary_view(typ):
        # Raises ArrowInvalid on bytes that are not UTF-8; the reader turns it into InputError.
        return array.cast(pa.string())
    raise UnsupportedColumn(f"type {typ} cannot be sent as text; cast it to string first")


def _float_text(array: pa.Array) -> pa.Array:
    values = pc.if_else(pc.is_nan(array), null_string(array.type), array)
    integral = pc.and_(pc.equal(pc.floor(values), values), pc.less(pc.abs(values), scalar(2.0**53)))
    as_int = pc.if_else(integral, values, null_string(values.type)).cast(pa.int64()).cast(pa.string())
    # Arrow prints floats in shortest round-trip form; keep it for the non-integral ones.
    return pc.if_else(integral, as_int, values.cast(pa.string()))


def _timestamp_text(array: pa.Array) -> pa.Array:
    typ = array.type
    aware = typ.tz is not None
    micros = array.cast(pa.timestamp("us", tz="UTC" if aware else None), safe=False)
    whole = pc.strftime(micros, format="%Y-%m-%dT%H:%M:%S")
    # strftime's %S carries the fraction for sub-second units: cut it back to whole seconds.
    whole = pc.utf8_slice_codeunits(whole, 0, 19)
    sub = pc.add(pc.multiply(pc.millisecond(micros), scalar(1000)), pc.microsecond(micros))
    fraction = pc.utf8_rtrim(pc.utf8_lpad(sub.cast(pa.string()), 6, "0"), "0")
    with_fraction = pc.binary_join_element_wise(whole, fraction, scalar("."))
    text = pc.if_else(pc.equal(sub, scalar(0)), whole, with_fraction)
    if aware:
        text = pc.binary_join_element_wise(text, scalar("Z"), scalar(""))
    return text


# ---- checked conversion ---------------------------------------------------------------------
# Arrow's timestamp/date text (strftime) only covers years 1-9999; outside it prints garbage
# such as "17036-07-06T14:00:2.387904". Bounds in seconds since the epoch, UTC.
_FIRST_SECOND = -62_135_596_800  # 0001-01-01T00:00:00
_END_SECOND = 253_402_300_800  # 10000-01-01T00:00:00
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
# A null string scalar taken from an Arrow array: pa.scalar(None, ...) would convert a Python
# value, and pyarrow imports pandas on its first such conversion; at import time that put pandas
# on every run's start (issue 22).
_NO_REASON = pa.nulls(1, pa.string())[0]


def checked_text(array: pa.Array | pa.ChunkedArray, name: str) -> tuple[pa.Array, pa.Array | None]:
    """``array`` as text that is always valid UTF-8, and per row a reason it cannot be sent.

    ``name`` names the column in the reasons. Returns ``(text, reasons)``; ``reasons`` is null
    where the row is fine, or ``None`` when every row is. A row with a reason must be rejected:
    its text is only for display (invalid UTF-8 bytes as ``\\xc3``, as Python's
    ``backslashreplace`` writes them; ``inf``, ``-inf``, ``NaN``; an out-of-range timestamp
    as its count since 1970-01-01).
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    typ = array.type
    if pat.is_dictionary(typ):
        return checked_text(array.dictionary_decode(), name)
    if pat.is_string(typ) or pat.is_large_string(typ) or pat.is_binary(typ) or pat.is_large_binary(typ):
        return _checked_utf8(array, name)
    if pat.is_string_view(typ) or pat.is_binary_view(typ):
        # Views to plain binary never validate (a view cast to string might); checked below.
        return _checked_utf8(array.cast(pa.binary()), name)
    if pat.is_floating(typ):
        return _checked_float(array, name)
    if pat.is_timestamp(typ) and typ.unit != "ns":  # int64 nanoseconds only span 1677-2262
        per = _PER_SECOND[typ.unit]
        return _checked_range(array, name, pa.int64(), _FIRST_SECOND * per, _END_SECOND * per, typ.unit)
    if pat.is_date32(typ):
        return _checked_range(array, name, pa.int32(), _FIRST_SECOND // 86_400, _END_SECOND // 86_400, "days")
    if pat.is_date64(typ):
        return _checked_range(array, name, pa.int64(), _FIRST_SECOND * 1_000, _END_SECOND * 1_000, "ms")
    return to_text(array), None


def _checked_utf8(array: pa.Array, name: str) -> tuple[pa.Array, pa.Array | None]:
    large = pat.is_large_string(array.type) or pat.is_large_binary(array.type)
    as_text = pa.Array.from_buffers(
        pa.large_string() if large else pa.string(), len(array), array.buffers(), offset=array.offset
    )
    try:
        as_text.validate(full=True)  # Arrow's own UTF-8 check: fast, but only says "somewhere"
    except pa.ArrowInvalid:
        pass
    else:
        return to_text(as_text), None
    as_bytes = pa.Array.from_buffers(
        pa.large_binary() if large else pa.binary(), len(array), array.buffers(), offset=array.offset
    )
    bad_rows, bad_at = invalid_utf8(as_bytes)
    # Only the bad rows are decoded one by one, for display and for the reason's detail.
    shown: list[str] = []
    reasons: list[str] = []
    for raw, at in zip(as_bytes.take(from_numpy(bad_rows)).to_pylist(), bad_at.tolist(), strict=True):
        shown.append(raw.decode("utf-8", "backslashreplace"))
        reasons.append(f"{name} is not valid UTF-8 text (byte \\x{raw[at]:02x} at byte {at})")
    mask = np.zeros(len(array), dtype=bool)
    mask[bad_rows] = True
    mask_arr = from_numpy(mask)
    fixed = pc.replace_with_mask(as_bytes, mask_arr, strings(shown).cast(as_bytes.type))
    reason = pc.replace_with_mask(pa.nulls(len(array), pa.string()), mask_arr, strings(reasons))
    return fixed.cast(pa.string()), reason


def invalid_utf8(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a binary array that are not valid UTF-8, and the byte offset (within the
    value) where each goes wrong. Vectorised over the whole data buffer with NumPy.

    Valid means what Python's strict decoder accepts: no overlong forms, no surrogates
    (U+D800-U+DFFF), nothing past U+10FFFF, no truncated or stray continuation bytes.
    """
    n = len(array)
    large = pat.is_large_binary(array.type)
    validity, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64 if large else np.int32)[array.offset : array.offset + n + 1]
    offsets = offsets.astype(np.int64)
    base, stop = int(offsets[0]), int(offsets[-1]) if n else 0
    data = np.frombuffer(data_buf, dtype=np.uint8)[base:stop] if data_buf is not None and n else np.empty(0, np.uint8)
    starts: np.ndarray = offsets[:-1] - base
    ends: np.ndarray = offsets[1:] - base
    m = len(data)
    cont = (data & 0xC0) == 0x80
    # A value boundary cuts sequences: a continuation byte never belongs to the previous value.
    row_start = np.zeros(m + 1, dtype=bool)
    row_start[starts[starts < ends]] = True
    heads = np.flatnonzero(~cont | row_start[:m])  # lead bytes and value starts
    # Each value ends where the next non-empty one starts (a head) or at the data's end, so the
    # run of continuation bytes after a head never crosses into another value.
    nxt = np.append(heads[1:], m)
    lead = data[heads]
    length = np.select(
        [
            lead < 0x80,
            (lead >= 0xC2) & (lead <= 0xDF),
            (lead >= 0xE0) & (lead <= 0xEF),
            (lead >= 0xF0) & (lead <= 0xF4),
        ],
        [1, 2, 3, 4],
        default=0,  # stray continuation, C0/C1 (overlong) or F5-FF (past U+10FFFF)
    )
    run = nxt - heads - 1  # continuation bytes following the head, within its value
    second = data[np.minimum(heads + 1, max(m - 1, 0))] if m else lead
    bad_second = (
        ((lead == 0xE0) & (second < 0xA0))  # overlong 3-byte form
        | ((lead == 0xED) & (second > 0x9F))  # surrogates
        | ((lead == 0xF0) & (second < 0x90))  # overlong 4-byte form
        | ((lead == 0xF4) & (second > 0x8F))  # past U+10FFFF
    ) & (run >= 1)
    short = (length == 0) | (run < length - 1) | bad_second
    long = ~short & (run > length - 1)
    bad_pos = np.sort(np.concatenate([heads[short], (heads + length)[long]]))
    bad_row = np.searchsorted(starts, bad_pos, side="right") - 1
    # Null rows may point at stray bytes: they are null, not invalid.
    if validity is not None:
        keep = to_numpy(array.is_valid())[bad_row] if len(bad_row) else np.empty(0, bool)
        bad_pos, bad_row = bad_pos[keep], bad_row[keep]
    rows, first = np.unique(bad_row, return_index=True)
    return rows.astype(np.int64), bad_pos[first] - starts[rows]


def _checked_float(array: pa.Array, name: str) -> tuple[pa.Array, pa.Array | None]:
    text = to_text(array)
    nan = pc.is_nan(array)
    inf = pc.is_inf(array)
    if not pc.any(pc.or_(nan, inf)).as_py():
        return text, None
    positive = pc.greater(array, scalar(0.0))
    shown = pc.if_else(nan, scalar("NaN"), pc.if_else(positive, scalar("inf"), scalar("-inf")))
    reason = pc.if_else(
        nan,
        scalar(f"{name} is NaN (not a number); only finite numbers can be sent"),
        pc.if_else(
            positive,
            scalar(f"{name} is infinite (inf); only finite numbers can be sent"),
            scalar(f"{name} is infinite (-inf); only finite numbers can be sent"),
        ),
    )
    bad = pc.fill_null(pc.or_(nan, inf), scalar(False))
    return pc.if_else(bad, shown, text), pc.if_else(bad, reason, _NO_REASON)


def _checked_range(
    array: pa.Array, name: str, storage: pa.DataType, low: int, end: int, unit: str
) -> tuple[pa.Array, pa.Array | None]:
    raw = array.view(storage)
    outside = pc.fill_null(pc.or_(pc.less(raw, scalar(low)), pc.greater_equal(raw, scalar(end))), scalar(False))
    if not pc.any(outside).as_py():
        return to_text(array), None
    text = to_text(pc.if_else(outside, null_string(array.type), array))
    shown = pc.binary_join_element_wise(raw.cast(pa.string()), scalar(f" {unit} since 1970-01-01"), scalar(""))
    kind = "date" if pat.is_date(array.type) else "timestamp"
    reason = f"{name} is a {kind} outside years 1-9999 (its text form only covers those years)"
    return pc.if_else(outside, shown, text), pc.if_else(outside, scalar(reason), _NO_REASON)
