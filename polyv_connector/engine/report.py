"""The report: one row per item, in input order, and the tally of reasons the result carries."""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from polyv_connector import reasons as reason_codes
from polyv_connector.arrowconv import column, from_numpy, null_string, repeat, scalar, strings
from polyv_connector.bounds import CUT_MARK, REASON_CHARS, VIEWER_ID_CHARS, cut
from polyv_connector.config import SyncOptions
from polyv_connector.engine.ledger import REASON, REASON_CODE, Ledger
from polyv_connector.items.checks import merge_reasons
from polyv_connector.model import (
    FIELD_ID,
    PENDING,
    ROW_NUMBER,
    STATUSES,
    VALUE,
    VIEWER_ID,
    report_schema,
)
from polyv_connector.report import ReportSink
from polyv_connector.report_rows import DEFAULT_REPORT_ROWS, ReportRows, add_counts, filter_report_rows

log = logging.getLogger("polyv_connector")


#: Statuses whose items are listed in ``problems`` and logged at WARNING.
PROBLEM_STATUSES = ("rejected", "failed", "in_doubt", "not_attempted")


#: How many problem items the result lists, and example rows per reason code in the log.
MAX_PROBLEMS = 20


EXAMPLE_ROWS = 3


DEFAULT_REASONS = {
    "unchanged": "unchanged since the last confirmed sync; not sent (use full refresh to resend)",
    "dry_run": "dry run: would be sent",
}


DEFAULT_CODES = {
    "unchanged": reason_codes.UNCHANGED.code,
    "dry_run": reason_codes.DRY_RUN.code,
    "duplicate": reason_codes.DUPLICATE.code,
    "not_attempted": reason_codes.RUN_STOPPED.code,
}


@dataclass(frozen=True)
class ReportTags:
    """The report columns that are the same on every row of a run."""

    app_id: str
    partition: int | None = None  # None: the run is not partitioned
    partitions: int | None = None
    airflow_run_id: str | None = None
    #: Which rows reach the report sink (``report_rows``); the tally counts every row all the same.
    rows: ReportRows = DEFAULT_REPORT_ROWS

    @classmethod
    def of(cls, app_id: str, options: SyncOptions) -> ReportTags:
        sliced = options.partitions > 1
        return cls(
            app_id=app_id,
            partition=options.partition if sliced else None,
            partitions=options.partitions if sliced else None,
            airflow_run_id=options.airflow_run_id,
            rows=options.report_rows,
        )

    def columns(self, n: int) -> list[pa.Array]:
        """The ``partition``, ``partitions`` and ``airflowRunId`` columns of ``n`` rows."""
        return [
            repeat(self.partition, n, pa.int64()),
            repeat(self.partitions, n, pa.int64()),
            repeat(self.airflow_run_id, n, pa.string()),
        ]


@dataclass
class Closing:
    """The reasons (text and code) of items the run left unsent, by status, and the gate's text."""

    reasons: dict[str, str] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)
    gate: str | None = None  # set when a data-quality gate failed


