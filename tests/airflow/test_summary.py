"""``polyv_connector.airflow.summary``: the XCom summary's paths mean the same on every host."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.airflow


def test_the_reports_location_names_the_parquet_file_absolutely(tmp_path, monkeypatch) -> None:
    from polyv_connector.airflow.summary import absolute_location, absolute_path

    monkeypatch.chdir(tmp_path)
    assert absolute_path("out/r.parquet") == os.path.join(str(tmp_path), "out", "r.parquet")
    assert absolute_path("s3://bucket/r.parquet") == "s3://bucket/r.parquet"
    where = absolute_location("out/r.parquet + polyv.report (connection wh)", "out/r.parquet")
    assert where == f"{tmp_path}/out/r.parquet + polyv.report (connection wh)"
    assert absolute_location("s.report (connection wh)", None) == "s.report (connection wh)"
    assert absolute_location(None, "out/r.parquet") is None
