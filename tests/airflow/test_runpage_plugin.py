"""The plugin serving run pages, reports and Data Docs per task instance: the file comes from
that task instance's summary and from that DAG's folder only, is served so that nothing in it
runs script on the Airflow origin, and everything else is 404; the extra links' URLs; the
provider info naming both. The app runs in-process with a summary lookup of the test's own
(the per-DAG access check in a running Airflow: tests/e2e/test_plugin_access.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request  # at module level: FastAPI resolves the annotation by name

pytestmark = pytest.mark.airflow


RUN = "manual__2026-12-01T00:00:00+00:00"
TASK = "sync_viewer_fields"


@pytest.fixture
def served(tmp_path: Path) -> dict[str, Any]:
    """Two DAGs' folders under one served root, a file outside it, symlinks leading out, and the
    summaries of three task instances (one of them forged to name the other DAG's page)."""
    root = tmp_path / "reports"
    a, b = root / "dag_a", root / "dag_b"
    docs = a / "run.data_docs"
    (docs / "validations").mkdir(parents=True)
    b.mkdir()
    (a / "run.html").write_text("<!DOCTYPE html><p>page</p>")
    (a / "run.parquet").write_bytes(b"PAR1data")
    (a / "run.validation.json").write_text('{"success": true}')
    (docs / "index.html").write_text("<html>index</html>")
    (docs / "validations" / "v.html").write_text("<html><script>gx()</script>validation</html>")
    (a / "other_run.html").write_text("another run of the same DAG")
    (b / "run.html").write_text("dag b's page")
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    (a / "escape.html").symlink_to(outside)
    (docs / "up").symlink_to(tmp_path)
    summary_a = {
        "runPage": str(a / "run.html"),
        "reportPath": str(a / "run.parquet"),
        "validation": {
            "resultJson": str(a / "run.validation.json"),
            "dataDocs": str(docs / "index.html"),
            "dataDocsPage": str(docs / "validations" / "v.html"),
        },
    }
    summaries = {
        ("dag_a", RUN, TASK, -1): summary_a,
        ("dag_b", RUN, TASK, -1): {"runPage": str(b / "run.html"), "reportPath": None, "validation": None},
        # An XCom edited through the API to name another DAG's file, or a symlink out.
        ("dag_a", "forged", TASK, -1): {"runPage": str(b / "run.html"), "reportPath": str(a / "escape.html")},
        ("dag_a", "table_only", TASK, 3): {"runPage": str(a / "run.html"), "reportPath": None},
    }
    return {"root": root, "outside": outside, "summaries": summaries, "a": a, "b": b}


@pytest.fixture
def client(served: dict[str, Any]):
    from fastapi.testclient import TestClient

    from polyv_connector.airflow.plugin import create_app

    def lookup(dag_id: str, run_id: str, task_id: str, map_index: int) -> dict[str, Any] | None:
        return served["summaries"].get((dag_id, run_id, task_id, map_index))

    return TestClient(create_app([str(served["root"])], summaries=lookup, authenticate=False))


def _url(kind: str, subpath: str, dag_id: str = "dag_a", run_id: str = RUN, map_index: int = -1) -> str:
    from urllib.parse import quote

    return f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{TASK}/{map_index}/{kind}/{subpath}"


def test_the_run_page_runs_no_script(client) -> None:
    page = client.get(_url("run-page", "run.html"))
    assert page.status_code == 200 and page.text.endswith("<p>page</p>")
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
    )
    assert page.headers["x-content-type-options"] == "nosniff"
    # An empty sub-path is the page the summary names.
    assert client.get(_url("run-page", "")).text == page.text


def test_the_report_is_a_download(client) -> None:
    report = client.get(_url("report", "run.parquet"))
    assert report.status_code == 200 and report.content == b"PAR1data"
    assert report.headers["content-disposition"].startswith("attachment")
    assert report.headers["content-type"] == "application/vnd.apache.parquet"
    assert report.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in report.headers["content-security-policy"]


def test_data_docs_run_sandboxed(client) -> None:
    page = client.get(_url("data-docs", "validations/v.html"))
    assert page.status_code == 200 and "validation" in page.text
    assert page.headers["content-security-policy"] == "sandbox allow-scripts"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get(_url("data-docs", "index.html")).status_code == 200


