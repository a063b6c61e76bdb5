"""OpenLineage as a consumer reads it: the real provider and client, facets at the spec's keys.

Pure parts (the naming of locations, the assertion fields, the "no POLYV output unless
something was sent" rule) are tested directly; the operator's lineage on real runs against the
simulator; and a whole example DAG under a real Airflow with the OpenLineage provider and its
file transport, every event read back through the client's typed model
(:mod:`tests.airflow.openlineage_model`).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from polyv_connector.airflow.assets import file_location, polyv_location, table_location
from polyv_connector.airflow.lineage import (
    ExpectationFact,
    RunLineage,
    assertion_fields,
    column_metrics,
    operator_lineage,
    polyv_written,
    source_columns,
)
from tests.airflow.openlineage_model import NotAtStandardKey, structure_event
from tests.airflow.support import APP_ID, DAGS, PLANTED_SECRET, SAMPLE

pytestmark = pytest.mark.airflow


# ---- naming ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "namespace", "name"),
    [
        ("/data/in/../viewers.parquet", "file", "/data/viewers.parquet"),
        ("file:///data/v.parquet", "file", "/data/v.parquet"),
        ("file://Host-1/data/v.parquet", "file://host-1", "/data/v.parquet"),
        ("s3://bucket/dir/v.parquet", "s3://bucket", "dir/v.parquet"),
        ("s3a://AKIAKEY:s3cret@bucket/dir/v.parquet", "s3://bucket", "dir/v.parquet"),
        ("gcs://bucket/v.parquet", "gs://bucket", "v.parquet"),
        ("hdfs://NameNode:8020/warehouse/v", "hdfs://namenode:8020", "/warehouse/v"),
        ("abfss://cont@acct.dfs.core.windows.net/v", "abfss://cont@acct.dfs.core.windows.net", "v"),
        ("https://user:pw@Files.Example.com:443/v.parquet?sig=x", "https://files.example.com", "/v.parquet"),
        ("http://files.example.com:8080/v.parquet", "http://files.example.com:8080", "/v.parquet"),
    ],
)
def test_file_locations_follow_the_openlineage_naming(path, namespace, name):
    where = file_location(path)
    assert (where.namespace, where.name) == (namespace, name)
    assert "s3cret" not in where.uri and "pw@" not in where.uri and "sig=" not in where.uri


def test_a_relative_path_is_named_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert file_location("r/x.parquet").name == str(tmp_path / "r" / "x.parquet")
    assert file_location("r/x.parquet").uri == f"file://{tmp_path}/r/x.parquet"


@pytest.mark.parametrize(
    ("conn_type", "table", "kwargs", "namespace", "name", "uri"),
    [
        (
            "postgres",
            "polyv_sync_state",
            {"host": "DB.Example.com", "database": "wh"},
            "postgres://db.example.com:5432",
            "wh.public.polyv_sync_state",
            "postgres://db.example.com:5432/wh/public/polyv_sync_state",
        ),
        (
            "postgresql",
            'ops."Sync Report"',
            {"host": "h", "port": 6432, "database": "wh"},
            "postgres://h:6432",
            "wh.ops.Sync Report",
            None,
        ),
        (
            "mysql",
            "t",
            {"host": "127.0.0.1", "database": "test"},
            "mysql://127.0.0.1:3306",
            "test.t",
            "mysql://127.0.0.1:3306/test/t",
        ),
        ("mariadb", "other.t", {"host": "m", "port": 3307, "database": "test"}, "mysql://m:3307", "other.t", None),
        ("duckdb", "t", {"host": "/data/wh.duckdb"}, "duckdb:///data/wh.duckdb", "wh.main.t", None),
    ],
)
def test_table_locations_follow_the_openlineage_naming(conn_type, table, kwargs, namespace, name, uri):
    where = table_location(conn_type, table, **kwargs)
    assert (where.namespace, where.name) == (namespace, name)
    if uri:
        assert where.uri == uri


def test_the_polyv_namespace_is_normalised():
    a = polyv_location("HTTPS://API.Polyv.NET:443/", APP_ID)
    b = polyv_location("https://api.polyv.net", APP_ID)
    assert a == b
    assert (a.namespace, a.name) == ("https://api.polyv.net", f"live/v4/user/custom-field/viewer-value/{APP_ID}")
    assert polyv_location("http://127.0.0.1:8750", APP_ID).namespace == "http://127.0.0.1:8750"


def test_the_postgres_asset_uri_names_the_same_dataset_for_airflow_and_openlineage():
    """Airflow's PostgreSQL provider turns our asset URI back into the same OpenLineage name."""
    from airflow.providers.postgres.assets.postgres import convert_asset_to_openlineage

    where = table_location("postgres", "s.report", host="db", database="wh")
    dataset = convert_asset_to_openlineage(where.asset(), None)
    assert (dataset.namespace, dataset.name) == (where.namespace, where.name)


