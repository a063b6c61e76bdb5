"""run.py: where a run's own files go when the settings do not say, and where the diff runs,
decided once at the edge for the CLI and the operator alike."""

from __future__ import annotations

import os

import pytest

from polyv_connector import runspec
from polyv_connector.errors import ConfigError
from polyv_connector.run import Front, choose_diff, default_report_fallback_dir, run_page_path, validation_dir

FRONT = Front(home="/srv/airflow", dag_id="sync viewers", run_id="manual__2026-12-07T10:00:00+00:00", task_id="t")


def _spec(**given: object) -> runspec.RunSpec:
    return runspec.resolve(given, front="operator", env={})


def test_the_report_path_places_the_run_page_and_the_validation_results() -> None:
    spec = _spec(report_path="/data/out/run.parquet")
    assert run_page_path(spec, FRONT) == "/data/out/run.html"
    assert validation_dir(spec, FRONT) == "/data/out/run.parquet"


def test_without_a_report_file_they_go_under_the_front_ends_home_with_safe_names() -> None:
    spec = _spec(report_table="polyv_report")
    run = "manual__2026-12-07T10_00_00_00_00"
    assert validation_dir(spec, FRONT) == f"/srv/airflow/polyv_validation/sync_viewers/{run}.parquet"
    assert run_page_path(spec, FRONT) == f"/srv/airflow/polyv_reports/sync_viewers/{run}__t.html"
    mapped = Front(home="/h", dag_id="d", run_id="r", task_id="t", map_index=3)
    assert run_page_path(spec, mapped) == "/h/polyv_reports/d/r__t_3.html"
    assert validation_dir(_spec(report_table="x", validation_dir="/v"), FRONT) == "/v"


def test_the_diff_is_chosen_once_and_refused_where_it_cannot_run() -> None:
    assert choose_diff(_spec(), FRONT) == "local"
    assert choose_diff(_spec(diff_in_warehouse=True, full_refresh=True), FRONT) == "local"
    same = Front(same_database=lambda a, b: a == b)
    spec = _spec(diff_in_warehouse=True, source_conn_id="wh", source_table="t", state_table="polyv_state")
    assert choose_diff(spec, same) == "warehouse"
    with pytest.raises(ConfigError, match="diff_in_warehouse"):
        choose_diff(spec, Front())  # a front end that reaches no database (the CLI)
    with pytest.raises(ConfigError, match="long form only"):
        choose_diff(_spec(diff_in_warehouse=True, source_conn_id="wh", source_table="t", fields={"a": "F"}), same)


def test_the_report_fallback_folder_is_the_front_ends_choice(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    assert default_report_fallback_dir() == tmp_path / "polyv_reports"
    monkeypatch.delenv("AIRFLOW_HOME")
    assert str(default_report_fallback_dir()).endswith(os.sep + "polyv_reports")


def test_the_engine_does_not_read_airflows_home() -> None:
    from pathlib import Path

    import polyv_connector.engine as engine

    for path in Path(engine.__file__).parent.glob("*.py"):
        assert "AIRFLOW_HOME" not in path.read_text(), path.name
