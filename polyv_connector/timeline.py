"""What the send phase did, second by second: for the aggregated log line and the run page.

The sender feeds a :class:`TimelineRecorder` from its worker threads (one call per request,
retry or split: a lock and a dict update, nothing logged); :meth:`TimelineRecorder.summary`
turns it into a :class:`TimelineSummary` once the run is over, and
:meth:`TimelineRecorder.status_text` into the few words the progress line carries.
The clock is injected so tests never sleep.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

#: Latencies kept for the percentiles: enough for a stable p95, bounded memory on a long run.
MAX_LATENCIES = 20_000


@dataclass
class TimelineSummary:
    """Per whole second of the send phase, and a few totals (the run page draws it)."""

    seconds: list[int]  # whole seconds since the send phase started
    requests: list[int]  # save requests started in that second
    retries: list[int]  # retries in that second
    splits: list[int]  # batches split (bisection) in that second
    budget_rps: float  # the request budget the run drew on (requests/s)
    latency_p50_s: float | None
    latency_p95_s: float | None
    retries_by_cause: dict[str, int] = field(default_factory=dict)
    budget_wait_s: float = 0.0  # total time spent waiting for the budget


def retry_cause(http_status: int | None, desc: str | None) -> str:
    """A short, stable name for why a request is retried: ``http_500``, ``timeout``, ``connection``."""
    if http_status is not None:
        return f"http_{http_status}"
    text = (desc or "").lower()
    if "timed out" in text or "timeout" in text:
        return "timeout"
    if "connection" in text or "reset" in text:
        return "connection"
    return "transport"


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    # Nearest rank: an observed latency, never an interpolated one.
    rank = max(1, min(len(sorted_values), math.ceil(q * len(sorted_values))))
    return sorted_values[rank - 1]


class TimelineRecorder:
    """Thread-safe counters of the send phase, bucketed by whole second since :meth:`start`."""

    def __init__(self, budget_rps: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._budget_rps = budget_rps
        self._lock = threading.Lock()
        self._start = clock()
        self._requests: Counter[int] = Counter()
        self._retries: Counter[int] = Counter()
        self._splits: Counter[int] = Counter()
        self._causes: Counter[str] = Counter()
        self._latencies: list[float] = []
        self._budget_wait_s = 0.0
        self.requests_total = 0
        self.retries_total = 0
        self.splits_total = 0

    def start(self) -> None:
        """Second 0 is now (the send phase begins)."""
        with self._lock:
            self._start = self._clock()

    def _second(self) -> int:
        return max(0, int(self._clock() - self._start))

    def request(self, retry_of: str | None = None) -> None:
        """A save request is leaving; ``retry_of`` is the cause when it retries an earlier try."""
        with self._lock:
            s = self._second()
            self._requests[s] += 1
            self.requests_total += 1
            if retry_of is not None:
                self._retries[s] += 1
                self._causes[retry_of] += 1
                self.retries_total += 1

    def answered(self, latency_s: float, budget_wait_s: float = 0.0) -> None:
        """A request answered after ``latency_s``, of which ``budget_wait_s`` waiting for the budget."""
        with self._lock:
            if len(self._latencies) < MAX_LATENCIES:
                self._latencies.append(max(0.0, latency_s - budget_wait_s))
            self._budget_wait_s += max(0.0, budget_wait_s)

    def split(self) -> None:
        """A batch POLYV refused for its data is split in two to find the bad items."""
        with self._lock:
            self._splits[self._second()] += 1
            self.splits_total += 1

    @property
    def budget_wait_s(self) -> float:
        return self._budget_wait_s

    def retries_by_cause(self) -> dict[str, int]:
        with self._lock:
            return dict(self._causes.most_common())

    def status_text(self) -> str:
        """``412 requests, 20 retries (http_500 15, timeout 5), 3 splits, 1.2s waiting for the budget``."""
        causes = self.retries_by_cause()
        text = f"{self.requests_total:,} requests, {self.retries_total:,} retries"
        if causes:
            text += " (" + ", ".join(f"{c} {n:,}" for c, n in causes.items()) + ")"
        text += f", {self.splits_total:,} split batches, {self._budget_wait_s:.1f}s waiting for the budget"
        return text

    def summary(self) -> TimelineSummary:
        with self._lock:
            last = max([*self._requests, *self._retries, *self._splits], default=-1)
            seconds = list(range(last + 1))
            ordered = sorted(self._latencies)
            return TimelineSummary(
                seconds=seconds,
                requests=[self._requests.get(s, 0) for s in seconds],
                retries=[self._retries.get(s, 0) for s in seconds],
                splits=[self._splits.get(s, 0) for s in seconds],
                budget_rps=float(self._budget_rps),
                latency_p50_s=_percentile(ordered, 0.50),
                latency_p95_s=_percentile(ordered, 0.95),
                retries_by_cause=dict(self._causes.most_common()),
                budget_wait_s=round(self._budget_wait_s, 3),
            )
