"""Shared fixtures: the simulator, credentials, and Parquet inputs written through pyarrow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polyv_connector.config import Credentials, Secret, SendOptions
from polyv_connector.simulator import PolyvSimulator
from tests.services import in_ci

__all__ = ["in_ci"]

APP_ID = "test-app"
# Planted secret: long and recognisable, so a scan for it in outputs is meaningful.
APP_SECRET = "PLANTED-s3cr3t-7f1c9a2b"
# The shared Airflow test stack (airflow_db, api_server, run_dag): one per session, for any folder.
# The test services (PostgreSQL, MariaDB, Redis: DSNs, availability, throwaway schemas) too.
pytest_plugins = ["tests.stack", "tests.services"]

# `make test` runs the suite on pytest-xdist workers with `--dist loadgroup`. A folder whose tests
# share one expensive session-scoped stack keeps them on one worker, so the stack starts once:
# the scheduler stack of tests/e2e, the one of tests/browser (another environment, so another
# stack: tests/stack.py restarts it when the environment changes) and the Celery fleet.
XDIST_GROUPS = {"e2e": "scheduler-stack-e2e", "browser": "scheduler-stack-browser", "distributed": "celery-fleet"}
TESTS = Path(__file__).resolve().parent


# tryfirst: xdist's own hook reads the xdist_group marks (it suffixes the node ids with the group).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        parts = item.path.resolve().relative_to(TESTS).parts
        group = XDIST_GROUPS.get(parts[0]) if len(parts) > 1 else None
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


FIELDS = ["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER"]
# Send options for tests: near-zero backoff, a rate the simulator accepts, a short timeout.
FAST = SendOptions(backoff_base_s=0.001, backoff_max_s=0.01, max_rps=140, timeout_s=5)


@pytest.fixture
def sim() -> Iterator[PolyvSimulator]:
    with PolyvSimulator(apps={APP_ID: APP_SECRET}, fields=FIELDS) as s:
        yield s


@pytest.fixture
def creds(sim: PolyvSimulator) -> Credentials:
    return Credentials(APP_ID, Secret(APP_SECRET), sim.base_url)


@pytest.fixture
def env(sim: PolyvSimulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"POLYV_APP_ID": APP_ID, "POLYV_APP_SECRET": APP_SECRET, "POLYV_API_BASE_URL": sim.base_url}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def write_items(path: Path, rows: list[tuple[str | None, str | None, str | None]]) -> Path:
    """Write long-form rows (viewerId, customFieldId, customFieldValue) to a Parquet file."""
    table = pa.table(
        {
            "viewerId": pa.array([r[0] for r in rows], pa.string()),
            "customFieldId": pa.array([r[1] for r in rows], pa.string()),
            "customFieldValue": pa.array([r[2] for r in rows], pa.string()),
        }
    )
    pq.write_table(table, path)
    return path


def read_report(path: Path | str) -> list[dict]:
    return pq.read_table(path).to_pylist()
