"""What a validation leaves behind: GX's result JSON, GX's Data Docs page, a compact summary.

This module only describes a finished validation; it knows nothing of how the verdicts were
reached (the validator hands it the plan, GX's results and the run's counts).

Files, for a report at ``out/report.parquet`` (or a directory ``out/`` and suite ``name``):

* ``out/report.validation.json`` — the ``ExpectationSuiteValidationResult`` as GX serialises
  it (strict JSON: NaN becomes null);
* ``out/report.data_docs/index.html`` — a GX Data Docs site built by GX's own SiteBuilder:
  the index, the validation page (``validations/<suite>/<run>/<time>/...html``) and the
  suite's page (``expectations/<suite>.html``).

Both are replaced whole (a half-written file or a mix of two runs never appears).
"""

from __future__ import annotations

import copy
import datetime as dt
import html
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from polyv_connector.expectations.planning import Planned
from polyv_connector.jsonsafe import strict_json

log = logging.getLogger("polyv_connector.expectations")

# The batch's name in Data Docs paths (validations/<suite>/<run>/<time>/<batch>.html).
BATCH_IDENTIFIER = "viewer_custom_field_items"


def suite_result(suite: Any, evrs: list[Any], meta: dict[str, Any]) -> Any:
    """An ``ExpectationSuiteValidationResult`` over ``evrs`` (in suite order)."""
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.validator.validation_statistics import calc_validation_statistics

    for evr in evrs:
        # Metric values come straight from pandas (numpy scalars, NaN); GX's renderers choke
        # on numpy floats and JSON has no NaN, so results carry plain Python values.
        evr.result = strict_json(evr.result or {})
    stats = calc_validation_statistics(evrs)
    return ExpectationSuiteValidationResult(
        success=stats.success,
        results=evrs,
        suite_name=suite.name,
        statistics={
            "evaluated_expectations": stats.evaluated_expectations,
            "successful_expectations": stats.successful_expectations,
            "unsuccessful_expectations": stats.unsuccessful_expectations,
            "success_percent": stats.success_percent,
        },
        meta=meta,
    )


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_data_docs(result: Any, suite: Any, target: Path, run_name: str, run_time: dt.datetime) -> tuple[Path, Path]:
    """Build a GX Data Docs site for ``result`` at ``target``.

    Returns the site's ``index.html`` and the validation result's own page.

    GX's own SiteBuilder does the work, fed by a private in-memory context. GX insists that a
    "current" context exists while a suite is stored; ours is current only for that moment
    and the caller's own (an Airflow task may have one) is put back afterwards.

    The site is built beside ``target`` and swapped in whole, so the folder always shows one
    run, never pages of an older run that its index no longer lists.
    """
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.data_context.context_factory import project_manager
    from great_expectations.data_context.data_context.ephemeral_data_context import EphemeralDataContext
    from great_expectations.data_context.types.base import DataContextConfig, InMemoryStoreBackendDefaults
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    # GX needs an absolute base_directory when there is no project root.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent)).resolve()
    try:
        context = EphemeralDataContext(
            project_config=DataContextConfig(
                store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False)
            )
        )
        context.add_data_docs_site(
            "polyv_sync",
            {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(staging)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_how_to_buttons": False},
            },
        )
        previous = _current_project(project_manager)
        project_manager.set_project(context)
        try:
            # A copy: adding binds a suite to the context's store; the caller keeps its own.
            context.suites.add(copy.deepcopy(suite))
        finally:
            project_manager.set_project(previous)
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite.name),
            run_id=RunIdentifier(run_name=run_name, run_time=run_time),
            batch_identifier=BATCH_IDENTIFIER,
        )
        context.validation_results_store.set(key, escaped_for_html(result))
        context.build_data_docs(site_names=["polyv_sync"])
        old = target.with_name(target.name + ".old")
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    pages = sorted((target / "validations").rglob("*.html"))
    return target / "index.html", pages[0] if pages else target / "index.html"


def escaped_for_html(result: Any) -> Any:
    """A copy of ``result`` whose strings are HTML-escaped, for GX's page renderers.

    GX puts unexpected values (and expectation arguments) into Data Docs pages as raw HTML:
    a viewerId ``<script>...</script>`` in the input would run in the browser of whoever opens
    the page. Escaping the data, not the page, leaves GX's own markup intact; the result JSON
    keeps the values as they were.
    """
    page = copy.deepcopy(result)
    for evr in page.results:
        evr.result = _escape_strings(evr.result or {})
        config = evr.expectation_config
        if config is not None:
            config.kwargs = _escape_strings(config.kwargs)
    return page


