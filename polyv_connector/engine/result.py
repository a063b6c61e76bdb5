"""What a run did: :class:`SyncResult`, and the run id."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polyv_connector import exit_codes
from polyv_connector.model import (
    STATUSES,
    UNSUCCESSFUL,
)
from polyv_connector.timeline import TimelineSummary

if TYPE_CHECKING:
    from polyv_connector.engine.changes import Breach

log = logging.getLogger("polyv_connector")


#: The phases of :attr:`SyncResult.phases`, in order: reading, checking and planning the input
#: (state loaded, duplicates and diff decided); waiting for the request budget (summed over the
#: requests, so it can exceed sending); sending (first batch out to last answer recorded); the
#: report (written from the arrays the run holds); the run page (added by the front end).
PHASES = ("readAndPlan", "budgetWait", "sending", "report", "page")


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
    #: What a person should know although the run succeeded (e.g. it read 0 rows).
    warnings: list[str] = field(default_factory=list)
    #: Planned changes by kind (``new``, ``changed``, ``cleared``; see :mod:`~polyv_connector.engine.changes`).
    changes: dict[str, int] = field(default_factory=dict)
    #: Keys the state holds that a whole-source run did not read (POLYV keeps their values); None otherwise.
    removed: int | None = None
    #: The change limits the plan breached (nothing was sent when any).
    breaches: list[Breach] = field(default_factory=list)
    #: Where the run's time went, in seconds, by phase (:data:`PHASES`); the front end adds
    #: ``page`` once the run page is written.
    phases: dict[str, float] = field(default_factory=dict)
    #: Save requests the run let be in flight at once (its ``concurrency`` setting).
    concurrency: int = 0

    @property
    def ok(self) -> bool:
        return (
            not self.aborted
            and not self.gate_failures
            and not self.breaches
            and not any(self.counts.get(s, 0) for s in UNSUCCESSFUL)
        )

    @property
    def exit_code(self) -> int:
        if self.aborted:
            # An unexpected error stopped sending: a bug (70), not POLYV refusing the run (3).
            return exit_codes.INTERNAL.code if self.abort_cause == "internal" else exit_codes.ABORTED.code
        if self.gate_failures or self.breaches:
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
            # Not the message again: it is logged once when sending stops (``sending stops``)
            # and kept in the summary's ``aborted``.
            line += f"; STOPPED ({self.abort_cause}): the reason is in the log, once, and in the summary's 'aborted'"
        if self.gate_failures:
            line += f"; GATE FAILED: {' | '.join(self.gate_failures)}"
        if self.breaches:
            line += f"; CHANGE LIMIT: {' | '.join(b.message for b in self.breaches)}"
        return line

    def changes_line(self) -> str:
        """The planned changes by kind, and ``removed`` when counted, for the log."""
        kinds = ", ".join(f"{k} {v:,}" for k, v in self.changes.items())
        line = f"changes planned: {kinds or 'none'}"
        if self.removed is not None:
            line += f"; removed from the source (POLYV keeps their values): {self.removed:,}"
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
            "warnings": list(self.warnings),
            "changes": dict(self.changes),
            "removed": self.removed,
            "limitBreaches": [{"code": b.code, "setting": b.setting, "message": b.message} for b in self.breaches],
            "phaseSeconds": {k: round(v, 3) for k, v in self.phases.items()},
            "concurrency": self.concurrency,
            **self.extra,
        }


#: Where the warning of a run that read 0 rows points (docs/airflow.md's section), and how it starts.
FIRST_LOAD_DOC = "docs/airflow.md#a-first-full-load"
ZERO_ROWS = "read 0 rows from "


def zero_rows_warning(source: object) -> str:
    """The warning of a run that read no row from ``source``: a success with nothing to do
    looks the same as a first load whose query selected nothing (the interval query's date)."""
    setting = getattr(source, "setting", "the source")
    location = getattr(source, "location", None)
    where = f"{location} ({setting})" if location else str(setting)
    return f"{ZERO_ROWS}{where}: nothing was sent; for a first load see {FIRST_LOAD_DOC}"


def new_run_id(clock: Callable[[], float] = time.time) -> str:
    """``20261207T085443Z-1f4a2b3c``: the start second, then the millisecond in three hex digits
    and five random ones, so that run ids sort by start even when two runs share a second."""
    # One integer for both parts: the second and the millisecond never disagree.
    seconds, millis = divmod(int(clock() * 1000), 1000)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))
    return f"{stamp}-{millis:03x}{uuid.uuid4().hex[:5]}"


def interrupted_result(exc: BaseException) -> SyncResult | None:
    """The result of a run that ``exc`` interrupted while sending, its report written; else None."""
    result = getattr(exc, "polyv_sync_result", None)
    return result if isinstance(result, SyncResult) else None
