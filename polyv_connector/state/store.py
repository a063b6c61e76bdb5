"""The sync state's contract, and its one entry for a run: :meth:`StateStore.open`.

A run opens the state it plans against (``with store.open(run_id, part, timeout_s, dry_run)
as run:``): the store takes its lock (the account's, or for a partition run the account's
shared and its slice's exclusive), and yields a :class:`StateRun`, which loads the state and
records what POLYV confirms. When the ``with`` block ends normally the store finishes the run
(the folder store compacts); whatever happens, it lets the lock go. A dry run takes no lock and
records nothing: it reads a consistent snapshot.

Besides: :meth:`StateStore.try_open` takes the state only if no other run holds it (for
schedulers that would rather skip than wait), :meth:`StateStore.position` a value that changes
whenever a run changes the state, and a small metadata record per account and slice
(:meth:`StateStore.read_meta`, :meth:`StateRun.write_meta`), e.g. the item count of the last
whole-source run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from polyv_connector.errors import BusyError, StateError
from polyv_connector.partitioning import WHOLE, Slice
from polyv_connector.state.locks import LockMode

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from polyv_connector.fingerprints import HashFamily

log = logging.getLogger("polyv_connector")

#: A metadata record: a small JSON object (numbers, strings, lists, objects).
MetaRecord = dict[str, Any]
#: One batch to record: keys, fingerprints, when POLYV confirmed it, its items (see ``record``).
Recorded = tuple["np.ndarray", "np.ndarray", "float | None", "pa.Table | None"]


class StateStore(Protocol):
    """Where confirmed fingerprints live: a folder (:class:`~polyv_connector.state.folder.SyncState`)
    or a warehouse table (:class:`~polyv_connector.state.table.SqlStateTable`).

    A run uses :meth:`open`; the lower-level methods below it are what ``open`` orders (and what
    tests and the admin commands use one by one).
    """

    app_id: str
    #: How the store's keys and fingerprints are hashed (:mod:`polyv_connector.fingerprints`):
    #: the engine hashes the input the same way.
    hash_family: HashFamily

    def open(
        self, run_id: str, part: Slice = WHOLE, timeout_s: float = 0.0, dry_run: bool = False
    ) -> AbstractContextManager[StateRun]:
        """Lock (waiting up to ``timeout_s``; :class:`BusyError` naming the holder), and yield the run's view."""

    def try_open(
        self, run_id: str, part: Slice = WHOLE, dry_run: bool = False
    ) -> AbstractContextManager[StateRun | None]:
        """As :meth:`open` without waiting: yields ``None`` when another run holds the state."""

    def position(self) -> str:
        """A value that changes whenever a run changes the state (read without the lock)."""

    def read_meta(self, part: Slice = WHOLE) -> MetaRecord:
        """The metadata record of this account and slice (``{}`` when none was written)."""

    def write_meta(self, record: MetaRecord, part: Slice = WHOLE) -> None:
        """Replace the metadata record of this account and slice (the caller holds the lock)."""

    def load(self, part: Slice = WHOLE) -> tuple[np.ndarray, np.ndarray]:
        """Sorted unique uint64 keys and their uint64 fingerprints (last confirmation wins).
        With a ``part``, a store may return only the keys of that viewer partition (it must
        return at least those)."""

    def begin(self, run_id: str) -> None:
        """Prepare to record a run's confirmations."""

    def record(
        self, keys: np.ndarray, fps: np.ndarray, synced_at: float | None = None, items: pa.Table | None = None
    ) -> None:
        """Make one confirmed batch durable before returning. ``items`` holds the batch's
        viewerId, customFieldId and customFieldValue, for stores that keep them."""

    def finish(self) -> None:
        """End the run (compact, release resources)."""

    def reset(self) -> None:
        """Forget everything confirmed for this appId."""

    def lock(self, run_id: str, timeout_s: float = 0.0, mode: LockMode = "exclusive", part: Slice = WHOLE) -> int:
        """Hold this state for the run's whole life (waiting up to ``timeout_s``); raises
        :class:`BusyError` naming the holder. Returns the run's sequence number, which orders
        its records after every earlier run's (never a worker's clock).

        A partition run passes ``mode="shared"`` and its slice ``part``: it holds the account
        shared and its slice exclusively, and is refused (:class:`BusyError`) while runs with
        another number of partitions hold the account."""

    def unlock(self) -> None:
        """Release the lock (idempotent)."""


