"""The state writer: the send pass's writes to the sync state, made by a thread of their own.

The sending loop hands over answers and submits batches on one thread; a state write there (an
fsync, a database transaction) held both up. Here every write of the send pass goes through one
writer thread, in the order it was asked for:

* :meth:`StateWriter.mark` (before a chunk's batches leave: their keys are unconfirmed) waits
  until the write is durable, as before, so nothing leaves before its pre-mark stands;
* :meth:`StateWriter.confirm` (a batch POLYV confirmed) returns at once; at most
  ``max_pending`` confirmations wait, then it waits for room (a slow state slows sending
  rather than holding an ever longer queue that a kill -9 would lose). The confirmations
  waiting when the writer turns to them are written together, in their order
  (:meth:`~polyv_connector.state.store.StateRun.record_many`: one transaction for a table).

A confirmation that a kill -9 catches in the queue is lost like one whose answer was still on
its way: the state does not record it, the key stays unconfirmed (its pre-mark stands) and the
next run sends it again. The state records nothing POLYV did not confirm.

The first write that fails stops the writer: later writes are skipped (the state records less,
never more), and the error is raised on the sending thread by the next :meth:`mark`,
:meth:`confirm` or :meth:`close`, so the run fails (``internal``) instead of losing it.
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from polyv_connector.state.store import StateRun

#: Confirmations allowed to wait for the writer before :meth:`StateWriter.confirm` waits: also
#: how many a slow store writes together (a state table's 1M confirmations took 10 s in groups
#: of one batch, 6 s in groups of five, on PostgreSQL; bench/bench_dag.py). A kill -9 loses at
#: most these: their keys stay unconfirmed, and the next run sends them again.
MAX_PENDING = 16
#: Queued confirmations written together at most (:meth:`StateRun.record_many`).
MAX_COALESCED = MAX_PENDING


class StateWriteError(RuntimeError):
    """A write to the sync state failed in the writer thread (its cause is chained)."""


_Job = tuple["np.ndarray", "np.ndarray", float | None, "pa.Table | None", threading.Event | None]


class StateWriter:
    """Writes one run's pre-marks and confirmations to ``state`` from its own thread."""

    def __init__(self, state: StateRun, max_pending: int = MAX_PENDING) -> None:
        self._state = state
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=max(1, max_pending))
        self._error: BaseException | None = None
        self._raised = False  # the error was raised on the sending thread already
        self._closed = False
        # A daemon: a writer stuck in a hung database must not hold a stopped process hostage.
        self._thread = threading.Thread(target=self._work, name="polyv-state-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        job = self._jobs.get()
        while job is not None:
            if job[4] is not None:  # a pre-mark: written alone, the sending thread waits for it
                self._write([job])
                job[4].set()
                job = self._jobs.get()
                continue
            # Confirmations that queued up while the last write ran go in one write (one
            # transaction for a table store): a slow store catches up instead of paying one
            # commit per batch. Order is kept: a pre-mark or the end closes the group.
            group, after = [job], None
            while len(group) < MAX_COALESCED:
                try:
                    queued = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if queued is None or queued[4] is not None:
                    after = (queued,)
                    break
                group.append(queued)
            self._write(group)
            job = after[0] if after is not None else self._jobs.get()

    def _write(self, jobs: list[_Job]) -> None:
        if self._error is None:
            try:
                if len(jobs) == 1:
                    keys, fps, synced_at, items, _ = jobs[0]
                    self._state.record(keys, fps, synced_at, items=items)
                else:
                    self._state.record_many([(keys, fps, at, items) for keys, fps, at, items, _ in jobs])
            except BaseException as exc:  # raised on the sending thread (check)
                self._error = exc

    def check(self) -> None:
        """Raise :class:`StateWriteError` if a write has failed."""
        if self._error is not None:
            self._raised = True
            raise StateWriteError(
                f"writing the sync state failed: {type(self._error).__name__}: {self._error}"
            ) from self._error

    def mark(self, keys: np.ndarray, fps: np.ndarray, at: float) -> None:
        """Write ``keys`` as unconfirmed (``fps``) and wait until it is durable."""
        self._accepting()
        done = threading.Event()
        self._jobs.put((keys, fps, at, None, done))
        while not done.wait(0.2):
            if not self._thread.is_alive():  # never: the worker sets every event it takes
                raise StateWriteError("the sync state writer stopped")
        self.check()

    def confirm(self, keys: np.ndarray, fps: np.ndarray, synced_at: float, items: pa.Table | None) -> None:
        """Queue one confirmed batch (waits only while ``max_pending`` are already queued)."""
        self._accepting()
        self._jobs.put((keys, fps, synced_at, items, None))

    def _accepting(self) -> None:
        self.check()
        if self._closed:  # no thread would take it: a write after close would be lost
            raise StateWriteError("the sync state writer is closed; nothing more can be written")

    def close(self) -> None:
        """Write what is queued and end the thread; raise if a write failed and that was not
        raised yet (the sending thread stopped for it already otherwise). Idempotent."""
        if not self._closed:
            self._closed = True
            self._jobs.put(None)
            self._thread.join()
        if not self._raised:
            self.check()
