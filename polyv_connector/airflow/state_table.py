"""Deprecated: moved to :mod:`polyv_connector.state.table`; this path goes in 0.3."""

from __future__ import annotations

import warnings

from polyv_connector.state.table import COLUMNS, SqlStateTable

warnings.warn(
    "polyv_connector.airflow.state_table moved to polyv_connector.state.table; the old path goes in 0.3",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["COLUMNS", "SqlStateTable"]
