"""A data engineer's first hour, in a real browser: headless Debian Chromium against a whole
Airflow (api-server, scheduler, dag-processor) and the POLYV simulator.

Each example DAG is triggered from its UI trigger form *with its defaults* (the form must accept
them: no param the form treats as required), must succeed, and its run page must open through
the task's "POLYV run page" extra link, served by the plugin from the API server, showing the
run's counts. The connections list's Test button is tried on a stored connection too.
Screenshots of every step go to the test-artifacts folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest

from tests.browser.conftest import APP_ID, PLANTED_SECRET

pytestmark = [
    pytest.mark.browser,
    pytest.mark.airflow,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.e2e,
    # The stack's start (about a minute on a busy machine) counts against the first test.
    pytest.mark.timeout(600),
]

DAGS = {
    "polyv_viewer_sync_parquet": "sync_viewer_fields",
    "polyv_viewer_sync_warehouse": "sync_viewer_fields",
    "polyv_viewer_backfill": "resync_viewer_fields",
    # Mapped over its partitions: the page of partition 0 is checked.
    "polyv_viewer_sync_partitioned": "sync_partition",
}
MAPPED = {"polyv_viewer_sync_partitioned"}
WAIT_S = 60


def _wait(driver: Any, what: str, condition: Any, timeout: float = WAIT_S) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.3).until(condition)
    except TimeoutException:
        pytest.fail(f"timed out after {timeout} s waiting for {what} at {driver.current_url}")


def _shot(driver: Any, artifacts: Path, name: str) -> None:
    driver.save_screenshot(str(artifacts / f"{name}.png"))


def _trigger_with_defaults(driver: Any, api: str, dag_id: str, artifacts: Path) -> str:
    """Open the DAG, open its trigger form, submit it untouched; the new run's id."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver.get(f"{api}/dags/{dag_id}")
    trigger = (By.CSS_SELECTOR, "[data-testid='trigger-dag-button']")
    _wait(driver, "the Trigger button", ec.element_to_be_clickable(trigger)).click()
    submit = _wait(
        driver,
        "the trigger form's Trigger button to be enabled with the defaults",
        ec.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid='trigger-dag-submit']")),
    )
    _shot(driver, artifacts, f"{dag_id}-1-trigger-form")
    submit.click()
    _wait(driver, "the new run's page", lambda d: "/runs/" in d.current_url)
    return unquote(driver.current_url.split("/runs/", 1)[1].split("/", 1)[0])


