"""Provider registration: entry point, declarative connection form, ``airflow providers list``."""

from __future__ import annotations

import json
import subprocess
import warnings
from importlib.metadata import entry_points
from importlib.resources import files

import pytest

from polyv_connector.airflow.provider import get_provider_info
from tests.airflow.support import BIN, subprocess_env

pytestmark = pytest.mark.airflow


def test_entry_point_is_registered_and_matches_the_distribution():
    (ep,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("polyv_connector")]
    assert ep.load() is get_provider_info
    assert ep.dist.metadata["Name"] == get_provider_info()["package-name"] == "polyv-connector"


def test_provider_info_validates_against_airflow_schema():
    import jsonschema

    schema = json.loads((files("airflow") / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_connection_form_is_declarative():
    from polyv_connector.airflow.hooks import PolyvHook

    (conn,) = get_provider_info()["connection-types"]
    assert conn["connection-type"] == "polyv"
    assert conn["hook-class-name"] == "polyv_connector.airflow.hooks.PolyvHook"
    assert set(conn["conn-fields"]) == {"max_rps", "batch_size", "concurrency", "timeout"}
    behaviour = conn["ui-field-behaviour"]
    assert behaviour["relabeling"] == {"login": "App ID", "password": "App Secret", "host": "API base URL"}
    assert behaviour["placeholders"]["host"] == "https://api.polyv.net"
    # The deprecated hook methods must not be defined (Airflow 3.2+ warns about them).
    assert "get_connection_form_widgets" not in PolyvHook.__dict__
    assert "get_ui_field_behaviour" not in PolyvHook.__dict__


def test_providers_manager_knows_the_polyv_connection_type():
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "polyv-connector" in pm.providers
        behaviour = pm.field_behaviours["polyv"]
        widgets = pm.connection_form_widgets
    assert behaviour["hidden_fields"] == ["schema", "port", "extra"]
    assert behaviour["placeholders"]["extra__polyv__max_rps"] == "100"
    assert {
        "extra__polyv__max_rps",
        "extra__polyv__batch_size",
        "extra__polyv__concurrency",
        "extra__polyv__timeout",
    } <= set(widgets)
    assert widgets["extra__polyv__batch_size"].field["schema"]["maximum"] == 1000
    assert not [w for w in caught if "polyv" in str(w.message).lower()]


def test_airflow_cli_lists_provider_and_hook():
    env = subprocess_env()
    listed = subprocess.run(
        [str(BIN / "airflow"), "providers", "list", "-o", "json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    providers = {p["package_name"]: p for p in json.loads(listed.stdout)}
    assert providers["polyv-connector"]["version"] == "0.1.0"
    hooks = subprocess.run(
        [str(BIN / "airflow"), "providers", "hooks", "-o", "json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert hooks.returncode == 0, hooks.stderr[-2000:]
    (polyv,) = [h for h in json.loads(hooks.stdout) if h["connection_type"] == "polyv"]
    assert polyv["class"] == "polyv_connector.airflow.hooks.PolyvHook"
    assert polyv["conn_id_attribute_name"] == "polyv_conn_id"


def test_airflow_connections_shows_the_polyv_type(airflow_db):
    from tests.airflow.support import conn_json

    env = subprocess_env(AIRFLOW_CONN_POLYV_DEFAULT=conn_json("http://127.0.0.1:8750"))
    got = subprocess.run(
        [str(BIN / "airflow"), "connections", "get", "polyv_default", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.returncode == 0, got.stderr[-2000:]
    (conn,) = json.loads(got.stdout)
    assert conn["conn_type"] == "polyv"
    assert conn["host"] == "http://127.0.0.1:8750"
