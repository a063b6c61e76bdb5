"""The send pass: batch the pending items, send them, checkpoint each confirmed batch.

State writes go through :class:`~polyv_connector.engine.writer.StateWriter`: pre-marks, one per
chunk, durable before the chunk's batches leave; confirmations queued to its thread."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from polyv_connector.arrowconv import from_numpy
from polyv_connector.batching import Batch, make_batches
from polyv_connector.config import SyncOptions
from polyv_connector.engine.context import RunContext
from polyv_connector.engine.ledger import Ledger, pending_chunks
from polyv_connector.engine.writer import StateWriteError, StateWriter
from polyv_connector.fingerprints import UNCONFIRMED
from polyv_connector.model import (
    PENDING,
)
from polyv_connector.sender import BatchSender, ItemsResult, abort_for_exception, send_all
from polyv_connector.state.store import StateRun
from polyv_connector.timeline import TimelineRecorder
from polyv_connector.transport.client import PolyvClient
from polyv_connector.transport.retry import RetryPolicy

log = logging.getLogger("polyv_connector")


def send_pass(
    spill_path: Path,
    ledger: Ledger,
    options: SyncOptions,
    client: PolyvClient,
    retry: RetryPolicy,
    state: StateRun | None,
    ctx: RunContext,
    timeline: TimelineRecorder,
    report_ahead: Callable[[float], None] | None = None,
) -> BaseException | None:
    """Send the pending items. Returns what interrupted sending (to re-raise after the report).

    ``report_ahead(now)`` runs after each hand-over: it writes the report chunks whose items are
    all settled (:meth:`~polyv_connector.engine.report.ReportWriter.ahead`).
    """
    send, circuit, progress, clock = options.send, ctx.stop, ctx.progress, ctx.clock
    sender = BatchSender(client, retry, circuit, seed=ctx.seed, sleep=ctx.sleep, clock=clock, timeline=timeline)
    timeline.start()
    progress.start("sending", int(np.count_nonzero(ledger.status == PENDING)), detail=timeline.status_text)

    writer = StateWriter(state) if state is not None else None

    def on_done(batch: Batch, results: list[ItemsResult]) -> None:
        for result in results:
            ledger.record(result)
            if result.status == "sent" and writer is not None:
                # Checkpoint: the state advances only with what POLYV confirmed (written by the
                # writer thread; a failed write fails the run at the next hand-over).
                writer.confirm(
                    ledger.key_a[result.indices],
                    ledger.fp[result.indices],
                    result.synced_at,
                    items=items_of(batch, result),
                )
        progress.advance(len(batch))
        if report_ahead is not None:
            report_ahead(clock())

    marked_to = 0  # the pending items before this input position are pre-marked

    def marked(chunks: Iterator[tuple[np.ndarray, pa.Table]]) -> Iterator[tuple[np.ndarray, pa.Table]]:
        # Before any batch of a chunk leaves, record the chunk's keys as unconfirmed: if a batch
        # fails or the run dies while it is in flight, POLYV may hold its values or not, so the
        # state must not keep vouching for the previous value (a source reverting to it would
        # be skipped). make_batches yields a batch only once every chunk it draws from has been
        # taken from here, so its pre-mark is durable before it leaves. One write covers the
        # pending items of a read's chunk (read_batch_rows) or more, whatever the spill's batch
        # (smaller, for memory): each write waits for the state, so fewer is faster.
        nonlocal marked_to
        for positions, items in chunks:
            if writer is not None and len(positions) and positions[-1] >= marked_to:
                stop = min(len(ledger), max(int(positions[-1]) + 1, marked_to + options.read_batch_rows))
                ahead = marked_to + np.flatnonzero(ledger.status[marked_to:stop] == PENDING)
                writer.mark(ledger.key_a[ahead], np.full(len(ahead), UNCONFIRMED), clock())
                marked_to = stop
            yield positions, items

    batches = make_batches(marked(pending_chunks(spill_path, ledger)), send.batch_size, ctx.run_id)
    interrupted: BaseException | None = None
    try:
        # send_all opens the circuit for whatever it raises, after recording every answer
        # received and reporting the requests still in flight in_doubt.
        try:
            # Once no batch is left to send or retry, the share of a shared budget goes back to
            # the other runs while this one hands over its last answer, closes its state and
            # writes its report (and at the latest when sending stops for any reason).
            send_all(
                batches,
                sender,
                circuit,
                send.concurrency,
                on_done,
                on_tick=progress.tick,
                on_last_answer=client.leave_budget,
            )
        finally:
            client.leave_budget()
    except Exception:
        # Whatever broke (a full disk under the state, a bug): still write the report; the
        # items not confirmed so far are reported in_doubt or not_attempted.
        log.exception("sending stopped by an unexpected error")
    except BaseException as exc:  # KeyboardInterrupt, Airflow's task timeout: report first
        log.warning("sending stopped by %s; writing the report", type(exc).__name__)
        interrupted = exc
    if writer is not None:
        try:
            writer.close()  # every confirmation handed over is durable before the report
        except StateWriteError as exc:
            if circuit.is_open:  # said already when it stopped sending, or another cause stopped it
                log.error("%s", exc)
            else:  # a write failed after the last hand-over: the run fails all the same
                circuit.open(abort_for_exception(exc))
    progress.finish()
    return interrupted


def items_of(batch: Batch, result: ItemsResult) -> pa.Table:
    """The strings of the items a result covers (a result may cover part of a split batch)."""
    if len(result.indices) == len(batch):
        return batch.items
    where = np.searchsorted(batch.indices, result.indices)  # batch indices are ascending
    return batch.items.take(from_numpy(where))


def budget_rps(client: PolyvClient, options: SyncOptions) -> float:
    """The rate the run drew on: its own cap, or the shared budget's rate when that is lower."""
    shared = client.budget_rps
    return min(options.send.max_rps, shared) if shared else options.send.max_rps
