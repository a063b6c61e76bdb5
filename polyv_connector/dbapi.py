"""Deprecated: moved to :mod:`polyv_connector.warehouse.dbapi`; this path goes in 0.3."""

from __future__ import annotations

import warnings

from polyv_connector.warehouse.dbapi import PG_DRIVERS, Target, copy_into, driver_of, insert_rows, resolve

warnings.warn(
    "polyv_connector.dbapi moved to polyv_connector.warehouse.dbapi; the old path goes in 0.3",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["PG_DRIVERS", "Target", "copy_into", "driver_of", "insert_rows", "resolve"]
