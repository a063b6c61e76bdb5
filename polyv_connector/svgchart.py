"""The run page's two kinds of chart, written as plain SVG text: horizontal bars and a step chart.

Why not a charting library: the page is drawn after the last answer, on the run's way out, so
whatever it imports is paid at exit by every run. Measured here (``bench/bench_runpage.py``;
docs/benchmarks.md): matplotlib costs 0.36-0.44 s to import and about 30 MB of memory, then
0.08 s to draw the page's three charts; pygal (LGPL, two more dependencies) 0.08 s to import,
6 MB, and 0.02 s to draw; these two shapes written directly cost no import and about a
millisecond. The charts need nothing a library adds (no layout engine, no fonts, no
interaction): bars, a filled step line, a dashed budget line, ticks and a legend.

Pure: numbers in, a string out (no namespace URL, no script, text kept as text). Every label is
escaped: reason codes and legends come from the run, never trusted as markup.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

FONT = 'font-family="system-ui,sans-serif"'
AXIS = "#52606d"
#: About how wide one character of the 11 px labels is, to leave room for the longest label.
CHAR_W = 6.6


def nice_ticks(top: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values from 0 to at least ``top`` (steps of 1, 2 or 5 times a power of ten)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _num(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.4g}"


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 11, fill: str = "#1f2933") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{fill}" {FONT}>'
        f"{html.escape(text)}</text>"
    )


def _svg(width: float, height: float, parts: list[str]) -> str:
    return f'<svg viewBox="0 0 {width:.0f} {height:.0f}" role="img">{"".join(parts)}</svg>'


def hbar(labels: Sequence[str], values: Sequence[int], colours: Sequence[str]) -> str:
    """One bar per label, its value written after it; integer ticks along the bottom."""
    row, width = 24.0, 600.0
    left = 12 + CHAR_W * max((len(s) for s in labels), default=4)
    top_v = max(values, default=0)
    ticks = nice_ticks(top_v * 1.15 if top_v else 1, integer=True)
    right = width - 16
    span = right - left
    scale = span / ticks[-1]
    height = 10 + row * len(labels) + 28
    base = 10 + row * len(labels)
    parts: list[str] = []
    for i, (label, value, colour) in enumerate(zip(labels, values, colours, strict=True)):
        y = 10 + i * row
        w = value * scale
        parts.append(f'<rect x="{left:.1f}" y="{y + 4:.1f}" width="{w:.1f}" height="{row - 8:.1f}" fill="{colour}"/>')
        parts.append(_text(left - 6, y + row / 2 + 4, label, "end"))
        parts.append(_text(left + w + 4, y + row / 2 + 4, f"{value:,}", size=10))
    parts.append(f'<line x1="{left:.1f}" y1="{base:.1f}" x2="{right:.1f}" y2="{base:.1f}" stroke="{AXIS}"/>')
    parts.append(f'<line x1="{left:.1f}" y1="10" x2="{left:.1f}" y2="{base:.1f}" stroke="{AXIS}"/>')
    for t in ticks:
        x = left + t * scale
        parts.append(f'<line x1="{x:.1f}" y1="{base:.1f}" x2="{x:.1f}" y2="{base + 4:.1f}" stroke="{AXIS}"/>')
        parts.append(_text(x, base + 16, _num(t), "middle", 9, AXIS))
    return _svg(width, height, parts)


def _stairs(values: Sequence[float], x0: float, step: float, y_of: float, scale: float) -> str:
    """A closed path of the steps ``values`` (one per ``step`` of width), filled down to 0."""
    points = [f"M{x0:.1f},{y_of:.1f}"]
    x = x0
    for v in values:
        points.append(f"V{y_of - v * scale:.1f}")
        x += step
        points.append(f"H{x:.1f}")
    points.append(f"V{y_of:.1f}Z")
    return "".join(points)


def steps(
    edges_width: int,
    requests: Sequence[float],
    retries: Sequence[float],
    splits: Sequence[float],
    budget: float,
    xlabel: str,
) -> str:
    """Requests/s (and retries/s) per bucket of ``edges_width`` seconds as filled steps from 0,
    the budget as a dashed line, a marker under each bucket with split batches, and a legend."""
    width, height = 1100.0, 320.0
    left, right, top, bottom = 56.0, width - 12, 30.0, height - 44
    n = len(requests)
    x_ticks = nice_ticks(n * edges_width, count=10, integer=True)
    y_ticks = nice_ticks(max(max(requests, default=0), budget) * 1.15 or 1)
    x_scale = (right - left) / (n * edges_width or 1)
    y_scale = (bottom - top) / y_ticks[-1]
    step = edges_width * x_scale
    parts = [f'<path d="{_stairs(requests, left, step, bottom, y_scale)}" fill="#90caf9"/>']
    legend = [("requests/s", "#90caf9", "box")]
    if any(retries):
        parts.append(f'<path d="{_stairs(retries, left, step, bottom, y_scale)}" fill="#ef9a9a"/>')
        legend.append(("retries/s", "#ef9a9a", "box"))
    yb = bottom - budget * y_scale
    parts.append(
        f'<line x1="{left:.1f}" y1="{yb:.1f}" x2="{right:.1f}" y2="{yb:.1f}" stroke="#c62828" '
        'stroke-dasharray="6 4" stroke-width="1"/>'
    )
    legend.append((f"budget {budget:g}/s", "#c62828", "line"))
    marks = [left + (i + 0.5) * step for i, s in enumerate(splits) if s]
    for x in marks:
        parts.append(f'<path d="M{x - 5:.1f},{bottom + 1:.1f}H{x + 5:.1f}L{x:.1f},{bottom + 9:.1f}Z" fill="#6a1b9a"/>')
    if marks:
        legend.append(("split batch", "#6a1b9a", "mark"))
    parts.append(f'<line x1="{left:.1f}" y1="{bottom:.1f}" x2="{right:.1f}" y2="{bottom:.1f}" stroke="{AXIS}"/>')
    parts.append(f'<line x1="{left:.1f}" y1="{top:.1f}" x2="{left:.1f}" y2="{bottom:.1f}" stroke="{AXIS}"/>')
    for t in x_ticks:
        x = left + t * x_scale
        if x <= right + 0.5:
            parts.append(f'<line x1="{x:.1f}" y1="{bottom:.1f}" x2="{x:.1f}" y2="{bottom + 4:.1f}" stroke="{AXIS}"/>')
            parts.append(_text(x, bottom + 16, _num(t), "middle", 9, AXIS))
    for t in y_ticks:
        y = bottom - t * y_scale
        parts.append(f'<line x1="{left - 4:.1f}" y1="{y:.1f}" x2="{left:.1f}" y2="{y:.1f}" stroke="{AXIS}"/>')
        parts.append(_text(left - 7, y + 3, _num(t), "end", 9, AXIS))
    parts.append(_text((left + right) / 2, height - 8, xlabel, "middle", 11))
    parts.append(
        f'<text transform="translate(14,{(top + bottom) / 2:.1f}) rotate(-90)" text-anchor="middle" '
        f'font-size="11" fill="#1f2933" {FONT}>per second</text>'
    )
    x = right - 130.0 * len(legend)
    for label, colour, kind in legend:
        if kind == "box":
            parts.append(f'<rect x="{x:.1f}" y="8" width="14" height="10" fill="{colour}"/>')
        elif kind == "line":
            parts.append(
                f'<line x1="{x:.1f}" y1="13" x2="{x + 14:.1f}" y2="13" stroke="{colour}" stroke-dasharray="4 3"/>'
            )
        else:
            parts.append(f'<path d="M{x + 2:.1f},8H{x + 12:.1f}L{x + 7:.1f},17Z" fill="{colour}"/>')
        parts.append(_text(x + 19, 17, label, size=10))
        x += 130.0
    return _svg(width, height, parts)
