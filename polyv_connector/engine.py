"""One sync run: source -> checks and expectations -> plan -> batches -> transport -> report.

Two passes over the input, memory bounded by the batch sizes plus about 40 bytes per item:

1. *Plan*: stream the source, turn rows into items, check them, fingerprint them and spill
   them (with their rejection reasons) to a temporary Arrow file. Then, over compact NumPy
   arrays: duplicates, the diff against the sync state, run-level gates.
2. *Send*: stream the spill again, batch the pending items, send them; each confirmed batch
   is checkpointed into the state at once. Then stream the spill a last time to write the
   report, in input order, one row per item.

The CLI and the Airflow operator both call :func:`sync`.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from polyv_connector import exit_codes
from polyv_connector import reasons as reason_codes
from polyv_connector.batching import Batch, item_table, make_batches
from polyv_connector.config import ColumnMapping, Credentials, SyncOptions
from polyv_connector.errors import InputError, RunAborted, StateError
from polyv_connector.fingerprints import UNCONFIRMED, HashFamily, key_hashes, value_fingerprints
from polyv_connector.items.checks import check_items_coded, code_where, merge_reasons
from polyv_connector.items.convert import ITEM_SCHEMA, convert_items
from polyv_connector.items.text import UnsupportedColumn
from polyv_connector.model import (
    FIELD_ID,
    PENDING,
    ROW_NUMBER,
    STATUS_CODE,
    STATUS_NAME,
    STATUSES,
    UNSUCCESSFUL,
    VALUE,
    VIEWER_ID,
    report_schema,
)
from polyv_connector.partitioning import WHOLE, Slice
from polyv_connector.planner import PlanNotes, plan_duplicates, plan_unchanged
from polyv_connector.progress import Progress
from polyv_connector.report import ReportSink
from polyv_connector.sender import BatchSender, Circuit, ItemsResult, send_all
from polyv_connector.spill import create_file, spill_dir
from polyv_connector.state.folder import SyncState
from polyv_connector.state.store import StateRun, StateStore
from polyv_connector.timeline import TimelineRecorder, TimelineSummary
from polyv_connector.transport.client import PolyvClient
from polyv_connector.transport.ratelimit import RequestBudget, TokenBucket
from polyv_connector.transport.retry import RetryPolicy

log = logging.getLogger("polyv_connector")

_REASON = "_reason"
_REASON_CODE = "_reason_code"
_SPILL_SCHEMA = ITEM_SCHEMA.append(pa.field(_REASON, pa.string())).append(pa.field(_REASON_CODE, pa.string()))
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


class Source(Protocol):
    """Where rows come from: Arrow record batches, nothing else.

    ``setting`` names the setting that chose the source (``--input``, ``source_sql``...), so
    that an input error points at it.
    """

    @property
    def setting(self) -> str: ...

    def check_columns(self, mapping: ColumnMapping) -> None: ...

    def unchanged_in_source(self, columns: list[str], part: Slice = WHOLE) -> int | None:
        """Items the source itself leaves out as unchanged (a diff run in the warehouse), or
        ``None`` when the source has no such diff. Called once, under the state's lock;
        ``part``: count within that slice only."""

    def batches(self, columns: list[str], batch_rows: int, part: Slice = WHOLE) -> Iterator[pa.RecordBatch]:
        """The source's rows; with ``part``, only the rows whose viewerId (``columns[0]``) falls
        in that slice (:mod:`polyv_connector.partitioning`), each exactly once. The engine
        passes ``part`` only to a partition run, so a source written for whole runs still works
        for them."""


class Validator(Protocol):
    """Row and run-level checks beyond the built-in ones (Great Expectations suites)."""

    def validate_chunk(self, items: pa.Table) -> pa.Array | None:
        """Reasons to reject each item of the chunk (null where fine), or None if all fine."""

    def finish(self) -> list[str]:
        """Run-level gate failures (each a reason a person can act on); empty when all pass."""

    def summary(self) -> dict[str, Any]:
        """What the validation found, strict JSON, merged into the run's summary."""


