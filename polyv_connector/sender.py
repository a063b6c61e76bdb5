"""Sending batches: retries, isolation of rejected items by bisection, and the circuit breaker.

A worker thread calls :meth:`BatchSender.send` for one batch and gets back the fate of each
of its items. Nothing here touches the ledger, the state or the report: the caller does.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Literal

import numpy as np

from polyv_connector.batching import Batch
from polyv_connector.errors import RunAborted
from polyv_connector.transport.classify import Outcome
from polyv_connector.transport.client import PolyvClient, abort_for
from polyv_connector.transport.retry import RetryPolicy, call_with_retry

SendStatus = Literal["sent", "failed", "not_attempted"]


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


class Circuit:
    """Opened once, by the first run-level refusal; every worker checks it before each request."""

    def __init__(self) -> None:
        self._abort: RunAborted | None = None
        self._lock = threading.Lock()

    def open(self, abort: RunAborted) -> None:
        with self._lock:
            if self._abort is None:
                self._abort = abort

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
    ) -> None:
        self._client = client
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

    def send(self, batch: Batch) -> list[ItemsResult]:
        return self._send(batch, carried=0)

    def _not_attempted(self, batch: Batch, attempts: int, outcome: Outcome | None = None) -> ItemsResult:
        abort = self._circuit.abort
        reason = f"not sent: the run was stopped ({abort})" if abort else "not sent: the run was stopped"
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
        )

    def _send(self, batch: Batch, carried: int) -> list[ItemsResult]:
        body = batch.body()
        done = call_with_retry(
            lambda: self._client.save(body),
            self._retry,
            self._rng(),
            self._sleep,
            should_stop=lambda: self._circuit.is_open,
        )
        tries = carried + done.attempts
        outcome = done.outcome
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
                    )
                ]
            # One bad item fails the whole request: split to find it, send the rest.
            left, right = batch.halves()
            return self._send(left, tries) + self._send(right, tries)
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
            )
        ]


def send_all(
    batches: Iterable[Batch],
    sender: BatchSender,
    circuit: Circuit,
    concurrency: int,
    on_done: Callable[[Batch, list[ItemsResult]], None],
) -> None:
    """Send ``batches`` with ``concurrency`` requests in flight; ``on_done`` runs in this thread.

    Stops taking new batches once the circuit opens; their items stay pending (the caller
    reports them ``not_attempted``). At most ``2 * concurrency`` batches are held in memory.
    """
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="polyv-send") as pool:
        in_flight: dict[Future[list[ItemsResult]], Batch] = {}

        def drain(until: int) -> None:
            while len(in_flight) > until:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_done(in_flight.pop(fut), fut.result())

        for batch in batches:
            if circuit.is_open:
                break
            drain(2 * concurrency - 1)
            in_flight[pool.submit(sender.send, batch)] = batch
        drain(0)
