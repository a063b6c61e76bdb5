"""Nightly: sync a Parquet input (the bundled sample by default) into POLYV viewer custom fields.

Runs as is against the local simulator (``polyv-sync simulator``) with a ``polyv`` connection
``polyv_default`` (login: the appId, password: the appSecret, host: ``http://127.0.0.1:8750``;
the README's quick start has the simulator's demo values). This text is the DAG's documentation
in the UI and in OpenLineage events: never put a credential here.

Whoever may trigger this DAG chooses its params, so they point only where the DAG author allows:

* ``report_path`` is a *name* under the report folder (Airflow Variable ``polyv_report_dir``,
  e.g. ``AIRFLOW_VAR_POLYV_REPORT_DIR``, default ``$AIRFLOW_HOME/polyv_reports``): no absolute
  path, no ``..``, ending in ``.parquet``; it lands in this DAG's folder there
  (``polyv_viewer_sync_parquet/<name>``) and may not exist already. Empty: ``<run>.parquet``.
* ``input_path`` lies under a prefix of the Variable ``polyv_input_prefixes`` (a JSON list of
  folders or URLs; default: the bundled sample's folder).
* ``expectation_suite_path`` (``default`` for the bundled suite) lies under the package's or the
  repository's ``expectations`` folder.

Set the Variable ``polyv_state_dir`` to keep a sync state, so unchanged values are not resent.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from airflow.sdk import DAG, Param

from polyv_connector.airflow.notifier import PolyvSyncFailureNotifier
from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator
from polyv_connector.airflow.params import (
    DAG_REPORT_RETENTION_DAYS,
    DAG_RUNS_RETENTION_DAYS,
    INPUT_PREFIXES,
    LOCK_TIMEOUT_S,
    REPORT_DIR,
    SAMPLE_INPUT,
    STATE_DIR,
    dag_settings,
    nightly,
    optional_text_param,
    run_params,
)
from polyv_connector.deployment import CONN_ALERTS, VAR_REPORT_DIR

# The bundled suite: package data when installed, expectations/ in a source checkout.
SUITE_PREFIXES = [str(files("polyv_connector") / "data"), str(Path(__file__).resolve().parents[1] / "expectations")]
# The per-run default report name: a run id holds ':' and '+', awkward in file names.
# The operator puts it in this DAG's own folder under the report folder.
DEFAULT_REPORT = "{{ run_id | replace(':', '') | replace('+', '') }}.parquet"

with DAG(
    dag_id="polyv_viewer_sync_parquet",
    description="Sync viewer custom fields from Parquet into POLYV",
    schedule=nightly(),
    doc_md=__doc__,
    **dag_settings(),
    params={
        "input_path": Param(SAMPLE_INPUT, type="string", description="Parquet file, directory or URL"),
        "report_path": optional_text_param(
            f"report file name (.parquet) in this DAG's folder under the Variable {VAR_REPORT_DIR} "
            "(no absolute path, no '..', not an existing file); empty: <run>.parquet (the run page goes next "
            "to it, .html)"
        ),
        "expectation_suite_path": optional_text_param(
            "Great Expectations suite to validate with ('default': the bundled one); empty: none"
        ),
        **run_params(),
    },
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
        input_path="{{ params.input_path }}",
        report_path="{% if params.report_path %}{{ params.report_path }}{% else %}" + DEFAULT_REPORT + "{% endif %}",
        expectation_suite_path="{{ params.expectation_suite_path or '' }}",
        # Where the params above may point: the DAG author's choice, not the trigger's.
        report_dir=REPORT_DIR,
        allowed_input_prefixes=INPUT_PREFIXES,
        allowed_suite_prefixes=json.dumps(SUITE_PREFIXES),
        state_dir=STATE_DIR,
        # A Parquet run keeps its state in the folder above or nowhere: "" names no state table,
        # so the rendered templates do not show one the run never uses.
        state_table="",
        full_refresh="{{ params.full_refresh }}",
        dry_run="{{ params.dry_run }}",
    )
