"""Nightly, for one large account: the warehouse sync split into ``partitions`` mapped tasks.

The same sync as ``polyv_viewer_sync_warehouse`` (same params, connections and Variables; see
that DAG), but run as ``partitions`` (default 4) mapped tasks, task ``k`` handling the items
whose viewerId falls in partition ``k`` (the first 8 hex digits of md5(viewerId), mod N; null or
blank viewerIds in partition 0). Each task reads only its slice (on PostgreSQL, MySQL/MariaDB and
DuckDB the filter runs in the query), plans and sends it, and appends its report rows, tagged
``partition``/``partitions``, to the one report table. The tasks can run on different workers at
the same time: they hold the account's sync state shared and their own slice exclusively, and
all draw on the one request budget (``POLYV_BUDGET_URL`` on every worker), so together they stay
within POLYV's per-IP limit. Keep ``partitions`` the same from run to run while runs overlap:
runs with another number of partitions are refused while these hold the account.

The report holds what each run acted on (``report_rows="changes"``): every item sent, failed,
rejected, duplicate, not attempted or in doubt keeps its row, the unchanged ones are only counted
(in the summary and the runs table ``<report_table>_runs``), so a quiet night writes a handful
of rows, not one per item. Report rows and report files of runs started more than 30 days ago
(runs table rows: 400 days) are deleted at the end of each run, a little at a time; a run that
waits for another run of the account waits in the triggerer (``deferrable=True``).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, task

from polyv_connector.airflow.notifier import PolyvSyncFailureNotifier
from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator
from polyv_connector.airflow.params import (
    DAG_REPORT_RETENTION_DAYS,
    DAG_RUNS_RETENTION_DAYS,
    DIFF_IN_WAREHOUSE,
    LOCK_TIMEOUT_S,
    REPORT_CONN_ID,
    SQL_OR_INTERVAL,
    STATE_CONN_ID,
    STATE_DIR,
    dag_settings,
    interval_params,
    nightly,
    run_params,
    table_params,
)
from polyv_connector.deployment import CONN_ALERTS, CONN_WAREHOUSE
from polyv_connector.partitioning import MAX_PARTITIONS

with DAG(
    dag_id="polyv_viewer_sync_partitioned",
    description="Sync one large account's viewer custom fields as N partitions, one mapped task each",
    schedule=nightly(),
    doc_md=__doc__,
    **dag_settings(),
    # Every task alerts on failure (also the small task that prepares the mapping): the message
    # carries the counts by reason and the run page when the sync task got that far.
    default_args={"on_failure_callback": PolyvSyncFailureNotifier(CONN_ALERTS)},
    # The warehouse DAG's params, and how many slices to split the account into.
    params={
        "partitions": Param(
            4,
            type="integer",
            minimum=1,
            maximum=MAX_PARTITIONS,
            description="how many slices (mapped tasks) the account is split into, by viewerId",
        ),
        **interval_params(),
        **table_params(),
        **run_params(),
    },
) as dag:

    @task
    def partition_numbers(params: dict[str, Any] | None = None) -> list[int]:
        """0 .. partitions-1: one mapped sync task each."""
        return list(range(int((params or {})["partitions"])))

    PolyvViewerFieldSyncOperator.partial(
        task_id="sync_partition",
        # A task waits for a run of the whole account (another DAG) to release the sync state.
        lock_timeout=LOCK_TIMEOUT_S,
        # Wait for another run of the account in the triggerer, not in a worker slot.
        deferrable=True,
        report_retention_days=DAG_REPORT_RETENTION_DAYS,
        runs_retention_days=DAG_RUNS_RETENTION_DAYS,
        # A whole table read nightly: report the items acted on, count the unchanged ones.
        report_rows="changes",
        source_conn_id=CONN_WAREHOUSE,
        source_sql=SQL_OR_INTERVAL,
        viewer_id_column="viewer_id",
        field_id_column="custom_field_id",
        value_column="custom_field_value",
        report_table="{{ params.report_table }}",
        state_table="{{ params.state_table }}",
        report_conn_id=REPORT_CONN_ID,
        state_conn_id=STATE_CONN_ID,
        diff_in_warehouse=DIFF_IN_WAREHOUSE,
        state_dir=STATE_DIR,
        full_refresh="{{ params.full_refresh }}",
        dry_run="{{ params.dry_run }}",
        partitions="{{ params.partitions }}",
    ).expand(partition=partition_numbers())
