"""One run per sync state at a time: locks between real processes, on a folder, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from polyv_connector.errors import BusyError, StateError
from polyv_connector.state.admin import state_status, state_unlock, table_lock_status, table_lock_unlock
from polyv_connector.state.db_locks import lock_key
from polyv_connector.state.flock import FileLock
from polyv_connector.state.folder import SyncState
from polyv_connector.state.lease_lock import LeaseLock
from tests.lock_worker import APP, STATE_TABLE, make_lock, pg_connect

ROOT = Path(__file__).resolve().parents[2]
KINDS = [
    "file",
    "sqlite-lease",
    pytest.param("pg-advisory", marks=pytest.mark.postgres),
    pytest.param("pg-lease", marks=pytest.mark.postgres),
]


# ---- processes --------------------------------------------------------------------------------
class Worker:
    """A ``tests.lock_worker`` subprocess and the JSON events it prints."""

    def __init__(self, *args: object) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.lock_worker", *map(str, args)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid

    def event(self, timeout: float = 60.0) -> dict:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"worker {self.pid} printed nothing within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"worker {self.pid} ended: rc {self.proc.wait()}, {self.proc.stderr.read()}")  # type: ignore[union-attr]
        return json.loads(line)

    def wait(self, timeout: float = 120.0) -> int:
        rc = self.proc.wait(timeout)
        return rc

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill9()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def lock_worker(
    workers: list[Worker],
    kind: str,
    target: str,
    run_id: str,
    mode: str,
    timeout_s: float,
    hold_s: float,
    expiry_s: float = 60,
) -> Worker:
    w = Worker("lock", kind, target, run_id, mode, timeout_s, hold_s, expiry_s)
    workers.append(w)
    return w


# ---- where the lock lives ---------------------------------------------------------------------
@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    kind = request.node.callspec.params["kind"]
    if kind == "file":
        return str(tmp_path / "state" / APP)
    if kind == "sqlite-lease":
        return str(tmp_path / "locks.sqlite")
    return request.getfixturevalue("pg_schema")


# ---- every kind: exclusion between processes ---------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_second_run_is_refused_naming_the_first_then_waits_and_succeeds(kind, target, workers) -> None:
    first = lock_worker(workers, kind, target, "run-A", "exclusive", 0, 4)
    got = first.event()
    assert got["event"] == "acquired" and got["seq"] == 1
    busy = lock_worker(workers, kind, target, "run-B", "exclusive", 0, 0).event()
    assert busy["event"] == "busy"
    assert busy["holder"]["runId"] == "run-A" and busy["holder"]["pid"] == first.pid
    assert "run-A" in busy["message"] and f"pid {first.pid}" in busy["message"] and "since" in busy["message"]
    # A timeout longer than the holder's life: the second run waits, then gets the lock.
    waiter = lock_worker(workers, kind, target, "run-C", "exclusive", 60, 0)
    got = waiter.event()
    assert got["event"] == "acquired" and got["seq"] == 2  # numbers are handed out by the lock, in lock order
    assert first.event()["event"] == "released"
    assert first.wait() == 0 and waiter.wait() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_shared_holders_coexist_and_exclude_an_exclusive_run(kind, target, workers) -> None:
    a = lock_worker(workers, kind, target, "part-1", "shared", 0, -1)
    assert a.event()["event"] == "acquired"
    b = lock_worker(workers, kind, target, "part-2", "shared", 0, -1)
    assert b.event()["event"] == "acquired"
    busy = lock_worker(workers, kind, target, "whole", "exclusive", 0, 0).event()
    assert busy["event"] == "busy" and {busy["holder"]["runId"]} <= {"part-1", "part-2"}
    assert "2 runs" in busy["message"] and "part-1" in busy["message"] and "part-2" in busy["message"]
    a.stop()
    b.stop()
    if kind.endswith("lease"):
        return  # a killed lease holder blocks until expiry: see the takeover test
    whole = lock_worker(workers, kind, target, "whole", "exclusive", 0, -1)
    assert whole.event()["event"] == "acquired"
    busy = lock_worker(workers, kind, target, "part-3", "shared", 0, 0).event()
    assert busy["event"] == "busy" and busy["holder"]["runId"] == "whole" and busy["holder"]["mode"] == "exclusive"


@pytest.mark.parametrize("kind", ["file", pytest.param("pg-advisory", marks=pytest.mark.postgres)])
def test_kill_9_of_the_holder_frees_the_lock_at_once(kind, target, workers) -> None:
    holder = lock_worker(workers, kind, target, "doomed", "exclusive", 0, -1)
    assert holder.event()["event"] == "acquired"
    holder.kill9()
    after = lock_worker(workers, kind, target, "next", "exclusive", 0, 0)
    got = after.event()
    if kind == "pg-advisory" and got["event"] == "busy":
        # PostgreSQL ends the session when it reads the closed socket: moments, not a lease.
        after = lock_worker(workers, kind, target, "next", "exclusive", 5, 0)
        got = after.event()
    assert got["event"] == "acquired", got  # flock: the very first try after the kill
    assert got["seq"] == 2
    if kind == "file":
        # "next" releases right after acquiring; probed before that (a loaded machine), it was
        # still listed. Once it has released, nobody may be: the dead holder's description is gone.
        assert after.event()["event"] == "released"
        assert FileLock(target, "probe").holders() == []


@pytest.mark.parametrize("kind", ["sqlite-lease", pytest.param("pg-lease", marks=pytest.mark.postgres)])
def test_a_dead_holders_lease_is_taken_over_after_expiry(kind, target, workers) -> None:
    holder = lock_worker(workers, kind, target, "doomed", "exclusive", 0, -1, 2.0)
    assert holder.event()["event"] == "acquired"
    time.sleep(2.5)  # alive, heartbeating: the lease outlives its first expiry
    early = make_lock(kind, target, "early", "exclusive", 2.0)  # this test's own process
    with pytest.raises(BusyError, match="run doomed") as busy:
        early.acquire(0)
    assert busy.value.holder["pid"] == holder.pid
    holder.kill9()
    with pytest.raises(BusyError, match="run doomed"):
        early.acquire(0)  # still within the dead holder's lease
    got = lock_worker(workers, kind, target, "next", "exclusive", 10, 0, 2.0).event()
    assert got["event"] == "acquired" and got["seq"] == 2


def test_a_lease_taken_over_is_noticed_as_lost(tmp_path) -> None:
    db = str(tmp_path / "l.sqlite")
    lease = LeaseLock(lambda: sqlite3.connect(db, timeout=10), STATE_TABLE, APP, "slow", expiry_s=1, heartbeat_s=0.2)
    lease.acquire()
    with sqlite3.connect(db) as conn:  # an operator's forced unlock, or a takeover after a stall
        conn.execute("DELETE FROM polyv_lock_lease")
    time.sleep(0.8)
    assert lease.lost
    with pytest.raises(BusyError, match="was lost"):
        lease.check()
    lease.release()


def test_lease_expiry_is_capped_at_60_s(tmp_path) -> None:
    with pytest.raises(ValueError, match="at most 60"):
        LeaseLock(lambda: sqlite3.connect(":memory:"), STATE_TABLE, APP, "r", expiry_s=61)


@pytest.mark.postgres
def test_advisory_keys_are_stable_and_distinct(pg_available) -> None:
    assert lock_key("t", "app") == lock_key("t", "app")
    assert len({lock_key("t", "app"), lock_key("t", "app2"), lock_key("t2", "app"), lock_key("t", "app", "0")}) == 4
    assert -(2**63) <= lock_key("t", "app") < 2**63


# ---- the folder state --------------------------------------------------------------------------
def test_folder_state_regression_concurrent_runs_never_crash_and_last_locked_run_wins(tmp_path, workers) -> None:
    """Two processes sync one folder state with different values for the same keys, many times.

    Without the lock this crashed (``FileNotFoundError: base.parquet.tmp``, both compacting)
    and left the state vouching for values POLYV did not hold. With it, every run completes and
    the state holds the values of the run that took the lock last.
    """
    state_dir = tmp_path / "state"
    a = Worker("sync", state_dir, "A", 1, 6, 3000)
    b = Worker("sync", state_dir, "B", 2, 6, 3000)
    workers += [a, b]
    assert a.wait() == 0, a.proc.stderr.read()  # type: ignore[union-attr]
    assert b.wait() == 0, b.proc.stderr.read()  # type: ignore[union-attr]
    runs = [json.loads(line) for w in (a, b) for line in w.proc.stdout.read().splitlines()]  # type: ignore[union-attr]
    assert sorted(r["seq"] for r in runs) == list(range(1, 13))  # each run its own number
    last = max(runs, key=lambda r: r["seq"])
    keys, fps = SyncState(state_dir, APP).load()
    assert len(keys) == 3000 and set(fps.tolist()) == {last["fp"]}
    assert not list((state_dir / APP).glob("log-*")) and not (state_dir / APP / "base.parquet.tmp").exists()


def test_a_dry_run_load_during_another_process_compactions_never_fails(tmp_path, workers) -> None:
    state_dir = tmp_path / "state"
    writer = Worker("compact-loop", state_dir, 40, 20_000)
    workers.append(writer)
    assert writer.event()["event"] == "synced"
    reader = SyncState(state_dir, APP)  # no lock, as in a dry run
    loads, seen = 0, set()
    while writer.proc.poll() is None:
        keys, fps = reader.load()
        # A consistent snapshot: every key, all with the value of one run (each run sets all).
        assert len(keys) == 20_000
        values = set(fps.tolist())
        assert len(values) == 1, values
        seen |= values
        loads += 1
    assert writer.wait() == 0
    assert loads > 5 and len(seen) > 2  # it really read while the writer was running and compacting


def test_write_operations_need_the_lock(tmp_path) -> None:
    st = SyncState(tmp_path, "app", implicit_lock=False)
    for op in (lambda: st.begin("r"), st.compact, st.reset, st.finish):
        with pytest.raises(StateError, match=r"needs the state's lock: call lock\(run_id\) before load\(\)"):
            op()
    assert len(st.load()[0]) == 0  # a read-only load goes without
    with st.locked("r", mode="shared"):
        with pytest.raises(StateError, match="needs the exclusive lock"):
            st.compact()
        with pytest.raises(StateError, match="needs the exclusive lock"):
            st.reset()


def test_a_second_state_object_in_the_same_process_is_refused_too(tmp_path) -> None:
    a, b = SyncState(tmp_path, "app"), SyncState(tmp_path, "app")
    with a.locked("run-1") as seq:
        assert seq == 1 and a.run_seq == 1
        with pytest.raises(BusyError, match=f"run-1 \\(pid {os.getpid()}"):
            b.lock("run-2")
    assert b.lock("run-2") == 2
    b.unlock()


def test_logs_are_named_and_ordered_by_run_sequence_not_clock(tmp_path) -> None:
    st = SyncState(tmp_path, "app", implicit_lock=False)
    with st.locked("r1") as seq:
        st.begin("r1")
        st.record(np.array([1, 2], np.uint64), np.array([10, 20], np.uint64), synced_at=9e9)  # a clock far ahead
        log_names = [p.name for p in (tmp_path / "app").glob("log-*")]
        assert log_names == [f"log-r{seq:020d}-r1.arrows"]
        st._close_log()  # leave the log uncompacted, as a killed run would
    st2 = SyncState(tmp_path, "app", implicit_lock=False)
    with st2.locked("r2"):
        st2.begin("r2")
        st2.record(np.array([1], np.uint64), np.array([11], np.uint64), synced_at=1.0)  # a clock far behind
        st2._close_log()
        keys, fps = st2.load()
        assert fps.tolist() == [11, 20]  # the later locked run wins, whatever the clocks said
        st2.finish()
    assert SyncState(tmp_path, "app").load()[1].tolist() == [11, 20]


def test_old_clock_named_logs_are_read_before_numbered_ones(tmp_path) -> None:
    import pyarrow as pa

    from polyv_connector.state.folder import _SCHEMA

    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"appId": "app", "fingerprint": "xxh3_64-v2"}))
    # A log of an earlier version, named by a clock reading (here far in the future).
    path = folder / f"log-{99999999999999999999:020d}-old.arrows"
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_stream(f, _SCHEMA) as w:
        w.write_batch(
            pa.record_batch(
                [pa.array([1, 2], pa.uint64()), pa.array([5, 6], pa.uint64()), pa.array([0.0, 0.0])], schema=_SCHEMA
            )
        )
    assert SyncState(tmp_path, "app").load()[1].tolist() == [5, 6]
    st = SyncState(tmp_path, "app", implicit_lock=False)
    with st.locked("new"):
        st.load()
        st.begin("new")
        st.record(np.array([2], np.uint64), np.array([7], np.uint64))
        st.finish()
    assert SyncState(tmp_path, "app").load()[1].tolist() == [5, 7]
    assert not list(folder.glob("log-*"))


def test_a_lost_run_counter_cannot_reorder_runs(tmp_path) -> None:
    st = SyncState(tmp_path, "app", implicit_lock=False)
    for i in range(3):
        with st.locked(f"r{i}"):
            st.begin(f"r{i}")
            st.record(np.array([1], np.uint64), np.array([i + 1], np.uint64))
            st._close_log()  # logs stay, uncompacted
    (tmp_path / "app" / "runseq").unlink()
    with st.locked("after") as seq:
        assert seq == 4  # above every numbered log, not 1
        st.begin("after")
        st.record(np.array([1], np.uint64), np.array([99], np.uint64))
        st.finish()
    assert SyncState(tmp_path, "app").load()[1].tolist() == [99]


def test_shared_holders_record_and_the_last_to_finish_compacts(tmp_path) -> None:
    p1, p2 = SyncState(tmp_path, "app", implicit_lock=False), SyncState(tmp_path, "app", implicit_lock=False)
    with p1.locked("p1", mode="shared"), p2.locked("p2", mode="shared"):
        p1.begin("p1")
        p1.record(np.array([1], np.uint64), np.array([10], np.uint64))
        p1.finish()  # p2 still holds the state: p1's log waits
        assert len(list((tmp_path / "app").glob("log-*"))) == 1
        p2.begin("p2")
        p2.record(np.array([2], np.uint64), np.array([20], np.uint64))
        p2.finish()  # the last holder: it takes the state exclusively and compacts
        assert not list((tmp_path / "app").glob("log-*"))
    whole = SyncState(tmp_path, "app", implicit_lock=False)
    with whole.locked("whole"):
        assert whole.load()[1].tolist() == [10, 20]


def test_reset_keeps_the_lock_and_the_run_counter(tmp_path) -> None:
    st = SyncState(tmp_path, "app", implicit_lock=False)
    with st.locked("r1"):
        st.begin("r1")
        st.record(np.array([1], np.uint64), np.array([1], np.uint64))
        st.finish()
    with st.locked("r2") as seq:
        st.reset()
        assert len(st.load()[0]) == 0
        assert {p.name for p in (tmp_path / "app").iterdir()} >= {"lock", "runseq"}
    assert seq == 2
    with st.locked("r3") as seq:
        assert seq == 3


def test_implicit_lock_for_callers_that_do_not_lock_yet(tmp_path, caplog) -> None:
    st = SyncState(tmp_path, "app")  # the engine, until it calls lock() itself
    st.begin("r")
    assert st.run_seq == 1
    with pytest.raises(BusyError):
        SyncState(tmp_path, "app").lock("other")
    st.record(np.array([1], np.uint64), np.array([1], np.uint64))
    st.finish()
    assert st.run_seq is None  # released after the compaction
    assert "without lock()" in caplog.text
    assert SyncState(tmp_path, "app").lock("other") == 2


def test_state_status_and_unlock(tmp_path, workers) -> None:
    state_dir = tmp_path / "state"
    st = SyncState(state_dir, APP, implicit_lock=False)
    with st.locked("r1"):
        st.begin("r1")
        st.record(np.arange(5, dtype=np.uint64), np.ones(5, np.uint64))
        st.finish()
    status = state_status(state_dir, APP)
    assert status["holder"] is None and status["keys"] == 5 and status["logsPending"] == 0
    assert status["lastRunSeq"] == 1 and int(status["bytesOnDisk"]) > 0  # type: ignore[call-overload]
    holder = lock_worker(workers, "file", str(state_dir / APP), "busy-run", "exclusive", 0, -1)
    assert holder.event()["event"] == "acquired"
    status = state_status(state_dir, APP)
    assert status["holder"]["runId"] == "busy-run" and status["holder"]["pid"] == holder.pid  # type: ignore[index]
    assert status["lastRunSeq"] == 2
    text = state_unlock(state_dir, APP)
    assert "nothing to unlock" in text and "operating system releases" in text and "busy-run" in text
    holder.kill9()
    assert state_status(state_dir, APP)["holder"] is None
    assert "no run holds it" in state_unlock(state_dir, APP)


def test_table_lock_status_and_unlock_of_a_lease_on_sqlite(tmp_path, workers) -> None:
    db = str(tmp_path / "locks.sqlite")
    connect = lambda: sqlite3.connect(db, timeout=10)  # noqa: E731
    holder = lock_worker(workers, "sqlite-lease", db, "stuck", "exclusive", 0, -1, 30)
    assert holder.event()["event"] == "acquired"
    status = table_lock_status(connect, STATE_TABLE, APP)
    assert status["holder"]["runId"] == "stuck" and status["lastRunSeq"] == 1  # type: ignore[index]
    holder.kill9()
    text = table_lock_unlock(connect, STATE_TABLE, APP)
    assert "still held by run stuck" in text and "force" in text  # not expired yet: kept
    text = table_lock_unlock(connect, STATE_TABLE, APP, force=True)
    assert text.startswith("removed 1 lease(s)") and "stuck" in text
    assert table_lock_status(connect, STATE_TABLE, APP)["holder"] is None
    got = make_lock("sqlite-lease", db, "next", "exclusive")
    got.acquire()
    assert got.seq == 2
    got.release()


@pytest.mark.postgres
def test_table_lock_status_and_unlock_of_an_advisory_lock(pg_schema, workers) -> None:
    table = f"{pg_schema}.{STATE_TABLE}"
    tables = f"{pg_schema}.polyv_lock"
    holder = lock_worker(workers, "pg-advisory", pg_schema, "adv-run", "exclusive", 0, -1)
    assert holder.event()["event"] == "acquired"
    status = table_lock_status(pg_connect, table, APP, kind="advisory", lock_tables=tables)
    assert status["holder"]["runId"] == "adv-run" and status["holder"]["pid"] == holder.pid  # type: ignore[index]
    text = table_lock_unlock(pg_connect, table, APP, kind="advisory", lock_tables=tables)
    assert "nothing to unlock" in text and "pg_terminate_backend" in text
    holder.kill9()
    time.sleep(0.5)
    text = table_lock_unlock(pg_connect, table, APP, kind="advisory", lock_tables=tables)
    assert "is not locked" in text
