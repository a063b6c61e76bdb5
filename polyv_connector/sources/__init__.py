"""Sources: where rows come from. Each yields Arrow record batches and nothing else."""

from polyv_connector.sources.parquet import ParquetSource
from polyv_connector.sources.sql import SqlSource

__all__ = ["ParquetSource", "SqlSource"]
