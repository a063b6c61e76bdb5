"""Sync state: a fingerprint of the value POLYV last confirmed, per (viewerId, customFieldId).

Layout under the state directory, one folder per appId (two accounts never share state)::

    <dir>/<appId>/meta.json          {"appId": ..., "fingerprint": "xxh3_64-v2"}
    <dir>/<appId>/base.parquet       key (uint64), fp (uint64), syncedAt — compacted
    <dir>/<appId>/log-r<seq>-<runId>.arrows  one run's records, appended and fsync'ed
    <dir>/<appId>/lock, lock.holders/  the run lock (flock) and who holds it
    <dir>/<appId>/runseq            the last run sequence number handed out

One run at a time writes the state: a run takes the lock (:meth:`SyncState.lock`) before it
loads the state and keeps it until it has compacted, so it plans against the state no other
run is changing. The lock hands the run a sequence number that names its log: logs are
ordered by it, never by a worker's clock. Logs named ``log-<time_ns>-<runId>`` by earlier
versions are still read, before every numbered one.

Before a batch is sent its keys are recorded with the ``UNCONFIRMED`` fingerprint, and once
POLYV confirms it with the value's; a batch that failed or was in flight when the run died
may or may not have been written by POLYV, so it stays unconfirmed and is sent again.

A run appends every confirmed batch to its log as it goes, so a run killed at any point
loses at most the batches in flight. Logs are folded into ``base.parquet`` (atomically, by
rename) when a run ends; a later run also folds any logs an interrupted run left behind.
A dry run takes no lock: :meth:`SyncState.load` reads a consistent snapshot even while
another run compacts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from polyv_connector.errors import BusyError, StateError
from polyv_connector.fingerprints import FINGERPRINT_VERSION, HashFamily
from polyv_connector.partitioning import WHOLE, Slice
from polyv_connector.state.flock import FileLock, file_slice_holders, fsync_dir, read_file_seq
from polyv_connector.state.locks import LockMode
from polyv_connector.state.partition_rules import acquire_slice
from polyv_connector.state.store import MetaRecord, Opening

log = logging.getLogger("polyv_connector")

_SCHEMA = pa.schema([("key", pa.uint64()), ("fp", pa.uint64()), ("syncedAt", pa.float64())])
# log-r<run seq>-<runId>.arrows since runs are locked; log-<time_ns>-<runId>.arrows before.
_LOG_NAME = re.compile(r"^log-(?:r(?P<seq>\d+)|(?P<ns>\d+))-.*\.arrows$")
# A lock-free reader (a dry run) retries when a compaction replaced what it was reading.
_SNAPSHOT_ATTEMPTS = 6


def _folder_name(app_id: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", app_id) or "_"
    # Never "." or "..": the folder must lie inside the state directory whatever the appId
    # (Credentials.validate refuses such appIds; this holds for any caller).
    return "_" * len(name) if set(name) == {"."} else name


def log_order(path: Path) -> tuple[int, int, str]:
    """Sort key of a log: unrecognised names first, then clock-named (old), then by run sequence number."""
    m = _LOG_NAME.match(path.name)
    if m is None:
        return (0, 0, path.name)
    if m["seq"] is not None:
        return (2, int(m["seq"]), path.name)
    return (1, int(m["ns"]), path.name)


def log_seq(path: Path) -> int | None:
    """The run sequence number in a log's name (None for a clock-named log of an earlier version)."""
    m = _LOG_NAME.match(path.name)
    return int(m["seq"]) if m is not None and m["seq"] is not None else None


class _Vanished(Exception):
    """A file of the snapshot being read was replaced or removed by a compaction meanwhile."""


