"""The plan file: streamed Parquet items with a signed summary in the footer."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polyv_connector import planfile
from polyv_connector.planfile import PlanRefused, PlanWriter

SECRET = "s3cr3t-plan-key-XYZ"


def _write(path, chunks, summary=None, secret=SECRET):
    w = PlanWriter(path)
    for viewers, fields, values, kinds in chunks:
        w.write(pa.array(viewers), pa.array(fields), pa.array(values), pa.array(kinds))
    return w.close({"appId": "app1", **(summary or {})}, secret)


def _chunks():
    return [
        (["v1", "v2"], ["f1", "f2"], ["a", "b"], ["new", "changed"]),
        (["v3"], ["f1"], [""], ["cleared"]),
    ]


def test_a_written_plan_verifies_and_reads_back_its_items(tmp_path):
    path = tmp_path / "p.parquet"
    summary = _write(path, _chunks())
    assert summary["items"] == 3
    assert summary["byKind"] == {"new": 1, "changed": 1, "cleared": 1}
    assert summary["byField"]["f1"] == {"new": 1, "changed": 0, "cleared": 1}
    assert summary["firstChanges"]["f2"] == [{"viewerId": "v2", "value": "b", "kind": "changed"}]
    assert planfile.verify(path, "app1", SECRET) == summary
    rows = pa.Table.from_batches(list(planfile.batches(path, batch_rows=1))).to_pylist()
    assert [r["viewerId"] for r in rows] == ["v1", "v2", "v3"]
    assert not (tmp_path / "p.parquet.partial").exists()


def test_the_secret_is_not_in_the_plan_file(tmp_path):
    path = tmp_path / "p.parquet"
    _write(path, _chunks())
    assert SECRET.encode() not in path.read_bytes()


def test_the_digest_does_not_depend_on_chunking(tmp_path):
    one = _write(
        tmp_path / "a.parquet",
        [(["v1", "v2", "v3"], ["f1", "f2", "f1"], ["a", "b", ""], ["new", "changed", "cleared"])],
    )
    two = _write(tmp_path / "b.parquet", _chunks())
    assert one["itemsSha256"] == two["itemsSha256"]


def test_a_plan_for_another_account_is_refused(tmp_path):
    path = tmp_path / "p.parquet"
    _write(path, _chunks())
    with pytest.raises(PlanRefused, match="appId"):
        planfile.verify(path, "app2", SECRET)


def test_a_plan_checked_with_another_secret_is_refused(tmp_path):
    path = tmp_path / "p.parquet"
    _write(path, _chunks())
    with pytest.raises(PlanRefused, match="signature"):
        planfile.verify(path, "app1", "another-secret")


def _rewrite(path, table, metadata):
    pq.write_table(table.replace_schema_metadata(metadata), path)


def test_edited_items_are_refused(tmp_path):
    path = tmp_path / "p.parquet"
    _write(path, _chunks())
    f = pq.ParquetFile(path)
    meta = f.metadata.metadata
    table = pq.read_table(path)
    values = table.column("customFieldValue").to_pylist()
    values[0] = "EVIL"
    edited = table.set_column(2, "customFieldValue", pa.array(values))
    _rewrite(path, edited, meta)
    with pytest.raises(PlanRefused, match="altered"):
        planfile.verify(path, "app1", SECRET)


def test_an_edited_summary_is_refused(tmp_path):
    path = tmp_path / "p.parquet"
    _write(path, _chunks())
    meta = dict(pq.ParquetFile(path).metadata.metadata)
    meta[planfile.SUMMARY_KEY] = meta[planfile.SUMMARY_KEY].replace(b'"app1"', b'"app1" ', 1)
    summary = planfile.read_summary(path)
    summary["state"] = {"position": "forged"}
    meta[planfile.SUMMARY_KEY] = planfile.canonical(summary)
    _rewrite(path, pq.read_table(path), meta)
    with pytest.raises(PlanRefused, match="signature"):
        planfile.verify(path, "app1", SECRET)


def test_a_value_edited_to_null_is_refused(tmp_path):
    path = tmp_path / "p.parquet"
    _write(path, _chunks())
    meta = pq.ParquetFile(path).metadata.metadata
    table = pq.read_table(path)
    nulled = table.set_column(2, "customFieldValue", pa.array(["a", "b", None]))
    _rewrite(path, nulled, meta)
    with pytest.raises(PlanRefused):
        planfile.verify(path, "app1", SECRET)


def test_a_file_that_is_no_plan_is_refused(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1]}), path)
    with pytest.raises(PlanRefused, match="not a plan"):
        planfile.verify(path, "app1", SECRET)
    with pytest.raises(PlanRefused, match="cannot read"):
        planfile.verify(tmp_path / "missing.parquet", "app1", SECRET)


def test_an_empty_plan_is_a_valid_plan(tmp_path):
    path = tmp_path / "p.parquet"
    summary = _write(path, [])
    assert summary["items"] == 0
    assert planfile.verify(path, "app1", SECRET)["items"] == 0
