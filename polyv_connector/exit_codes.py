"""The one table of exit codes: the CLI returns them, the operator maps them to Airflow errors,
docs/troubleshooting.md shows them (generated from this table by ``make docs``).

Each code says what the caller should do next, and whether retrying the same run can help.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ExitCode:
    """One exit status: its number, a short name, what it means, and whether a retry may help."""

    code: int
    name: str
    meaning: str
    retryable: bool


OK = ExitCode(0, "ok", "every item sent, unchanged, duplicate, rejected or dry-run", retryable=False)
ITEMS_UNSUCCESSFUL = ExitCode(
    1,
    "items_unsuccessful",
    "some items failed, are in doubt or were not attempted; rerun to retry them",
    retryable=True,
)
CONFIG = ExitCode(
    2, "config", "configuration or input error, nothing sent; fix the named setting (do not retry)", retryable=False
)
ABORTED = ExitCode(
    3, "aborted", "POLYV stopped the run (credentials, clock, IP block); the report is written", retryable=False
)
GATE = ExitCode(
    4,
    "gate",
    "a gate stopped the run before sending (data quality or change limit), nothing sent; check the source",
    retryable=False,
)
BUSY = ExitCode(5, "busy", "another run holds the sync state; nothing sent, retry later", retryable=True)
INTERNAL = ExitCode(70, "internal", "an internal error (a bug); the report is still written", retryable=True)
UNAVAILABLE = ExitCode(
    75,
    "unavailable",
    "a dependency is unavailable for now (warehouse, Redis, budget store); retry later",
    retryable=True,
)
SIGINT = ExitCode(
    130, "sigint", "stopped by SIGINT; the report is written, confirmed items are kept in the state", retryable=True
)
SIGTERM = ExitCode(
    143, "sigterm", "stopped by SIGTERM; the report is written, confirmed items are kept in the state", retryable=True
)

ALL: tuple[ExitCode, ...] = (
    OK,
    ITEMS_UNSUCCESSFUL,
    CONFIG,
    ABORTED,
    GATE,
    BUSY,
    INTERNAL,
    UNAVAILABLE,
    SIGINT,
    SIGTERM,
)
BY_CODE: dict[int, ExitCode] = {e.code: e for e in ALL}

# POLYV refusals a retry cannot fix (exit 3 with these causes): a person must fix the
# credentials, the clock or the URL, or the data POLYV refused item by item ("rejected").
# A block ("blocked") ends after 5 minutes: retryable.
NOT_RETRYABLE_ABORT_CAUSES = frozenset({"auth", "clock", "endpoint", "rejected"})


def abort_is_retryable(cause: str | None) -> bool:
    """Whether a run POLYV stopped for ``cause`` may succeed when run again later."""
    return cause not in NOT_RETRYABLE_ABORT_CAUSES


def failure_is_retryable(
    code: int, abort_cause: str | None = None, counts_by_reason: Mapping[str, int] | None = None
) -> bool:
    """Whether running the same input again later may succeed, for a run that ended with ``code``.

    The one decision behind the Airflow split (retryable ``AirflowException`` or
    ``AirflowFailException``): the exit code's own ``retryable``, refined by what stopped the run
    (exit 3: :func:`abort_is_retryable`) and, for exit 1, by the reason codes of the unsuccessful
    items: retryable when any of them may pass on a rerun (a timeout, a block, a stop, in doubt),
    not when POLYV refused every one of them for its value (``polyv_rejected``). Without reason
    counts (an older caller), the exit code alone decides.
    """
    from polyv_connector import reasons
    from polyv_connector.model import UNSUCCESSFUL

    exit_code = BY_CODE[code]
    if exit_code is ABORTED:
        return abort_is_retryable(abort_cause)
    if exit_code is ITEMS_UNSUCCESSFUL and counts_by_reason:
        unsuccessful = [
            c
            for c, n in counts_by_reason.items()
            if n and (c not in reasons.BY_CODE or reasons.BY_CODE[c].status in UNSUCCESSFUL)
        ]
        if unsuccessful:
            return any(reasons.is_retryable(c) for c in unsuccessful)
    return exit_code.retryable


def for_error(exc: BaseException) -> ExitCode:
    """The exit status of a run that raised ``exc`` (every error class has exactly one)."""
    from polyv_connector.errors import (
        BusyError,
        ConfigError,
        DependencyUnavailable,
        RunAborted,
        StateError,
    )

    if isinstance(exc, KeyboardInterrupt):
        return SIGINT
    if isinstance(exc, ConfigError | StateError):
        return CONFIG
    if isinstance(exc, BusyError):
        return BUSY
    if isinstance(exc, DependencyUnavailable):
        return UNAVAILABLE
    if isinstance(exc, RunAborted):
        return ABORTED
    return INTERNAL


def markdown_table() -> str:
    """The table as docs/troubleshooting.md shows it."""
    lines = ["| exit | meaning |", "| --- | --- |"]
    lines += [f"| {e.code} | {e.meaning} |" for e in ALL]
    return "\n".join(lines)