@dataclass
class SyncResult:
    """What a run did. ``to_dict()`` is strict JSON and never holds the secret."""

    run_id: str
    app_id: str
    counts: dict[str, int]
    items: int
    requests_sent: int  # save requests, retries and split halves included
    requests_planned: int
    duration_s: float
    report_location: str | None
    dry_run: bool
    api_requests: int = 0  # every HTTP request, the preflight field list included
    aborted: str | None = None
    abort_cause: str | None = None
    gate_failures: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    #: Items per ``reasonCode`` (every item not sent has one); see :mod:`polyv_connector.reasons`.
    counts_by_reason: dict[str, int] = field(default_factory=dict)
    #: The first :data:`MAX_PROBLEMS` items rejected, failed, in doubt or not attempted, in input
    #: order: ``rowNumber``, ``viewerId``, ``reasonCode``, ``reason`` (never the value).
    problems: list[dict[str, Any]] = field(default_factory=list)
    #: Requests, retries and splits per second of the send phase, for the run page (not XCom).
    timeline: TimelineSummary | None = None

    @property
    def ok(self) -> bool:
        return not self.aborted and not self.gate_failures and not any(self.counts.get(s, 0) for s in UNSUCCESSFUL)

    @property
    def exit_code(self) -> int:
        if self.aborted:
            # An unexpected error stopped sending: a bug (70), not POLYV refusing the run (3).
            return exit_codes.INTERNAL.code if self.abort_cause == "internal" else exit_codes.ABORTED.code
        if self.gate_failures:
            return exit_codes.GATE.code
        return exit_codes.OK.code if self.ok else exit_codes.ITEMS_UNSUCCESSFUL.code

    def summary_line(self) -> str:
        parts = ", ".join(f"{s} {self.counts.get(s, 0):,}" for s in STATUSES if self.counts.get(s, 0))
        verb = "would make" if self.dry_run else "made"
        requests = self.requests_planned if self.dry_run else self.requests_sent
        line = (
            f"run {self.run_id}: {self.items:,} items: {parts or 'nothing'}; {verb} "
            f"{requests:,} save request{'' if requests == 1 else 's'} in {self.duration_s:.1f}s"
        )
        if self.aborted:
            line += f"; STOPPED: {self.aborted}"
        if self.gate_failures:
            line += f"; GATE FAILED: {' | '.join(self.gate_failures)}"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "appId": self.app_id,
            "ok": self.ok,
            "exitCode": self.exit_code,
            "items": self.items,
            "counts": {s: int(self.counts.get(s, 0)) for s in STATUSES},
            "requestsSent": self.requests_sent,
            "apiRequests": self.api_requests,
            "requestsPlanned": self.requests_planned,
            "durationSeconds": round(self.duration_s, 3),
            "report": self.report_location,
            "dryRun": self.dry_run,
            "aborted": self.aborted,
            "abortCause": self.abort_cause,
            "gateFailures": list(self.gate_failures),
            "countsByReason": dict(sorted(self.counts_by_reason.items())),
            "problems": [dict(p) for p in self.problems],
            **self.extra,
        }


def new_run_id(clock: Callable[[], float] = time.time) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


class _Ledger:
    """Per-item facts of the run, as compact arrays indexed by item position."""

    def __init__(self, key_a: np.ndarray, fp: np.ndarray, rejected: np.ndarray) -> None:
        n = len(key_a)
        self.key_a, self.fp = key_a, fp
        self.status = np.zeros(n, dtype=np.int8)
        self.status[rejected] = STATUS_CODE["rejected"]
        self.attempts = np.zeros(n, dtype=np.int16)
        self.result_idx = np.full(n, -1, dtype=np.int32)
        self.results: list[ItemsResult] = []
        self.notes = PlanNotes.empty()  # duplicate / conflict reasons, by position

    def __len__(self) -> int:
        return len(self.status)

    def record(self, result: ItemsResult) -> None:
        self.result_idx[result.indices] = len(self.results)
        self.results.append(result)
        self.status[result.indices] = STATUS_CODE[result.status]
        self.attempts[result.indices] = result.attempts

    def counts(self) -> dict[str, int]:
        codes = np.bincount(self.status, minlength=len(STATUS_NAME) + 1)
        return {STATUS_NAME[c]: int(codes[c]) for c in STATUS_NAME}


