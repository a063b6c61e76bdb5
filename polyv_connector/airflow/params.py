"""What the example DAGs share: their trigger-form params, the Variable templates their operator
arguments read, the nightly schedule and the lock wait.

Each example DAG still writes its operator call out (an example DAG is documentation); the
params and templates come from here so that a description, a pattern or a Variable's default is
written once. Variable names and defaults come from :mod:`polyv_connector.deployment`.

DAG files import this at parse time: it imports nothing heavy (no pandas, pyarrow or Great
Expectations), only ``airflow.sdk``.
"""

from __future__ import annotations

import json
import os
from importlib.resources import files
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param

from polyv_connector import deployment as dep
from polyv_connector.airflow.accounts import TABLE_NAME as _TABLE_NAME_RE

#: Seconds a run waits for another run of the same account to release its sync state: the lock
#: makes overlapping runs (a backfill date, the nightly run) safe; this makes them succeed.
LOCK_TIMEOUT_S = 3600

#: The example DAGs' retention (report_retention_days, runs_retention_days: off unless set).
DAG_REPORT_RETENTION_DAYS = 30
DAG_RUNS_RETENTION_DAYS = 400

#: Table params are spliced into SQL text: ``[db.][schema.]table`` identifiers only.
TABLE_NAME = _TABLE_NAME_RE.pattern

#: The warehouse DAGs' default source table, and the report and state tables they write.
SOURCE_TABLE = "polyv_viewer_attributes"
REPORT_TABLE = "polyv_sync_report"
STATE_TABLE = "polyv_sync_state"

#: Rows changed in the run's data interval. The table name is checked as an identifier by the
#: operator only when it is passed as source_table; here it is part of the query text (the
#: param's pattern checks it). ``*``, not the three names: the column mapping picks the columns,
#: so a table whose columns are named otherwise fails with the mapping's message (missing
#: column(s) ..., found: ...), not with the database's "column does not exist" on the query.
INTERVAL_SQL = """
SELECT *
FROM {{ params.source_table }}
WHERE updated_at >= '{{ data_interval_start }}' AND updated_at < '{{ data_interval_end }}'
"""
#: The ``source_sql`` param when given, else :data:`INTERVAL_SQL`.
SQL_OR_INTERVAL = "{% if params.source_sql %}{{ params.source_sql }}{% else %}" + INTERVAL_SQL + "{% endif %}"

#: The bundled sample input: the Parquet DAG's default, and where its input may lie by default.
SAMPLE_INPUT = str(files("polyv_connector") / "data" / "sample_viewers.parquet")

# ---- Variable templates: rendered when a task runs (a Variable read at parse time would cost
# the scheduler a metadata-database query on every parse) --------------------------------------
#: Writers of their own ("" = the source connection), so the source's role may be read-only.
REPORT_CONN_ID = dep.variable_template(dep.VAR_REPORT_CONN_ID, "")
STATE_CONN_ID = dep.variable_template(dep.VAR_STATE_CONN_ID, "")
STATE_DIR = dep.variable_template(dep.VAR_STATE_DIR, "")
DIFF_IN_WAREHOUSE = dep.variable_template(dep.VAR_DIFF_IN_WAREHOUSE, "false")
#: The connections a trigger may name (checked before a connection is read).
SOURCE_CONN_IDS = dep.json_variable_template(dep.VAR_SOURCE_CONN_IDS, dep.DEFAULT_SOURCE_CONN_IDS)
POLYV_CONN_IDS = dep.json_variable_template(dep.VAR_CONN_IDS, dep.DEFAULT_CONN_IDS)
#: Where a trigger's report name and input path may point.
REPORT_DIR = dep.variable_template(dep.VAR_REPORT_DIR, dep.default_report_dir())
INPUT_PREFIXES = dep.variable_template(dep.VAR_INPUT_PREFIXES, json.dumps([os.path.dirname(SAMPLE_INPUT)]))


def nightly() -> CronDataIntervalTimetable:
    """02:00 UTC every day, with a real data interval (the interval query selects a day)."""
    return CronDataIntervalTimetable("0 2 * * *", timezone="UTC")


def dag_settings() -> dict[str, Any]:
    """The DAG arguments every example shares: a start in the past, no catch-up, one run at a
    time (runs of one account would only wait for each other's lock), the ``polyv`` tag."""
    return {
        "start_date": pendulum.datetime(2025, 1, 1, tz="UTC"),
        "catchup": False,
        "max_active_runs": 1,
        "tags": ["polyv"],
    }


# ---- params: each call gives new Param objects (a DAG owns its params) -----------------------
def table_param(default: str, description: str) -> Param:
    """A ``[schema.]table`` name: it is spliced into SQL text, so the form checks the pattern."""
    return Param(default, type="string", pattern=TABLE_NAME, description=description)


def source_params(table_description: str, sql_description: str) -> dict[str, Param]:
    """``source_table`` and the optional ``source_sql`` that replaces it."""
    read_only = (
        ": one read-only query (SELECT, WITH ... SELECT, VALUES), run in a read-only transaction "
        "with the connection's role"
    )
    return {
        "source_table": table_param(SOURCE_TABLE, table_description),
        # Nullable, so the trigger form does not require it (an empty "string" Param is
        # required); a text area, since a query spans lines.
        "source_sql": Param(None, type=["null", "string"], format="multiline", description=sql_description + read_only),
    }


def interval_params() -> dict[str, Param]:
    """The nightly warehouse sync's source: the rows of a table changed in the data interval,
    or a query of one's own."""
    return source_params("[schema.]table read by the default interval query", "a query replacing the default one")


def table_params(report: str = "", state: str = "") -> dict[str, Param]:
    """``report_table`` and ``state_table``; ``report`` / ``state`` add to their descriptions."""
    return {
        "report_table": table_param(REPORT_TABLE, f"[schema.]table the per-item report is appended to{report}"),
        "state_table": table_param(
            STATE_TABLE, f"[schema.]table of the sync state{state} (unchanged values are not resent)"
        ),
    }


def run_params(full_refresh: bool = False) -> dict[str, Param]:
    """``full_refresh`` and ``dry_run``: every example DAG has both."""
    return {
        "full_refresh": Param(full_refresh, type="boolean", description="ignore the sync state, send everything"),
        "dry_run": Param(False, type="boolean", description="plan and report only, send nothing"),
    }


def optional_text_param(description: str) -> Param:
    """An optional text: nullable, since the trigger form treats an empty "string" Param as
    required and keeps the Trigger button disabled."""
    return Param(None, type=["null", "string"], description=description)


def accounts_param() -> Param:
    """The accounts DAG's list of accounts, each ``{"polyv_conn_id": ..., "source_table": ...}``
    or ``{"polyv_conn_id": ..., "source_sql": ...}`` (checked again, whole, by
    :func:`polyv_connector.airflow.accounts.account_kwargs` before any task is mapped)."""
    account = {
        "type": "object",
        "properties": {
            "polyv_conn_id": {"type": "string", "minLength": 1},
            "source_table": {"type": "string", "pattern": TABLE_NAME},
            "source_sql": {"type": "string", "minLength": 1},
        },
        "required": ["polyv_conn_id"],
        "additionalProperties": False,
    }
    return Param(
        [{"polyv_conn_id": dep.CONN_POLYV, "source_table": SOURCE_TABLE}],
        type="array",
        minItems=1,
        items=account,
        description='one object per account: {"polyv_conn_id": ..., "source_table": ...} or '
        f'{{"polyv_conn_id": ..., "source_sql": ...}}; polyv_conn_id one of the Variable {dep.VAR_CONN_IDS}',
    )