class Tally:
    """Counts by reason code, the first problem items, example rows per problem code, and the
    report rows written and left out (``report_rows``)."""

    def __init__(self, report_rows: ReportRows = DEFAULT_REPORT_ROWS) -> None:
        self.report_rows = report_rows
        self.rows_written = 0
        self.rows_dropped: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.problems: list[dict[str, Any]] = []
        # (status, code) -> [count, example rowNumbers, an example reason]
        self._groups: dict[tuple[str, str], list[Any]] = {}

    def add(self, rb: pa.RecordBatch) -> None:
        """Take one report batch into account (pure bookkeeping, a few vector operations)."""
        code = rb.column("reasonCode")
        if code.null_count == len(code):
            return
        for entry in pc.value_counts(code.drop_null()).to_pylist():
            self.counts[entry["values"]] = self.counts.get(entry["values"], 0) + int(entry["counts"])
        status = rb.column("status")
        problem = pc.is_in(status, value_set=strings(PROBLEM_STATUSES))
        where = pc.indices_nonzero(problem)
        if len(where) == 0:
            return
        rows = rb.column(ROW_NUMBER)
        picked = rb.select([ROW_NUMBER, VIEWER_ID, "status", "reasonCode", "reason"]).take(where)
        for key in pc.unique(
            pc.binary_join_element_wise(picked.column("status"), picked.column("reasonCode"), scalar("\0"))
        ).to_pylist():
            if key is None:
                continue  # a problem item always has a code; never let a gap break the tally
            st, cd = str(key).split("\0", 1)
            mask = pc.and_(pc.equal(status, scalar(st)), pc.equal(code, scalar(cd)))
            hits = pc.indices_nonzero(pc.fill_null(mask, scalar(False)))
            group = self._groups.setdefault((st, cd), [0, [], None])
            group[0] += len(hits)
            if len(group[1]) < EXAMPLE_ROWS:
                first = hits.slice(0, EXAMPLE_ROWS - len(group[1]))
                group[1].extend(rows.take(first).to_pylist())
                if group[2] is None:
                    group[2] = cut(rb.column("reason").take(first.slice(0, 1)).to_pylist()[0], REASON_CHARS)
        room = MAX_PROBLEMS - len(self.problems)
        if room > 0:
            for row in picked.slice(0, room).to_pylist():
                # Never the value: the problem list goes to XCom, logs and notifications.
                self.problems.append(
                    {
                        "rowNumber": row[ROW_NUMBER],
                        # Cut: a hostile viewerId or POLYV's error text must not fill an XCom.
                        "viewerId": cut(row[VIEWER_ID], VIEWER_ID_CHARS),
                        "reasonCode": row["reasonCode"],
                        "reason": cut(row["reason"], REASON_CHARS),
                    }
                )

    def keep(self, rb: pa.RecordBatch) -> pa.RecordBatch:
        """The rows of ``rb`` the report keeps (``report_rows``), counted."""
        kept, dropped = filter_report_rows(rb, self.report_rows)
        self.rows_written += kept.num_rows
        if dropped:
            self.rows_dropped = add_counts(self.rows_dropped, dropped)
        return kept

    def summary(self) -> dict[str, Any]:
        """The summary keys of the report's rows: the setting, rows written, rows left out by status."""
        return {
            "reportRows": self.report_rows,
            "reportRowsWritten": self.rows_written,
            "reportRowsDropped": dict(self.rows_dropped),
        }

    def log_problems(self) -> None:
        """One WARNING per (status, reason code): count, example rows, one example reason."""
        for (st, cd), (count, rows, reason) in sorted(self._groups.items(), key=lambda kv: -kv[1][0]):
            shown = ", ".join(str(r) for r in rows)
            log.warning(
                "%s: %s item(s) %s (e.g. rows %s): %s",
                st,
                f"{count:,}",
                cd,
                shown,
                reason,
            )


def report_with_fallback(
    spill_path: Path,
    ledger: Ledger,
    report: ReportSink | None,
    run_id: str,
    closing: Closing,
    now: float,
    fallback_dir: Path,
    tags: ReportTags,
    writer: ReportWriter | None = None,
) -> tuple[dict[str, str], Tally]:
    """Write the report; if its sink fails, write it whole to a Parquet file instead.

    The run's sends and its state are already settled: a report table that is down must not
    lose the only record of them, nor fail a run whose rerun would resend nothing.
    Returns ``{"reportFallback": path, "reportError": why}`` when the fallback was used, and the
    tally of reasons (made even without a report: the summary carries it). ``writer``: the
    run's :class:`ReportWriter` if it wrote settled chunks while sending (it writes the rest).
    """
    from polyv_connector.report import ParquetReport

    try:
        if writer is None:
            writer = ReportWriter(spill_path, ledger, report, run_id, tags)
        return {}, writer.finish(closing, now)
    except Exception as exc:
        if report is None:
            raise
        error = f"{type(exc).__name__}: {exc}"
        report.abort()
    folder = fallback_dir
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # the report holds the items' values
    path = folder / f"polyv-report-{run_id}.parquet"
    fallback_sink = ParquetReport(path, setting="report fallback")
    tally = ReportWriter(spill_path, ledger, fallback_sink, run_id, tags).finish(closing, now)
    log.error("could not write the report to %s (%s); the report is kept in %s", report.location, error, path)
    return {
        "reportFallback": str(path),
        "reportError": f"could not write the report to {report.location}: {error}",
    }, tally