def sync(
    source: Source,
    credentials: Credentials,
    options: SyncOptions,
    report: ReportSink | None,
    *,
    validator: Validator | None = None,
    state: StateStore | None = None,
    budget: RequestBudget | None = None,
    progress: Progress | None = None,
    run_id: str | None = None,
    client: PolyvClient | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    seed: int | None = None,
    stop: Circuit | None = None,
    report_fallback_dir: str | os.PathLike[str] | None = None,
) -> SyncResult:
    """Run one sync and write its report. Returns the result; never raises for row problems.

    ``state`` keeps confirmed fingerprints between runs (default: a :class:`SyncState` under
    ``options.state_dir``, or none). Raises :class:`ConfigError`/:class:`InputError` (before
    any save request) for bad settings or input, and :class:`StateError` for an
    untrustworthy state. ``client`` is the POLYV client to use (e.g. an Airflow hook's); by
    default the run makes its own and closes it. Whatever the run raises, the report it had
    started is dropped (``report.abort()``): a partial report never stands. A run that POLYV refuses
    (credentials, clock, IP block) or that a gate stops still writes its report and returns a
    result whose ``aborted`` / ``gate_failures`` say why (``exit_code`` non-zero).

    ``stop`` lets another thread or a signal handler stop the run (:meth:`Circuit.stop`): no
    new request leaves, requests in flight get a few seconds to answer (the rest are reported
    ``in_doubt``), the report is written and the result says ``aborted`` with cause
    ``stopped``. An exception raised while sending (``KeyboardInterrupt``, Airflow's task
    timeout) is treated the same way, then re-raised once the report is written;
    :func:`interrupted_result` gives the result it carries.

    When ``report`` cannot be written (a warehouse error at write or commit), the whole report
    goes to a Parquet file under ``report_fallback_dir`` (default: ``$AIRFLOW_HOME/polyv_reports``,
    else ``polyv_reports`` in the temp directory) and the result names it (``reportFallback``).
    """
    try:
        started = clock()
        options.validate()
        credentials.validate()
        run_id = run_id or new_run_id(clock)
        if state is None and options.state_dir:
            state = SyncState(options.state_dir, credentials.app_id, implicit_lock=False)
        if state is not None and state.app_id != credentials.app_id:
            raise StateError(f"the sync state is for appId {state.app_id!r}, not {credentials.app_id!r}")
        with _opened(state, options, run_id) as held:
            result, interrupted = _locked_run(
                source,
                credentials,
                options,
                report,
                validator=validator,
                state=held,
                budget=budget,
                progress=progress or Progress(),
                run_id=run_id,
                client=client,
                clock=clock,
                sleep=sleep,
                seed=seed,
                started=started,
                stop=stop,
                report_fallback_dir=report_fallback_dir,
            )
        # Measured once the state is finished (the folder store compacts then).
        result.duration_s = clock() - started
        if interrupted is not None:
            # The report and the state are complete: now let the caller's stop take its course.
            interrupted.polyv_sync_result = result  # type: ignore[attr-defined]
            log.warning("%s", result.summary_line())
            raise interrupted
    except BaseException as exc:
        # The engine owns the whole run: a run that fails leaves no partial report behind
        # (a run interrupted while sending has written its whole report already).
        if report is not None and interrupted_result(exc) is None:
            report.abort()
        raise
    if validator is not None:
        result.extra.update(validator.summary())
    return result


@contextmanager
def _opened(state: StateStore | None, options: SyncOptions, run_id: str) -> Iterator[StateRun | None]:
    """The state as this run holds it (see :meth:`StateStore.open`), or None without a state."""
    if state is None:
        yield None
        return
    with state.open(run_id, options.slice, options.lock_timeout_s, options.dry_run) as held:
        yield held


