from __future__ import annotations

import io
import logging

from polyv_connector.progress import Progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_live_line_with_rate_and_eta() -> None:
    now = [0.0]
    out = Tty()
    p = Progress(out, interval_s=1.0, clock=lambda: now[0])
    p.start("sending", 1000)
    now[0] = 2.0
    p.advance(200)
    p.finish()
    text = out.getvalue()
    assert "\rsending: 200/1,000 items, 100 items/s, ETA 8s" in text
    assert text.endswith("\n")


def test_logs_get_plain_lines_at_most_every_interval(caplog) -> None:
    caplog.set_level(logging.INFO, logger="polyv_connector")
    now = [0.0]
    p = Progress(io.StringIO(), interval_s=10.0, clock=lambda: now[0])
    p.start("planning", 0)
    for t in (1.0, 5.0, 11.0, 12.0):
        now[0] = t
        p.advance(10)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["planning: 30 items, 3 items/s"]
    assert "\r" not in caplog.text
