"""Parquet input: a file, a directory of files, or a filesystem URL, read as a stream."""

from __future__ import annotations

import errno
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from polyv_connector.config import ColumnMapping
from polyv_connector.errors import DependencyUnavailable, InputError, PolyvConnectorError
from polyv_connector.items.convert import rows_in_slice
from polyv_connector.items.text import UnsupportedColumn, to_text
from polyv_connector.partitioning import WHOLE, Slice

# errno values of a filesystem that does not answer now (a network mount), as opposed to a
# path that is wrong or forbidden.
_NETWORK_ERRNOS = frozenset(
    {errno.ESTALE, errno.ETIMEDOUT, errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENOTCONN}
)

#: Bytes read from a Parquet file at a time.
_READ_BUFFER = 1 << 20


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
        except OSError as exc:
            # from_uri may already ask the network (the region of an S3 bucket).
            raise DependencyUnavailable(
                self.setting, f"cannot reach {self.path!r}, retry later: {' '.join(str(exc).split())}"
            ) from None
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
            raise self._unreadable(fs, exc) from None
        if info.type == pafs.FileType.NotFound:
            raise InputError(self.setting, f"no such file or directory: {self.path!r}")
        if info.type == pafs.FileType.File:
            return [(fs, path)]
        selector = pafs.FileSelector(path, recursive=True)
        try:
            listed = fs.get_file_info(selector)
        except OSError as exc:
            raise self._unreadable(fs, exc) from None
        found = sorted(
            f.path for f in listed if f.type == pafs.FileType.File and not f.base_name.startswith((".", "_"))
        )
        if not found:
            raise InputError(self.setting, f"directory {self.path!r} holds no Parquet files")
        return [(fs, p) for p in found]

    def _unreadable(self, fs: pafs.FileSystem, exc: OSError) -> PolyvConnectorError:
        """A local input that cannot be read is the user's to fix (exit 2); a remote one (S3, GCS,
        a network filesystem) that does not answer may answer later (exit 75)."""
        text = " ".join(str(exc).split())
        denied = isinstance(exc, PermissionError | FileNotFoundError) or any(
            marker in text for marker in ("AccessDenied", "Access Denied", "NoSuchBucket", "Forbidden", "403", "404")
        )
        if isinstance(exc.errno, int) and exc.errno in _NETWORK_ERRNOS:
            denied = False  # a network filesystem mounted locally (NFS, SMB) that stopped answering
        elif isinstance(fs, pafs.LocalFileSystem):
            denied = True
        if denied:
            return InputError(self.setting, f"cannot read {self.path!r}: {exc.strerror or text}")
        return DependencyUnavailable(self.setting, f"cannot reach {self.path!r}, retry later: {text}")

    def unchanged_in_source(self, columns: Sequence[str], part: Slice = WHOLE) -> int | None:
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
            # Streamed through a 1 MiB buffer, not pre-buffered: pre-buffering holds a whole row
            # group's column chunks (hundreds of MB for 1M-row groups), a fixed cost that
            # made a partition run's memory no smaller than a whole run's (bench_partitions).
            return pq.ParquetFile(fs.open_input_file(path), pre_buffer=False, buffer_size=_READ_BUFFER)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(self.setting, f"{path} is not a readable Parquet file: {exc}") from exc

    def batches(self, columns: list[str], batch_rows: int, part: Slice = WHOLE) -> Iterator[pa.RecordBatch]:
        """Yield record batches of at most ``batch_rows`` rows, holding ``columns`` only.

        With ``part``, each batch is filtered as it is read (on ``columns[0]``, the viewerId):
        a partition run never holds more than one read batch of other partitions' rows.
        """
        for fs, path in self.files():
            pf = self._open(fs, path)
            try:
                # One decoding thread: threads decode several columns' pages at once, each its own buffer.
                for batch in pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False):
                    if part.whole:
                        yield batch
                        continue
                    kept = rows_in_slice(batch, columns[0], part, self.setting)
                    if kept.num_rows:
                        yield kept
            except (pa.ArrowException, OSError) as exc:
                raise InputError(self.setting, f"{path}: corrupt Parquet data: {exc}") from exc
