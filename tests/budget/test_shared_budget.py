"""The shared request budget with real processes: fair shares, the never-exceeded total, a
killed run's share coming back, blocks seen by every run, Redis and the machine-wide store.

Small rates (50/s) and short runs (about 3-4 s) keep each test quick on a shared machine.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from polyv_connector.budget import BudgetBlocked, open_budget
from tests.budget.conftest import Runs
from tests.budget.workers import draw

R = 50.0
DURATION = 4.0
BURST = math.ceil(R / 10) + 1  # the shared bucket's burst, plus the acquisition in flight at the edge


def counts_in(results: dict[str, dict[str, Any]], start: float, end: float) -> dict[str, int]:
    return {rid: sum(1 for t in r["stamps"] if start <= t < end) for rid, r in results.items()}


def assert_total_within_rate(results: dict[str, dict[str, Any]], rate: float) -> None:
    stamps = sorted(t for r in results.values() for t in r["stamps"])
    elapsed = stamps[-1] - stamps[0]
    assert len(stamps) <= rate * elapsed + BURST, (len(stamps), elapsed)
    assert len(stamps) >= 0.8 * rate * elapsed, (len(stamps), elapsed)  # and the rate is used


def assert_fair(results: dict[str, dict[str, Any]], expected: dict[str, float], tolerance: float = 0.2) -> None:
    for rid, r in results.items():
        got = len(r["stamps"]) / DURATION
        assert abs(got - expected[rid]) <= tolerance * expected[rid], (rid, got, expected[rid], r["share"])


def three_runs(runs: Runs, url: str | None, api: str, caps: tuple[float | None, ...] = (None, None, None)) -> None:
    for i, cap in enumerate(caps):
        runs.start(draw, url, api, R, f"run{i}", cap, DURATION)
    runs.release()


def test_three_processes_share_the_machine_wide_budget(runs: Runs, runtime_dir: Path, api: str) -> None:
    three_runs(runs, None, api)  # None: the machine-wide default, here in $POLYV_RUNTIME_DIR
    results = runs.collect(3)
    assert_total_within_rate(results, R)
    assert_fair(results, {rid: R / 3 for rid in results})
    assert (runtime_dir / "request-budget.sqlite3").exists()


def test_a_process_alone_gets_all_of_the_rate(runs: Runs, runtime_dir: Path, api: str) -> None:
    runs.start(draw, None, api, R, "alone", None, DURATION)
    runs.release()
    results = runs.collect(1)
    assert_total_within_rate(results, R)
    assert_fair(results, {"alone": R})


def test_a_capped_process_leaves_the_rest_to_the_others(runs: Runs, runtime_dir: Path, api: str) -> None:
    three_runs(runs, None, api, caps=(5.0, None, None))
    results = runs.collect(3)
    assert_total_within_rate(results, R)
    assert_fair(results, {"run0": 5.0, "run1": (R - 5) / 2, "run2": (R - 5) / 2})


def test_a_killed_process_share_returns_to_the_others(runs: Runs, runtime_dir: Path, api: str) -> None:
    duration = 7.5
    for i in range(3):
        runs.start(draw, None, api, R, f"run{i}", None, duration)
    start = runs.release()
    time.sleep(1.5)
    victim = runs.procs[0]
    os.kill(victim.pid, signal.SIGKILL)  # no close(): only the heartbeat's TTL (3 s) can free its share
    killed = time.time()
    results = runs.collect(2)
    # Within TTL + one heartbeat the survivors pace at R/2 each; measure the 2 s after that.
    window = (killed + 3.6, min(killed + 5.6, start + duration))
    span = window[1] - window[0]
    for rid, n in counts_in(results, *window).items():
        assert abs(n / span - R / 2) <= 0.2 * R / 2, (rid, n / span)
    # Before the kill they had a third each.
    for rid, n in counts_in(results, start + 0.2, killed).items():
        assert abs(n / (killed - start - 0.2) - R / 3) <= 0.25 * R / 3, (rid, n)


def test_three_processes_share_a_redis_budget(runs: Runs, redis_url: str, api: str) -> None:
    three_runs(runs, redis_url, api)
    results = runs.collect(3)
    assert_total_within_rate(results, R)
    assert_fair(results, {rid: R / 3 for rid in results})


@pytest.mark.parametrize("store", ["machine", "redis"])
def test_a_block_recorded_in_one_process_stops_another_before_its_next_request(
    runs: Runs, runtime_dir: Path, api: str, store: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_url") if store == "redis" else None
    runs.start(draw, url, api, R, "sender", None, 20.0)
    runs.release()
    with open_budget(url, api_base_url=api, rate=R, run_id="recorder", max_rps=None) as budget:
        time.sleep(0.5)
        until = budget.record_block(time.time() + 60)
        recorded = time.time()
        result = runs.collect(1)["sender"]
        assert result["blocked"] == pytest.approx(until)
        # Nothing was admitted after record_block() returned (the stamp follows the admission).
        assert max(result["stamps"]) < recorded + 0.02
        assert result["blocked_at"] - recorded < 0.5
        assert budget.blocked_until() == pytest.approx(until)
        with pytest.raises(BudgetBlocked):
            budget.acquire()
        budget.clear_block()
        assert budget.blocked_until() is None
        budget.acquire()  # lifted


def test_two_api_hosts_do_not_share_a_budget(runs: Runs, runtime_dir: Path, api: str) -> None:
    other = api.replace("127.0.0.1", "localhost")
    runs.start(draw, None, api, R, "a", None, DURATION)
    runs.start(draw, None, other, R, "b", None, DURATION)
    runs.release()
    results = runs.collect(2)
    assert_fair(results, {"a": R, "b": R})


@pytest.mark.parametrize("store", ["machine", "redis"])
def test_disagreeing_rates_the_lowest_wins_with_a_warning(
    runs: Runs, runtime_dir: Path, api: str, store: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_url") if store == "redis" else None
    runs.start(draw, url, api, 50.0, "fast", None, 3.0)
    runs.start(draw, url, api, 30.0, "slow", None, 3.0)
    runs.release()
    results = runs.collect(2)
    for r in results.values():
        assert r["rate_in_force"] == 30.0
        assert r["share"] == 15.0
        assert any("disagree" in w and "30/s" in w for w in r["warnings"]), r["warnings"]
    assert_total_within_rate(results, 30.0)
