"""Fixtures of the real-browser test: the scheduler stack of :mod:`tests.stack` (api-server,
scheduler, dag-processor), a POLYV simulator, a warehouse database holding the example DAGs'
default table, and headless Debian Chromium driven by Selenium through /usr/bin/chromedriver.

Nothing is downloaded: Selenium gets the system driver's path, so its driver manager stays idle.
Screenshots go to ``$POLYV_TEST_ARTIFACTS`` (default ``./test-artifacts/browser``, gitignored).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from polyv_connector.simulator import PolyvSimulator
from tests.stack import in_ci

APP_ID = "browser-app"
PLANTED_SECRET = "PLANTED-browser-s3cr3t-5e0c"
FIELDS = ["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER"]
PG = os.environ.get("POLYV_TEST_AIRFLOW_PG", "postgres@127.0.0.1:5432")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


def _pg_dsn(dbname: str) -> str:
    user, _, hostport = PG.partition("@")
    host, _, port = hostport.partition(":")
    return f"host={host} port={port or 5432} user={user} dbname={dbname}"


@pytest.fixture(scope="session")
def browser_sim() -> Iterator[PolyvSimulator]:
    with PolyvSimulator(apps={APP_ID: PLANTED_SECRET}, fields=FIELDS) as sim:
        yield sim


@pytest.fixture(scope="session")
def warehouse_db() -> Iterator[str]:
    """A fresh database with the DAGs' default source table ``polyv_viewer_attributes``: 48 rows,
    one an hour over the last two days (whatever interval a manual run gets, it finds some)."""
    import psycopg

    name = f"polyv_browser_{secrets.token_hex(5)}"
    try:
        with psycopg.connect(_pg_dsn("postgres"), autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    except psycopg.Error as exc:
        if in_ci():
            pytest.fail(f"PostgreSQL is required in CI for the browser test ({PG}): {exc}")
        pytest.skip(f"PostgreSQL not reachable ({PG}): {exc}")
    try:
        with psycopg.connect(_pg_dsn(name), autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE polyv_viewer_attributes "
                "(viewer_id text, custom_field_id text, custom_field_value text, updated_at timestamptz)"
            )
            conn.execute(
                "INSERT INTO polyv_viewer_attributes SELECT 'viewer-' || i, "
                "CASE WHEN i % 2 = 0 THEN 'PAY_STATUS' ELSE 'VIP_LEVEL' END, 'value-' || i, "
                "now() - (i || ' hours')::interval FROM generate_series(0, 47) i"
            )
        user, _, hostport = PG.partition("@")
        yield f"postgresql://{user}@{hostport}/{name}"
    finally:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(_pg_dsn("postgres"), autocommit=True) as conn,
        ):
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def _plugin_folder() -> Iterator[str | None]:
    """A checkout not (re)installed since the plugin's entry point was added has no
    ``airflow.plugins`` entry for it: load it from a plugins folder instead (not both: Airflow
    would refuse the second registration of the name)."""
    names = {ep.name for ep in importlib.metadata.entry_points(group="airflow.plugins")}
    if "polyv" in names:
        yield None
        return
    folder = tempfile.mkdtemp(prefix="polyv-browser-plugins-")
    Path(folder, "polyv_plugin.py").write_text("from polyv_connector.airflow.plugin import PolyvPlugin  # noqa: F401\n")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def scheduler_stack_env(browser_sim: PolyvSimulator, warehouse_db: str, _plugin_folder: str | None) -> dict[str, str]:
    """The stack's connections, an all-admin UI (no login form to fill), connection testing on."""
    polyv = {"conn_type": "polyv", "login": APP_ID, "password": PLANTED_SECRET, "host": browser_sim.base_url}
    env = {
        "AIRFLOW_CONN_POLYV_DEFAULT": json.dumps(polyv),
        "AIRFLOW_CONN_POLYV_WAREHOUSE": warehouse_db,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
    }
    if _plugin_folder:
        env["AIRFLOW__CORE__PLUGINS_FOLDER"] = _plugin_folder
    return env


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get("POLYV_TEST_ARTIFACTS") or Path.cwd() / "test-artifacts" / "browser")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian Chromium through the system chromedriver (never a downloaded one); one per
    module, so it does not idle on a shared core through the rest of the session."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        message = f"{' and '.join(missing)} missing: apt-get install -y chromium chromium-driver"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
