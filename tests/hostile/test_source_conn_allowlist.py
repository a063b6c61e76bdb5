"""``allowed_source_conn_ids``: a trigger-time ``source_conn_id`` reaches only the connections the
DAG author listed (Airflow Variable ``polyv_source_conn_ids`` in the example DAGs).

The DAG runs themselves are in tests/airflow/test_dags_e2e.py; here the setting's forms and the
operator's refusal, in process.
"""

from __future__ import annotations

from typing import Any

import pytest

from polyv_connector import exit_codes, runspec
from polyv_connector.errors import ConfigError
from tests.airflow.support import PLANTED_SECRET, conn_json

# The forms a templated value arrives in: a list, JSON (``| tojson``), the Python repr Jinja
# renders from ``var.json`` without a filter, and comma-separated text.
FORMS = [["polyv_warehouse", "crm"], '["polyv_warehouse", "crm"]', "['polyv_warehouse', 'crm']", "polyv_warehouse, crm"]


@pytest.mark.parametrize("allowed", FORMS, ids=["list", "json", "jinja-repr", "comma"])
def test_allowlist_forms(allowed: Any) -> None:
    spec = runspec.resolve({"source_conn_id": "crm", "allowed_source_conn_ids": allowed}, front="operator")
    assert spec.allowed_source_conn_ids == ("polyv_warehouse", "crm") and spec.source_conn_id == "crm"
    with pytest.raises(ConfigError) as raised:
        runspec.resolve({"source_conn_id": "other_db", "allowed_source_conn_ids": allowed}, front="operator")
    assert raised.value.setting == "source_conn_id"
    assert "'other_db' is not an allowed source connection (allowed_source_conn_ids: polyv_warehouse, crm)" in str(
        raised.value
    )


def test_no_allowlist_allows_any_and_an_empty_one_allows_none() -> None:
    assert runspec.resolve({"source_conn_id": "anything"}, front="operator").source_conn_id == "anything"
    with pytest.raises(ConfigError, match=r"allowed_source_conn_ids: none"):
        runspec.resolve({"source_conn_id": "polyv_warehouse", "allowed_source_conn_ids": "[]"}, front="operator")


@pytest.mark.parametrize("bad", ["[1, 2]", "[not a list", '["ok", ""]', 42])
def test_a_malformed_allowlist_is_a_config_error(bad: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        runspec.resolve({"source_conn_id": "x", "allowed_source_conn_ids": bad}, front="operator")
    assert raised.value.setting == "allowed_source_conn_ids"


def test_operator_refuses_before_the_connection_is_looked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    # Port 9 (discard): nothing may be sent, and nothing is.
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_DEFAULT", conn_json("http://127.0.0.1:9"))
    op = PolyvViewerFieldSyncOperator(
        task_id="sync",
        source_conn_id="not_defined_anywhere",
        source_table="t",
        report_table="r",
        allowed_source_conn_ids=["polyv_warehouse"],
    )
    with pytest.raises(AirflowFailException) as raised:
        op.execute({"ti": None, "run_id": "manual__allowlist"})  # type: ignore[arg-type]
    cause = raised.value.__cause__
    assert isinstance(cause, ConfigError) and cause.setting == "source_conn_id"
    assert exit_codes.for_error(cause) is exit_codes.CONFIG
    assert "cannot use connection" not in str(cause)  # refused by name, never looked up
    assert PLANTED_SECRET not in str(raised.value)
