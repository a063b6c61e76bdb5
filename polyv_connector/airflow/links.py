"""Operator extra links: the run page, the report and the Data Docs, opened from the Airflow UI.

A browser will not follow a ``file://`` link from an http page, so the links point at the
Airflow API server itself, where :mod:`polyv_connector.airflow.plugin` serves the files under
its configured folders. A link is ``<api base path>/polyv/files/<absolute path>``: the path is
the one the task logged and returned (XCom ``runPage``, ``reportPath``, and the validation's
``dataDocsPage``); the server decides whether it may show it (only files under its folders).

Airflow 3 computes each link once, in the worker, when the task finishes (successful or not)
and stores it as an XCom: ``get_link`` reads the task's summary XCom. An empty string means
"no such file for this run" (a table-only report, no suite) and the UI shows no link.

Importing this module is cheap: the operator module imports it at DAG-parse time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: Where the plugin's FastAPI app is mounted on the API server.
URL_PREFIX = "/polyv"
FILES_ROUTE = "/files"


def file_url(path: str | None, base_url: str = "") -> str:
    """The API server URL that serves local file ``path`` ("" for none, or for an object-store URL,
    returned as it is: a browser opens an ``https://`` one itself)."""
    if not path:
        return ""
    if "://" in path:
        return path if path.startswith(("http://", "https://")) else ""
    base = urlsplit(base_url).path.rstrip("/") if base_url else ""
    return f"{base}{URL_PREFIX}{FILES_ROUTE}/{quote(path.lstrip('/'))}"


def _api_base_url() -> str:
    """``[api] base_url`` (for a UI served under a sub-path), else the server root."""
    try:
        from airflow.sdk.configuration import conf

        return str(conf.get("api", "base_url", fallback="") or "")
    except Exception:  # a link is a nicety: never fail the task's finalisation over it
        return ""


def _summary(ti_key: TaskInstanceKey) -> dict[str, Any]:
    from airflow.sdk.execution_time.xcom import XCom

    value = XCom.get_value(ti_key=ti_key, key="return_value")
    return value if isinstance(value, dict) else {}


class _SummaryLink(BaseOperatorLink):
    """A link to one file named in the task's summary XCom."""

    def path(self, summary: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return file_url(self.path(_summary(ti_key)), _api_base_url())


class RunPageLink(_SummaryLink):
    """The run page: counts by status and reason, the request timeline, checks, problem rows."""

    name = "POLYV run page"

    def path(self, summary: dict[str, Any]) -> str | None:
        page = summary.get("runPage")
        return page if isinstance(page, str) else None


class ReportLink(_SummaryLink):
    """The per-item Parquet report (a download; a table report has no link)."""

    name = "POLYV report"

    def path(self, summary: dict[str, Any]) -> str | None:
        report = summary.get("reportPath")
        return report if isinstance(report, str) else None


class DataDocsLink(_SummaryLink):
    """This run's validation page in the Great Expectations Data Docs (runs with a suite)."""

    name = "POLYV Data Docs"

    def path(self, summary: dict[str, Any]) -> str | None:
        validation = summary.get("validation")
        if not isinstance(validation, dict):
            return None
        page = validation.get("dataDocsPage") or validation.get("dataDocs")
        return page if isinstance(page, str) else None
