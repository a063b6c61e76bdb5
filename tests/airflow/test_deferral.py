"""Waits that free the worker (:mod:`polyv_connector.airflow.deferral`): no deferral resumes
before Airflow has seen the deferring worker exit, and a block recorded in a real Redis budget
defers the run, bounded by ``lock_timeout``, then the resumed run sends once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.airflow.support import APP_ID
from tests.services import REDIS_HOST, REDIS_PORT, redis_url

pytestmark = pytest.mark.airflow

REDIS_DB = 12  # these tests only; only the budget keys of the simulator's host are touched


class FakeTI:
    map_index = -1

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def _context() -> dict[str, Any]:
    return {"ti": FakeTI(), "run_id": "manual__deferral"}


def _delay(trigger: Any) -> float:
    """Seconds from now until a time trigger fires."""
    return float((trigger.moment - dt.datetime.now(dt.UTC)).total_seconds())


def _options(lock_timeout_s: float) -> Any:
    from polyv_connector.config import SyncOptions

    return dataclasses.replace(SyncOptions(), lock_timeout_s=lock_timeout_s)


class Block:
    """A budget whose recorded block ends ``seconds`` from now."""

    def __init__(self, seconds: float) -> None:
        self.until = time.time() + seconds

    def blocked_until(self) -> float:
        return self.until


def test_no_deferral_resumes_before_airflow_has_seen_the_deferring_worker_exit(tmp_path: Path):
    """Airflow resumes a deferred task under the key it deferred with; when the trigger fires
    before the scheduler has read the deferring worker's exit (the supervisor notices it up to
    ``[workers] min_heartbeat_interval`` later, the scheduler a loop after that), the stale exit
    fails the resumed task (three backfill runs resuming after 5 s met it). Every deferral is
    longer than that window: for a held state at the first look, and for a block about to end."""
    from airflow.sdk.configuration import conf

    from polyv_connector.airflow.deferral import Waited, must_wait, resume_floor
    from polyv_connector.state.folder import SyncState

    heartbeat = conf.getfloat("workers", "min_heartbeat_interval")
    idle = conf.getfloat("scheduler", "scheduler_idle_sleep_time")
    floor = resume_floor()
    assert floor >= 2 * (heartbeat + idle) and floor >= 30
    assert resume_floor(heartbeat_s=20, idle_s=1) == 84  # a slower supervisor: a longer floor

    options = _options(3600)
    holder = SyncState(str(tmp_path), APP_ID, implicit_lock=False)
    probe = SyncState(str(tmp_path), APP_ID, implicit_lock=False)
    with holder.open("the-other-run"):
        held = must_wait(probe, options, None, Waited(time.time()), "probe", floor=floor)
    assert held is not None and held.delay_s >= floor
    soon = must_wait(None, options, Block(2), Waited(time.time()), "probe", floor=floor)
    assert soon is not None and soon.delay_s >= floor and "block" in soon.why


def test_less_lock_timeout_left_than_the_floor_waits_in_process(tmp_path: Path):
    from polyv_connector.airflow.deferral import Waited, must_wait, remaining
    from polyv_connector.state.folder import SyncState

    options = _options(600)
    waited = Waited(time.time() - 590, looks=4)  # 10 s of lock_timeout left
    holder = SyncState(str(tmp_path), APP_ID, implicit_lock=False)
    probe = SyncState(str(tmp_path), APP_ID, implicit_lock=False)
    with holder.open("the-other-run"):
        assert must_wait(probe, options, None, waited, "probe", floor=30) is None
    assert must_wait(None, options, Block(100), waited, "probe", floor=30) is None
    assert 0 < remaining(options, waited).lock_timeout_s <= 10  # the engine waits the rest, no more


# ---- a block recorded in a real Redis budget ------------------------------------------------------
@pytest.fixture
def budget_url(sim: Any, redis_available: bool) -> Iterator[str]:
    _drop_keys(sim.base_url)
    yield redis_url(REDIS_DB)
    _drop_keys(sim.base_url)


def _drop_keys(api: str) -> None:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    for key in client.scan_iter(match=f"polyv-connector:budget:{api.removeprefix('http://')}:*"):
        client.delete(key)
    client.close()


def _record_block(sim: Any, url: str, seconds: float) -> Any:
    """Another run met POLYV's block: it records it in the shared budget, ending in ``seconds``."""
    from polyv_connector.budget import open_budget

    other = open_budget(url, api_base_url=sim.base_url, rate=None, run_id="other", max_rps=None)
    other.record_block(time.time() + seconds)
    return other


def _source(tmp_path: Path) -> str:
    src = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({"viewerId": ["v1", "v2"], "customFieldId": ["PAY_STATUS"] * 2, "customFieldValue": ["a", "b"]}), src
    )
    return str(src)


def _op(tmp_path: Path, url: str, lock_timeout: float) -> Any:
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    return PolyvViewerFieldSyncOperator(
        task_id="sync",
        input_path=_source(tmp_path),
        report_path=str(tmp_path / "r.parquet"),
        state_dir=str(tmp_path / "state"),
        budget_url=url,
        lock_timeout=lock_timeout,
        deferrable=True,
    )


def test_a_recorded_block_defers_until_it_ends_and_the_resumed_run_sends_once(sim, polyv_env, tmp_path, budget_url):
    from airflow.sdk.exceptions import TaskDeferred

    from polyv_connector.airflow.deferral import RESUME_METHOD, resume_floor

    other = _record_block(sim, budget_url, 90)
    try:
        op = _op(tmp_path, budget_url, lock_timeout=600)
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(_context())
        assert deferred.value.method_name == RESUME_METHOD
        assert 85 < _delay(deferred.value.trigger) <= 90  # until the block ends
        assert sim.stats.api_requests == 0 and not (tmp_path / "r.parquet").exists()
        # The block is over when the trigger fires (lifted here rather than waited for).
        other.clear_block()
        summary = op.resume_after_wait(_context(), event=None, **deferred.value.kwargs)
    finally:
        other.close()
    assert summary["ok"] and summary["counts"]["sent"] == 2 and sim.stats.save_requests == 1
    assert resume_floor() < 85  # the block's end, not the floor, set the delay


def test_a_block_longer_than_lock_timeout_defers_no_longer_then_stops_as_blocked(sim, polyv_env, tmp_path, budget_url):
    from airflow.sdk.exceptions import AirflowException, TaskDeferred

    other = _record_block(sim, budget_url, 300)
    try:
        op = _op(tmp_path, budget_url, lock_timeout=45)
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(_context())
        assert 40 < _delay(deferred.value.trigger) <= 45  # bounded by lock_timeout, not the block
        # Resumed once lock_timeout is spent: the run goes on and meets the block, retryably.
        spent = {**deferred.value.kwargs, "waited_since": time.time() - 46}
        with pytest.raises(AirflowException, match=r"(?i)block"):
            op.resume_after_wait(_context(), event=None, **spent)
    finally:
        other.close()
    assert sim.stats.save_requests == 0
