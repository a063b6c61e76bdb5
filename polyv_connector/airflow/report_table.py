"""Deprecated: moved to :mod:`polyv_connector.warehouse.report_table`; this path goes in 0.3."""

from __future__ import annotations

import warnings

from polyv_connector.warehouse.report_table import SqlReportTable

warnings.warn(
    "polyv_connector.airflow.report_table moved to polyv_connector.warehouse.report_table; the old path goes in 0.3",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["SqlReportTable"]
