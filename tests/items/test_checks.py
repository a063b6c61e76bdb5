"""The built-in row checks (``items/checks.py``): every failing check of an item is reported,
the code is the first one's, and a chunk where every item passes gets nulls of both."""

from __future__ import annotations

import pyarrow as pa
import pytest

from polyv_connector.items.checks import check_items_coded

KNOWN = {"PAY_STATUS", "VIP_LEVEL"}
CLEAN = [("v1", "PAY_STATUS", "a"), ("v2", "VIP_LEVEL", ""), ("v3", "PAY_STATUS", " kept as is ")]

BAD = [
    ((None, "PAY_STATUS", "a"), "viewerId is null", "blank_viewer_id"),
    ((" ", "PAY_STATUS", "a"), "viewerId is blank", "blank_viewer_id"),
    ((" v", "PAY_STATUS", "a"), "viewerId has leading or trailing whitespace", "padded_viewer_id"),
    (("v", None, "a"), "customFieldId is null", "blank_field_id"),
    (("v", "", "a"), "customFieldId is blank; customFieldId does not exist in this POLYV account", "blank_field_id"),
    (("v", "PAY_STATUS\t", "a"), "customFieldId has leading or trailing whitespace", "padded_field_id"),
    (("v", "F" * 65, "a"), "customFieldId is longer than 64 characters", "field_id_too_long"),
    (("v", "NOPE", "a"), "customFieldId does not exist in this POLYV account", "unknown_field"),
    (("v", "PAY_STATUS", None), "customFieldValue is null", "null_value"),
    ((None, "NOPE", None), "viewerId is null; customFieldId does not exist", "blank_viewer_id"),
]


def _items(rows: list[tuple[str | None, str | None, str | None]]) -> pa.Table:
    columns = ("viewerId", "customFieldId", "customFieldValue")
    return pa.table({name: pa.array([r[i] for r in rows], pa.string()) for i, name in enumerate(columns)})


def test_a_chunk_where_every_item_passes_has_null_reasons_and_codes() -> None:
    reasons, reason_codes = check_items_coded(_items(CLEAN * 1000), KNOWN)
    for array in (reasons, reason_codes):
        assert array.type == pa.string() and len(array) == 3000 and array.null_count == 3000


@pytest.mark.parametrize(("row", "reason", "code"), BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)])
def test_a_bad_item_among_clean_ones_gets_every_reason_and_the_first_code(row, reason, code) -> None:
    reasons, reason_codes = check_items_coded(_items([*CLEAN, row, *CLEAN]), KNOWN)
    assert reason_codes.to_pylist() == [None] * 3 + [code] + [None] * 3
    assert reasons[3].as_py().startswith(reason) and reasons.null_count == 6


def test_without_the_field_list_unknown_fields_pass() -> None:
    reasons, _ = check_items_coded(_items([("v", "NOPE", "a")]), None)
    assert reasons.to_pylist() == [None]
