"""The plugin serving run pages and reports: only files under the configured folders, no
traversal, no symlink out; the extra links' URLs; the provider info naming both."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from starlette.requests import Request  # at module level: FastAPI resolves the annotation by name

pytestmark = pytest.mark.airflow


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "reports"
    (root / "dag_a").mkdir(parents=True)
    (root / "dag_a" / "run.html").write_text("<!DOCTYPE html><p>page</p>")
    (root / "dag_a" / "run.parquet").write_bytes(b"PAR1data")
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    (root / "dag_a" / "escape").symlink_to(outside)
    (root / "dag_a" / "up").symlink_to(tmp_path)
    return root, outside


@pytest.fixture
def client(served: tuple[Path, Path]):
    from fastapi.testclient import TestClient

    from polyv_connector.airflow.plugin import create_app

    return TestClient(create_app([str(served[0])], authenticate=False))


def _url(path: Path | str) -> str:
    from polyv_connector.airflow.links import FILES_ROUTE

    return f"{FILES_ROUTE}/{str(path).lstrip('/')}"


def test_serves_files_under_the_folder(client, served) -> None:
    root, _ = served
    page = client.get(_url(root / "dag_a" / "run.html"))
    assert page.status_code == 200 and page.text.endswith("<p>page</p>")
    assert page.headers["content-type"].startswith("text/html")
    report = client.get(_url(root / "dag_a" / "run.parquet"))
    assert report.status_code == 200 and report.content == b"PAR1data"
    assert "attachment" in report.headers["content-disposition"]


@pytest.mark.parametrize(
    "requested",
    [
        "{outside}",  # a file elsewhere
        "{root}/dag_a/../../secret.txt",  # .. out of the folder
        "{root}/dag_a/%2e%2e/%2e%2e/secret.txt",  # the same, percent-encoded
        "{root}/dag_a/escape",  # a symlink to a file outside
        "{root}/dag_a/up/secret.txt",  # through a symlinked folder outside
        "{root}/dag_a",  # a folder
        "{root}",  # the root itself
        "{root}/dag_a/missing.html",  # nothing there
        "etc/passwd",
        "{root}/dag_a/run.html%00.txt",  # a NUL byte
    ],
)
def test_refuses_everything_else_as_not_found(client, served, requested: str) -> None:
    root, outside = served
    path = requested.format(root=str(root).lstrip("/"), outside=str(outside).lstrip("/"))
    from polyv_connector.airflow.links import FILES_ROUTE

    answer = client.get(f"{FILES_ROUTE}/{path}")
    assert answer.status_code == 404, (path, answer.status_code)
    assert "not yours" not in answer.text


def test_resolver_directly(served) -> None:
    from polyv_connector.airflow.plugin import resolve_served_file

    root, outside = served
    assert resolve_served_file(str(root / "dag_a" / "run.html"), [str(root)]) == (root / "dag_a" / "run.html").resolve()
    assert resolve_served_file(str(root / "dag_a" / ".." / ".." / outside.name), [str(root)]) is None
    assert resolve_served_file(str(outside), [str(root), "/nonexistent-root"]) is None
    assert resolve_served_file(str(root / "dag_a" / "run.html"), []) is None


def test_unauthenticated_requests_are_refused(served) -> None:
    """The app as the plugin mounts it asks for an Airflow login before anything else."""
    from airflow.api_fastapi.app import create_auth_manager
    from fastapi.testclient import TestClient

    from polyv_connector.airflow.plugin import create_app

    app = create_app([str(served[0])])
    app.state.auth_manager = create_auth_manager()
    answer = TestClient(app).get(_url(served[0] / "dag_a" / "run.html"))
    assert answer.status_code in (401, 403)


def test_link_urls() -> None:
    from polyv_connector.airflow.links import DataDocsLink, ReportLink, RunPageLink, file_url

    assert file_url("/srv/r/dag/run 1.html") == "/polyv/files/srv/r/dag/run%201.html"
    assert file_url("/srv/r/x.html", "http://host:8080/airflow/") == "/airflow/polyv/files/srv/r/x.html"
    assert file_url(None) == "" and file_url("s3://bucket/k.html") == ""
    assert file_url("https://bucket.example/k.html") == "https://bucket.example/k.html"
    summary = {"runPage": "/r/p.html", "reportPath": "/r/p.parquet", "validation": {"dataDocsPage": "/v/d.html"}}
    assert RunPageLink().path(summary) == "/r/p.html"
    assert ReportLink().path(summary) == "/r/p.parquet"
    assert DataDocsLink().path(summary) == "/v/d.html"
    assert DataDocsLink().path({"validation": None}) is None and RunPageLink().path({}) is None


def test_provider_info_names_links_and_plugin() -> None:
    from airflow.sdk import BaseOperatorLink
    from airflow.sdk.module_loading import import_string

    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator
    from polyv_connector.airflow.provider import get_provider_info

    info = get_provider_info()
    links = [import_string(name) for name in info["extra-links"]]
    assert all(issubclass(cls, BaseOperatorLink) for cls in links)
    assert {type(link) for link in PolyvViewerFieldSyncOperator.operator_extra_links} == set(links)
    # The plugin: the entry point setup.cfg declares (an installed checkout registers it).
    import configparser

    from tests.stack import REPO

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    target = cfg["options.entry_points"]["airflow.plugins"].strip()
    name, _, where = (x.strip() for x in target.partition("="))
    cls = import_string(where.replace(":", "."))
    assert name == cls.name == "polyv" and cls.fastapi_apps[0]["url_prefix"] == "/polyv"


def test_default_folders_follow_airflow_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from polyv_connector.airflow.plugin import default_served_dirs

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    assert default_served_dirs() == [
        os.path.join(tmp_path, "polyv_reports"),
        os.path.join(tmp_path, "polyv_validation"),
    ]


# ---- the connection-test middleware ----------------------------------------------------------------
@pytest.fixture
def echo_client():
    """A tiny app behind the middleware that echoes the body it received."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from polyv_connector.airflow.conntest import PolyvConnectionTestMiddleware

    app = FastAPI()

    @app.post("/api/v2/connections/test")
    @app.post("/api/v2/connections")
    async def echo(request: Request) -> dict:
        raw = await request.body()
        return {"body": json.loads(raw), "length": request.headers.get("content-length"), "size": len(raw)}

    app.add_middleware(PolyvConnectionTestMiddleware)
    return TestClient(app)


