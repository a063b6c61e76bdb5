"""Shared constants and helpers of the Airflow tests; importing it sets the Airflow environment."""

from __future__ import annotations

import json
from typing import Any

# The Airflow stack (AIRFLOW_HOME, environment, api-server fixtures) is shared by every test
# folder: tests/stack.py. Names re-exported here for the tests of this folder.
from tests.services import PG_DSN, PG_URI, in_ci, pg_exec, pg_rows
from tests.stack import (
    AIRFLOW_ENV,
    AIRFLOW_HOME,
    BIN,
    DAGS,
    REPO,
    free_port,
    subprocess_env,
    use_airflow_env,
)

__all__ = [
    "AIRFLOW_ENV",
    "AIRFLOW_HOME",
    "APP_ID",
    "BIN",
    "DAGS",
    "FIELDS",
    "PG_DSN",
    "PG_URI",
    "PLANTED_SECRET",
    "REPO",
    "SAMPLE",
    "conn_json",
    "free_port",
    "in_ci",
    "pg_exec",
    "pg_rows",
    "subprocess_env",
]

SAMPLE = REPO / "polyv_connector" / "data" / "sample_viewers.parquet"

APP_ID = "af-test-app"
# Planted secret: long and recognisable, so finding it anywhere is meaningful.
PLANTED_SECRET = "PLANTED-airflow-s3cr3t-4c7e91"
FIELDS = ["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER"]

use_airflow_env()


def conn_json(host: str, secret: str = PLANTED_SECRET, login: str = APP_ID, **extra: Any) -> str:
    """A ``polyv`` connection as users write it in ``AIRFLOW_CONN_<ID>``."""
    value: dict[str, Any] = {"conn_type": "polyv", "login": login, "password": secret, "host": host}
    if extra:
        value["extra"] = extra
    return json.dumps(value)