class SyncState(Opening):
    """The confirmed-value fingerprints of one POLYV account.

    A run calls :meth:`lock` (or uses :meth:`locked`) before :meth:`load` and keeps the lock
    until after :meth:`finish`; :meth:`compact` and :meth:`reset` need it held exclusively.
    A dry run only calls :meth:`load`, without a lock.

    ``implicit_lock`` (transitional, for callers that do not call :meth:`lock` yet): ``begin``,
    ``finish`` and ``reset`` then take the lock themselves (without waiting) and warn, as the
    state such a run loaded was not protected. With ``implicit_lock=False`` they raise
    :class:`StateError` instead.
    """

    #: xxh3: fast, and the folder state's format since its first release (no forced resend).
    hash_family: HashFamily = "xxh3"

    def __init__(self, directory: str | os.PathLike[str], app_id: str, *, implicit_lock: bool = True) -> None:
        self.app_id = app_id
        self.path = Path(directory) / _folder_name(app_id)
        self.implicit_lock = implicit_lock
        self._log: pa.ipc.RecordBatchStreamWriter | None = None
        self._log_file: BinaryIO | None = None
        self._log_path: Path | None = None
        self._lock: FileLock | None = None
        self._slice_lock: FileLock | None = None  # a partition run's own slice
        self._implicit = False  # the lock was taken by begin()/finish()/reset() themselves

    # ---- the lock ----------------------------------------------------------------------------
    def lock(self, run_id: str, timeout_s: float = 0.0, mode: LockMode = "exclusive", part: Slice = WHOLE) -> int:
        """Take the state's lock for run ``run_id``, waiting up to ``timeout_s``; return its run sequence number.

        Call before :meth:`load`. Raises :class:`~polyv_connector.errors.BusyError` naming the
        holder if another run keeps it. ``shared``: partition runs, each also locking its own
        slice ``part`` (``lock-slice-<k>-of-<N>``) and refused while runs with another number
        of partitions hold the state; they record, and the last one to finish compacts.
        """
        if self._lock is not None:
            raise RuntimeError(f"the sync state {self.path} is already locked by run {self._lock.run_id}")
        lock = FileLock(self.path, run_id, mode=mode, seq_floor=self._max_log_seq)
        if part.whole:
            lock.acquire(timeout_s)
        else:
            slice_lock = FileLock(self.path, run_id, mode="exclusive", name=f"lock-{part.name}", take_seq=False)
            acquire_slice(lock, slice_lock, timeout_s, part.partitions, lambda: file_slice_holders(self.path))
            self._slice_lock = slice_lock
        self._lock = lock
        assert lock.seq is not None  # a FileLock that takes a number always has one once held
        return lock.seq

    def unlock(self) -> None:
        """Release the lock (closing this run's log first, if still open). A no-op if not locked."""
        self._close_log()
        lock, self._lock = self._lock, None
        slice_lock, self._slice_lock = self._slice_lock, None
        if slice_lock is not None:
            slice_lock.release()
        self._implicit = False
        if lock is not None:
            lock.release()

    @contextmanager
    def locked(self, run_id: str, timeout_s: float = 0.0, mode: LockMode = "exclusive") -> Iterator[int]:
        """``with state.locked(run_id) as seq:`` — :meth:`lock` … :meth:`unlock`."""
        seq = self.lock(run_id, timeout_s, mode)
        try:
            yield seq
        finally:
            self.unlock()

    @property
    def run_seq(self) -> int | None:
        """This run's sequence number (None while not locked)."""
        return self._lock.seq if self._lock is not None else None

    @property
    def lock_mode(self) -> LockMode | None:
        return self._lock.mode if self._lock is not None else None

    def holders(self) -> list[dict[str, object]]:
        """The runs holding this state's lock (runId, host, pid, since, mode, seq), oldest first."""
        return FileLock(self.path, "").holders()

    def _max_log_seq(self) -> int:
        return max((log_seq(p) or 0 for p in self._logs()), default=0)

    def _require(self, op: str, *, exclusive: bool) -> None:
        if self._lock is None:
            raise StateError(
                f"SyncState.{op}() on {self.path} needs the state's lock: call lock(run_id) before load() "
                "(only a read-only load, as in a dry run, goes without)"
            )
        if exclusive and self._lock.mode != "exclusive":
            raise StateError(f"SyncState.{op}() on {self.path} needs the exclusive lock; this run holds it shared")

    def _ensure_locked(self, op: str, run_id: str, *, exclusive: bool) -> None:
        if self._lock is None and self.implicit_lock:
            log.warning(
                "SyncState.%s() without lock(): locking %s now; the state this run loaded was not "
                "protected from concurrent runs (call lock() before load())",
                op,
                self.path,
            )
            self.lock(run_id)
            self._implicit = True
        self._require(op, exclusive=exclusive)

    # ---- reading -------------------------------------------------------------------------
    def load(self, part: Slice = WHOLE) -> tuple[np.ndarray, np.ndarray]:
        """Sorted unique keys and their fingerprints (last confirmation wins). Empty if none.

        Needs no lock: without one (a dry run) it reads a consistent snapshot, retrying if a
        concurrent compaction replaces the files being read. ``part`` is accepted and the
        whole state returned: xxh3 keys hold no viewer hash to select a partition by (the
        diff only looks up the keys it reads, so the others cost memory, never correctness).
        """
        keys, fps, _, _ = self._load(["key", "fp"])
        return keys, fps

    def _load(self, columns: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[Path]]:
        """Keys, fingerprints, (if asked for) the time of each key's last record, and the logs read."""
        for attempt in range(_SNAPSHOT_ATTEMPTS):
            try:
                return self._load_once(columns)
            except _Vanished:
                time.sleep(0.02 * (attempt + 1))
        raise StateError(
            f"the sync state {self.path} kept changing while being read ({_SNAPSHOT_ATTEMPTS} attempts): "
            "other runs are compacting it; retry"
        )

    def _load_once(self, columns: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[Path]]:
        empty = np.empty(0, np.uint64)
        base = self.path / "base.parquet"
        try:
            # Open the base once and keep it open: a compaction replaces it by rename, and the
            # open file stays the version whose logs are globbed below.
            base_file: BinaryIO | None = open(base, "rb")  # noqa: SIM115 - closed in the finally below
        except FileNotFoundError:
            base_file = None
        try:
            base_id = _file_id(os.fstat(base_file.fileno())) if base_file is not None else None
            logs = self._logs()
            if base_file is None and not logs and not (self.path / "meta.json").exists():
                log.info(
                    "no sync state for appId %s under %s yet: every valid item will be sent",
                    self.app_id,
                    self.path.parent,
                )
                return empty, empty, None, []
            self._check_meta()
            parts: list[pa.Table] = []
            if base_file is not None:
                try:
                    parts.append(pq.read_table(base_file, columns=columns))
                except (pa.ArrowException, OSError) as exc:
                    raise StateError(
                        f"sync state {base} is corrupt ({exc}); delete it or run with "
                        "--reset-state to start over with a full refresh"
                    ) from exc
            parts.extend(_read_log(log).select(columns) for log in logs)
            # Consistent only if no compaction replaced the base since it was opened: its logs
            # may then be gone from the glob (folded into a base this read did not see).
            try:
                now_id: tuple[int, ...] | None = _file_id(os.stat(base))
            except FileNotFoundError:
                now_id = None
            if now_id != base_id:
                raise _Vanished
        finally:
            if base_file is not None:
                base_file.close()
        if not parts:
            # meta.json without data: someone deleted the state's files, or no run confirmed
            # anything yet. Either way nothing can be trusted as unchanged.
            log.warning(
                "the sync state for appId %s under %s holds no confirmed items: every valid item will be sent",
                self.app_id,
                self.path,
            )
            return empty, empty, None, logs
        table = pa.concat_tables(parts)
        keys = table.column("key").to_numpy()
        fps = table.column("fp").to_numpy()
        times = table.column("syncedAt").to_numpy() if "syncedAt" in columns else None
        del table, parts
        if not logs and (len(keys) < 2 or bool(np.all(keys[1:] > keys[:-1]))):
            return keys, fps, times, logs  # a compacted base is already sorted and unique
        # Keep the last record of each key: unique over the reversed arrays.
        uniq, first = np.unique(keys[::-1], return_index=True)
        return uniq, fps[::-1][first], None if times is None else times[::-1][first], logs

    def _logs(self) -> list[Path]:
        """The logs in the order their runs took the lock (clock-named logs of earlier versions first)."""
        return sorted(self.path.glob("log-*.arrows"), key=log_order)

    def _check_meta(self) -> None:
        meta_path = self.path / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise StateError(f"sync state {meta_path} is unreadable ({exc}); run with --reset-state") from exc
        if not isinstance(meta, dict):
            raise StateError(f"sync state {meta_path} is not a JSON object; run with --reset-state")
        if meta.get("appId") != self.app_id:
            raise StateError(
                f"sync state {self.path} belongs to appId {meta.get('appId')!r}, not "
                f"{self.app_id!r}; use another --state-dir"
            )
        if meta.get("fingerprint") != FINGERPRINT_VERSION:
            raise StateError(
                f"sync state {self.path} uses fingerprint {meta.get('fingerprint')!r}; "
                "run with --reset-state (a full refresh) to rebuild it"
            )

    # ---- writing -------------------------------------------------------------------------
    def begin(self, run_id: str) -> None:
        """Open this run's log (named by its run sequence number). Needs the lock; call before :meth:`record`."""
        self._ensure_locked("begin", run_id, exclusive=False)
        assert self._lock is not None
        assert self._lock.seq is not None
        if self._log is not None:
            raise RuntimeError("SyncState.begin() was already called for this run")
        self.path.mkdir(parents=True, exist_ok=True)
        meta = self.path / "meta.json"
        if not meta.exists():
            _atomic_write(meta, json.dumps({"appId": self.app_id, "fingerprint": FINGERPRINT_VERSION}).encode())
        # The lock's sequence number, zero-padded: logs sort in the order their runs took the
        # lock, whatever the workers' clocks say.
        self._log_path = self.path / f"log-r{self._lock.seq:020d}-{run_id}.arrows"
        self._log_file = open(self._log_path, "wb")  # noqa: SIM115 - closed in finish()
        self._log = pa.ipc.new_stream(self._log_file, _SCHEMA)

    def record(
        self, keys: np.ndarray, fps: np.ndarray, synced_at: float | None = None, items: pa.Table | None = None
    ) -> None:
        """Durably append confirmed items (returns after fsync). ``items`` is not kept here."""
        if self._log is None or self._log_file is None:
            raise RuntimeError("SyncState.begin() was not called")
        at = np.full(len(keys), synced_at or time.time())
        self._log.write_batch(
            pa.record_batch([pa.array(keys, pa.uint64()), pa.array(fps, pa.uint64()), pa.array(at)], schema=_SCHEMA)
        )
        self._log_file.flush()
        os.fsync(self._log_file.fileno())

    def _close_log(self) -> None:
        if self._log is not None and self._log_file is not None:
            self._log.close()
            self._log_file.close()
        self._log = None
        self._log_file = None

    def finish(self) -> None:
        """Close the log and, holding the lock exclusively, fold every log into ``base.parquet``.

        A shared holder (a partition run) leaves its log to the next exclusive run's compaction.
        """
        self._close_log()
        try:
            if self._lock is None:
                if not self._logs() and self.implicit_lock:
                    return  # nothing to fold: no reason to wait for (or warn about) the lock
                self._ensure_locked("finish", "compaction", exclusive=True)
            if self.lock_mode == "exclusive":
                self.compact()
            else:
                self._compact_if_last()
        finally:
            if self._implicit:
                self.unlock()

    def _compact_if_last(self) -> None:
        """A partition run that finishes last compacts: it gives up its shared lock and, if no
        other run holds the state then, takes it exclusively for the compaction. Otherwise the
        logs wait for the next run that finishes alone (a partitioned account never runs whole)."""
        assert self._lock is not None
        run_id = self._lock.run_id
        self.unlock()
        alone = FileLock(self.path, run_id, mode="exclusive", take_seq=False)
        try:
            alone.acquire(0.0)
        except BusyError:
            log.debug("%s is held by other runs: its logs are compacted by the last one to finish", self.path)
            return
        self._lock = alone
        try:
            self.compact()
        finally:
            self._lock = None
            alone.release()

    def compact(self) -> None:
        """Fold every log into ``base.parquet`` (atomically, by rename). Needs the exclusive lock."""
        self._require("compact", exclusive=True)
        if self._log is not None:
            raise RuntimeError("SyncState.compact() while this run's log is open: call finish()")
        if not self._logs():
            return
        keys, fps, times, logs = self._load(["key", "fp", "syncedAt"])
        table = pa.table(
            {
                "key": pa.array(keys, pa.uint64()),
                "fp": pa.array(fps, pa.uint64()),
                "syncedAt": pa.array(times if times is not None else np.full(len(keys), time.time())),
            },
            schema=_SCHEMA,
        )
        tmp = self.path / "base.parquet.tmp"
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path / "base.parquet")
        fsync_dir(self.path)
        # Oldest first: a lock-free reader that sees some of the folded logs still sees a suffix
        # of them, which re-applied over the new base changes nothing.
        for log_path in logs:
            log_path.unlink(missing_ok=True)
        fsync_dir(self.path)

    def reset(self) -> None:
        """Forget everything confirmed (next run is a full refresh). Needs the exclusive lock.

        The lock, its holders and the run counter stay: numbers keep increasing across resets.
        """
        if self._lock is None and self.implicit_lock and not self.path.exists():
            return  # nothing to forget: no reason to take (or wait for) the lock
        implicit_before = self._implicit
        self._ensure_locked("reset", "reset", exclusive=True)
        try:
            for p in self.path.glob("*"):
                if p.name == "meta.json" or p.name.startswith("base.parquet") or p.name.startswith("log-"):
                    p.unlink(missing_ok=True)
            fsync_dir(self.path)
        finally:
            if self._implicit and not implicit_before:
                self.unlock()

    # ---- position and metadata -------------------------------------------------------------
    def position(self) -> str:
        """The run counter and the identity of every data file: any run that took the lock,
        recorded a batch, compacted or reset changes it. Read without the lock."""
        parts = [str(read_file_seq(self.path)) if self.path.exists() else "0"]
        for path in [self.path / "base.parquet", *self._logs()]:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            parts.append(f"{path.name}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
        return "|".join(parts)

    def _meta_path(self, part: Slice) -> Path:
        return self.path / f"meta-{part.name}.json"

    def read_meta(self, part: Slice = WHOLE) -> MetaRecord:
        """This account's and slice's metadata record (``{}`` if none); needs no lock."""
        path = self._meta_path(part)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateError(f"the state's metadata {path} is unreadable ({exc}); delete it") from exc
        if not isinstance(record, dict):
            raise StateError(f"the state's metadata {path} is not a JSON object; delete it")
        return record

    def write_meta(self, record: MetaRecord, part: Slice = WHOLE) -> None:
        """Replace this account's and slice's metadata record (atomically); needs the lock.

        One file per slice: partition runs hold the account shared, each writes its own. A
        reset keeps it (it forgets confirmations, not what was learnt about the source)."""
        self._require("write_meta", exclusive=part.whole)
        data = json.dumps(record, allow_nan=False, sort_keys=True).encode()
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self._meta_path(part), data)
        fsync_dir(self.path)


def _file_id(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _read_log(path: Path) -> pa.Table:
    """Read a run log; a tail cut short by a kill is ignored (those batches were not durable).

    Raises :class:`_Vanished` if the log is gone (a concurrent compaction folded it).
    """
    batches: list[pa.RecordBatch] = []
    try:
        source = pa.memory_map(str(path))
    except FileNotFoundError as exc:
        raise _Vanished from exc
    try:
        with pa.ipc.open_stream(source) as reader:
            for batch in reader:
                batches.append(batch)
    except (pa.ArrowInvalid, OSError, EOFError):
        pass
    return pa.Table.from_batches(batches, schema=_SCHEMA)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
