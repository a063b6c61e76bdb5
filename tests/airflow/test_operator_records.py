"""The operator's record of its runs (issue 21): ``report_rows``, the runs table written at the
start and completed at the end, retention at the end of a run, the report's place as its asset,
and the deferred wait for a held sync state (in process; the triggerer: tests/e2e)."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.airflow.support import APP_ID, PLANTED_SECRET, pg_exec, pg_rows

pytestmark = pytest.mark.airflow


class FakeTI:
    map_index = -1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def _context(run_id: str = "manual__test") -> dict[str, Any]:
    return {"ti": FakeTI(), "run_id": run_id}


def _op(**kwargs: Any):
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    return PolyvViewerFieldSyncOperator(task_id="sync", **kwargs)


def _table_run(pg_schema: str, **kwargs: Any) -> dict[str, Any]:
    summary: dict[str, Any] = _op(
        source_conn_id="polyv_warehouse",
        source_table=f"{pg_schema}.attrs",
        viewer_id_column="uid",
        field_id_column="field",
        value_column="val",
        report_table=f"{pg_schema}.polyv_sync_report",
        state_table=f"{pg_schema}.polyv_sync_state",
        **kwargs,
    ).execute(_context())
    return summary


def _seed(pg_schema: str, n: int = 40) -> None:
    pg_exec(f"CREATE TABLE {pg_schema}.attrs (uid text, field text, val text)")
    pg_exec(f"INSERT INTO {pg_schema}.attrs SELECT 'u' || i, 'VIP_LEVEL', 'L' || i FROM generate_series(1, {n}) i")


def test_changes_only_report_and_the_runs_table_row_of_each_run(sim, polyv_env, pg_schema, pg_warehouse_env):
    _seed(pg_schema)
    first = _table_run(pg_schema, report_rows="changes")
    assert first["counts"]["sent"] == 40 and first["reportRowsWritten"] == 40
    pg_exec(f"UPDATE {pg_schema}.attrs SET val = 'new' WHERE uid IN ('u1', 'u2')")
    second = _table_run(pg_schema, report_rows="changes")
    assert second["counts"]["unchanged"] == 38 and second["counts"]["sent"] == 2
    assert second["reportRows"] == "changes" and second["reportRowsWritten"] == 2
    assert second["reportRowsDropped"] == {"unchanged": 38}
    report = pg_rows(f'SELECT "runId", status, count(*) FROM {pg_schema}.polyv_sync_report GROUP BY 1, 2 ORDER BY 1')
    assert report == [(first["runId"], "sent", 40), (second["runId"], "sent", 2)]
    runs = pg_rows(
        f'SELECT "runId", "dagId", "taskId", "appId", "outcome", "exitCode", "reportRows", "reportRowsWritten",'
        f' "reportRowsDropped", "countsByStatus", "finishedAt" IS NOT NULL, "airflowRunId"'
        f' FROM {pg_schema}.polyv_sync_report_runs ORDER BY "startedAt"'
    )
    assert [r[0] for r in runs] == [first["runId"], second["runId"]]
    run = runs[1]
    assert run[1:8] == ("dag", "sync", APP_ID, "ok", 0, "changes", 2)
    assert json.loads(run[8]) == {"unchanged": 38}
    assert json.loads(run[9])["unchanged"] == 38
    assert run[10] is True and run[11] == "manual__test"
    assert PLANTED_SECRET not in json.dumps([list(map(str, r)) for r in runs])


def test_the_default_keeps_every_row(sim, polyv_env, pg_schema, pg_warehouse_env):
    _seed(pg_schema, 10)
    _table_run(pg_schema)
    again = _table_run(pg_schema)
    assert again["reportRows"] == "all" and again["reportRowsWritten"] == 10 and again["reportRowsDropped"] == {}
    assert pg_rows(f"SELECT count(*) FROM {pg_schema}.polyv_sync_report") == [(20,)]


def test_a_runs_table_named_by_the_setting_and_one_too_long_is_a_configuration_error(
    sim, polyv_env, pg_schema, pg_warehouse_env
):
    from airflow.sdk.exceptions import AirflowFailException

    _seed(pg_schema, 3)
    summary = _table_run(pg_schema, runs_table=f"{pg_schema}.my_runs")
    assert pg_rows(f'SELECT "runId" FROM {pg_schema}.my_runs') == [(summary["runId"],)]
    with pytest.raises(AirflowFailException, match="runs_table"):
        _table_run(pg_schema, runs_table=f"{pg_schema}.{'r' * 70}")
    assert sim.stats.save_requests == 1  # the refused run sent nothing


def test_retention_at_the_end_of_a_run_deletes_old_runs_rows_and_files(
    sim, polyv_env, pg_schema, pg_warehouse_env, tmp_path
):
    _seed(pg_schema, 5)
    old = _table_run(pg_schema)
    # The first run started 40 days ago; its report rows and its record are old.
    pg_exec(
        f'UPDATE {pg_schema}.polyv_sync_report_runs SET "startedAt" = "startedAt" - interval \'40 days\''
        f" WHERE \"runId\" = '{old['runId']}'"
    )
    folder = tmp_path / "reports" / "dag"
    folder.mkdir(parents=True)
    stale, fresh = folder / "old.parquet", folder / "new.html"
    stale.write_text("x")
    fresh.write_text("y")
    forty_days_ago = time.time() - 40 * 86400
    os.utime(stale, (forty_days_ago, forty_days_ago))
    new = _table_run(
        pg_schema, report_retention_days=30, runs_retention_days="35", report_dir=str(tmp_path / "reports")
    )
    assert pg_rows(f'SELECT DISTINCT "runId" FROM {pg_schema}.polyv_sync_report') == [(new["runId"],)]
    assert pg_rows(f'SELECT "runId" FROM {pg_schema}.polyv_sync_report_runs') == [(new["runId"],)]
    assert not stale.exists() and fresh.exists()


def test_a_run_killed_after_its_start_shows_as_started_never_finished(sim, polyv_env, pg_schema, pg_warehouse_env):
    from airflow.sdk.exceptions import AirflowException

    from polyv_connector.engine import sync as engine_sync

    _seed(pg_schema, 3)
    original = engine_sync._locked_run

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the worker died")

    engine_sync._locked_run = killed  # type: ignore[assignment]
    try:
        with pytest.raises((RuntimeError, AirflowException)):
            _table_run(pg_schema)
    finally:
        engine_sync._locked_run = original  # type: ignore[assignment]
    assert pg_rows(f'SELECT "finishedAt", "outcome" FROM {pg_schema}.polyv_sync_report_runs') == [(None, None)]


def test_bad_retention_and_report_rows_are_configuration_errors(polyv_env, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"viewerId": ["v"], "customFieldId": ["F"], "customFieldValue": ["x"]}), src)
    for kwargs, name in (
        ({"report_rows": "some"}, "report_rows"),
        ({"report_retention_days": "0"}, "report_retention_days"),
        ({"runs_retention_days": "a week"}, "runs_retention_days"),
        ({"deferrable": "maybe"}, "deferrable"),
    ):
        with pytest.raises(AirflowFailException, match=name):
            _op(input_path=str(src), report_path=str(tmp_path / "r.parquet"), **kwargs).execute(_context())


# ---- the report's place as its asset --------------------------------------------------------------
def test_outlets_are_the_report_places_not_a_file_per_run():
    from airflow.sdk import DAG, Asset

    from polyv_connector.airflow.assets import report_place_assets

    with DAG("d", schedule=None):
        op = _op(input_path="x", report_dir="/data/reports", report_path="{{ run_id }}.parquet")
    assert [a for a in op.outlets if isinstance(a, Asset)] == report_place_assets("d", report_dir="/data/reports")
    assert [a.uri for a in op.outlets if isinstance(a, Asset)] == ["file:///data/reports/d"]


def test_two_runs_emit_events_on_one_asset(sim, polyv_env, tmp_path):
    from airflow.sdk import DAG, Asset, AssetAlias

    src = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({"viewerId": ["v1", "v2"], "customFieldId": ["PAY_STATUS"] * 2, "customFieldValue": ["a", "b"]}), src
    )

    class Events(dict):  # what Airflow's outlet_events gives per asset or alias
        def __missing__(self, key: Any) -> Any:
            accessor = self[key] = type("Acc", (), {"extra": {}, "added": []})()
            accessor.add = lambda asset, extra: accessor.added.append((asset, extra))
            return accessor

    with DAG("d", schedule=None):
        op = _op(input_path=str(src), report_dir=str(tmp_path / "reports"), report_path="{{ run_id }}.parquet")
    seen: list[tuple[str, dict[str, Any]]] = []
    for run in ("r1", "r2"):
        op.report_path = f"{run}.parquet"  # as rendered
        events = Events()
        context = {**_context(run), "outlet_events": events}
        summary = op.execute(context)
        for outlet in op.outlets:
            if isinstance(outlet, Asset):
                seen.append((outlet.uri, events[outlet].extra))
            elif isinstance(outlet, AssetAlias):
                files = [a.uri for a, _ in events[outlet].added if a.uri.endswith(".parquet")]
                assert files == []  # the alias names the folder, never the run's file
        assert summary["ok"]
    assert {uri for uri, _ in seen} == {f"file://{tmp_path}/reports/d"}
    assert [extra["reportFile"] for _, extra in seen] == [
        f"file://{tmp_path}/reports/d/r1.parquet",
        f"file://{tmp_path}/reports/d/r2.parquet",
    ]
    assert seen[0][1]["runId"] != seen[1][1]["runId"]


# ---- waits that free the worker --------------------------------------------------------------------
def _delay(trigger: Any) -> float:
    """Seconds from now until a time trigger fires."""
    return float((trigger.moment - dt.datetime.now(dt.UTC)).total_seconds())


def test_a_held_state_defers_with_backoff_and_the_resumed_run_sends_once(sim, polyv_env, tmp_path):
    from airflow.sdk.exceptions import TaskDeferred

    from polyv_connector.airflow.deferral import FIRST_DELAY_S, RESUME_METHOD
    from polyv_connector.state.folder import SyncState

    src = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({"viewerId": ["v1", "v2"], "customFieldId": ["PAY_STATUS"] * 2, "customFieldValue": ["a", "b"]}), src
    )
    state_dir = tmp_path / "state"
    op = _op(
        input_path=str(src),
        report_path=str(tmp_path / "r.parquet"),
        state_dir=str(state_dir),
        lock_timeout=600,
        deferrable=True,
    )
    holder = SyncState(str(state_dir), APP_ID, implicit_lock=False)
    with holder.open("the-other-run"):
        with pytest.raises(TaskDeferred) as first:
            op.execute(_context())
        assert first.value.method_name == RESUME_METHOD
        assert FIRST_DELAY_S - 3 < _delay(first.value.trigger) <= FIRST_DELAY_S
        with pytest.raises(TaskDeferred) as second:
            op.resume_after_wait(_context(), event=None, **first.value.kwargs)
        assert second.value.kwargs["looks"] == 2
        assert second.value.kwargs["waited_since"] == first.value.kwargs["waited_since"]
        assert 2 * FIRST_DELAY_S - 3 < _delay(second.value.trigger) <= 2 * FIRST_DELAY_S
    assert sim.stats.save_requests == 0 and not (tmp_path / "r.parquet").exists()
    summary = op.resume_after_wait(_context(), event=None, **second.value.kwargs)
    assert summary["counts"]["sent"] == 2 and sim.stats.save_requests == 1


def test_a_spent_lock_timeout_goes_on_and_meets_the_holder_as_busy(sim, polyv_env, tmp_path):
    from airflow.sdk.exceptions import AirflowException

    from polyv_connector.state.folder import SyncState

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"viewerId": ["v1"], "customFieldId": ["PAY_STATUS"], "customFieldValue": ["a"]}), src)
    state_dir = tmp_path / "state"
    op = _op(
        input_path=str(src),
        report_path=str(tmp_path / "r.parquet"),
        state_dir=str(state_dir),
        lock_timeout=60,
        deferrable=True,
    )
    holder = SyncState(str(state_dir), APP_ID, implicit_lock=False)
    started = time.time()
    with holder.open("the-other-run"), pytest.raises(AirflowException, match=r"busy|held|another run"):
        op.resume_after_wait(_context(), event=None, waited_since=time.time() - 61, looks=5)
    assert time.time() - started < 30  # no second lock_timeout waited in the worker
    assert sim.stats.save_requests == 0


def test_not_deferrable_waits_in_process(polyv_env, monkeypatch):
    from polyv_connector.airflow import deferral

    assert deferral.is_deferrable(False) is False and deferral.is_deferrable(True) is True
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "true")
    assert deferral.is_deferrable(None) is True
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "false")
    assert deferral.is_deferrable(None) is False


def test_waited_kwargs_from_a_stranger_are_bounded():
    from polyv_connector.airflow.deferral import Waited

    now = 1_000_000.0
    assert Waited.from_kwargs({"waited_since": now + 10, "looks": 3}, now) == Waited(now)
    assert Waited.from_kwargs({"waited_since": "x", "looks": -1}, now) == Waited(now)
    assert Waited.from_kwargs({"waited_since": True}, now) == Waited(now)
    assert Waited.from_kwargs({"waited_since": now - 5, "looks": "9"}, now) == Waited(now - 5, 0)
    assert Waited.from_kwargs(None, now) == Waited(now)


def test_delay_doubles_to_a_ceiling():
    from polyv_connector.airflow.deferral import FIRST_DELAY_S, MAX_DELAY_S, next_delay

    assert [next_delay(i) for i in range(3)] == [FIRST_DELAY_S, 2 * FIRST_DELAY_S, 4 * FIRST_DELAY_S]
    assert next_delay(10_000) == MAX_DELAY_S


def test_a_free_state_table_is_probed_and_the_run_goes_on(sim, polyv_env, pg_schema, pg_warehouse_env):
    _seed(pg_schema, 4)
    summary = _table_run(pg_schema, deferrable=True, lock_timeout=60)
    assert summary["counts"]["sent"] == 4 and sim.stats.save_requests == 1


def test_report_day_partitions_reach_a_new_postgresql_report_table(sim, polyv_env, pg_schema, pg_warehouse_env):
    _seed(pg_schema, 3)
    _table_run(pg_schema, report_day_partitions=True)
    assert pg_rows(
        "SELECT count(*) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE n.nspname = '{pg_schema}' AND c.relname = 'polyv_sync_report'"
    ) == [(1,)]
    assert pg_rows(f"SELECT count(*) FROM {pg_schema}.polyv_sync_report") == [(3,)]