def _locked_run(
    source: Source,
    credentials: Credentials,
    options: SyncOptions,
    report: ReportSink | None,
    *,
    validator: Validator | None,
    state: StateRun | None,
    budget: RequestBudget | None,
    progress: Progress,
    run_id: str,
    client: PolyvClient | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    seed: int | None,
    started: float,
    stop: Circuit | None,
    report_fallback_dir: str | os.PathLike[str] | None,
) -> tuple[SyncResult, BaseException | None]:
    """The run with its state held; returns the result and what interrupted sending, if anything."""
    # Under the lock: the source's columns are checked against the state the run plans with.
    source.check_columns(options.mapping)
    state_keys, state_fps = _load_state(state, options)
    # Counted before sending: afterwards the rows this run sends are unchanged too.
    columns = options.mapping.source_columns
    if options.full_refresh:
        unchanged_in_source = None
    elif options.slice.whole:
        unchanged_in_source = source.unchanged_in_source(columns)
    else:
        unchanged_in_source = source.unchanged_in_source(columns, options.slice)

    own_client = client is None
    timeline: TimelineRecorder | None = None
    if client is None:
        client = PolyvClient(credentials, options.send, budget=budget or TokenBucket(options.send.max_rps), clock=clock)
    circuit = stop if stop is not None else Circuit()
    interrupted: BaseException | None = None
    fallback: dict[str, str] = {}
    try:
        known_fields = None
        if options.check_fields:
            try:
                known_fields = {
                    f["customFieldId"]
                    for f in client.list_fields(sleep=sleep)
                    if isinstance(f, dict) and f.get("customFieldId")
                }
            except RunAborted as abort:
                circuit.open(abort)
        with spill_dir() as tmp:
            spill_path = tmp / "items.arrow"
            family: HashFamily = state.store.hash_family if state is not None else "xxh3"
            ledger = _plan_pass(source, options, known_fields, validator, spill_path, progress, circuit, family=family)
            # Give the Arrow pool's freed chunk buffers back to the OS before the long send phase.
            pa.default_memory_pool().release_unused()
            gate_failures = validator.finish() if validator else []
            gate_failures += _rejected_fraction_gate(ledger, options)
            if not options.full_refresh:
                pending = ledger.status == PENDING
                ledger.status[plan_unchanged(ledger.key_a, ledger.fp, pending, state_keys, state_fps)] = STATUS_CODE[
                    "unchanged"
                ]
            pending_count = int(np.count_nonzero(ledger.status == PENDING))
            requests_planned = math.ceil(pending_count / options.send.batch_size)
            closing = _Closing()
            if gate_failures:
                log.warning("data-quality gate failed, nothing is sent: %s", " | ".join(gate_failures))
                closing.gate = "not sent: a data-quality gate failed: " + " | ".join(gate_failures)
                closing.reasons["not_attempted"] = closing.gate
                closing.codes["not_attempted"] = reason_codes.GATE_FAILED.code
                # Items that failed a check or an expectation stay rejected (they would be even
                # if the gate passed); every other item is not attempted because of the gate.
                ledger.status[ledger.status != STATUS_CODE["rejected"]] = STATUS_CODE["not_attempted"]
            elif options.dry_run:
                ledger.status[ledger.status == PENDING] = STATUS_CODE["dry_run"]
            elif not circuit.is_open and pending_count:
                timeline = TimelineRecorder(_budget_rps(client, options))
                interrupted = _send_pass(
                    spill_path, ledger, options, client, circuit, state, run_id, progress, clock, sleep, seed, timeline
                )
            if circuit.abort is not None:
                closing.reasons["not_attempted"] = f"not sent: the run was stopped: {circuit.abort}"
                closing.codes["not_attempted"] = reason_codes.for_abort_cause(circuit.abort.cause)
            ledger.status[ledger.status == PENDING] = STATUS_CODE["not_attempted"]
            tags = ReportTags.of(credentials.app_id, options)
            fallback, tally = _report_with_fallback(
                spill_path, ledger, report, run_id, closing, clock(), report_fallback_dir, tags
            )
    finally:
        if own_client:
            client.close()
    stopped = circuit.abort
    result = SyncResult(
        run_id=run_id,
        app_id=credentials.app_id,
        counts=ledger.counts(),
        items=len(ledger),
        requests_sent=client.save_requests_sent,
        api_requests=client.requests_sent,
        requests_planned=requests_planned,
        duration_s=clock() - started,
        report_location=fallback.get("reportFallback") or (report.location if report else None),
        dry_run=options.dry_run,
        aborted=str(stopped) if stopped else None,
        abort_cause=stopped.cause if stopped else None,
        gate_failures=gate_failures,
        extra={
            **({} if unchanged_in_source is None else {"unchangedInWarehouse": unchanged_in_source}),
            **({} if options.slice.whole else {"partition": options.partition, "partitions": options.partitions}),
            **fallback,
        },
        counts_by_reason=tally.counts,
        problems=tally.problems,
        timeline=timeline.summary() if timeline is not None else None,
    )
    tally.log_problems()
    return result, interrupted


def interrupted_result(exc: BaseException) -> SyncResult | None:
    """The result of a run that ``exc`` interrupted while sending, its report written; else None."""
    result = getattr(exc, "polyv_sync_result", None)
    return result if isinstance(result, SyncResult) else None


