"""The reviewed sync's glue (``dags/polyv_viewer_sync_reviewed.py``): which task follows the plan,
and what the approval step shows a person.

A plan task (``mode="plan"``) pushes the plan's summary (``summary["plan"]``); :func:`after_plan`
picks the apply task when the plan is within the change limits, the approval task when it
breaches them; :func:`approval_body` is the Markdown the approval step shows (counts by kind and
by field, the breaches with their numbers, a link to the plan's preview page served by the
plugin). Nothing here holds a value of the plan, nor the secret (the summary has neither).

Cheap to import: DAG files import it at parse time (the DAG's macros).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from polyv_connector.airflow.links import _api_base_url, summary_link
from polyv_connector.airflow.served import RUN_PAGE

#: The tasks of the reviewed DAG.
PLAN_TASK = "plan"
APPROVE_TASK = "approve"
APPLY_TASK = "apply"


def _plan(summary: Any) -> Mapping[str, Any]:
    plan = summary.get("plan") if isinstance(summary, Mapping) else None
    return plan if isinstance(plan, Mapping) else {}


def after_plan(summary: Any, approve: str = APPROVE_TASK, apply: str = APPLY_TASK) -> str:
    """The task that follows the plan: ``approve`` when the plan breaches a limit, else ``apply``.
    A summary without a plan (none was written) goes to the approval step: never apply unseen."""
    plan = _plan(summary)
    return apply if plan and plan.get("breached") is False else approve


def preview_link(summary: Any, dag_id: str, run_id: str, task_id: str = PLAN_TASK, base_url: str | None = None) -> str:
    """The plugin's URL of the plan task's run page (the plan's preview); "" when it has none."""
    if not isinstance(summary, Mapping):
        return ""
    key = SimpleNamespace(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=-1)
    return summary_link(dict(summary), RUN_PAGE, key, _api_base_url() if base_url is None else base_url)


def approval_body(summary: Any, dag_id: str, run_id: str, task_id: str = PLAN_TASK) -> str:
    """The approval step's Markdown: what the plan would send and why it needs a person."""
    plan = _plan(summary)
    if not plan:
        return "The plan task left no plan summary: check its log before approving anything."
    lines = [
        f"**{int(plan.get('items') or 0):,} items** would be sent to appId `{_code(plan.get('appId'))}`.",
        "",
        "| kind | items |",
        "| --- | --- |",
        *(f"| {k} | {int(n):,} |" for k, n in (plan.get("byKind") or {}).items()),
        "",
    ]
    breaches = plan.get("breaches") or []
    if breaches:
        lines.append("**Limits breached:**")
        lines += [f"- `{b.get('code')}`: {b.get('message')}" for b in breaches if isinstance(b, Mapping)]
        lines.append("")
    by_field = plan.get("byField") or {}
    if by_field:
        lines += ["| customFieldId | new | changed | cleared |", "| --- | --- | --- | --- |"]
        lines += [
            f"| `{_code(f)}` | {int(c.get('new', 0)):,} | {int(c.get('changed', 0)):,} | {int(c.get('cleared', 0)):,} |"
            for f, c in list(by_field.items())[:50]
        ]
        lines.append("")
    link = preview_link(summary, dag_id, run_id, task_id)
    if link:
        lines.append(f"[Preview the plan: the first changes per field]({link})")
    lines.append(
        f"Approve sends exactly these items (plan `{_code(plan.get('planPath'))}`, "
        f"made {_code(plan.get('createdAt'))}); "
        "Reject sends nothing and the run ends without error."
    )
    return "\n".join(lines)


def _code(text: Any) -> str:
    """Text shown inside a Markdown code span: no backtick, pipe or line break can leave it."""
    return " ".join(str(text).replace("`", "'").replace("|", "/").split())[:128]


#: The DAG's Jinja macros (``user_defined_macros``).
MACROS = {"polyv_after_plan": after_plan, "polyv_approval_body": approval_body}
