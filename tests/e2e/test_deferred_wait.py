"""A run that waits for another run's sync state waits in the triggerer, not in a worker slot.

Through a real scheduler with a triggerer (``scheduler_stack``): while this test holds the
account's folder state (the lock another run would hold), a triggered run of the Parquet DAG
(``deferrable=True``) is ``deferred``, not ``running``, its log says why; once the state is
released it resumes, sends every item once and succeeds.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_mark_failed import VARIABLES, _api, _login, _run_state, _ti, _trigger

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.e2e]

DAG_ID = "polyv_viewer_sync_parquet"
ITEMS = 2_000


def _source(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table(
            {
                "viewerId": [f"viewer-{i:05d}" for i in range(ITEMS)],
                "customFieldId": ["PAY_STATUS"] * ITEMS,
                "customFieldValue": [f"value-{i}" for i in range(ITEMS)],
            }
        ),
        path,
    )


@pytest.mark.timeout(420)
def test_a_run_waiting_for_the_state_is_deferred_then_completes(scheduler_stack: Any, sim: Any, tmp_path: Path):
    from polyv_connector.state.folder import SyncState
    from tests.e2e.conftest import APP_ID

    stack = scheduler_stack
    _source(tmp_path / "viewers.parquet")
    (tmp_path / "state").mkdir()
    variables = {
        "polyv_input_prefixes": json.dumps([str(tmp_path)]),
        "polyv_report_dir": str(tmp_path),
        "polyv_state_dir": str(tmp_path / "state"),
    }
    stack.wait_for_dag(DAG_ID)
    token = _login(stack)
    run_id = "deferred-wait-1"
    try:
        for name, value in variables.items():
            _api(stack, "POST", "/api/v2/variables", {"key": name, "value": value}, token)
        _api(stack, "PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False}, token)
        holder = SyncState(str(tmp_path / "state"), APP_ID, implicit_lock=False)
        with holder.open("the-other-run"):
            _trigger(stack, run_id, {"input_path": str(tmp_path / "viewers.parquet"), "report_path": "r.parquet"})
            stack.wait_until(
                "the waiting run to be deferred",
                lambda: (ti := _ti(stack, run_id)) is not None and ti["state"] == "deferred",
                timeout=180,
                interval=1,
            )
            assert sim.stats.save_requests == 0, "a deferred run sent something"
            log = stack.task_log_text(DAG_ID, run_id)
            assert "another run holds the sync state" in log and "deferring to the triggerer" in log, log[-3000:]
        stack.wait_until(
            "the resumed run to finish",
            lambda: _run_state(stack, run_id) in ("success", "failed"),
            timeout=180,
            interval=1,
        )
        assert _run_state(stack, run_id) == "success", stack.task_log_text(DAG_ID, run_id)[-4000:]
        summary = stack.xcom(DAG_ID, run_id, "sync_viewer_fields")
        assert summary["counts"]["sent"] == ITEMS
        # Sent once: each item reached POLYV in exactly one request.
        assert sum(len(b) for b in sim.received_batches) == ITEMS
    finally:
        for name in VARIABLES:
            with contextlib.suppress(OSError):
                _api(stack, "DELETE", f"/api/v2/variables/{name}", token=token)
        with contextlib.suppress(OSError):
            _api(stack, "PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": True}, token)
