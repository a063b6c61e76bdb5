"""The one table of exit codes: every error has one, and the troubleshooting guide shows it as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyv_connector import exit_codes
from polyv_connector.errors import (
    BusyError,
    ConfigError,
    DependencyUnavailable,
    InputError,
    RunAborted,
    StateError,
)

TROUBLESHOOTING = Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("x", "y"), 2),
        (InputError("x", "y"), 2),
        (StateError("y"), 2),
        (RunAborted("auth", "y"), 3),
        (BusyError("y"), 5),
        (DependencyUnavailable("x", "y"), 75),
        (KeyboardInterrupt(), 130),
        (ValueError("a bug"), 70),
    ],
)
def test_every_error_has_its_exit_code(error, code):
    assert exit_codes.for_error(error).code == code


def test_codes_are_unique_and_the_airflow_split_follows_the_contract():
    assert len(exit_codes.BY_CODE) == len(exit_codes.ALL)
    fail = {e.code for e in exit_codes.ALL if not e.retryable}
    assert {2, 4} <= fail and {1, 5, 70, 75} <= {e.code for e in exit_codes.ALL if e.retryable}
    assert not exit_codes.abort_is_retryable("auth") and not exit_codes.abort_is_retryable("clock")
    assert exit_codes.abort_is_retryable("blocked")


def test_the_docs_show_the_table():
    assert exit_codes.markdown_table() in TROUBLESHOOTING.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("code", "cause", "by_reason", "retryable"),
    [
        (4, None, {"gate_failed": 5, "expectation_failed": 2}, False),  # a gate: fix the source
        (2, None, None, False),
        (3, "auth", {"polyv_refused": 3}, False),  # credentials or signature
        (3, "clock", None, False),
        (3, "rejected", {"too_many_rejected": 9, "polyv_rejected": 50}, False),
        (3, "blocked", {"blocked": 7}, True),  # the block ends after 5 minutes
        (1, None, {"polyv_rejected": 2, "unknown_field": 1}, False),  # param validate error
        (1, None, {"polyv_rejected": 2, "retries_exhausted": 1}, True),  # a rerun retries the 5XX
        (1, None, {"in_doubt": 1, "unchanged": 4}, True),
        (1, None, {"run_stopped": 1}, True),
        (1, None, {}, True),  # no reasons known: the exit code decides
        (5, None, None, True),
        (75, None, None, True),
    ],
)
def test_one_table_splits_deterministic_from_transient_failures(code, cause, by_reason, retryable):
    assert exit_codes.failure_is_retryable(code, cause, by_reason) is retryable
