"""``polyv_connector.airflow.failures``: which errors Airflow retries, and secret scrubbing."""

from __future__ import annotations

import pytest

from polyv_connector.errors import BusyError, ConfigError, DependencyUnavailable, InputError, StateError

pytestmark = pytest.mark.airflow


@pytest.mark.parametrize(
    ("error", "retried", "text"),
    [
        (ConfigError("batch_size", "must be between 1 and 1000"), False, "configuration error: batch_size"),
        (InputError("input_path", "no such file"), False, "input error: input_path"),
        (StateError("corrupt"), False, "sync state error: corrupt"),
        (BusyError("held by run r1"), True, "busy: held by run r1"),
        (DependencyUnavailable("budget_url", "refused"), True, "unavailable, will retry: budget_url"),
    ],
)
def test_only_errors_a_retry_can_help_are_retried(error, retried, text) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from polyv_connector.airflow.failures import airflow_error

    raised = airflow_error(error)
    assert isinstance(raised, AirflowFailException) is not retried
    assert str(raised).startswith(f"POLYV sync: {text}")


def test_the_secret_is_scrubbed_from_keys_values_and_nested_lists() -> None:
    from polyv_connector.airflow.failures import scrub_secret

    secret = "planted-s3cret"
    value = {"a": f"x {secret} y", secret: [secret, 3, {"b": secret}], "n": None}
    scrubbed = scrub_secret(value, secret)
    assert secret not in repr(scrubbed)
    assert scrubbed == {"a": "x *** y", "***": ["***", 3, {"b": "***"}], "n": None}
    assert scrub_secret(value, "") is value  # no secret: nothing to do


def test_the_exit_line_names_the_code_its_meaning_and_the_abort_cause() -> None:
    from polyv_connector.airflow.failures import exit_line

    assert exit_line(3, "auth") == (
        "POLYV sync failed: exitCode 3 (aborted: POLYV stopped the run (credentials, clock, IP block); "
        "the report is written); abortCause auth"
    )
    assert exit_line(2).endswith("abortCause none") and "exitCode 2 (config:" in exit_line(2)


def test_an_error_about_the_default_query_names_the_table_param_the_trigger_chose():
    from polyv_connector.airflow.failures import as_chosen
    from polyv_connector.errors import ConfigError, InputError

    missing = InputError("source_sql", "missing column(s) viewer_id (found: user_id)")
    chosen = as_chosen(missing, {"source_sql": None, "source_table": "crm.attrs"})
    assert isinstance(chosen, InputError) and chosen.setting == "source_table"
    assert str(chosen) == (
        "source_table: crm.attrs: missing column(s) viewer_id (found: user_id) (read by the DAG's default query)"
    )
    # A query the trigger wrote keeps its own name; so does any other setting's error.
    written = {"source_sql": "SELECT 1", "source_table": "crm.attrs"}
    assert as_chosen(missing, written) is missing
    other = ConfigError("report_path", "bad")
    assert as_chosen(other, {"source_table": "crm.attrs"}) is other
    assert as_chosen(missing, None) is missing