def _escape_strings(value: Any) -> Any:
    if isinstance(value, str):
        return html.escape(value, quote=True)
    if isinstance(value, dict):
        return {k: _escape_strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_escape_strings(v) for v in value)
    return value


def _current_project(project_manager: Any) -> Any:
    from great_expectations.exceptions.exceptions import DataContextRequiredError

    try:
        return project_manager.get_current_project()
    except DataContextRequiredError:
        return None


def write_outputs(
    result: Any, suite: Any, directory: Path, stem: str, run_time: dt.datetime
) -> tuple[Path, Path, Path]:
    """Write the result JSON and the Data Docs site.

    Returns the JSON's path, the site's ``index.html`` and the validation page.
    """
    from great_expectations.util import convert_to_json_serializable

    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{stem}.validation.json"
    body = strict_json(convert_to_json_serializable(result.to_json_dict()))
    _atomic_write(json_path, json.dumps(body, indent=2, allow_nan=False, ensure_ascii=False))
    index, page = build_data_docs(result, suite, directory / f"{stem}.data_docs", stem, run_time)
    return json_path, index, page


def summary(
    planned: list[Planned],
    result: Any,
    *,
    suite_name: str,
    source: str,
    items: int,
    items_rejected: int,
    gate_failures: list[str],
    result_json_path: Path | None,
    data_docs_path: Path | None,
    data_docs_page: Path | None,
) -> dict[str, Any]:
    """The compact, strict-JSON view of a validation for the run summary and XCom.

    ``result`` is the ``ExpectationSuiteValidationResult`` (its results in the order of
    ``planned``), or None before the validation finished.
    """
    evrs = list(result.results) if result is not None else [None] * len(planned)
    expectations = []
    for p, evr in zip(planned, evrs, strict=True):
        res = (evr.result or {}) if evr is not None else {}
        unexpected = res.get("unexpected_count")
        expectations.append(
            {
                "type": p.expectation_type,
                "column": ", ".join(p.columns) if p.columns else None,
                "success": None if evr is None else bool(evr.success),
                "unexpectedCount": int(unexpected) if isinstance(unexpected, int | float) else None,
                "action": p.action,
                "error": "; ".join(p.errors) or None,
            }
        )
    out: dict[str, Any] = strict_json(
        {
            "validation": {
                "suite": suite_name,
                "suiteFile": source,
                "success": None if result is None else bool(result.success),
                "items": items,
                "itemsRejected": items_rejected,
                "gateFailures": gate_failures,
                "expectations": expectations,
                "resultJson": str(result_json_path) if result_json_path else None,
                "dataDocs": str(data_docs_path) if data_docs_path else None,
                "dataDocsPage": str(data_docs_page) if data_docs_page else None,
            }
        }
    )
    json.dumps(out, allow_nan=False)  # the XCom contract: fail here, not in Airflow
    return out


def result_meta(
    suite_name: str, source: str, run_name: str, now: dt.datetime, *, items: int, chunks: int, items_rejected: int
) -> dict[str, Any]:
    """The validation result's ``meta``: GX's usual keys, plus the run's counts under ``polyv``."""
    import great_expectations as gx

    return {
        "great_expectations_version": gx.__version__,
        "run_id": {"run_name": run_name, "run_time": now.isoformat()},
        "validation_time": now.strftime("%Y%m%dT%H%M%S.%fZ"),
        "batch_spec": {"data_asset_name": "viewer custom field items", "suite_file": source},
        "active_batch_definition": {
            "datasource_name": "polyv-sync",
            "data_asset_name": "viewer custom field items",
            "batch_definition_name": "items (validated in chunks)",
        },
        "polyv": {
            "items": items,
            "chunks": chunks,
            "items_rejected_by_expectations": items_rejected,
        },
    }


def output_location(report_dir: str | None, suite_name: str) -> tuple[Path | None, str]:
    """(directory, file stem) for the result files; a report file path lends both."""
    if not report_dir:
        return None, safe_stem(suite_name)
    if "://" in report_dir:
        # The files are for people to open locally; a URL would become an odd local folder.
        log.warning("expectation results are written to local folders only; not writing them for %s", report_dir)
        return None, safe_stem(suite_name)
    path = Path(report_dir)
    if path.suffix.lower() == ".parquet" or (path.suffix and not path.is_dir()):
        return path.parent, path.stem
    return path, safe_stem(suite_name)


def safe_stem(name: str) -> str:
    """``name`` as a file name stem (anything but letters, digits, ``-_.`` becomes ``_``)."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return stem or "expectations"
