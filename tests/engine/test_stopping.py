"""Stopping a run: signals to a real CLI process, in-flight requests in doubt, dead runs' spill.

Real processes and real signals; the simulator stands in for POLYV.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polyv_connector.batching import Batch, item_table
from polyv_connector.errors import RunAborted
from polyv_connector.reasons import stopped_reason
from polyv_connector.sender import BatchSender, Circuit, ItemsResult, send_all
from polyv_connector.simulator import FaultConfig, PolyvSimulator
from polyv_connector.spill import OWNER_FILE, PREFIX, remove_orphans
from polyv_connector.transport.client import PolyvClient
from polyv_connector.transport.retry import RetryPolicy
from tests.conftest import APP_ID, APP_SECRET, FAST, write_items

ROOT = Path(__file__).resolve().parents[2]
N = 1200


def _rows(n: int, tag: str = "v") -> list[tuple[str | None, str | None, str | None]]:
    return [(f"viewer-{i}", "PAY_STATUS", f"{tag}{i}") for i in range(n)]


def _start(tmp: Path, sim: PolyvSimulator, src: Path, name: str, *extra: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "POLYV_APP_ID": APP_ID,
        "POLYV_APP_SECRET": APP_SECRET,
        "POLYV_API_BASE_URL": sim.base_url,
        "PYTHONPATH": str(ROOT),
        "TMPDIR": str(tmp / "tmp"),
    }
    (tmp / "tmp").mkdir(exist_ok=True)
    args = [sys.executable, "-m", "polyv_connector.cli", "run", "--input", str(src), "--no-check-fields"]
    args += ["--report", str(tmp / f"{name}.parquet"), "--summary-json", str(tmp / f"{name}.json")]
    args += ["--state-dir", str(tmp / "state"), "--batch-size", "10", "--concurrency", "2", *extra]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_stored(sim: PolyvSimulator, proc: subprocess.Popen[str], at_least: int = 1, prefix: str = "") -> None:
    """Until the simulator holds ``at_least`` values of viewers starting with ``prefix``."""
    deadline = time.monotonic() + 60
    while sum(k[1].startswith(prefix) for k in sim.values) < at_least:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never stored anything"
        time.sleep(0.02)


@pytest.fixture
def slow_sim() -> Iterator[PolyvSimulator]:
    # Each request takes 50 ms: 120 batches over 2 workers keep the run sending for seconds.
    with PolyvSimulator(apps={APP_ID: APP_SECRET}, faults=FaultConfig(latency_s=0.05), rate_limit=None) as s:
        yield s


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_send_writes_the_whole_report_and_a_rerun_completes(
    tmp_path: Path, slow_sim: PolyvSimulator, sig: signal.Signals, code: int
) -> None:
    src = write_items(tmp_path / "in.parquet", _rows(N))
    proc = _start(tmp_path, slow_sim, src, "first")
    _wait_stored(slow_sim, proc, 20)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert f"{sig.name} received" in err
    report = pq.read_table(tmp_path / "first.parquet")
    assert report.num_rows == N
    assert sorted(report.column("rowNumber").to_pylist()) == list(range(N))
    statuses = set(report.column("status").to_pylist())
    assert "sent" in statuses and statuses <= {"sent", "in_doubt", "not_attempted"}
    assert statuses & {"in_doubt", "not_attempted"}, "the stop came after the last batch"
    summary = json.loads((tmp_path / "first.json").read_text())
    assert summary["abortCause"] == "stopped" and summary["counts"]["sent"] < N
    assert summary["counts"]["in_doubt"] + summary["counts"]["not_attempted"] + summary["counts"]["sent"] == N
    # No spill directory left behind.
    assert not list((tmp_path / "tmp").glob(PREFIX + "*"))

    slow_sim.set_faults(FaultConfig())
    rerun = _start(tmp_path, slow_sim, src, "second")
    _out, err2 = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err2
    expected = {(APP_ID, v, f): val for v, f, val in _rows(N)}
    assert slow_sim.values == expected


def test_kill_9_leaves_a_spill_dir_that_the_next_run_removes_but_a_live_run_keeps_its_own(
    tmp_path: Path, slow_sim: PolyvSimulator
) -> None:
    slow_sim.set_faults(FaultConfig(latency_s=0.2))  # the live run must outlast the third
    src = write_items(tmp_path / "in.parquet", _rows(N))
    dead = _start(tmp_path, slow_sim, src, "dead", "--state-dir", str(tmp_path / "state-dead"))
    _wait_stored(slow_sim, dead)
    dead.kill()
    dead.communicate(timeout=30)
    [left] = list((tmp_path / "tmp").glob(PREFIX + "*"))
    # What was left is private: a full copy of the input items.
    assert stat.S_IMODE(left.stat().st_mode) == 0o700
    assert stat.S_IMODE((left / "items.arrow").stat().st_mode) == 0o600
    assert json.loads((left / OWNER_FILE).read_text())["pid"] == dead.pid

    other = write_items(tmp_path / "other.parquet", [(f"other-{i}", f, v) for i, (_, f, v) in enumerate(_rows(N))])
    live = _start(tmp_path, slow_sim, other, "live", "--state-dir", str(tmp_path / "state-live"))
    try:
        _wait_stored(slow_sim, live, 2, prefix="other-")  # the live run's own values, not the dead one's
        # The new run removed the dead run's folder before making its own.
        assert not left.exists(), "the dead run's spill directory is still there"
        [live_dir] = list((tmp_path / "tmp").glob(PREFIX + "*"))
        small = write_items(tmp_path / "small.parquet", _rows(5, "s"))
        third = _start(tmp_path, slow_sim, small, "third", "--state-dir", str(tmp_path / "state-third"))
        _out, err = third.communicate(timeout=60)
        assert third.returncode == 0, err
        assert live_dir.exists(), "the live run's spill directory was removed"
        assert live.poll() is None
    finally:
        live.terminate()
        live.communicate(timeout=60)
    assert live.returncode == 143


def test_a_dead_owner_reused_pid_does_not_protect_a_spill_dir(tmp_path: Path) -> None:
    # Our own live pid, but another start time: the pid was reused, the owner is gone.
    orphan = tmp_path / f"{PREFIX}orphan"
    orphan.mkdir()
    (orphan / OWNER_FILE).write_text(json.dumps({"pid": os.getppid(), "started": "not-a-start-time"}))
    unowned = tmp_path / f"{PREFIX}starting"
    unowned.mkdir()  # a run that has just created it and not yet named itself
    assert remove_orphans(tmp_path) == [orphan]
    assert unowned.exists()


def test_requests_in_flight_when_the_circuit_opens_are_in_doubt(creds, sim) -> None:
    # Every save hangs 3 s; the circuit opens (a block seen by another worker) while they hang.
    sim.set_faults(FaultConfig(hang_s=3.0))
    circuit = Circuit()
    batches = [
        Batch(
            f"b{i}",
            np.arange(i * 2, i * 2 + 2),
            item_table(pa.array([f"v{i}a", f"v{i}b"]), pa.array(["PAY_STATUS"] * 2), pa.array(["1", "2"])),
        )
        for i in range(6)
    ]
    done: list[ItemsResult] = []

    def on_done(_batch: Batch, results: list[ItemsResult]) -> None:
        done.extend(results)
        if not circuit.is_open:
            circuit.open(RunAborted("blocked", "POLYV blocked the IP"))

    def opener() -> Iterator[Batch]:
        yield from batches[:2]
        time.sleep(0.3)
        circuit.open(RunAborted("blocked", "POLYV blocked the IP"))
        yield from batches[2:]

    with PolyvClient(creds, FAST) as client:
        sender = BatchSender(client, RetryPolicy(max_attempts=1), circuit)
        started = time.monotonic()
        send_all(opener(), sender, circuit, 2, on_done, grace_s=0.5)
        took = time.monotonic() - started
    assert took < 2.5, "send_all waited for the hanging requests"
    assert sorted(int(i) for r in done for i in r.indices) == [0, 1, 2, 3]
    assert {r.status for r in done} == {"in_doubt"}
    assert all(r.reason == stopped_reason("blocked", sent=True) for r in done)


def test_a_keyboard_interrupt_while_sending_still_writes_the_report(tmp_path: Path, creds, sim) -> None:
    import _thread
    import dataclasses
    import threading

    from polyv_connector.config import SyncOptions
    from polyv_connector.engine.result import interrupted_result
    from polyv_connector.report import ParquetReport
    from polyv_connector.run import sync
    from polyv_connector.sources.parquet import ParquetSource

    # 30 requests, two at a time, 50 ms each: about 0.75 s of sending, so the interrupt lands
    # mid-send even when a loaded machine starves the interrupting thread (at 20 ms and eight
    # at a time the run could end before it got its turn).
    sim.set_faults(FaultConfig(latency_s=0.05))
    src = write_items(tmp_path / "in.parquet", _rows(300))
    options = SyncOptions(
        send=dataclasses.replace(FAST, batch_size=10, concurrency=2),
        check_fields=False,
        state_dir=str(tmp_path / "st"),
    )

    def interrupt() -> None:
        while not sim.values:
            time.sleep(0.01)
        _thread.interrupt_main()  # KeyboardInterrupt in the main thread, mid-send

    # interrupt_main() calls whatever handles SIGINT: an earlier test of the same process (an
    # Airflow task run in-process) may have left a handler of its own there.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt) as caught:
            sync(ParquetSource(str(src)), creds, options, ParquetReport(tmp_path / "r.parquet"))
    finally:
        signal.signal(signal.SIGINT, previous)
    result = interrupted_result(caught.value)
    assert result is not None and result.abort_cause == "stopped"
    statuses = pq.read_table(tmp_path / "r.parquet").column("status").to_pylist()
    assert len(statuses) == 300
    assert set(statuses) <= {"sent", "in_doubt", "not_attempted"}
    assert result.counts["sent"] == statuses.count("sent") > 0


def test_a_report_table_that_fails_at_write_leaves_the_report_in_a_parquet_fallback(tmp_path: Path, creds, sim) -> None:
    import sqlite3

    from polyv_connector.config import SyncOptions
    from polyv_connector.run import sync
    from polyv_connector.sources.parquet import ParquetSource
    from polyv_connector.warehouse.report_table import SqlReportTable

    db = tmp_path / "wh.sqlite"
    table = SqlReportTable(lambda: sqlite3.connect(db), "polyv_sync_report", dialect="sqlite", placeholder="?")
    with sqlite3.connect(db) as conn:  # the table goes away while the run sends
        conn.execute("DROP TABLE polyv_sync_report")
    src = write_items(tmp_path / "in.parquet", _rows(30))
    options = SyncOptions(send=FAST, check_fields=False, state_dir=str(tmp_path / "state"))
    result = sync(ParquetSource(str(src)), creds, options, table, report_fallback_dir=tmp_path / "fallback")
    summary = result.to_dict()
    path = Path(summary["reportFallback"])
    assert path.parent == tmp_path / "fallback" and summary["report"] == str(path)
    assert "polyv_sync_report" in summary["reportError"]
    assert result.exit_code == 0 and result.counts["sent"] == 30
    assert pq.read_table(path).column("status").to_pylist() == ["sent"] * 30
    # The next run is not blocked: nothing changed, nothing sent, its report written normally.
    again = sync(ParquetSource(str(src)), creds, options, None)
    assert again.exit_code == 0 and again.counts["unchanged"] == 30


@pytest.mark.parametrize(("offset", "code"), [(300.0, 0), (-300.0, 0), (1200.0, 3)])
def test_clock_skew_is_corrected_up_to_15_minutes(
    tmp_path: Path, offset: float, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    from polyv_connector.cli import main

    src = write_items(tmp_path / "in.parquet", _rows(25))
    with PolyvSimulator(apps={APP_ID: APP_SECRET}, clock_offset_s=offset) as sim:
        env = {"POLYV_APP_ID": APP_ID, "POLYV_APP_SECRET": APP_SECRET, "POLYV_API_BASE_URL": sim.base_url}
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            args = ["run", "--input", str(src), "--report", str(tmp_path / "r.parquet"), "--batch-size", "10"]
            exit_code = main([*args, "--summary-json", str(tmp_path / "s.json")])
        stored = len(sim.values)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert exit_code == code
    if code == 0:
        assert stored == 25 and summary["counts"]["sent"] == 25
        [line] = [r.getMessage() for r in caplog.records if "off POLYV's" in r.getMessage()]
        measured = float(line.split("clock is ")[1].split("s off")[0])
        assert abs(measured + offset) < 2.5  # the Date header has whole seconds
    else:
        assert stored == 0 and summary["abortCause"] == "clock"
        assert "more than the 15 minutes" in summary["aborted"] and "NTP" in summary["aborted"]
