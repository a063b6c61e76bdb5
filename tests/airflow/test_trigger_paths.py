"""Trigger-time paths on the operator: a report name under ``report_dir``, inputs and suites
under the prefixes the DAG author allows, and the report checks both front ends share.

Every refusal is a ``ConfigError`` turned into ``AirflowFailException`` (no retry) naming the
argument, raised before the simulator sees a request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.airflow.support import APP_ID, PLANTED_SECRET, SAMPLE

pytestmark = pytest.mark.airflow

SAMPLE_DIR = str(Path(SAMPLE).parent)


def _context() -> dict[str, Any]:
    class TI:
        def xcom_push(self, key: str, value: Any) -> None:
            pass

    return {"ti": TI(), "run_id": "manual__paths"}


def _op(**kwargs: Any):
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    return PolyvViewerFieldSyncOperator(task_id="sync", **kwargs)


def _input(tmp_path: Path) -> Path:
    src = tmp_path / "data" / "in.parquet"
    src.parent.mkdir()
    pq.write_table(
        pa.table({"viewerId": ["a"], "customFieldId": ["PAY_STATUS"], "customFieldValue": ["1"]}),
        src,
    )
    return src


def _refused(sim: Any, match: str, **kwargs: Any) -> str:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match=match) as raised:
        _op(**kwargs).execute(_context())
    assert sim.stats.api_requests == 0
    message = str(raised.value)
    assert PLANTED_SECRET not in message and "configuration error" in message
    return message


@pytest.mark.parametrize(
    "name",
    [
        "/etc/passwd",
        "../escape.parquet",
        "a/../../escape.parquet",
        "~/x.parquet",
        "s3://b/k.parquet",
        "https://evil.example/k.parquet",
        "a\\..\\b.parquet",
        "x\x00.parquet",
        # Another DAG's folder: out of this DAG's folder only through "..".
        "../polyv_viewer_sync_warehouse/manual__1__sync_viewer_fields.parquet",
        # Not a report: a browser would run these.
        "evil.html",
        "x.svg",
        "polyv_viewer_sync_warehouse/run__sync_viewer_fields.html",
        "x.parquet.html",
        "folder.parquet/",
    ],
)
def test_report_path_must_be_a_parquet_name_under_the_dag_folder(sim, polyv_env, tmp_path, name):
    reports = tmp_path / "reports"
    _refused(sim, "report_path", input_path=str(SAMPLE), report_path=name, report_dir=str(reports))
    assert not (tmp_path / "escape.parquet").exists()
    assert not any(p.suffix in (".html", ".svg") for p in tmp_path.rglob("*"))


def test_report_name_lands_in_the_dag_folder_under_report_dir(sim, polyv_env, tmp_path):
    reports = tmp_path / "reports"
    src = _input(tmp_path)
    summary = _op(
        input_path=str(src),
        report_path="nightly/run-1.parquet",
        report_dir=str(reports),
        allowed_input_prefixes=json.dumps([str(src.parent)]),
    ).execute(_context())
    # The operator runs outside a DAG here: its DAG folder is "dag".
    where = reports / "dag" / "nightly" / "run-1.parquet"
    assert summary["ok"] is True and summary["report"] == str(where)
    assert where.is_file() and summary["runPage"] == str(where.with_suffix(".html"))
    assert (APP_ID, "a", "PAY_STATUS") in sim.values


def test_an_existing_report_name_is_refused_unless_this_task_instance_wrote_it(sim, polyv_env, tmp_path):
    """Another run's (or a file planted before) report cannot be overwritten by naming it; a
    retry of the same task instance may write its own report again."""
    reports = tmp_path / "reports"
    src = _input(tmp_path)
    args = {
        "input_path": str(src),
        "report_path": "mine.parquet",
        "report_dir": str(reports),
        "allowed_input_prefixes": json.dumps([str(src.parent)]),
    }
    first = _op(**args).execute(_context())
    assert first["ok"] is True
    again = _op(**args).execute(_context())  # the same run and task: a retry
    assert again["ok"] is True
    other_run = {**_context(), "run_id": "manual__other"}
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="exists already"):
        _op(**args).execute(other_run)
    planted = reports / "dag" / "planted.parquet"
    planted.write_bytes(b"PAR1")
    with pytest.raises(AirflowFailException, match="exists already"):
        _op(**{**args, "report_path": "planted.parquet"}).execute(_context())
    assert planted.read_bytes() == b"PAR1"


@pytest.mark.parametrize(
    "given",
    [
        "/etc/hosts",
        f"{SAMPLE_DIR}/../../x.parquet",
        f"{SAMPLE_DIR}-evil/x.parquet",  # a sibling whose name merely starts like the prefix
        "s3://bucket/x.parquet",
    ],
)
def test_input_path_must_lie_under_an_allowed_prefix(sim, polyv_env, tmp_path, given):
    message = _refused(
        sim,
        "input_path",
        input_path=given,
        report_path=str(tmp_path / "r.parquet"),
        allowed_input_prefixes=json.dumps([SAMPLE_DIR]),
    )
    assert "allowed_input_prefixes" in message


def test_input_through_a_symlink_out_of_the_prefix_is_refused(sim, polyv_env, tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    outside = _input(tmp_path)
    (allowed / "link.parquet").symlink_to(outside)
    _refused(
        sim,
        "input_path",
        input_path=str(allowed / "link.parquet"),
        report_path=str(tmp_path / "r.parquet"),
        allowed_input_prefixes=[str(allowed)],
    )


def test_url_prefixes_match_by_segment(sim, polyv_env, tmp_path):
    for given in ("s3://bucket/data-evil/x.parquet", "s3://bucket/data/../secret.parquet", "s3://other/data/x"):
        _refused(
            sim,
            "input_path",
            input_path=given,
            report_path=str(tmp_path / "r.parquet"),
            allowed_input_prefixes=["s3://bucket/data"],
        )


def test_bad_prefix_lists_name_the_argument(sim, polyv_env, tmp_path):
    for raw in ("not json", '{"a": 1}', "[1, 2]"):
        _refused(
            sim,
            "allowed_input_prefixes",
            input_path=str(SAMPLE),
            report_path=str(tmp_path / "r.parquet"),
            allowed_input_prefixes=raw,
        )
    _refused(
        sim,
        "allowed_input_prefixes",
        input_path=str(SAMPLE),
        report_path=str(tmp_path / "r.parquet"),
        allowed_input_prefixes="[]",
    )


def test_suite_must_lie_under_an_allowed_prefix(sim, polyv_env, tmp_path):
    suite = tmp_path / "evil_suite.json"
    suite.write_text("{}")
    _refused(
        sim,
        "expectation_suite_path",
        input_path=str(SAMPLE),
        report_path=str(tmp_path / "r.parquet"),
        expectation_suite_path=str(suite),
        allowed_suite_prefixes=json.dumps([str(tmp_path / "suites")]),
    )


def test_bundled_suite_passes_the_bundled_prefix(sim, polyv_env, tmp_path):
    from polyv_connector.expectations.suite import bundled_suite_path

    summary = _op(
        input_path=str(SAMPLE),
        report_path=str(tmp_path / "r.parquet"),
        expectation_suite_path="default",
        allowed_suite_prefixes=[str(bundled_suite_path().parent)],
        dry_run=True,
    ).execute(_context())
    assert summary["dryRun"] is True


@pytest.mark.parametrize("kind", ["input", "inside input", "directory", "symlink", "device"])
def test_report_checks_are_shared_with_the_cli(sim, polyv_env, tmp_path, kind):
    src = _input(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "adir").mkdir()
    (tmp_path / "link.parquet").symlink_to(victim)
    report = {
        "input": str(src),
        "inside input": str(src.parent / "report.parquet"),
        "directory": str(tmp_path / "adir"),
        "symlink": str(tmp_path / "link.parquet"),
        "device": "/dev/null",
    }[kind]
    before = src.read_bytes()
    _refused(sim, "report_path", input_path=str(src.parent if kind == "inside input" else src), report_path=report)
    assert src.read_bytes() == before and victim.read_text() == "precious"


def test_state_dir_naming_a_file_is_refused(sim, polyv_env, tmp_path):
    f = tmp_path / "state.txt"
    f.write_text("x")
    _refused(sim, "state_dir", input_path=str(SAMPLE), report_path=str(tmp_path / "r.parquet"), state_dir=str(f))


def test_dotdot_login_is_refused_naming_the_login(sim, monkeypatch, tmp_path):
    from tests.airflow.support import conn_json

    conn = json.loads(conn_json(sim.base_url))
    conn["login"] = ".."
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_DEFAULT", json.dumps(conn))
    message = _refused(
        sim, "login", input_path=str(SAMPLE), report_path=str(tmp_path / "r.parquet"), state_dir=str(tmp_path / "s")
    )
    assert str(len(PLANTED_SECRET)) not in message
    assert not (tmp_path / "s").exists() and not (tmp_path / "meta.json").exists()


@pytest.mark.postgres
def test_the_fallback_report_lands_in_the_dag_s_folder(
    sim, polyv_env, pg_schema, pg_warehouse_env, tmp_path, monkeypatch
):
    """The report table goes away while the run sends: the engine keeps the report in a Parquet
    fallback, in this DAG's own folder (served to this DAG's readers only), not a shared one."""
    import threading
    import time

    import psycopg

    from polyv_connector.simulator import FaultConfig
    from tests.airflow.support import PG_DSN

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    sim.set_faults(FaultConfig(latency_s=0.3))
    table = f"{pg_schema}.polyv_sync_report"

    def drop_while_sending() -> None:
        deadline = time.monotonic() + 30
        while not sim.values and time.monotonic() < deadline:
            time.sleep(0.01)
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}")  # type: ignore[arg-type]

    dropper = threading.Thread(target=drop_while_sending, daemon=True)
    dropper.start()
    summary = _op(
        input_path=str(SAMPLE),
        report_table=table,
        report_conn_id="polyv_warehouse",
        state_table="",  # no state table (None would mean "not given": the default one)
        max_rps=50,
        batch_size=20,
    ).execute(_context())
    dropper.join(timeout=5)
    fallback = Path(summary["reportFallback"])
    # Outside a DAG the operator's DAG folder is "dag".
    assert fallback.parent == tmp_path / "home" / "polyv_reports" / "dag", summary
    assert pq.read_table(fallback).num_rows == pq.read_metadata(SAMPLE).num_rows
