"""``polyv_connector.airflow.accounts``: the accounts DAG's ``accounts`` param → one operator
kwargs dict per account (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from polyv_connector.airflow.accounts import MAX_ACCOUNTS, account_kwargs
from polyv_connector.errors import ConfigError


def test_each_account_becomes_the_kwargs_of_one_mapped_task_in_order() -> None:
    accounts = [
        {"polyv_conn_id": "polyv_brand_a", "source_table": "warehouse.brand_a"},
        {"polyv_conn_id": " polyv_brand_b ", "source_sql": "SELECT 1", "source_table": ""},
    ]
    assert account_kwargs(accounts) == [
        {"polyv_conn_id": "polyv_brand_a", "source_sql": None, "source_table": "warehouse.brand_a"},
        {"polyv_conn_id": "polyv_brand_b", "source_sql": "SELECT 1", "source_table": None},
    ]


@pytest.mark.parametrize("bad", [None, [], {}, "polyv_default", [["polyv_default"]]])
def test_not_a_list_of_objects_is_refused(bad: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        account_kwargs(bad)
    assert raised.value.setting == "accounts"


def test_every_problem_is_reported_at_once_naming_the_entry() -> None:
    accounts = [
        {"polyv_conn_id": "a", "source_table": "t", "source_sql": "SELECT 1"},  # both sources
        {"polyv_conn_id": "", "source_table": "t"},  # no connection
        {"polyv_conn_id": "a", "source_table": "t; DROP TABLE x"},  # twice; not an identifier
        {"polyv_conn_id": "c", "source_table": "t", "app_secret": "PLANTED-never-echoed"},  # unknown key
        {"polyv_conn_id": "d", "source_sql": 42},
    ]
    with pytest.raises(ConfigError) as raised:
        account_kwargs(accounts)
    message = str(raised.value)
    assert "accounts[0]: give exactly one of source_sql and source_table" in message
    assert "accounts[1].polyv_conn_id: a non-empty connection id is required" in message
    assert "accounts[2].polyv_conn_id: 'a' is already accounts[0]" in message
    assert "accounts[2].source_table: expected [schema.]table" in message
    assert "accounts[3]: unknown key(s) app_secret" in message and "PLANTED" not in message
    assert "accounts[4].source_sql: expected text, got a number" in message


def test_more_accounts_than_airflow_maps_is_refused() -> None:
    too_many = [{"polyv_conn_id": f"c{i}", "source_table": "t"} for i in range(MAX_ACCOUNTS + 1)]
    with pytest.raises(ConfigError, match="max_map_length"):
        account_kwargs(too_many)
