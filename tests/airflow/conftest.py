"""Fixtures for the Airflow provider tests: a throwaway AIRFLOW_HOME, real Airflow, real PostgreSQL.

The Airflow environment is set by :mod:`tests.airflow.support`, imported here first, before
any test module imports ``airflow`` (its configuration is read once, at first import). DAG
runs go through ``airflow dags test --use-executor`` in a subprocess, against an ``airflow
api-server`` started once per session: that is the path a real worker takes (supervisor,
secret masking, task log files under ``AIRFLOW_HOME/logs``), at about 3 s per run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.airflow.support import (
    AIRFLOW_HOME,
    APP_ID,
    BIN,
    FIELDS,
    PG_DSN,
    PG_URI,
    PLANTED_SECRET,
    conn_json,
    free_port,
    in_ci,
    subprocess_env,
)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get("POLYV_KEEP_AIRFLOW_HOME"):
        shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


# ---- Airflow ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """``airflow db migrate`` once per session (SQLite under the throwaway AIRFLOW_HOME)."""
    proc = subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=subprocess_env(), capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return AIRFLOW_HOME / "airflow.db"


@pytest.fixture(scope="session")
def api_server(airflow_db: Path) -> Iterator[str]:
    """An ``airflow api-server`` for the executor's task supervisor; its execution API URL."""
    port = free_port()
    log = (AIRFLOW_HOME / "api-server.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "airflow"), "api-server", "--port", str(port)],
        env=subprocess_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # its own group: we stop it and its workers
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/version", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "airflow api-server did not start: " + (AIRFLOW_HOME / "api-server.log").read_text()[-3000:]
                    ) from None
                time.sleep(0.3)
        yield f"{url}/execution/"
    finally:
        _stop_group(proc)
        log.close()


def _stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@dataclass
class DagRunResult:
    """What one ``airflow dags test`` left behind, read from the metadata DB and log files."""

    returncode: int
    output: str
    state: str | None
    run_id: str | None
    data_interval: tuple[str, str] | None
    xcom: Any
    task_logs: list[Path]

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.task_logs)


@pytest.fixture(scope="session")
def run_dag(api_server: str, airflow_db: Path):
    """Run a DAG like a worker would: ``airflow dags test <dag> <date> -c <conf> --use-executor``."""

    def run(
        dag_id: str,
        logical_date: str,
        conf: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 150,
    ) -> DagRunResult:
        cmd = [str(BIN / "airflow"), "dags", "test", dag_id, logical_date, "--use-executor"]
        if conf:
            cmd += ["-c", json.dumps(conf)]
        full_env = subprocess_env(AIRFLOW__CORE__EXECUTION_API_SERVER_URL=api_server, **(env or {}))
        proc = subprocess.Popen(
            cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            output, _ = proc.communicate()
            pytest.fail(f"airflow dags test {dag_id} timed out:\n{output[-4000:]}")
        return _read_run(dag_id, logical_date, proc.returncode, output)

    return run


def _read_run(dag_id: str, logical_date: str, returncode: int, output: str) -> DagRunResult:
    db = sqlite3.connect(AIRFLOW_HOME / "airflow.db")
    try:
        row = db.execute(
            "SELECT run_id, state, data_interval_start, data_interval_end FROM dag_run "
            "WHERE dag_id = ? AND logical_date LIKE ? ORDER BY id DESC LIMIT 1",
            (dag_id, f"{logical_date}%"),
        ).fetchone()
        xcom = None
        if row:
            value = db.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value'", (dag_id, row[0])
            ).fetchone()
            if value:
                xcom = json.loads(value[0]) if isinstance(value[0], str) else value[0]
    finally:
        db.close()
    logs = sorted((AIRFLOW_HOME / "logs" / f"dag_id={dag_id}").glob(f"run_id={row[0]}/**/*.log")) if row else []
    return DagRunResult(
        returncode,
        output,
        row[1] if row else None,
        row[0] if row else None,
        (row[2], row[3]) if row else None,
        xcom,
        logs,
    )


# ---- the POLYV simulator ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def _session_sim():
    from polyv_connector.simulator import PolyvSimulator

    with PolyvSimulator(apps={APP_ID: PLANTED_SECRET}, fields=FIELDS) as sim:
        yield sim


@pytest.fixture
def sim(_session_sim):
    """The simulator, emptied for this test (shared by the session: starting one is cheap, but
    Airflow subprocesses only need its URL)."""
    _session_sim.reset()
    return _session_sim


@pytest.fixture
def polyv_env(sim, monkeypatch: pytest.MonkeyPatch) -> str:
    """``AIRFLOW_CONN_POLYV_DEFAULT`` for in-process tests; returns the connection JSON."""
    value = conn_json(sim.base_url)
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_DEFAULT", value)
    return value


# ---- PostgreSQL -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_available() -> bool:
    import psycopg

    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        if in_ci():
            pytest.fail(f"PostgreSQL is required in CI and not reachable at {PG_DSN!r}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_DSN!r}: {exc}")
    return True


@pytest.fixture
def pg_schema(pg_available: bool) -> Iterator[str]:
    """A throwaway schema in database ``test``, dropped afterwards."""
    import psycopg

    name = f"polyv_it_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def pg_warehouse_env(pg_available: bool, monkeypatch: pytest.MonkeyPatch) -> str:
    """``AIRFLOW_CONN_POLYV_WAREHOUSE`` (a postgresql:// URI) for in-process tests."""
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_WAREHOUSE", PG_URI)
    return PG_URI