#: Report rows built and written at once: a slice of a chunk, so that writing ahead holds the
#: sending loop up for a few milliseconds at a time.
AHEAD_ROWS = 16_384


class ReportWriter:
    """Writes the report chunk by chunk (the spill's batches), in input order, from the ledger.

    :meth:`ahead` writes, while the run is still sending, the next slice (:data:`AHEAD_ROWS`)
    of the next chunk whose items are all settled (items are sent in input order, so chunks
    settle one after another): the report is then mostly written by the time the last answer
    arrives, and :meth:`finish` writes the rest with the run's closing reasons (only items still
    pending take them). A row's ``syncedAt`` without an answer of its own is the time its slice
    was written.

    The slices written ahead go to the sink through :class:`AheadSink`, a thread of its own: a
    report table's COPY of a slice (CSV, a round trip, the table's indexes) no longer holds the
    sending loop up; the rows still reach the sink in order, one write at a time, and
    :meth:`finish` waits for them before it writes anything else.

    :meth:`ahead` runs on the sending thread, where a signal may interrupt it anywhere: the
    writer keeps only where it is (chunk, row) between calls (no generator a raise would end),
    and a slice interrupted between its tally and the end of its write leaves the writer *torn*. A
    torn writer, or a sink that failed while writing ahead, makes :meth:`finish` raise, so that
    :func:`report_with_fallback` writes the whole report again elsewhere: never a row twice or
    missing.
    """

    def __init__(
        self, spill_path: Path, ledger: Ledger, report: ReportSink | None, run_id: str, tags: ReportTags
    ) -> None:
        self._spill_path = spill_path
        self._ledger = ledger
        self._report = report
        self._run_id = run_id
        self._tags = tags
        self._file: pa.NativeFile | None = None
        self._reader: pa.ipc.RecordBatchFileReader | None = None
        self._index = 0  # the next chunk to write
        self._offset = 0  # the position of its first item
        self._row = 0  # how far into that chunk the report is written
        self._held: tuple[int, pa.RecordBatch] | None = None
        self._torn = False
        self._failed: BaseException | None = None
        self._ahead_sink: AheadSink | None = None
        self.tally = Tally(tags.rows)

    def _chunk(self) -> pa.RecordBatch | None:
        """The next chunk to write, or None when all are written."""
        if self._reader is None:
            # Read chunk by chunk, not memory-mapped (see spill_batches).
            self._file = pa.OSFile(str(self._spill_path))
            self._reader = pa.ipc.open_file(self._file)
        if self._index >= self._reader.num_record_batches:
            return None
        if self._held is None or self._held[0] != self._index:  # read once, written in slices
            self._held = (self._index, self._reader.get_batch(self._index))
        return self._held[1]

    def ahead(self, now: float) -> None:
        """Write one slice of the next chunk if all its items are settled: one slice per call,
        since this runs between hand-overs and a whole chunk would hold the sending loop up."""
        if self._failed is not None or self._torn:
            return
        try:
            rb = self._chunk()
            if rb is not None and not np.any(self._ledger.status[self._offset : self._offset + rb.num_rows] == PENDING):
                if self._ahead_sink is None and self._report is not None:
                    self._ahead_sink = AheadSink(self._report)
                self._write(rb, Closing(), now, self._ahead_sink)
        except Exception as exc:  # raised again by finish(), which falls back
            log.warning("writing the report while sending failed: %s: %s", type(exc).__name__, exc)
            self._failed = exc

    def finish(self, closing: Closing, now: float) -> Tally:
        """Write the remaining chunks with ``closing``, close the sink, and return the tally."""
        try:
            ahead, self._ahead_sink = self._ahead_sink, None
            if ahead is not None:
                ahead.close()  # the slices written ahead are in the sink (or its error is raised)
            if self._failed is not None:
                raise self._failed
            if self._torn:
                raise RuntimeError("writing the report was interrupted in the middle of a chunk")
            while (rb := self._chunk()) is not None:
                self._write(rb, closing, now)
        finally:
            if self._file is not None:
                self._file.close()
        if self._report is not None:
            self._report.close()
        return self.tally

    def _write(self, rb: pa.RecordBatch, closing: Closing, now: float, sink: AheadSink | None = None) -> None:
        """Write the next slice of chunk ``rb`` (at most :data:`AHEAD_ROWS` rows), to ``sink``
        if given, else to the report sink itself."""
        part = rb.slice(self._row, AHEAD_ROWS)
        batch = report_batch(self._offset + self._row, part, self._ledger, closing, now, self._run_id, self._tags)
        self._torn = True  # until the slice is tallied, written and counted as written
        self.tally.add(batch)
        kept = self.tally.keep(batch)
        if self._report is not None and kept.num_rows:
            (sink or self._report).write(kept)
        self._row += part.num_rows
        if self._row >= rb.num_rows:
            self._index += 1
            self._offset += rb.num_rows
            self._row = 0
        self._torn = False
        del batch, kept, part
        pa.default_memory_pool().release_unused()  # the slice's temporaries: see plan_pass


