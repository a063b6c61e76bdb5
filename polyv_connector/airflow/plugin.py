"""The Airflow plugin that serves run pages, reports and Data Docs from the API server.

One route per task instance and kind, in the shape of Airflow's own task-instance routes
(:data:`polyv_connector.airflow.links.TASK_FILE_ROUTE`)::

    GET /polyv/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/{kind}/{subpath}

Access is Airflow's own check on the DAG in the path: ``requires_access_dag("GET",
DagAccessEntity.TASK_INSTANCE)``, so a user who may read DAG A's task instances gets nothing of
DAG B, whatever ``?dag_id=`` they add. The file comes from that task instance's summary XCom,
and is served only from ``<served folder>/<dag_id>/`` with headers that let nothing run on the
Airflow origin (:mod:`polyv_connector.airflow.served`); anything else is 404, so the answer says
nothing about what exists elsewhere.

The served folders, read per request (a changed setting needs no restart): ``[polyv]
served_dirs`` (comma-separated), the operator's default folders (``$AIRFLOW_HOME/polyv_reports``
and ``$AIRFLOW_HOME/polyv_validation``) and the Variable ``polyv_report_dir`` (the report folder
the example DAGs write to). They must be the workers' folders as the API server sees them: one
machine, or a shared mount; for several hosts, write reports to object storage instead (see
docs/airflow.md#extra-links-and-the-plugin-that-serves-them).

Registered through the entry point ``airflow.plugins`` (setup.cfg).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from polyv_connector.airflow.conntest import PolyvConnectionTestMiddleware
from polyv_connector.airflow.folders import default_validation_dir
from polyv_connector.airflow.links import TASK_FILE_ROUTE, URL_PREFIX
from polyv_connector.airflow.served import resolve
from polyv_connector.deployment import CONFIG_SERVED_DIRS, VAR_REPORT_DIR, default_report_dir

log = logging.getLogger(__name__)

#: (dag_id, run_id, task_id, map_index) -> that task instance's summary XCom (None: none).
SummaryLookup = Callable[[str, str, str, int], "dict[str, Any] | None"]


def default_served_dirs() -> list[str]:
    """The operator's default report and validation folders."""
    return [default_report_dir(), default_validation_dir()]


def served_dirs_from_config() -> list[str]:
    """``[polyv] served_dirs`` ∪ the default folders ∪ the Variable ``polyv_report_dir``."""
    from airflow.configuration import conf

    raw = conf.get(*CONFIG_SERVED_DIRS, fallback="") or ""
    dirs = [d.strip() for d in raw.split(",") if d.strip()]
    dirs += default_served_dirs()
    report_dir = _report_dir_variable()
    if report_dir:
        dirs.append(report_dir)
    return list(dict.fromkeys(dirs))


def _report_dir_variable() -> str | None:
    try:
        from airflow.models.variable import Variable

        value = Variable.get(VAR_REPORT_DIR, default_var=None)
    except Exception as exc:  # the metadata DB unreachable: serve from the other folders
        log.warning("cannot read the Variable %s: %s", VAR_REPORT_DIR, type(exc).__name__)
        return None
    return value.strip() if isinstance(value, str) and value.strip() else None


def summary_from_xcom(dag_id: str, run_id: str, task_id: str, map_index: int) -> dict[str, Any] | None:
    """The task instance's ``return_value`` XCom from the metadata DB, when it is a dict."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    query = XComModel.get_many(
        run_id=run_id, key="return_value", task_ids=task_id, dag_ids=dag_id, map_indexes=map_index, limit=1
    )
    with create_session() as session:
        row: Any = session.scalars(query).first()
        row = row[0] if isinstance(row, tuple) else row  # as Airflow's own XCom route reads it
        value = row.value if row is not None else None
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def create_app(
    roots: Sequence[str] | None = None, *, summaries: SummaryLookup | None = None, authenticate: bool = True
) -> Any:
    """The FastAPI app mounted at ``/polyv``. ``roots`` default to the served folders and
    ``summaries`` to the metadata DB's XComs, both read per request; ``authenticate=False``
    for unit tests."""
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse

    dependencies = []
    if authenticate:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
        from airflow.api_fastapi.core_api.security import requires_access_dag

        # The DAG id comes from the path: Airflow reads the query string only when the path has
        # none, so "?dag_id=" changes nothing here.
        dependencies.append(Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE)))
    lookup = summaries or summary_from_xcom

    app = FastAPI(title="POLYV run pages", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get(TASK_FILE_ROUTE, dependencies=dependencies)
    def serve(dag_id: str, run_id: str, task_id: str, map_index: int, kind: str, subpath: str) -> FileResponse:
        # "~" means "every DAG" to Airflow's access check: never a task instance of ours.
        if dag_id == "~" or map_index < -1:
            raise HTTPException(status_code=404, detail="not found")
        summary = lookup(dag_id, run_id, task_id, map_index)
        served = resolve(summary, kind, subpath, dag_id, roots if roots is not None else served_dirs_from_config())
        if served is None:
            raise HTTPException(status_code=404, detail="not found")
        if served.download_name is not None:
            return FileResponse(
                served.path, media_type=served.media_type, headers=served.headers, filename=served.download_name
            )
        return FileResponse(served.path, media_type=served.media_type, headers=served.headers)

    return app


class PolyvPlugin(AirflowPlugin):
    """Serves the run pages, reports and Data Docs the operator's extra links point at.

    The links themselves are declared on the operator (``operator_extra_links``) and in the
    provider info (``extra-links``): Airflow 3 stores each link as an XCom when the task ends.
    """

    name = "polyv"
    fastapi_apps = [  # noqa: RUF012 - AirflowPlugin declares it a plain class attribute
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "POLYV run pages"}
    ]
    # The connection list's Test button on Airflow 3.3 (see polyv_connector.airflow.conntest).
    fastapi_root_middlewares = [  # noqa: RUF012
        {"middleware": PolyvConnectionTestMiddleware, "args": [], "kwargs": {}, "name": "POLYV connection test"}
    ]
