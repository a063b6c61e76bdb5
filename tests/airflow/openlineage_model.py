"""Read OpenLineage events (JSON) back into the OpenLineage client's own typed model.

The spec's JSON schema files are not on the package index (and are not copied here): the
client's generated attrs classes are the typed model. :func:`structure_event` builds a
``RunEvent`` from an event's JSON, every facet as the class of the standard facet its
``_schemaURL`` names, and fails when a standard facet sits at another key than the spec's (the
key a consumer reads), when a field is unknown to the class, or when the rebuilt event does not
serialise back to the same JSON (nothing dropped, nothing misplaced).
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any

import attr
from openlineage.client import event_v2
from openlineage.client.facet_v2 import (
    catalog_dataset,
    column_lineage_dataset,
    data_quality_assertions_dataset,
    data_quality_metrics_input_dataset,
    dataset_type_dataset,
    dataset_version_dataset,
    datasource_dataset,
    documentation_dataset,
    documentation_job,
    environment_variables_run,
    error_message_run,
    execution_parameters_run,
    external_query_run,
    extraction_error_run,
    hierarchy_dataset,
    input_statistics_input_dataset,
    job_dependencies_run,
    job_type_job,
    lifecycle_state_change_dataset,
    nominal_time_run,
    output_statistics_output_dataset,
    ownership_dataset,
    ownership_job,
    parent_run,
    processing_engine_run,
    schema_dataset,
    source_code_job,
    source_code_location_job,
    sql_job,
    storage_dataset,
    symlinks_dataset,
    tags_dataset,
    tags_job,
    tags_run,
)
from openlineage.client.serde import Serde

# Where each standard facet belongs: position -> the spec's key -> the client's class.
STANDARD_KEYS: dict[str, dict[str, type]] = {
    "run": {
        "nominalTime": nominal_time_run.NominalTimeRunFacet,
        "parent": parent_run.ParentRunFacet,
        "errorMessage": error_message_run.ErrorMessageRunFacet,
        "externalQuery": external_query_run.ExternalQueryRunFacet,
        "extractionError": extraction_error_run.ExtractionErrorRunFacet,
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet,
        "environmentVariables": environment_variables_run.EnvironmentVariablesRunFacet,
        "jobDependencies": job_dependencies_run.JobDependenciesRunFacet,
        "executionParameters": execution_parameters_run.ExecutionParametersRunFacet,
        "tags": tags_run.TagsRunFacet,
    },
    "job": {
        "documentation": documentation_job.DocumentationJobFacet,
        "sourceCodeLocation": source_code_location_job.SourceCodeLocationJobFacet,
        "sourceCode": source_code_job.SourceCodeJobFacet,
        "sql": sql_job.SQLJobFacet,
        "ownership": ownership_job.OwnershipJobFacet,
        "jobType": job_type_job.JobTypeJobFacet,
        "tags": tags_job.TagsJobFacet,
    },
    "dataset": {
        "schema": schema_dataset.SchemaDatasetFacet,
        "dataSource": datasource_dataset.DatasourceDatasetFacet,
        "documentation": documentation_dataset.DocumentationDatasetFacet,
        "lifecycleStateChange": lifecycle_state_change_dataset.LifecycleStateChangeDatasetFacet,
        "version": dataset_version_dataset.DatasetVersionDatasetFacet,
        "columnLineage": column_lineage_dataset.ColumnLineageDatasetFacet,
        "ownership": ownership_dataset.OwnershipDatasetFacet,
        "storage": storage_dataset.StorageDatasetFacet,
        "symlinks": symlinks_dataset.SymlinksDatasetFacet,
        "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet,
        "hierarchy": hierarchy_dataset.HierarchyDatasetFacet,
        "catalog": catalog_dataset.CatalogDatasetFacet,
        "tags": tags_dataset.TagsDatasetFacet,
    },
    "input": {
        "dataQualityAssertions": data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet,
        "dataQualityMetrics": data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet,
        "inputStatistics": input_statistics_input_dataset.InputStatisticsInputDatasetFacet,
    },
    "output": {"outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet},
}
SPEC_FACETS = "https://openlineage.io/spec/facets/"
# Every standard facet class, by the schema URL it writes (the version included).
BY_SCHEMA = {cls._get_schema(): (where, key) for where, keys in STANDARD_KEYS.items() for key, cls in keys.items()}


class NotAtStandardKey(AssertionError):
    pass


def _structure(value: Any, hint: Any) -> Any:
    """``value`` (JSON) as ``hint``: attrs classes, lists, dicts, optionals, enums, primitives."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _structure(value, args[0]) if len(args) == 1 else value
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_structure(v, item) for v in value]
    if origin is dict:
        _, item = typing.get_args(hint)
        return {k: _structure(v, item) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if isinstance(hint, type) and attr.has(hint):
        return structure_attrs(hint, value)
    return value


def structure_attrs(cls: type, data: dict[str, Any]) -> Any:
    """An attrs class of the client from its JSON; an unknown field fails (TypeError)."""
    attr.resolve_types(cls)
    kwargs = {}
    fields = {f.name: f for f in attr.fields(cls)}
    for key, value in data.items():
        if key == "_schemaURL" or key == "schemaURL":
            continue  # derived from the class (init=False)
        f = fields.get(key)
        if f is None:
            raise TypeError(f"{cls.__name__} has no field {key!r}")
        kwargs[f.alias] = _structure(value, f.type)
    return cls(**kwargs)


def _facet(where: str, key: str, data: dict[str, Any], base: type) -> Any:
    schema = data.get("_schemaURL", "")
    assert data.get("_producer") and schema, f"{where} facet {key!r} lacks _producer or _schemaURL"
    if schema.startswith(SPEC_FACETS):
        if schema not in BY_SCHEMA:
            raise NotAtStandardKey(f"{where} facet {key!r}: unknown standard facet {schema}")
        expected_where, expected_key = BY_SCHEMA[schema]
        if (expected_where, expected_key) != (where, key):
            facet_name = schema.rsplit("/", 1)[-1]
            raise NotAtStandardKey(
                f"{facet_name} sits at {where}.{key}; the spec puts it at {expected_where}.{expected_key}"
            )
        return structure_attrs(STANDARD_KEYS[where][key], data)
    # A custom facet must not take a standard key (a consumer would misread it).
    if key in STANDARD_KEYS[where]:
        raise NotAtStandardKey(f"custom facet {schema} uses the standard key {where}.{key}")
    extra = {k: v for k, v in data.items() if k not in {"_producer", "_schemaURL"}}
    custom = base(producer=data["_producer"]).with_additional_properties(**extra)
    custom._schemaURL = schema  # a custom facet names its own schema (the base class names RunFacet's)
    return custom


def _facets(where: str, facets: dict[str, Any] | None, base: type) -> dict[str, Any]:
    return {key: _facet(where, key, data, base) for key, data in (facets or {}).items()}


def structure_event(data: dict[str, Any]) -> event_v2.RunEvent:
    """A ``RunEvent`` of the client from one event's JSON (see the module docstring)."""
    from openlineage.client.facet_v2 import (
        DatasetFacet,
        InputDatasetFacet,
        JobFacet,
        OutputDatasetFacet,
        RunFacet,
    )

    assert set(data) <= {"eventTime", "producer", "schemaURL", "eventType", "run", "job", "inputs", "outputs"}, set(
        data
    )
    event = event_v2.RunEvent(
        eventType=event_v2.RunState(data["eventType"]),
        eventTime=data["eventTime"],
        producer=data["producer"],
        run=event_v2.Run(runId=data["run"]["runId"], facets=_facets("run", data["run"].get("facets"), RunFacet)),
        job=event_v2.Job(
            namespace=data["job"]["namespace"],
            name=data["job"]["name"],
            facets=_facets("job", data["job"].get("facets"), JobFacet),
        ),
        inputs=[
            event_v2.InputDataset(
                namespace=d["namespace"],
                name=d["name"],
                facets=_facets("dataset", d.get("facets"), DatasetFacet),
                inputFacets=_facets("input", d.get("inputFacets"), InputDatasetFacet),
            )
            for d in data.get("inputs") or []
        ],
        outputs=[
            event_v2.OutputDataset(
                namespace=d["namespace"],
                name=d["name"],
                facets=_facets("dataset", d.get("facets"), DatasetFacet),
                outputFacets=_facets("output", d.get("outputFacets"), OutputDatasetFacet),
            )
            for d in data.get("outputs") or []
        ],
    )
    assert data["schemaURL"] == event.schemaURL, (data["schemaURL"], event.schemaURL)
    rebuilt, original = Serde.to_dict(event), Serde.remove_nulls_and_enums(data)
    assert rebuilt == original, (
        f"the typed event does not serialise back to the same JSON: {_difference(rebuilt, original)}"
    )
    return event


def _difference(a: Any, b: Any, path: str = "") -> str:
    """Where ``a`` and ``b`` first differ (a path and both values), for failure messages."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}/{key}: {a.get(key)!r:.200} != {b.get(key)!r:.200}"
            if a[key] != b[key]:
                return _difference(a[key], b[key], f"{path}/{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _difference(x, y, f"{path}[{i}]")
    return f"{path}: {a!r:.200} != {b!r:.200}"
