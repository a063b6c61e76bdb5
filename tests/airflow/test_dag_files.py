"""The example DAG files: they import cleanly, parse fast, and pull in nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator
from tests.airflow.support import DAGS, SAMPLE, subprocess_env

pytestmark = pytest.mark.airflow

DAG_IDS = {
    "polyv_viewer_sync_parquet",
    "polyv_viewer_sync_warehouse",
    "polyv_viewer_backfill",
    "polyv_viewer_sync_partitioned",
    "polyv_viewer_sync_accounts",
    "polyv_viewer_sync_reviewed",
}
HEAVY = ("pandas", "pyarrow", "great_expectations")

# Runs in a fresh interpreter: Airflow itself is imported first (its own cost is not ours),
# then each DAG file is parsed the way the DAG processor does, timed, and sys.modules checked.
_PARSE_PROBE = r"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
heavy = %r
before = [m for m in heavy if m in sys.modules]
t0 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.perf_counter() - t0
print(json.dumps({"before": before, "after": [m for m in heavy if m in sys.modules],
                  "seconds": elapsed, "errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "dags": sorted(bag.dag_ids)}))
"""


def test_dagbag_imports_every_example_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == DAG_IDS
    for dag_id in DAG_IDS:
        dag = bag.dags[dag_id]
        # A mapped task is a MappedOperator of the operator's class.
        tasks = [t for t in dag.tasks if getattr(t, "operator_class", type(t)) is PolyvViewerFieldSyncOperator]
        assert len(tasks) == (2 if dag_id == "polyv_viewer_sync_reviewed" else 1)  # its plan and apply
        assert {"full_refresh", "dry_run"} <= set(dag.params)
        assert "polyv" in dag.tags


def test_the_parquet_dag_names_no_state_table_it_would_not_use():
    # Its state is the folder of the Variable polyv_state_dir or nothing; before, the rendered
    # templates showed the operator's default state table, which a Parquet run never opens.
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS)).dags["polyv_viewer_sync_parquet"]
    (task,) = [t for t in dag.tasks if isinstance(t, PolyvViewerFieldSyncOperator)]
    assert task.state_table == ""  # "" keeps no state table; None would mean the default one
    assert "state_dir" in task.template_fields


def test_partitioned_dag_maps_the_operator_over_the_partitions():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS)).dags["polyv_viewer_sync_partitioned"]
    assert dag.params["partitions"] == 4
    warehouse = DagBag(dag_folder=str(DAGS)).dags["polyv_viewer_sync_warehouse"]
    assert set(warehouse.params) | {"partitions"} == set(dag.params)
    (mapped,) = [t for t in dag.tasks if type(t).__name__ == "MappedOperator"]
    assert mapped.partial_kwargs["partitions"] == "{{ params.partitions }}"
    assert set(mapped.expand_input.value) == {"partition"}
    assert [t.task_id for t in mapped.upstream_list] == ["partition_numbers"]


def test_dag_params_and_schedules():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    parquet = bag.dags["polyv_viewer_sync_parquet"]
    assert parquet.params["input_path"] == str(SAMPLE)
    assert {"input_path", "report_path"} <= set(parquet.params)
    warehouse = bag.dags["polyv_viewer_sync_warehouse"]
    assert warehouse.params["report_table"] == "polyv_sync_report"
    assert {"source_sql", "source_table"} <= set(warehouse.params)
    assert warehouse.tasks[0].source_conn_id == "polyv_warehouse"
    # A real data interval (not a point in time) so the interval query selects a day.
    assert type(warehouse.timetable).__name__ == "CronDataIntervalTimetable"
    assert "data_interval_start" in warehouse.tasks[0].source_sql
    backfill = bag.dags["polyv_viewer_backfill"]
    assert type(backfill.timetable).__name__ == "NullTimetable"  # manual trigger only
    assert backfill.params["full_refresh"] is True
    assert {"source_sql", "source_table"} <= set(backfill.params)


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_dag_file_parses_fast_without_heavy_imports(dag_id):
    probe = _PARSE_PROBE % (HEAVY,)
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(DAGS / f"{dag_id}.py")],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["dags"] == [dag_id]
    assert result["before"] == [], "Airflow itself imported a heavy module: the check is void"
    assert result["after"] == [], f"parsing {dag_id} imported {result['after']}"
    assert result["seconds"] < 1.0, f"parsing {dag_id} took {result['seconds']:.2f}s"


def test_operator_module_imports_nothing_heavy():
    code = (
        "import sys; import polyv_connector.airflow.operators, polyv_connector.airflow.hooks; "
        f"print([m for m in {HEAVY!r} + ('requests', 'numpy') if m in sys.modules])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_trigger_form_defaults_validate(dag_id):
    """Every example DAG triggers from the UI form as shipped: its defaults validate, and no param
    the form would treat as required (an empty "string" Param keeps the Trigger button disabled)."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS)).dags[dag_id]
    resolved = dag.params.validate()  # raises ParamValidationError on a default that does not fit
    for name in dag.params:
        param = dag.params.get_param(name)
        types = param.schema.get("type")
        optional = isinstance(types, list) and "null" in types
        assert optional or param.value not in ("", None), f"{dag_id}: param {name} would be required in the form"
    if "source_sql" in dag.params:
        schema = dag.params.get_param("source_sql").schema
        assert schema.get("format") == "multiline" and resolved["source_sql"] is None
        # With source_sql empty, the default query reads the default table.
        assert dag.params["source_table"] == "polyv_viewer_attributes"
    if dag_id == "polyv_viewer_sync_parquet":
        assert "expectation_suite_path" in dag.params and resolved["expectation_suite_path"] is None


def test_the_reviewed_dag_plans_then_applies_after_an_approval_or_at_once():
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    bag = DagBag(dag_folder=str(DAGS))
    dag = bag.dags["polyv_viewer_sync_reviewed"]
    parquet = bag.dags["polyv_viewer_sync_parquet"]
    # The Parquet DAG's params, plus the limits.
    assert set(parquet.params) <= set(dag.params)
    assert {"max_changed_fraction", "max_source_shrink"} <= set(dag.params)
    plan, apply, approve = (dag.get_task(t) for t in ("plan", "apply", "approve"))
    assert plan.mode == "plan" and apply.mode == "apply" and plan.plan_path == apply.plan_path
    assert isinstance(approve, ApprovalOperator)
    assert dag.get_task("within_limits").downstream_task_ids == {"approve", "apply"}
    assert approve.downstream_task_ids == {"apply"}
    assert apply.trigger_rule == "none_failed_min_one_success"
    assert apply.input_path is None  # the apply sends the plan's items, never the input's
    assert plan.report_dir == apply.report_dir and plan.state_dir == apply.state_dir
