"""Parquet input through filesystem URLs (pyarrow's and fsspec's)."""

from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polyv_connector.config import ColumnMapping
from polyv_connector.errors import InputError
from polyv_connector.sources.parquet import ParquetSource


def test_fsspec_url_directory_is_streamed_in_name_order() -> None:
    fs = fsspec.filesystem("memory")
    for name, ids in (("b.parquet", ["v3"]), ("a.parquet", ["v1", "v2"])):
        with fs.open(f"/polyv-test/{name}", "wb") as f:
            pq.write_table(
                pa.table({"viewerId": ids, "customFieldId": ["F"] * len(ids), "customFieldValue": ["x"] * len(ids)}), f
            )
    src = ParquetSource("memory://polyv-test")
    src.check_columns(ColumnMapping())
    batches = list(src.batches(["viewerId"], 1))
    assert [b.column(0).to_pylist() for b in batches] == [["v1"], ["v2"], ["v3"]]


def test_file_url_and_missing_columns(tmp_path) -> None:
    pq.write_table(pa.table({"viewerId": ["a"]}), tmp_path / "x.parquet")
    src = ParquetSource(f"file://{tmp_path / 'x.parquet'}")
    assert [b.num_rows for b in src.batches(["viewerId"], 10)] == [1]
    with pytest.raises(InputError, match="missing column"):
        src.check_columns(ColumnMapping())


def test_empty_directory_is_an_input_error(tmp_path) -> None:
    with pytest.raises(InputError, match="holds no Parquet files"):
        ParquetSource(str(tmp_path)).files()
