"""The simulator's several accounts (CLI) and its peak 10-s window, and the budget end to end:
real client processes through one shared budget against the simulator."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pytest
import requests

from polyv_connector.simulator import PolyvSimulator, RateLimitConfig
from polyv_connector.simulator.cli import add_arguments, build_simulator
from polyv_connector.simulator.signing import expected_sign
from tests.budget.conftest import Runs, drop_redis_keys
from tests.budget.workers import client_draw

LIST = "/live/v4/user/custom-field/list"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_accepts_several_accounts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLYV_APP_ID", raising=False)
    sim = build_simulator(parse("--port", "0", "--account", "a1:s1", "--account", "a2:s:2"))
    assert sim._apps == {"a1": "s1", "a2": "s:2"}
    # The single-account flags keep working, alone or added to --account.
    assert build_simulator(parse("--port", "0"))._apps.keys() == {"demo-app"}
    monkeypatch.setenv("POLYV_APP_SECRET", "env-secret")
    assert build_simulator(parse("--app-id", "x"))._apps == {"x": "env-secret"}
    assert build_simulator(parse("--account", "a1:s1", "--app-id", "x"))._apps == {"a1": "s1", "x": "env-secret"}
    with pytest.raises(SystemExit):
        parse("--account", "no-secret")


def signed(app_id: str, secret: str) -> dict[str, str]:
    params = {"appId": app_id, "timestamp": str(int(time.time() * 1000)), "pageNumber": "1", "pageSize": "10"}
    params["sign"] = expected_sign(params, secret)
    return params


def test_cli_simulator_serves_several_accounts_and_reports_the_peak() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "polyv_connector.simulator", "--port", "0", "--account", "a1:s1", "--account", "a2:s2"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "appIds=a1,a2" in line
        base = line.split("listening on ")[1].split()[0]
        with requests.Session() as s:
            for app, secret in (("a1", "s1"), ("a2", "s2"), ("a1", "s1")):
                assert s.get(base + LIST, params=signed(app, secret), timeout=5).json()["code"] == 200
            stats = s.get(base + "/_sim/stats", timeout=5).json()
        assert stats["peak_window_requests"] == 3
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_peak_window_slides_over_all_accounts() -> None:
    now = [1_700_000_000.0]
    sim = PolyvSimulator(apps={"a": "x", "b": "y"}, clock=lambda: now[0], rate_limit=RateLimitConfig())
    with sim, requests.Session() as s:
        for i in range(6):
            app, secret = ("a", "x") if i % 2 else ("b", "y")
            params = {"appId": app, "timestamp": str(int(now[0] * 1000))}
            params["sign"] = expected_sign(params, secret)
            s.get(sim.base_url + LIST, params=params, timeout=5)
            now[0] += 3.0  # 4 requests fit in one 10-s window (t, t+3, t+6, t+9)
        assert sim.peak_window_requests == 4
        assert sim.stats.peak_window_requests == 4
        sim.reset()
        assert sim.peak_window_requests == 0


@pytest.mark.parametrize("store", ["machine", "redis"])
def test_clients_of_two_accounts_stay_within_the_budget_at_the_simulator(
    runs: Runs, runtime_dir: object, store: str, request: pytest.FixtureRequest
) -> None:
    rate, duration = 30.0, 3.0
    with PolyvSimulator(apps={"acc1": "sec1", "acc2": "sec2"}) as sim:
        url = request.getfixturevalue("redis_url") if store == "redis" else f"file://{runtime_dir}"
        if store == "redis":
            base_url = sim.base_url  # read now: the simulator is stopped when the finalizer runs
            request.addfinalizer(lambda: drop_redis_keys(base_url))
        for app, secret in (("acc1", "sec1"), ("acc2", "sec2")):
            runs.start(client_draw, url, sim.base_url, rate, app, secret, duration)
        start = runs.release()
        results = runs.collect(2)
        elapsed = time.time() - start
        total = sum(r["calls"] for r in results.values())
        assert sim.stats.api_requests == total
        # Never more than the budget allows in any 10-s window (the whole run fits in one).
        assert sim.peak_window_requests <= rate * elapsed + rate / 10 + 2
        assert sim.peak_window_requests >= 0.6 * rate * duration
        calls = sorted(r["calls"] for r in results.values())
        assert calls[0] >= 0.7 * calls[1]  # a fair split between the two accounts' runs
        assert sim.stats.blocked_responses == 0
