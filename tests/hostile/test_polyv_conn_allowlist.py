"""``allowed_polyv_conn_ids``: a trigger-time ``polyv_conn_id`` (the accounts DAG's ``accounts``
param) reaches only the POLYV connections the DAG author listed (Airflow Variable
``polyv_conn_ids``), refused before the connection is read.

The DAG run is in tests/airflow/test_accounts_dag.py; here the check and the operator, in process.
"""

from __future__ import annotations

from typing import Any

import pytest

from polyv_connector import exit_codes, runspec
from polyv_connector.errors import ConfigError
from tests.airflow.support import PLANTED_SECRET, conn_json

FORMS = [["polyv_default", "polyv_brand_b"], '["polyv_default", "polyv_brand_b"]', "polyv_default, polyv_brand_b"]


@pytest.mark.parametrize("allowed", FORMS, ids=["list", "json", "comma"])
def test_the_check_allows_the_listed_and_names_the_setting_otherwise(allowed: Any) -> None:
    runspec.check_polyv_conn_id("polyv_brand_b", allowed)  # listed: no error
    with pytest.raises(ConfigError) as raised:
        runspec.check_polyv_conn_id("polyv_other", allowed)
    assert raised.value.setting == "polyv_conn_id"
    assert (
        "connection 'polyv_other' is not an allowed POLYV connection "
        "(allowed_polyv_conn_ids: polyv_default, polyv_brand_b)" in str(raised.value)
    )


def test_no_allowlist_allows_any_and_an_empty_one_allows_none() -> None:
    runspec.check_polyv_conn_id("anything", None)
    with pytest.raises(ConfigError, match=r"allowed_polyv_conn_ids: none"):
        runspec.check_polyv_conn_id("polyv_default", "[]")


def test_a_malformed_allowlist_names_itself() -> None:
    with pytest.raises(ConfigError) as raised:
        runspec.check_polyv_conn_id("polyv_default", "[1, 2]")
    assert raised.value.setting == "allowed_polyv_conn_ids"


def test_the_setting_is_in_the_one_table_and_reaches_the_run_spec() -> None:
    setting = runspec.SETTINGS["allowed_polyv_conn_ids"]
    assert setting.operator and setting.cli is None and setting.extra is None  # not an extra: the DAG author's
    spec = runspec.resolve({"allowed_polyv_conn_ids": '["polyv_default"]'}, front="operator")
    assert spec.allowed_polyv_conn_ids == ("polyv_default",)


def test_operator_refuses_before_the_connection_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    # Defined, with the planted secret and a discard port: refused by name, never read.
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_BRAND_X", conn_json("http://127.0.0.1:9"))
    op = PolyvViewerFieldSyncOperator(
        task_id="sync",
        polyv_conn_id="polyv_brand_x",
        allowed_polyv_conn_ids='["polyv_default"]',
        source_conn_id="not_defined_anywhere",
        source_table="t",
        report_table="r",
    )
    with pytest.raises(AirflowFailException) as raised:
        op.execute({"ti": None, "run_id": "manual__allowlist"})  # type: ignore[arg-type]
    cause = raised.value.__cause__
    assert isinstance(cause, ConfigError) and cause.setting == "polyv_conn_id"
    assert exit_codes.for_error(cause) is exit_codes.CONFIG
    assert "allowed_polyv_conn_ids: polyv_default" in str(raised.value)
    assert PLANTED_SECRET not in str(raised.value)
