"""The reviewed DAG's glue: the branch after the plan, and what the approval step shows."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.airflow


def test_the_branch_after_the_plan_never_applies_an_unseen_or_breaching_plan():
    from polyv_connector.airflow.review import after_plan, approval_body

    assert after_plan({"plan": {"breached": False}}) == "apply"
    assert after_plan({"plan": {"breached": True}}) == "approve"
    assert after_plan(None) == "approve" and after_plan({}) == "approve"
    body = approval_body(
        {
            "runPage": "/r/dag/x.html",
            "plan": {
                "items": 12,
                "appId": "a",
                "byKind": {"new": 2, "changed": 10, "cleared": 0},
                "byField": {"VIP": {"new": 2, "changed": 10}},
                "breaches": [{"code": "change_limit", "message": "10 changes planned, above 50%"}],
                "breached": True,
                "planPath": "/r/dag/x.plan.parquet",
            },
        },
        "dag",
        "run",
    )
    assert "**12 items**" in body and "change_limit" in body and "| `VIP` | 2 | 10 | 0 |" in body


def test_a_field_id_cannot_break_out_of_its_code_span():
    from polyv_connector.airflow.review import approval_body

    body = approval_body(
        {"plan": {"items": 1, "breached": True, "byField": {"x` [click](http://evil) `|": {"new": 1}}}}, "d", "r"
    )
    assert "[click](http://evil)" in body  # shown, but inside the code span
    line = next(x for x in body.splitlines() if "click" in x)
    assert line.count("`") == 2 and line.count("|") == 5
