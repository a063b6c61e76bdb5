"""Sending batches: retries, isolation of rejected items by bisection, and the circuit breaker.

A worker thread calls :meth:`BatchSender.send` for one batch and gets back the fate of each
of its items. Nothing here touches the ledger, the state or the report: the caller does.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Literal

import numpy as np

from polyv_connector import reasons as codes
from polyv_connector.batching import Batch
from polyv_connector.errors import RunAborted
from polyv_connector.timeline import TimelineRecorder, retry_cause
from polyv_connector.transport.classify import Outcome
from polyv_connector.transport.client import PolyvClient, abort_for
from polyv_connector.transport.retry import RetryPolicy, call_with_retry

log = logging.getLogger(__name__)

SendStatus = Literal["sent", "failed", "in_doubt", "not_attempted"]

#: Once the circuit opens (a stop, a block, a bug), how long requests in flight may still
#: answer before their items are reported ``in_doubt`` and the run goes on to its report.
#: Short: Airflow escalates SIGINT -> SIGTERM -> SIGKILL about 5 s apart.
STOP_GRACE_S = 5.0
# How often the sending loop looks at the circuit while it waits for answers: a signal
# handler can only open the circuit, it cannot wake a thread blocked on a future.
_POLL_S = 0.2


@dataclass(frozen=True, kw_only=True)
class ItemsResult:
    """The fate of some items of a batch, decided by one request (or by the circuit).

    Keyword-only: nine fields, four of them optional ints or strings, are too many to keep
    apart by position.
    """

    indices: np.ndarray
    status: SendStatus
    batch_id: str
    attempts: int
    synced_at: float
    reason: str | None = None
    http_status: int | None = None
    error_code: int | None = None
    request_id: str | None = None
    reason_code: str | None = None  # see polyv_connector.reasons; None when sent


class Circuit:
    """Opened once, by the first run-level refusal; every worker checks it before each request."""

    def __init__(self) -> None:
        self._abort: RunAborted | None = None
        # Reentrant: stop() may run in a signal handler, on the main thread, while that same
        # thread is inside open(); a plain Lock would deadlock there.
        self._lock = threading.RLock()

    def open(self, abort: RunAborted) -> None:
        with self._lock:
            if self._abort is not None:
                return
            self._abort = abort
        # Once per run, whoever opens it: the one line that says why sending stops.
        log.warning("sending stops (%s): %s", abort.cause, abort)

    def stop(self, why: str) -> None:
        """Stop the run from any thread or a signal handler: no new request leaves after this.

        Requests in flight may answer for :data:`STOP_GRACE_S`; the run then writes its report.
        """
        self.open(
            RunAborted(
                "stopped",
                f"the run was stopped ({why}); confirmed items are kept in the state, rerun to continue",
            )
        )

    @property
    def abort(self) -> RunAborted | None:
        return self._abort

    @property
    def is_open(self) -> bool:
        return self._abort is not None


class BatchSender:
    """Sends one batch to completion: retried, split on data errors, stopped by the circuit."""

    def __init__(
        self,
        client: PolyvClient,
        retry: RetryPolicy,
        circuit: Circuit,
        *,
        seed: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        timeline: TimelineRecorder | None = None,
    ) -> None:
        self._client = client
        self._timeline = timeline
        self._retry = retry
        self._circuit = circuit
        self._sleep = sleep
        self._clock = clock
        self._local = threading.local()
        self._seed = seed
        self._tally_lock = threading.Lock()
        self._items_ok = 0
        self._items_rejected = 0

    # When POLYV rejects every item on its own, the 40X is not about the data (a new
    # whole-request error we do not recognise): splitting would cost 2n-1 requests per batch.
    REJECTION_CIRCUIT_MIN = 50

    def _tally(self, ok: int, rejected: int, outcome: Outcome | None = None) -> None:
        with self._tally_lock:
            self._items_ok += ok
            self._items_rejected += rejected
            runaway = self._items_rejected >= self.REJECTION_CIRCUIT_MIN and self._items_rejected > 10 * self._items_ok
        if runaway and outcome is not None:
            self._circuit.open(
                RunAborted(
                    "rejected",
                    f"POLYV rejected {self._items_rejected} items one by one ('{outcome.desc}', error "
                    f"{outcome.error_code}) and accepted only {self._items_ok}: either every value is invalid "
                    "(see the failed rows) or POLYV refuses the request itself. Splitting batches further "
                    "would cost two requests per item, so nothing more was sent.",
                    http_status=outcome.http_status,
                    error_code=outcome.error_code,
                    request_id=outcome.request_id,
                )
            )

    def _rng(self) -> random.Random:
        # One generator per thread: random.Random is not meant to be shared across threads.
        rng = getattr(self._local, "rng", None)
        if rng is None:
            seed = None if self._seed is None else self._seed + threading.get_ident()
            rng = self._local.rng = random.Random(seed)
        return rng

    def send(self, batch: Batch, answered: list[ItemsResult] | None = None) -> list[ItemsResult]:
        """The fate of every item of ``batch``.

        ``answered`` receives each final result as soon as it is known (a split batch has
        several), so that a run that stops waiting for this batch still records the answers
        POLYV already gave (see :meth:`in_doubt`).
        """
        return self._send(batch, 0, answered if answered is not None else [])

    def in_doubt(self, batch: Batch, answered: list[ItemsResult]) -> list[ItemsResult]:
        """The results of a batch the run stopped waiting for: what was answered, the rest in doubt."""
        known = list(answered)  # the worker may still append: work on a snapshot
        covered = np.concatenate([r.indices for r in known]) if known else np.empty(0, batch.indices.dtype)
        rest = np.setdiff1d(batch.indices, covered, assume_unique=True)
        if len(rest):
            known.append(
                ItemsResult(
                    indices=rest,
                    status="in_doubt",
                    batch_id=batch.batch_id,
                    attempts=1,
                    synced_at=self._clock(),
                    reason=codes.stopped_reason(self._circuit.abort.cause if self._circuit.abort else None, sent=True),
                    reason_code=codes.IN_DOUBT.code,
                )
            )
        return known

    def _not_attempted(self, batch: Batch, attempts: int, outcome: Outcome | None = None) -> ItemsResult:
        abort = self._circuit.abort
        reason = codes.stopped_reason(abort.cause if abort else None)
        return ItemsResult(
            indices=batch.indices,
            status="not_attempted",
            batch_id=batch.batch_id,
            attempts=attempts,
            synced_at=self._clock(),
            reason=reason,
            http_status=outcome.http_status if outcome else None,
            error_code=outcome.error_code if outcome else None,
            request_id=outcome.request_id if outcome else None,
            reason_code=codes.for_abort_cause(abort.cause if abort else None),
        )

    def _send(self, batch: Batch, carried: int, answered: list[ItemsResult]) -> list[ItemsResult]:
        results = self._decide(batch, carried, answered)
        if len(results) == 1 and results[0].indices is batch.indices:
            answered.append(results[0])  # a leaf: split halves were appended by their own calls
        return results

    def _decide(self, batch: Batch, carried: int, answered: list[ItemsResult]) -> list[ItemsResult]:
        body = batch.body()
        done = call_with_retry(
            self._attempts(body),
            self._retry,
            self._rng(),
            self._sleep,
            should_stop=lambda: self._circuit.is_open,
        )
        tries = carried + done.attempts
        outcome = done.outcome
        if done.stopped and outcome is not None and _unanswered(outcome):
            # The last try timed out or died mid-way, then the run stopped before another:
            # POLYV may have applied it.
            return [
                ItemsResult(
                    indices=batch.indices,
                    status="in_doubt",
                    batch_id=batch.batch_id,
                    attempts=tries,
                    synced_at=self._clock(),
                    reason=(
                        f"in doubt: the last request got no clear answer ({outcome.desc}) and the run stopped "
                        f"before retrying ({self._circuit.abort}); POLYV may or may not hold this value; "
                        "the next run sends it again"
                    ),
                    http_status=outcome.http_status,
                    request_id=outcome.request_id,
                    reason_code=codes.IN_DOUBT.code,
                )
            ]
        if done.stopped or outcome is None:
            return [self._not_attempted(batch, tries)]
        if outcome.kind == "ok":
            self._tally(len(batch), 0)
            return [
                ItemsResult(
                    indices=batch.indices,
                    status="sent",
                    batch_id=batch.batch_id,
                    attempts=tries,
                    synced_at=self._clock(),
                    http_status=outcome.http_status,
                    request_id=outcome.request_id,
                )
            ]
        if outcome.kind in ("blocked", "fatal"):
            self._circuit.open(abort_for(outcome))
            return [self._not_attempted(batch, tries, outcome)]
        if outcome.kind == "data":
            if len(batch) == 1:
                self._tally(0, 1, outcome)
                return [
                    ItemsResult(
                        indices=batch.indices,
                        status="failed",
                        batch_id=batch.batch_id,
                        attempts=tries,
                        synced_at=self._clock(),
                        reason=(
                            f"POLYV rejected this item: '{outcome.desc}' (error {outcome.error_code}); "
                            "fix the value in the source"
                        ),
                        http_status=outcome.http_status,
                        error_code=outcome.error_code,
                        request_id=outcome.request_id,
                        reason_code=codes.POLYV_REJECTED.code,
                    )
                ]
            # One bad item fails the whole request: split to find it, send the rest.
            if self._timeline is not None:
                self._timeline.split()
            left, right = batch.halves()
            return self._send(left, tries, answered) + self._send(right, tries, answered)
        # Transient to the last try: the policy's attempts are spent.
        return [
            ItemsResult(
                indices=batch.indices,
                status="failed",
                batch_id=batch.batch_id,
                attempts=tries,
                synced_at=self._clock(),
                reason=f"gave up after {done.attempts} attempts: {outcome.desc}; rerun to retry these rows",
                http_status=outcome.http_status,
                error_code=outcome.error_code,
                request_id=outcome.request_id,
                reason_code=outcome.reason_code or codes.RETRIES_EXHAUSTED.code,
            )
        ]

    def _attempts(self, body: bytes) -> Callable[[], Outcome]:
        """One save per call, each recorded on the timeline: a call after a transient answer is a
        retry, counted under that answer's cause."""
        timeline = self._timeline
        if timeline is None:
            return lambda: self._client.save(body)
        previous: list[Outcome] = []
        take_wait = getattr(self._client, "take_budget_wait_s", None)

        def attempt() -> Outcome:
            last = previous[-1] if previous else None
            retry_of = (last.reason_code or retry_cause(last.http_status, last.desc)) if last is not None else None
            timeline.request(retry_of)
            began = time.monotonic()
            outcome = self._client.save(body)
            waited = take_wait() if callable(take_wait) else 0.0
            timeline.answered(time.monotonic() - began, waited)
            previous.append(outcome)
            return outcome

        return attempt