def test_the_file_asset_uri_names_the_same_dataset_for_airflow_and_openlineage():
    from airflow.providers.common.io.assets.file import convert_asset_to_openlineage

    where = file_location("/data/r.parquet")
    dataset = convert_asset_to_openlineage(where.asset(), None)
    assert (dataset.namespace, dataset.name) == (where.namespace, where.name)


def test_inlets_and_outlets_named_by_their_location_when_literal():
    from airflow.sdk import DAG, Asset, AssetAlias

    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    with DAG("d", schedule=None):
        op = PolyvViewerFieldSyncOperator(
            task_id="t", input_path="s3a://bkt/in/v.parquet", report_path="/r/out.parquet"
        )
        templated = PolyvViewerFieldSyncOperator(task_id="u", input_path="{{ params.p }}", report_path="/r/o.parquet")
    assert [a.uri for a in op.inlets] == ["s3://bkt/in/v.parquet"]
    assert templated.inlets == []
    assets = [a for a in op.outlets if isinstance(a, Asset)]
    # The report's place (its folder), not the run's file: every run's event goes to one asset.
    assert [(a.name, a.uri) for a in assets] == [("file:///r", "file:///r")]
    assert [a.name for a in op.outlets if isinstance(a, AssetAlias)] == ["polyv_sync/d/t"]


# ---- facets from plain values -------------------------------------------------------------------
def _fact(**kw: Any) -> ExpectationFact:
    base: dict[str, Any] = {
        "type": "expect_column_values_to_not_be_null",
        "label": "expect_column_values_to_not_be_null(viewerId)",
        "item_columns": ("viewerId",),
        "action": "reject_rows",
        "success": False,
        "kwargs": {"column": "viewerId"},
        "result": {"element_count": 10, "unexpected_count": 2, "missing_count": 2},
    }
    return ExpectationFact(**{**base, **kw})


def test_assertions_name_the_source_columns_and_fill_severity_expected_actual():
    columns = source_columns("uid", "field", "val", None)
    row = assertion_fields(_fact(), columns)
    assert (row["column"], row["severity"], row["expected"], row["actual"]) == ("uid", "warn", "0", "2")
    gate = assertion_fields(
        _fact(
            type="expect_table_row_count_to_be_between",
            label="expect_table_row_count_to_be_between",
            item_columns=(),
            action="gate",
            kwargs={"min_value": 100},
            result={"observed_value": 10},
        ),
        columns,
    )
    assert (gate["column"], gate["severity"], gate["expected"], gate["actual"]) == (
        None,
        "error",
        '{"min_value": 100}',
        "10",
    )
    mostly = assertion_fields(
        _fact(action="reject_rows_and_gate", kwargs={"column": "viewerId", "mostly": 0.9}), columns
    )
    assert (mostly["severity"], mostly["expected"], mostly["actual"]) == ("error", "1", "2")