def test_the_run_page_s_relative_links_resolve(client) -> None:
    """The page links to its report and Data Docs relatively: from .../run-page/run.html."""
    report = client.get(_url("run-page", "run.parquet"))
    assert report.status_code == 200 and report.headers["content-disposition"].startswith("attachment")
    docs = client.get(_url("run-page", "run.data_docs/validations/v.html"))
    assert docs.status_code == 200 and docs.headers["content-security-policy"] == "sandbox allow-scripts"
    result = client.get(_url("run-page", "run.validation.json"))
    assert result.status_code == 200 and result.headers["content-type"].startswith("application/json")
    assert "sandbox" in result.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("kind", "subpath", "dag_id", "run_id", "map_index"),
    [
        ("run-page", "../dag_b/run.html", "dag_a", RUN, -1),  # .. into the other DAG's folder
        ("run-page", "%2e%2e/dag_b/run.html", "dag_a", RUN, -1),  # the same, percent-encoded
        ("run-page", "..%2fdag_b%2frun.html", "dag_a", RUN, -1),  # with an encoded separator
        ("run-page", "other_run.html", "dag_a", RUN, -1),  # same DAG, a file this summary does not name
        ("run-page", "escape.html", "dag_a", RUN, -1),  # a symlink to a file outside
        ("data-docs", "up/secret.txt", "dag_a", RUN, -1),  # through a symlinked folder outside
        ("run-page", "run.html%00.txt", "dag_a", RUN, -1),  # a NUL byte
        ("run-page", "/etc/passwd", "dag_a", RUN, -1),  # absolute
        ("run-page", "run.html", "dag_b", "no_such_run", -1),  # no summary
        ("run-page", "run.html", "dag_a", RUN, 0),  # another map index: no summary
        ("report", "run.html", "dag_b", RUN, -1),  # the summary names no report: no report link
        ("data-docs", "index.html", "dag_b", RUN, -1),  # nor Data Docs
        ("run-page", "run.html", "dag_a", "forged", -1),  # a summary naming dag_b's page
        ("report", "escape.html", "dag_a", "forged", -1),  # a summary naming a symlink out
        ("logs", "run.html", "dag_a", RUN, -1),  # no such kind
        ("run-page", "run.html", "~", RUN, -1),  # "every DAG" is no DAG of ours
        ("run-page", "run.html", "..", RUN, -1),
        ("run-page", "", "dag_a", RUN, -2),
        ("run-page", "run.data_docs", "dag_a", RUN, -1),  # a folder
    ],
)
def test_everything_else_is_not_found(client, kind, subpath, dag_id, run_id, map_index) -> None:
    answer = client.get(_url(kind, subpath, dag_id, run_id, map_index))
    assert answer.status_code == 404, (kind, subpath, dag_id, run_id, answer.status_code)
    assert "not yours" not in answer.text and "dag b" not in answer.text


def test_the_dag_folder_decides_not_the_summary(served) -> None:
    """resolve() directly: a file the summary names is served only from that DAG's folder."""
    from polyv_connector.airflow.served import resolve

    roots = [str(served["root"])]
    summary = served["summaries"][("dag_a", RUN, TASK, -1)]
    assert resolve(summary, "run-page", "run.html", "dag_a", roots) is not None
    assert resolve(summary, "run-page", "run.html", "dag_b", roots) is None  # the path says dag_b
    assert resolve(summary, "run-page", "run.html", "dag_a", []) is None  # no served folder
    assert resolve(summary, "run-page", "run.html", "dag_a", [str(served["a"])]) is None  # root is the DAG folder
    assert resolve(None, "run-page", "run.html", "dag_a", roots) is None


# ---- hostile names and payloads through the plugin -------------------------------------------------
@pytest.mark.parametrize("name", ["evil.html", "x.svg", "page.xhtml", "x.parquet.html"])
def test_a_report_named_like_a_page_is_still_a_download(tmp_path: Path, name: str) -> None:
    """Whatever an author named a report, the plugin serves it as a download that runs nothing."""
    from fastapi.testclient import TestClient

    from polyv_connector.airflow.plugin import create_app

    folder = tmp_path / "dag_a"
    folder.mkdir()
    (folder / name).write_text("<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>")
    summary = {"reportPath": str(folder / name)}
    app = create_app([str(tmp_path)], summaries=lambda *key: summary, authenticate=False)
    answer = TestClient(app).get(_url("report", name))
    assert answer.status_code == 200
    assert answer.headers["content-disposition"].startswith("attachment")
    assert not answer.headers["content-type"].startswith(("text/html", "image/svg", "application/xhtml"))
    assert "sandbox" in answer.headers["content-security-policy"]


