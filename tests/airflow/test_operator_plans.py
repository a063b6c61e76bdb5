"""The operator's ``mode="plan"`` / ``mode="apply"``: the plan lands in the DAG's report folder,
its summary (no secret, no values) is the XCom, the apply sends it; a trigger's ``plan_path``
cannot leave the DAG's folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.airflow.support import APP_ID, PLANTED_SECRET

pytestmark = pytest.mark.airflow


def _context(run_id: str = "manual__plan") -> dict[str, Any]:
    class TI:
        map_index = -1

        def xcom_push(self, key: str, value: Any) -> None:
            pass

    return {"ti": TI(), "run_id": run_id}


def _op(**kwargs: Any):
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    return PolyvViewerFieldSyncOperator(**{"task_id": "sync", **kwargs})


def _input(tmp_path: Path, value: str) -> Path:
    src = tmp_path / "data" / "in.parquet"
    src.parent.mkdir(exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "viewerId": [f"v{i}" for i in range(5)],
                "customFieldId": ["PAY_STATUS"] * 5,
                "customFieldValue": [f"{value}{i}" for i in range(5)],
            }
        ),
        src,
    )
    return src


def _args(tmp_path: Path, src: Path) -> dict[str, Any]:
    return {
        "input_path": str(src),
        "report_dir": str(tmp_path / "reports"),
        "allowed_input_prefixes": json.dumps([str(src.parent)]),
        "state_dir": str(tmp_path / "state"),
    }


def test_plan_then_apply_through_the_operator(sim, polyv_env, tmp_path):
    src = _input(tmp_path, "a")
    args = _args(tmp_path, src)
    summary = _op(task_id="plan", mode="plan", plan_path="p.parquet", report_path="plan.parquet", **args).execute(
        _context()
    )
    where = tmp_path / "reports" / "dag" / "p.parquet"
    assert where.is_file() and summary["ok"] is True
    plan = summary["plan"]
    assert plan["planPath"] == str(where) and plan["items"] == 5 and plan["byKind"]["new"] == 5
    assert "firstChanges" not in plan and PLANTED_SECRET not in json.dumps(summary)
    assert PLANTED_SECRET.encode() not in where.read_bytes()
    assert sim.stats.save_requests == 0
    page = Path(summary["runPage"]).read_text()
    assert 'id="plan"' in page and "a3" in page  # the preview shows the first changes
    _input(tmp_path, "b")  # the source moves on: the apply does not read it
    applied = _op(task_id="apply", mode="apply", plan_path="p.parquet", report_path="apply.parquet", **args).execute(
        _context()
    )
    assert applied["ok"] is True and applied["counts"]["sent"] == 5
    assert applied["appliedPlan"]["path"] == str(where)
    assert sim.values[(APP_ID, "v3", "PAY_STATUS")] == "a3"


@pytest.mark.parametrize("mode", ["plan", "apply"])
@pytest.mark.parametrize(
    "name", ["../escape.parquet", "/tmp/escape.parquet", "a/../../escape.parquet", "s3://b/k.parquet", "p.html"]
)
def test_a_plan_path_outside_the_dag_folder_is_refused(sim, polyv_env, tmp_path, mode, name):
    from airflow.sdk.exceptions import AirflowFailException

    src = _input(tmp_path, "a")
    with pytest.raises(AirflowFailException, match="plan_path"):
        _op(mode=mode, plan_path=name, report_path="r.parquet", **_args(tmp_path, src)).execute(_context())
    assert sim.stats.api_requests == 0
    assert not (tmp_path / "escape.parquet").exists()


def test_a_plan_name_another_run_wrote_is_not_overwritten(sim, polyv_env, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    src = _input(tmp_path, "a")
    args = {**_args(tmp_path, src), "mode": "plan", "plan_path": "p.parquet"}
    _op(report_path="r1.parquet", **args).execute(_context("manual__one"))
    before = (tmp_path / "reports" / "dag" / "p.parquet").read_bytes()
    with pytest.raises(AirflowFailException, match="exists already"):
        _op(report_path="r2.parquet", **args).execute(_context("manual__two"))
    assert (tmp_path / "reports" / "dag" / "p.parquet").read_bytes() == before


def test_an_unknown_mode_is_refused_naming_it(sim, polyv_env, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    src = _input(tmp_path, "a")
    with pytest.raises(AirflowFailException, match="mode"):
        _op(mode="yolo", report_path="r.parquet", **_args(tmp_path, src)).execute(_context())


@pytest.mark.postgres
@pytest.mark.parametrize("in_warehouse", [False, True])
def test_plan_and_apply_with_the_state_in_a_warehouse_table(
    sim, polyv_env, pg_schema, pg_warehouse_env, tmp_path, in_warehouse
):
    from airflow.sdk.exceptions import AirflowFailException

    from tests.airflow.test_state_table import _attrs, _sync

    _attrs(pg_schema, 30)
    assert _sync(pg_schema)["counts"]["sent"] == 30
    _attrs(pg_schema, 30, changed={4, 5})
    plan_file = tmp_path / "p.parquet"
    planned = _sync(pg_schema, mode="plan", plan_path=str(plan_file), diff_in_warehouse=in_warehouse)
    assert planned["plan"]["items"] == 2 and planned["plan"]["byKind"]["changed"] == 2
    assert planned["plan"]["state"]["stateTable"] == f"{pg_schema}.polyv_sync_state"
    saves = sim.stats.save_requests
    _attrs(pg_schema, 30, changed={4, 5, 6})  # the source moves on: the apply sends the plan
    applied = _sync(pg_schema, mode="apply", plan_path=str(plan_file))
    assert applied["counts"]["sent"] == 2 and sim.stats.save_requests == saves + 1
    assert sim.values[(APP_ID, "u6", "VIP_LEVEL")] == "L6"
    # Applied once: the state moved (this apply recorded into it), so the same plan is now stale.
    with pytest.raises(AirflowFailException, match="moved since the plan"):
        _sync(pg_schema, mode="apply", plan_path=str(plan_file))
    assert sim.stats.save_requests == saves + 1


def test_an_apply_as_a_dry_run_reports_the_plan_and_sends_nothing(sim, polyv_env, tmp_path):
    src = _input(tmp_path, "a")
    args = _args(tmp_path, src)
    _op(mode="plan", plan_path="p.parquet", report_path="plan.parquet", **args).execute(_context())
    dry = _op(mode="apply", plan_path="p.parquet", report_path="dry.parquet", dry_run=True, **args).execute(_context())
    assert dry["dryRun"] is True and dry["counts"]["dry_run"] == 5 and sim.stats.save_requests == 0
    # A dry run takes no lock and records nothing: the plan still applies.
    applied = _op(mode="apply", plan_path="p.parquet", report_path="apply.parquet", **args).execute(_context())
    assert applied["counts"]["sent"] == 5
