"""Every sync task warns when the executor spreads tasks over hosts and the budget is per host
(the decision itself: tests/budget/test_hosts.py); in process, against the simulator."""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.airflow.support import SAMPLE

pytestmark = pytest.mark.airflow


class _TI:
    def xcom_push(self, key: str, value: Any) -> None:
        pass


def _run(tmp_path, capsys) -> str:
    """The task's log lines (Airflow's structlog writes them to stdout outside a task runner)."""
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    capsys.readouterr()
    report = tmp_path / "report.parquet"
    summary = PolyvViewerFieldSyncOperator(
        task_id="sync", input_path=str(SAMPLE), report_path=str(report), full_refresh=True
    ).execute({"ti": _TI(), "run_id": "manual__budget"})  # type: ignore[arg-type]
    captured = capsys.readouterr()
    assert summary["ok"] is True
    # The DAG run is recorded in every report row.
    assert set(pq.read_table(report).column("airflowRunId").to_pylist()) == {"manual__budget"}
    return captured.out + captured.err


@pytest.mark.parametrize(("executor", "warns"), [("CeleryExecutor", True), ("LocalExecutor", False)])
def test_a_machine_wide_budget_warns_only_under_a_spreading_executor(
    sim, polyv_env, tmp_path, capsys, monkeypatch, executor: str, warns: bool
):
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
    monkeypatch.delenv("POLYV_BUDGET_URL", raising=False)
    monkeypatch.setenv("POLYV_RUNTIME_DIR", str(tmp_path / "runtime"))
    text = _run(tmp_path, capsys)
    assert ("POLYV budget: the request budget is machine-wide (POLYV_BUDGET_URL unset)" in text) is warns
    if warns:
        assert "CeleryExecutor" in text and "POLYV_BUDGET_URL=redis://" in text


def test_a_redis_budget_does_not_warn(sim, polyv_env, tmp_path, capsys, monkeypatch, redis_available):
    from tests.services import redis_url

    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("POLYV_BUDGET_URL", redis_url(14))
    # Joined at run time: a logging error's traceback quotes source lines, never this text.
    warning = "POLYV budget: " + "the request budget is"
    assert warning not in _run(tmp_path, capsys)
