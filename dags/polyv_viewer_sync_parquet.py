"""Nightly: sync a Parquet input (the bundled sample by default) into POLYV viewer custom fields.

Runs as is against the local simulator (``polyv-sync simulator``) with the connection
``AIRFLOW_CONN_POLYV_DEFAULT='{"conn_type": "polyv", "login": "demo-app", "password":
"demo-secret", "host": "http://127.0.0.1:8750"}'``. Reports go to
``<polyv_report_dir>/polyv_viewer_sync_parquet/<run>.parquet`` unless ``report_path`` is given
(Airflow Variable ``polyv_report_dir``, e.g. ``AIRFLOW_VAR_POLYV_REPORT_DIR``, default ``out``).
Set the Variable ``polyv_state_dir`` to keep a sync state, so unchanged values are not resent.
"""

from __future__ import annotations

from importlib.resources import files

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param

from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

# Seconds a run waits for another run of the same account to release its sync state.
LOCK_TIMEOUT_S = 3600

SAMPLE = str(files("polyv_connector") / "data" / "sample_viewers.parquet")
# The per-run default report path: a run id holds ':' and '+', awkward in file names.
DEFAULT_REPORT = (
    "{{ var.value.get('polyv_report_dir', 'out') }}/polyv_viewer_sync_parquet/"
    "{{ run_id | replace(':', '') | replace('+', '') }}.parquet"
)

with DAG(
    dag_id="polyv_viewer_sync_parquet",
    description="Sync viewer custom fields from Parquet into POLYV",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["polyv"],
    doc_md=__doc__,
    params={
        "input_path": Param(SAMPLE, type="string", description="Parquet file, directory or URL"),
        "report_path": Param(
            "", type="string", description="Parquet report path; empty: <polyv_report_dir>/<dag>/<run>.parquet"
        ),
        "full_refresh": Param(False, type="boolean", description="ignore the sync state, send everything"),
        "dry_run": Param(False, type="boolean", description="plan and report only, send nothing"),
    },
) as dag:
    PolyvViewerFieldSyncOperator(
        task_id="sync_viewer_fields",
        # Another run of this account (a backfill date, the nightly run) may hold the sync state:
        # wait for it rather than fail as busy. The lock makes overlapping runs safe; this makes
        # them succeed. (Or queue them through a pool of one slot.)
        lock_timeout=LOCK_TIMEOUT_S,
        input_path="{{ params.input_path }}",
        report_path="{% if params.report_path %}{{ params.report_path }}{% else %}" + DEFAULT_REPORT + "{% endif %}",
        state_dir="{{ var.value.get('polyv_state_dir', '') }}",
        full_refresh="{{ params.full_refresh }}",
        dry_run="{{ params.dry_run }}",
    )