class StateRun:
    """One run's view of the state it holds: what it plans against and what it records into.

    :meth:`load` once, under the lock (the engine first checks the source's columns); then
    :meth:`record` each batch; the first record begins the run's records in the store.
    """

    def __init__(self, store: StateStore, run_id: str, part: Slice, seq: int | None, dry_run: bool) -> None:
        self.store = store
        self.run_id = run_id
        self.part = part
        #: The run sequence number the lock handed out (None in a dry run).
        self.seq = seq
        self.dry_run = dry_run
        self._begun = False

    def load(self, *, reset_corrupt: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The confirmed keys and fingerprints the run plans against (of its slice, at least).

        An unusable state raises :class:`StateError`; with ``reset_corrupt`` it is forgotten
        instead (not in a dry run, which writes nothing) and the run starts from nothing.
        """
        import numpy as np

        try:
            return self.store.load(self.part)
        except StateError:
            if not reset_corrupt:
                raise
            log.warning("sync state for appId %s is unusable; resetting it (full refresh)", self.store.app_id)
            if not self.dry_run:
                self.store.reset()
            return np.empty(0, np.uint64), np.empty(0, np.uint64)

    def record(
        self, keys: np.ndarray, fps: np.ndarray, synced_at: float | None = None, items: pa.Table | None = None
    ) -> None:
        """Make one batch durable (see :meth:`StateStore.record`)."""
        if self.dry_run:
            raise RuntimeError("a dry run records nothing in the sync state")
        if not self._begun:
            self.store.begin(self.run_id)
            self._begun = True
        self.store.record(keys, fps, synced_at, items)

    def record_many(self, batches: Sequence[Recorded]) -> None:
        """Make several confirmed batches durable, in their order: in one write where the store
        can (``record_many``: one transaction for a table), else one :meth:`record` each."""
        many = getattr(self.store, "record_many", None)
        if many is None or self.dry_run:
            for keys, fps, synced_at, items in batches:
                self.record(keys, fps, synced_at, items)
            return
        if not self._begun:
            self.store.begin(self.run_id)
            self._begun = True
        many(batches)

    def read_meta(self) -> MetaRecord:
        return self.store.read_meta(self.part)

    def key_count(self) -> int | None:
        """Keys the state holds for this account and slice, when the store can count them
        without loading them (a table store); ``None`` otherwise."""
        count = getattr(self.store, "key_count", None)
        return None if count is None else int(count(self.part))

    def write_meta(self, record: MetaRecord) -> None:
        """Replace this account's and slice's metadata record (not in a dry run)."""
        if self.dry_run:
            raise RuntimeError("a dry run writes nothing in the sync state")
        self.store.write_meta(record, self.part)


def _lock(store: StateStore, run_id: str, part: Slice, timeout_s: float) -> int:
    if part.whole:
        seq = store.lock(run_id, timeout_s)
        log.info("sync state for appId %s locked by run %s (run sequence %s)", store.app_id, run_id, seq)
    else:
        # Partitions of one account run side by side (their items are disjoint), never beside a
        # whole-account run: the account's lock shared, the slice's exclusive.
        seq = store.lock(run_id, timeout_s, "shared", part)
        log.info(
            "sync state for appId %s locked shared by run %s for %s (run sequence %s)", store.app_id, run_id, part, seq
        )
    return seq


@contextmanager
def _held(store: StateStore, run_id: str, part: Slice, seq: int) -> Iterator[StateRun]:
    """The run's view while it holds the lock: finished if the body ends normally, unlocked always."""
    try:
        yield StateRun(store, run_id, part, seq, dry_run=False)
        store.finish()
    finally:
        store.unlock()


@contextmanager
def open_state(store: StateStore, run_id: str, part: Slice, timeout_s: float, dry_run: bool) -> Iterator[StateRun]:
    """:meth:`StateStore.open`, for every store: one run per state (or per slice of it, for a
    partition run). The lock is held from before the state is read until after it is finished,
    so no other run's confirmations can interleave with ours. A dry run writes nothing and reads
    a consistent snapshot without the lock."""
    if dry_run:
        yield StateRun(store, run_id, part, None, dry_run=True)
        return
    seq = _lock(store, run_id, part, timeout_s)
    with _held(store, run_id, part, seq) as run:
        yield run


@contextmanager
def try_open_state(store: StateStore, run_id: str, part: Slice, dry_run: bool) -> Iterator[StateRun | None]:
    """:meth:`StateStore.try_open`, for every store: ``None`` instead of waiting for a holder."""
    if dry_run:
        yield StateRun(store, run_id, part, None, dry_run=True)
        return
    try:
        seq = _lock(store, run_id, part, 0.0)
    except BusyError as exc:
        # A look, not a failed run: who holds it, without the failed run's "nothing was sent: retry".
        held = str(exc).split("; nothing was sent", 1)[0]
        log.info("sync state for appId %s is held by another run: %s", store.app_id, held)
        yield None
        return
    with _held(store, run_id, part, seq) as run:
        yield run


class Opening:
    """:meth:`StateStore.open` and :meth:`StateStore.try_open` for a class that has the rest."""

    def open(
        self, run_id: str, part: Slice = WHOLE, timeout_s: float = 0.0, dry_run: bool = False
    ) -> AbstractContextManager[StateRun]:
        """Take the state for run ``run_id`` (see :func:`open_state`)."""
        return open_state(self, run_id, part, timeout_s, dry_run)  # type: ignore[arg-type]

    def try_open(
        self, run_id: str, part: Slice = WHOLE, dry_run: bool = False
    ) -> AbstractContextManager[StateRun | None]:
        """Take the state only if free: the ``with`` block gets ``None`` while another run holds it."""
        return try_open_state(self, run_id, part, dry_run)  # type: ignore[arg-type]
