"""What to send: duplicates within the run, and items unchanged since the last confirmed sync.

Pure functions over NumPy arrays indexed by item position in the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MAX_ROWS_NAMED = 10
_CHUNK = 1 << 20  # items per vectorised step where a full-size temporary would cost too much


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``values`` found in ``sorted_set`` (ascending, non-empty)."""
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    found: np.ndarray = sorted_set[at] == values
    return found


@dataclass(frozen=True)
class DuplicatePlan:
    """Items found by duplicate detection, as arrays (no per-item Python objects).

    ``duplicate[i]`` repeats the value of the kept item at position ``duplicate_of[i]``.
    ``conflicting`` holds the positions of every item of a conflicting key, grouped by key
    (``conflict_starts`` are the offsets where each group begins).
    """

    duplicate: np.ndarray
    duplicate_of: np.ndarray
    conflicting: np.ndarray
    conflict_starts: np.ndarray

    def reasons(self, items_per_row: int = 1) -> dict[int, str]:
        """Reason per position (for tests and small runs; the report builds them batch-wise)."""
        notes = PlanNotes.from_plan(self, items_per_row)
        return {int(p): notes.text(i) for i, p in enumerate(notes.positions)}


@dataclass(frozen=True)
class PlanNotes:
    """Planner reasons indexed by item position, turned into text only when written."""

    positions: np.ndarray  # sorted ascending
    kind: np.ndarray  # 1 = duplicate, 2 = conflict
    ref: np.ndarray  # duplicate: row kept; conflict: index of its group
    group_rows: list[np.ndarray]
    items_per_row: int

    @classmethod
    def empty(cls) -> PlanNotes:
        e = np.empty(0, dtype=np.int64)
        return cls(e, np.empty(0, dtype=np.int8), e, [], 1)

    @classmethod
    def from_plan(cls, plan: DuplicatePlan, items_per_row: int) -> PlanNotes:
        sizes = np.diff(np.append(plan.conflict_starts, len(plan.conflicting)))
        group_of = np.repeat(np.arange(len(sizes)), sizes)
        group_rows = [
            plan.conflicting[a : a + n] // items_per_row for a, n in zip(plan.conflict_starts, sizes, strict=True)
        ]
        positions = np.concatenate([plan.duplicate, plan.conflicting]).astype(np.int64)
        kind = np.concatenate([np.full(len(plan.duplicate), 1, np.int8), np.full(len(plan.conflicting), 2, np.int8)])
        ref = np.concatenate([plan.duplicate_of // items_per_row, group_of]).astype(np.int64)
        order = np.argsort(positions, kind="stable")
        return cls(positions[order], kind[order], ref[order], group_rows, items_per_row)

    def text(self, i: int) -> str:
        """The reason for the ``i``-th noted position."""
        if self.kind[i] == 1:
            return f"duplicate of row {int(self.ref[i])} (same viewerId, customFieldId and value; sent once)"
        rows = self.group_rows[int(self.ref[i])]
        own = int(self.positions[i]) // self.items_per_row
        others = rows[rows != own] if np.any(rows != own) else rows
        return (
            "conflicting values for the same viewerId and customFieldId in rows "
            f"{_rows_text(others)}; keep one row per viewer and field in the source"
        )

    def texts_between(self, start: int, stop: int) -> tuple[np.ndarray, list[str]]:
        """Positions in [start, stop) that have a note, and their texts."""
        lo, hi = np.searchsorted(self.positions, [start, stop])
        return self.positions[lo:hi], [self.text(i) for i in range(lo, hi)]


def _rows_text(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:MAX_ROWS_NAMED])
    more = len(rows) - MAX_ROWS_NAMED
    return shown + (f" and {more} more" if more > 0 else "")


def plan_duplicates(
    key_a: np.ndarray,
    key_b_at: Callable[[np.ndarray], np.ndarray],
    value_fp: np.ndarray,
    eligible: np.ndarray,
) -> DuplicatePlan:
    """Find items sharing (viewerId, customFieldId) among ``eligible`` positions.

    Identical values: the first item (lowest position) is kept, the others are ``duplicate``.
    Conflicting values: every item of the key is ``rejected`` (reasons name the other rows).
    ``key_b_at(positions)`` gives the second, independent key hash of the items at ``positions``
    (ascending): asked only for the items whose ``key_a`` repeats, so that a run without
    duplicates never computes it (a third of the plan's hashing).
    """
    empty = np.empty(0, dtype=np.int64)
    none = DuplicatePlan(empty, empty, empty, empty)
    # Memory matters at tens of millions of items: find the key hashes that occur more than
    # once with one sorted copy, then look at those candidates only.
    sorted_keys = key_a[eligible]
    sorted_keys.sort()
    # Not np.unique: its first call imports numpy.ma (about 40 ms of every run's start).
    repeated = _distinct(sorted_keys[1:][sorted_keys[1:] == sorted_keys[:-1]])
    del sorted_keys
    if len(repeated) == 0:
        return none
    candidates = np.concatenate(
        [
            start + np.flatnonzero(eligible[start : start + _CHUNK] & _member(key_a[start : start + _CHUNK], repeated))
            for start in range(0, len(key_a), _CHUNK)
        ]
    )
    # Order candidates by (key_a, key_b, position): equal keys become adjacent runs, and the
    # first item of each run is the one kept.
    key_b = key_b_at(candidates)
    by_key = np.lexsort((candidates, key_b, key_a[candidates]))
    order = candidates[by_key]
    ka, kb, fp = key_a[order], key_b[by_key], value_fp[order]
    new_group = np.concatenate(([True], (ka[1:] != ka[:-1]) | (kb[1:] != kb[:-1])))
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.append(starts, len(order)))
    # A group conflicts when any of its values differs from its first value.
    differs = fp != fp[starts][group]
    conflict_group = np.zeros(len(starts), dtype=bool)
    np.logical_or.at(conflict_group, group, differs)
    multi = sizes[group] > 1
    in_conflict = conflict_group[group] & multi
    is_dup = multi & ~conflict_group[group] & ~new_group
    conflicting = order[in_conflict]
    conflict_sizes = sizes[conflict_group & (sizes > 1)]
    conflict_starts = np.concatenate(([0], np.cumsum(conflict_sizes)[:-1])) if len(conflict_sizes) else empty
    return DuplicatePlan(order[is_dup], order[starts][group][is_dup], conflicting, conflict_starts.astype(np.int64))


