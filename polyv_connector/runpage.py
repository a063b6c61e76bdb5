"""The run page: one self-contained HTML file per run, written next to its report.

What someone on call wants at a glance: did the run do its job, what did not go through and
why, how the sending went (requests/s against the budget, retries, split batches, latency),
what the data-quality checks said, the first problem rows, and links to the report and the
Data Docs.

Self-contained means *no* external URL: the charts are inline SVG written by
:mod:`polyv_connector.svgchart` (no JavaScript, no CDN, no web font), the style sheet is
inline, and a Content-Security-Policy forbids the page to load anything at all, so it renders
the same on an offline machine, from a file, or served by the Airflow plugin
(:mod:`polyv_connector.airflow.plugin`). Links to the report and the Data Docs are relative (they sit next to the page).

:func:`render_run_page` is pure (a result in, a string out); :func:`write_run_page` writes it.
The page is drawn after the run's last answer, so it imports nothing heavy: drawing it takes
milliseconds (``bench/bench_runpage.py``).
"""

from __future__ import annotations

import datetime as dt
import html
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from polyv_connector.model import STATUSES, UNSUCCESSFUL

if TYPE_CHECKING:
    from polyv_connector.engine.result import SyncResult
    from polyv_connector.timeline import TimelineSummary

#: The page of report ``out/run.parquet`` is ``out/run.html`` (beside ``out/run.data_docs/``).
PAGE_SUFFIX = ".html"
#: Above this many seconds the timeline is drawn per bucket of several seconds (the SVG stays
#: small for a run of hours; each bucket shows its mean rate).
MAX_TIMELINE_POINTS = 600
#: Problem rows shown (the result carries the first 20).
MAX_PROBLEM_ROWS = 20

STATUS_COLOURS: dict[str, str] = {
    "sent": "#2e7d32",
    "unchanged": "#90a4ae",
    "duplicate": "#b0bec5",
    "rejected": "#ef6c00",
    "failed": "#c62828",
    "in_doubt": "#6a1b9a",
    "not_attempted": "#455a64",
    "dry_run": "#1565c0",
}

