"""Whether a run's budget is shared by every host its sibling tasks may run on: pure logic.

The machine-wide budget (a SQLite file) is shared by the processes of one host only. Under an
executor that spreads tasks over several hosts (Celery, Kubernetes, ...), the mapped tasks of
one DAG run may land on different workers that leave through the same egress IP: each host
then keeps its own budget, and together they may exceed POLYV's per-IP limit. The operator
asks :func:`unshared_budget_warning` with Airflow's ``[core] executor`` setting and the budget
URL in effect, and logs what it returns.
"""

from __future__ import annotations

from urllib.parse import urlsplit

#: Executors whose tasks all run on the scheduler's host.
SINGLE_HOST_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor", "DebugExecutor"})
#: Budget URL schemes that every host reaches (see :func:`polyv_connector.budget.open_store`).
SHARED_SCHEMES = frozenset({"redis", "rediss"})


def executor_names(setting: str) -> list[str]:
    """The executor class names in Airflow's ``[core] executor`` setting.

    It is a comma-separated list (Airflow 2.10+ runs several executors at once); each entry is a
    class name (``CeleryExecutor``), a module path (``airflow.providers.celery.executors.
    celery_executor.CeleryExecutor``) or ``alias:module.path.Class``.
    """
    names = []
    for entry in setting.split(","):
        path = entry.strip().rpartition(":")[2].strip()
        if path:
            names.append(path.rpartition(".")[2])
    return names


def spreads_over_hosts(executor_setting: str) -> bool:
    """Whether any configured executor may run a task on another host than its siblings.

    Unknown executors count as spreading: a warning too many is cheaper than a blocked IP.
    """
    return any(name not in SINGLE_HOST_EXECUTORS for name in executor_names(executor_setting))


def is_shared_across_hosts(budget_url: str | None) -> bool:
    """Whether the budget at ``budget_url`` (``None``: machine-wide) is one for every host."""
    if not budget_url:
        return False
    try:
        return urlsplit(budget_url).scheme.lower() in SHARED_SCHEMES
    except ValueError:
        return False


def unshared_budget_warning(executor_setting: str, budget_url: str | None) -> str | None:
    """The warning to log when tasks may spread over hosts but the budget is per host; else None.

    ``budget_url`` is the URL the run uses (argument, connection or ``POLYV_BUDGET_URL``), never
    anything secret in the message: only its scheme is named.
    """
    if not executor_setting.strip() or not spreads_over_hosts(executor_setting):
        return None
    if is_shared_across_hosts(budget_url):
        return None
    executors = ", ".join(n for n in executor_names(executor_setting) if n not in SINGLE_HOST_EXECUTORS)
    where = "machine-wide (POLYV_BUDGET_URL unset)" if not budget_url else f"per host ({_scheme(budget_url)} URL)"
    return (
        f"the request budget is {where}, but the executor ({executors}) may run this DAG's tasks on "
        "several hosts: each host keeps its own budget, and tasks leaving through one egress IP may "
        "together exceed POLYV's per-IP limit (1500 requests per 10 s, then a block). Set "
        "POLYV_BUDGET_URL=redis://<host>:6379/<db> in every worker's environment (or the operator's "
        "budget_url / budget_conn_id), unless every worker leaves through an IP of its own."
    )


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme or "no scheme"
    except ValueError:
        return "unparsable"