def _load_state(state: StateRun | None, options: SyncOptions) -> tuple[np.ndarray, np.ndarray]:
    empty = np.empty(0, np.uint64), np.empty(0, np.uint64)
    if state is None:
        return empty
    # A partition run needs only its slice's keys (a store may return more: the folder state
    # returns all, its keys do not carry the viewer's partition).
    loaded = state.load(reset_corrupt=options.reset_corrupt_state)
    return empty if options.full_refresh else loaded


def _plan_pass(
    source: Source,
    options: SyncOptions,
    known_fields: set[str] | None,
    validator: Validator | None,
    spill_path: Path,
    progress: Progress,
    circuit: Circuit,
    *,
    family: HashFamily = "xxh3",
) -> _Ledger:
    """Read, check and hash the input (keys and values in the state's hash ``family``)."""
    key_a: list[np.ndarray] = []
    key_b: list[np.ndarray] = []
    fps: list[np.ndarray] = []
    rejected: list[np.ndarray] = []
    first_row = 0
    progress.start("planning", 0)
    create_file(spill_path)  # a full copy of the input: readable by the owner only
    with pa.OSFile(str(spill_path), "wb") as sink, pa.ipc.new_file(sink, _SPILL_SCHEMA) as spill:
        columns, part = options.mapping.source_columns, options.slice
        # Only a partition run passes its slice: a source written for whole runs still works.
        read = (
            source.batches(columns, options.read_batch_rows)
            if part.whole
            else source.batches(columns, options.read_batch_rows, part)
        )
        # rowNumber counts the rows of this run's own read (its slice), from 0.
        for batch in read:
            abort = circuit.abort
            if abort is not None and abort.cause == "stopped":
                # Stopped before anything was sent: no report (the input was not read whole).
                raise abort
            try:
                items, unsendable = convert_items(batch, options.mapping, first_row)
            except (pa.ArrowInvalid, UnsupportedColumn) as exc:
                raise InputError(
                    source.setting,
                    f"rows {first_row}-{first_row + batch.num_rows - 1}: cannot turn a value into text: {exc}",
                ) from exc
            first_row += batch.num_rows
            reasons, codes = check_items_coded(items, known_fields)
            if unsendable is not None:  # invalid UTF-8, inf/NaN, dates past 9999: rejected, named
                reasons = merge_reasons(unsendable, reasons)
                codes = pc.coalesce(code_where(unsendable, reason_codes.UNSENDABLE_TEXT.code), codes)
            extra = validator.validate_chunk(items) if validator else None
            if extra is not None:
                reasons = merge_reasons(reasons, extra)
                codes = pc.coalesce(codes, code_where(extra, reason_codes.EXPECTATION_FAILED.code))
            a, b = key_hashes(items.column(VIEWER_ID).combine_chunks(), items.column(FIELD_ID).combine_chunks(), family)
            key_a.append(a)
            key_b.append(b)
            fps.append(value_fingerprints(items.column(VALUE).combine_chunks(), family))
            rejected.append(reasons.is_valid().to_numpy(zero_copy_only=False))
            spill.write_table(
                items.append_column(_SPILL_SCHEMA.field(_REASON), reasons).append_column(
                    _SPILL_SCHEMA.field(_REASON_CODE), codes
                )
            )
            progress.advance(items.num_rows)
    progress.finish()

    def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        joined = np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
        parts.clear()  # free the chunks now: at 10M items each list holds 80 MB
        return joined

    ledger = _Ledger(cat(key_a, np.uint64), cat(fps, np.uint64), cat(rejected, bool))
    items_per_row = max(1, len(options.mapping.fields))
    dup = plan_duplicates(ledger.key_a, cat(key_b, np.uint64), ledger.fp, ledger.status == PENDING)
    del key_b  # the second key hash only serves duplicate detection: free it before the diff
    ledger.status[dup.duplicate] = STATUS_CODE["duplicate"]
    ledger.status[dup.conflicting] = STATUS_CODE["rejected"]
    ledger.notes = PlanNotes.from_plan(dup, items_per_row)
    return ledger


def _rejected_fraction_gate(ledger: _Ledger, options: SyncOptions) -> list[str]:
    limit = options.max_rejected_fraction
    if limit is None or len(ledger) == 0:
        return []
    rejected = int(np.count_nonzero(ledger.status == STATUS_CODE["rejected"]))
    fraction = rejected / len(ledger)
    if fraction > limit:
        return [
            f"{rejected:,} of {len(ledger):,} items rejected ({fraction:.1%}), above the "
            f"ceiling of {limit:.1%} (max_rejected_fraction); fix the source or raise the ceiling"
        ]
    return []


