"""Per-DAG folders and report names: the pure checks under the operator's trigger-time rules
(tests/airflow/test_trigger_paths.py runs them through the operator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyv_connector.airflow.folders import (
    Writer,
    check_report_name,
    claim_report_name,
    dag_folder,
    dag_folder_name,
    owner_file,
)
from polyv_connector.errors import ConfigError

pytestmark = pytest.mark.airflow

ME = Writer("dag_a", "manual__1", "sync", -1)


@pytest.mark.parametrize("dag_id", ["", ".", "..", "a/b", "a\\b", "a\x00"])
def test_dag_ids_that_are_no_folder_name(dag_id: str) -> None:
    assert dag_folder_name(dag_id) is None
    with pytest.raises(ConfigError):
        dag_folder("/srv/reports", dag_id)


def test_dag_folder() -> None:
    assert dag_folder("/srv/reports", "polyv_viewer_sync_parquet") == "/srv/reports/polyv_viewer_sync_parquet"


@pytest.mark.parametrize("name", ["evil.html", "x.svg", "x.parquet.html", "x.parquet/", "x", "parquet"])
def test_report_names_must_end_in_parquet(name: str) -> None:
    with pytest.raises(ConfigError, match=r"\.parquet"):
        check_report_name(name, "report_path")
    check_report_name("a/b.PARQUET", "report_path")


def test_a_new_name_is_claimed_once_and_a_retry_may_reuse_it(tmp_path: Path) -> None:
    report = tmp_path / "dag_a" / "r.parquet"
    claim_report_name(str(report), ME, "report_path")
    assert json.loads(owner_file(str(report)).read_text())["run_id"] == "manual__1"
    report.write_bytes(b"PAR1")
    claim_report_name(str(report), ME, "report_path")  # the same task instance, another try
    for other in (Writer("dag_a", "manual__2", "sync"), Writer("dag_a", "manual__1", "sync", 0)):
        with pytest.raises(ConfigError, match="exists already"):
            claim_report_name(str(report), other, "report_path")


def test_a_name_without_an_owner_is_refused_if_anything_of_it_exists(tmp_path: Path) -> None:
    report, page = tmp_path / "r.parquet", tmp_path / "r.html"
    page.write_text("planted page")
    with pytest.raises(ConfigError, match="exists already"):
        claim_report_name(str(report), ME, "report_path", also=(str(page),))
    (tmp_path / "link.parquet").symlink_to(tmp_path / "nowhere")  # a dangling symlink exists too
    with pytest.raises(ConfigError, match="exists already"):
        claim_report_name(str(tmp_path / "link.parquet"), ME, "report_path")


def test_an_owner_file_another_run_wrote_meanwhile_wins(tmp_path: Path) -> None:
    """Two runs claiming one new name at once: O_EXCL lets one write the owner file."""
    report = tmp_path / "r.parquet"
    claim_report_name(str(report), Writer("dag_a", "manual__2", "sync"), "report_path")
    with pytest.raises(ConfigError):
        claim_report_name(str(report), ME, "report_path")