# Nothing may load: every asset is inline. Navigating a link (report, Data Docs) is allowed.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2933;background:#f5f7fa}
main{max-width:1100px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.4em;margin:.4em 0}h2{font-size:1.1em;margin:1.6em 0 .5em;border-bottom:1px solid #d9e2ec}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600;font-size:.9em}
.ok{background:#2e7d32}.bad{background:#c62828}.warn{background:#ef6c00}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0}
.card{background:#fff;border:1px solid #d9e2ec;border-radius:6px;padding:6px 12px;min-width:90px}
.card b{display:block;font-size:1.3em}.card span{font-size:.8em;color:#52606d}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #d9e2ec;border-radius:6px;padding:8px}
figure svg{width:100%;max-width:620px;height:auto}figure.wide svg{max-width:none}
figcaption{font-size:.85em;color:#52606d}
table{border-collapse:collapse;background:#fff;font-size:.9em;margin:4px 0}
th,td{border:1px solid #d9e2ec;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef2f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:.9em}.muted{color:#7b8794}.links a{margin-right:16px}
.summary{font-family:ui-monospace,monospace;font-size:.85em;background:#fff;padding:8px;border:1px solid #d9e2ec}
"""


@dataclass(frozen=True)
class PageLinks:
    """Where the page links to, relative to the page (or absolute URLs for object storage)."""

    report: str | None = None
    data_docs: str | None = None
    validation_json: str | None = None


def page_path_for(report_path: str) -> str:
    """The run page of a report: ``out/run.parquet`` -> ``out/run.html``."""
    root, ext = os.path.splitext(report_path)
    return (root if ext.lower() == ".parquet" else report_path) + PAGE_SUFFIX


def relative_link(target: str | None, page_path: str) -> str | None:
    """``target`` relative to the page's folder (URLs stay as they are), as a URL path."""
    if not target:
        return None
    if "://" in target or "://" in page_path:
        return target
    rel = os.path.relpath(os.path.abspath(target), os.path.dirname(os.path.abspath(page_path)))
    from urllib.parse import quote

    return quote(rel.replace(os.sep, "/"))


# ---- rendering (pure) ------------------------------------------------------------------------------
def render_run_page(
    result: SyncResult,
    *,
    links: PageLinks | None = None,
    airflow_run_id: str | None = None,
    generated_at: dt.datetime | None = None,
) -> str:
    """The run's page as one HTML string with no external reference (see the module docstring)."""
    links = links or PageLinks()
    summary = result.to_dict()
    counts: dict[str, int] = {str(s): int(result.counts.get(s, 0)) for s in STATUSES}
    by_reason = dict(result.counts_by_reason)
    problems = list(result.problems)[:MAX_PROBLEM_ROWS]
    validation: dict[str, Any] = dict(result.extra.get("validation") or {})
    timeline = result.timeline
    run_id_af = airflow_run_id or summary.get("airflowRunId")
    when = (generated_at or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")

    if result.aborted:
        verdict, badge = f"STOPPED ({result.abort_cause})", "bad"
    elif result.gate_failures:
        verdict, badge = "GATE FAILED", "bad"
    elif result.breaches:
        verdict, badge = "CHANGE LIMIT", "bad"
    elif not result.ok:
        verdict, badge = "NOT ALL SYNCED", "bad"
    elif counts.get("rejected"):
        verdict, badge = "OK, WITH REJECTED ROWS", "warn"
    elif result.warnings:
        verdict, badge = "OK, WITH WARNINGS", "warn"
    else:
        verdict, badge = "OK", "ok"

    e = html.escape
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>POLYV sync {e(result.run_id)}: {e(verdict)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f'<h1>POLYV sync <code>{e(result.run_id)}</code> <span class="badge {badge}" id="verdict">'
        f"{e(verdict)}</span></h1>",
        '<p class="muted">'
        + " &middot; ".join(
            x
            for x in (
                f"appId <code>{e(result.app_id)}</code>",
                f"Airflow run <code>{e(str(run_id_af))}</code>" if run_id_af else "",
                "dry run" if result.dry_run else "",
                f"{result.duration_s:.1f} s",
                f"page written {e(when)}",
            )
            if x
        )
        + "</p>",
        f'<p class="summary">{e(result.summary_line())}</p>',
        _links_html(links, result.report_location),
        '<div class="cards" id="counts">',
        _card("items", result.items),
        *(_card(s, n, s) for s, n in counts.items() if n or s in ("sent", "rejected", "failed")),
        _card("save requests", result.requests_sent),
        "</div>",
    ]
    if result.aborted:
        parts.append(f'<p><span class="badge bad">stopped</span> {e(result.aborted)}</p>')
    for gate in result.gate_failures:
        parts.append(f'<p><span class="badge bad">gate</span> {e(gate)}</p>')
    for breach in result.breaches:
        parts.append(f'<p><span class="badge bad">{e(breach.code)}</span> {e(breach.message)}</p>')
    for warning in result.warnings:
        parts.append(f'<p class="notice"><span class="badge warn">warning</span> {e(warning)}</p>')
    parts.append(_changes_html(result.changes, result.removed))
    if result.extra.get("plan"):
        from polyv_connector.planpage import plan_html

        parts.append(plan_html(result.extra["plan"]))

    parts.append("<h2>Items by status and by reason</h2>")
    charts = [_figure(_status_chart(counts), "Items by status", "chart-status")]
    if by_reason:
        charts.append(_figure(_reason_chart(by_reason), "Items not sent, by reason code", "chart-reasons"))
    parts.append('<div class="charts">' + "".join(charts) + "</div>")
    parts.append(_count_table(counts, by_reason))

    parts.append("<h2>Requests over time</h2>")
    parts.append(_timeline_html(timeline, result))
    parts.append(_phases_html(result.phases, result.concurrency))

    parts.append("<h2>Data quality: gates and expectations</h2>")
    parts.append(_validation_html(validation, result.gate_failures, result.items))

    parts.append("<h2>First problem rows</h2>")
    problem_total = sum(counts[s] for s in ("rejected", *sorted(UNSUCCESSFUL)))
    parts.append(_problems_html(problems, problem_total))
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _changes_html(changes: Mapping[str, int], removed: int | None) -> str:
    """The planned changes by kind, and the keys a whole-source run no longer read."""
    cards = [_card(f"changes: {kind}", int(n)) for kind, n in changes.items()]
    if removed is not None:
        cards.append(_card("removed (POLYV keeps them)", removed))
    return '<div class="cards" id="changes">' + "".join(cards) + "</div>"


def _card(label: str, value: int, status: str | None = None) -> str:
    colour = f' style="border-left:4px solid {STATUS_COLOURS[status]}"' if status else ""
    key = f' data-count="{html.escape(label)}"'
    return f'<div class="card"{colour}{key}><b>{value:,}</b><span>{html.escape(label)}</span></div>'


def _links_html(links: PageLinks, report_location: str | None) -> str:
    items = []
    if links.report:
        items.append(f'<a id="link-report" href="{html.escape(links.report)}">report (Parquet)</a>')
    elif report_location:
        items.append(f"report: <code>{html.escape(report_location)}</code>")
    if links.data_docs:
        items.append(
            f'<a id="link-data-docs" href="{html.escape(links.data_docs)}">Data Docs</a>'
            '<span class="muted"> (GX loads its style from CDNs: offline it shows unstyled)</span>'
        )
    if links.validation_json:
        items.append(f'<a href="{html.escape(links.validation_json)}">validation result (JSON)</a>')
    return f'<p class="links">{" ".join(items)}</p>' if items else ""


def _count_table(counts: Mapping[str, int], by_reason: Mapping[str, int]) -> str:
    rows = "".join(f'<tr><td>{html.escape(s)}</td><td class="n">{n:,}</td></tr>' for s, n in counts.items() if n)
    rows = rows or "<tr><td colspan=2>no items</td></tr>"
    table = f'<table id="status-table"><tr><th>status</th><th>items</th></tr>{rows}</table>'
    if by_reason:
        reason_rows = "".join(
            f'<tr><td><code>{html.escape(code)}</code></td><td class="n">{n:,}</td></tr>'
            for code, n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        table += f'<table id="reason-table"><tr><th>reasonCode</th><th>items</th></tr>{reason_rows}</table>'
    return f'<div class="cards">{table}</div>'


def _timeline_html(timeline: TimelineSummary | None, result: SyncResult) -> str:
    if timeline is None or not timeline.seconds:
        if result.dry_run:
            why = "Dry run: nothing was sent."
        elif result.requests_sent:
            why = f"{result.requests_sent:,} save request(s); no per-second timeline was recorded for this run."
        else:
            why = "Nothing was sent."
        return f'<p class="muted" id="timeline-none">{why}</p>'
    e = html.escape
    p50 = f"{timeline.latency_p50_s * 1000:.0f} ms" if timeline.latency_p50_s is not None else "n/a"
    p95 = f"{timeline.latency_p95_s * 1000:.0f} ms" if timeline.latency_p95_s is not None else "n/a"
    causes = ", ".join(f"<code>{e(c)}</code> {n:,}" for c, n in timeline.retries_by_cause.items()) or "none"
    facts = (
        '<div class="cards" id="timeline-facts">'
        + _card("requests", sum(timeline.requests))
        + _card("retries", sum(timeline.retries))
        + _card("split batches", sum(timeline.splits))
        + f'<div class="card"><b>{p50}</b><span>latency p50</span></div>'
        + f'<div class="card"><b>{p95}</b><span>latency p95</span></div>'
        + f'<div class="card"><b>{timeline.budget_wait_s:.1f} s</b><span>waiting for the budget</span></div>'
        + f'<div class="card"><b>{timeline.budget_rps:g}/s</b><span>request budget</span></div>'
        + "</div>"
    )
    return (
        facts
        + f"<p>Retries by cause: {causes}</p>"
        + _figure(
            _timeline_chart(timeline),
            "Save requests per second against the budget; retries and split batches",
            "chart-timeline",
            wide=True,
        )
    )


#: How the page names each phase of :attr:`SyncResult.phases` (the summary's ``phaseSeconds``).
PHASE_LABELS = {
    "readAndPlan": "reading and planning",
    "budgetWait": "waiting for the budget (summed over requests)",
    "sending": "sending",
    "report": "writing the report",
}


def _phases_html(phases: Mapping[str, float], concurrency: int) -> str:
    """Where the run's time went (the page's own drawing time is in the summary, not here)."""
    cards = [
        f'<div class="card" data-phase="{html.escape(k)}"><b>{phases[k]:.2f} s</b>'
        f"<span>{html.escape(label)}</span></div>"
        for k, label in PHASE_LABELS.items()
        if k in phases
    ]
    if not cards:
        return ""
    cards.append(f'<div class="card"><b>{concurrency}</b><span>requests in flight at most</span></div>')
    return '<div class="cards" id="phases">' + "".join(cards) + "</div>"


def _validation_html(validation: Mapping[str, Any], gate_failures: Sequence[str], items: int) -> str:
    e = html.escape
    if not validation:
        if gate_failures:
            return "<p>Gates failed: " + "; ".join(e(g) for g in gate_failures) + "</p>"
        return '<p class="muted" id="validation-none">No expectation suite for this run (built-in row checks only).</p>'
    success = validation.get("success")
    badge = '<span class="badge ok">passed</span>' if success else '<span class="badge bad">failed</span>'
    if success is None:
        badge = '<span class="badge warn">not run</span>'
    head = (
        f"<p>Suite <code>{e(str(validation.get('suite')))}</code> {badge} &middot; "
        f"{int(validation.get('itemsRejected') or 0):,} of {int(validation.get('items') or items):,} items "
        "rejected by row expectations</p>"
    )
    rows = []
    for x in validation.get("expectations") or []:
        ok = x.get("success")
        mark = "&#10004;" if ok else ("&#10008;" if ok is False else "&ndash;")
        unexpected = x.get("unexpectedCount")
        rows.append(
            "<tr>"
            f"<td>{mark}</td><td><code>{e(str(x.get('type')))}</code></td><td>{e(str(x.get('column') or ''))}</td>"
            f"<td>{e(str(x.get('action') or ''))}</td>"
            f'<td class="n">{"" if unexpected is None else f"{int(unexpected):,}"}</td>'
            f"<td>{e(str(x.get('error') or ''))}</td></tr>"
        )
    table = (
        '<table id="expectations"><tr><th></th><th>expectation</th><th>column</th><th>action</th>'
        "<th>unexpected</th><th>error</th></tr>" + "".join(rows) + "</table>"
    )
    gates = "".join(f'<p><span class="badge bad">gate</span> {e(g)}</p>' for g in validation.get("gateFailures") or [])
    return head + gates + table


def _problems_html(problems: Sequence[Mapping[str, Any]], total: int) -> str:
    if not problems and total:
        return (
            f'<p id="problems-none">{total:,} rejected, failed, in-doubt or unattempted item(s): '
            "see the report's <code>reasonCode</code> and <code>reason</code> columns.</p>"
        )
    if not problems:
        return '<p class="muted" id="problems-none">No rejected, failed, in-doubt or unattempted items.</p>'
    from polyv_connector.bounds import REASON_CHARS, VIEWER_ID_CHARS, cut

    e = html.escape
    # Cut before escaping: the data decides a viewerId's length, the page's size must not follow.
    rows = "".join(
        "<tr>"
        f'<td class="n">{e(str(p.get("rowNumber", "")))}</td>'
        f"<td><code>{e(cut(p.get('viewerId', ''), VIEWER_ID_CHARS))}</code></td>"
        f"<td><code>{e(str(p.get('reasonCode', '')))}</code></td>"
        f"<td>{e(cut(p.get('reason', ''), REASON_CHARS))}</td></tr>"
        for p in problems
    )
    more = f'<p class="muted">The first {len(problems)} of {total:,}; the report has them all.</p>'
    return (
        '<table id="problems"><tr><th>row</th><th>viewerId</th><th>reasonCode</th><th>reason</th></tr>'
        + rows
        + "</table>"
        + more
    )


# ---- charts: inline SVG (polyv_connector.svgchart) ------------------------------------------------
def _figure(svg: str, caption: str, element_id: str, wide: bool = False) -> str:
    css = ' class="wide"' if wide else ""
    return f'<figure id="{element_id}"{css}>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>'


def _hbar(labels: Sequence[str], values: Sequence[int], colours: Sequence[str]) -> str:
    from polyv_connector.svgchart import hbar

    return hbar(labels, values, colours)


def _status_chart(counts: Mapping[str, int]) -> str:
    shown = [s for s in STATUSES if counts.get(s)] or ["sent"]
    return _hbar(shown, [int(counts.get(s, 0)) for s in shown], [STATUS_COLOURS[s] for s in shown])


def _reason_chart(by_reason: Mapping[str, int]) -> str:
    ordered = sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    # Codes named like a status (unchanged, duplicate, dry_run) take its colour; problems are orange.
    colours = [STATUS_COLOURS.get(c, "#ef6c00") for c, _ in ordered]
    return _hbar([c for c, _ in ordered], [n for _, n in ordered], colours)


def _bucketed(timeline: TimelineSummary) -> tuple[int, list[float], list[float], list[float], list[float]]:
    """(bucket width s, bucket starts, mean requests/s, mean retries/s, splits per bucket)."""
    n = len(timeline.seconds)
    width = max(1, -(-n // MAX_TIMELINE_POINTS))
    starts, req, ret, spl = [], [], [], []
    for i in range(0, n, width):
        span = min(width, n - i)
        starts.append(float(timeline.seconds[i]))
        req.append(sum(timeline.requests[i : i + span]) / span)
        ret.append(sum(timeline.retries[i : i + span]) / span)
        spl.append(float(sum(timeline.splits[i : i + span])))
    return width, starts, req, ret, spl


def _timeline_chart(timeline: TimelineSummary) -> str:
    from polyv_connector.svgchart import steps

    width, _starts, req, ret, spl = _bucketed(timeline)
    per = "s" if width == 1 else f"{width} s buckets"
    return steps(width, req, ret, spl, timeline.budget_rps, f"seconds since sending started ({per})")


# ---- writing -------------------------------------------------------------------------------------
def links_for(page_path: str, report_path: str | None, validation: Mapping[str, Any] | None) -> PageLinks:
    """The page's links to the report and the validation outputs, relative to the page."""
    validation = validation or {}
    return PageLinks(
        report=relative_link(report_path, page_path),
        data_docs=relative_link(validation.get("dataDocsPage") or validation.get("dataDocs"), page_path),
        validation_json=relative_link(validation.get("resultJson"), page_path),
    )


def write_run_page(
    result: SyncResult,
    page_path: str,
    *,
    report_path: str | None = None,
    airflow_run_id: str | None = None,
) -> str:
    """Render and write the page to ``page_path`` (a local path or an fsspec URL); returns its
    absolute path (or the URL). The file is replaced whole: a reader never sees half a page."""
    began = time.perf_counter()
    links = links_for(page_path, report_path, result.extra.get("validation"))
    page = render_run_page(result, links=links, airflow_run_id=airflow_run_id)
    try:
        return _write_page(page, page_path)
    finally:
        # The summary written after the page (CLI, XCom) says how long the page took.
        result.phases["page"] = time.perf_counter() - began


def _write_page(page: str, page_path: str) -> str:
    if "://" in page_path:
        import fsspec

        with fsspec.open(page_path, "w", encoding="utf-8") as f:
            f.write(page)
        return page_path
    target = os.path.abspath(page_path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, target)
    return target
