"""Nightly: sync a Parquet input (the bundled sample by default) into POLYV viewer custom fields.

Runs as is against the local simulator (``polyv-sync simulator``) with a ``polyv`` connection
``polyv_default`` (login: the appId, password: the appSecret, host: ``http://127.0.0.1:8750``;
the README's quick start has the simulator's demo values). This text is the DAG's documentation
in the UI and in OpenLineage events: never put a credential here.

Whoever may trigger this DAG chooses its params, so they point only where the DAG author allows:

* ``report_path`` is a *name* under the report folder (Airflow Variable ``polyv_report_dir``,
  e.g. ``AIRFLOW_VAR_POLYV_REPORT_DIR``, default ``$AIRFLOW_HOME/polyv_reports``): no absolute
  path, no ``..``. Empty: ``polyv_viewer_sync_parquet/<run>.parquet`` there.
* ``input_path`` lies under a prefix of the Variable ``polyv_input_prefixes`` (a JSON list of
  folders or URLs; default: the bundled sample's folder).
* ``expectation_suite_path`` (``default`` for the bundled suite) lies under the package's or the
  repository's ``expectations`` folder.

Set the Variable ``polyv_state_dir`` to keep a sync state, so unchanged values are not resent.
"""

from __future__ import annotations

import json
import os
from importlib.resources import files
from pathlib import Path

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param

from polyv_connector.airflow.notifier import PolyvSyncFailureNotifier
from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

# Seconds a run waits for another run of the same account to release its sync state.
LOCK_TIMEOUT_S = 3600

SAMPLE = str(files("polyv_connector") / "data" / "sample_viewers.parquet")
REPORT_DIR = os.path.join(os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow"), "polyv_reports")
INPUT_PREFIXES = [os.path.dirname(SAMPLE)]
# The bundled suite: package data when installed, expectations/ in a source checkout.
SUITE_PREFIXES = [str(files("polyv_connector") / "data"), str(Path(__file__).resolve().parents[1] / "expectations")]
# The per-run default report name: a run id holds ':' and '+', awkward in file names.
DEFAULT_REPORT = "polyv_viewer_sync_parquet/{{ run_id | replace(':', '') | replace('+', '') }}.parquet"


def _variable(name: str, default: str) -> str:
    """A template reading Variable ``name``, ``default`` when unset (json.dumps quotes it for Jinja)."""
    return "{{ var.value.get(%r, %s) }}" % (name, json.dumps(default))  # noqa: UP031 - braces are Jinja's


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
        # Optional values are nullable: the trigger form treats an empty "string" Param as
        # required and keeps the Trigger button disabled.
        "report_path": Param(
            None,
            type=["null", "string"],
            description="report file name under the Variable polyv_report_dir (no absolute path, no '..'); "
            "empty: <dag>/<run>.parquet (the run page goes next to it, .html)",
        ),
        "expectation_suite_path": Param(
            None,
            type=["null", "string"],
            description="Great Expectations suite to validate with ('default': the bundled one); empty: none",
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
        input_path="{{ params.input_path }}",
        report_path="{% if params.report_path %}{{ params.report_path }}{% else %}" + DEFAULT_REPORT + "{% endif %}",
        expectation_suite_path="{{ params.expectation_suite_path or '' }}",
        # Where the params above may point: the DAG author's choice, not the trigger's.
        report_dir=_variable("polyv_report_dir", REPORT_DIR),
        allowed_input_prefixes=_variable("polyv_input_prefixes", json.dumps(INPUT_PREFIXES)),
        allowed_suite_prefixes=json.dumps(SUITE_PREFIXES),
        state_dir="{{ var.value.get('polyv_state_dir', '') }}",
        # A Parquet run keeps its state in the folder above or nowhere: no state table, so the
        # rendered templates do not show one the run never uses.
        state_table="",
        full_refresh="{{ params.full_refresh }}",
        dry_run="{{ params.dry_run }}",
    )