def _open_run_page(driver: Any, api: str, dag_id: str, run_id: str, task_id: str, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    mapped = "/mapped/0" if dag_id in MAPPED else ""
    driver.get(f"{api}/dags/{dag_id}/runs/{quote(run_id, safe='')}/tasks/{task_id}{mapped}/details")
    link = _wait(driver, "the run page's extra link", ec.element_to_be_clickable((By.LINK_TEXT, "POLYV run page")))
    _shot(driver, artifacts, f"{dag_id}-2-task-extra-links")
    link.click()
    _wait(driver, "the run page", lambda d: d.title.startswith("POLYV sync"))
    _shot(driver, artifacts, f"{dag_id}-3-run-page")
    driver.set_window_size(1400, 2400)
    _shot(driver, artifacts, f"{dag_id}-3-run-page-full")
    driver.set_window_size(1400, 1000)


def _summary(stack: Any, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    """The task's XCom summary (of map index 0 for a mapped task)."""
    rows = stack.sql(
        "SELECT value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s AND key = 'return_value' "
        "AND map_index IN (-1, 0)",
        (dag_id, run_id, task_id),
    )
    assert rows, f"no summary XCom for {dag_id} {run_id} {task_id}"
    value = rows[0][0]
    return json.loads(value) if isinstance(value, str) else value


def _shown_counts(driver: Any) -> dict[str, int]:
    from selenium.webdriver.common.by import By

    cards = driver.find_elements(By.CSS_SELECTOR, "#counts .card[data-count]")
    return {c.get_attribute("data-count"): int(c.find_element(By.TAG_NAME, "b").text.replace(",", "")) for c in cards}


def test_every_example_dag_triggers_from_the_ui_and_shows_its_run_page(
    scheduler_stack: Any, browser_sim: Any, browser: Any, artifacts: Path
) -> None:
    from selenium.webdriver.common.by import By

    started = time.monotonic()
    stack, api = scheduler_stack, scheduler_stack.api_url
    for dag_id in DAGS:
        stack.wait_for_dag(dag_id)
        stack.airflow("dags", "unpause", dag_id)

    # Trigger them all first (the stack runs three tasks at once), then check each.
    runs = {dag_id: _trigger_with_defaults(browser, api, dag_id, artifacts) for dag_id in DAGS}

    for dag_id, run_id in runs.items():
        task_id = DAGS[dag_id]

        def finished(dag_id: str = dag_id, run_id: str = run_id) -> str | None:
            state = {r["run_id"]: r["state"] for r in stack.runs(dag_id)}.get(run_id)
            return state if state in ("success", "failed") else None

        state = stack.wait_until(f"{dag_id} run {run_id} to finish", finished, timeout=150, interval=1)
        assert state == "success", f"{dag_id} {run_id}: {state}\n{stack.task_log_text(dag_id, run_id)[-4000:]}"
        summary = _summary(stack, dag_id, run_id, task_id)
        assert summary["ok"] is True and (summary["items"] > 0 or dag_id in MAPPED), summary
        assert summary["airflowRunId"] == run_id
        assert Path(summary["runPage"]).is_absolute() and Path(summary["runPage"]).is_file()
        if dag_id in MAPPED:
            assert summary["runPage"].endswith(f"__{task_id}_0.html")
        assert str(summary["runPage"]).startswith(str(stack.home / "polyv_reports" / dag_id))

        _open_run_page(browser, api, dag_id, run_id, task_id, artifacts)
        # Served per task instance (the plugin checks this DAG's permission, finds the file
        # in this task instance's summary).
        ti_path = f"{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/{0 if dag_id in MAPPED else -1}"
        assert browser.current_url.startswith(f"{api}/polyv/dags/{ti_path}/run-page/"), browser.current_url
        shown = _shown_counts(browser)
        assert shown["items"] == summary["items"]
        for status, n in summary["counts"].items():
            if n or status in ("sent", "rejected", "failed"):
                assert shown[status] == n, (dag_id, status, shown)
        assert shown["sent"] > 0 or dag_id in MAPPED  # a partition may hold none of the rows
        assert run_id in browser.find_element(By.TAG_NAME, "body").text  # the Airflow run, named
        assert PLANTED_SECRET not in browser.page_source
        # The page asked for nothing beyond itself (no CDN, no script): one navigation entry.
        resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert resources == [], resources

    stored = {(v, f) for (app, v, f) in browser_sim.values if app == APP_ID}
    assert len(stored) >= 400  # the bundled sample, plus the warehouse rows
    print(f"browser test: three DAGs triggered and checked in {time.monotonic() - started:.0f} s")


def test_connection_test_button(scheduler_stack: Any, browser_sim: Any, browser: Any, artifacts: Path) -> None:
    """Airflow 3.3.2's Test button posts ``port: 0``, which its API server takes for "a different
    endpoint" than a stored connection without a port (Bad Request). The plugin's middleware
    leaves it out for a ``polyv`` connection: the button works with or without a stored port."""
    import urllib.request

    from selenium.webdriver.common.by import By

    # Through the REST API, as the UI's form saves them (``airflow connections add`` would store
    # port 0 as no port). The all-admin stack needs no token.
    for conn_id, port in (("polyv_ui_no_port", None), ("polyv_ui_port_0", 0)):
        body = {
            "connection_id": conn_id,
            "conn_type": "polyv",
            "login": APP_ID,
            "password": PLANTED_SECRET,
            "host": browser_sim.base_url,
            "port": port,
        }
        request = urllib.request.Request(
            f"{scheduler_stack.api_url}/api/v2/connections",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert json.loads(answer.read())["port"] == port

    def test_button(driver: Any, conn_id: str) -> Any:
        """The Test button of ``conn_id``'s row (None while the list is still rendering)."""
        from selenium.common.exceptions import StaleElementReferenceException

        try:
            for row in driver.find_elements(By.TAG_NAME, "tr"):
                if conn_id not in row.text:
                    continue
                for button in row.find_elements(By.TAG_NAME, "button"):
                    label = " ".join(str(button.get_attribute(a) or "") for a in ("aria-label", "title"))
                    if "test" in f"{label} {button.text}".lower():
                        return button
        except StaleElementReferenceException:
            return None
        return None

    messages = {}
    for conn_id in ("polyv_ui_no_port", "polyv_ui_port_0"):
        browser.get(f"{scheduler_stack.api_url}/connections")
        _wait(browser, f"the Test button of {conn_id}", lambda d, c=conn_id: test_button(d, c))
        time.sleep(1)  # the list re-renders once its data arrives
        _wait(browser, f"the Test button of {conn_id}", lambda d, c=conn_id: test_button(d, c)).click()
        time.sleep(3)
        _shot(browser, artifacts, f"connection-test-{conn_id}")
        messages[conn_id] = browser.find_element(By.TAG_NAME, "body").text
    for conn_id, text in messages.items():
        assert "Test Connection Failed" not in text and "Bad Request" not in text, (conn_id, text[-300:])
    # What the button got back: the provider's message (the same request, read directly).
    ui_body = {
        "connection_id": "polyv_ui_no_port",
        "conn_type": "polyv",
        "login": APP_ID,
        "password": "",
        "host": browser_sim.base_url,
        "port": 0,
        "schema": "",
        "extra": "{}",
        "description": "",
    }
    request = urllib.request.Request(
        f"{scheduler_stack.api_url}/api/v2/connections/test",
        data=json.dumps(ui_body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        result = json.loads(answer.read())
    expected = f"Connected to {browser_sim.base_url} as appId {APP_ID}: 4 custom field(s)"
    assert result == {"status": True, "message": expected}
