"""On demand: plan a Parquet sync, and ask a person before a plan that breaches the change limits
is sent.

Takes the Parquet DAG's params (the bundled sample by default, against the local simulator with
the ``polyv`` connection ``polyv_default``) plus the change limits. Three steps:

1. ``plan`` (``mode="plan"``): reads, checks, validates and diffs the input against the sync
   state, sends nothing, and writes the plan (the exact items a run would send, signed with the
   account's appSecret) and its preview page into this DAG's report folder.
2. Within the limits, ``apply`` runs at once. When the plan breaches them (``max_changed_fraction``
   of the items the state knows, or, with ``whole_source``, a source shrunk by more than
   ``max_source_shrink``), ``approve`` (Airflow's ``ApprovalOperator``; it waits in the triggerer)
   shows the plan's counts by kind and by field, the breaches and a link to the preview page.
3. ``apply`` (``mode="apply"``) sends exactly the plan's items, not what the input says by then,
   and records them in the state; it refuses a plan that was altered, or made before another run
   changed the state. Reject: nothing is sent, the run ends without error (``apply`` skipped).

Paths follow the Parquet DAG's rules (``report_path`` a ``.parquet`` name in this DAG's folder
under the Variable ``polyv_report_dir``; ``input_path`` under ``polyv_input_prefixes``); the plan
is ``<run>.plan.parquet`` in the same folder. On Celery both tasks must reach that folder (shared
storage). The change limit needs a sync state: set the Variable ``polyv_state_dir``. This text is
the DAG's documentation in the UI: never put a credential here.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Param, task

from polyv_connector.airflow.notifier import PolyvSyncFailureNotifier
from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator
from polyv_connector.airflow.params import (
    INPUT_PREFIXES,
    LOCK_TIMEOUT_S,
    REPORT_DIR,
    SAMPLE_INPUT,
    STATE_DIR,
    dag_settings,
    optional_text_param,
)
from polyv_connector.airflow.review import APPLY_TASK, APPROVE_TASK, MACROS, PLAN_TASK, after_plan
from polyv_connector.deployment import CONN_ALERTS, VAR_REPORT_DIR

# The bundled suite: package data when installed, expectations/ in a source checkout.
SUITE_PREFIXES = [str(files("polyv_connector") / "data"), str(Path(__file__).resolve().parents[1] / "expectations")]
RUN = "{{ run_id | replace(':', '') | replace('+', '') }}"
# Where both tasks find the plan: a name in this DAG's report folder.
PLAN = RUN + ".plan.parquet"
# Where each task does what the Parquet DAG's task does, shared by both modes.
SHARED = {
    "lock_timeout": LOCK_TIMEOUT_S,
    "report_dir": REPORT_DIR,
    "state_dir": STATE_DIR,
    "state_table": "",
    "plan_path": PLAN,
}

with DAG(
    dag_id="polyv_viewer_sync_reviewed",
    description="Plan a Parquet sync; a plan that breaches the change limits waits for a person's approval",
    schedule=None,
    doc_md=__doc__,
    user_defined_macros=MACROS,
    # Every task alerts on failure: the syncs with their summary, the branch and the approval step
    # with the error alone.
    default_args={"on_failure_callback": PolyvSyncFailureNotifier(CONN_ALERTS)},
    **dag_settings(),
    params={
        "input_path": Param(SAMPLE_INPUT, type="string", description="Parquet file, directory or URL"),
        "report_path": optional_text_param(
            f"the apply's report file name (.parquet) in this DAG's folder under the Variable {VAR_REPORT_DIR} "
            "(no absolute path, no '..', not an existing file); empty: <run>.parquet. The plan's report is "
            "<run>.plan-report.parquet"
        ),
        "expectation_suite_path": optional_text_param(
            "Great Expectations suite to validate with ('default': the bundled one); empty: none"
        ),
        "full_refresh": Param(False, type="boolean", description="plan every item, unchanged ones included"),
        "dry_run": Param(False, type="boolean", description="write the plan and its preview only, never apply"),
        "max_changed_fraction": Param(
            0.5,
            type=["null", "number"],
            minimum=0,
            description="ask for approval when the changes exceed this share of the items the state knows "
            "(may exceed 1; empty: never ask for this)",
        ),
        "change_limit_min_items": Param(
            1000, type="integer", minimum=0, description="the change limit applies once the state knows this many"
        ),
        "max_source_shrink": Param(
            0.5,
            type=["null", "number"],
            minimum=0,
            maximum=1,
            description="with whole_source: ask for approval when the input has lost more than this share of "
            "the last whole-source run's keys (empty: never ask for this)",
        ),
        "whole_source": Param(
            False, type="boolean", description="the input is the account's whole source, not a delta"
        ),
    },
) as dag:
    plan = PolyvViewerFieldSyncOperator(
        task_id=PLAN_TASK,
        mode="plan",
        input_path="{{ params.input_path }}",
        allowed_input_prefixes=INPUT_PREFIXES,
        report_path=RUN + ".plan-report.parquet",
        expectation_suite_path="{{ params.expectation_suite_path or '' }}",
        allowed_suite_prefixes=json.dumps(SUITE_PREFIXES),
        full_refresh="{{ params.full_refresh }}",
        max_changed_fraction="{{ params.max_changed_fraction }}",
        change_limit_min_items="{{ params.change_limit_min_items }}",
        max_source_shrink="{{ params.max_source_shrink }}",
        whole_source="{{ params.whole_source }}",
        **SHARED,
    )

    @task.branch(task_id="within_limits")
    def within_limits(ti: Any = None, params: Any = None) -> list[str]:
        """The apply at once when the plan is within the limits, else the approval step (neither
        for a dry run: the plan and its preview are what it asked for)."""
        return [] if params["dry_run"] else [after_plan(ti.xcom_pull(task_ids=PLAN_TASK))]

    approve = ApprovalOperator(
        task_id=APPROVE_TASK,
        subject="POLYV sync {{ run_id }}: the plan breaches the change limits. Send it?",
        body="{{ polyv_approval_body(ti.xcom_pull(task_ids='" + PLAN_TASK + "'), dag.dag_id, run_id) }}",
    )
    apply = PolyvViewerFieldSyncOperator(
        task_id=APPLY_TASK,
        mode="apply",
        report_path="{% if params.report_path %}{{ params.report_path }}{% else %}" + RUN + ".parquet{% endif %}",
        # Runs after the approval, or at once when the branch skipped it.
        trigger_rule="none_failed_min_one_success",
        **SHARED,
    )
    branch = within_limits()
    plan >> branch >> [approve, apply]
    approve >> apply
