"""How a sync's failures reach Airflow: the exception type (retry or not) and a message that
never holds the appSecret.

* :func:`airflow_error`: an error the run raised, as ``AirflowException`` (Airflow retries) or
  ``AirflowFailException`` (no retry), by its exit code (:mod:`polyv_connector.exit_codes`).
* :func:`failure_message`: one line for a finished run that did not sync every item.
* :func:`scrub_secret`: strings, lists and dicts with every occurrence of the secret replaced.

Cheap to import (DAG files import the operator at parse time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from polyv_connector import exit_codes
from polyv_connector.errors import InputError, PolyvConnectorError, StateError
from polyv_connector.reasons import NOT_PROBLEMS

if TYPE_CHECKING:
    from polyv_connector.engine import SyncResult


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


def scrub_secret(value: Any, secret: str) -> Any:
    """``value`` (strings, lists, dicts) with every occurrence of ``secret`` replaced."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, "***")
    if isinstance(value, dict):
        return {scrub_secret(k, secret): scrub_secret(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_secret(v, secret) for v in value]
    return value


def failure_message(result: SyncResult) -> str:
    """Why a finished run failed its task: the unsynced counts, a stop, the gates, the reasons."""
    counts = result.counts
    parts = [
        f"POLYV sync {result.run_id} did not sync every item: failed {counts.get('failed', 0):,}, "
        f"in_doubt {counts.get('in_doubt', 0):,}, not_attempted {counts.get('not_attempted', 0):,} "
        f"of {result.items:,}"
    ]
    if result.aborted:
        parts.append(f"stopped ({result.abort_cause}): {result.aborted}")
    if result.gate_failures:
        parts.append("data-quality gate failed: " + " | ".join(result.gate_failures))
    by_reason = sorted(
        ((c, n) for c, n in result.counts_by_reason.items() if c not in NOT_PROBLEMS),
        key=lambda cn: -cn[1],
    )
    if by_reason:
        parts.append("by reason: " + ", ".join(f"{c} {n:,}" for c, n in by_reason))
    parts.append(f"report: {result.report_location}")
    return "; ".join(parts)
