"""The test stacks' users who may read one DAG each, and the auth manager that enforces it
(tests/auth_manager.py). Imports nothing: tests/stack.py reads it before Airflow is imported."""

from __future__ import annotations

#: user name -> the one DAG that user may read (GET only; nothing else of any DAG).
DAG_READERS: dict[str, str] = {
    "parquet_reader": "polyv_viewer_sync_parquet",
    "warehouse_reader": "polyv_viewer_sync_warehouse",
}
#: ``[core] auth_manager`` of the test stacks.
AUTH_MANAGER = "tests.auth_manager.OneDagAuthManager"


def stack_users() -> str:
    """``[core] simple_auth_manager_users``: ``admin`` and the one-DAG readers (as viewers)."""
    return ",".join(["admin:admin", *(f"{user}:viewer" for user in DAG_READERS)])