def _unanswered(outcome: Outcome) -> bool:
    """A transient outcome after which POLYV may still have applied the request: no HTTP answer
    (a timeout, a reset connection) or a gateway that lost the backend's answer. A plain 500 or
    429 is POLYV's own answer: not applied."""
    # An answer too large to read is still an answer: failed, like the 5XX it is retried as.
    return outcome.kind == "transient" and outcome.http_status in (None, 502, 504) and outcome.reason_code is None


def abort_for_exception(exc: BaseException) -> RunAborted:
    """Why sending stopped when ``exc`` was raised in the sending loop (a signal, a timeout, a bug)."""
    if isinstance(exc, Exception):
        return RunAborted(
            "internal",
            f"sending stopped by an unexpected error: {type(exc).__name__}: {exc}; "
            "confirmed items are kept in the state, rerun to continue",
        )
    # KeyboardInterrupt (SIGINT), Airflow's AirflowTaskTimeout (execution_timeout), SystemExit.
    return RunAborted(
        "stopped",
        f"the run was stopped ({type(exc).__name__}); confirmed items are kept in the state, rerun to continue",
    )


class _DaemonPool:
    """A fixed set of daemon worker threads.

    Not a ThreadPoolExecutor: its threads are joined when the interpreter exits, so a request
    hanging until its timeout would hold a stopped process (and its exit status) hostage.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[list[ItemsResult]], Callable[[], list[ItemsResult]]] | None] = (
            queue.SimpleQueue()
        )
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True) for i in range(max(1, workers))
        ]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fut, call = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(call())
            except BaseException as exc:  # handed to the waiting thread, which decides
                fut.set_exception(exc)

    def submit(self, call: Callable[[], list[ItemsResult]]) -> Future[list[ItemsResult]]:
        fut: Future[list[ItemsResult]] = Future()
        self._jobs.put((fut, call))
        return fut

    def shutdown(self) -> None:
        """Let idle workers end; a worker still in a request ends with it (it is a daemon)."""
        for _ in self._threads:
            self._jobs.put(None)


def send_all(
    batches: Iterable[Batch],
    sender: BatchSender,
    circuit: Circuit,
    concurrency: int,
    on_done: Callable[[Batch, list[ItemsResult]], None],
    *,
    grace_s: float = STOP_GRACE_S,
    on_tick: Callable[[], None] | None = None,
    on_last_answer: Callable[[], None] | None = None,
) -> None:
    """Send ``batches`` with ``concurrency`` requests in flight; ``on_done`` runs in this thread.

    Stops taking new batches once the circuit opens; their items stay pending (the caller
    reports them ``not_attempted``). Requests in flight then get ``grace_s`` seconds to answer;
    the items of those that do not are handed to ``on_done`` as ``in_doubt``. Whatever is
    raised in this thread (a bug in ``on_done``, ``KeyboardInterrupt``, Airflow's task timeout)
    opens the circuit and is re-raised after the same accounting, so the caller can still write
    a report that records every answer received. ``on_done`` must be idempotent: a call that
    such an exception interrupted is made again. At most ``2 * concurrency`` batches are held
    in memory. ``on_tick`` runs in this thread about every 0.2 s while answers are awaited (for
    a progress line that keeps coming when nothing completes). ``on_last_answer`` runs once, in
    this thread, when every batch has been taken and answered (retries and splits included),
    before that last answer is handed to ``on_done``: no batch is left to send or retry.
    """
    pool = _DaemonPool(concurrency, "polyv-send")
    in_flight: dict[Future[list[ItemsResult]], tuple[Batch, list[ItemsResult]]] = {}
    deadline: float | None = None
    # The answer being handed to on_done: if an interruption lands inside on_done, it is
    # handed over again before re-raising (on_done must be idempotent), so it is never lost.
    handing: tuple[Batch, list[ItemsResult]] | None = None
    stopping = False  # once set, an on_done that fails again is logged, not raised
    taken_all = False  # every batch has been taken from ``batches``

    def last_answer() -> None:
        nonlocal on_last_answer
        if on_last_answer is not None and taken_all and not in_flight:
            call, on_last_answer = on_last_answer, None
            call()

    def drain(until: int) -> None:
        nonlocal deadline
        while len(in_flight) > until:
            if circuit.is_open:
                if deadline is None:
                    deadline = time.monotonic() + grace_s
                left = deadline - time.monotonic()
                if left <= 0:
                    abandon()
                    return
                timeout = min(_POLL_S, left)
            else:
                timeout = _POLL_S
            done, _ = wait(in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
            if on_tick is not None:
                on_tick()  # progress while nothing completes (retries backing off, a slow POLYV)
            for fut in done:
                batch, answered = in_flight.pop(fut)
                try:
                    results = fut.result()
                except BaseException:
                    # A bug in the sender: the answers it had recorded stand, the rest is in doubt.
                    hand_over(batch, sender.in_doubt(batch, answered))
                    raise
                last_answer()
                hand_over(batch, results)

    def hand_over(batch: Batch, results: list[ItemsResult]) -> None:
        nonlocal handing
        handing = (batch, results)
        try:
            on_done(batch, results)
        except Exception:
            if not stopping:
                raise
            # Already stopping for an error: account for the other batches all the same.
            log.exception("recording the results of batch %s failed while stopping", batch.batch_id)
        handing = None

    def abandon() -> None:
        log.warning(
            "%d request(s) still in flight %.1fs after the run stopped; their items are reported in_doubt",
            len(in_flight),
            grace_s,
        )
        while in_flight:
            fut, (batch, answered) = in_flight.popitem()
            if fut.cancel():
                continue  # never started: nothing left, its items stay pending (not_attempted)
            hand_over(batch, sender.in_doubt(batch, answered))

    try:
        for batch in batches:
            if circuit.is_open:
                break
            drain(2 * concurrency - 1)
            if circuit.is_open:
                break
            answered: list[ItemsResult] = []
            in_flight[pool.submit(lambda b=batch, a=answered: sender.send(b, a))] = (batch, answered)  # type: ignore[misc]
        else:
            taken_all = True
            last_answer()  # nothing was in flight (no batch at all)
        drain(0)
    except BaseException as exc:
        circuit.open(abort_for_exception(exc))
        stopping = True
        if handing is not None:
            hand_over(*handing)
        drain(0)
        raise
    finally:
        pool.shutdown()