def _spill_batches(spill_path: Path) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(position of its first item, batch) for each spilled batch, in order."""
    # Read batch by batch, not memory-mapped: mapped pages would count as the process's
    # memory for the whole file.
    with pa.OSFile(str(spill_path)) as f:
        reader = pa.ipc.open_file(f)
        offset = 0
        for i in range(reader.num_record_batches):
            rb = reader.get_batch(i)
            yield offset, rb
            offset += rb.num_rows


def _pending_chunks(spill_path: Path, ledger: _Ledger) -> Iterator[tuple[np.ndarray, pa.Table]]:
    """(positions, item_table) of the pending items, spill batch by spill batch."""
    for offset, rb in _spill_batches(spill_path):
        local = np.flatnonzero(ledger.status[offset : offset + rb.num_rows] == PENDING)
        if len(local):
            idx = pa.array(local)
            yield (
                local + offset,
                item_table(rb.column(VIEWER_ID).take(idx), rb.column(FIELD_ID).take(idx), rb.column(VALUE).take(idx)),
            )


def _send_pass(
    spill_path: Path,
    ledger: _Ledger,
    options: SyncOptions,
    client: PolyvClient,
    circuit: Circuit,
    state: StateRun | None,
    run_id: str,
    progress: Progress,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    seed: int | None,
    timeline: TimelineRecorder,
) -> BaseException | None:
    """Send the pending items. Returns what interrupted sending (to re-raise after the report)."""
    send = options.send
    sender = BatchSender(
        client,
        RetryPolicy(send.max_attempts, send.backoff_base_s, send.backoff_max_s),
        circuit,
        seed=seed,
        sleep=sleep,
        clock=clock,
        timeline=timeline,
    )
    timeline.start()
    progress.start("sending", int(np.count_nonzero(ledger.status == PENDING)), detail=timeline.status_text)

    def on_done(batch: Batch, results: list[ItemsResult]) -> None:
        for result in results:
            ledger.record(result)
            if result.status == "sent" and state is not None:
                # Checkpoint: the state advances only with what POLYV confirmed.
                state.record(
                    ledger.key_a[result.indices],
                    ledger.fp[result.indices],
                    result.synced_at,
                    items=_items_of(batch, result),
                )
        progress.advance(len(batch))

    def marked(batches: Iterator[Batch]) -> Iterator[Batch]:
        # Before a batch leaves, record its keys as unconfirmed: if it fails or the run dies
        # while it is in flight, POLYV may hold its values or not, so the state must not keep
        # vouching for the previous value (a source reverting to it would be skipped).
        for batch in batches:
            if state is not None:
                state.record(ledger.key_a[batch.indices], np.full(len(batch), UNCONFIRMED), clock())
            yield batch

    batches = make_batches(_pending_chunks(spill_path, ledger), send.batch_size, run_id)
    interrupted: BaseException | None = None
    try:
        # send_all opens the circuit for whatever it raises, after recording every answer
        # received and reporting the requests still in flight in_doubt.
        send_all(marked(batches), sender, circuit, send.concurrency, on_done, on_tick=progress.tick)
    except Exception:
        # Whatever broke (a full disk under the state, a bug): still write the report; the
        # items not confirmed so far are reported in_doubt or not_attempted.
        log.exception("sending stopped by an unexpected error")
    except BaseException as exc:  # KeyboardInterrupt, Airflow's task timeout: report first
        log.warning("sending stopped by %s; writing the report", type(exc).__name__)
        interrupted = exc
    progress.finish()
    return interrupted


def _items_of(batch: Batch, result: ItemsResult) -> pa.Table:
    """The strings of the items a result covers (a result may cover part of a split batch)."""
    if len(result.indices) == len(batch):
        return batch.items
    where = np.searchsorted(batch.indices, result.indices)  # batch indices are ascending
    return batch.items.take(pa.array(where))


def default_report_fallback_dir() -> Path:
    """Where a report goes when its sink fails: ``$AIRFLOW_HOME/polyv_reports`` or the temp dir's."""
    home = os.environ.get("AIRFLOW_HOME", "").strip()
    return Path(home or tempfile.gettempdir()) / "polyv_reports"


