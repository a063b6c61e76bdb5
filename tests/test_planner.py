from __future__ import annotations

import numpy as np

from polyv_connector.planner import plan_duplicates, plan_unchanged


def test_first_hash_collision_does_not_merge_different_keys() -> None:
    # Items 0 and 1 share key_a but differ in key_b: different keys, not duplicates.
    ka = np.array([7, 7, 7], np.uint64)
    kb = np.array([1, 2, 1], np.uint64)
    fp = np.array([5, 6, 5], np.uint64)
    plan = plan_duplicates(ka, kb.__getitem__, fp, np.ones(3, bool))
    assert plan.duplicate.tolist() == [2] and plan.conflicting.tolist() == []
    assert "duplicate of row 0" in plan.reasons()[2]


def test_conflicts_name_the_other_rows_and_ineligible_items_are_ignored() -> None:
    ka = np.array([1, 1, 1, 1], np.uint64)
    kb = np.zeros(4, np.uint64)
    fp = np.array([1, 2, 3, 9], np.uint64)
    eligible = np.array([True, True, True, False])
    plan = plan_duplicates(ka, kb.__getitem__, fp, eligible)
    assert sorted(plan.conflicting.tolist()) == [0, 1, 2]
    reasons = plan.reasons()
    assert "rows 1, 2" in reasons[0]
    assert 3 not in reasons


def test_wide_form_reasons_name_source_rows_not_item_positions() -> None:
    # 2 items per row: positions 1 and 5 are rows 0 and 2.
    ka = np.array([1, 9, 2, 3, 4, 9], np.uint64)
    plan = plan_duplicates(
        ka, np.zeros(6, np.uint64).__getitem__, np.array([0, 7, 0, 0, 0, 7], np.uint64), np.ones(6, bool)
    )
    assert plan.duplicate.tolist() == [5]
    assert "duplicate of row 0" in plan.reasons(items_per_row=2)[5]


def test_many_duplicates_keep_the_first_of_each_group() -> None:
    n = 200_000
    ka = np.repeat(np.arange(n // 2, dtype=np.uint64), 2)
    plan = plan_duplicates(ka, np.zeros(n, np.uint64).__getitem__, np.zeros(n, np.uint64), np.ones(n, bool))
    assert plan.duplicate.tolist() == list(range(1, n, 2))
    assert plan.duplicate_of.tolist() == list(range(0, n, 2))


def test_the_second_key_hash_is_asked_only_for_items_whose_first_repeats() -> None:
    ka = np.array([4, 7, 5, 7, 6, 7, 8], np.uint64)
    kb = np.array([0, 1, 0, 2, 0, 1, 0], np.uint64)
    asked: list[list[int]] = []

    def key_b_at(positions: np.ndarray) -> np.ndarray:
        asked.append(positions.tolist())
        return kb[positions]

    eligible = np.ones(7, bool)
    plan = plan_duplicates(ka, key_b_at, np.zeros(7, np.uint64), eligible)
    assert asked == [[1, 3, 5]] and plan.duplicate.tolist() == [5] and plan.duplicate_of.tolist() == [1]
    asked.clear()
    plan_duplicates(np.arange(7, dtype=np.uint64), key_b_at, np.zeros(7, np.uint64), eligible)
    assert asked == []


def test_unchanged_only_when_key_and_fingerprint_match() -> None:
    state_keys = np.array([1, 5, 9], np.uint64)
    state_fps = np.array([10, 50, 90], np.uint64)
    key = np.array([1, 5, 9, 12], np.uint64)
    fp = np.array([10, 51, 90, 120], np.uint64)
    pending = np.array([True, True, False, True])
    assert plan_unchanged(key, fp, pending, state_keys, state_fps).tolist() == [0]


def test_distinct_counts_and_keys_the_state_knows() -> None:
    from polyv_connector.planner import diff_against_state, distinct_count, distinct_known

    key = np.array([5, 3, 5, 9, 1, 3], dtype=np.uint64)
    assert distinct_count(key) == 4 and distinct_count(key[:1]) == 1 and distinct_count(key[:0]) == 0
    state = np.array([1, 5, 7], dtype=np.uint64)
    assert distinct_known(key, state) == (4, 2)
    assert distinct_known(key, state[:0]) == (4, 0)
    fps = np.array([10, 50, 70], dtype=np.uint64)
    value_fp = np.array([50, 0, 51, 0, 10, 0], dtype=np.uint64)
    pending = np.array([True, True, True, True, True, False])
    unchanged, known = diff_against_state(key, value_fp, pending, state, fps)
    assert unchanged.tolist() == [True, False, False, False, True, False]
    assert known.tolist() == [True, False, True, False, True, False]
