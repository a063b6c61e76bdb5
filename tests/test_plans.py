"""plans.py: the state a plan was made against is checked under the lock, and an apply's
options are the plan's (no diff, no limits, its slice)."""

from __future__ import annotations

import numpy as np
import pytest

from polyv_connector import plans
from polyv_connector.config import SyncOptions
from polyv_connector.planfile import PlanRefused
from polyv_connector.state.folder import SyncState


def _state(tmp_path, values):
    st = SyncState(tmp_path / "state", "app", implicit_lock=False)
    with st.open("seed") as run:
        run.record(np.array(sorted(values), np.uint64), np.array([values[k] for k in sorted(values)], np.uint64))
    return st


def test_a_plan_run_notes_the_digest_of_what_it_loaded(tmp_path):
    st = _state(tmp_path, {1: 10, 2: 20})
    checked = plans.CheckedState(st)
    with checked.open("plan", dry_run=True) as run:
        keys, fps = run.load()
    assert checked.loaded == plans.state_digest(keys, fps)


def test_an_apply_refuses_a_state_whose_content_changed_under_the_lock(tmp_path):
    st = _state(tmp_path, {1: 10, 2: 20})
    checked = plans.CheckedState(st, expected=plans.state_digest(np.array([1], np.uint64), np.array([10], np.uint64)))
    with pytest.raises(PlanRefused, match="changed since the plan"), checked.open("apply") as run:
        run.load()


def test_an_unchanged_state_passes_and_records_through_the_wrapper(tmp_path):
    st = _state(tmp_path, {1: 10})
    keys, fps = st.load()
    checked = plans.CheckedState(st, expected=plans.state_digest(keys, fps))
    with checked.open("apply") as run:
        run.load()
        run.record(np.array([3], np.uint64), np.array([30], np.uint64))
    assert 3 in SyncState(tmp_path / "state", "app", implicit_lock=False).load()[0]


@pytest.mark.parametrize("name", ["plan.html", "", "s3://b/p.parquet"])
def test_a_plan_path_must_be_a_local_parquet_file(tmp_path, name):
    with pytest.raises(PlanRefused):
        plans.check_plan_path(name, "plan_path")


def test_plan_options_are_a_dry_run():
    assert plans.plan_options(SyncOptions()).dry_run is True