def test_the_rejected_fraction_ceiling_is_an_error_assertion():
    from polyv_connector.airflow.lineage import rejected_fraction_fields

    summary = {"items": 200, "counts": {"rejected": 20}}
    above = rejected_fraction_fields(summary, 0.05)
    assert above is not None
    assert (above["success"], above["severity"], above["expected"], above["actual"]) == (
        False,
        "error",
        "<= 0.05",
        "0.1",
    )
    assert rejected_fraction_fields(summary, None) is None
    assert rejected_fraction_fields({"items": 0, "counts": {}}, 0.05) is None


def test_wide_form_values_have_a_source_column_only_for_one_field():
    assert source_columns("uid", "f", "v", {"VIP": "vip"})["customFieldValue"] == "vip"
    assert source_columns("uid", "f", "v", {"VIP": "vip", "PAY": "pay"})["customFieldValue"] is None
    assert source_columns("uid", "f", "v", {"VIP": "vip"})["customFieldId"] is None


def test_column_metrics_only_where_the_suite_measured():
    columns = source_columns("uid", "field", "val", None)
    distinct = _fact(
        type="expect_column_unique_value_count_to_be_between",
        item_columns=("customFieldId",),
        action="gate",
        result={"observed_value": 4},
    )
    assert column_metrics([_fact(), distinct], columns) == {"uid": {"nullCount": 2}, "field": {"distinctCount": 4}}


SENT = {"runId": "r1", "appId": APP_ID, "dryRun": False, "items": 3, "requestsSent": 1, "counts": {"sent": 3}}


@pytest.mark.parametrize(
    ("summary", "written"),
    [
        (SENT, True),
        ({**SENT, "dryRun": True, "requestsSent": 0, "counts": {"dry_run": 3}}, False),
        ({**SENT, "requestsSent": 0, "counts": {"not_attempted": 3}, "gateFailures": ["gate"]}, False),
        ({**SENT, "requestsSent": 0, "counts": {"unchanged": 3}}, False),
    ],
    ids=["sent", "dry-run", "failed-gate", "all-unchanged"],
)
def test_polyv_is_an_output_only_when_something_was_sent(summary, written):
    assert polyv_written(summary) is written
    run = RunLineage(
        source=[file_location("/in.parquet")],
        state=table_location("postgres", "polyv_sync_state", host="db", database="wh"),
        reports=[file_location("/r.parquet")],
        polyv=polyv_location("https://api.polyv.net", APP_ID),
        summary=summary,
    )
    lineage = operator_lineage(run)
    outputs = {(o.namespace, o.name): o for o in lineage.outputs}
    assert (("https://api.polyv.net", f"live/v4/user/custom-field/viewer-value/{APP_ID}") in outputs) is written
    if written:
        polyv = outputs["https://api.polyv.net", f"live/v4/user/custom-field/viewer-value/{APP_ID}"]
        assert polyv.outputFacets["outputStatistics"].rowCount == 3
    state = ("postgres://db:5432", "wh.public.polyv_sync_state")
    assert state in {(i.namespace, i.name) for i in lineage.inputs}
    assert (state in outputs) is (not summary["dryRun"])
    assert lineage.run_facets["polyv_sync"].runId == "r1"


def test_the_custom_run_facet_follows_the_custom_facet_rules():
    from openlineage.client.serde import Serde

    from polyv_connector.airflow.lineage import FACET_SCHEMA_URL

    facet = Serde.to_dict(operator_lineage(RunLineage(summary=SENT)).run_facets["polyv_sync"])
    assert facet["_producer"].startswith("https://") and facet["_schemaURL"] == FACET_SCHEMA_URL
    assert facet["_schemaURL"].endswith("#/$defs/PolyvSyncRunFacet")
    # The schema it names ships with the package, and the facet validates against it.
    import jsonschema

    schema = json.loads((Path(__file__).parents[2] / "polyv_connector/data/PolyvSyncRunFacet-1-0-0.json").read_text())
    body = schema["$defs"]["PolyvSyncRunFacet"]["allOf"][1]
    jsonschema.validate({k: v for k, v in facet.items() if not k.startswith("_")}, body)


