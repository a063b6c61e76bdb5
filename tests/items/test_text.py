"""The text form of every supported Arrow type (docs/report.md#how-values-become-text)."""

from __future__ import annotations

import datetime as dt
import decimal
import random

import pyarrow as pa
import pytest

from polyv_connector.items.text import UnsupportedColumn, checked_text, invalid_utf8, to_text


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (pa.array([1, None, -5], pa.int8()), ["1", None, "-5"]),
        # Integral floats lose ".0" up to 2**53, where floats stop holding every integer.
        (
            pa.array([3.0, 3.5, None, float("nan"), 0.1, -2.0, 2.0**60]),
            ["3", "3.5", None, None, "0.1", "-2", "1.152921504606847e+18"],
        ),
        (pa.array([True, None, False]), ["true", None, "false"]),
        (pa.array([dt.date(2024, 1, 31), None]), ["2024-01-31", None]),
        (
            pa.array([dt.datetime(2024, 1, 31, 12, 34, 56), dt.datetime(2024, 1, 31, 12, 34, 56, 120000)]),
            ["2024-01-31T12:34:56", "2024-01-31T12:34:56.12"],
        ),
        (
            pa.array(
                [dt.datetime(2024, 1, 31, 20, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))],
                pa.timestamp("ms", tz="Asia/Shanghai"),
            ),
            ["2024-01-31T12:00:00Z"],
        ),
        (pa.array([decimal.Decimal("12.50")]), ["12.50"]),
        (pa.array(["a", "b", "a"]).dictionary_encode(), ["a", "b", "a"]),
        (pa.array([" kept as is ", "已支付"], pa.large_string()), [" kept as is ", "已支付"]),
        (pa.array([b"bytes"], pa.binary()), ["bytes"]),
        (pa.nulls(2), [None, None]),
    ],
)
def test_text_rules(array: pa.Array, expected: list) -> None:
    assert to_text(array).to_pylist() == expected


def test_nested_types_are_refused() -> None:
    with pytest.raises(UnsupportedColumn, match="cast it to string"):
        to_text(pa.array([[1, 2]]))


# Pieces of valid and invalid UTF-8 (truncated, overlong, surrogate, past U+10FFFF, stray bytes).
_PIECES = [
    b"a", b"\xc3\xa9", b"\xe4\xb8\xad", b"\xf0\x9f\x98\x80", b"\x00", b"\x80", b"\xc3", b"\xe0\x80\x80",
    b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xff", b"\xe4\xb8", b"\xf0\x9f\x98", b"\xbf", b"\xf5",
]  # fmt: skip


@pytest.mark.parametrize("large", [False, True])
def test_invalid_utf8_rows_and_offsets_match_pythons_decoder(large: bool) -> None:
    rng = random.Random(7)
    for _ in range(1_500):
        values: list[bytes | None] = [
            None
            if rng.random() < 0.1
            else b"".join(
                rng.choice(_PIECES) if rng.random() < 0.5 else bytes([rng.randrange(256)])
                for _ in range(rng.randint(0, 5))
            )
            for _ in range(rng.randint(0, 8))
        ]
        array = pa.array(values, pa.large_binary() if large else pa.binary())
        if len(values) > 2:  # a slice: offsets not starting at zero
            array, values = array.slice(1), values[1:]
        expected: list[tuple[int, int]] = []
        for i, v in enumerate(values):
            try:
                v is None or v.decode("utf-8")
            except UnicodeDecodeError as exc:
                expected.append((i, exc.start))
        rows, at = invalid_utf8(array)
        assert list(zip(rows.tolist(), at.tolist(), strict=True)) == expected, values
        text, _ = checked_text(array, "x")
        text.validate(full=True)
        assert text.to_pylist() == [None if v is None else v.decode("utf-8", "backslashreplace") for v in values]


def test_checked_text_passes_clean_columns_through_without_reasons() -> None:
    for array in (pa.array(["a", None, "😀"]), pa.array([1.5, None]), pa.array([dt.date(9999, 12, 31)])):
        text, reasons = checked_text(array, "x")
        assert reasons is None and text.equals(to_text(array))
