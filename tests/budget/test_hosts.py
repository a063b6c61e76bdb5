"""When the operator warns that the budget is not shared across hosts (pure decision)."""

from __future__ import annotations

import pytest

from polyv_connector.budget.hosts import executor_names, spreads_over_hosts, unshared_budget_warning

CELERY_PATH = "airflow.providers.celery.executors.celery_executor.CeleryExecutor"


def test_executor_names_read_every_form_of_the_setting() -> None:
    assert executor_names("CeleryExecutor") == ["CeleryExecutor"]
    assert executor_names(f" LocalExecutor , my_celery:{CELERY_PATH} ") == ["LocalExecutor", "CeleryExecutor"]
    assert executor_names("") == []


@pytest.mark.parametrize(
    ("executor", "spreads"),
    [
        ("LocalExecutor", False),
        ("SequentialExecutor", False),
        ("airflow.executors.local_executor.LocalExecutor", False),
        ("CeleryExecutor", True),
        ("KubernetesExecutor", True),
        ("LocalExecutor,KubernetesExecutor", True),  # some tasks may go to pods
        ("my.company.EdgeExecutor", True),  # unknown: assume it spreads
    ],
)
def test_which_executors_spread_tasks_over_hosts(executor: str, spreads: bool) -> None:
    assert spreads_over_hosts(executor) is spreads


SPREADING = ["CeleryExecutor", CELERY_PATH, "KubernetesExecutor", "LocalExecutor,CeleryExecutor"]


@pytest.mark.parametrize("budget_url", [None, "", "file:///var/run/polyv", "sqlite:///tmp/b.sqlite3"])
@pytest.mark.parametrize("executor", SPREADING)
def test_a_per_host_budget_under_a_spreading_executor_warns_what_to_set(executor: str, budget_url: str | None) -> None:
    warning = unshared_budget_warning(executor, budget_url)
    assert warning is not None
    assert "POLYV_BUDGET_URL=redis://" in warning and "budget_conn_id" in warning
    assert ("Celery" in warning) or ("Kubernetes" in warning)
    assert ("machine-wide" in warning) == (not budget_url)


@pytest.mark.parametrize("budget_url", ["redis://127.0.0.1:6379/3", "rediss://:PLANTED-pw@redis.internal:6380/0"])
def test_a_redis_budget_is_shared_and_never_warns(budget_url: str) -> None:
    assert unshared_budget_warning("CeleryExecutor", budget_url) is None


@pytest.mark.parametrize("executor", ["LocalExecutor", "SequentialExecutor", ""])
def test_a_single_host_executor_never_warns(executor: str) -> None:
    assert unshared_budget_warning(executor, None) is None


def test_the_warning_never_repeats_the_url() -> None:
    warning = unshared_budget_warning("CeleryExecutor", "file:///srv/PLANTED-path")
    assert warning is not None and "PLANTED" not in warning and "file URL" in warning
