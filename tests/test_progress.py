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


def test_send_progress_is_one_aggregated_line_every_interval_with_the_timeline(caplog) -> None:
    # A fake clock drives both the progress line and the timeline: nothing sleeps.
    from polyv_connector.timeline import TimelineRecorder

    caplog.set_level(logging.INFO, logger="polyv_connector")
    now = [0.0]
    timeline = TimelineRecorder(budget_rps=100.0, clock=lambda: now[0])
    p = Progress(io.StringIO(), interval_s=5.0, clock=lambda: now[0])
    timeline.start()
    p.start("sending", 400, detail=timeline.status_text)
    for t in range(1, 13):  # 12 s: 10 requests a second, one retry after a 500 each second
        now[0] = float(t)
        for _ in range(9):
            timeline.request()
            timeline.answered(0.05, budget_wait_s=0.01)
        timeline.request(retry_of="http_500")
        if t == 3:
            timeline.split()
        p.advance(10)
        p.tick()  # ticks between answers never add a line of their own
    p.tick()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "sending: 50/400 items, 10 items/s, ETA 35s; 50 requests, 5 retries (http_500 5), "
        "1 split batches, 0.5s waiting for the budget",
        "sending: 100/400 items, 10 items/s, ETA 30s; 100 requests, 10 retries (http_500 10), "
        "1 split batches, 0.9s waiting for the budget",
    ]
    p.finish()
    assert caplog.records[-1].getMessage().startswith("sending: 120/400 items, 10 items/s; 120 requests")


def test_a_line_that_says_nothing_new_is_not_repeated(caplog) -> None:
    caplog.set_level(logging.INFO, logger="polyv_connector")
    now = [0.0]
    p = Progress(io.StringIO(), interval_s=1.0, clock=lambda: now[0])
    p.start("sending", 0, detail=lambda: "0 requests")
    now[0] = 0.0
    p.finish()
    p.finish()
    assert [r.getMessage() for r in caplog.records] == ["sending: 0 items, 0 items/s; 0 requests"]
