"""Manual only: a full resync of a warehouse table or query into POLYV.

Trigger it with a ``source_table`` (or a ``source_sql``) and it sends every row, ignoring the
sync state (``full_refresh`` on by default), appending the per-item report to
``report_table``. The source must have the columns ``viewer_id``, ``custom_field_id`` and
``custom_field_value`` (alias them in ``source_sql`` otherwise). For a date range of the
nightly DAG use ``airflow backfill create --dag-id polyv_viewer_sync_warehouse`` instead.

Whoever may trigger this DAG chooses its params, so they are checked: ``source_conn_id`` must
be one of the Airflow Variable ``polyv_source_conn_ids`` (a JSON list the DAG author sets;
default ``["polyv_warehouse"]``), and ``source_sql`` must be one read-only query, read in a
read-only transaction. The report and the sync state are written through the connections in
the Variables ``polyv_report_conn_id`` and ``polyv_state_conn_id`` (default: the source
connection), so the source connection may use a role that can only read.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from polyv_connector.airflow.notifier import PolyvSyncFailureNotifier
from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

# Seconds a run waits for another run of the same account to release its sync state.
LOCK_TIMEOUT_S = 3600

# Table params are spliced into SQL text: accept [schema.]table names only.
TABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*){0,2}$"

with DAG(
    dag_id="polyv_viewer_backfill",
    description="Full resync of a warehouse table or query into POLYV (manual)",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["polyv"],
    doc_md=__doc__,
    params={
        "source_conn_id": Param(
            "polyv_warehouse",
            type="string",
            description="SQL connection to read: one of the Airflow Variable polyv_source_conn_ids "
            '(a JSON list, default ["polyv_warehouse"])',
        ),
        "source_table": Param(
            "polyv_viewer_attributes",
            type="string",
            pattern=TABLE_NAME,
            description="[schema.]table to resync (ignored when source_sql is given)",
        ),
        "source_sql": Param(
            "",
            type="string",
            description="a query to resync instead of a table: one read-only query (SELECT, "
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
        "full_refresh": Param(True, type="boolean", description="ignore the sync state, send everything"),
        "dry_run": Param(False, type="boolean", description="plan and report only, send nothing"),
    },
) as dag:
    PolyvViewerFieldSyncOperator(
        # An alert with the counts by reason and the run page: POSTed to the connection
        # polyv_alerts (an incoming webhook) when it is defined, else written to the task log.
        on_failure_callback=PolyvSyncFailureNotifier("polyv_alerts"),
        task_id="resync_viewer_fields",
        # Another run of this account (a backfill date, the nightly run) may hold the sync state:
        # wait for it rather than fail as busy. The lock makes overlapping runs safe; this makes
        # them succeed. (Or queue them through a pool of one slot.)
        lock_timeout=LOCK_TIMEOUT_S,
        source_conn_id="{{ params.source_conn_id }}",
        # The trigger form may name any connection: only those the DAG author listed are read.
        allowed_source_conn_ids="{{ var.json.get('polyv_source_conn_ids', ['polyv_warehouse']) | tojson }}",
        source_sql="{{ params.source_sql }}",
        source_table="{% if not params.source_sql %}{{ params.source_table }}{% endif %}",
        viewer_id_column="viewer_id",
        field_id_column="custom_field_id",
        value_column="custom_field_value",
        report_table="{{ params.report_table }}",
        state_table="{{ params.state_table }}",
        # Writers of their own, so the source connection's role may be read-only ("" = the source's).
        report_conn_id="{{ var.value.get('polyv_report_conn_id', '') }}",
        state_conn_id="{{ var.value.get('polyv_state_conn_id', '') }}",
        state_dir="{{ var.value.get('polyv_state_dir', '') }}",
        full_refresh="{{ params.full_refresh }}",
        dry_run="{{ params.dry_run }}",
    )
