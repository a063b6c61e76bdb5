"""Run gates: which expectation verdicts stop a run, worded so a person can act on them.

Row-local column-map expectations reject rows; everything else (table-level and whole-input
expectations, and any expectation GX could not evaluate) is a run gate: nothing is sent when
it fails. A row-local expectation with ``mostly`` below 1 does both: its unexpected rows are
rejected, and if more than ``1 - mostly`` of the rows are unexpected, the run stops.

Pure wording over GX's results: no GX, pandas or pyarrow import.
"""

from __future__ import annotations

import math
from typing import Any

from polyv_connector.expectations.planning import Planned


def gate_failures(planned: list[Planned], evrs: list[Any]) -> list[str]:
    """The reasons to stop the run, in suite order (``evrs``: GX's results, in the same order)."""
    return [g for p, evr in zip(planned, evrs, strict=True) if (g := gate_reason(p, evr)) is not None]


def gate_reason(p: Planned, evr: Any) -> str | None:
    """Why ``p`` stops the run, or None when it does not."""
    if p.errors:
        return f"{p.label} could not be evaluated: {'; '.join(p.errors)}"
    if evr.success:
        return None
    result = evr.result or {}
    if p.kind == "row":
        if p.mostly >= 1:
            return None  # its failing rows are rejected; the rejected-fraction ceiling is the gate
        pct = result.get("unexpected_percent")
        pct_text = f"{pct:.2f}%" if isinstance(pct, int | float) and math.isfinite(pct) else "too many"
        return (
            f"{p.label}: {pct_text} of the values are unexpected, more than the "
            f"{(1 - p.mostly) * 100:.2f}% allowed by mostly={p.mostly:g}"
        )
    if "observed_value" in result:
        return f"{p.label} failed: observed {_short(result['observed_value'])}"
    if "unexpected_count" in result:
        examples = result.get("partial_unexpected_list") or []
        return f"{p.label} failed: {result['unexpected_count']:,} unexpected values" + (
            f", e.g. {_short(examples[:3])}" if examples else ""
        )
    return f"{p.label} failed"


def _short(value: Any, limit: int = 160) -> str:
    # GX's observed values can be whole lists (column names, value counts): keep gates one line.
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
