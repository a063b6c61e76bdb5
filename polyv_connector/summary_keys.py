"""Every key of a run's summary, declared once with what it means.

The summary is what a run hands back: :meth:`polyv_connector.engine.result.SyncResult.to_dict` (the
CLI's ``--summary-json``), plus the keys the front ends add (the Airflow operator's XCom adds
``airflowRunId``, ``reportPath`` and ``runPage``; the CLI adds ``runPage``). ``make docs``
generates the troubleshooting guide's table from :data:`SUMMARY_KEYS`, and a test checks that
a real summary holds no key missing here. A leaf module: it imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Who puts a key in the summary: every run, only some runs, or one front end.
Where = Literal["always", "sometimes", "airflow", "cli and airflow"]


@dataclass(frozen=True)
class SummaryKey:
    """One key of the summary: its name, when it is there, and what it holds."""

    name: str
    where: Where
    meaning: str


SUMMARY_KEYS: tuple[SummaryKey, ...] = (
    SummaryKey("runId", "always", "the connector's run id (`<UTC time>-<8 hex>`): the report rows' `runId`"),
    SummaryKey("appId", "always", "the POLYV account (appId) the run sent to"),
    SummaryKey(
        "ok", "always", "`true` when no item is `failed`, `in_doubt` or `not_attempted` and nothing stopped the run"
    ),
    SummaryKey(
        "exitCode",
        "always",
        "the run's exit status (the table of exit codes); the CLI exits with it, the operator fails the task on any "
        "but 0",
    ),
    SummaryKey("items", "always", "items planned (a wide row is one item per mapped field)"),
    SummaryKey("counts", "always", "items per status (every status, 0 included)"),
    SummaryKey("requestsSent", "always", "save requests sent, retries and split halves included"),
    SummaryKey("apiRequests", "always", "every HTTP request to POLYV, the preflight field list included"),
    SummaryKey("requestsPlanned", "always", "save requests the plan needed (what a dry run would have sent)"),
    SummaryKey("durationSeconds", "always", "the run's wall time"),
    SummaryKey(
        "report", "always", "where the report went (file, table, or both; the fallback file when the table failed)"
    ),
    SummaryKey("dryRun", "always", "whether this was a dry run"),
    SummaryKey("aborted", "always", "`null`, or why sending stopped (the message a person reads)"),
    SummaryKey(
        "abortCause",
        "always",
        "`null`, or what stopped the run as a code: `auth`, `clock`, `endpoint`, `blocked`, `rejected`, "
        "`unavailable`, `stopped`, `internal`",
    ),
    SummaryKey("gateFailures", "always", "the data-quality gates that failed (nothing was sent when any did)"),
    SummaryKey("countsByReason", "always", "items per `reasonCode` (every item not sent has one)"),
    SummaryKey(
        "problems",
        "always",
        "the first 20 items rejected, failed, in doubt or not attempted: `rowNumber`, `viewerId`, `reasonCode`, "
        "`reason` (never the value)",
    ),
    SummaryKey(
        "warnings",
        "always",
        "what to know although the run may have succeeded, e.g. `read 0 rows from …` (a first load on the "
        "interval query reads only the run's data interval); the exit code is not changed by them",
    ),
    SummaryKey(
        "changes",
        "always",
        "planned changes by kind: `new` (a key the state does not know), `changed` (another value), `cleared` "
        "(an empty value is sent); resends of unchanged values under a full refresh are not changes",
    ),
    SummaryKey(
        "removed",
        "always",
        "a whole-source run (`whole_source`): keys the state holds that the source no longer has (POLYV keeps "
        "their values; per slice in partition runs); `null` otherwise",
    ),
    SummaryKey(
        "limitBreaches",
        "always",
        "the change limits the plan breached (nothing was sent when any; exit 4): `code` (`change_limit` or "
        "`source_shrank`), `setting` (the one that overrides it) and `message` (the numbers)",
    ),
    SummaryKey(
        "phaseSeconds",
        "always",
        "where the run's time went, in seconds: `readAndPlan` (reading, checking, planning the input, from when "
        "the state is held), `budgetWait` (requests waiting for the request budget, summed over the requests in "
        "flight, so it can exceed `sending`), `sending` (first batch out to last answer recorded), `report`, and "
        "`page` (the run page, added once it is written; missing when it was not); phases the run did not reach "
        "are missing",
    ),
    SummaryKey("concurrency", "always", "the most save requests the run let be in flight at once (`concurrency`)"),
    SummaryKey(
        "unchangedInWarehouse",
        "sometimes",
        "with `diff_in_warehouse`: rows the database found unchanged (counted here, not listed in the report)",
    ),
    SummaryKey("reportRows", "sometimes", "once the report is written: the `report_rows` setting, `all` or `changes`"),
    SummaryKey(
        "reportRowsWritten", "sometimes", "once the report is written: its rows (with `changes`, all but the unchanged)"
    ),
    SummaryKey(
        "reportRowsDropped",
        "sometimes",
        "report rows left out by `report_rows=changes`, by status (`{}` when none); `counts` still counts them",
    ),
    SummaryKey(
        "plan",
        "sometimes",
        'a plan (`polyv-sync plan`, `mode="plan"`): `planPath`, `items`, `byKind`, `byField`, `breached`, '
        "`breaches`, `limits`, `state` (where, `position`, `digest`), `itemsSha256`, `appId`, `createdAt`, "
        "`planRunId`, `runPage`; no value and no secret (the first changes are on the run page only)",
    ),
    SummaryKey(
        "appliedPlan",
        "sometimes",
        'an apply (`polyv-sync apply`, `mode="apply"`): the plan\'s `path` and the `planRunId` that made it',
    ),
    SummaryKey("partition", "sometimes", "a partition run: the slice it handled"),
    SummaryKey("partitions", "sometimes", "a partition run: the number of slices"),
    SummaryKey(
        "reportFallback",
        "sometimes",
        "the report table could not be written: the Parquet file the whole report went to instead",
    ),
    SummaryKey("reportError", "sometimes", "with `reportFallback`: why the report table could not be written"),
    SummaryKey(
        "validation",
        "sometimes",
        "with a suite: its name and file, success, items rejected, gate failures, each expectation's result, "
        "the validation JSON and Data Docs paths",
    ),
    SummaryKey("airflowRunId", "airflow", "the DAG run's `run_id`"),
    SummaryKey("reportPath", "airflow", "the Parquet report's absolute path (`null` for a table-only report)"),
    SummaryKey("runPage", "cli and airflow", "the run page's absolute path (`null` when it could not be written)"),
)

BY_NAME: dict[str, SummaryKey] = {k.name: k for k in SUMMARY_KEYS}
