"""Incremental sync (issue #5): send only what changed, retry failures, resume after kill -9."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from polyv_connector import StateError, SyncOptions, sync
from polyv_connector.report import ParquetReport
from polyv_connector.simulator import FaultConfig, PolyvSimulator
from polyv_connector.sources.parquet import ParquetSource
from tests.conftest import APP_ID, APP_SECRET, FAST, FIELDS, read_report, write_items


def run(tmp_path: Path, creds, rows, name: str = "r", send=FAST, **kw):
    src = write_items(tmp_path / f"{name}.in.parquet", rows)
    opts = SyncOptions(send=send, state_dir=str(tmp_path / "state"), **kw)
    res = sync(ParquetSource(str(src)), creds, opts, ParquetReport(tmp_path / f"{name}.parquet"))
    return res, read_report(tmp_path / f"{name}.parquet")


ROWS = [(f"v{i}", "PAY_STATUS", f"x{i}") for i in range(5000)]


def test_unchanged_rerun_sends_nothing_changed_rows_only_those(tmp_path, sim, creds) -> None:
    first, _ = run(tmp_path, creds, ROWS, "1")
    assert first.counts["sent"] == 5000
    saves = sim.stats.save_requests
    second, rep = run(tmp_path, creds, ROWS, "2")
    assert second.counts["unchanged"] == 5000 and sim.stats.save_requests == saves
    assert all("unchanged" in r["reason"] for r in rep)
    changed = list(ROWS)
    for i in range(0, 5000, 100):  # 1% changed
        changed[i] = (f"v{i}", "PAY_STATUS", f"new{i}")
    changed += [(f"new{i}", "VIP_LEVEL", "1") for i in range(7)]
    seen = len(sim.received_batches)
    third, rep = run(tmp_path, creds, changed, "3")
    assert third.counts["sent"] == 57 and third.counts["unchanged"] == 4950
    sent = {(i["viewerId"], i["customFieldValue"]) for b in sim.received_batches[seen:] for i in b}
    assert sent == {(f"v{i}", f"new{i}") for i in range(0, 5000, 100)} | {(f"new{i}", "1") for i in range(7)}


def test_dry_run_changes_nothing_and_full_refresh_resends(tmp_path, sim, creds) -> None:
    run(tmp_path, creds, ROWS, "1")
    state_files = sorted(p.name for p in (tmp_path / "state").rglob("*"))
    changed = [(v, f, "changed") for v, f, _ in ROWS]
    dry, _ = run(tmp_path, creds, changed, "2", dry_run=True, max_changed_fraction=None)
    assert dry.counts["dry_run"] == 5000 and dry.requests_planned == 5
    # Every value changed: a dry run reports the change limit's breach as the real run would.
    limited, _ = run(tmp_path, creds, changed, "2b", dry_run=True)
    assert limited.exit_code == 4 and limited.counts["not_attempted"] == 5000
    assert limited.counts_by_reason == {"change_limit": 5000}
    assert sorted(p.name for p in (tmp_path / "state").rglob("*")) == state_files
    again, _ = run(tmp_path, creds, ROWS, "3")
    assert again.counts["unchanged"] == 5000
    saves = sim.stats.save_requests
    full, _ = run(tmp_path, creds, ROWS, "4", full_refresh=True)
    assert full.counts["sent"] == 5000 and sim.stats.save_requests == saves + 5


def test_failed_items_are_sent_again_next_run_and_only_they(tmp_path, sim, creds) -> None:
    sim.set_faults(FaultConfig(poison_values=("x17", "x4242")))
    first, _ = run(tmp_path, creds, ROWS, "1")
    assert first.counts["failed"] == 2
    sim.set_faults(FaultConfig())
    seen = len(sim.received_batches)
    second, _ = run(tmp_path, creds, ROWS, "2")
    assert second.counts == {**second.counts, "sent": 2, "unchanged": 4998}
    assert sorted(i["viewerId"] for b in sim.received_batches[seen:] for i in b) == ["v17", "v4242"]


def test_corrupt_state_fails_safe_and_reset_flag_does_a_full_refresh(tmp_path, sim, creds) -> None:
    run(tmp_path, creds, ROWS, "1")
    (tmp_path / "state" / APP_ID / "base.parquet").write_bytes(b"not parquet")
    saves = sim.stats.save_requests
    with pytest.raises(StateError, match="corrupt"):
        run(tmp_path, creds, ROWS, "2")
    assert sim.stats.save_requests == saves
    res, _ = run(tmp_path, creds, ROWS, "3", reset_corrupt_state=True)
    assert res.counts["sent"] == 5000
    res, _ = run(tmp_path, creds, ROWS, "4")
    assert res.counts["unchanged"] == 5000


@pytest.mark.slow
def test_kill_9_at_random_points_then_rerun_loses_nothing(tmp_path) -> None:
    """A subprocess sync is SIGKILLed at random moments; the rerun completes everything and
    resends at most the batches that were in flight."""
    n, batch, conc = 60_000, 200, 4
    rows = [(f"v{i}", "PAY_STATUS", f"val{i}") for i in range(n)]
    src = write_items(tmp_path / "in.parquet", rows)
    state = tmp_path / "state"
    rng = random.Random(5)
    with PolyvSimulator(
        apps={APP_ID: APP_SECRET}, fields=FIELDS, rate_limit=None, faults=FaultConfig(latency_s=0.01)
    ) as sim:
        env = {**os.environ, "POLYV_APP_ID": APP_ID, "POLYV_APP_SECRET": APP_SECRET, "POLYV_API_BASE_URL": sim.base_url}
        cmd = [
            sys.executable,
            "-m",
            "polyv_connector.cli",
            "run",
            "--input",
            str(src),
            "--state-dir",
            str(state),
            "--batch-size",
            str(batch),
            "--concurrency",
            str(conc),
            "--max-rps",
            "40",
        ]
        kills = 0
        for k in range(3):
            before = sim.stats.items_stored
            not_yet_stored = n - len(sim.values)
            kills_before = kills
            proc = subprocess.Popen(
                [*cmd, "--report", str(tmp_path / f"k{k}.parquet")],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            # Kill at a random moment of the *sending*: start-up time (imports, the budget, the
            # lock) varies with the machine's load, so wait until this run has stored something.
            deadline = time.monotonic() + 120
            while sim.stats.items_stored == before and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.05, 0.6))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
            stored_by_this_run = sim.stats.items_stored - before
            # A run sends what is not stored yet, plus at most the batches earlier kills left in
            # flight (stored by POLYV, never checkpointed): it never resends confirmed work.
            assert stored_by_this_run <= not_yet_stored + kills_before * conc * batch, (k, stored_by_this_run)
        assert kills >= 2
        before_final = sim.stats.items_stored
        confirmed_before_final = len(sim.values)
        final = subprocess.run(
            [*cmd, "--report", str(tmp_path / "final.parquet")], env=env, capture_output=True, text=True
        )
        assert final.returncode == 0, final.stderr
        rep = pq.read_table(tmp_path / "final.parquet").to_pandas()
        assert len(rep) == n
        assert set(rep.status) <= {"sent", "unchanged"}
        stored = sim.values  # a copy of all 60k values: take it once, not once per item
        assert len(stored) == n
        assert all(stored[(APP_ID, f"v{i}", "PAY_STATUS")] == f"val{i}" for i in range(n))
        # Items stored by earlier runs but re-sent now are the ones whose batch was in flight
        # (stored by POLYV, not yet checkpointed) when a kill hit: at most concurrency batches per kill.
        resent = (sim.stats.items_stored - before_final) - (n - confirmed_before_final)
        assert 0 <= resent <= kills * conc * batch, resent
        assert (rep.status == "unchanged").sum() > 0


def test_a_send_that_timed_out_is_not_vouched_for_by_the_old_state(tmp_path, sim, creds) -> None:
    """Run 1 confirms A; run 2 sends B, POLYV stores it but the answer never arrives; run 3
    with A again must send A (POLYV may hold B), not call it unchanged."""
    import time as _time

    from polyv_connector import SendOptions

    send = SendOptions(timeout_s=0.3, max_attempts=1)
    first, _ = run(tmp_path, creds, [("u1", "PAY_STATUS", "A")], "1", send=send)
    assert first.counts["sent"] == 1
    sim.set_faults(FaultConfig(hang_s=0.6))
    second, _ = run(tmp_path, creds, [("u1", "PAY_STATUS", "B")], "2", send=send)
    assert second.counts["failed"] == 1
    _time.sleep(0.8)
    assert sim.values[(APP_ID, "u1", "PAY_STATUS")] == "B"
    sim.set_faults(FaultConfig())
    third, _ = run(tmp_path, creds, [("u1", "PAY_STATUS", "A")], "3", send=send)
    assert third.counts["sent"] == 1
    assert sim.values[(APP_ID, "u1", "PAY_STATUS")] == "A"
