"""OpenLineage facets of a sync run, built from plain values the operator collected.

What a consumer reading the standard keys sees (the spec's facet keys, not ours):

* the source as input, with ``inputFacets.dataQualityAssertions`` (one assertion per
  expectation of the suite, on the *source's* column, ``severity`` ``error`` for a gate and
  ``warn`` for a check that only rejects rows, ``expected``/``actual`` filled; plus the run's
  own gate ``max_rejected_fraction`` when it has a ceiling) and
  ``inputFacets.dataQualityMetrics`` (rows read; null and distinct counts where the suite
  measured them);
* the sync state (table or folder) as input and, unless a dry run, as output;
* the report (file and/or table) as output;
* POLYV's viewer values of the appId as output *only when something was sent* (not for a dry
  run, a failed gate or a run where everything was unchanged), with
  ``outputFacets.outputStatistics.rowCount`` = items POLYV confirmed;
* a custom run facet ``polyv_sync`` (run id, counts, requests, gate failures) whose
  ``_schemaURL`` names the schema shipped in ``polyv_connector/data``.

Everything here is pure except :func:`expectation_facts`, which reads Great Expectations'
result objects, :func:`run_lineage`, which asks the run's database hooks where their
connections point, and the lazy imports of the OpenLineage client.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from polyv_connector.airflow.assets import Location, file_location, polyv_location, table_location
from polyv_connector.model import FIELD_ID, VALUE, VIEWER_ID

# The custom run facet's key: prefixed with the producer's name, as the spec asks of custom facets.
RUN_FACET_KEY = "polyv_sync"
# Our facet's schema ships with the package (polyv_connector/data/PolyvSyncRunFacet-1-0-0.json);
# this is the address the project publishes it at, versioned with the facet.
FACET_SCHEMA_URL = (
    "https://raw.githubusercontent.com/polyv-connector/polyv-connector/main/polyv_connector/data/"
    "PolyvSyncRunFacet-1-0-0.json#/$defs/PolyvSyncRunFacet"
)
# Expectations whose observed value is a column's number of distinct values.
DISTINCT_COUNT_EXPECTATIONS = frozenset({"expect_column_unique_value_count_to_be_between"})
# Keys of an expectation's kwargs that are not part of what it expects.
_NOT_EXPECTED = frozenset({"column", "column_A", "column_B", "column_list", "batch_id", "result_format"})


def producer() -> str:
    """This package, versioned: the ``_producer`` of the facets we build."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"https://pypi.org/project/polyv-connector/{version('polyv-connector')}/"
    except PackageNotFoundError:  # pragma: no cover - a source tree without an install
        return "https://pypi.org/project/polyv-connector/"


@dataclass(frozen=True)
class ExpectationFact:
    """One expectation's configuration and result, as plain values."""

    type: str
    label: str
    item_columns: tuple[str, ...]
    action: str  # reject_rows, gate, reject_rows_and_gate
    success: bool | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)  # element_count, missing_count, ...
    description: str | None = None  # the suite's own words for it (meta "why" or "notes")


def note_validation(validator: Any, result: Any, facts: dict[str, Any], log: Any) -> None:
    """After a run with a suite: its expectations as lineage facts, and where the validation
    result and Data Docs went, in the task log."""
    if validator is None:
        return
    facts["expectations"] = expectation_facts(validator)
    validation = result.extra.get("validation") or {}
    for label, key in (("validation result", "resultJson"), ("data docs", "dataDocsPage")):
        if validation.get(key):
            log.info("%s: %s", label, validation[key])


def expectation_facts(validator: Any) -> list[ExpectationFact]:
    """The suite's expectations and their results, read from a finished ``SuiteValidator``."""
    from polyv_connector.jsonsafe import strict_json

    planned = list(getattr(validator, "planned", None) or [])
    result = getattr(validator, "result", None)
    evrs = list(result.results) if result is not None else [None] * len(planned)
    facts = []
    for p, evr in zip(planned, evrs, strict=False):
        kwargs = dict(getattr(p.expectation.configuration, "kwargs", {}) or {})
        raw = (evr.result or {}) if evr is not None else {}
        kept = {k: raw[k] for k in ("element_count", "missing_count", "unexpected_count", "observed_value") if k in raw}
        meta = getattr(p.expectation, "meta", None) or {}
        why = meta.get("why") or meta.get("notes")
        facts.append(
            ExpectationFact(
                type=p.expectation_type,
                label=p.label,
                item_columns=tuple(p.columns),
                action=p.action,
                success=None if evr is None else bool(evr.success),
                kwargs=strict_json({k: v for k, v in kwargs.items() if k not in {"batch_id", "result_format"}}),
                result=strict_json(kept),
                description=why if isinstance(why, str) else None,
            )
        )
    return facts


