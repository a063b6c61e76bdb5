"""How a sync's failures reach Airflow: the exception type (retry or not) and a message that
never holds the appSecret.

* :func:`airflow_error`: an error the run raised, as ``AirflowException`` (Airflow retries) or
  ``AirflowFailException`` (no retry), by its exit code (:mod:`polyv_connector.exit_codes`).
* :func:`failure_message`: one line for a finished run that did not sync every item.
* :func:`exit_line`: the ERROR line a failing task logs first: the exit code, its meaning and
  what stopped the run (the task log shows no process exit code of its own).
* :func:`scrub_secret` (from :mod:`polyv_connector.transport.redact`): strings, lists and dicts
  with every occurrence of the secret replaced.

Cheap to import (DAG files import the operator at parse time).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from polyv_connector import exit_codes
from polyv_connector.bounds import ERROR_CHARS, REASON_CHARS, cut
from polyv_connector.errors import ConfigError, InputError, PolyvConnectorError, StateError
from polyv_connector.reasons import NOT_PROBLEMS
from polyv_connector.transport.redact import scrub_secret

__all__ = ["airflow_error", "exit_line", "failure_message", "scrub_secret"]

if TYPE_CHECKING:
    from polyv_connector.engine.result import SyncResult


def airflow_error(exc: PolyvConnectorError) -> Exception:
    """The Airflow exception for an error the run raised: retryable only where a retry can help."""
    code = exit_codes.for_error(exc)
    kinds = {
        exit_codes.CONFIG: "configuration error",
        exit_codes.BUSY: "busy",
        exit_codes.UNAVAILABLE: "unavailable, will retry",
    }
    if isinstance(exc, StateError):
        kind = "sync state error"
    elif isinstance(exc, InputError):
        kind = "input error"
    else:
        kind = kinds.get(code, code.name)
    message = f"POLYV sync: {kind}: {exc}"
    return AirflowException(message) if code.retryable else AirflowFailException(message)


def as_chosen(exc: PolyvConnectorError, params: Mapping[str, Any] | None) -> PolyvConnectorError:
    """``exc`` naming the setting the person chose: an error about ``source_sql`` in a run whose
    trigger gave no ``source_sql`` but a ``source_table`` param ran the example DAGs' default
    query over that table, so the error names ``source_table``; any other error as it is."""
    if not isinstance(exc, ConfigError) or exc.setting != "source_sql" or not params:
        return exc
    table = params.get("source_table")
    if params.get("source_sql") or not isinstance(table, str) or not table.strip():
        return exc
    message = str(exc).split(": ", 1)[-1]
    # The source calls the rows it read "query"; the person named a table.
    message = f"{table.strip()}: {message.removeprefix('query: ')}"
    chosen = type(exc)("source_table", f"{message} (read by the DAG's default query)")
    chosen.__cause__ = exc.__cause__
    return chosen


def exit_line(code: int, abort_cause: str | None = None) -> str:
    """``exitCode 3 (aborted: POLYV stopped the run ...); abortCause auth``: one line, the
    summary's keys named as the summary names them."""
    known = exit_codes.BY_CODE.get(code)
    meaning = f"{known.name}: {known.meaning}" if known else "unknown"
    return f"POLYV sync failed: exitCode {code} ({meaning}); abortCause {abort_cause or 'none'}"


def failure_message(result: SyncResult) -> str:
    """Why a finished run failed its task: the unsynced counts, a stop, the gates, the reasons."""
    counts = result.counts
    parts = [
        f"POLYV sync {result.run_id} did not sync every item: failed {counts.get('failed', 0):,}, "
        f"in_doubt {counts.get('in_doubt', 0):,}, not_attempted {counts.get('not_attempted', 0):,} "
        f"of {result.items:,}"
    ]
    # Cut: the message goes to the task log, the exception and the notifier's alert.
    if result.aborted:
        parts.append(f"stopped ({result.abort_cause}): {cut(result.aborted, ERROR_CHARS)}")
    if result.gate_failures:
        parts.append("data-quality gate failed: " + " | ".join(cut(g, REASON_CHARS) for g in result.gate_failures))
    if result.breaches:
        parts.append("change limit: " + " | ".join(cut(b.message, REASON_CHARS) for b in result.breaches))
    by_reason = sorted(
        ((c, n) for c, n in result.counts_by_reason.items() if c not in NOT_PROBLEMS),
        key=lambda cn: -cn[1],
    )
    if by_reason:
        parts.append("by reason: " + ", ".join(f"{c} {n:,}" for c, n in by_reason))
    parts.append(f"report: {result.report_location}")
    return "; ".join(parts)
