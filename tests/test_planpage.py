"""The plan's preview on its run page: counts by kind and field, breaches, first changes, escaped."""

from __future__ import annotations

import pyarrow as pa

from polyv_connector.planfile import PlanWriter
from polyv_connector.planpage import plan_html


def test_the_preview_shows_counts_breaches_and_first_changes_escaped():
    html = plan_html(
        {
            "items": 3,
            "byKind": {"new": 1, "changed": 2, "cleared": 0},
            "byField": {"VIP": {"new": 1, "changed": 2, "cleared": 0}},
            "firstChanges": {"VIP": [{"viewerId": "<script>x</script>", "value": "<b>v</b>", "kind": "new"}]},
            "breached": True,
            "breaches": [{"code": "change_limit", "message": "2 changes <above> 50%"}],
            "planPath": "/r/p.parquet",
        }
    )
    assert 'data-kind="changed"><b>2</b>' in html
    assert "limits breached" in html and "change_limit" in html and "&lt;above&gt;" in html
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;v&lt;/b&gt;" in html
    assert 'data-field="VIP"' in html


def test_without_first_changes_the_preview_reads_them_from_the_plan_file(tmp_path):
    path = tmp_path / "p.parquet"
    w = PlanWriter(path)
    w.write(pa.array(["v1"]), pa.array(["VIP"]), pa.array(["gold"]), pa.array(["new"]))
    summary = w.close({"appId": "a"}, "secret")
    public = {k: v for k, v in summary.items() if k != "firstChanges"} | {"planPath": str(path)}
    html = plan_html(public)
    assert "gold" in html and "within the limits" in html