class AheadSinkError(RuntimeError):
    """The report sink failed in :class:`AheadSink`'s thread (its cause is chained)."""


#: Slices waiting for :class:`AheadSink`'s thread before a write waits for room (about 25 MB of
#: report rows at most): with 2, a report table's COPY held the sending loop up 7 s of a 1M
#: first run; with 8 its tail is written after the last answer instead (bench/bench_dag.py).
AHEAD_PENDING = 8


class AheadSink:
    """Writes the slices a :class:`ReportWriter` writes ahead to its sink from a thread of its
    own, in order. At most :data:`AHEAD_PENDING` slices wait (then :meth:`write` waits: a slow
    sink slows sending rather than holding an ever longer queue). The first failed write stops
    it (later slices are dropped) and is raised, wrapped in :class:`AheadSinkError`, by the next
    :meth:`write` or by :meth:`close`; the report is then written again elsewhere (see
    :func:`report_with_fallback`)."""

    def __init__(self, sink: ReportSink) -> None:
        self._sink = sink
        self._jobs: queue.Queue[pa.RecordBatch | None] = queue.Queue(maxsize=AHEAD_PENDING)
        self._error: BaseException | None = None
        # A daemon: a sink stuck in a hung database must not hold a stopped process hostage.
        self._thread = threading.Thread(target=self._work, name="polyv-report-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (batch := self._jobs.get()) is not None:
            if self._error is None:
                try:
                    self._sink.write(batch)
                except BaseException as exc:  # raised on the sending thread (check)
                    self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise AheadSinkError(
                f"writing the report failed: {type(self._error).__name__}: {self._error}"
            ) from self._error

    def write(self, batch: pa.RecordBatch) -> None:
        """Queue ``batch`` for the sink (waits while :data:`AHEAD_PENDING` are queued)."""
        self._check()
        self._jobs.put(batch)

    def close(self) -> None:
        """Wait until every queued slice is in the sink; raise if a write failed."""
        self._jobs.put(None)
        self._thread.join()
        self._check()


def _result_columns(ledger: Ledger, ridx: np.ndarray) -> tuple[pa.Array, dict[str, pa.Array]]:
    """The ``take`` indices of a chunk's items into its results, and the results' columns (only
    the results the chunk refers to: a chunk written ahead never converts the whole list)."""
    has = ridx >= 0
    used, local = np.unique(ridx[has], return_inverse=True)
    positions = np.zeros(len(ridx), dtype=np.int64)
    positions[has] = local
    take = from_numpy(positions, mask=~has)
    res = [ledger.results[int(i)] for i in used]
    columns = {
        "reason": column([r.reason for r in res], pa.string()),
        "code": column([r.reason_code for r in res], pa.string()),
        "error": column([r.error_code for r in res], pa.int64()),
        "http": column([r.http_status for r in res], pa.int64()),
        "request": column([r.request_id for r in res], pa.string()),
        "batch": column([r.batch_id for r in res], pa.string()),
        "time": column([r.synced_at for r in res], pa.float64()),
    }
    return take, columns


def report_batch(
    offset: int,
    rb: pa.RecordBatch,
    ledger: Ledger,
    closing: Closing,
    now: float,
    run_id: str,
    tags: ReportTags,
) -> pa.RecordBatch:
    """The report rows of one spilled chunk (its first item at ``offset``)."""
    n = rb.num_rows
    sl = slice(offset, offset + n)
    status_names = strings(["pending", *STATUSES])
    defaults = column([None, *(closing.reasons.get(s, DEFAULT_REASONS.get(s)) for s in STATUSES)], pa.string())
    default_codes = column([None, *(closing.codes.get(s, DEFAULT_CODES.get(s)) for s in STATUSES)], pa.string())
    note_codes = {1: reason_codes.DUPLICATE.code, 2: reason_codes.CONFLICTING_DUPLICATE.code}
    no_text = null_string()
    codes = from_numpy(ledger.status[sl].astype(np.int32))
    take, results = _result_columns(ledger, ledger.result_idx[sl])

    def per_result(name: str) -> pa.Array:
        arr = results[name]
        return arr.take(take) if len(arr) else pa.nulls(n, arr.type)

    noted, texts = ledger.notes.texts_between(offset, offset + n)
    lo = int(np.searchsorted(ledger.notes.positions, offset))
    if len(texts):
        # The few noted rows' texts, spread over the chunk's rows by one take (null elsewhere).
        which = np.full(n, -1, dtype=np.int64)
        which[np.asarray(noted, dtype=np.int64) - offset] = np.arange(len(texts))
        spread = from_numpy(np.maximum(which, 0), mask=which < 0)
        kinds = ledger.notes.kind[lo : lo + len(texts)]
        notes = strings(texts).take(spread)
        note_code = strings([note_codes[int(k)] for k in kinds]).take(spread)
    else:
        notes = note_code = pa.nulls(n, pa.string())
    status = status_names.take(codes)
    own = pc.coalesce(per_result("reason"), notes, rb.column(REASON))
    own_code = pc.coalesce(per_result("code"), note_code, rb.column(REASON_CODE))
    if closing.gate is not None:
        # Rejected items keep their own reason and code, the gate's text after it; every
        # other item carries the gate first (code gate_failed), then its own note if any.
        rejected = pc.equal(status, scalar("rejected"))
        reason = pc.if_else(
            rejected,
            merge_reasons(own, repeat(closing.gate, n, pa.string())),
            merge_reasons(defaults.take(codes), own),
        )
        code = pc.if_else(rejected, own_code, pc.coalesce(default_codes.take(codes), own_code))
    else:
        reason = pc.coalesce(own, defaults.take(codes))
        code = pc.coalesce(own_code, default_codes.take(codes))
    sent = pc.equal(status, scalar("sent"))
    reason = cut_texts(pc.if_else(sent, no_text, reason), REASON_CHARS)
    code = pc.if_else(sent, no_text, code)
    synced = pc.coalesce(per_result("time"), scalar(float(now)))
    synced_ts = pc.round(pc.multiply(synced, scalar(1e6))).cast(pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return pa.record_batch(
        [
            rb.column(ROW_NUMBER),
            rb.column(VIEWER_ID),
            rb.column(FIELD_ID),
            rb.column(VALUE),
            status,
            reason,
            per_result("error"),
            per_result("http"),
            per_result("request"),
            from_numpy(ledger.attempts[sl].astype(np.int64)),
            per_result("batch"),
            repeat(run_id, n, pa.string()),
            synced_ts,
            repeat(tags.app_id, n, pa.string()),
            code,
            *tags.columns(n),
        ],
        schema=report_schema(),
    )


def cut_texts(texts: pa.Array, limit: int) -> pa.Array:
    """``texts`` with each string longer than ``limit`` cut as :func:`~polyv_connector.bounds.cut`
    cuts it (nulls stay null); vectorised, since a report has millions of rows."""
    long = pc.fill_null(pc.greater(pc.utf8_length(texts), scalar(limit)), scalar(False))
    if not pc.any(long).as_py():
        return texts
    head = pc.utf8_slice_codeunits(texts, 0, limit - len(CUT_MARK))
    return pc.if_else(long, pc.binary_join_element_wise(head, scalar(CUT_MARK), scalar("")), texts)
