"""``polyv_connector.airflow.params``: what the example DAGs share, each fact in one place."""

from __future__ import annotations

import re

import pytest

from polyv_connector import deployment
from polyv_connector.airflow import accounts, params

pytestmark = pytest.mark.airflow


def _render(template: str, variables: dict[str, str]) -> str:
    """``template`` as Airflow renders it, with ``var.value`` / ``var.json`` over ``variables``."""
    import json

    import jinja2

    class _Value:
        def get(self, name: str, default: object = None) -> object:
            return variables.get(name, default)

    class _Json:
        def get(self, name: str, default: object = None) -> object:
            return json.loads(variables[name]) if name in variables else default

    env = jinja2.Environment()
    return env.from_string(template).render(var={"value": _Value(), "json": _Json()})


def test_variable_templates_read_the_deployment_variables_with_their_defaults() -> None:
    assert _render(params.STATE_CONN_ID, {}) == ""
    assert _render(params.STATE_CONN_ID, {deployment.VAR_STATE_CONN_ID: "writer"}) == "writer"
    assert _render(params.DIFF_IN_WAREHOUSE, {}) == "false"
    assert _render(params.REPORT_DIR, {}) == deployment.default_report_dir()
    assert _render(params.SOURCE_CONN_IDS, {}) == '["polyv_warehouse"]'
    assert _render(params.POLYV_CONN_IDS, {deployment.VAR_CONN_IDS: '["a", "b"]'}) == '["a", "b"]'


def test_the_table_name_pattern_is_the_accounts_check() -> None:
    assert accounts.TABLE_NAME.pattern == params.TABLE_NAME
    param = params.table_params()["report_table"]
    assert param.schema["pattern"] == params.TABLE_NAME and param.value == "polyv_sync_report"
    for name in ("t", "s.t", "db.s.t"):
        assert re.match(params.TABLE_NAME, name)
    for name in ("t; DROP TABLE x", "a.b.c.d", "1t", ""):
        assert not re.match(params.TABLE_NAME, name)


def test_the_accounts_param_takes_the_keys_the_accounts_check_knows() -> None:
    schema = params.accounts_param().schema
    assert set(schema["items"]["properties"]) == set(accounts.ACCOUNT_KEYS)
    assert accounts.account_kwargs(params.accounts_param().value)  # the default passes the check


def test_each_call_gives_new_params() -> None:
    # A DAG owns its Param objects: two DAGs must never share (and change) one.
    assert params.run_params()["dry_run"] is not params.run_params()["dry_run"]
    assert params.run_params(full_refresh=True)["full_refresh"].value is True
