"""What a deployment of the connector in Airflow sets: Variables, config settings, connections
and environment variables, declared once.

The example DAGs take their Variable names (and defaults) from here, and the README's
deployment table (README.md#what-a-deployment-sets) is generated from :data:`DEPLOYMENT` by
``make docs``: a name typed in one place cannot drift from the other. A leaf module: it imports
nothing from Airflow, so reading it costs nothing at DAG-parse time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Literal

from polyv_connector.model import DEFAULT_BUDGET_RPS, MAX_RPS_CEILING

Kind = Literal["variable", "config", "connection", "environment"]


@dataclass(frozen=True)
class DeploymentSetting:
    """One thing a deployment may set.

    ``name`` is what a person types: a Variable or connection id, ``[section] key`` for an
    Airflow config setting, an environment variable's name. ``default`` is shown as text ("" when
    there is none); ``without`` says what goes wrong, or what happens, when it is not set.
    """

    name: str
    kind: Kind
    default: str
    required: bool
    meaning: str
    without: str


# Variables (Airflow Variables the example DAGs read at run time).
VAR_REPORT_DIR = "polyv_report_dir"
VAR_INPUT_PREFIXES = "polyv_input_prefixes"
VAR_SOURCE_CONN_IDS = "polyv_source_conn_ids"
VAR_CONN_IDS = "polyv_conn_ids"
VAR_REPORT_CONN_ID = "polyv_report_conn_id"
VAR_STATE_CONN_ID = "polyv_state_conn_id"
VAR_STATE_DIR = "polyv_state_dir"
VAR_DIFF_IN_WAREHOUSE = "polyv_diff_in_warehouse"

# Connections.
CONN_POLYV = "polyv_default"
CONN_WAREHOUSE = "polyv_warehouse"
CONN_ALERTS = "polyv_alerts"

# Airflow config settings (section, key).
CONFIG_SERVED_DIRS = ("polyv", "served_dirs")

# Environment variables read by the connector itself (the same names as in runspec.SETTINGS and
# budget.machine; a test checks they agree).
ENV_BUDGET_URL = "POLYV_BUDGET_URL"
ENV_BUDGET_RPS = "POLYV_BUDGET_RPS"
ENV_RUNTIME_DIR = "POLYV_RUNTIME_DIR"
ENV_MAX_CHANGED_FRACTION = "POLYV_MAX_CHANGED_FRACTION"
ENV_CHANGE_LIMIT_MIN_ITEMS = "POLYV_CHANGE_LIMIT_MIN_ITEMS"
ENV_MAX_SOURCE_SHRINK = "POLYV_MAX_SOURCE_SHRINK"

# Folders under $AIRFLOW_HOME: the operator's default report and validation folders, which the
# plugin serves unless [polyv] served_dirs says otherwise.
REPORTS_FOLDER = "polyv_reports"
VALIDATION_FOLDER = "polyv_validation"

#: Defaults of the Variables that hold a list, as the DAGs' templates give them.
DEFAULT_SOURCE_CONN_IDS = [CONN_WAREHOUSE]
DEFAULT_CONN_IDS = [CONN_POLYV]


DEPLOYMENT: tuple[DeploymentSetting, ...] = (
    DeploymentSetting(
        CONN_POLYV,
        "connection",
        "",
        True,
        "the POLYV account: type `polyv`, login the appId, password the appSecret, host the API "
        "base URL (empty: POLYV's own)",
        "every example DAG fails before sending, naming `polyv_conn_id`",
    ),
    DeploymentSetting(
        CONN_WAREHOUSE,
        "connection",
        "",
        False,
        "the SQL warehouse the warehouse, backfill, accounts and partitioned DAGs read (PostgreSQL, "
        "MySQL/MariaDB or DuckDB); a read-only role is the first defence",
        "those DAGs fail before sending, naming `source_conn_id`; the Parquet DAG does not need it",
    ),
    DeploymentSetting(
        CONN_ALERTS,
        "connection",
        "",
        False,
        "an HTTP endpoint (host: the webhook URL) that the failure notifier POSTs its alert to",
        "alerts are logged in the task log only",
    ),
    DeploymentSetting(
        VAR_REPORT_DIR,
        "variable",
        "$AIRFLOW_HOME/polyv_reports",
        False,
        "the folder reports and run pages are written under, each DAG in `<folder>/<dag_id>/`; a trigger "
        "names a `.parquet` report only inside its DAG's folder; the plugin serves it without further setting",
        "reports go to the default folder (keep it on storage every worker and the API server share)",
    ),
    DeploymentSetting(
        VAR_INPUT_PREFIXES,
        "variable",
        "the bundled sample's folder",
        False,
        "JSON list of folders or URLs a trigger's `input_path` must lie under (Parquet DAG)",
        "only the bundled sample can be read: any other `input_path` is refused",
    ),
    DeploymentSetting(
        VAR_SOURCE_CONN_IDS,
        "variable",
        json.dumps(DEFAULT_SOURCE_CONN_IDS),
        False,
        "JSON list of the SQL connections a trigger may name as `source_conn_id` (backfill DAG)",
        "only `polyv_warehouse` can be read",
    ),
    DeploymentSetting(
        VAR_CONN_IDS,
        "variable",
        json.dumps(DEFAULT_CONN_IDS),
        False,
        "JSON list of the POLYV connections a trigger may send through (accounts DAG)",
        "only `polyv_default` can be sent to",
    ),
    DeploymentSetting(
        VAR_REPORT_CONN_ID,
        "variable",
        "the source connection",
        False,
        "the SQL connection the report table is written through",
        "the report table goes to the source database (needs a role that may write there)",
    ),
    DeploymentSetting(
        VAR_STATE_CONN_ID,
        "variable",
        "`polyv_report_conn_id`, else the source connection",
        False,
        "the SQL connection the sync state and lock tables live in",
        "the state goes where the report goes (needs a role that may write there)",
    ),
    DeploymentSetting(
        VAR_STATE_DIR,
        "variable",
        "",
        False,
        "a folder for a file-based sync state; when set it wins over the state table of the warehouse, "
        "backfill and partitioned DAGs (the Parquet DAG's only state)",
        "the Parquet DAG keeps no state and resends every value on every run; the warehouse DAGs use their state table",
    ),
    DeploymentSetting(
        VAR_DIFF_IN_WAREHOUSE,
        "variable",
        "false",
        False,
        "`true`: unchanged rows are dropped by a join in the warehouse (source and state in one "
        "database) instead of in the worker",
        "the diff runs in the worker (every source row is read)",
    ),
    DeploymentSetting(
        "[polyv] served_dirs",
        "config",
        "$AIRFLOW_HOME/polyv_reports, $AIRFLOW_HOME/polyv_validation",
        False,
        "comma-separated extra folders the plugin may serve run pages, reports and Data Docs from "
        "(joined by the default folders and `polyv_report_dir`; only `<folder>/<dag_id>/` of a link's DAG; "
        "environment: `AIRFLOW__POLYV__SERVED_DIRS`)",
        "the default folders and `polyv_report_dir` are served; links to files elsewhere answer 404",
    ),
    DeploymentSetting(
        ENV_BUDGET_URL,
        "environment",
        "machine-wide (a file on the worker)",
        False,
        "`redis://host:port/db`: the request budget every run through one IP shares (or the "
        "operator's `budget_conn_id`, a Redis connection)",
        "on Celery or Kubernetes, each worker keeps its own budget and together they can exceed "
        "POLYV's per-IP limit (each task logs a WARNING)",
    ),
    DeploymentSetting(
        ENV_BUDGET_RPS,
        "environment",
        f"{DEFAULT_BUDGET_RPS:g}",
        False,
        f"the egress IP's total requests per second for POLYV (at most {MAX_RPS_CEILING:g}); set the same "
        "value on every worker (the operator's `budget_rps` overrides it)",
        f"{DEFAULT_BUDGET_RPS:g} requests/s; runs that disagree on one budget use the lowest and warn",
    ),
    DeploymentSetting(
        ENV_RUNTIME_DIR,
        "environment",
        "/tmp/polyv-connector-<uid>",
        False,
        "the folder of the machine-wide budget (a SQLite file shared by every process of the user)",
        "the default folder; a folder that cannot be written fails the run before sending (exit 2)",
    ),
    DeploymentSetting(
        ENV_MAX_CHANGED_FRACTION,
        "environment",
        "0.5",
        False,
        "the worker-wide default of `max_changed_fraction` (`none`: off); the argument and the `polyv` "
        "connection's extra override it (see `docs/limits.md`)",
        "a run that would change more than half of the items the state knows sends nothing (exit 4)",
    ),
    DeploymentSetting(
        ENV_CHANGE_LIMIT_MIN_ITEMS,
        "environment",
        "1000",
        False,
        "the worker-wide default of `change_limit_min_items`",
        "the change limit applies from 1000 known items on",
    ),
    DeploymentSetting(
        ENV_MAX_SOURCE_SHRINK,
        "environment",
        "0.5",
        False,
        "the worker-wide default of `max_source_shrink` (`none`: off)",
        "a whole-source run with fewer than half the last one's keys sends nothing (exit 4)",
    ),
)


def variable_template(name: str, default: str) -> str:
    """A Jinja template reading Variable ``name`` as text, ``default`` when it is unset."""
    return "{{ var.value.get(%r, %s) }}" % (name, json.dumps(default))  # noqa: UP031 - braces are Jinja's


def json_variable_template(name: str, default: list[str]) -> str:
    """A Jinja template reading the JSON Variable ``name`` as JSON text, ``default`` when unset."""
    return "{{ var.json.get(%r, %s) | tojson }}" % (name, json.dumps(default))  # noqa: UP031


def airflow_home() -> str:
    """``$AIRFLOW_HOME``, else ``~/airflow`` (Airflow's own default)."""
    return os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")


def default_report_dir() -> str:
    """Where reports and run pages go when no folder is named: ``$AIRFLOW_HOME/polyv_reports``."""
    return os.path.join(airflow_home(), REPORTS_FOLDER)