UI_TEST_BODY = {"connection_id": "c", "conn_type": "polyv", "login": "a", "password": "", "host": "h", "port": 0}


def test_ui_port_0_is_left_out_for_polyv(echo_client) -> None:
    answer = echo_client.post("/api/v2/connections/test", json=UI_TEST_BODY).json()
    assert answer["body"] == {k: v for k, v in UI_TEST_BODY.items() if k != "port"}
    assert int(answer["length"]) == answer["size"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v2/connections/test", {**UI_TEST_BODY, "conn_type": "postgres"}),  # another type: its port matters
        ("/api/v2/connections/test", {**UI_TEST_BODY, "port": 8080}),  # a real port
        ("/api/v2/connections", UI_TEST_BODY),  # saving a connection, not testing it
    ],
)
def test_everything_else_passes_untouched(echo_client, path: str, body: dict) -> None:
    assert echo_client.post(path, json=body).json()["body"] == body


def test_non_json_and_large_bodies_pass_as_they_came() -> None:
    from polyv_connector.airflow.conntest import normalized_body

    assert normalized_body(b"not json") == b"not json"
    assert normalized_body(b"[1, 2]") == b"[1, 2]"
    assert "port" not in json.loads(normalized_body(json.dumps(UI_TEST_BODY).encode()))


def test_plugin_mounts_the_middleware() -> None:
    from polyv_connector.airflow.conntest import PolyvConnectionTestMiddleware
    from polyv_connector.airflow.plugin import PolyvPlugin

    assert [m["middleware"] for m in PolyvPlugin.fastapi_root_middlewares] == [PolyvConnectionTestMiddleware]
