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

from airflow.sdk import DAG, Param

from polyv_connector.airflow.notifier import PolyvSyncFailureNotifier
from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator
from polyv_connector.airflow.params import (
    DAG_REPORT_RETENTION_DAYS,
    DAG_RUNS_RETENTION_DAYS,
    LOCK_TIMEOUT_S,
    REPORT_CONN_ID,
    SOURCE_CONN_IDS,
    STATE_CONN_ID,
    STATE_DIR,
    dag_settings,
    run_params,
    source_params,
    table_params,
)
from polyv_connector.deployment import CONN_ALERTS, CONN_WAREHOUSE, VAR_SOURCE_CONN_IDS

with DAG(
    dag_id="polyv_viewer_backfill",
    description="Full resync of a warehouse table or query into POLYV (manual)",
    schedule=None,
    doc_md=__doc__,
    **dag_settings(),
    params={
        "source_conn_id": Param(
            CONN_WAREHOUSE,
            type="string",
            description=f"SQL connection to read: one of the Airflow Variable {VAR_SOURCE_CONN_IDS} "
            f'(a JSON list, default ["{CONN_WAREHOUSE}"])',
        ),
        **source_params(
            "[schema.]table to resync (ignored when source_sql is given)", "a query to resync instead of a table"
        ),
        **table_params(),
        **run_params(full_refresh=True),
    },
) as dag:
    PolyvViewerFieldSyncOperator(
        # An alert with the counts by reason and the run page: POSTed to the connection
        # polyv_alerts (an incoming webhook) when it is defined, else written to the task log.
        on_failure_callback=PolyvSyncFailureNotifier(CONN_ALERTS),
        task_id="resync_viewer_fields",
        # Another run of this account (a backfill date, the nightly run) may hold the sync state:
        # wait for it rather than fail as busy. (Or queue them through a pool of one slot.)
        lock_timeout=LOCK_TIMEOUT_S,
        # Wait for another run of the account in the triggerer, not in a worker slot.
        deferrable=True,
        report_retention_days=DAG_REPORT_RETENTION_DAYS,
        runs_retention_days=DAG_RUNS_RETENTION_DAYS,
        source_conn_id="{{ params.source_conn_id }}",
        # The trigger form may name any connection: only those the DAG author listed are read.
        allowed_source_conn_ids=SOURCE_CONN_IDS,
        source_sql="{{ params.source_sql or '' }}",
        source_table="{% if not params.source_sql %}{{ params.source_table }}{% endif %}",
        viewer_id_column="viewer_id",
        field_id_column="custom_field_id",
        value_column="custom_field_value",
        report_table="{{ params.report_table }}",
        state_table="{{ params.state_table }}",
        # Writers of their own, so the source connection's role may be read-only ("" = the source's).
        report_conn_id=REPORT_CONN_ID,
        state_conn_id=STATE_CONN_ID,
        state_dir=STATE_DIR,
        full_refresh="{{ params.full_refresh }}",
        dry_run="{{ params.dry_run }}",
    )
