"""Strict JSON for run summaries and XCom: Airflow refuses NaN, and numpy scalars are not JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def strict_json(value: Any) -> Any:
    """``value`` with NaN/inf as None, numpy scalars as Python values, other objects as text."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes, Mapping, list, tuple)):
        value = value.item()  # numpy scalars (imported by nobody here: DAG-parse time stays cheap)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    return str(value)
