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
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param, task

from polyv_connector.airflow.notifier import PolyvSyncFailureNotifier
from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator
from polyv_connector.partitioning import MAX_PARTITIONS

# Seconds a task waits for a run of the whole account (another DAG) to release the sync state.
LOCK_TIMEOUT_S = 3600

# Table params are spliced into SQL text: accept [schema.]table names only.
TABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*){0,2}$"

INTERVAL_SQL = """
SELECT viewer_id, custom_field_id, custom_field_value
FROM {{ params.source_table }}
WHERE updated_at >= '{{ data_interval_start }}' AND updated_at < '{{ data_interval_end }}'
"""

with DAG(
    dag_id="polyv_viewer_sync_partitioned",
    description="Sync one large account's viewer custom fields as N partitions, one mapped task each",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["polyv"],
    doc_md=__doc__,
    # Every task alerts on failure (also the small task that prepares the mapping): the message
    # carries the counts by reason and the run page when the sync task got that far.
    default_args={"on_failure_callback": PolyvSyncFailureNotifier("polyv_alerts")},
    params={
        "partitions": Param(
            4,
            type="integer",
            minimum=1,
            maximum=MAX_PARTITIONS,
            description="how many slices (mapped tasks) the account is split into, by viewerId",
        ),
        "source_table": Param(
            "polyv_viewer_attributes",
            type="string",
            pattern=TABLE_NAME,
            description="[schema.]table read by the default interval query",
        ),
        # Nullable, so the trigger form does not require it (an empty "string" Param is required);
        # a text area, since a query spans lines.
        "source_sql": Param(
            None,
            type=["null", "string"],
            format="multiline",
            description="a query replacing the default one: one read-only query (SELECT, "
            "WITH ... SELECT, VALUES), run in a read-only transaction with the connection's role",
        ),
        "report_table": Param(
            "polyv_sync_report",
            type="string",
            pattern=TABLE_NAME,
            description="[schema.]table the per-item report is appended to",
        ),
        "state_table": Param(
            "polyv_sync_state",
            type="string",
            pattern=TABLE_NAME,
            description="[schema.]table of the sync state (unchanged values are not resent)",
        ),
        "full_refresh": Param(False, type="boolean", description="ignore the sync state, send everything"),
        "dry_run": Param(False, type="boolean", description="plan and report only, send nothing"),
    },
) as dag:

    @task
    def partition_numbers(params: dict[str, Any] | None = None) -> list[int]:
        """0 .. partitions-1: one mapped sync task each."""
        return list(range(int((params or {})["partitions"])))

    PolyvViewerFieldSyncOperator.partial(
        task_id="sync_partition",
        lock_timeout=LOCK_TIMEOUT_S,
        source_conn_id="polyv_warehouse",
        source_sql="{% if params.source_sql %}{{ params.source_sql }}{% else %}" + INTERVAL_SQL + "{% endif %}",
        viewer_id_column="viewer_id",
        field_id_column="custom_field_id",
        value_column="custom_field_value",
        report_table="{{ params.report_table }}",
        state_table="{{ params.state_table }}",
        report_conn_id="{{ var.value.get('polyv_report_conn_id', '') }}",
        state_conn_id="{{ var.value.get('polyv_state_conn_id', '') }}",
        diff_in_warehouse="{{ var.value.get('polyv_diff_in_warehouse', 'false') }}",
        state_dir="{{ var.value.get('polyv_state_dir', '') }}",
        full_refresh="{{ params.full_refresh }}",
        dry_run="{{ params.dry_run }}",
        partitions="{{ params.partitions }}",
    ).expand(partition=partition_numbers())
