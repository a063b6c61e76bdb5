"""What to send: duplicates within the run, and items unchanged since the last confirmed sync.

Pure functions over NumPy arrays indexed by item position in the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from polyv_connector.model import PENDING, STATUS_CODE

MAX_ROWS_NAMED = 10
_CHUNK = 1 << 20  # items per vectorised step where a full-size temporary would cost too much


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``values`` found in ``sorted_set`` (ascending, non-empty)."""
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


@dataclass(frozen=True)
class DuplicatePlan:
    """Statuses set by duplicate detection: ``status`` codes, and reasons by item position."""

    duplicate: np.ndarray  # positions reported "duplicate" (identical to a kept item)
    conflicting: np.ndarray  # positions reported "rejected" (same key, different values)
    reasons: dict[int, str]


def _rows_text(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:MAX_ROWS_NAMED])
    more = len(rows) - MAX_ROWS_NAMED
    return shown + (f" and {more} more" if more > 0 else "")


def plan_duplicates(
    key_a: np.ndarray, key_b: np.ndarray, value_fp: np.ndarray, eligible: np.ndarray,
    items_per_row: int = 1,
) -> DuplicatePlan:
    """Find items sharing (viewerId, customFieldId) among ``eligible`` positions.

    Every source row yields ``items_per_row`` consecutive items (1 in long form, the number
    of mapped fields in wide form), so an item's rowNumber is its position // items_per_row.

    Identical values: the first item (lowest position) is kept, the others are ``duplicate``.
    Conflicting values: every item of the key is ``rejected`` with a reason naming the other rows.
    """
    empty = np.empty(0, dtype=np.int64)
    # Memory matters at tens of millions of items: find the key hashes that occur more than
    # once with one sorted copy, then look at those (rare) candidates only.
    sorted_keys = key_a[eligible]
    sorted_keys.sort()
    repeated = np.unique(sorted_keys[1:][sorted_keys[1:] == sorted_keys[:-1]])
    del sorted_keys
    if len(repeated) == 0:
        return DuplicatePlan(empty, empty, {})
    candidates = np.concatenate([
        start + np.flatnonzero(eligible[start:start + _CHUNK] & _member(key_a[start:start + _CHUNK], repeated))
        for start in range(0, len(key_a), _CHUNK)
    ])
    # Sort the candidates by the first key hash; the second hash splits the rare groups whose
    # first hashes collide, below.
    order = candidates[np.argsort(key_a[candidates], kind="stable")]
    ka = key_a[order]
    same_as_prev = ka[1:] == ka[:-1]
    # Group boundaries in sorted order; only groups with more than one item matter.
    starts = np.flatnonzero(np.concatenate(([True], ~same_as_prev)))
    sizes = np.diff(np.append(starts, len(order)))
    duplicate: list[np.ndarray] = []
    conflicting: list[np.ndarray] = []
    reasons: dict[int, str] = {}
    for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
        run = order[start:start + size]  # positions in ascending order (stable sort)
        for kb in np.unique(key_b[run]):
            members = run[key_b[run] == kb]
            if len(members) < 2:
                continue
            rows = members // items_per_row
            if np.all(value_fp[members] == value_fp[members[0]]):
                duplicate.append(members[1:])
                for m in members[1:]:
                    reasons[int(m)] = (f"duplicate of row {int(rows[0])} "
                                       "(same viewerId, customFieldId and value; sent once)")
            else:
                conflicting.append(members)
                for m, r in zip(members, rows, strict=True):
                    others = rows[rows != r] if np.any(rows != r) else rows
                    reasons[int(m)] = (
                        "conflicting values for the same viewerId and customFieldId in rows "
                        f"{_rows_text(others)}; keep one row per viewer and field in the source")
    return DuplicatePlan(
        np.concatenate(duplicate) if duplicate else empty,
        np.concatenate(conflicting) if conflicting else empty,
        reasons,
    )


def plan_unchanged(
    key: np.ndarray, value_fp: np.ndarray, pending: np.ndarray,
    state_keys: np.ndarray, state_fps: np.ndarray,
) -> np.ndarray:
    """Positions among ``pending`` whose value matches the last confirmed value in the state.

    ``state_keys`` must be sorted ascending (unique); ``state_fps`` aligned with it.
    """
    if len(state_keys) == 0:
        return np.empty(0, dtype=np.int64)
    found: list[np.ndarray] = []
    for start in range(0, len(key), _CHUNK):
        pos = start + np.flatnonzero(pending[start:start + _CHUNK])
        k = key[pos]
        at = np.minimum(np.searchsorted(state_keys, k), len(state_keys) - 1)
        same = (state_keys[at] == k) & (state_fps[at] == value_fp[pos])
        found.append(pos[same])
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)


def apply_status(status: np.ndarray, positions: np.ndarray, name: str) -> None:
    """Set ``status`` of ``positions`` to the named status (in place)."""
    status[positions] = STATUS_CODE[name]


def pending_mask(status: np.ndarray) -> np.ndarray:
    return status == PENDING
