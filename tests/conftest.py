"""Shared fixtures: the simulator, credentials, and Parquet inputs written through pyarrow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` with the folders of :data:`XDIST_GROUPS` as groups. Not through
    ``xdist_group`` marks: pytest-xdist 3.8 groups marked tests by suffixing ``item._nodeid``,
    which pytest 9.2 no longer reads, so marked tests were spread over the workers."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class FolderGroups(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            parts = nodeid.split("::", 1)[0].split("/")
            if len(parts) > 2 and parts[0] == "tests" and parts[1] in XDIST_GROUPS:
                return XDIST_GROUPS[parts[1]]
            return super()._split_scope(nodeid)

    return FolderGroups(config, log)


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
