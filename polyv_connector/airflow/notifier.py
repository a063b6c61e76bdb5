"""An example failure notifier for POLYV sync tasks (Airflow's notifier interface).

Use it as a task's ``on_failure_callback``::

    PolyvViewerFieldSyncOperator(..., on_failure_callback=PolyvSyncFailureNotifier("polyv_alerts"))

It reads the summary the failed task kept in XCom (the operator pushes it before failing) and
says what an engineer on call needs first: which run, counts by status and by reason code, the
first problem rows, the run page and the report. With ``webhook_conn_id`` naming an Airflow
connection (an ``http`` connection: host, optional schema/port, the path in ``endpoint`` or in
the connection's extra ``endpoint``) it POSTs ``{"text": message, ...}`` there, the shape Slack,
Mattermost and Teams incoming webhooks take; otherwise, or when that connection is not defined,
it logs the message. Never the appSecret nor an item's value: the text is scrubbed of the
task's POLYV secret as the XCom summary is (the exception's text is quoted too, and Airflow's log
masker never sees a webhook's body), and viewerIds, reasons and the error are cut to the lengths
of :mod:`polyv_connector.bounds`. The webhook URL (it often holds a token) is never logged.

Parse-time cost: imports nothing heavy (DAG files import it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier

from polyv_connector.bounds import CUT_MARK, ERROR_CHARS, REASON_CHARS, VIEWER_ID_CHARS, cut
from polyv_connector.reasons import NOT_PROBLEMS
from polyv_connector.transport.redact import scrub_secret

#: Problem rows quoted in a message: enough to see the pattern, short enough for a chat line.
MAX_PROBLEMS_SHOWN = 5
#: Row numbers quoted for a line of problem rows that share a reason.
EXAMPLE_ROWS = 3
# Statuses that make a run unsuccessful.
_BAD_STATUSES = ("rejected", "failed", "in_doubt", "not_attempted")
WEBHOOK_TIMEOUT_S = 10.0


def failure_message(summary: Mapping[str, Any] | None, where: Mapping[str, Any]) -> str:
    """The alert text for a failed sync task.

    ``summary`` is the operator's XCom summary (``None`` when the task failed before it had
    one, e.g. a configuration error); ``where`` names the task: ``dag_id``, ``task_id``,
    ``run_id``, ``try_number``, ``error`` (the exception text), ``log_url``.
    """
    head = f"POLYV sync failed: {where.get('dag_id')}.{where.get('task_id')}, run {where.get('run_id')}"
    if where.get("try_number"):
        head += f" (try {where['try_number']})"
    lines = [head]
    if where.get("error") and not _repeats_summary(str(where["error"]), summary):
        lines.append(f"error: {cut(where['error'], ERROR_CHARS)}")
    if summary:
        counts = summary.get("counts") or {}
        shown = [f"{s} {int(counts[s]):,}" for s in ("sent", *_BAD_STATUSES) if counts.get(s)]
        lines.append(f"items: {int(summary.get('items') or 0):,}" + (f" ({', '.join(shown)})" if shown else ""))
        by_reason = sorted(
            ((c, int(n)) for c, n in (summary.get("countsByReason") or {}).items() if c not in NOT_PROBLEMS and n),
            key=lambda cn: (-cn[1], cn[0]),
        )
        if by_reason:
            lines.append("by reason: " + ", ".join(f"{c} {n:,}" for c, n in by_reason))
        if summary.get("gateFailures"):
            lines.append("gate failed: " + " | ".join(cut(g, REASON_CHARS) for g in summary["gateFailures"]))
        lines.extend(change_lines(summary))
        if summary.get("aborted"):
            lines.append(f"stopped ({summary.get('abortCause')}): {cut(summary['aborted'], ERROR_CHARS)}")
        problems: Sequence[Mapping[str, Any]] = summary.get("problems") or []
        lines.extend(problem_lines(problems))
        if summary.get("runPage"):
            lines.append(f"run page: {summary['runPage']}")
        if summary.get("report"):
            lines.append(f"report: {summary['report']}")
    else:
        lines.append("no run summary: the task failed before the sync ran (see the error and the task log)")
    if where.get("log_url"):
        lines.append(f"log: {where['log_url']}")
    return "\n".join(lines)


def change_lines(summary: Mapping[str, Any]) -> list[str]:
    """The change limits the run breached (numbers and the setting that overrides each), the
    planned changes by kind, and the keys a whole-source run no longer read."""
    lines = []
    for breach in summary.get("limitBreaches") or []:
        if isinstance(breach, Mapping):
            lines.append(f"change limit ({breach.get('code')}): {cut(breach.get('message'), REASON_CHARS)}")
    changes = summary.get("changes")
    if isinstance(changes, Mapping) and any(changes.values()):
        lines.append("changes: " + ", ".join(f"{k} {int(v):,}" for k, v in changes.items()))
    if isinstance(summary.get("removed"), int) and summary["removed"]:
        lines.append(f"removed from the source (POLYV keeps their values): {summary['removed']:,}")
    return lines


def problem_lines(problems: Sequence[Mapping[str, Any]]) -> list[str]:
    """The problem rows, those with the same ``reasonCode`` and ``reason`` as one line (a stop
    leaves every row with the same reason: one line says it), at most
    :data:`MAX_PROBLEMS_SHOWN` lines."""
    groups: dict[tuple[Any, str], list[Mapping[str, Any]]] = {}
    for p in problems:
        groups.setdefault((p.get("reasonCode"), cut(p.get("reason"), REASON_CHARS)), []).append(p)
    lines = []
    for (code, reason), rows in list(groups.items())[:MAX_PROBLEMS_SHOWN]:
        if len(rows) == 1:
            viewer = cut(rows[0].get("viewerId"), VIEWER_ID_CHARS)
            lines.append(f"  row {rows[0].get('rowNumber')} viewer {viewer}: {code}: {reason}")
            continue
        shown = ", ".join(str(r.get("rowNumber")) for r in rows[:EXAMPLE_ROWS])
        more = f" and {len(rows) - EXAMPLE_ROWS} more" if len(rows) > EXAMPLE_ROWS else ""
        lines.append(f"  {len(rows)} rows (rows {shown}{more}): {code}: {reason}")
    return lines


def _repeats_summary(error: str, summary: Mapping[str, Any] | None) -> bool:
    """Whether the exception only says what the summary's lines say: the operator's own failure
    message for this run, or the stop the summary names (said once, on its ``stopped`` line)."""
    if not summary:
        return False
    run_id = summary.get("runId")
    if run_id and error.startswith(f"POLYV sync {run_id} did not sync every item"):
        return True
    aborted = summary.get("aborted")
    return bool(aborted) and cut(aborted, ERROR_CHARS).rstrip(CUT_MARK) in error


class PolyvSyncFailureNotifier(BaseNotifier):
    """Tell someone a POLYV sync task failed: counts by reason, first problems, the run page.

    :param webhook_conn_id: an Airflow connection to POST the message to; ``None`` (or a
        connection that is not defined) logs it instead.
    :param endpoint: the path under the connection's host (default: the connection's extra
        ``endpoint``, else none).
    """

    template_fields: Sequence[str] = ("webhook_conn_id", "endpoint")

    def __init__(self, webhook_conn_id: str | None = None, endpoint: str | None = None) -> None:
        super().__init__()
        self.webhook_conn_id = webhook_conn_id
        self.endpoint = endpoint
        self.last_message: str | None = None  # what the last notify() said (for tests and logs)

    def notify(self, context: Any) -> None:
        ti = context.get("ti") or context.get("task_instance")
        summary = _pulled_summary(ti, context.get("task"))
        exception = context.get("exception")
        # Scrubbed before it is cut: a cut could leave a piece of the secret no scrub would find.
        secret = _polyv_secret(context)
        where = {
            "dag_id": getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None),
            "task_id": getattr(ti, "task_id", None),
            "run_id": context.get("run_id") or getattr(ti, "run_id", None),
            "try_number": getattr(ti, "try_number", None),
            "error": scrub_secret(str(exception), secret) if exception else None,
            "log_url": getattr(ti, "log_url", None),
        }
        message: str = scrub_secret(failure_message(summary, where), secret)
        self.last_message = message
        url = self._webhook_url()
        if url is None:
            self.log.error("%s", message)
            return
        import requests

        payload = scrub_secret(
            {
                "text": message,
                "runId": summary.get("runId") if summary else None,
                "countsByReason": (summary or {}).get("countsByReason") or {},
                "runPage": (summary or {}).get("runPage"),
            },
            secret,
        )
        try:
            response = requests.post(url, json=payload, timeout=WEBHOOK_TIMEOUT_S)
        except requests.RequestException as exc:
            # The type only: the text of a requests error holds the URL and with it the token.
            raise RuntimeError(
                f"could not post the alert to connection {self.webhook_conn_id!r}: {type(exc).__name__}"
            ) from None
        if response.status_code >= 300:
            raise RuntimeError(
                f"the webhook of connection {self.webhook_conn_id!r} answered HTTP {response.status_code}"
            )
        self.log.info("alert posted to connection %s", self.webhook_conn_id)

    def _webhook_url(self) -> str | None:
        if not self.webhook_conn_id:
            return None
        from airflow.sdk import BaseHook

        try:
            conn = BaseHook.get_connection(self.webhook_conn_id)
        except Exception:
            self.log.warning("connection %r is not defined: the alert is only logged", self.webhook_conn_id)
            return None
        return webhook_url(
            conn.host, conn.schema, conn.port, self.endpoint or (conn.extra_dejson or {}).get("endpoint")
        )


def webhook_url(host: str | None, schema: str | None, port: int | None, endpoint: str | None) -> str:
    """The URL of an ``http`` connection (as Airflow's HTTP provider builds it) plus ``endpoint``."""
    host = (host or "").strip()
    if "://" in host:
        base = host
    else:
        base = f"{schema or 'https'}://{host}"
        if port:
            base += f":{port}"
    if endpoint:
        base = base.rstrip("/") + "/" + endpoint.lstrip("/")
    return base


def _polyv_secret(context: Any) -> str:
    """The appSecret of the failed task's POLYV connection ("" when there is none to read)."""
    conn_id = getattr(context.get("task"), "polyv_conn_id", None)
    if not isinstance(conn_id, str) or not conn_id:
        return ""
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id).password or ""
    except Exception:  # no such connection: the task could not have read a secret through it
        return ""


def _pulled_summary(ti: Any, task: Any = None) -> dict[str, Any] | None:
    """The failed task's XCom summary, when it left one (the operator's own copy when it ran in
    this process: no XCom question, and no "XCom not found" in the log, for one never pushed)."""
    from polyv_connector.airflow.summary import kept_summary

    known, kept = kept_summary(task)
    if known:
        return kept
    if ti is None:
        return None
    try:
        value = ti.xcom_pull(task_ids=ti.task_id, key="return_value")
    except Exception:
        return None
    return value if isinstance(value, dict) else None