def source_columns(
    viewer_id_column: str, field_id_column: str, value_column: str, fields: Mapping[str, str] | None
) -> dict[str, str | None]:
    """Item column -> the source column it comes from (None: no single source column).

    Wide form: the customFieldId comes from the mapping, not a column; the value comes from one
    column per field, so it has a source column only when one field is mapped.
    """
    if fields:
        values = list(dict.fromkeys(fields.values()))
        return {VIEWER_ID: viewer_id_column, FIELD_ID: None, VALUE: values[0] if len(values) == 1 else None}
    return {VIEWER_ID: viewer_id_column, FIELD_ID: field_id_column, VALUE: value_column}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def assertion_fields(fact: ExpectationFact, columns: Mapping[str, str | None]) -> dict[str, Any]:
    """The keyword arguments of an OpenLineage ``Assertion`` for one expectation.

    Row checks compare counts: ``expected`` is the most failing rows allowed (0, or what
    ``mostly`` leaves), ``actual`` the failing rows found. Table checks compare GX's observed
    value with the expectation's arguments.
    """
    cols = [columns.get(c, c) for c in fact.item_columns]
    column = cols[0] if len(cols) == 1 else None
    unexpected = fact.result.get("unexpected_count")
    expected_args = {k: v for k, v in fact.kwargs.items() if k not in _NOT_EXPECTED}
    if fact.action != "gate" and isinstance(unexpected, int | float):
        total = fact.result.get("element_count")
        mostly = float(fact.kwargs.get("mostly", 1.0) or 1.0)
        # GX passes while unexpected <= (1 - mostly) * rows; round away float noise (0.1 * 10).
        allowed = math.floor(round((1 - mostly) * total, 9)) if isinstance(total, int | float) and mostly < 1 else 0
        expected, actual = str(allowed), str(int(unexpected))
    elif "observed_value" in fact.result:
        expected, actual = _text(expected_args) if expected_args else "true", _text(fact.result["observed_value"])
    else:
        expected = _text(expected_args) if expected_args else "true"
        actual = "unknown" if fact.success is None else str(fact.success).lower()
    return {
        "assertion": fact.type,
        "success": bool(fact.success),
        "column": column,
        "severity": "warn" if fact.action == "reject_rows" else "error",
        "name": fact.label,
        "description": fact.description,
        "expected": expected,
        "actual": actual,
        "params": {"itemColumns": list(fact.item_columns), "action": fact.action, **fact.kwargs},
    }


def column_metrics(facts: Sequence[ExpectationFact], columns: Mapping[str, str | None]) -> dict[str, dict[str, int]]:
    """Source column -> nullCount / distinctCount, from what the suite measured (nothing else)."""
    metrics: dict[str, dict[str, int]] = {}
    for fact in facts:
        if len(fact.item_columns) != 1 or fact.success is None:
            continue
        column = columns.get(fact.item_columns[0], fact.item_columns[0])
        if not column:
            continue
        res = fact.result
        nulls = res.get("missing_count")
        if fact.type == "expect_column_values_to_not_be_null" and isinstance(res.get("unexpected_count"), int):
            nulls = res["unexpected_count"]
        if isinstance(nulls, int):
            metrics.setdefault(column, {})["nullCount"] = nulls
        if fact.type in DISTINCT_COUNT_EXPECTATIONS and isinstance(res.get("observed_value"), int):
            metrics.setdefault(column, {})["distinctCount"] = res["observed_value"]
    return metrics


def rejected_fraction_fields(summary: Mapping[str, Any], limit: float | None) -> dict[str, Any] | None:
    """The run's own gate, ``max_rejected_fraction``, as an assertion on the whole dataset (None
    when there is no ceiling or no item)."""
    items = summary.get("items")
    if limit is None or not isinstance(items, int) or items == 0:
        return None
    rejected = int((summary.get("counts") or {}).get("rejected", 0))
    fraction = rejected / items
    return {
        "assertion": "max_rejected_fraction",
        "success": fraction <= limit,
        "column": None,
        "severity": "error",
        "name": "max_rejected_fraction",
        "description": "share of the items rejected by the checks and the suite; above it the run sends nothing",
        "expected": f"<= {limit:g}",
        "actual": f"{fraction:.6g}",
        "params": {"rejected": rejected, "items": items},
    }


