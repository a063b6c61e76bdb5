"""The reason codes: a small, stable vocabulary for why an item was not sent.

Every report row that is not ``sent`` carries one code (``reasonCode``) beside its human
``reason``. The code names the *first* cause when several apply (a row with a blank viewerId
and a null value is ``blank_viewer_id``); the text lists them all. Codes are part of the
report's contract: a code may be added, never renamed or given another meaning. The README
shows this table (a test checks it against the module).

``retryable`` says whether running the same input again later may succeed for an item with
that code: a block or a timeout may pass, POLYV refusing the value will not. The Airflow
operator decides between a retryable failure and ``AirflowFailException`` from it (see
:func:`polyv_connector.exit_codes.failure_is_retryable`).

Pure data: no pyarrow import (DAG files import the operator module at parse time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class ReasonCode:
    """One code: its name, the status it goes with, what it means, whether a rerun may help."""

    code: str
    status: str
    meaning: str
    retryable: bool = False


BLANK_VIEWER_ID = ReasonCode("blank_viewer_id", "rejected", "viewerId is null or blank")
PADDED_VIEWER_ID = ReasonCode("padded_viewer_id", "rejected", "viewerId has leading or trailing whitespace")
BLANK_FIELD_ID = ReasonCode("blank_field_id", "rejected", "customFieldId is null or blank")
PADDED_FIELD_ID = ReasonCode("padded_field_id", "rejected", "customFieldId has leading or trailing whitespace")
FIELD_ID_TOO_LONG = ReasonCode("field_id_too_long", "rejected", "customFieldId is longer than 64 characters")
UNKNOWN_FIELD = ReasonCode("unknown_field", "rejected", "customFieldId does not exist in the POLYV account")
NULL_VALUE = ReasonCode("null_value", "rejected", "customFieldValue is null")
UNSENDABLE_TEXT = ReasonCode(
    "unsendable_text", "rejected", "a value cannot become text (invalid UTF-8, NaN/inf, a date outside years 1-9999)"
)
EXPECTATION_FAILED = ReasonCode("expectation_failed", "rejected", "failed a row expectation of the suite")
CONFLICTING_DUPLICATE = ReasonCode(
    "conflicting_duplicate", "rejected", "another row has the same viewerId and field with another value"
)
DUPLICATE = ReasonCode("duplicate", "duplicate", "repeats an earlier row (same viewerId, field and value); sent once")
UNCHANGED = ReasonCode("unchanged", "unchanged", "POLYV already holds this value (sync state); not sent")
DRY_RUN = ReasonCode("dry_run", "dry_run", "dry run: would be sent")
POLYV_REJECTED = ReasonCode("polyv_rejected", "failed", "POLYV refused the value (e.g. 'param validate error')")
RETRIES_EXHAUSTED = ReasonCode(
    "retries_exhausted", "failed", "every try failed (5XX, timeouts, resets); a rerun retries", retryable=True
)
IN_DOUBT = ReasonCode(
    "in_doubt", "in_doubt", "sent, but no answer came before the run stopped; resent next run", retryable=True
)
GATE_FAILED = ReasonCode("gate_failed", "not_attempted", "a data-quality gate failed: nothing was sent")
RUN_STOPPED = ReasonCode(
    "run_stopped", "not_attempted", "the run was stopped (signal, timeout, mark failed)", retryable=True
)
BLOCKED = ReasonCode(
    "blocked", "not_attempted", "POLYV's rate limit blocked the IP (5 minutes); nothing more sent", retryable=True
)
POLYV_REFUSED = ReasonCode(
    "polyv_refused", "not_attempted", "POLYV refused the run: credentials, signature, clock or URL"
)
TOO_MANY_REJECTED = ReasonCode(
    "too_many_rejected", "not_attempted", "POLYV rejected nearly every item one by one; sending stopped"
)
POLYV_UNAVAILABLE = ReasonCode(
    "polyv_unavailable", "not_attempted", "POLYV could not be reached for the field list", retryable=True
)
INTERNAL_ERROR = ReasonCode(
    "internal_error", "not_attempted", "an unexpected error stopped sending (a bug)", retryable=True
)

ALL: Final[tuple[ReasonCode, ...]] = (
    BLANK_VIEWER_ID,
    PADDED_VIEWER_ID,
    BLANK_FIELD_ID,
    PADDED_FIELD_ID,
    FIELD_ID_TOO_LONG,
    UNKNOWN_FIELD,
    NULL_VALUE,
    UNSENDABLE_TEXT,
    EXPECTATION_FAILED,
    CONFLICTING_DUPLICATE,
    DUPLICATE,
    UNCHANGED,
    DRY_RUN,
    POLYV_REJECTED,
    RETRIES_EXHAUSTED,
    IN_DOUBT,
    GATE_FAILED,
    RUN_STOPPED,
    BLOCKED,
    POLYV_REFUSED,
    TOO_MANY_REJECTED,
    POLYV_UNAVAILABLE,
    INTERNAL_ERROR,
)
BY_CODE: Final[dict[str, ReasonCode]] = {r.code: r for r in ALL}
#: Codes of items that are fine as they are: left out of failure messages and alerts.
NOT_PROBLEMS: Final[frozenset[str]] = frozenset({DUPLICATE.code, UNCHANGED.code, DRY_RUN.code})

#: The code of the items a run did not send because it stopped, by ``RunAborted.cause``.
_FOR_ABORT_CAUSE: Final[dict[str, ReasonCode]] = {
    "stopped": RUN_STOPPED,
    "blocked": BLOCKED,
    "auth": POLYV_REFUSED,
    "clock": POLYV_REFUSED,
    "endpoint": POLYV_REFUSED,
    "rejected": TOO_MANY_REJECTED,
    "unavailable": POLYV_UNAVAILABLE,
    "internal": INTERNAL_ERROR,
}


def for_abort_cause(cause: str | None) -> str:
    """The code of items left unsent by a run stopped for ``cause`` (``RunAborted.cause``)."""
    return _FOR_ABORT_CAUSE.get(cause or "stopped", RUN_STOPPED).code


def is_retryable(code: str) -> bool:
    """Whether a rerun may succeed for an item with ``code`` (an unknown code counts as retryable)."""
    known = BY_CODE.get(code)
    return known is None or known.retryable


def markdown_table() -> str:
    """The table as the README shows it."""
    lines = ["| reasonCode | status | meaning | a rerun may help |", "| --- | --- | --- | --- |"]
    lines += [f"| `{r.code}` | `{r.status}` | {r.meaning} | {'yes' if r.retryable else 'no'} |" for r in ALL]
    return "\n".join(lines)
