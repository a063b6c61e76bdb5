"""Nightly: the same sync for several POLYV accounts (appIds) from one warehouse, one mapped task
per account.

Param ``accounts``: a list of ``{"polyv_conn_id": ..., "source_table": ...}`` or
``{"polyv_conn_id": ..., "source_sql": ...}``, one per account (default: ``polyv_default``
over ``polyv_viewer_attributes``). Each account's rows (columns ``viewer_id``,
``custom_field_id``, ``custom_field_value``) are read through ``polyv_warehouse``:
``source_table`` is read whole (the sync state keeps unchanged values from being resent),
``source_sql`` must be one read-only query and is read in a read-only transaction. Each run is
a whole-source run (``whole_source``): a source that came back with far fewer keys than the last
run's stops before sending (``max_source_shrink``), so an account's query must select all of it.

Every ``polyv_conn_id`` must be one of the Airflow Variable ``polyv_conn_ids`` (a JSON list the
DAG author sets; default ``["polyv_default"]``): a trigger cannot send through an account, or to
an API host, nobody listed. The check runs in each mapped task before its connection is read.

All accounts append to one ``report_table`` (each row tagged with its ``appId``) and keep one
``state_table`` (keyed by appId), through the connections in the Variables
``polyv_report_conn_id`` and ``polyv_state_conn_id`` (default: ``polyv_warehouse``). One
account's failure fails its own mapped task only; the others still sync. All of them draw on
one request budget: on several workers set ``POLYV_BUDGET_URL=redis://...`` in every worker's
environment (README: Running at scale), or every task warns that the budget is not shared.

The report holds what each run acted on (``report_rows="changes"``): every item sent, failed,
rejected, duplicate, not attempted or in doubt keeps its row, the unchanged ones are only counted
(in the summary and the runs table ``<report_table>_runs``), so a quiet night writes a handful
of rows, not one per item. Report rows and report files of runs started more than 30 days ago
(runs table rows: 400 days) are deleted at the end of each run, a little at a time; a run that
waits for another run of the account waits in its worker (``deferrable`` stays off in this DAG
until concurrent resumes are fixed: see docs/airflow.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, task

from polyv_connector.airflow.assets import sync_report_asset
from polyv_connector.airflow.notifier import PolyvSyncFailureNotifier
from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator
from polyv_connector.airflow.params import (
    DAG_REPORT_RETENTION_DAYS,
    DAG_RUNS_RETENTION_DAYS,
    DIFF_IN_WAREHOUSE,
    LOCK_TIMEOUT_S,
    POLYV_CONN_IDS,
    REPORT_CONN_ID,
    STATE_CONN_ID,
    accounts_param,
    dag_settings,
    run_params,
    table_params,
)
from polyv_connector.deployment import CONN_ALERTS, CONN_WAREHOUSE

with DAG(
    dag_id="polyv_viewer_sync_accounts",
    description="Sync viewer custom fields of several POLYV accounts, one mapped task per account",
    schedule="0 2 * * *",
    doc_md=__doc__,
    **dag_settings(),
    # Every task alerts on failure (also the small task that prepares the mapping): the message
    # carries the counts by reason and the run page when the sync task got that far.
    default_args={"on_failure_callback": PolyvSyncFailureNotifier(CONN_ALERTS)},
    params={
        "accounts": accounts_param(),
        **table_params(report=" (rows tagged with appId)", state=", keyed by appId"),
        **run_params(),
    },
) as dag:

    @task(retries=0)
    def accounts_to_sync(params: dict[str, Any] | None = None) -> list[dict[str, str | None]]:
        """The ``accounts`` param, checked, as one operator kwargs dict per account."""
        from airflow.sdk.exceptions import AirflowFailException

        from polyv_connector.airflow.accounts import account_kwargs
        from polyv_connector.errors import ConfigError

        try:
            return account_kwargs((params or {}).get("accounts"))
        except ConfigError as exc:  # a bad trigger: retrying cannot help
            raise AirflowFailException(f"POLYV sync: configuration error: {exc}") from exc

    PolyvViewerFieldSyncOperator.partial(
        task_id="sync_account",
        # The account's connection id labels each mapped task (UI, task_instance.rendered_map_index).
        map_index_template="{{ task.polyv_conn_id }}",
        # The report's asset, declared here: a mapped operator's arguments are unknown at parse time.
        outlets=[sync_report_asset("polyv_viewer_sync_accounts", "sync_account")],
        # A trigger-time polyv_conn_id reaches only the accounts the DAG author listed.
        allowed_polyv_conn_ids=POLYV_CONN_IDS,
        lock_timeout=LOCK_TIMEOUT_S,
        report_retention_days=DAG_REPORT_RETENTION_DAYS,
        runs_retention_days=DAG_RUNS_RETENTION_DAYS,
        # A whole table read nightly: report the items acted on, count the unchanged ones.
        report_rows="changes",
        # ...and a whole-source run: a source that shrank past max_source_shrink stops the run
        # (exit 4), the keys it no longer has are counted (removed). An account's source_sql
        # must select its whole source too.
        whole_source=True,
        source_conn_id=CONN_WAREHOUSE,
        viewer_id_column="viewer_id",
        field_id_column="custom_field_id",
        value_column="custom_field_value",
        report_table="{{ params.report_table }}",
        state_table="{{ params.state_table }}",
        # Writers of their own, so polyv_warehouse's role may be read-only ("" = the source's).
        report_conn_id=REPORT_CONN_ID,
        state_conn_id=STATE_CONN_ID,
        diff_in_warehouse=DIFF_IN_WAREHOUSE,
        full_refresh="{{ params.full_refresh }}",
        dry_run="{{ params.dry_run }}",
    ).expand_kwargs(accounts_to_sync())
