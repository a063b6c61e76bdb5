"""One sync run: source -> checks and expectations -> plan -> batches -> transport -> report.

Two passes over the input, memory bounded by the batch sizes plus about 40 bytes per item:

1. *Plan* (:mod:`~polyv_connector.engine.plan`): stream the source, turn rows into items,
   check them, fingerprint them and spill them (with their rejection reasons) to a temporary
   Arrow file (:mod:`~polyv_connector.engine.ledger`). Then, over compact NumPy arrays:
   duplicates, the diff against the sync state, run-level gates, each item's change kind and
   the change limits (:mod:`~polyv_connector.engine.limits`).
2. *Send* (:mod:`~polyv_connector.engine.send`): stream the spill again, batch the pending
   items, send them; each confirmed batch is checkpointed into the state at once. Then stream
   the spill a last time to write the report (:mod:`~polyv_connector.engine.report`), in input
   order, one row per item.

The engine builds nothing: what a run needs (:class:`Run`) is made at the edge
(:mod:`polyv_connector.run`, used by the CLI, the operator and :func:`polyv_connector.sync`), and
what every phase shares is one frozen :class:`~polyv_connector.engine.context.RunContext`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from polyv_connector import reasons as reason_codes
from polyv_connector.config import SyncOptions
from polyv_connector.engine.changes import Breach
from polyv_connector.engine.context import RunContext
from polyv_connector.engine.fields import FieldListAhead
from polyv_connector.engine.ledger import Ledger
from polyv_connector.engine.limits import diff_pass, limit_breaches, read_baseline, record_completed
from polyv_connector.engine.plan import (
    PlanSink,
    Source,
    Validator,
    load_state,
    plan_pass,
    rejected_fraction_gate,
    write_plan,
)
from polyv_connector.engine.report import Closing, ReportTags, ReportWriter, report_with_fallback
from polyv_connector.engine.result import SyncResult, interrupted_result, zero_rows_warning
from polyv_connector.engine.send import budget_rps, send_pass
from polyv_connector.errors import StateError
from polyv_connector.fingerprints import HashFamily
from polyv_connector.model import PENDING, STATUS_CODE
from polyv_connector.report import ReportSink
from polyv_connector.spill import spill_dir
from polyv_connector.state.store import StateRun, StateStore
from polyv_connector.timeline import TimelineRecorder
from polyv_connector.transport.client import PolyvClient
from polyv_connector.transport.retry import RetryPolicy

log = logging.getLogger("polyv_connector")


@dataclass(frozen=True)
class Run:
    """What one run works with, built at the edge (:func:`polyv_connector.run.assemble`).

    :param source: where the rows come from.
    :param app_id: the POLYV account (the state and the report rows name it).
    :param options: the run's settings, validated.
    :param report: where the report goes (None: no report, only the result's tally).
    :param client: the POLYV client (its owner closes it).
    :param retry: the retry policy of every save request.
    :param report_fallback_dir: where a report whose sink fails is kept whole, as Parquet; the
        front end chooses it (the engine knows nothing of Airflow's home).
    :param validator: checks beyond the built-in ones (Great Expectations suites).
    :param state: what POLYV last confirmed (None: send every valid item).
    :param plan: where the items a run would send go, with their kinds, after the diff and
        before anything is sent (``polyv-sync plan``; a run with a plan is a dry run).
    """

    source: Source
    app_id: str
    options: SyncOptions
    report: ReportSink | None
    client: PolyvClient
    retry: RetryPolicy
    report_fallback_dir: Path
    validator: Validator | None = None
    state: StateStore | None = None
    plan: PlanSink | None = None


def _fields_not_checked() -> None:
    """The field list of a run that does not check fields (``check_fields`` off)."""
    return None


def execute(run: Run, ctx: RunContext) -> SyncResult:
    """Run one sync and write its report. Returns the result; never raises for row problems.

    Raises :class:`InputError` (before any save request) for bad input, and
    :class:`StateError` for an untrustworthy state. Whatever the run raises, the report it had
    started is dropped (``report.abort()``): a partial report never stands. A run that POLYV
    refuses (credentials, clock, IP block) or that a gate stops still writes its report and
    returns a result whose ``aborted`` / ``gate_failures`` say why (``exit_code`` non-zero).

    ``ctx.stop`` lets another thread or a signal handler stop the run (:meth:`Circuit.stop`):
    no new request leaves, requests in flight get a few seconds to answer (the rest are
    reported ``in_doubt``), the report is written and the result says ``aborted`` with cause
    ``stopped``. An exception raised while sending (``KeyboardInterrupt``, Airflow's task
    timeout) is treated the same way, then re-raised once the report is written;
    :func:`interrupted_result` gives the result it carries.

    When ``run.report`` cannot be written (a warehouse error at write or commit), the whole
    report goes to a Parquet file under ``run.report_fallback_dir`` and the result names it
    (``reportFallback``).
    """
    try:
        started = ctx.clock()
        state = run.state
        if state is not None and state.app_id != run.app_id:
            raise StateError(f"the sync state is for appId {state.app_id!r}, not {run.app_id!r}")
        with _opened(state, run.options, ctx.run_id) as held:
            result, interrupted = _locked_run(run, ctx, held, started)
        # Measured once the state is finished (the folder store compacts then).
        result.duration_s = ctx.clock() - started
        if interrupted is not None:
            # The report and the state are complete: now let the caller's stop take its course.
            interrupted.polyv_sync_result = result  # type: ignore[attr-defined]
            log.warning("%s", result.summary_line())
            raise interrupted
    except BaseException as exc:
        # The engine owns the whole run: a run that fails leaves no partial report behind
        # (a run interrupted while sending has written its whole report already).
        if run.report is not None and interrupted_result(exc) is None:
            run.report.abort()
        raise
    if run.validator is not None:
        result.extra.update(run.validator.summary())
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
    run: Run, ctx: RunContext, state: StateRun | None, started: float
) -> tuple[SyncResult, BaseException | None]:
    """The run with its state held; returns the result and what interrupted sending, if anything."""
    source, options, client, validator, report = run.source, run.options, run.client, run.validator, run.report
    circuit, clock = ctx.stop, ctx.clock
    # Phase times on the monotonic clock (ctx.clock is the run's calendar, which tests pin).
    began = time.perf_counter()
    phases: dict[str, float] = {}
    # Under the lock: the source's columns are checked against the state the run plans with.
    source.check_columns(options.mapping)
    state_keys, state_fps = load_state(state, options)
    baseline = read_baseline(state, options)
    # Counted before sending: afterwards the rows this run sends are unchanged too.
    columns = options.mapping.source_columns
    if options.full_refresh:
        unchanged_in_source = None
    elif options.slice.whole:
        unchanged_in_source = source.unchanged_in_source(columns)
    else:
        unchanged_in_source = source.unchanged_in_source(columns, options.slice)

    timeline: TimelineRecorder | None = None
    report_writer: ReportWriter | None = None
    interrupted: BaseException | None = None
    fallback: dict[str, str] = {}
    # The preflight's field list is asked for now and waited for by the plan's first check.
    field_list = FieldListAhead(client, ctx.sleep, circuit) if options.check_fields else None
    with spill_dir() as tmp:
        spill_path = tmp / "items.arrow"
        family: HashFamily = state.store.hash_family if state is not None else "xxh3"
        try:
            ledger = plan_pass(
                source,
                options,
                field_list or _fields_not_checked,
                validator,
                spill_path,
                ctx.progress,
                circuit,
                family=family,
            )
        except Exception:
            if field_list is not None:
                field_list.join()  # a failed plan (bad input): no request outlives the run
            raise
        # An interrupt (Ctrl-C, Airflow's task timeout) does not wait for the list's retries;
        # the request left behind only reads the field list.
        if field_list is not None:
            field_list()  # a refusal opens the circuit even if no chunk was read
        # Give the Arrow pool's freed chunk buffers back to the OS before the long send phase.
        pa.default_memory_pool().release_unused()
        gate_failures = validator.finish() if validator else []
        gate_failures += rejected_fraction_gate(ledger, options)
        facts = diff_pass(
            ledger,
            state_keys,
            state_fps,
            options,
            family=family,
            state_count=_state_count(state, state_keys, options),
            unchanged_in_source=unchanged_in_source,
            baseline=baseline,
        )
        del state_keys, state_fps
        # The change limits, after the diff and before anything is sent (a plan's items were
        # approved when it was applied: not checked again).
        breaches = limit_breaches(facts, baseline, options) if not gate_failures and not options.planned else []
        pending_count = int(np.count_nonzero(ledger.status == PENDING))
        requests_planned = math.ceil(pending_count / options.send.batch_size)
        if run.plan is not None and not gate_failures:  # a breach is recorded in the plan
            write_plan(spill_path, ledger, run.plan)
        closing = Closing()
        if gate_failures:
            log.warning("data-quality gate failed, nothing is sent: %s", " | ".join(gate_failures))
            closing.gate = "not sent: a data-quality gate failed: " + " | ".join(gate_failures)
            closing.reasons["not_attempted"] = closing.gate
            closing.codes["not_attempted"] = reason_codes.GATE_FAILED.code
            # Items that failed a check or an expectation stay rejected (they would be even
            # if the gate passed); every other item is not attempted because of the gate.
            ledger.status[ledger.status != STATUS_CODE["rejected"]] = STATUS_CODE["not_attempted"]
        elif breaches:
            stop_for_breaches(breaches, ledger, closing)
        elif options.dry_run:
            ledger.status[ledger.status == PENDING] = STATUS_CODE["dry_run"]
        elif not circuit.is_open and pending_count:
            timeline = TimelineRecorder(budget_rps(client, options))
            phases["readAndPlan"] = time.perf_counter() - began
            # The report's settled chunks are written while the run waits for answers.
            report_writer = ReportWriter(spill_path, ledger, report, ctx.run_id, ReportTags.of(run.app_id, options))
            interrupted = send_pass(
                spill_path, ledger, options, client, run.retry, state, ctx, timeline, report_writer.ahead
            )
            phases["budgetWait"] = timeline.budget_wait_s
            phases["sending"] = time.perf_counter() - began - phases["readAndPlan"]
        phases.setdefault("readAndPlan", time.perf_counter() - began)
        if circuit.abort is not None:
            closing.reasons["not_attempted"] = reason_codes.stopped_reason(circuit.abort.cause)
            closing.codes["not_attempted"] = reason_codes.for_abort_cause(circuit.abort.cause)
        ledger.status[ledger.status == PENDING] = STATUS_CODE["not_attempted"]
        tags = ReportTags.of(run.app_id, options)
        reporting = time.perf_counter()
        fallback, tally = report_with_fallback(
            spill_path, ledger, report, ctx.run_id, closing, clock(), run.report_fallback_dir, tags, report_writer
        )
        phases["report"] = time.perf_counter() - reporting
    stopped = circuit.abort
    completed = stopped is None and interrupted is None and not gate_failures and not breaches
    if state is not None and not options.dry_run and completed:
        # A completed run: what the state now knows is the change limit's next baseline. Its
        # sends are confirmed and reported: a record that cannot be written must not fail it.
        try:
            record_completed(state, baseline, facts, ledger, options, ctx.run_id)
        except (OSError, StateError) as exc:
            log.warning("the change limits' baseline of appId %s was not written: %s", run.app_id, exc)
    result = SyncResult(
        run_id=ctx.run_id,
        app_id=run.app_id,
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
            **tally.summary(),
        },
        counts_by_reason=tally.counts,
        problems=tally.problems,
        timeline=timeline.summary() if timeline is not None else None,
        changes=facts.changes,
        removed=facts.removed(baseline),
        breaches=breaches,
        phases=phases,
        concurrency=options.send.concurrency,
    )
    if len(ledger) == 0 and not unchanged_in_source:  # rows the warehouse diff left out were read
        result.warnings.append(zero_rows_warning(source))
    tally.log_problems()
    log.info("%s", result.changes_line())
    for warning in result.warnings:
        log.warning("%s", warning)
    return result, interrupted


def _state_count(state: StateRun | None, state_keys: np.ndarray, options: SyncOptions) -> int | None:
    """Keys the state holds for this account (slice): the store's count when it has one (a
    table counts a slice), else the keys loaded for a whole run; None when neither can say."""
    if state is None:
        return 0
    counted = state.key_count()
    if counted is None and options.slice.whole:
        return len(state_keys)
    return counted


def stop_for_breaches(breaches: list[Breach], ledger: Ledger, closing: Closing) -> None:
    """A change limit stops the run before sending: every item that would have been sent is
    ``not_attempted`` with the first breach's code and every breach's message."""
    text = " | ".join(b.message for b in breaches)
    log.warning("change limit reached, nothing is sent: %s", text)
    closing.reasons["not_attempted"] = "not sent: " + text
    closing.codes["not_attempted"] = breaches[0].code
    ledger.status[ledger.status == PENDING] = STATUS_CODE["not_attempted"]