@dataclass(frozen=True)
class ReportTags:
    """The report columns that are the same on every row of a run."""

    app_id: str
    partition: int | None = None  # None: the run is not partitioned
    partitions: int | None = None
    airflow_run_id: str | None = None

    @classmethod
    def of(cls, app_id: str, options: SyncOptions) -> ReportTags:
        sliced = options.partitions > 1
        return cls(
            app_id=app_id,
            partition=options.partition if sliced else None,
            partitions=options.partitions if sliced else None,
            airflow_run_id=options.airflow_run_id,
        )

    def columns(self, n: int) -> list[pa.Array]:
        """The ``partition``, ``partitions`` and ``airflowRunId`` columns of ``n`` rows."""
        return [
            pa.array([self.partition] * n, pa.int64()),
            pa.array([self.partitions] * n, pa.int64()),
            pa.array([self.airflow_run_id] * n, pa.string()),
        ]


@dataclass
class _Closing:
    """The reasons (text and code) of items the run left unsent, by status, and the gate's text."""

    reasons: dict[str, str] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)
    gate: str | None = None  # set when a data-quality gate failed


class _Tally:
    """Counts by reason code, the first problem items, and example rows per problem code."""

    def __init__(self) -> None:
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
        problem = pc.is_in(status, value_set=pa.array(PROBLEM_STATUSES, pa.string()))
        where = pc.indices_nonzero(problem)
        if len(where) == 0:
            return
        rows = rb.column(ROW_NUMBER)
        picked = rb.select([ROW_NUMBER, VIEWER_ID, "status", "reasonCode", "reason"]).take(where)
        for key in pc.unique(
            pc.binary_join_element_wise(picked.column("status"), picked.column("reasonCode"), "\0")
        ).to_pylist():
            if key is None:
                continue  # a problem item always has a code; never let a gap break the tally
            st, cd = str(key).split("\0", 1)
            mask = pc.and_(pc.equal(status, st), pc.equal(code, cd))
            hits = pc.indices_nonzero(pc.fill_null(mask, False))
            group = self._groups.setdefault((st, cd), [0, [], None])
            group[0] += len(hits)
            if len(group[1]) < EXAMPLE_ROWS:
                first = hits.slice(0, EXAMPLE_ROWS - len(group[1]))
                group[1].extend(rows.take(first).to_pylist())
                if group[2] is None:
                    group[2] = rb.column("reason").take(first.slice(0, 1)).to_pylist()[0]
        room = MAX_PROBLEMS - len(self.problems)
        if room > 0:
            for row in picked.slice(0, room).to_pylist():
                # Never the value: the problem list goes to XCom, logs and notifications.
                self.problems.append(
                    {
                        "rowNumber": row[ROW_NUMBER],
                        "viewerId": row[VIEWER_ID],
                        "reasonCode": row["reasonCode"],
                        "reason": row["reason"],
                    }
                )

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


def _budget_rps(client: PolyvClient, options: SyncOptions) -> float:
    """The rate the run drew on: its own cap, or the shared budget's rate when that is lower."""
    shared = client.budget_rps
    return min(options.send.max_rps, shared) if shared else options.send.max_rps


def _report_with_fallback(
    spill_path: Path,
    ledger: _Ledger,
    report: ReportSink | None,
    run_id: str,
    closing: _Closing,
    now: float,
    fallback_dir: str | os.PathLike[str] | None,
    tags: ReportTags,
) -> tuple[dict[str, str], _Tally]:
    """Write the report; if its sink fails, write it whole to a Parquet file instead.

    The run's sends and its state are already settled: a report table that is down must not
    lose the only record of them, nor fail a run whose rerun would resend nothing.
    Returns ``{"reportFallback": path, "reportError": why}`` when the fallback was used, and the
    tally of reasons (made even without a report: the summary carries it).
    """
    from polyv_connector.report import ParquetReport

    try:
        return {}, _write_report(spill_path, ledger, report, run_id, closing, now, tags)
    except Exception as exc:
        if report is None:
            raise
        error = f"{type(exc).__name__}: {exc}"
        report.abort()
    folder = Path(fallback_dir) if fallback_dir is not None else default_report_fallback_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # the report holds the items' values
    path = folder / f"polyv-report-{run_id}.parquet"
    fallback_sink = ParquetReport(path, setting="report fallback")
    tally = _write_report(spill_path, ledger, fallback_sink, run_id, closing, now, tags)
    log.error("could not write the report to %s (%s); the report is kept in %s", report.location, error, path)
    return {
        "reportFallback": str(path),
        "reportError": f"could not write the report to {report.location}: {error}",
    }, tally


