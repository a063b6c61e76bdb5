"""What the send phase did, second by second (the run page draws it).

Placeholder for the branch ``reasons``, which records it; its version replaces this one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TimelineSummary:
    """Per whole second of the send phase, and a few totals."""

    seconds: list[int]  # whole seconds since the send phase started
    requests: list[int]  # save requests started in that second
    retries: list[int]  # retries in that second
    splits: list[int]  # batches split (bisection) in that second
    budget_rps: float  # the request budget the run drew on (requests/s)
    latency_p50_s: float | None
    latency_p95_s: float | None
    retries_by_cause: dict[str, int] = field(default_factory=dict)
    budget_wait_s: float = 0.0  # total time spent waiting for the budget
