"""Report sinks: where the per-item report goes. Parquet here; the warehouse table in airflow/."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from polyv_connector.errors import ConfigError
from polyv_connector.model import report_schema
from polyv_connector.paths import check_output_file


class ReportSink(Protocol):
    """Receives the report in record batches, in row order; ``close`` makes it final."""

    location: str

    def write(self, batch: pa.RecordBatch) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None:
        """Drop whatever this run wrote (called when the run fails before ``close``)."""


class ParquetReport:
    """Writes the report to a Parquet file, atomically (a partial report never appears)."""

    def __init__(
        self, path: str | os.PathLike[str], setting: str = "--report", *, input_path: str | None = None
    ) -> None:
        # One check for both front ends, before any request: never the input, nothing inside
        # it, and never a device, FIFO, directory or symlink that os.replace would clobber.
        check_output_file(str(path), setting, input_path=input_path)
        self.path = Path(path)
        self.location = str(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(setting, f"cannot create the report folder {self.path.parent}: {exc}") from exc
        if self.path.is_dir():
            raise ConfigError(setting, f"{self.path} is a directory; give a file path such as report.parquet")
        if not os.access(self.path.parent, os.W_OK):
            raise ConfigError(setting, f"cannot write the report to {self.path}: the folder is not writable")
        self._tmp = self.path.with_name(self.path.name + ".partial")
        # Opened on the first write: a run that fails before reporting leaves no partial file.
        self._writer: pq.ParquetWriter | None = None

    def _open(self) -> pq.ParquetWriter:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, report_schema(), compression="zstd")
        return self._writer

    def write(self, batch: pa.RecordBatch) -> None:
        self._open().write_batch(batch)

    def close(self) -> None:
        self._open().close()  # an empty input still gets a (header-only) report
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop what a failed run had written (the previous report at the path stays)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._tmp.unlink(missing_ok=True)


class MultiReport:
    """Fans the report out to several sinks (e.g. a Parquet file and a warehouse table)."""

    def __init__(self, sinks: list[ReportSink]) -> None:
        self.sinks = sinks
        self.location = ", ".join(s.location for s in sinks)

    def write(self, batch: pa.RecordBatch) -> None:
        for sink in self.sinks:
            sink.write(batch)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def abort(self) -> None:
        for sink in self.sinks:
            sink.abort()