def _write_report(
    spill_path: Path,
    ledger: _Ledger,
    report: ReportSink | None,
    run_id: str,
    closing: _Closing,
    now: float,
    tags: ReportTags,
) -> _Tally:
    """Write one report row per item (to ``report`` when there is one) and tally the reasons."""
    tally = _Tally()
    res = ledger.results
    r_reason = pa.array([r.reason for r in res], pa.string())
    r_code = pa.array([r.reason_code for r in res], pa.string())
    r_error = pa.array([r.error_code for r in res], pa.int64())
    r_http = pa.array([r.http_status for r in res], pa.int64())
    r_request = pa.array([r.request_id for r in res], pa.string())
    r_batch = pa.array([r.batch_id for r in res], pa.string())
    r_time = pa.array([r.synced_at for r in res], pa.float64())
    status_names = pa.array(["pending", *STATUSES], pa.string())
    defaults = pa.array([None, *(closing.reasons.get(s, DEFAULT_REASONS.get(s)) for s in STATUSES)], pa.string())
    default_codes = pa.array([None, *(closing.codes.get(s, DEFAULT_CODES.get(s)) for s in STATUSES)], pa.string())
    note_codes = {1: reason_codes.DUPLICATE.code, 2: reason_codes.CONFLICTING_DUPLICATE.code}
    no_text = pa.scalar(None, pa.string())
    schema = report_schema()
    for offset, rb in _spill_batches(spill_path):
        n = rb.num_rows
        sl = slice(offset, offset + n)
        codes = pa.array(ledger.status[sl].astype(np.int32))
        ridx = ledger.result_idx[sl]
        has = ridx >= 0
        take = pa.array(np.where(has, ridx, 0), mask=~has)

        def per_result(arr: pa.Array, take: pa.Array = take, n: int = n) -> pa.Array:
            return arr.take(take) if len(arr) else pa.nulls(n, arr.type)

        noted, texts = ledger.notes.texts_between(offset, offset + n)
        notes: list[str | None] = [None] * n
        note_code: list[str | None] = [None] * n
        lo = int(np.searchsorted(ledger.notes.positions, offset))
        for i, (p, text) in enumerate(zip(noted, texts, strict=True)):
            notes[int(p) - offset] = text
            note_code[int(p) - offset] = note_codes[int(ledger.notes.kind[lo + i])]
        status = status_names.take(codes)
        own = pc.coalesce(per_result(r_reason), pa.array(notes, pa.string()), rb.column(_REASON))
        own_code = pc.coalesce(per_result(r_code), pa.array(note_code, pa.string()), rb.column(_REASON_CODE))
        if closing.gate is not None:
            # Rejected items keep their own reason and code, the gate's text after it; every
            # other item carries the gate first (code gate_failed), then its own note if any.
            rejected = pc.equal(status, "rejected")
            reason = pc.if_else(
                rejected,
                merge_reasons(own, pa.array([closing.gate] * n, pa.string())),
                merge_reasons(defaults.take(codes), own),
            )
            code = pc.if_else(rejected, own_code, pc.coalesce(default_codes.take(codes), own_code))
        else:
            reason = pc.coalesce(own, defaults.take(codes))
            code = pc.coalesce(own_code, default_codes.take(codes))
        sent = pc.equal(status, "sent")
        reason = pc.if_else(sent, no_text, reason)
        code = pc.if_else(sent, no_text, code)
        synced = pc.coalesce(per_result(r_time), pa.scalar(now))
        synced_ts = pc.round(pc.multiply(synced, 1e6)).cast(pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        batch = pa.record_batch(
            [
                rb.column(ROW_NUMBER),
                rb.column(VIEWER_ID),
                rb.column(FIELD_ID),
                rb.column(VALUE),
                status,
                reason,
                per_result(r_error),
                per_result(r_http),
                per_result(r_request),
                pa.array(ledger.attempts[sl].astype(np.int64)),
                per_result(r_batch),
                pa.array(np.full(n, run_id, dtype=object), pa.string()),
                synced_ts,
                pa.array(np.full(n, tags.app_id, dtype=object), pa.string()),
                code,
                *tags.columns(n),
            ],
            schema=schema,
        )
        tally.add(batch)
        if report is not None:
            report.write(batch)
    if report is not None:
        report.close()
    return tally
