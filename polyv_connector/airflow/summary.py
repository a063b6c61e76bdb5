"""The summary a sync task returns as XCom: strict JSON, paths absolute, never the appSecret.

Cheap to import (DAG files import the operator at parse time): the result type is only named.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from polyv_connector.airflow.failures import scrub_secret
from polyv_connector.jsonsafe import strict_json
from polyv_connector.paths import is_url

if TYPE_CHECKING:
    from polyv_connector.config import Credentials
    from polyv_connector.engine.result import SyncResult
    from polyv_connector.run import Front
    from polyv_connector.runspec import RunSpec


def task_summary(
    result: SyncResult,
    airflow_run_id: Any,
    secret: str,
    report_path: str | None = None,
    run_page: str | None = None,
) -> dict[str, Any]:
    """``result`` as the task's XCom: the run's summary plus the Airflow run id, the Parquet
    report's absolute path and the run page. Raises if it would not be strict JSON (the XCom
    contract: better here than in Airflow's serializer)."""
    summary = result.to_dict()
    summary["airflowRunId"] = airflow_run_id
    # Absolute, so it means the same on every host that reads the XCom (the worker's working
    # folder is nobody's business); None for a table-only report.
    summary["reportPath"] = absolute_path(report_path) if report_path else None
    summary["runPage"] = run_page
    # Defence in depth: nothing above should ever hold the secret; scrub the strings
    # themselves (not the JSON text, where escaping could hide it).
    scrubbed: dict[str, Any] = scrub_secret(strict_json(summary), secret)
    json.dumps(scrubbed, ensure_ascii=False, allow_nan=False)
    return scrubbed


def kept_summary(operator: Any) -> tuple[bool, dict[str, Any] | None]:
    """``(known, summary)``: whether ``operator`` ran in this process, and the summary it kept.

    Airflow computes a task's extra links and runs its failure callback in the worker, right
    after ``execute``, on the same operator object: it knows whether it pushed a summary. Asking
    XCom for one it never pushed (a configuration error fails before any) makes the task SDK log
    an ERROR "XCom not found" per question, before the real error in the task log. ``known`` is
    False for an operator that did not run here (then XCom is asked).
    """
    if not getattr(operator, "_executed", False):
        return False, None
    facts = getattr(operator, "_lineage", None)
    summary = facts.get("summary") if isinstance(facts, dict) else None
    return True, summary if isinstance(summary, dict) else None


def with_airflow_run_id(spec: RunSpec, run_id: Any) -> RunSpec:
    """``spec`` naming the Airflow run the sync belongs to (in the report table and the summary)."""
    import dataclasses

    if not run_id:
        return spec
    return dataclasses.replace(spec, options=dataclasses.replace(spec.options, airflow_run_id=str(run_id)))


def absolute_path(path: str) -> str:
    """A local path made absolute; a URL as it is."""
    return path if is_url(path) else os.path.abspath(path)


def absolute_location(location: str | None, report_path: str | None) -> str | None:
    """The report's location with the Parquet file's path made absolute."""
    if not location or not report_path or is_url(report_path):
        return location
    from pathlib import Path

    for written in (report_path, str(Path(report_path))):  # ParquetReport names it as a Path
        if written in location:
            return location.replace(written, absolute_path(report_path), 1)
    return location


def write_task_run_page(result: SyncResult, spec: RunSpec, front: Front, airflow_run_id: Any, log: Any) -> str | None:
    """Write the run page; its absolute path, or None when it could not be written (logged:
    the page is a view of the run, never a reason to fail it)."""
    try:
        from polyv_connector.run import run_page_path
        from polyv_connector.runpage import write_run_page

        return write_run_page(
            result, run_page_path(spec, front), report_path=spec.report_path, airflow_run_id=airflow_run_id
        )
    except Exception as exc:
        log.warning("could not write the run page: %s: %s", type(exc).__name__, exc)
        return None


def start_line(credentials: Credentials, source: Any, report_location: str | None, spec: RunSpec) -> str:
    """The task log's first line about the run: account, API, source, report, and how it runs."""
    how = {"plan": f" (plan to {spec.plan_path})", "apply": f" (applying the plan {spec.plan_path})"}
    return (
        f"POLYV sync: appId {credentials.app_id} at {credentials.base_url}, source {source}, "
        f"report {absolute_location(report_location, spec.report_path)}"
        + how.get(spec.mode, " (dry run)" if spec.options.dry_run else "")
        + (" (full refresh)" if spec.options.full_refresh else "")
    )
