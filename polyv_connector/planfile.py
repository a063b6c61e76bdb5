"""The plan file: the exact items a run would send, and their signed summary (pure format and
signing; no settings, no engine).

One Parquet file (zstd), written in a stream, batch by batch, so a 10M-item plan never sits in
memory:

* four string columns, one row per item a run would send: ``viewerId``, ``customFieldId``,
  ``customFieldValue`` and ``kind`` (``new``, ``changed`` or ``cleared``; dictionary-encoded);
* two key-value entries in the file's footer: ``polyv.plan``, the summary as canonical JSON
  (the account, the item count and a SHA-256 of every column's content, counts by kind and by
  field, the first changes per field, the limits and whether they were breached, the state
  the plan was made against and its position), and ``polyv.plan.hmac``, an HMAC-SHA256 of
  that JSON keyed by the account's appSecret.

The secret is never in the file: only the HMAC it keys. A plan whose items or summary were
edited, or that is checked with another account's secret, fails :func:`verify`
(:class:`PlanRefused`). The column digest is chunking-independent (a column's value bytes and
its value lengths, each hashed as one stream), so the reader may read in any batch size.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from polyv_connector.errors import ConfigError
from polyv_connector.model import FIELD_ID, VALUE, VIEWER_ID

#: The format's name and version, in every summary.
FORMAT: Final = "polyv-plan/1"
KIND: Final = "kind"
SUMMARY_KEY: Final = b"polyv.plan"
HMAC_KEY: Final = b"polyv.plan.hmac"
#: The kinds of change a plan's items have, in this order.
KINDS: Final = ("new", "changed", "cleared")
#: The changes per field the summary keeps for the preview (and the fields it shows them for).
PREVIEW_PER_FIELD: Final = 10
PREVIEW_FIELDS: Final = 50
COLUMNS: Final = (VIEWER_ID, FIELD_ID, VALUE, KIND)
SCHEMA: Final = pa.schema(
    [
        pa.field(VIEWER_ID, pa.string(), nullable=False),
        pa.field(FIELD_ID, pa.string(), nullable=False),
        pa.field(VALUE, pa.string(), nullable=False),
        pa.field(KIND, pa.dictionary(pa.int8(), pa.string()), nullable=False),
    ]
)


class PlanRefused(ConfigError):
    """A plan that must not be applied (altered, another account's, unreadable, stale): nothing
    is sent. A configuration error (exit 2) naming the plan's setting."""


class _ColumnDigest:
    """SHA-256 over a string column's content, independent of how it is chunked: the value bytes
    as one stream, the value lengths (int64, little-endian) as another."""

    def __init__(self) -> None:
        self.data = hashlib.sha256()
        self.lengths = hashlib.sha256()

    def update(self, column: pa.Array) -> None:
        arr = column.dictionary_decode() if pa.types.is_dictionary(column.type) else column
        arr = arr.cast(pa.string())
        if arr.null_count:
            raise ValueError("a plan's column holds a null")
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
        if len(arr):
            data = arr.buffers()[2]
            self.data.update(memoryview(data)[int(offsets[0]) : int(offsets[-1])])
        self.lengths.update(np.diff(offsets).astype("<i8").tobytes())

    def hexdigest(self) -> str:
        return hashlib.sha256(self.data.digest() + self.lengths.digest()).hexdigest()


class _Digest:
    def __init__(self) -> None:
        self.columns = {name: _ColumnDigest() for name in COLUMNS}

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        for name, digest in self.columns.items():
            col = batch.column(name)
            for chunk in col.chunks if isinstance(col, pa.ChunkedArray) else [col]:
                digest.update(chunk)

    def hexdigest(self) -> str:
        return hashlib.sha256("".join(d.hexdigest() for d in self.columns.values()).encode()).hexdigest()


def canonical(summary: Mapping[str, Any]) -> bytes:
    """The summary's bytes as signed: sorted keys, no spaces, strict JSON."""
    return json.dumps(summary, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True).encode()


def signature(summary: Mapping[str, Any], secret: str) -> str:
    """The summary's HMAC-SHA256, keyed by the account's appSecret (hex)."""
    return hmac.new(secret.encode("utf-8"), canonical(summary), hashlib.sha256).hexdigest()


class PlanWriter:
    """Writes a plan file in a stream: :meth:`write` each chunk of items, then :meth:`close` with
    the rest of the summary and the secret. Atomic: the file appears at ``path`` only when
    closed (``<path>.partial`` until then); :meth:`abort` drops it."""

    def __init__(self, path: str | os.PathLike[str], setting: str = "plan_path") -> None:
        self.path = Path(path)
        self.setting = setting
        self._tmp = self.path.with_name(self.path.name + ".partial")
        self._writer: pq.ParquetWriter | None = None
        self._digest = _Digest()
        self.items = 0
        self.by_kind: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.by_field: dict[str, dict[str, int]] = {}
        self.first: dict[str, list[dict[str, str]]] = {}

    def _open(self) -> pq.ParquetWriter:
        if self._writer is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._writer = pq.ParquetWriter(self._tmp, SCHEMA, compression="zstd")
            except OSError as exc:
                raise ConfigError(self.setting, f"cannot write the plan to {self.path}: {exc}") from exc
        return self._writer

    def write(self, viewer: pa.Array, field: pa.Array, value: pa.Array, kind: pa.Array) -> None:
        """One chunk of items: their three columns and their kinds (strings, one of :data:`KINDS`)."""
        if not pa.types.is_dictionary(kind.type):
            kind = pc.dictionary_encode(kind)
        kind = kind.cast(SCHEMA.field(KIND).type)
        batch = pa.RecordBatch.from_arrays(
            [viewer.cast(pa.string()), field.cast(pa.string()), value.cast(pa.string()), kind], schema=SCHEMA
        )
        if not batch.num_rows:
            return
        self._open().write_batch(batch)
        self._digest.update(batch)
        self.items += batch.num_rows
        self._count(batch)

    def _count(self, batch: pa.RecordBatch) -> None:
        table = pa.table({"f": batch.column(FIELD_ID), "k": batch.column(KIND).dictionary_decode()})
        for row in table.group_by(["f", "k"]).aggregate([([], "count_all")]).to_pylist():
            self.by_kind[row["k"]] = self.by_kind.get(row["k"], 0) + row["count_all"]
            per = self.by_field.setdefault(row["f"], dict.fromkeys(KINDS, 0))
            per[row["k"]] = per.get(row["k"], 0) + row["count_all"]
        # The preview's first changes per field: only the fields that still want some.
        wanting = [
            f
            for f in dict.fromkeys(table.column("f").unique().to_pylist())
            if len(self.first.get(f, ())) < PREVIEW_PER_FIELD and (f in self.first or len(self.first) < PREVIEW_FIELDS)
        ]
        for f in wanting:
            if f not in self.first and len(self.first) >= PREVIEW_FIELDS:
                break
            rows = self.first.setdefault(f, [])
            picked = pc.filter(batch, pc.equal(batch.column(FIELD_ID), f)).slice(0, PREVIEW_PER_FIELD - len(rows))
            rows += [{"viewerId": r[VIEWER_ID], "value": r[VALUE], "kind": r[KIND]} for r in picked.to_pylist()]

    def counts(self) -> dict[str, Any]:
        """What the writer counted so far: ``items``, ``byKind``, ``byField``, ``firstChanges``."""
        return {
            "items": self.items,
            "byKind": dict(self.by_kind),
            "byField": {f: dict(c) for f, c in sorted(self.by_field.items())},
            "firstChanges": {f: list(rows) for f, rows in sorted(self.first.items())},
        }

    def close(self, summary: Mapping[str, Any], secret: str) -> dict[str, Any]:
        """Sign ``summary`` (with this writer's counts and digest added) and make the file final.
        Returns the summary as written."""
        writer = self._open()
        full = {**summary, **self.counts(), "format": FORMAT, "itemsSha256": self._digest.hexdigest()}
        writer.add_key_value_metadata({SUMMARY_KEY: canonical(full), HMAC_KEY: signature(full, secret).encode()})
        writer.close()
        self._writer = None
        os.replace(self._tmp, self.path)
        return full

    def abort(self) -> None:
        """Drop the partial file (a plan that was not finished never appears)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._tmp.unlink(missing_ok=True)


def read_summary(path: str | os.PathLike[str], setting: str = "plan_path") -> dict[str, Any]:
    """The plan's summary as stored, **not verified** (to show it; :func:`verify` before applying)."""
    try:
        meta = pq.ParquetFile(str(path)).metadata.metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise PlanRefused(setting, f"cannot read the plan {path}: {exc}") from exc
    raw = meta.get(SUMMARY_KEY)
    if raw is None or HMAC_KEY not in meta:
        raise PlanRefused(setting, f"{path} is not a plan file (no signed summary in its footer)")
    try:
        summary = json.loads(raw)
    except ValueError as exc:
        raise PlanRefused(setting, f"the plan {path} has an unreadable summary") from exc
    if not isinstance(summary, dict) or summary.get("format") != FORMAT:
        raise PlanRefused(setting, f"{path} is not a {FORMAT} plan")
    return summary


def verify(path: str | os.PathLike[str], app_id: str, secret: str, setting: str = "plan_path") -> dict[str, Any]:
    """The plan's summary, once its account, signature and items are checked; raises
    :class:`PlanRefused` (nothing may be sent) for a plan of another account, one whose summary
    or items were altered, or one that is not a plan file."""
    summary = read_summary(path, setting)
    if summary.get("appId") != app_id:
        raise PlanRefused(
            setting,
            f"the plan is for appId {summary.get('appId')!r}, not {app_id!r}: apply it with its own account",
        )
    meta = pq.ParquetFile(str(path)).metadata.metadata or {}
    if not hmac.compare_digest(meta[HMAC_KEY].decode("ascii", "replace"), signature(summary, secret)):
        raise PlanRefused(
            setting, "the plan's signature does not match: it was altered, or made with another appSecret"
        )
    digest = _Digest()
    rows = 0
    try:
        for batch in batches(path, setting=setting):
            digest.update(batch)
            rows += batch.num_rows
    except (ValueError, pa.ArrowException) as exc:
        raise PlanRefused(setting, f"the plan's items are unreadable or altered ({exc})") from exc
    if rows != summary.get("items") or digest.hexdigest() != summary.get("itemsSha256"):
        raise PlanRefused(setting, "the plan's items do not match its signed checksum: the file was altered")
    return summary


def batches(
    path: str | os.PathLike[str], batch_rows: int = 65_536, setting: str = "plan_path"
) -> Iterator[pa.RecordBatch]:
    """The plan's items, in order, as record batches of its four columns."""
    try:
        f = pq.ParquetFile(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise PlanRefused(setting, f"cannot read the plan {path}: {exc}") from exc
    if [n for n in f.schema_arrow.names] != list(COLUMNS):
        raise PlanRefused(setting, f"the plan {path} does not have the columns {', '.join(COLUMNS)}")
    yield from f.iter_batches(batch_size=batch_rows, columns=list(COLUMNS))
