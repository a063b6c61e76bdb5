"""Bodies of the real processes the budget tests start (spawned: importable, picklable arguments)."""

from __future__ import annotations

import logging
import multiprocessing.synchronize as mps
import time
from multiprocessing.queues import Queue
from typing import Any

from polyv_connector.budget import BudgetBlocked, open_budget


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def draw(
    url: str | None,
    api: str,
    rate: float,
    run_id: str,
    max_rps: float | None,
    duration_s: float,
    ready: mps.Semaphore,
    go: mps.Event,
    results: Queue[dict[str, Any]],
) -> None:
    """Join the budget, wait for the start signal, then acquire as fast as allowed for ``duration_s``.

    Reports every acquisition's time, the rate in force and the share seen mid-run, and the
    warnings logged.
    Blocks end the loop (reported as ``blocked``).
    """
    collect = _Collect()
    logging.getLogger("polyv_connector.budget").addHandler(collect)
    budget = open_budget(url, api_base_url=api, rate=rate, run_id=run_id, max_rps=max_rps)
    budget.register()
    ready.release()
    go.wait()
    # Everyone has registered by now: see them at once rather than at the next heartbeat.
    budget.refresh()
    stamps: list[float] = []
    blocked: float | None = None
    end = time.time() + duration_s
    middle = end - duration_s / 2
    seen: tuple[float, float] | None = None
    try:
        while True:
            budget.acquire()
            now = time.time()
            if now >= end:
                break
            if seen is None and now >= middle:
                # Mid-run, while every run is still there (at the end they leave one by one).
                seen = (budget.rate_in_force, budget.share)
            stamps.append(now)
    except BudgetBlocked as exc:
        blocked = exc.until
    blocked_at = time.time()
    results.put(
        {
            "run_id": run_id,
            "stamps": stamps,
            "rate_in_force": seen[0] if seen else budget.rate_in_force,
            "share": seen[1] if seen else budget.share,
            "warnings": collect.messages,
            "blocked": blocked,
            "blocked_at": blocked_at,
        }
    )
    budget.close()


def client_draw(
    url: str,
    api: str,
    rate: float,
    app_id: str,
    secret: str,
    duration_s: float,
    ready: mps.Semaphore,
    go: mps.Event,
    results: Queue[dict[str, Any]],
) -> None:
    """A real PolyvClient listing fields in a loop through the shared budget, until ``duration_s``."""
    from polyv_connector.config import Credentials, Secret
    from polyv_connector.transport.client import PolyvClient

    budget = open_budget(url, api_base_url=api, rate=rate, run_id=app_id, max_rps=None)
    budget.register()
    ready.release()
    go.wait()
    budget.refresh()
    calls = 0
    end = time.time() + duration_s
    with PolyvClient(Credentials(app_id, Secret(secret), api), budget=budget) as client:
        while time.time() < end:
            client.list_fields()
            calls += 1
    budget.close()
    results.put({"run_id": app_id, "calls": calls})


def client_once(url: str, api: str, app_id: str, secret: str, results: Queue[dict[str, Any]]) -> None:
    """One field listing through the shared budget; reports how it ended."""
    from polyv_connector.config import Credentials, Secret
    from polyv_connector.errors import RunAborted
    from polyv_connector.transport.client import PolyvClient

    outcome = "ok"
    with (
        open_budget(url, api_base_url=api, rate=50, run_id=f"once-{app_id}", max_rps=None) as budget,
        PolyvClient(Credentials(app_id, Secret(secret), api), budget=budget) as client,
    ):
        try:
            client.list_fields()
        except RunAborted as exc:
            outcome = exc.cause
        results.put({"outcome": outcome, "sent": client.requests_sent})