def rows_read(summary: Mapping[str, Any], fields: Mapping[str, str] | None) -> int | None:
    """Source rows the run read: one item per row (long form), one per mapped field (wide)."""
    items = summary.get("items")
    if not isinstance(items, int):
        return None
    return items // len(fields) if fields else items


def polyv_written(summary: Mapping[str, Any]) -> bool:
    """Whether the run sent anything to POLYV: not for a dry run, a failed gate, a run where
    everything was unchanged (no save request left), or a run stopped before its first request."""
    return not summary.get("dryRun") and int(summary.get("requestsSent") or 0) > 0


def run_facet_fields(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The custom run facet's fields (never the secret: the summary was scrubbed of it)."""
    return {
        "runId": summary.get("runId"),
        "appId": summary.get("appId"),
        "airflowRunId": summary.get("airflowRunId"),
        "ok": summary.get("ok"),
        "dryRun": summary.get("dryRun"),
        "items": summary.get("items"),
        "counts": dict(summary.get("counts") or {}),
        "requestsSent": summary.get("requestsSent"),
        "gateFailures": list(summary.get("gateFailures") or []),
        "report": summary.get("report"),
    }


@dataclass
class RunLineage:
    """What the operator learned while running, for :func:`operator_lineage`."""

    source: list[Any] = field(default_factory=list)  # Locations, or OpenLineage datasets from the SQL parser
    state: Location | None = None
    reports: list[Any] = field(default_factory=list)
    polyv: Location | None = None
    columns: dict[str, str | None] = field(default_factory=dict)
    fields: dict[str, str] | None = None
    expectations: list[ExpectationFact] = field(default_factory=list)
    max_rejected_fraction: float | None = None
    summary: dict[str, Any] | None = None


def run_lineage(info: Mapping[str, Any], log: Any) -> RunLineage:
    """Where a run read and wrote, and what it found, as plain values (no OpenLineage import:
    the asset events use it too). ``info`` is what the operator recorded while running: the
    source (``source_kind`` ``file`` or ``sql``, its hook, table or query), the mapping, the
    state and report locations and hooks, the summary and the suite's facts."""
    run = RunLineage(
        summary=info.get("summary"),
        expectations=info.get("expectations") or [],
        max_rejected_fraction=info.get("max_rejected_fraction"),
    )
    if info.get("source_kind") == "file":
        run.source = [file_location(info["source_path"])]
    elif info.get("source_kind") == "sql":
        table = info.get("source_table")
        where = hook_table_location(info["source_hook"], table) if table else None
        run.source = (
            [where] if where else sql_datasets(info["source_hook"], info.get("source_sql") or "", "inputs", log)
        )
    mapping = info.get("mapping")
    if mapping is not None:
        run.fields = dict(mapping.fields) or None
        run.columns = source_columns(
            mapping.viewer_id_column, mapping.field_id_column, mapping.value_column, run.fields
        )
    if info.get("state_dir"):
        run.state = file_location(info["state_dir"])
    elif info.get("state_table"):
        run.state = hook_table_location(info["state_hook"], info["state_table"])
    if info.get("report_table"):
        located = hook_table_location(info["report_hook"], info["report_table"])
        run.reports.extend([located] if located else [])
    if info.get("report_path"):
        run.reports.append(file_location(info["report_path"]))
    if info.get("app_id"):
        run.polyv = polyv_location(info["base_url"], info["app_id"])
    return run


def written_locations(run: RunLineage, summary: Mapping[str, Any]) -> list[Location]:
    """Where the run wrote (its asset events), named as in its OpenLineage events."""
    written: list[Location] = [r for r in run.reports if hasattr(r, "uri")]
    if run.state is not None and not summary.get("dryRun"):
        written.append(run.state)
    if run.polyv is not None and polyv_written(summary):
        written.append(run.polyv)
    return written


def hook_table_location(hook: Any, table: str) -> Location | None:
    """The OpenLineage/asset location of ``table`` on ``hook``'s connection (None if unreadable)."""
    try:
        conn = hook.get_connection(hook.get_conn_id())
        return table_location(conn.conn_type or "", table, host=conn.host, port=conn.port, database=conn.schema or None)
    except Exception:  # lineage is best effort: never fail a finished sync over it
        return None


def sql_datasets(hook: Any, statement: str, side: str, log: Any) -> list[Any]:
    """Datasets of ``statement`` as the OpenLineage SQL parser sees them (no database round trip)."""
    try:
        from airflow.providers.openlineage.sqlparser import SQLParser

        connection = hook.get_connection(hook.get_conn_id())
        database_info = hook.get_openlineage_database_info(connection)
        if database_info is None:
            return []
        parser = SQLParser(
            dialect=hook.get_openlineage_database_dialect(connection),
            default_schema=hook.get_openlineage_default_schema(),
        )
        lineage = parser.generate_openlineage_metadata_from_sql(
            sql=statement, hook=hook, database_info=database_info, use_connection=False
        )
        return list(getattr(lineage, side, None) or [])
    except Exception as exc:  # lineage is best effort: never fail a finished sync over it
        log.debug("OpenLineage SQL parsing skipped: %s", exc)
        return []


def operator_lineage(info: RunLineage) -> Any:
    """The ``OperatorLineage`` of a run (``None`` without the OpenLineage provider)."""
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import InputDataset, OutputDataset
        from openlineage.client.facet_v2 import (
            RunFacet,
            data_quality_assertions_dataset,
            data_quality_metrics_input_dataset,
            output_statistics_output_dataset,
        )
    except ImportError:
        return None
    made_by = producer()
    summary = info.summary or {}

    def ids(entry: Any) -> tuple[str, str]:
        return entry.namespace, entry.name

    input_facets: dict[str, Any] = {}
    assertions = [assertion_fields(f, info.columns) for f in info.expectations if f.success is not None]
    gate = rejected_fraction_fields(summary, info.max_rejected_fraction)
    if gate is not None:
        assertions.append(gate)
    if assertions:
        dq = data_quality_assertions_dataset
        input_facets["dataQualityAssertions"] = dq.DataQualityAssertionsDatasetFacet(
            assertions=[dq.Assertion(**fields) for fields in assertions], producer=made_by
        )
    rows = rows_read(summary, info.fields) if summary else None
    if rows is not None:
        dq_metrics = data_quality_metrics_input_dataset
        input_facets["dataQualityMetrics"] = dq_metrics.DataQualityMetricsInputDatasetFacet(
            rowCount=rows,
            columnMetrics={
                col: dq_metrics.ColumnMetrics(
                    nullCount=values.get("nullCount"), distinctCount=values.get("distinctCount")
                )
                for col, values in column_metrics(info.expectations, info.columns).items()
            },
            producer=made_by,
        )
    # The facets describe the rows the run read: they belong to the source when it is one dataset.
    single = len(info.source) == 1
    inputs = [
        InputDataset(*ids(s), facets=dict(getattr(s, "facets", None) or {}), inputFacets=input_facets if single else {})
        for s in info.source
    ]
    outputs: list[Any] = [OutputDataset(*ids(r), facets=dict(getattr(r, "facets", None) or {})) for r in info.reports]
    if info.state is not None:
        inputs.append(InputDataset(*ids(info.state)))
        if summary and not summary.get("dryRun"):
            outputs.append(OutputDataset(*ids(info.state)))
    if info.polyv is not None and summary and polyv_written(summary):
        stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=int((summary.get("counts") or {}).get("sent", 0)), producer=made_by
        )
        outputs.append(OutputDataset(*ids(info.polyv), outputFacets={"outputStatistics": stats}))
    run_facets: dict[str, Any] = {}
    if summary:
        run_facets[RUN_FACET_KEY] = _run_facet_class(RunFacet)(**run_facet_fields(summary), producer=made_by)
    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets=run_facets)


_RUN_FACET_CLASS: Any = None


def _run_facet_class(base: Any) -> Any:
    """``PolyvSyncRunFacet``: an attrs subclass of the client's ``RunFacet`` (made once, lazily,
    since the client is optional)."""
    global _RUN_FACET_CLASS
    if _RUN_FACET_CLASS is None:
        import attr

        @attr.define
        class PolyvSyncRunFacet(base):  # type: ignore[misc]
            """One polyv-connector sync run: its id, counts and gate failures."""

            runId: str | None = attr.field(default=None)
            appId: str | None = attr.field(default=None)
            airflowRunId: str | None = attr.field(default=None)
            ok: bool | None = attr.field(default=None)
            dryRun: bool | None = attr.field(default=None)
            items: int | None = attr.field(default=None)
            counts: dict[str, int] = attr.field(factory=dict)
            requestsSent: int | None = attr.field(default=None)
            gateFailures: list[str] = attr.field(factory=list)
            report: str | None = attr.field(default=None)

            @staticmethod
            def _get_schema() -> str:
                return FACET_SCHEMA_URL

        _RUN_FACET_CLASS = PolyvSyncRunFacet
    return _RUN_FACET_CLASS
