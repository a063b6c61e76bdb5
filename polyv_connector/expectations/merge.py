"""How per-chunk Great Expectations metric values combine into whole-input values.

The engine hands the validator chunks of at most 65,536 source rows. For each expectation, GX
computes the metrics that expectation depends on (row count, unexpected count, the first
unexpected values...) on every chunk; the rules here fold those values into what GX would have
computed on the whole input, and GX itself then decides success from the folded values.

Only metrics whose whole-input value follows exactly from the per-chunk values have a rule.
An expectation needing any other metric (a mean, a median, a distinct count, uniqueness...)
is evaluated on the accumulated columns instead (see ``validator.py``).

Pure Python: nothing here imports Great Expectations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

# How many unexpected values / row numbers a result keeps (GX's SUMMARY default).
PARTIAL_UNEXPECTED_COUNT = 20

MergeFn = Callable[[Any, Any], Any]


class _Missing:
    """The accumulator before the first chunk (None is a legitimate metric value)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def _is_nothing(value: Any) -> bool:
    # GX reports the min/max of an empty or all-null column as None, and pandas may say NaN.
    return value is None or (isinstance(value, float) and math.isnan(value))


def _sum(acc: Any, value: Any) -> Any:
    if acc is MISSING or _is_nothing(acc):
        return value
    if _is_nothing(value):
        return acc
    return acc + value


def _first(acc: Any, value: Any) -> Any:
    # Table structure (column names and types) is the same in every chunk: the items always
    # have the same schema, so the first chunk's answer is the whole input's.
    return value if acc is MISSING else acc


def _extreme(pick: Callable[[Any, Any], Any]) -> MergeFn:
    def merge(acc: Any, value: Any) -> Any:
        if acc is MISSING or _is_nothing(acc):
            return value
        if _is_nothing(value):
            return acc
        return pick(acc, value)

    return merge


def _partial_list(acc: Any, value: Any) -> Any:
    # SUMMARY keeps the first PARTIAL_UNEXPECTED_COUNT unexpected values in input order; the
    # chunks arrive in input order, so the first chunks' lists, concatenated, are that prefix.
    head = [] if acc is MISSING or acc is None else acc
    if value is None or len(head) >= PARTIAL_UNEXPECTED_COUNT:
        return head
    return head + list(value)[: PARTIAL_UNEXPECTED_COUNT - len(head)]


def _none(acc: Any, value: Any) -> Any:
    # unexpected_index_query: turned off in the result format (it lists every failing index).
    return None


# Whole-table metrics with an exact fold. column.min / column.max compare like GX does on the
# whole column; column.sum adds (GX sums non-null values, so an all-null chunk adds 0).
TABLE_RULES: dict[str, MergeFn] = {
    "table.row_count": _sum,
    "table.columns": _first,
    "table.column_count": _first,
    "table.column_types": _first,
    "column.min": _extreme(min),
    "column.max": _extreme(max),
    "column.sum": _sum,
}

# Summary metrics of a row-local map metric (one whose verdict on a row depends on that row
# only): counts add up, partial lists concatenate.
MAP_SUFFIX_RULES: dict[str, MergeFn] = {
    "unexpected_count": _sum,
    "filtered_row_count": _sum,
    "unexpected_values": _partial_list,
    "unexpected_index_list": _partial_list,
    "unexpected_index_query": _none,
}


def rule_for(metric_name: str, row_local_map_metrics: frozenset[str] | set[str]) -> MergeFn | None:
    """The fold for a top-level dependency metric, or None if it has no exact fold.

    ``row_local_map_metrics`` names the map metrics (``column_values.match_regex``...) known
    to judge each row on its own, whose summary metrics may therefore be summed over chunks.
    """
    if metric_name in TABLE_RULES:
        return TABLE_RULES[metric_name]
    base, _, suffix = metric_name.rpartition(".")
    if suffix in MAP_SUFFIX_RULES and base in row_local_map_metrics:
        return MAP_SUFFIX_RULES[suffix]
    return None
