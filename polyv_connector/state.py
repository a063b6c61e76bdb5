"""Sync state: a fingerprint of the value POLYV last confirmed, per (viewerId, customFieldId).

Layout under the state directory, one folder per appId (two accounts never share state)::

    <dir>/<appId>/meta.json          {"appId": ..., "fingerprint": "xxh3_64-v2"}
    <dir>/<appId>/base.parquet       key (uint64), fp (uint64), syncedAt — compacted
    <dir>/<appId>/log-<ns>-<runId>.arrows  one run's records, appended and fsync'ed

Before a batch is sent its keys are recorded with the ``UNCONFIRMED`` fingerprint, and once
POLYV confirms it with the value's; a batch that failed or was in flight when the run died
may or may not have been written by POLYV, so it stays unconfirmed and is sent again.

A run appends every confirmed batch to its log as it goes, so a run killed at any point
loses at most the batches in flight. Logs are folded into ``base.parquet`` (atomically, by
rename) when a run ends; a later run also folds any logs an interrupted run left behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from polyv_connector.errors import StateError
from polyv_connector.fingerprints import FINGERPRINT_VERSION


class StateStore(Protocol):
    """Where confirmed fingerprints live: a folder (:class:`SyncState`) or a warehouse table."""

    app_id: str

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted unique uint64 keys and their uint64 fingerprints (last confirmation wins)."""

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


log = logging.getLogger("polyv_connector")

_SCHEMA = pa.schema([("key", pa.uint64()), ("fp", pa.uint64()), ("syncedAt", pa.float64())])


def _folder_name(app_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", app_id) or "_"


class SyncState:
    """The confirmed-value fingerprints of one POLYV account."""

    def __init__(self, directory: str | os.PathLike[str], app_id: str) -> None:
        self.app_id = app_id
        self.path = Path(directory) / _folder_name(app_id)
        self._log: pa.ipc.RecordBatchStreamWriter | None = None
        self._log_file: BinaryIO | None = None
        self._log_path: Path | None = None

    # ---- reading -------------------------------------------------------------------------
    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted unique keys and their fingerprints (last confirmation wins). Empty if none."""
        keys, fps, _ = self._load(["key", "fp"])
        return keys, fps

    def _load(self, columns: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Keys, fingerprints and (if asked for) the time of each key's last record."""
        empty = np.empty(0, np.uint64)
        if not self.path.exists():
            log.info(
                "no sync state for appId %s under %s yet: every valid item will be sent", self.app_id, self.path.parent
            )
            return empty, empty, None
        self._check_meta()
        parts: list[pa.Table] = []
        base = self.path / "base.parquet"
        if base.exists():
            try:
                parts.append(pq.read_table(base, columns=columns))
            except (pa.ArrowException, OSError) as exc:
                raise StateError(
                    f"sync state {base} is corrupt ({exc}); delete it or run with "
                    "--reset-state to start over with a full refresh"
                ) from exc
        logs = self._logs()
        parts.extend(_read_log(log).select(columns) for log in logs)
        if not parts:
            # meta.json without data: someone deleted the state's files, or no run confirmed
            # anything yet. Either way nothing can be trusted as unchanged.
            log.warning(
                "the sync state for appId %s under %s holds no confirmed items: every valid item will be sent",
                self.app_id,
                self.path,
            )
            return empty, empty, None
        table = pa.concat_tables(parts)
        keys = table.column("key").to_numpy()
        fps = table.column("fp").to_numpy()
        times = table.column("syncedAt").to_numpy() if "syncedAt" in columns else None
        del table, parts
        if not logs and (len(keys) < 2 or bool(np.all(keys[1:] > keys[:-1]))):
            return keys, fps, times  # a compacted base is already sorted and unique
        # Keep the last record of each key: unique over the reversed arrays.
        uniq, first = np.unique(keys[::-1], return_index=True)
        return uniq, fps[::-1][first], None if times is None else times[::-1][first]

    def _logs(self) -> list[Path]:
        return sorted(self.path.glob("log-*.arrows"), key=lambda p: p.name)

    def _check_meta(self) -> None:
        meta_path = self.path / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise StateError(f"sync state {meta_path} is unreadable ({exc}); run with --reset-state") from exc
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
        """Open this run's log. Call before the first :meth:`record`."""
        self.path.mkdir(parents=True, exist_ok=True)
        meta = self.path / "meta.json"
        if not meta.exists():
            _atomic_write(meta, json.dumps({"appId": self.app_id, "fingerprint": FINGERPRINT_VERSION}).encode())
        # The name starts with a zero-padded clock reading: logs sort in the order they began,
        # on any filesystem (mtime resolution varies).
        self._log_path = self.path / f"log-{time.time_ns():020d}-{run_id}.arrows"
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

    def finish(self) -> None:
        """Close the log and fold every log into ``base.parquet``."""
        if self._log is not None and self._log_file is not None:
            self._log.close()
            self._log_file.close()
            self._log = self._log_file = None
        self.compact()

    def compact(self) -> None:
        logs = self._logs()
        if not logs:
            return
        keys, fps, times = self._load(["key", "fp", "syncedAt"])
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
        for log in logs:
            log.unlink(missing_ok=True)

    def reset(self) -> None:
        """Forget everything confirmed (next run is a full refresh)."""
        for p in self.path.glob("*"):
            p.unlink()


def _read_log(path: Path) -> pa.Table:
    """Read a run log; a tail cut short by a kill is ignored (those batches were not durable)."""
    batches: list[pa.RecordBatch] = []
    try:
        with pa.ipc.open_stream(pa.memory_map(str(path))) as reader:
            for batch in reader:
                batches.append(batch)
    except (pa.ArrowInvalid, OSError, EOFError):
        pass
    return pa.Table.from_batches(batches, schema=_SCHEMA)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
