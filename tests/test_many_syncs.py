"""Many syncs at once, as real ``polyv-sync run`` processes: one budget per IP, one run per state,
and a block known to all. The simulator enforces POLYV's per-IP limit and counts the busiest
10-s window it saw."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from polyv_connector.simulator import PolyvSimulator
from polyv_connector.simulator.config import RateLimitConfig
from tests.conftest import FIELDS, write_items

pytestmark = pytest.mark.slow

ACCOUNTS = {"acct-a": "PLANTED-secret-a-81f2", "acct-b": "PLANTED-secret-b-3c9d", "acct-c": "PLANTED-secret-c-77e0"}


@pytest.fixture
def fleet_sim() -> Iterator[PolyvSimulator]:
    # POLYV's documented limit and a short block, so a test that provokes one ends quickly.
    limit = RateLimitConfig(max_requests=1500, window_s=10.0, block_s=30.0, block_http_status=429)
    with PolyvSimulator(apps=ACCOUNTS, fields=FIELDS, rate_limit=limit) as sim:
        yield sim


def _env(sim: PolyvSimulator, runtime: Path, app_id: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYV_")}
    env.update(
        POLYV_APP_ID=app_id,
        POLYV_APP_SECRET=ACCOUNTS[app_id],
        POLYV_API_BASE_URL=sim.base_url,
        # The machine-wide budget, in this test's own runtime folder (no other test shares it).
        POLYV_RUNTIME_DIR=str(runtime),
        POLYV_BLOCK_SECONDS="30",
    )
    env.update(extra)
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "polyv_connector.cli", "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _items(path: Path, n: int, value: str = "v") -> Path:
    return write_items(path, [(f"u{i}", "PAY_STATUS", f"{value}{i}") for i in range(n)])


def test_two_accounts_at_default_settings_share_the_ip_budget(fleet_sim, tmp_path) -> None:
    """Each run alone would go at 100 requests/s: together they would pass 1500 per 10 s."""
    procs = []
    for app_id in ("acct-a", "acct-b"):
        src = _items(tmp_path / f"{app_id}.parquet", 9_000)
        env = _env(fleet_sim, tmp_path / "run", app_id)
        procs.append(
            _run(
                env,
                "--input",
                str(src),
                "--report",
                str(tmp_path / f"{app_id}-r.parquet"),
                "--batch-size",
                "10",
                "--summary-json",
                str(tmp_path / f"{app_id}.json"),
            )
        )
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    assert fleet_sim.stats.blocked_responses == 0
    # The budget is 100/s for the IP: a 10-s window holds at most about 1000 plus a small burst.
    assert fleet_sim.peak_window_requests <= 1100, fleet_sim.peak_window_requests
    for app_id in ("acct-a", "acct-b"):
        summary = json.loads((tmp_path / f"{app_id}.json").read_text())
        assert summary["counts"]["sent"] == 9_000
        assert "Traceback" not in outputs[0][1] + outputs[1][1]


def test_a_second_run_on_one_state_is_busy_and_the_state_never_lies(fleet_sim, tmp_path) -> None:
    state = tmp_path / "state"
    first_src = _items(tmp_path / "first.parquet", 20_000, "first")
    second_src = _items(tmp_path / "second.parquet", 20_000, "second")
    env = _env(fleet_sim, tmp_path / "run", "acct-a")
    # Every value of the account changes between the runs: the change limit is off (not the point here).
    common = ["--state-dir", str(state), "--batch-size", "100", "--max-rps", "20", "--max-changed-fraction", "none"]
    first = _run(env, "--input", str(first_src), "--report", str(tmp_path / "r1.parquet"), *common)
    _wait_for(lambda: fleet_sim.stats.items_stored > 0, first)
    second = _run(env, "--input", str(second_src), "--report", str(tmp_path / "r2.parquet"), *common)
    out2, err2 = second.communicate(timeout=120)
    assert second.returncode == 5, err2
    assert "busy" in err2.lower() or "holds" in err2.lower()
    assert f"pid {first.pid}" in err2 or str(first.pid) in err2  # the holder is named
    assert "Traceback" not in err2
    first.communicate(timeout=240)
    assert first.returncode == 0
    # Now the second run, then a dry run of the first values: nothing POLYV holds with the
    # second value may be called unchanged.
    again = _run(env, "--input", str(second_src), "--report", str(tmp_path / "r3.parquet"), *common)
    assert again.wait(timeout=240) == 0
    dry = _run(env, "--input", str(first_src), "--report", str(tmp_path / "dry.parquet"), "--dry-run", *common)
    assert dry.wait(timeout=120) == 0
    report = pq.read_table(tmp_path / "dry.parquet").to_pylist()
    held = fleet_sim.values
    wrongly_unchanged = [
        r
        for r in report
        if r["status"] == "unchanged" and held[("acct-a", r["viewerId"], "PAY_STATUS")] != r["customFieldValue"]
    ]
    assert wrongly_unchanged == []
    assert {r["status"] for r in report} == {"dry_run"}


def test_a_waiting_run_proceeds_when_the_holder_is_killed(fleet_sim, tmp_path) -> None:
    state = tmp_path / "state"
    src = _items(tmp_path / "in.parquet", 20_000)
    env = _env(fleet_sim, tmp_path / "run", "acct-b")
    common = ["--state-dir", str(state), "--batch-size", "100", "--max-rps", "10"]
    holder = _run(env, "--input", str(src), "--report", str(tmp_path / "r1.parquet"), *common)
    # Killed once some batches are confirmed (stored by POLYV and checkpointed a moment later).
    _wait_for(lambda: fleet_sim.stats.items_stored >= 1_000, holder)
    time.sleep(0.5)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    started = time.monotonic()
    rerun = _run(
        env,
        "--input",
        str(src),
        "--report",
        str(tmp_path / "r2.parquet"),
        "--max-rps",
        "100",
        "--state-dir",
        str(state),
        "--batch-size",
        "100",
    )
    out, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err
    assert time.monotonic() - started < 60
    statuses = {r["status"] for r in pq.read_table(tmp_path / "r2.parquet").to_pylist()}
    assert statuses <= {"sent", "unchanged"} and "unchanged" in statuses  # the killed run's work is kept
    assert len(fleet_sim.values) == 20_000


def test_a_block_seen_by_one_run_stops_the_others_and_later_runs_send_nothing(fleet_sim, tmp_path) -> None:
    envs = {a: _env(fleet_sim, tmp_path / "run", a) for a in ACCOUNTS}
    procs = {}
    for app_id, env in envs.items():
        src = _items(tmp_path / f"{app_id}.parquet", 30_000)
        procs[app_id] = _run(
            env,
            "--input",
            str(src),
            "--report",
            str(tmp_path / f"{app_id}.parquet.r"),
            "--batch-size",
            "100",
            "--max-rps",
            "5",
        )
    _wait_for(lambda: fleet_sim.stats.items_stored > 0, procs["acct-a"])
    # POLYV blocks the IP (as if some other program of the company's had used the quota up).
    fleet_sim.set_rate_limit(RateLimitConfig(max_requests=1, window_s=10.0, block_s=30.0, block_http_status=429))
    results = {a: p.communicate(timeout=120) for a, p in procs.items()}
    assert all(p.returncode == 3 for p in procs.values()), {a: r[1][-500:] for a, r in results.items()}
    fleet_sim.set_rate_limit(None)  # POLYV would still block; the budget must stop us by itself
    before = fleet_sim.stats.api_requests
    late = _run(envs["acct-a"], "--input", str(tmp_path / "acct-a.parquet"), "--report", str(tmp_path / "late.r"))
    out, err = late.communicate(timeout=120)
    assert late.returncode == 3, err
    # The run says when the block ends: once, in its log (issue 17: a stop is said once; the
    # summary line names the cause, the summary JSON keeps the message as ``aborted``).
    assert "until" in err and "blocked" in err, err
    assert "STOPPED (blocked)" in out, out
    assert fleet_sim.stats.api_requests == before  # not even the field-list preflight


def test_an_unreachable_redis_budget_is_exit_75_and_sends_nothing(fleet_sim, tmp_path) -> None:
    env = _env(fleet_sim, tmp_path / "run", "acct-a", POLYV_BUDGET_URL="redis://:hunter2-pw@127.0.0.1:1/0")
    src = _items(tmp_path / "in.parquet", 10)
    proc = _run(env, "--input", str(src), "--report", str(tmp_path / "r.parquet"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "POLYV_BUDGET_URL" in err and "hunter2-pw" not in err + out
    assert fleet_sim.stats.api_requests == 0


def test_a_malformed_budget_url_is_a_configuration_error(fleet_sim, tmp_path) -> None:
    env = _env(fleet_sim, tmp_path / "run", "acct-a")
    src = _items(tmp_path / "in.parquet", 10)
    proc = _run(env, "--input", str(src), "--report", str(tmp_path / "r.parquet"), "--budget", "memcached://x")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--budget" in err, err
    assert fleet_sim.stats.api_requests == 0


def _wait_for(condition, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(
                f"the run ended first: {proc.returncode}: {proc.stderr.read()[-2000:] if proc.stderr else ''}"
            )
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)
