"""The plain data every layer shares: item columns, statuses, and the report schema."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:  # pyarrow is imported lazily: DAG files import this module at parse time
    import pyarrow as pa

Status = Literal["sent", "unchanged", "duplicate", "rejected", "failed", "in_doubt", "not_attempted", "dry_run"]

# Statuses in the order summaries print them. Codes are the int8 values held in the
# run's result arrays; "pending" is internal (planned to send, not sent yet).
STATUSES: Final[tuple[Status, ...]] = (
    "sent",
    "unchanged",
    "duplicate",
    "rejected",
    "failed",
    # Its request left but no answer came back before the run stopped: POLYV may hold the
    # value or not. The state marked it unconfirmed before sending, so the next run resends it.
    "in_doubt",
    "not_attempted",
    "dry_run",
)
PENDING: Final = 0
STATUS_CODE: Final[dict[str, int]] = {name: i + 1 for i, name in enumerate(STATUSES)}
STATUS_NAME: Final[dict[int, str]] = {code: name for name, code in STATUS_CODE.items()}

# A row with one of these statuses makes the run unsuccessful (non-zero exit, failed task).
UNSUCCESSFUL: Final[frozenset[str]] = frozenset({"failed", "in_doubt", "not_attempted"})

VIEWER_ID: Final = "viewerId"
FIELD_ID: Final = "customFieldId"
VALUE: Final = "customFieldValue"
ROW_NUMBER: Final = "rowNumber"
#: A column a source adds when the diff runs in the warehouse: 0 where the state lacks the row's
#: key, 1 where it holds the key with another value, 2 where it holds this value.
KNOWN_COLUMN: Final = "polyv_known"
#: What the default runs table name adds to the report table's (``<report_table>_runs``).
RUNS_SUFFIX: Final = "_runs"

MAX_FIELD_ID_LENGTH: Final = 64
MAX_BATCH_SIZE: Final = 1000
#: POLYV blocks an IP past 1500 requests per 10 s (150/s): no budget or cap may reach it.
MAX_RPS_CEILING: Final = 140.0
#: The most of a POLYV answer read, the field list included (1 MiB): a larger body is not read,
#: and the attempt fails as ``response_too_large`` (retried like a 5XX). A hostile or broken
#: endpoint cannot make the connector hold more than this per request in flight.
MAX_RESPONSE_BYTES: Final = 1 << 20
#: The default request budget of one egress IP (requests/s), shared by every run through it.
DEFAULT_BUDGET_RPS: Final = 100.0

REPORT_COLUMNS: Final[tuple[str, ...]] = (
    "rowNumber",
    "viewerId",
    "customFieldId",
    "customFieldValue",
    "status",
    "reason",
    "errorCode",
    "httpStatus",
    "requestId",
    "attempts",
    "batchId",
    "runId",
    "syncedAt",
    # Report schema version 2: who and which slice (many accounts, partitions), the reason as
    # a stable code beside the human text, and the Airflow run that produced the row.
    "appId",
    "reasonCode",
    "partition",
    "partitions",
    "airflowRunId",
)


#: What each report column holds, in :data:`REPORT_COLUMNS` order (the docs' table is generated
#: from it by ``make docs``; a test keeps the two lists equal).
REPORT_COLUMN_MEANINGS: Final[dict[str, str]] = {
    "rowNumber": "0-based position of the source row in the input (repeated for the items of a wide row; "
    "within the partition's own read for a partition run)",
    "viewerId": "the viewerId as sent (after the text conversion)",
    "customFieldId": "the customFieldId as sent",
    "customFieldValue": "the value as sent (its text form)",
    "status": "what happened to the item (the statuses below)",
    "reason": "what to do about it, in words; null when `sent`",
    "errorCode": "POLYV's error code of the deciding answer, when any",
    "httpStatus": "the HTTP status of the deciding request, when any",
    "requestId": "POLYV's requestId, for support",
    "attempts": "requests that carried this item (retries and split halves included)",
    "batchId": "`<runId>-<n>`; `.0`/`.1` suffixes mark the halves of a split batch",
    "runId": "the run",
    "syncedAt": "when POLYV confirmed or refused it (UTC); the planning time for items not sent",
    "appId": "the POLYV account (many accounts share one report table)",
    "reasonCode": "the reason as a stable code (the reason codes); null when `sent`",
    "partition": "the slice of a partition run; null for a whole run",
    "partitions": "the number of slices of a partition run; null for a whole run",
    "airflowRunId": "the DAG run that produced the row (null from the command line)",
}

#: What each status means (the docs' table is generated from it).
STATUS_MEANINGS: Final[dict[str, str]] = {
    "sent": "POLYV confirmed it",
    "unchanged": "POLYV already holds this value (sync state); not sent",
    "duplicate": "the same viewerId, field and value appear in an earlier row, which was sent",
    "rejected": "failed a check or an expectation, or conflicts with another row; never sent",
    "failed": "POLYV refused the item, or every retry failed; rerun to retry",
    "in_doubt": "its request was sent but no answer came before the run stopped (a signal, a block, a timeout): "
    "POLYV may or may not hold it; unsuccessful (exit 1), resent by the next run",
    "not_attempted": "the run stopped (block, credentials, gate, a signal) before sending it",
    "dry_run": "would be sent",
}


def report_schema() -> pa.Schema:
    """The Arrow schema of the per-item report (one row per input item)."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("rowNumber", pa.int64(), nullable=False),
            pa.field("viewerId", pa.string()),
            pa.field("customFieldId", pa.string()),
            pa.field("customFieldValue", pa.string()),
            pa.field("status", pa.string(), nullable=False),
            pa.field("reason", pa.string()),
            pa.field("errorCode", pa.int64()),
            pa.field("httpStatus", pa.int64()),
            pa.field("requestId", pa.string()),
            pa.field("attempts", pa.int64(), nullable=False),
            pa.field("batchId", pa.string()),
            pa.field("runId", pa.string(), nullable=False),
            pa.field("syncedAt", pa.timestamp("us", tz="UTC")),
            pa.field("appId", pa.string()),
            pa.field("reasonCode", pa.string()),
            pa.field("partition", pa.int64()),
            pa.field("partitions", pa.int64()),
            pa.field("airflowRunId", pa.string()),
        ]
    )
