"""Fixtures of the end-to-end tests: a whole Airflow with a scheduler (``scheduler_stack``, from
:mod:`tests.stack`), whose task processes reach a POLYV simulator started here and the local
PostgreSQL warehouse through connections in their environment (``pg_schema``: tests/services.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from polyv_connector.simulator import PolyvSimulator
from tests.services import PG_URI

APP_ID = "e2e-app"
# Planted secret: long and recognisable, so finding it anywhere is meaningful.
PLANTED_SECRET = "PLANTED-e2e-s3cr3t-91d3a7"
FIELDS = ["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER"]


@pytest.fixture(scope="session")
def e2e_sim() -> Iterator[PolyvSimulator]:
    """One simulator for the session: it listens on 127.0.0.1, so the stack's tasks reach it."""
    with PolyvSimulator(apps={APP_ID: PLANTED_SECRET}, fields=FIELDS) as sim:
        yield sim


@pytest.fixture(scope="session")
def scheduler_stack_env(e2e_sim: PolyvSimulator) -> dict[str, str]:
    """The stack's connections: ``polyv_default`` to the simulator, ``polyv_warehouse`` to ``test``."""
    polyv = {"conn_type": "polyv", "login": APP_ID, "password": PLANTED_SECRET, "host": e2e_sim.base_url}
    return {"AIRFLOW_CONN_POLYV_DEFAULT": json.dumps(polyv), "AIRFLOW_CONN_POLYV_WAREHOUSE": PG_URI}


@pytest.fixture
def sim(e2e_sim: PolyvSimulator) -> PolyvSimulator:
    e2e_sim.reset()
    return e2e_sim
