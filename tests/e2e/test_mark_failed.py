"""A user marks a running sync task failed, the way the UI does it, through a real scheduler.

The UI's "mark failed" is ``PATCH /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}`` with
``{"new_state": "failed"}``. The task's supervisor learns it at its next heartbeat (the server
answers 409) and stops the task process: SIGTERM (whose handler calls ``on_kill()``), then
SIGKILL 5 s later. ``on_kill()`` stops sending; requests in flight get a few seconds, the other
items become ``in_doubt`` or ``not_attempted``, then the report is written. Whether that beats
the SIGKILL depends on the machine: both are accepted, and the assertion messages say which
happened. What must hold either way: the task stops long before its send would have ended,
and the state never vouches for a value POLYV may not hold: a clean run afterwards makes
POLYV equal the source exactly.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from polyv_connector.simulator import FaultConfig

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.e2e]

DAG_ID = "polyv_viewer_sync_parquet"
TASK_ID = "sync_viewer_fields"
# With the connection's defaults (1000 items per request, 8 in flight) and 2 s per request:
# 96 requests in 12 waves, about 26 s of sending (preflight included). A request in flight when
# on_kill() comes has at most 2 s left, so the report can be written before the SIGKILL.
ITEMS = 96_000
LATENCY_S = 2.0
SEND_S = (ITEMS / 1000 / 8) * LATENCY_S + LATENCY_S
# The supervisor heartbeats every 5 s (then SIGTERM), and sends SIGKILL 5 s after SIGTERM.
STOP_WITHIN_S = 15
VARIABLES = ("polyv_input_prefixes", "polyv_report_dir", "polyv_state_dir")
ON_KILL_LINE = "on_kill: stopping the POLYV sync"


def _source(path: Path) -> dict[tuple[str, str], str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = ("PAY_STATUS", "VIP_LEVEL")
    rows = {(f"viewer-{i // 2:06d}", fields[i % 2]): f"value-{i}" for i in range(ITEMS)}
    pq.write_table(
        pa.table(
            {
                "viewerId": [v for v, _ in rows],
                "customFieldId": [f for _, f in rows],
                "customFieldValue": list(rows.values()),
            }
        ),
        path,
    )
    return rows


def _stored(sim: Any) -> dict[tuple[str, str], str]:
    from tests.e2e.conftest import APP_ID

    return {(v, f): value for (app, v, f), value in sim.values.items() if app == APP_ID}


def _api(stack: Any, method: str, path: str, body: dict[str, Any] | None = None, token: str = "") -> Any:
    """One JSON request to the stack's api-server (bounded), its decoded answer."""
    request = urllib.request.Request(
        f"{stack.api_url}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"null")


def _login(stack: Any) -> str:
    """A user's token: the stack runs the SimpleAuthManager, whose ``admin`` password it generated
    into its AIRFLOW_HOME (what a user would read from the api-server's first start)."""
    passwords = json.loads((stack.home / "simple_auth_manager_passwords.json.generated").read_text())
    token: str = _api(stack, "POST", "/auth/token", {"username": "admin", "password": passwords["admin"]})[
        "access_token"
    ]
    return token


def _trigger(stack: Any, run_id: str, conf: dict[str, Any]) -> None:
    stack.airflow("dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps(conf), timeout=60)


def _ti(stack: Any, run_id: str) -> dict[str, Any] | None:
    return next((ti for ti in stack.task_instances(DAG_ID) if ti["run_id"] == run_id), None)


def _run_state(stack: Any, run_id: str) -> str | None:
    return next((r["state"] for r in stack.runs(DAG_ID) if r["run_id"] == run_id), None)


@pytest.mark.timeout(420)  # the stack's start (about 40-60 s) counts too; every wait inside is bounded
def test_mark_failed_stops_the_send_and_a_clean_run_makes_polyv_equal_the_source(scheduler_stack, sim, tmp_path):
    import pyarrow.parquet as pq

    stack = scheduler_stack
    source = _source(tmp_path / "viewers.parquet")
    (tmp_path / "state").mkdir()
    variables = {
        "polyv_input_prefixes": json.dumps([str(tmp_path)]),
        "polyv_report_dir": str(tmp_path),
        "polyv_state_dir": str(tmp_path / "state"),  # the state both runs share
    }
    stack.wait_for_dag(DAG_ID)
    token = _login(stack)
    try:
        # Through the REST API, as the UI does (each `airflow` CLI call costs 6-8 s of imports).
        for name, value in variables.items():
            _api(stack, "POST", "/api/v2/variables", {"key": name, "value": value}, token)
        _api(stack, "PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False}, token)

        # ---- the run a user marks failed while it sends ------------------------------------------
        killed = "mark-failed-1"
        report = tmp_path / "killed.parquet"
        sim.set_faults(FaultConfig(latency_s=LATENCY_S))
        try:
            _trigger(stack, killed, {"input_path": str(tmp_path / "viewers.parquet"), "report_path": report.name})
            stack.wait_until(
                "the task to be running and POLYV to hold some items",
                lambda: (
                    (ti := _ti(stack, killed)) is not None and ti["state"] == "running" and len(_stored(sim)) >= 8000
                ),
                timeout=120,
            )
            before = len(_stored(sim))
            assert before < ITEMS // 2, f"the send is already half done ({before} items): not slow enough"
            marked_at = time.monotonic()
            answer = _api(
                stack,
                "PATCH",
                f"/api/v2/dags/{DAG_ID}/dagRuns/{killed}/taskInstances/{TASK_ID}",
                {"new_state": "failed"},
                token,
            )
            # The answer lists the task instances it changed.
            assert [t["state"] for t in answer["task_instances"]] == ["failed"], answer

            # The supervisor notices at its next heartbeat (5 s) and stops the process: on_kill, then
            # SIGKILL 5 s later at the latest. Done when POLYV stops receiving items.
            last = {"count": -1, "since": time.monotonic()}

            def quiet() -> bool:
                count = len(_stored(sim))
                if count != last["count"]:
                    last.update(count=count, since=time.monotonic())
                return time.monotonic() - last["since"] >= 2 * LATENCY_S + 1

            stack.wait_until("POLYV to stop receiving items", quiet, timeout=45)
            stopped_after = last["since"] - marked_at
        finally:
            sim.set_faults(FaultConfig())
        stack.wait_until("the killed run to be failed", lambda: _run_state(stack, killed) == "failed", timeout=60)
        ti = _ti(stack, killed)
        assert ti is not None and ti["state"] == "failed", ti
        partial = _stored(sim)
        assert stopped_after < STOP_WITHIN_S, f"sending went on {stopped_after:.1f} s after mark failed"
        assert len(partial) < ITEMS * 0.6, f"{len(partial)} of {ITEMS} items were sent: the task was stopped late"
        assert all(source[k] == v for k, v in partial.items())

        log = stack.task_log_text(DAG_ID, killed)
        on_kill = ON_KILL_LINE in log
        wrote_report = report.exists()
        outcome = (
            "on_kill stopped the send, then the report was written"
            if on_kill and wrote_report
            else "on_kill started, then SIGKILL came before the report"
            if on_kill
            else "SIGKILL came before on_kill"
        )
        print(f"mark failed: {outcome}; POLYV stopped receiving {stopped_after:.1f} s after it, {len(partial)} items")
        assert "Server indicated the task shouldn't be running anymore" in log or on_kill, (outcome, log[-4000:])
        if wrote_report:
            table = pq.read_table(report)
            statuses = table.column("status").to_pylist()
            assert len(statuses) == ITEMS, outcome
            keys = list(
                zip(table.column("viewerId").to_pylist(), table.column("customFieldId").to_pylist(), strict=True)
            )
            assert set(keys) == set(source), outcome
            counts = {s: statuses.count(s) for s in set(statuses)}
            assert set(counts) <= {"sent", "in_doubt", "not_attempted"}, (outcome, counts)
            # Everything reported sent is in POLYV; only in_doubt items may be there without being "sent".
            assert counts.get("sent", 0) <= len(partial) <= counts.get("sent", 0) + counts.get("in_doubt", 0)

        # ---- a clean run on the same state: POLYV ends equal to the source -----------------------
        clean = "mark-failed-2"
        _trigger(stack, clean, {"input_path": str(tmp_path / "viewers.parquet"), "report_path": "clean.parquet"})
        stack.wait_until(
            "the clean run to finish",
            lambda: _run_state(stack, clean) in ("success", "failed"),
            timeout=120,
            interval=1,
        )
        assert _run_state(stack, clean) == "success", (outcome, stack.task_log_text(DAG_ID, clean)[-4000:])
        assert _stored(sim) == source, outcome
        summary = stack.xcom(DAG_ID, clean, TASK_ID)
        # The clean run skipped only what the state knew POLYV holds, and sent the rest.
        assert summary["ok"] is True and summary["counts"]["sent"] >= ITEMS - len(partial), (outcome, summary)
    finally:
        # The stack is shared by the session, and the warehouse DAGs read polyv_state_dir too.
        for name in VARIABLES:
            with contextlib.suppress(OSError):
                _api(stack, "DELETE", f"/api/v2/variables/{name}", token=token)
        with contextlib.suppress(OSError):
            _api(stack, "PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": True}, token)
    left = {v["key"] for v in _api(stack, "GET", "/api/v2/variables?limit=100", token=token)["variables"]}
    assert not left & set(VARIABLES), f"Variables left behind for the session's other tests: {left}"
