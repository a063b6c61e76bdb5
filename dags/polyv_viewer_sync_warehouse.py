"""Nightly: sync the viewer attributes changed in the data interval from a SQL warehouse.

Source connection ``polyv_warehouse`` (any common-sql database, e.g. a ``postgres``
connection; its password belongs in a secrets backend, not in this text). By default it reads
the long-form table ``polyv_viewer_attributes``::

    viewer_id text, custom_field_id text, custom_field_value text, updated_at timestamptz

selecting the rows with ``data_interval_start <= updated_at < data_interval_end``, so
``airflow backfill create --dag-id polyv_viewer_sync_warehouse --from-date ... --to-date ...``
reprocesses a date range. Give ``source_sql`` (same three columns, or aliases) to read
something else: it must be one read-only query, and is read in a read-only transaction. The
per-item report is appended to ``report_table`` (created if absent) and the sync state kept in
``state_table``, through the connections in the Airflow Variables ``polyv_report_conn_id`` and
``polyv_state_conn_id`` (default: the source connection), so ``polyv_warehouse`` may use a
role that can only read. ``polyv_diff_in_warehouse`` (``true``/``false``, default false)
computes the diff against the state in the warehouse. POLYV credentials: ``polyv_default``.
"""

from __future__ import annotations

from airflow.sdk import DAG

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

with DAG(
    dag_id="polyv_viewer_sync_warehouse",
    description="Sync viewer custom fields changed in the data interval from the warehouse",
    schedule=nightly(),
    doc_md=__doc__,
    **dag_settings(),
    params={**interval_params(), **table_params(), **run_params()},
) as dag:
    PolyvViewerFieldSyncOperator(
        # An alert with the counts by reason and the run page: POSTed to the connection
        # polyv_alerts (an incoming webhook) when it is defined, else written to the task log.
        on_failure_callback=PolyvSyncFailureNotifier(CONN_ALERTS),
        task_id="sync_viewer_fields",
        # Another run of this account (a backfill date, the nightly run) may hold the sync state:
        # wait for it rather than fail as busy. (Or queue them through a pool of one slot.)
        lock_timeout=LOCK_TIMEOUT_S,
        # Wait for another run of the account in the triggerer, not in a worker slot.
        deferrable=True,
        report_retention_days=DAG_REPORT_RETENTION_DAYS,
        runs_retention_days=DAG_RUNS_RETENTION_DAYS,
        source_conn_id=CONN_WAREHOUSE,
        # The source_sql param if given, else the rows of source_table changed in the interval.
        source_sql=SQL_OR_INTERVAL,
        viewer_id_column="viewer_id",
        field_id_column="custom_field_id",
        value_column="custom_field_value",
        report_table="{{ params.report_table }}",
        state_table="{{ params.state_table }}",
        # Writers of their own, so polyv_warehouse's role may be read-only ("" = the source's).
        report_conn_id=REPORT_CONN_ID,
        state_conn_id=STATE_CONN_ID,
        diff_in_warehouse=DIFF_IN_WAREHOUSE,
        state_dir=STATE_DIR,
        full_refresh="{{ params.full_refresh }}",
        dry_run="{{ params.dry_run }}",
    )