def plan_unchanged(
    key: np.ndarray,
    value_fp: np.ndarray,
    pending: np.ndarray,
    state_keys: np.ndarray,
    state_fps: np.ndarray,
) -> np.ndarray:
    """Positions among ``pending`` whose value matches the last confirmed value in the state.

    ``state_keys`` must be sorted ascending (unique); ``state_fps`` aligned with it.
    """
    if len(state_keys) == 0:
        return np.empty(0, dtype=np.int64)
    found: list[np.ndarray] = []
    for start in range(0, len(key), _CHUNK):
        pos = start + np.flatnonzero(pending[start : start + _CHUNK])
        k = key[pos]
        at = np.minimum(np.searchsorted(state_keys, k), len(state_keys) - 1)
        same = (state_keys[at] == k) & (state_fps[at] == value_fp[pos])
        found.append(pos[same])
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)


def diff_against_state(
    key: np.ndarray,
    value_fp: np.ndarray,
    pending: np.ndarray,
    state_keys: np.ndarray,
    state_fps: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``(unchanged, known)``, boolean over every position: the ``pending`` items whose value
    the state holds (as :func:`plan_unchanged`), and the ``pending`` items whose key it knows
    (with whatever value). One lookup serves both: the diff and the change kinds."""
    unchanged = np.zeros(len(key), dtype=bool)
    known = np.zeros(len(key), dtype=bool)
    if len(state_keys) == 0:
        return unchanged, known
    for start in range(0, len(key), _CHUNK):
        pos = start + np.flatnonzero(pending[start : start + _CHUNK])
        k = key[pos]
        at = np.minimum(np.searchsorted(state_keys, k), len(state_keys) - 1)
        hit = state_keys[at] == k
        known[pos[hit]] = True
        unchanged[pos[hit & (state_fps[at] == value_fp[pos])]] = True
    return unchanged, known


def held_unconfirmed(
    key: np.ndarray, candidates: np.ndarray, state_keys: np.ndarray, state_fps: np.ndarray, unconfirmed: np.uint64
) -> np.ndarray:
    """Boolean over every position: the ``candidates`` whose key the state holds with the
    ``unconfirmed`` fingerprint (a run stopped while sending it: POLYV may hold the value or not)."""
    held = np.zeros(len(key), dtype=bool)
    if len(state_keys) == 0 or not np.any(state_fps == unconfirmed):
        return held
    pos = np.flatnonzero(candidates)
    k = key[pos]
    at = np.minimum(np.searchsorted(state_keys, k), len(state_keys) - 1)
    held[pos[(state_keys[at] == k) & (state_fps[at] == unconfirmed)]] = True
    return held


def _distinct(key: np.ndarray) -> np.ndarray:
    """The distinct values of ``key``, ascending: one sort of a copy (``np.unique`` took ten
    times as long on uint64 keys)."""
    s = np.sort(key)
    if len(s) < 2:
        return s
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def distinct_count(key: np.ndarray) -> int:
    """How many distinct values ``key`` holds."""
    return len(_distinct(key))


def distinct_known(key: np.ndarray, state_keys: np.ndarray) -> tuple[int, int]:
    """(distinct keys in ``key``, how many of them ``state_keys`` (sorted) holds)."""
    u = _distinct(key)
    if len(u) == 0 or len(state_keys) == 0:
        return len(u), 0
    return len(u), int(np.count_nonzero(_member(u, state_keys)))
