"""The demos' DAG confs under the rules a trigger meets, without a scheduler or metadata DB.

``make demo`` passes scripts/demo_airflow_conf.json to ``airflow dags test``: here that conf is
validated against the DAG's params as the scheduler and the API server see them (the serialized
DAG's ``params.deep_merge(conf).validate()``), the operator's templates are rendered with the
report folder Variable the demo sets, and the result goes through the operator's own resolution
(its hook) and path confinement. A changed trigger-time rule breaks this test, not only the demo.
``make demo-distributed``'s confs (scripts/demo_distributed.py) meet their DAGs' params too.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from scripts import demo_support
from tests.stack import DAGS, use_airflow_env

use_airflow_env()  # before the first import of airflow: its configuration is read once
pytest.importorskip("airflow.sdk")  # `make check-floors` installs no Airflow


def _dag_module(dag_id: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_demo_conf_{dag_id}", DAGS / f"{dag_id}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _serialized(dag: Any) -> Any:
    """The DAG as the scheduler and the API server hold it (where a trigger's conf is checked)."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


def _validated(dag: Any, conf: dict[str, Any]) -> dict[str, Any]:
    # An unknown key would be ignored by Airflow, silently: a typo in the demo must fail here.
    assert set(conf) <= set(dag.params), f"not params of {dag.dag_id}: {sorted(set(conf) - set(dag.params))}"
    params: dict[str, Any] = _serialized(dag).params.deep_merge(conf).validate()
    return params


@pytest.fixture
def parquet_dag() -> Any:
    # A fresh DAG for each test: rendering templates replaces them on the task itself.
    return _dag_module(demo_support.DAG_ID).dag


def _rendered_task(dag: Any, conf: dict[str, Any], run_id: str) -> Any:
    """The demo's task with its templates rendered as in a run of ``conf``."""
    from airflow.sdk.execution_time.context import VariableAccessor

    task = dag.get_task(demo_support.TASK_ID)
    context = {
        "dag": dag,
        "task": task,
        "run_id": run_id,
        "params": _validated(dag, conf),
        "var": {"value": VariableAccessor(deserialize_json=False), "json": VariableAccessor(deserialize_json=True)},
    }
    task.render_template_fields(context)
    return task, context


def _demo_environment(monkeypatch: pytest.MonkeyPatch, report_folder: Path) -> None:
    """What scripts/demo_airflow.sh exports: the report folder Variable and the connection."""
    monkeypatch.setenv("AIRFLOW_VAR_POLYV_REPORT_DIR", str(report_folder))
    conn = {"conn_type": "polyv", "login": "demo-app", "password": "demo-secret", "host": "http://127.0.0.1:8750"}
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_DEFAULT", json.dumps(conn))


def _trigger_checked(task: Any, context: dict[str, Any]) -> Any:
    """The operator's own resolution and trigger-time checks, in execute()'s order, up to the
    point where it would read the input."""
    from polyv_connector.airflow.hooks import PolyvHook
    from polyv_connector.paths import check_output_file
    from polyv_connector.run import check_outputs
    from polyv_connector.trigger_paths import confine

    spec = confine(PolyvHook(task.polyv_conn_id).resolve_run(task._given()))
    check_outputs(spec, task._front(context, spec))
    if spec.report_path:
        check_output_file(spec.report_path, "report_path", input_path=spec.input_path)
    return spec


def test_the_demo_conf_is_one_json_object_of_the_dags_params(parquet_dag: Any) -> None:
    conf = demo_support.load_conf()
    assert set(conf) <= set(parquet_dag.params)
    # The demo may not pick a report *path*: the report folder is the DAG author's choice.
    assert not str(conf.get("report_path") or "").startswith(("/", "~")), conf


def test_the_demo_conf_passes_the_trigger_time_rules_with_the_report_in_the_report_folder(
    parquet_dag: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from polyv_connector.runpage import page_path_for

    out = tmp_path / "out"  # the demo's <repo>/out
    _demo_environment(monkeypatch, out)
    task, context = _rendered_task(parquet_dag, demo_support.load_conf(), "manual__2026-12-07T09:00:00.123456+00:00")
    assert task.report_dir == str(out)
    spec = _trigger_checked(task, context)
    assert spec.report_path is not None
    report = Path(spec.report_path)
    assert out in report.parents, report
    assert out in Path(page_path_for(spec.report_path)).parents


def test_two_demo_runs_get_two_reports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``make demo`` twice in a row: the second run must not need (or overwrite) the first's report."""
    _demo_environment(monkeypatch, tmp_path / "out")
    paths = set()
    for run_id in ("manual__2026-12-07T09:00:00+00:00", "manual__2026-12-07T09:01:00+00:00"):
        dag = _dag_module(demo_support.DAG_ID).dag
        task, context = _rendered_task(dag, demo_support.load_conf(), run_id)
        paths.add(_trigger_checked(task, context).report_path)
    assert len(paths) == 2


def test_an_absolute_report_path_in_the_conf_is_refused_by_these_checks(
    parquet_dag: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The checks above are the ones that refused the demo's old conf (not a weaker copy)."""
    from polyv_connector.errors import ConfigError

    _demo_environment(monkeypatch, tmp_path / "out")
    task, context = _rendered_task(parquet_dag, {"report_path": str(tmp_path / "r.parquet")}, "manual__x")
    with pytest.raises(ConfigError, match="report_path: must be a name under the report folder"):
        _trigger_checked(task, context)


def test_the_distributed_demos_confs_pass_their_dags_params() -> None:
    from polyv_connector.airflow.accounts import account_kwargs
    from polyv_connector.warehouse.readonly import check_read_query
    from scripts.demo_distributed import ACCOUNTS_DAG, PARTITIONED_DAG, DemoConfig, demo_confs

    confs = demo_confs(DemoConfig(with_partitioned=True))
    assert set(confs) == {ACCOUNTS_DAG, PARTITIONED_DAG}
    for dag_id, conf in confs.items():
        params = _validated(_dag_module(dag_id).dag, conf)
        if dag_id == ACCOUNTS_DAG:
            assert len(account_kwargs(params["accounts"])) == 3  # the DAG's own check of the list
        else:
            check_read_query(params["source_sql"], "postgres")  # the operator's read-only check


@pytest.mark.parametrize("variable", ["AIRFLOW_VAR_POLYV_REPORT_DIR", "AIRFLOW_CONN_POLYV_DEFAULT"])
def test_the_demo_sets_what_this_test_assumes(variable: str) -> None:
    script = (Path(__file__).resolve().parents[1] / "scripts" / "demo_airflow.sh").read_text()
    assert f"export {variable}" in script
    assert "demo_airflow_conf.json" in script
    assert os.path.basename(demo_support.CONF_PATH) == "demo_airflow_conf.json"
