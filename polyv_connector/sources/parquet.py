"""Parquet input: a file, a directory of files, or a filesystem URL, read as a stream."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from polyv_connector.config import ColumnMapping
from polyv_connector.errors import InputError
from polyv_connector.sources.text import UnsupportedColumn, to_text


@dataclass(frozen=True)
class ParquetSource:
    """Parquet files at ``path`` (file, directory, or URL such as ``s3://b/k`` or ``memory://x``).

    Directories are read file by file in name order, each file batch by batch, so memory
    does not grow with the input and row numbers are stable across runs.
    """

    path: str
    setting: str = "--input"

    def _filesystem(self) -> tuple[pafs.FileSystem, str]:
        try:
            fs, path = pafs.FileSystem.from_uri(self.path)
        except (pa.ArrowInvalid, ValueError):
            pass
        else:
            return fs, str(path)
        if "://" in self.path:
            # Any fsspec protocol (memory://, http://, gcs via gcsfs, ...).
            try:
                import fsspec
            except ImportError as exc:  # pragma: no cover - fsspec is a dependency
                raise InputError(self.setting, f"cannot open {self.path!r}: {exc}") from exc
            try:
                fs, _, paths = fsspec.get_fs_token_paths(self.path)
            except (ValueError, ImportError) as exc:
                raise InputError(self.setting, f"cannot open {self.path!r}: {exc}") from exc
            return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), paths[0]
        return pafs.LocalFileSystem(), self.path

    def files(self) -> list[tuple[pafs.FileSystem, str]]:
        """The Parquet files to read, in order. Raises :class:`InputError` if there are none."""
        fs, path = self._filesystem()
        try:
            info = fs.get_file_info(path)
        except OSError as exc:
            raise InputError(self.setting, f"cannot open {self.path!r}: {exc}") from exc
        if info.type == pafs.FileType.NotFound:
            raise InputError(self.setting, f"no such file or directory: {self.path!r}")
        if info.type == pafs.FileType.File:
            return [(fs, path)]
        selector = pafs.FileSelector(path, recursive=True)
        found = sorted(
            f.path
            for f in fs.get_file_info(selector)
            if f.type == pafs.FileType.File and not f.base_name.startswith((".", "_"))
        )
        if not found:
            raise InputError(self.setting, f"directory {self.path!r} holds no Parquet files")
        return [(fs, p) for p in found]

    def unchanged_in_source(self, columns: Sequence[str]) -> int | None:
        """A file cannot diff against the state itself: always ``None``."""
        return None

    def check_columns(self, mapping: ColumnMapping) -> None:
        """Fail before anything is sent if a file lacks a mapped column or has an unusable type."""
        for fs, path in self.files():
            schema = self._open(fs, path).schema_arrow
            missing = [c for c in mapping.source_columns if c not in schema.names]
            if missing:
                raise InputError(
                    self.setting,
                    f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(schema.names)}); "
                    "set the column mapping (--viewer-id-column/--field-id-column/--value-column "
                    "or --field) to match the file",
                )
            for col in mapping.source_columns:
                try:
                    to_text(pa.nulls(0, schema.field(col).type))
                except UnsupportedColumn as exc:
                    raise InputError(self.setting, f"{path}: column {col!r}: {exc}") from exc

    def _open(self, fs: pafs.FileSystem, path: str) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(fs.open_input_file(path))
        except (pa.ArrowException, OSError) as exc:
            raise InputError(self.setting, f"{path} is not a readable Parquet file: {exc}") from exc

    def batches(self, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Yield record batches of at most ``batch_rows`` rows, holding ``columns`` only."""
        for fs, path in self.files():
            pf = self._open(fs, path)
            try:
                yield from pf.iter_batches(batch_size=batch_rows, columns=columns)
            except (pa.ArrowException, OSError) as exc:
                raise InputError(self.setting, f"{path}: corrupt Parquet data: {exc}") from exc
