"""The plan's preview on its run page: counts by kind and by field, the limits and their
breaches, and the first changes per field (new values and kinds: the state keeps no old values).

Pure: a plan summary (:func:`polyv_connector.planfile.PlanWriter.close`) in, an HTML fragment out.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

#: Characters of a value the preview shows (the report has them whole).
MAX_VALUE_CHARS = 80


def plan_html(plan: Mapping[str, Any]) -> str:
    """The preview section of a plan run's page."""
    e = html.escape
    kinds = dict(plan.get("byKind") or {})
    breached = bool(plan.get("breached"))
    badge = (
        '<span class="badge bad">limits breached: apply needs approval</span>'
        if breached
        else ('<span class="badge ok">within the limits</span>')
    )
    parts = [
        '<section id="plan">',
        f"<h2>Plan: {int(plan.get('items') or 0):,} items to send {badge}</h2>",
        f'<p class="muted">plan file <code>{e(str(plan.get("planPath") or ""))}</code>; '
        "apply it with <code>polyv-sync apply --plan</code> (or the apply task)</p>",
        '<div class="cards" id="plan-kinds">',
        *(f'<div class="card" data-kind="{e(k)}"><b>{int(n):,}</b><span>{e(k)}</span></div>' for k, n in kinds.items()),
        "</div>",
    ]
    for breach in plan.get("breaches") or []:
        parts.append(
            f'<p><span class="badge bad">{e(str(breach.get("code")))}</span> {e(str(breach.get("message")))}</p>'
        )
    by_field = dict(plan.get("byField") or {})
    if by_field:
        names = list(kinds) or ["new", "changed", "cleared"]
        head = "".join(f"<th>{e(k)}</th>" for k in names)
        rows = "".join(
            f"<tr><td><code>{e(f)}</code></td>"
            + "".join(f'<td class="n">{int(c.get(k, 0)):,}</td>' for k in names)
            + "</tr>"
            for f, c in by_field.items()
        )
        parts.append(f'<table id="plan-fields"><tr><th>customFieldId</th>{head}</tr>{rows}</table>')
    first = dict(plan.get("firstChanges") or _first_changes(plan.get("planPath")))
    if first:
        parts.append("<h2>First changes per field</h2>")
        for field, rows in first.items():
            body = "".join(
                f"<tr><td><code>{e(str(r.get('viewerId')))}</code></td><td>{e(str(r.get('kind')))}</td>"
                f"<td>{e(_short(str(r.get('value'))))}</td></tr>"
                for r in rows
            )
            parts.append(
                f'<table class="plan-first" data-field="{e(field)}"><tr><th colspan="3">{e(field)}</th></tr>'
                f"<tr><th>viewerId</th><th>kind</th><th>new value</th></tr>{body}</table>"
            )
    parts.append("</section>")
    return "\n".join(parts)


def _short(value: str) -> str:
    return value if len(value) <= MAX_VALUE_CHARS else value[: MAX_VALUE_CHARS - 1] + "…"


def _first_changes(path: Any) -> dict[str, Any]:
    """The first changes per field, from the plan file's footer (the public summary, in XCom and
    the summary JSON, leaves the values out)."""
    if not path:
        return {}
    from polyv_connector.planfile import read_summary

    try:
        return dict(read_summary(str(path)).get("firstChanges") or {})
    except Exception:
        return {}
