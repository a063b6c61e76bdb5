"""Run metrics through Airflow's own ``Stats`` (StatsD, Datadog or OpenTelemetry, as configured).

Airflow's task runner initialises ``Stats`` from the ``[metrics]`` section (``statsd_on``,
``otel_on``...); with none configured every call is a no-op. Names are prefixed ``polyv.``
(Airflow adds its own ``statsd_prefix`` in front), tags carry the DAG, the task and the appId
for backends that take tags:

* ``polyv.items.<status>`` (counter): items per status (``sent``, ``rejected``, ``failed``...)
* ``polyv.requests`` (counter): save requests, retries and split halves included
* ``polyv.retries`` (counter): requests that retried a transient failure
* ``polyv.splits`` (counter): batches split to isolate items POLYV refused
* ``polyv.blocks`` (counter): runs stopped by POLYV's per-IP block
* ``polyv.changes.<kind>`` (counter): planned changes by kind (``new``, ``changed``, ``cleared``)
* ``polyv.limit_breaches`` (counter): change limits breached (the run sent nothing)
* ``polyv.runs.ok`` / ``polyv.runs.failed`` (counter): finished runs
* ``polyv.duration`` (timer): the run's wall time
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polyv_connector.engine.result import SyncResult

log = logging.getLogger(__name__)

PREFIX = "polyv"


def _stats() -> Any:
    try:
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # Airflow before the SDK's observability module
        from airflow.stats import Stats
    return Stats


def emit(result: SyncResult, tags: dict[str, str] | None = None) -> None:
    """Send the run's metrics; never raises (a metrics backend must not fail a finished sync)."""
    try:
        _emit(_stats(), result, dict(tags or {}))
    except Exception:
        log.warning("could not emit POLYV sync metrics", exc_info=True)


def _emit(stats: Any, result: SyncResult, tags: dict[str, str]) -> None:
    for status, count in result.counts.items():
        if count:
            stats.incr(f"{PREFIX}.items.{status}", count, tags=tags)
    if result.requests_sent:
        stats.incr(f"{PREFIX}.requests", result.requests_sent, tags=tags)
    timeline = result.timeline
    if timeline is not None:
        retries = sum(timeline.retries)
        splits = sum(timeline.splits)
        if retries:
            stats.incr(f"{PREFIX}.retries", retries, tags=tags)
        if splits:
            stats.incr(f"{PREFIX}.splits", splits, tags=tags)
    for kind, count in result.changes.items():
        if count:
            stats.incr(f"{PREFIX}.changes.{kind}", count, tags=tags)
    if result.breaches:
        stats.incr(f"{PREFIX}.limit_breaches", len(result.breaches), tags=tags)
    if result.abort_cause == "blocked":
        stats.incr(f"{PREFIX}.blocks", 1, tags=tags)
    stats.incr(f"{PREFIX}.runs.{'ok' if result.ok else 'failed'}", 1, tags=tags)
    stats.timing(f"{PREFIX}.duration", dt.timedelta(seconds=result.duration_s), tags=tags)
