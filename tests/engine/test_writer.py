"""The state writer (engine/writer.py): pre-marks durable, one per chunk, before the chunk's
batches leave; confirmations written by its own thread, in order; a failed write fails the run
(``internal``), never silently lost."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from polyv_connector import SendOptions, SyncOptions, exit_codes, sync
from polyv_connector.engine import plan as plan_module
from polyv_connector.engine.writer import StateWriteError, StateWriter
from polyv_connector.fingerprints import UNCONFIRMED
from polyv_connector.report import ParquetReport
from polyv_connector.sources.parquet import ParquetSource
from polyv_connector.state.folder import SyncState
from tests.conftest import APP_ID, read_report, write_items

SEND = SendOptions(batch_size=10, concurrency=4, max_rps=140)


class WatchedState(SyncState):
    """The folder state, noting each write (thread, keys, pre-mark or not, what POLYV had then)
    and failing the ``fail_at``-th confirmation."""

    def __init__(self, *args: object, sim: object = None, fail_at: int | None = None) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.sim, self.fail_at = sim, fail_at
        self.writes: list[tuple[str, set[int], bool, int]] = []

    def record(self, keys, fps, synced_at=None, items=None):  # type: ignore[no-untyped-def]
        mark = bool(np.all(fps == UNCONFIRMED))
        stored = self.sim.stats.items_stored if self.sim is not None else 0  # type: ignore[attr-defined]
        self.writes.append((threading.current_thread().name, {int(k) for k in keys}, mark, stored))
        confirmations = sum(1 for w in self.writes if not w[2])
        if not mark and self.fail_at is not None and confirmations >= self.fail_at:
            raise OSError(28, "No space left on device")
        super().record(keys, fps, synced_at, items)


def _run(tmp_path, creds, state: SyncState, n: int = 200):  # type: ignore[no-untyped-def]
    rows = [(f"v{i}", "PAY_STATUS", str(i)) for i in range(n)]
    src = write_items(tmp_path / "in.parquet", rows)
    options = SyncOptions(send=SEND, read_batch_rows=50)  # four chunks of 50 items
    return sync(ParquetSource(str(src)), creds, options, ParquetReport(tmp_path / "r.parquet"), state=state)


def test_pre_marks_one_per_chunk_before_its_batches_and_confirmations_off_the_sending_thread(
    tmp_path, sim, creds
) -> None:
    state = WatchedState(tmp_path / "state", APP_ID, sim=sim)
    res = _run(tmp_path, creds, state)
    assert res.ok and res.counts["sent"] == 200
    marks = [w for w in state.writes if w[2]]
    confirms = [w for w in state.writes if not w[2]]
    assert len(marks) == 4 and all(len(w[1]) == 50 for w in marks)  # one write per chunk
    assert len(confirms) == 20  # one per batch of 10
    assert {w[0] for w in state.writes} == {"polyv-state-writer"}
    # Every confirmed key was pre-marked in an earlier write.
    marked: set[int] = set()
    for _, keys, mark, _ in state.writes:
        if mark:
            marked |= keys
        else:
            assert keys <= marked
    # The first chunk's pre-mark was durable before POLYV stored anything.
    assert marks[0][3] == 0
    # And the state holds what POLYV confirmed: a rerun sends nothing.
    again = _run(tmp_path, creds, SyncState(tmp_path / "state", APP_ID))
    assert again.counts["unchanged"] == 200 and again.requests_sent == 0


def test_pre_marks_cover_a_read_chunk_when_the_spill_holds_smaller_batches(
    tmp_path, sim, creds, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The spill's batches are smaller than the read's chunks (for memory); a pre-mark still
    # covers a chunk of the read, each write waiting for the state: 4 writes, not 20.
    monkeypatch.setattr(plan_module, "SPILL_BATCH_ROWS", 10)
    state = WatchedState(tmp_path / "state", APP_ID, sim=sim)
    res = _run(tmp_path, creds, state)
    assert res.ok and res.counts["sent"] == 200
    report = read_report(tmp_path / "r.parquet")  # whole, in input order, from 20 spill batches
    assert [r["viewerId"] for r in report] == [f"v{i}" for i in range(200)]
    assert {r["status"] for r in report} == {"sent"}
    marks = [w for w in state.writes if w[2]]
    assert len(marks) == 4 and all(len(w[1]) == 50 for w in marks)
    marked: set[int] = set()
    for _, keys, mark, _ in state.writes:
        if mark:
            marked |= keys
        else:
            assert keys <= marked
    assert marks[0][3] == 0
    again = _run(tmp_path, creds, SyncState(tmp_path / "state", APP_ID))
    assert again.counts["unchanged"] == 200 and again.requests_sent == 0


def test_a_failed_state_write_fails_the_run_and_the_report_is_still_whole(tmp_path, sim, creds) -> None:
    state = WatchedState(tmp_path / "state", APP_ID, fail_at=3)
    res = _run(tmp_path, creds, state)
    assert res.abort_cause == "internal" and res.exit_code == exit_codes.INTERNAL.code
    assert "No space left on device" in (res.aborted or "")
    rows = read_report(tmp_path / "r.parquet")
    assert [r["rowNumber"] for r in rows] == list(range(200))  # one row per item, in input order
    # Only the two confirmations written before the failure stand: a rerun resends the rest.
    again = _run(tmp_path, creds, SyncState(tmp_path / "state", APP_ID))
    assert again.ok and again.counts["unchanged"] == 20 and again.counts["sent"] == 180


def test_the_writer_raises_a_failed_write_on_the_calling_thread(tmp_path) -> None:
    store = SyncState(tmp_path / "state", APP_ID)
    with store.open("r1") as held:
        writer = StateWriter(held)
        writer.close()
        with pytest.raises(StateWriteError, match="closed"):  # no thread would write it
            writer.confirm(np.array([1], np.uint64), np.array([2], np.uint64), 0.0, None)

    class Broken:
        def record(self, *args: object, **kw: object) -> None:
            raise OSError(5, "I/O error")

    writer = StateWriter(Broken())  # type: ignore[arg-type]
    with pytest.raises(StateWriteError, match="I/O error"):
        writer.mark(np.array([1], np.uint64), np.array([UNCONFIRMED], np.uint64), 0.0)
    writer.close()  # raised once already: the sending thread stopped for it
    # A failure nobody was told of yet (the last confirmation) is raised by close().
    writer = StateWriter(Broken())  # type: ignore[arg-type]
    writer.confirm(np.array([1], np.uint64), np.array([2], np.uint64), 0.0, None)
    with pytest.raises(StateWriteError, match="I/O error"):
        writer.close()


def test_the_report_is_written_chunk_by_chunk_while_sending(tmp_path, sim, creds) -> None:
    """Settled chunks reach the report before the last answer; the report is the same: one row
    per item, in input order."""

    saves_at_write: list[int] = []

    class Watched(ParquetReport):
        def write(self, batch):  # type: ignore[no-untyped-def]
            saves_at_write.append(sim.stats.save_requests)
            super().write(batch)

    rows = [(f"v{i}", "PAY_STATUS", str(i)) for i in range(200)]
    src = write_items(tmp_path / "in.parquet", rows)
    report = Watched(tmp_path / "r.parquet")
    res = sync(ParquetSource(str(src)), creds, SyncOptions(send=SEND, read_batch_rows=50), report)
    assert res.ok and res.requests_sent == 20
    assert len(saves_at_write) == 4
    assert saves_at_write[0] < 20  # the first chunk was written while batches were still out
    written = read_report(tmp_path / "r.parquet")
    assert [r["rowNumber"] for r in written] == list(range(200))
    assert {r["status"] for r in written} == {"sent"}


def test_an_interruption_in_the_middle_of_a_chunk_writes_the_whole_report_again_elsewhere(
    tmp_path, sim, creds, monkeypatch
) -> None:
    """A Ctrl-C that lands while a settled chunk is being written leaves that chunk torn: the
    report is written whole to the fallback file, each row once, never half in the sink.

    A signal lands on the sending thread: here just after it handed the slice to the thread that
    writes ahead (which may write it), before the writer counted it."""
    from polyv_connector.engine import report as engine_report
    from polyv_connector.engine.result import interrupted_result

    handed = engine_report.AheadSink.write
    writes = []

    def interrupted(self, batch):  # type: ignore[no-untyped-def]
        writes.append(batch.num_rows)
        handed(self, batch)
        if len(writes) == 2:
            raise KeyboardInterrupt  # after the sink took the rows, before the writer counted them

    monkeypatch.setattr(engine_report.AheadSink, "write", interrupted)
    rows = [(f"v{i}", "PAY_STATUS", str(i)) for i in range(200)]
    src = write_items(tmp_path / "in.parquet", rows)
    options = SyncOptions(send=SEND, read_batch_rows=50)
    with pytest.raises(KeyboardInterrupt) as caught:
        sync(
            ParquetSource(str(src)),
            creds,
            options,
            ParquetReport(tmp_path / "r.parquet"),
            report_fallback_dir=tmp_path / "fallback",
        )
    result = interrupted_result(caught.value)
    assert result is not None and result.abort_cause == "stopped"
    fallback = result.extra["reportFallback"]
    assert not (tmp_path / "r.parquet").exists()
    assert [r["rowNumber"] for r in read_report(fallback)] == list(range(200))


def test_chunks_are_written_ahead_in_slices_and_the_report_stays_whole(tmp_path, sim, creds, monkeypatch) -> None:
    import polyv_connector.engine.report as engine_report

    monkeypatch.setattr(engine_report, "AHEAD_ROWS", 20)
    sizes: list[int] = []

    class Watched(ParquetReport):
        def write(self, batch):  # type: ignore[no-untyped-def]
            sizes.append(batch.num_rows)
            super().write(batch)

    src = write_items(tmp_path / "in.parquet", [(f"v{i}", "PAY_STATUS", str(i)) for i in range(200)])
    res = sync(
        ParquetSource(str(src)), creds, SyncOptions(send=SEND, read_batch_rows=50), Watched(tmp_path / "r.parquet")
    )
    assert res.ok
    assert sizes == [20, 20, 10] * 4  # each chunk of 50 in slices of at most 20
    assert [r["rowNumber"] for r in read_report(tmp_path / "r.parquet")] == list(range(200))


def test_slices_written_ahead_reach_the_sink_from_a_thread_of_their_own_in_order(tmp_path, sim, creds) -> None:
    threads: list[str] = []

    class Watched(ParquetReport):
        def write(self, batch):  # type: ignore[no-untyped-def]
            threads.append(threading.current_thread().name)
            super().write(batch)

    src = write_items(tmp_path / "in.parquet", [(f"v{i}", "PAY_STATUS", str(i)) for i in range(200)])
    res = sync(
        ParquetSource(str(src)), creds, SyncOptions(send=SEND, read_batch_rows=50), Watched(tmp_path / "r.parquet")
    )
    assert res.ok
    assert threads[0] == "polyv-report-writer"  # not the sending loop's thread
    assert [r["rowNumber"] for r in read_report(tmp_path / "r.parquet")] == list(range(200))


def test_a_sink_failing_in_the_thread_that_writes_ahead_puts_the_whole_report_elsewhere(tmp_path, sim, creds) -> None:
    class Failing(ParquetReport):
        def write(self, batch):  # type: ignore[no-untyped-def]
            if threading.current_thread().name == "polyv-report-writer":
                raise OSError(28, "No space left on device")
            super().write(batch)

    src = write_items(tmp_path / "in.parquet", [(f"v{i}", "PAY_STATUS", str(i)) for i in range(200)])
    res = sync(
        ParquetSource(str(src)),
        creds,
        SyncOptions(send=SEND, read_batch_rows=50),
        Failing(tmp_path / "r.parquet"),
        report_fallback_dir=tmp_path / "fallback",
    )
    assert res.counts["sent"] == 200  # the sends and the state stand
    assert "No space left on device" in res.extra["reportError"]
    assert not (tmp_path / "r.parquet").exists()
    assert [r["rowNumber"] for r in read_report(res.extra["reportFallback"])] == list(range(200))
