"""Fixtures for the Airflow provider tests: the simulator and real PostgreSQL.

Real Airflow (a throwaway AIRFLOW_HOME, ``airflow_db``, ``api_server``, ``run_dag``) comes from
the shared stack, :mod:`tests.stack`; its environment is set by :mod:`tests.airflow.support`,
imported here first, before any test module imports ``airflow`` (its configuration is read
once, at first import).
"""

from __future__ import annotations

import pytest

from tests.airflow.support import (
    APP_ID,
    FIELDS,
    PG_URI,
    PLANTED_SECRET,
    conn_json,
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


# ---- PostgreSQL (pg_available, pg_schema: tests/services.py) -----------------------------------
@pytest.fixture
def pg_warehouse_env(pg_available: bool, monkeypatch: pytest.MonkeyPatch) -> str:
    """``AIRFLOW_CONN_POLYV_WAREHOUSE`` (a postgresql:// URI) for in-process tests."""
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_WAREHOUSE", PG_URI)
    return PG_URI
