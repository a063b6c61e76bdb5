"""The deployment table names what the code and the DAGs really read, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from polyv_connector import deployment, runspec
from polyv_connector.budget import machine

ROOT = Path(__file__).resolve().parents[1]
# The DAG files and the module that holds their shared params and Variable templates.
DAG_TEXT = "\n".join(
    p.read_text(encoding="utf-8")
    for p in [*sorted((ROOT / "dags").glob("*.py")), ROOT / "polyv_connector" / "airflow" / "params.py"]
)


def _by_kind(kind: str) -> set[str]:
    return {s.name for s in deployment.DEPLOYMENT if s.kind == kind}


def test_names_are_unique() -> None:
    names = [s.name for s in deployment.DEPLOYMENT]
    assert len(names) == len(set(names))


def test_environment_names_are_the_codes_own() -> None:
    assert runspec.SETTINGS["budget_url"].env == deployment.ENV_BUDGET_URL
    assert runspec.SETTINGS["budget_rps"].env == deployment.ENV_BUDGET_RPS
    assert machine.RUNTIME_DIR_ENV == deployment.ENV_RUNTIME_DIR
    limits = {"max_changed_fraction", "change_limit_min_items", "max_source_shrink"}
    limit_env = {runspec.SETTINGS[k].env for k in limits}
    assert limit_env == {
        deployment.ENV_MAX_CHANGED_FRACTION,
        deployment.ENV_CHANGE_LIMIT_MIN_ITEMS,
        deployment.ENV_MAX_SOURCE_SHRINK,
    }
    assert _by_kind("environment") == {
        deployment.ENV_BUDGET_URL,
        deployment.ENV_BUDGET_RPS,
        deployment.ENV_RUNTIME_DIR,
        *limit_env,
    }


def test_every_variable_a_dag_reads_is_declared_and_every_declared_one_is_read() -> None:
    """By name in the DAG files, or through the constants of this module the DAGs import."""
    constants = {getattr(deployment, n): n for n in dir(deployment) if n.startswith("VAR_")}
    read = set(re.findall(r"var\.(?:value|json)\.get\('(polyv_\w+)'", DAG_TEXT))
    read |= set(re.findall(r"\w*variable\w*\(\s*['\"](polyv_\w+)['\"]", DAG_TEXT))  # _variable("polyv_...", ...)
    read |= {value for value, constant in constants.items() if re.search(rf"\b{constant}\b", DAG_TEXT)}
    assert read == _by_kind("variable")


def test_every_connection_is_named_by_a_dag() -> None:
    for name in _by_kind("connection"):
        assert re.search(rf"\b{name}\b", DAG_TEXT), name
