"""Deterministic conversion of any supported Arrow column to text (what POLYV receives).

Rules (also in the README):
* strings pass through unchanged (no trimming: values arrive byte-exact);
* integers in decimal, no ``.0``; floats that hold an integer value likewise (``3.0`` -> ``3``),
  others in the shortest round-trip form (``0.1``), NaN as null;
* booleans ``true`` / ``false``;
* dates ``YYYY-MM-DD``; timestamps ``YYYY-MM-DDTHH:MM:SS[.ffffff]`` with the fraction
  only when non-zero (trailing zeros dropped), time-zone-aware ones converted to UTC with
  a ``Z`` suffix; decimals as written by Arrow (``12.50``);
* binary must be valid UTF-8; other types (lists, structs, maps) are refused.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat


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
        return pc.if_else(array, "true", "false").cast(pa.string())
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
    values = pc.if_else(pc.is_nan(array), None, array)
    integral = pc.and_(pc.equal(pc.floor(values), values), pc.less(pc.abs(values), 2.0**53))
    as_int = pc.if_else(integral, values, None).cast(pa.int64()).cast(pa.string())
    # Arrow prints floats in shortest round-trip form; keep it for the non-integral ones.
    return pc.if_else(integral, as_int, values.cast(pa.string()))


def _timestamp_text(array: pa.Array) -> pa.Array:
    typ = array.type
    aware = typ.tz is not None
    micros = array.cast(pa.timestamp("us", tz="UTC" if aware else None), safe=False)
    whole = pc.strftime(micros, format="%Y-%m-%dT%H:%M:%S")
    # strftime's %S carries the fraction for sub-second units: cut it back to whole seconds.
    whole = pc.utf8_slice_codeunits(whole, 0, 19)
    sub = pc.add(pc.multiply(pc.millisecond(micros), 1000), pc.microsecond(micros))
    fraction = pc.utf8_rtrim(pc.utf8_lpad(sub.cast(pa.string()), 6, "0"), "0")
    with_fraction = pc.binary_join_element_wise(whole, fraction, ".")
    text = pc.if_else(pc.equal(sub, 0), whole, with_fraction)
    if aware:
        text = pc.binary_join_element_wise(text, pa.scalar("Z"), "")
    return text
