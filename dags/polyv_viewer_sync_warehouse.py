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

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param

from polyv_connector.airflow.notifier import PolyvSyncFailureNotifier
from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

# Seconds a run waits for another run of the same account to release its sync state.
LOCK_TIMEOUT_S = 3600

# Table params are spliced into SQL text: accept [schema.]table names only.
TABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*){0,2}$"

# Rows changed in this run's data interval. The table name is checked as an identifier by
# the operator only when it is passed as source_table; here it is part of the query text.
INTERVAL_SQL = """
SELECT viewer_id, custom_field_id, custom_field_value
FROM {{ params.source_table }}
WHERE updated_at >= '{{ data_interval_start }}' AND updated_at < '{{ data_interval_end }}'
"""

with DAG(
    dag_id="polyv_viewer_sync_warehouse",
    description="Sync viewer custom fields changed in the data interval from the warehouse",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["polyv"],
    doc_md=__doc__,
    params={
        "source_table": Param(
            "polyv_viewer_attributes",
            type="string",
            pattern=TABLE_NAME,
            description="[schema.]table read by the default interval query",
        ),
        "source_sql": Param(
            "",
            type="string",
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
    PolyvViewerFieldSyncOperator(
        # An alert with the counts by reason and the run page: POSTed to the connection
        # polyv_alerts (an incoming webhook) when it is defined, else written to the task log.
        on_failure_callback=PolyvSyncFailureNotifier("polyv_alerts"),
        task_id="sync_viewer_fields",
        # Another run of this account (a backfill date, the nightly run) may hold the sync state:
        # wait for it rather than fail as busy. The lock makes overlapping runs safe; this makes
        # them succeed. (Or queue them through a pool of one slot.)
        lock_timeout=LOCK_TIMEOUT_S,
        source_conn_id="polyv_warehouse",
        source_sql="{% if params.source_sql %}{{ params.source_sql }}{% else %}" + INTERVAL_SQL + "{% endif %}",
        viewer_id_column="viewer_id",
        field_id_column="custom_field_id",
        value_column="custom_field_value",
        report_table="{{ params.report_table }}",
        state_table="{{ params.state_table }}",
        # Writers of their own, so polyv_warehouse's role may be read-only ("" = the source's).
        report_conn_id="{{ var.value.get('polyv_report_conn_id', '') }}",
        state_conn_id="{{ var.value.get('polyv_state_conn_id', '') }}",
        diff_in_warehouse="{{ var.value.get('polyv_diff_in_warehouse', 'false') }}",
        state_dir="{{ var.value.get('polyv_state_dir', '') }}",
        full_refresh="{{ params.full_refresh }}",
        dry_run="{{ params.dry_run }}",
    )
