"""Shared constants and helpers of the Airflow tests; importing it sets the Airflow environment."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
BIN = Path(sys.executable).parent
SAMPLE = REPO / "polyv_connector" / "data" / "sample_viewers.parquet"

APP_ID = "af-test-app"
# Planted secret: long and recognisable, so finding it anywhere is meaningful.
PLANTED_SECRET = "PLANTED-airflow-s3cr3t-4c7e91"
FIELDS = ["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER"]
PG_DSN = os.environ.get("POLYV_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")
PG_URI = os.environ.get("POLYV_TEST_PG_URI", "postgresql://postgres@127.0.0.1:5432/test")

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="polyv-airflow-tests-"))
AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    # Never let a caller's setting point the tests at a real metadata database.
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME}/airflow.db",
    # One LocalExecutor worker: `dags test --use-executor` forks `parallelism` workers, and
    # with many of them its shutdown can miss a worker and hang.
    "AIRFLOW__CORE__PARALLELISM": "1",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
}
if "airflow" in sys.modules:  # pragma: no cover - only if another conftest imported it first
    print(
        "warning: airflow was imported before tests/airflow/support.py; in-process tests use its configuration",
        file=sys.stderr,
    )
os.environ.update(AIRFLOW_ENV)


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of an ``airflow`` subprocess: ours, the venv's bin first, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(AIRFLOW_ENV)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def conn_json(host: str, secret: str = PLANTED_SECRET, login: str = APP_ID, **extra: Any) -> str:
    """A ``polyv`` connection as users write it in ``AIRFLOW_CONN_<ID>``."""
    value: dict[str, Any] = {"conn_type": "polyv", "login": login, "password": secret, "host": host}
    if extra:
        value["extra"] = extra
    return json.dumps(value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_rows(sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(PG_DSN) as conn:
        return conn.execute(sql, params or None).fetchall()


def pg_exec(sql: str, params: tuple = ()) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql, params or None)