@pytest.mark.parametrize(
    "viewer_id",
    [
        "<script>fetch('/api/v2/connections')</script>",
        '"><img src=x onerror=alert(1)>',
        "</code></td><script>alert(1)</script>",
        "<svg onload=alert(1)>",
        "javascript:alert(1)",
        "x" * 100_000,
    ],
)
def test_hostile_viewer_ids_on_a_served_run_page(tmp_path: Path, viewer_id: str) -> None:
    """A run page with hostile viewerIds and reasons, written by the real writer, served by the
    real app: escaped, cut, and under a CSP that would stop a script anyway."""
    from fastapi.testclient import TestClient

    from polyv_connector.airflow.plugin import create_app
    from polyv_connector.bounds import REASON_CHARS, VIEWER_ID_CHARS
    from polyv_connector.engine.result import SyncResult
    from polyv_connector.runpage import write_run_page

    result = SyncResult("r1", "app", {"failed": 1}, 1, 1, 1, 0.1, "x.parquet", False)
    result.counts_by_reason = {"polyv_rejected": 1}
    result.problems = [{"rowNumber": 1, "viewerId": viewer_id, "reasonCode": "polyv_rejected", "reason": viewer_id}]
    page = write_run_page(result, str(tmp_path / "dag_a" / "run.html"))
    summary = {"runPage": page}
    app = create_app([str(tmp_path)], summaries=lambda *key: summary, authenticate=False)
    answer = TestClient(app).get(_url("run-page", "run.html"))
    assert answer.status_code == 200
    body, csp = answer.text, answer.headers["content-security-policy"]
    assert "<script" not in body.lower() and "<img" not in body.lower() and "<svg onload" not in body.lower()
    assert "'none'" in csp and "sandbox" in csp
    import html

    assert html.escape(viewer_id[:20]) in body  # shown, as text
    # Cut: the page's size does not follow the data's.
    assert len(body) < 100_000 and "x" * (REASON_CHARS + 1) not in body
    if len(viewer_id) > VIEWER_ID_CHARS:
        assert "x" * (VIEWER_ID_CHARS - 1) + "…</code>" in body


def test_unauthenticated_requests_are_refused(served) -> None:
    """The app as the plugin mounts it asks for an Airflow login before anything else."""
    from airflow.api_fastapi.app import create_auth_manager
    from fastapi.testclient import TestClient

    from polyv_connector.airflow.plugin import create_app

    app = create_app([str(served["root"])], summaries=lambda *key: served["summaries"][("dag_a", RUN, TASK, -1)])
    app.state.auth_manager = create_auth_manager()
    for url in (_url("run-page", "run.html"), _url("run-page", "run.html") + "?dag_id=dag_a"):
        assert TestClient(app).get(url).status_code in (401, 403)


def test_link_urls(served) -> None:
    from polyv_connector.airflow.links import summary_link, task_file_url
    from polyv_connector.airflow.served import link_subpath

    class Key:
        dag_id, run_id, task_id, map_index = "dag_a", RUN, TASK, -1

    summary = served["summaries"][("dag_a", RUN, TASK, -1)]
    base = "/polyv/dags/dag_a/dagRuns/manual__2026-12-01T00%3A00%3A00%2B00%3A00/taskInstances/sync_viewer_fields/-1"
    assert summary_link(summary, "run-page", Key) == f"{base}/run-page/run.html"
    assert summary_link(summary, "report", Key) == f"{base}/report/run.parquet"
    assert summary_link(summary, "data-docs", Key) == f"{base}/data-docs/validations/v.html"
    assert summary_link(summary, "run-page", Key, "http://host:8080/airflow/") == f"/airflow{base}/run-page/run.html"
    assert summary_link({"reportPath": None}, "report", Key) == ""  # a table-only report: no link
    assert summary_link({"validation": None}, "data-docs", Key) == ""
    assert summary_link({"reportPath": "s3://bucket/k.parquet"}, "report", Key) == ""
    assert summary_link({"reportPath": "https://b.example/k.parquet"}, "report", Key) == "https://b.example/k.parquet"
    assert task_file_url("d", "r", "t", 2, "run-page", "a b/c.html") == (
        "/polyv/dags/d/dagRuns/r/taskInstances/t/2/run-page/a%20b/c.html"
    )
    assert link_subpath(summary, "data-docs") == "validations/v.html"


def test_links_reach_the_served_files(client, served) -> None:
    """Every link the extra links build answers 200 from the app."""
    from polyv_connector.airflow.links import URL_PREFIX, summary_link

    class Key:
        dag_id, run_id, task_id, map_index = "dag_a", RUN, TASK, -1

    summary = served["summaries"][("dag_a", RUN, TASK, -1)]
    for kind in ("run-page", "report", "data-docs"):
        url = summary_link(summary, kind, Key).removeprefix(URL_PREFIX)
        assert client.get(url).status_code == 200, (kind, url)


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


def test_served_folders_join_config_defaults_and_the_report_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """[polyv] served_dirs, the operator's default folders and the Variable polyv_report_dir,
    read per request: the report folder the DAGs write to cannot disagree with the plugin."""
    from polyv_connector.airflow.plugin import default_served_dirs, served_dirs_from_config

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    assert default_served_dirs() == [
        os.path.join(tmp_path, "polyv_reports"),
        os.path.join(tmp_path, "polyv_validation"),
    ]
    monkeypatch.setenv("AIRFLOW__POLYV__SERVED_DIRS", "/srv/a, /srv/b")
    monkeypatch.setenv("AIRFLOW_VAR_POLYV_REPORT_DIR", "/srv/reports")
    assert served_dirs_from_config() == ["/srv/a", "/srv/b", *default_served_dirs(), "/srv/reports"]
    monkeypatch.setenv("AIRFLOW_VAR_POLYV_REPORT_DIR", "/srv/other")  # no restart needed
    assert served_dirs_from_config()[-1] == "/srv/other"


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
