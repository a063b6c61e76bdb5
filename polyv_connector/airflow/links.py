"""Operator extra links: the run page, the report and the Data Docs, opened from the Airflow UI.

A browser will not follow a ``file://`` link from an http page, so the links point at the
Airflow API server itself, where :mod:`polyv_connector.airflow.plugin` serves them. A link names
the task instance and the kind of file, as Airflow's own routes name a task instance::

    <api base path>/polyv/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/{kind}/{subpath}

``kind`` is ``run-page``, ``report`` or ``data-docs``; ``subpath`` is the file under that kind's
folder (the run page's name, the report's, the Data Docs page under the site's root). The
server finds the folder from that task instance's own summary XCom, never from the link, and
checks that the user may read that DAG's task instances (see :mod:`polyv_connector.airflow.served`).

Airflow 3 computes each link once, in the worker, when the task finishes (successful or not)
and stores it as an XCom: ``get_link`` reads the task's summary XCom. An empty string means
"no such file for this run" (a table-only report, no suite) and the UI shows no link; the
server answers 404 for it too.

Importing this module is cheap: the operator module imports it at DAG-parse time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperatorLink

from polyv_connector.airflow.served import DATA_DOCS, REPORT, RUN_PAGE, link_subpath, named_path

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: Where the plugin's FastAPI app is mounted on the API server.
URL_PREFIX = "/polyv"
#: The plugin's route (under URL_PREFIX), in the shape of Airflow's own task-instance routes.
TASK_FILE_ROUTE = "/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/{kind}/{subpath:path}"


def task_file_url(
    dag_id: str, run_id: str, task_id: str, map_index: int, kind: str, subpath: str, base_url: str = ""
) -> str:
    """The API server URL of ``kind``/``subpath`` of one task instance."""
    base = urlsplit(base_url).path.rstrip("/") if base_url else ""
    parts = [quote(str(p), safe="") for p in (dag_id, run_id, task_id, map_index, kind)]
    sub = "/".join(quote(seg, safe="") for seg in subpath.split("/"))
    return f"{base}{URL_PREFIX}/dags/{parts[0]}/dagRuns/{parts[1]}/taskInstances/{parts[2]}/{parts[3]}/{parts[4]}/{sub}"


def summary_link(summary: dict[str, Any], kind: str, ti_key: Any, base_url: str = "") -> str:
    """The link to ``kind`` of the task instance ``ti_key`` ("" when the summary names no such
    file; an ``http(s)://`` location in object storage as it is, a browser opens it itself)."""
    named = named_path(summary, kind)
    if named is None:
        return ""
    if "://" in named:
        return named if named.startswith(("http://", "https://")) else ""
    subpath = link_subpath(summary, kind)
    if not subpath:
        return ""
    map_index = getattr(ti_key, "map_index", -1)
    return task_file_url(
        ti_key.dag_id, ti_key.run_id, ti_key.task_id, -1 if map_index is None else map_index, kind, subpath, base_url
    )


def _api_base_url() -> str:
    """``[api] base_url`` (for a UI served under a sub-path), else the server root."""
    try:
        from airflow.sdk.configuration import conf

        return str(conf.get("api", "base_url", fallback="") or "")
    except Exception:  # a link is a nicety: never fail the task's finalisation over it
        return ""


def _summary(operator: Any, ti_key: TaskInstanceKey) -> dict[str, Any]:
    from polyv_connector.airflow.summary import kept_summary

    known, kept = kept_summary(operator)
    if known:  # the worker, right after execute(): no XCom question for a summary never pushed
        return kept or {}
    from airflow.sdk.execution_time.xcom import XCom

    value = XCom.get_value(ti_key=ti_key, key="return_value")
    return value if isinstance(value, dict) else {}


class _SummaryLink(BaseOperatorLink):
    """A link to one kind of file named in the task's summary XCom."""

    kind = ""

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return summary_link(_summary(operator, ti_key), self.kind, ti_key, _api_base_url())


class RunPageLink(_SummaryLink):
    """The run page: counts by status and reason, the request timeline, checks, problem rows."""

    name = "POLYV run page"
    kind = RUN_PAGE


class ReportLink(_SummaryLink):
    """The per-item Parquet report (a download; a table report has no link)."""

    name = "POLYV report"
    kind = REPORT


class DataDocsLink(_SummaryLink):
    """This run's validation page in the Great Expectations Data Docs (runs with a suite)."""

    name = "POLYV Data Docs"
    kind = DATA_DOCS
