"""The text form of every supported Arrow type (README: How values become text)."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
import pytest

from polyv_connector.sources.text import UnsupportedColumn, to_text


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
