"""The plugin in a running Airflow whose auth manager grants per DAG: a user who may read one
DAG gets its run page and report, and 403 for another DAG's, with or without a ``?dag_id=``
naming the DAG they may read (the hole of /polyv/files, fixed). The files come from the task
instance's summary; what is served runs no script; a trigger cannot name a page as its report.

One Parquet DAG run (the bundled sample into the simulator), one refused trigger; the stack's
users are those of tests/dag_readers.py.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

import pytest

from tests.dag_readers import DAG_READERS

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(600)]

DAG_ID = "polyv_viewer_sync_parquet"
OTHER_DAG = "polyv_viewer_sync_warehouse"
TASK_ID = "sync_viewer_fields"
OWN_READER = next(user for user, dag in DAG_READERS.items() if dag == DAG_ID)
OTHER_READER = next(user for user, dag in DAG_READERS.items() if dag == OTHER_DAG)


def _request(url: str, token: str = "", body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one request; errors are answers too."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        method="POST" if body is not None else "GET",
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def _token(stack: Any, user: str) -> str:
    passwords = json.loads((stack.home / "simple_auth_manager_passwords.json.generated").read_text())
    status, _, body = _request(f"{stack.api_url}/auth/token", body={"username": user, "password": passwords[user]})
    assert status in (200, 201), (user, status, body[:300])
    token: str = json.loads(body)["access_token"]
    return token


def _finished(stack: Any, run_id: str) -> str | None:
    state = {r["run_id"]: r["state"] for r in stack.runs(DAG_ID)}.get(run_id)
    return state if state in ("success", "failed") else None


def test_a_one_dag_reader_reads_its_dag_s_files_and_nothing_of_another_dag(scheduler_stack: Any, sim: Any) -> None:
    stack, api = scheduler_stack, scheduler_stack.api_url
    stack.wait_for_dag(DAG_ID)
    stack.airflow("dags", "unpause", DAG_ID)
    run_id = f"manual__access_{secrets.token_hex(4)}"
    hostile = f"manual__evil_{secrets.token_hex(4)}"
    stack.airflow("dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", "{}", timeout=60)
    stack.airflow("dags", "trigger", DAG_ID, "--run-id", hostile, "--conf", '{"report_path": "evil.html"}', timeout=60)
    for rid in (run_id, hostile):
        stack.wait_until(f"run {rid}", lambda rid=rid: _finished(stack, rid), timeout=240, interval=1)
    assert _finished(stack, run_id) == "success", stack.task_log_text(DAG_ID, run_id)[-4000:]
    # A page as the report name: refused before anything is sent, nothing written.
    assert _finished(stack, hostile) == "failed"
    assert "must end in .parquet" in stack.task_log_text(DAG_ID, hostile)
    assert not list((stack.home / "polyv_reports").rglob("evil.html*"))

    summary = stack.xcom(DAG_ID, run_id, TASK_ID)
    folder = stack.home / "polyv_reports" / DAG_ID
    assert summary["reportPath"] == str(folder / f"{run_id}.parquet") and summary["runPage"].startswith(str(folder))

    admin, own, other = (_token(stack, user) for user in ("admin", OWN_READER, OTHER_READER))
    links_path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{TASK_ID}/links"
    status, _, body = _request(api + links_path, admin)
    assert status == 200, body[:300]
    links = json.loads(body)["extra_links"]
    run_page, report = links["POLYV run page"], links["POLYV report"]
    base = f"/polyv/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{TASK_ID}/-1"
    assert run_page == f"{base}/run-page/{run_id}.html" and report == f"{base}/report/{run_id}.parquet"
    assert not links.get("POLYV Data Docs")  # no suite: no link (and 404 below)

    # The reader of this DAG: its run page (no script can run) and its report (a download).
    status, headers, body = _request(api + run_page, own)
    assert status == 200 and b'data-count="sent"' in body, (status, body[:300])
    assert headers["content-security-policy"] == "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
    assert headers["x-content-type-options"] == "nosniff"
    status, headers, body = _request(api + report, own)
    assert status == 200 and body.startswith(b"PAR1") and headers["content-disposition"].startswith("attachment")
    assert _request(api + f"{base}/data-docs/index.html", own)[0] == 404

    # The reader of another DAG: 403 for this DAG's files, whatever the query string says;
    # Airflow's own route agrees.
    for url in (run_page, report):
        for query in ("", f"?dag_id={OTHER_DAG}", f"?dag_id={DAG_ID}"):
            status, _, body = _request(api + url + query, other)
            assert status == 403, (url + query, status)
            assert b"PAR1" not in body and b"data-count" not in body
    assert _request(api + links_path, other)[0] == 403
    # Nor through "~" ("every DAG" to Airflow's access check) or without a login.
    assert _request(api + run_page.replace(f"/dags/{DAG_ID}/", "/dags/~/"), other)[0] in (403, 404)
    assert _request(api + run_page)[0] in (401, 403)
    # The admin reads everything.
    assert _request(api + run_page, admin)[0] == 200
