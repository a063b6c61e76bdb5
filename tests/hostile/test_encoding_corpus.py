"""Hostile and broken encodings, as real Parquet files, through the command line.

Each case is a Parquet file written with pyarrow (Parquet stores invalid UTF-8 in string columns
without complaint), synced twice with a state directory against the simulator. For every case:
each row's status and reason, exactly the valid rows stored by POLYV (byte-equal), the exit
code, a report that pandas and pyarrow read back (valid UTF-8 only), no traceback, and a rerun
that reports the sent rows ``unchanged`` and the broken ones ``rejected`` again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polyv_connector.cli import main
from tests.conftest import APP_ID

LONG_VALUE = "长" * 100_000 + "z"  # 300,001 bytes of UTF-8


def raw_text(values: list[bytes | None], large: bool = False) -> pa.Array:
    """A Parquet string column holding exactly these bytes, valid UTF-8 or not."""
    as_binary = pa.array(values, pa.large_binary() if large else pa.binary())
    typ = pa.large_string() if large else pa.string()
    return pa.Array.from_buffers(typ, len(as_binary), as_binary.buffers())


def ids(n: int) -> pa.Array:
    return pa.array([f"v{i}" for i in range(n)], pa.string())


def field_ids(n: int) -> pa.Array:
    return pa.array(["PAY_STATUS"] * n, pa.string())


@dataclass
class Case:
    name: str
    columns: dict[str, pa.Array]
    # Per row: (status, reason fragment or None).
    expect: list[tuple[str, str | None]]
    # What POLYV must hold afterwards: (viewerId, customFieldId) -> value.
    stored: dict[tuple[str, str], str]
    args: list[str] = field(default_factory=list)
    exit_code: int = 0


def long_form(value: pa.Array) -> dict[str, pa.Array]:
    return {"viewerId": ids(len(value)), "customFieldId": field_ids(len(value)), "customFieldValue": value}


NOT_UTF8 = "is not valid UTF-8 text"
CASES = [
    Case(
        "invalid_utf8_in_value",
        long_form(raw_text([b"paid", b"\xc3(", b"caf\xc3\xa9", None])),
        [
            ("sent", None),
            ("rejected", "customFieldValue is not valid UTF-8 text (byte \\xc3 at byte 0)"),
            ("sent", None),
            ("rejected", "customFieldValue is null"),
        ],
        {("v0", "PAY_STATUS"): "paid", ("v2", "PAY_STATUS"): "café"},
    ),
    Case(
        "invalid_utf8_in_viewer_id",
        {
            "viewerId": raw_text([b"v0", b"v\xff1", b"v2"]),
            "customFieldId": field_ids(3),
            "customFieldValue": pa.array(["a", "b", "c"]),
        },
        [("sent", None), ("rejected", "viewerId is not valid UTF-8 text (byte \\xff at byte 1)"), ("sent", None)],
        {("v0", "PAY_STATUS"): "a", ("v2", "PAY_STATUS"): "c"},
    ),
    Case(
        "invalid_utf8_in_field_id",
        {
            "viewerId": ids(2),
            "customFieldId": raw_text([b"PAY_STATUS", b"PAY_\x80STATUS"]),
            "customFieldValue": pa.array(["a", "b"]),
        },
        [("sent", None), ("rejected", "customFieldId is not valid UTF-8 text (byte \\x80 at byte 4)")],
        {("v0", "PAY_STATUS"): "a"},
    ),
    Case(
        "invalid_utf8_in_a_wide_column",
        {
            "user_id": ids(2),
            "pay": raw_text([b"paid", b"\xe4\xb8"]),  # truncated 3-byte sequence
            "vip": pa.array(["1", "2"]),
        },
        [
            ("sent", None),
            ("sent", None),
            ("rejected", "customFieldValue (column pay) is not valid UTF-8 text (byte \\xe4 at byte 0)"),
            ("sent", None),
        ],
        {("v0", "PAY_STATUS"): "paid", ("v0", "VIP_LEVEL"): "1", ("v1", "VIP_LEVEL"): "2"},
        args=["--viewer-id-column", "user_id", "--field", "PAY_STATUS=pay", "--field", "VIP_LEVEL=vip"],
    ),
    Case(
        "invalid_utf8_in_a_binary_and_a_large_string_column",
        {
            "viewerId": raw_text([b"v0", b"v1", b"v\xc0\xaf"], large=True),  # overlong "/"
            "customFieldId": field_ids(3),
            "customFieldValue": pa.array([b"ok", b"\xf0\x9f\x98", b"x"], pa.binary()),  # truncated emoji
        },
        [
            ("sent", None),
            ("rejected", "customFieldValue is not valid UTF-8 text (byte \\xf0 at byte 0)"),
            ("rejected", "viewerId is not valid UTF-8 text (byte \\xc0 at byte 1)"),
        ],
        {("v0", "PAY_STATUS"): "ok"},
    ),
    Case(
        "lone_surrogate_as_utf8_bytes",
        long_form(raw_text([b"\xed\xa0\x80", b"ok"])),  # U+D800 encoded: not UTF-8
        [("rejected", "customFieldValue is not valid UTF-8 text (byte \\xed at byte 0)"), ("sent", None)],
        {("v1", "PAY_STATUS"): "ok"},
    ),
    Case(
        "nul_bytes_are_valid_text_and_sent",
        long_form(pa.array(["a\x00b", "\x00", "plain"])),
        [("sent", None)] * 3,
        {("v0", "PAY_STATUS"): "a\x00b", ("v1", "PAY_STATUS"): "\x00", ("v2", "PAY_STATUS"): "plain"},
    ),
    Case(
        "four_byte_emoji_bom_and_a_very_long_value_are_sent_byte_equal",
        long_form(pa.array(["😀 ok", "\ufeffpaid", LONG_VALUE])),
        [("sent", None)] * 3,
        {("v0", "PAY_STATUS"): "😀 ok", ("v1", "PAY_STATUS"): "\ufeffpaid", ("v2", "PAY_STATUS"): LONG_VALUE},
    ),
    Case(
        "infinite_and_nan_floats",
        long_form(pa.array([1.5, float("inf"), float("-inf"), float("nan"), 2.0, None], pa.float64())),
        [
            ("sent", None),
            ("rejected", "customFieldValue is infinite (inf)"),
            ("rejected", "customFieldValue is infinite (-inf)"),
            ("rejected", "customFieldValue is NaN (not a number)"),
            ("sent", None),
            ("rejected", "customFieldValue is null"),
        ],
        {("v0", "PAY_STATUS"): "1.5", ("v4", "PAY_STATUS"): "2"},
    ),
    Case(
        "infinite_float32_in_a_wide_column",
        {"user_id": ids(2), "vip": pa.array([float("inf"), 3.0], pa.float32())},
        [("rejected", "customFieldValue (column vip) is infinite (inf)"), ("sent", None)],
        {("v1", "VIP_LEVEL"): "3"},
        args=["--viewer-id-column", "user_id", "--field", "VIP_LEVEL=vip"],
    ),
    Case(
        "timestamps_past_year_9999_and_before_year_1",
        long_form(
            pa.array(
                [
                    1_706_702_400_000_000,  # 2024-01-31T12:00:00
                    475_399_000_000_000_000,  # year 17034
                    -62_135_596_800_000_001,  # one microsecond before 0001-01-01
                    253_402_300_799_999_999,  # 9999-12-31T23:59:59.999999: the last one that fits
                ],
                pa.int64(),
            ).cast(pa.timestamp("us"))
        ),
        [
            ("sent", None),
            ("rejected", "customFieldValue is a timestamp outside years 1-9999"),
            ("rejected", "customFieldValue is a timestamp outside years 1-9999"),
            ("sent", None),
        ],
        {
            ("v0", "PAY_STATUS"): "2024-01-31T12:00:00",
            ("v3", "PAY_STATUS"): "9999-12-31T23:59:59.999999",
        },
    ),
    Case(
        "timezone_aware_seconds_timestamp_past_9999",
        long_form(pa.array([0, 400_000_000_000], pa.timestamp("s", tz="UTC"))),
        [("sent", None), ("rejected", "customFieldValue is a timestamp outside years 1-9999")],
        {("v0", "PAY_STATUS"): "1970-01-01T00:00:00Z"},
    ),
    Case(
        "dates_outside_years_1_to_9999",
        long_form(
            pa.array([0, 3_000_000 * 86_400_000, -800_000 * 86_400_000, 86_400_000], pa.int64()).cast(pa.date64())
        ),
        [
            ("sent", None),
            ("rejected", "customFieldValue is a date outside years 1-9999"),
            ("rejected", "customFieldValue is a date outside years 1-9999"),
            ("sent", None),
        ],
        {("v0", "PAY_STATUS"): "1970-01-01", ("v3", "PAY_STATUS"): "1970-01-02"},
    ),
    Case(
        "date32_far_future",
        long_form(pa.array([19_000, 2_932_897], pa.int32()).cast(pa.date32())),  # 10000-01-01
        [("sent", None), ("rejected", "customFieldValue is a date outside years 1-9999")],
        {("v0", "PAY_STATUS"): "2022-01-08"},
    ),
]


def report_of(path: Path) -> list[dict[str, Any]]:
    table = pq.read_table(path)
    for column in table.columns:
        if pa.types.is_string(column.type):
            column.validate(full=True)  # valid UTF-8, or this raises
    frame = pd.read_parquet(path)  # pandas reads it too
    assert len(frame) == table.num_rows
    return table.to_pylist()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_encoding_corpus(case: Case, tmp_path: Path, env: dict[str, str], sim: Any, capsys: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO)
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table(case.columns), src)
    args = ["run", "--input", str(src), "--state-dir", str(tmp_path / "state"), *case.args]

    code = main([*args, "--report", str(tmp_path / "r1.parquet")])

    err = capsys.readouterr().err
    assert "Traceback" not in err and "Traceback" not in caplog.text
    assert code == case.exit_code, err
    report = report_of(tmp_path / "r1.parquet")
    assert [r["status"] for r in report] == [status for status, _ in case.expect]
    for row, (status, fragment) in zip(report, case.expect, strict=True):
        if fragment is None:
            assert row["reason"] is None if status == "sent" else True
        else:
            assert fragment in row["reason"], row["reason"]
    stored = {(v, f): value for (app, v, f), value in sim.values.items() if app == APP_ID}
    assert stored.keys() == case.stored.keys()
    for key, value in case.stored.items():
        assert stored[key].encode("utf-8") == value.encode("utf-8"), key
    sent = [r for r in report if r["status"] == "sent"]
    for row in sent:  # the report shows what was sent, byte for byte
        assert stored[(row["viewerId"], row["customFieldId"])] == row["customFieldValue"]

    # A rerun does not stop at the same place: sent rows are unchanged, broken ones rejected.
    assert main([*args, "--report", str(tmp_path / "r2.parquet")]) == case.exit_code
    again = report_of(tmp_path / "r2.parquet")
    assert [r["status"] for r in again] == ["unchanged" if status == "sent" else status for status, _ in case.expect]
    assert "Traceback" not in capsys.readouterr().err


def test_invalid_bytes_are_shown_as_backslashreplace_writes_them(tmp_path, env, sim) -> None:
    src = tmp_path / "in.parquet"
    raw = [b"caf\xe9 \xc3(", b"\xff\xfeA\x00"]
    pq.write_table(pa.table(long_form(raw_text(raw))), src)
    assert main(["run", "--input", str(src), "--report", str(tmp_path / "r.parquet")]) == 0
    shown = [r["customFieldValue"] for r in report_of(tmp_path / "r.parquet")]
    assert shown == [b.decode("utf-8", "backslashreplace") for b in raw] == ["caf\\xe9 \\xc3(", "\\xff\\xfeA\x00"]
    assert sim.stats.save_requests == 0


def test_a_chunk_full_of_invalid_text_is_located_row_by_row_vectorised(tmp_path, env, sim) -> None:
    """Many bad rows spread over several read batches: each is found, the rest is sent."""
    n = 5_000
    raw = [b"\xc3" + str(i).encode() if i % 7 == 3 else f"ok{i}".encode() for i in range(n)]
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table(long_form(raw_text(raw))), src, row_group_size=1_000)
    assert main(["run", "--input", str(src), "--report", str(tmp_path / "r.parquet")]) == 0
    report = report_of(tmp_path / "r.parquet")
    bad = {i for i in range(n) if i % 7 == 3}
    assert {r["rowNumber"] for r in report if r["status"] == "rejected"} == bad
    assert len(sim.values) == n - len(bad)
