"""The report's place as the asset (one per DAG folder or table, not one per run), and the
event extra carrying the run's file, counts and runId."""

from __future__ import annotations

import json

from airflow.sdk import Asset

from polyv_connector.airflow.assets import (
    EVENT_KEYS,
    report_event_extra,
    report_folder,
    report_place_assets,
    report_table_asset,
)


def test_the_dags_report_folder_is_the_place_whatever_the_runs_file():
    assets = report_place_assets("polyv_viewer_sync_parquet", report_dir="/srv/airflow/polyv_reports")
    assert assets == [
        Asset(
            name="file:///srv/airflow/polyv_reports/polyv_viewer_sync_parquet",
            uri="file:///srv/airflow/polyv_reports/polyv_viewer_sync_parquet",
        )
    ]
    # Every run of the DAG gets the same asset: its file is not in the name.
    again = report_place_assets(
        "polyv_viewer_sync_parquet", report_dir="/srv/airflow/polyv_reports/", report_path="other.parquet"
    )
    assert [a.uri for a in again] == [assets[0].uri]


def test_a_table_report_is_its_table_and_both_places_are_named():
    assets = report_place_assets(
        "dag", report_dir="/r", report_table=" analytics.polyv_sync_report ", conn_id="polyv_warehouse"
    )
    assert assets == [report_table_asset("polyv_warehouse", "analytics.polyv_sync_report"), assets[1]]
    assert assets[1].uri == "file:///r/dag"


def test_the_folder_of_an_absolute_or_url_report_path():
    assert report_folder("dag", report_path="/data/reports/run.parquet") == "/data/reports"
    assert report_folder("dag", report_path="s3://bucket/reports/run.parquet") == "s3://bucket/reports"
    assert report_place_assets("dag", report_path="s3://bucket/reports/run.parquet")[0].uri == "s3://bucket/reports"
    # A relative path names a place only on the worker that resolves it.
    assert report_folder("dag", report_path="run.parquet") is None
    assert report_place_assets("dag", report_path="run.parquet") == []
    assert report_place_assets("dag", report_table="t") == []  # a table without its connection


def test_the_event_extra_carries_the_run():
    summary = {
        "runId": "20261207T020000Z-abcd1234",
        "airflowRunId": "scheduled__2026-12-07",
        "appId": "app1",
        "ok": True,
        "exitCode": 0,
        "items": 1000,
        "counts": {"sent": 10, "unchanged": 990},
        "dryRun": False,
        "report": "/srv/r/dag/run.parquet",
        "runPage": "/srv/r/dag/run.html",
        "reportPath": "/srv/r/dag/run.parquet",
        "problems": [{"viewerId": "v"}],
    }
    extra = report_event_extra(summary)
    assert set(extra) == {*EVENT_KEYS, "reportFile"}
    assert extra["reportFile"] == "file:///srv/r/dag/run.parquet"
    assert (extra["runId"], extra["counts"], extra["items"]) == ("20261207T020000Z-abcd1234", summary["counts"], 1000)
    assert "problems" not in extra  # viewer ids stay out of the asset events
    json.dumps(extra, allow_nan=False)  # strict JSON, as Airflow stores it
    table_only = report_event_extra({**summary, "reportPath": None})
    assert table_only["reportFile"] is None