def test_the_model_check_catches_a_facet_at_the_wrong_key():
    """The old shape (assertions under the dataset's ``facets.dataQuality``) is refused."""
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq
    from openlineage.client.serde import Serde

    facet = Serde.to_dict(dq.DataQualityAssertionsDatasetFacet(assertions=[dq.Assertion(assertion="x", success=True)]))
    event = {
        "eventTime": "2026-01-01T00:00:00Z",
        "producer": "https://example.com/p",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "eventType": "COMPLETE",
        "run": {"runId": "0190a8b0-0000-7000-8000-000000000000"},
        "job": {"namespace": "n", "name": "j"},
        "inputs": [{"namespace": "file", "name": "/x", "facets": {"dataQuality": facet}}],
    }
    with pytest.raises(NotAtStandardKey, match=r"the spec puts it at input\.dataQualityAssertions"):
        structure_event(event)


# ---- the operator, in-process against the simulator ----------------------------------------------
class _TI:
    def xcom_push(self, key: str, value: Any) -> None:
        pass


def _run(op: Any, fails: bool = False) -> Any:
    """Run ``op``, then its lineage as the provider asks for it (on failure too: a failed gate
    raises after the report is written)."""
    from airflow.sdk.exceptions import AirflowException

    if fails:
        with pytest.raises(AirflowException):
            op.execute({"ti": _TI(), "run_id": "manual__lineage"})
        return op.get_openlineage_facets_on_failure(None)
    op.execute({"ti": _TI(), "run_id": "manual__lineage"})
    return op.get_openlineage_facets_on_complete(None)


def test_operator_lineage_uses_the_source_column_names(sim, polyv_env, tmp_path):
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    src = tmp_path / "renamed.parquet"
    table = pq.read_table(SAMPLE).rename_columns(["uid", "field", "val"])
    pq.write_table(table, src)
    op = PolyvViewerFieldSyncOperator(
        task_id="s",
        input_path=str(src),
        viewer_id_column="uid",
        field_id_column="field",
        value_column="val",
        report_path=str(tmp_path / "r.parquet"),
        expectation_suite_path="default",
        max_rejected_fraction=1,
    )
    lineage = _run(op)
    [source] = lineage.inputs
    assert (source.namespace, source.name) == ("file", str(src))
    assertions = source.inputFacets["dataQualityAssertions"].assertions
    assert {a.column for a in assertions if a.assertion.startswith("expect_")} == {"uid", "field", "val"}
    assert all(a.severity in {"warn", "error"} and a.expected and a.actual for a in assertions)
    [ceiling] = [a for a in assertions if a.assertion == "max_rejected_fraction"]
    assert (ceiling.column, ceiling.severity, ceiling.expected, ceiling.success) == (None, "error", "<= 1", True)
    metrics = source.inputFacets["dataQualityMetrics"]
    assert metrics.rowCount == table.num_rows and set(metrics.columnMetrics) == {"uid", "field", "val"}
    assert "dataQuality" not in (source.facets or {})


