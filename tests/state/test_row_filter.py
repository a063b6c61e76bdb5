"""The row filter of a state table's pre-marks: never "no row" for a key that has one."""

from __future__ import annotations

import numpy as np

from polyv_connector.state.row_filter import RowFilter


def test_every_key_added_may_have_a_row_and_few_others_do() -> None:
    rng = np.random.default_rng(7)
    loaded = rng.integers(0, 2**64 - 1, 200_000, dtype=np.uint64, endpoint=True)
    written = rng.integers(0, 2**64 - 1, 50_000, dtype=np.uint64, endpoint=True)
    rows = RowFilter(loaded)
    rows.add(written)
    assert rows.may_have_row(loaded).all() and rows.may_have_row(written).all()
    others = rng.integers(0, 2**64 - 1, 100_000, dtype=np.uint64, endpoint=True)
    assert rows.may_have_row(others).mean() < 0.02  # 250k keys in 32M bits
    assert not RowFilter().may_have_row(others).any()  # nothing loaded, nothing written: no rows
