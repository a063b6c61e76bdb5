"""Chaos: real `polyv-sync run` processes killed with SIGKILL at random moments (planning,
sending, compacting the state, writing the report) while POLYV answers 5% 5XX and resets 2% of
connections; then one clean run. Nothing may be lost or wrongly vouched for."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from polyv_connector.simulator import FaultConfig, PolyvSimulator
from tests.conftest import APP_ID, APP_SECRET, FIELDS, write_items

pytestmark = pytest.mark.slow

KILLS = 20


def test_twenty_kill_9_then_a_clean_run_leaves_polyv_equal_to_the_source(tmp_path) -> None:
    n = 12_000
    rows = [(f"v{i}", FIELDS[i % 2], f"val{i}") for i in range(n)]
    src = write_items(tmp_path / "in.parquet", rows)
    rng = random.Random(20261130)
    faults = FaultConfig(error_rate=0.05, reset_rate=0.02, latency_s=0.005, seed=11)
    with PolyvSimulator(apps={APP_ID: APP_SECRET}, fields=FIELDS, rate_limit=None, faults=faults) as sim:
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLYV_")}
        env.update(
            POLYV_APP_ID=APP_ID,
            POLYV_APP_SECRET=APP_SECRET,
            POLYV_API_BASE_URL=sim.base_url,
            POLYV_RUNTIME_DIR=str(tmp_path / "run"),
        )
        cmd = [
            sys.executable,
            "-m",
            "polyv_connector.cli",
            "run",
            "--input",
            str(src),
            "--state-dir",
            str(tmp_path / "state"),
            "--batch-size",
            "100",
            "--max-rps",
            "100",
            "--max-attempts",
            "10",
        ]
        completed = []
        for k in range(KILLS):
            # Alternate full refreshes (long sends) with incremental runs (mostly planning,
            # compaction and report writing), so the kills land in every phase.
            extra = ["--full-refresh"] if k % 2 == 0 else []
            report = tmp_path / f"r{k}.parquet"
            proc = subprocess.Popen(
                [*cmd, *extra, "--report", str(report)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            time.sleep(rng.uniform(0.3, 4.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=120)
            assert b"Traceback" not in err, err.decode()[-2000:]
            if proc.returncode in (0, 1):
                completed.append(report)
        # What a kill -9 in the middle of writing a report leaves at that path: the next run there
        # writes over it.
        (tmp_path / "final.parquet.partial").write_bytes(b"left by a killed run")
        final = subprocess.run([*cmd, "--report", str(tmp_path / "final.parquet")], env=env, capture_output=True)
        assert final.returncode == 0, final.stderr.decode()[-2000:]
        held = sim.values
    # POLYV holds exactly the source, and each completed run's report has one row per item.
    assert {(v, f): val for (_, v, f), val in held.items()} == {(v, f): val for v, f, val in rows}
    for report in [*completed, tmp_path / "final.parquet"]:
        table = pq.read_table(report)
        assert table.num_rows == n
        assert sorted(table.column("rowNumber").to_pylist()) == list(range(n))
    # A killed run never leaves a partial report at its path: the report is written aside and
    # renamed once whole, so a report that exists is whole. A kill -9 while it is written (the
    # run's last moments, or while sending, when the report is written ahead) can leave only
    # the file aside, which no completed run does.
    for k in range(KILLS):
        report = tmp_path / f"r{k}.parquet"
        if report.exists():
            assert pq.read_table(report).num_rows == n  # killed after its rename, or completed
    aside = {p.name.removesuffix(".partial") for p in tmp_path.glob("*.partial")}
    assert not aside & {r.name for r in [*completed, tmp_path / "final.parquet"]}