def test_a_failed_gate_declares_no_polyv_output(sim, polyv_env, tmp_path):
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    suite = tmp_path / "suite.json"
    suite.write_text(
        json.dumps(
            {
                "name": "gate",
                "expectations": [{"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 10**9}}],
            }
        )
    )
    op = PolyvViewerFieldSyncOperator(
        task_id="s",
        input_path=str(SAMPLE),
        report_path=str(tmp_path / "r.parquet"),
        expectation_suite_path=str(suite),
        allowed_suite_prefixes=[str(tmp_path)],
    )
    lineage = _run(op, fails=True)
    assert not sim.values
    assert [o.namespace for o in lineage.outputs] == ["file"]  # the report only
    [gate] = [
        a
        for a in lineage.inputs[0].inputFacets["dataQualityAssertions"].assertions
        if a.assertion == "expect_table_row_count_to_be_between"
    ]
    assert (gate.success, gate.severity, gate.expected, gate.actual) == (
        False,
        "error",
        '{"min_value": 1000000000}',
        "404",
    )
    assert lineage.run_facets["polyv_sync"].gateFailures


def test_a_rerun_with_everything_unchanged_declares_no_polyv_output(sim, polyv_env, tmp_path):
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    def run(n: int) -> Any:
        return _run(
            PolyvViewerFieldSyncOperator(
                task_id="s",
                input_path=str(SAMPLE),
                report_path=str(tmp_path / f"r{n}.parquet"),
                state_dir=str(tmp_path / "st"),
            )
        )

    first, second = run(1), run(2)
    state = ("file", str(tmp_path / "st"))
    assert any(o.namespace.startswith("http") for o in first.outputs)
    assert not any(o.namespace.startswith("http") for o in second.outputs)
    assert state in {(i.namespace, i.name) for i in second.inputs}
    assert second.run_facets["polyv_sync"].counts["unchanged"] > 0


# ---- no credential in a DAG's documentation facet --------------------------------------------------
CREDENTIAL = re.compile(
    r"""://[^/\s:@'"]+:[^/\s@'"]+@"""  # user:password@ in a URL
    r"""|["']?(password|secret|appSecret|token)["']?\s*[:=]\s*["'](?!<)[^"']+["']""",  # a literal password
    re.IGNORECASE,
)


@pytest.mark.parametrize("dag_file", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_dag_docstrings_hold_no_credential(dag_file):
    """The DAG's docstring becomes its doc_md and OpenLineage's documentation job facet."""
    doc = ast.get_docstring(ast.parse(dag_file.read_text())) or ""
    assert not CREDENTIAL.search(doc), CREDENTIAL.search(doc)


def test_the_credential_check_sees_the_usual_shapes():
    assert CREDENTIAL.search("postgresql://user:pass@host:5432/db")
    assert CREDENTIAL.search('"password": "demo-secret"')
    assert not CREDENTIAL.search('"password": "<appSecret>"')
    assert not CREDENTIAL.search("postgresql://host:5432/db")


# ---- a whole example DAG in a real Airflow, events through the file transport ----------------------
@pytest.mark.slow
def test_parquet_dag_events_read_back_through_the_client_model(run_dag, sim, tmp_path):
    events_file = tmp_path / "openlineage.jsonl"
    env = {
        "AIRFLOW_CONN_POLYV_DEFAULT": json.dumps(
            {"conn_type": "polyv", "login": APP_ID, "password": PLANTED_SECRET, "host": sim.base_url}
        ),
        "AIRFLOW_VAR_POLYV_REPORT_DIR": str(tmp_path / "reports"),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "polyv-tests",
        "AIRFLOW__OPENLINEAGE__DISABLED": "False",
    }
    run = run_dag(
        "polyv_viewer_sync_parquet",
        "2025-04-01",
        {"expectation_suite_path": "default", "report_path": "lineage.parquet"},
        env=env,
    )
    assert run.state == "success", run.output[-3000:] + run.log_text()[-3000:]
    text = events_file.read_text()
    assert PLANTED_SECRET not in text
    events = [structure_event(json.loads(line)) for line in text.splitlines() if line.strip()]
    task = [e for e in events if e.job.name == "polyv_viewer_sync_parquet.sync_viewer_fields"]
    assert {e.eventType.value for e in task} >= {"START", "COMPLETE"}, [(e.job.name, e.eventType) for e in events]
    [complete] = [e for e in task if e.eventType.value == "COMPLETE"]
    [source] = [i for i in complete.inputs if i.name.endswith("sample_viewers.parquet")]
    assert source.namespace == "file"
    assert {"dataQualityAssertions", "dataQualityMetrics"} <= set(source.inputFacets)
    # The suite's own words for each check travel with it (the bundled suite's meta "why").
    described = {a.name: a.description for a in source.inputFacets["dataQualityAssertions"].assertions}
    assert described["expect_column_values_to_not_be_null(viewerId)"] == "POLYV cannot store a value for no viewer"
    assert {a.column for a in source.inputFacets["dataQualityAssertions"].assertions} == {
        "viewerId",
        "customFieldId",
        "customFieldValue",
        None,  # the run's own gate, max_rejected_fraction (0.05 with a suite), is on the whole dataset
    }
    outputs = {(o.namespace, o.name): o for o in complete.outputs}
    polyv = outputs[sim.base_url, f"live/v4/user/custom-field/viewer-value/{APP_ID}"]
    assert polyv.outputFacets["outputStatistics"].rowCount == run.xcom["counts"]["sent"] > 0
    # The report lands in the DAG's own folder under the report folder.
    reports = tmp_path / "reports" / "polyv_viewer_sync_parquet"
    assert ("file", str(reports / "lineage.parquet")) in outputs
    facet = complete.run.facets["polyv_sync"]
    assert facet.runId == run.xcom["runId"] and facet.counts == run.xcom["counts"]
    doc = complete.job.facets.get("documentation")
    assert doc is not None and not CREDENTIAL.search(doc.description)

    # The assets Airflow recorded through the task's alias: the same places as the lineage.
    import sqlite3

    from tests.stack import AIRFLOW_HOME

    db = sqlite3.connect(AIRFLOW_HOME / "airflow.db")
    try:
        recorded = {
            uri
            for (uri,) in db.execute(
                "SELECT a.uri FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE e.source_run_id = ?",
                (run.run_id,),
            )
        }
    finally:
        db.close()
    # The report as its place (the folder), not one asset per run's file.
    assert f"file://{reports / 'lineage.parquet'}" not in recorded
    assert recorded >= {
        f"file://{reports}",
        f"{sim.base_url}/live/v4/user/custom-field/viewer-value/{APP_ID}",
    }, recorded


@pytest.mark.postgres
def test_warehouse_lineage_names_tables_by_host_and_database(sim, polyv_env, pg_schema, pg_warehouse_env):
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator
    from tests.airflow.support import pg_exec

    pg_exec(f"CREATE TABLE {pg_schema}.attrs (uid text, field text, val text)")
    pg_exec(f"INSERT INTO {pg_schema}.attrs VALUES ('u1', 'VIP_LEVEL', 'L1'), ('u2', 'VIP_LEVEL', NULL)")
    common = {
        "source_conn_id": "polyv_warehouse",
        "source_table": f"{pg_schema}.attrs",
        "viewer_id_column": "uid",
        "field_id_column": "field",
        "value_column": "val",
        "report_table": f"{pg_schema}.polyv_sync_report",
        "state_table": f"{pg_schema}.polyv_sync_state",
        "expectation_suite_path": "default",
        "max_rejected_fraction": 1,
    }
    op = PolyvViewerFieldSyncOperator(task_id="s", **common)
    lineage = _run(op)
    pg = "postgres://127.0.0.1:5432"
    inputs = {(i.namespace, i.name): i for i in lineage.inputs}
    outputs = {(o.namespace, o.name) for o in lineage.outputs}
    source = inputs[pg, f"test.{pg_schema}.attrs"]
    assert {a.column for a in source.inputFacets["dataQualityAssertions"].assertions} == {"uid", "field", "val", None}
    assert source.inputFacets["dataQualityMetrics"].columnMetrics["val"].nullCount == 1
    state = (pg, f"test.{pg_schema}.polyv_sync_state")
    assert state in inputs and state in outputs
    assert (pg, f"test.{pg_schema}.polyv_sync_report") in outputs
    assert (sim.base_url, f"live/v4/user/custom-field/viewer-value/{APP_ID}") in outputs
    # The same places as assets: what the task records through its alias.
    uris = {w.uri for w in op._written_locations(op._lineage["summary"])}
    assert f"{pg}/test/{pg_schema}/polyv_sync_report" in uris and f"{pg}/test/{pg_schema}/polyv_sync_state" in uris

    dry = _run(PolyvViewerFieldSyncOperator(task_id="s", dry_run=True, **common))
    assert state in {(i.namespace, i.name) for i in dry.inputs}
    assert {(o.namespace, o.name) for o in dry.outputs} == {(pg, f"test.{pg_schema}.polyv_sync_report")}
