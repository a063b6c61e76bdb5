"""Sources: where rows come from. Each yields Arrow record batches and nothing else.

The names are loaded on first use: a Parquet run does not import the SQL source (and the
warehouse modules it brings: 25 ms of a run's start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polyv_connector.sources.parquet import ParquetSource
    from polyv_connector.sources.sql import SqlSource

__all__ = ["ParquetSource", "SqlSource"]


def __getattr__(name: str) -> Any:
    if name == "ParquetSource":
        from polyv_connector.sources.parquet import ParquetSource

        return ParquetSource
    if name == "SqlSource":
        from polyv_connector.sources.sql import SqlSource

        return SqlSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
