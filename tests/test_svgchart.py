"""The run page's SVG charts: bars and steps scaled to their values, labels escaped, no URL."""

from __future__ import annotations

import re

from polyv_connector.svgchart import hbar, nice_ticks, steps


def test_ticks_are_round_and_cover_the_top() -> None:
    assert nice_ticks(880) == [0, 200, 400, 600, 800, 1000]
    assert nice_ticks(3, integer=True) == [0, 1, 2, 3]
    assert nice_ticks(0) == [0.0, 1.0]


def test_bars_are_proportional_and_labels_escaped() -> None:
    svg = hbar(["sent", "<b>x</b>"], [800, 200], ["#2e7d32", "#ef6c00"])
    widths = [float(w) for w in re.findall(r'<rect [^>]*width="([0-9.]+)"', svg)]
    assert abs(widths[0] - 4 * widths[1]) < 0.5 and widths[1] > 0
    assert "&lt;b&gt;x&lt;/b&gt;" in svg and "<b>" not in svg
    assert ">800<" in svg and "http" not in svg


def test_steps_draw_the_budget_and_each_split() -> None:
    svg = steps(1, [90.0, 100.0, 95.0], [0.0, 2.0, 0.0], [0.0, 1.0, 0.0], 100.0, "seconds (s)")
    assert "budget 100/s" in svg and "retries/s" in svg and "split batch" in svg
    assert svg.count('fill="#6a1b9a"') == 2  # one marker, one legend key
    assert "http" not in svg and svg.startswith("<svg viewBox=")
