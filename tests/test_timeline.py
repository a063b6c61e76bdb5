"""The send-phase timeline: per-second buckets, retries by cause, latency percentiles."""

from __future__ import annotations

import threading

import pytest

from polyv_connector.timeline import TimelineRecorder, TimelineSummary, retry_cause


def test_requests_retries_and_splits_land_in_their_second() -> None:
    now = [100.0]
    t = TimelineRecorder(budget_rps=50.0, clock=lambda: now[0])
    t.start()
    t.request()
    now[0] = 100.9
    t.request(retry_of="timeout")
    now[0] = 103.2
    t.split()
    t.request(retry_of="http_502")
    t.request(retry_of="http_502")
    s = t.summary()
    assert isinstance(s, TimelineSummary)
    assert s.seconds == [0, 1, 2, 3]
    assert s.requests == [2, 0, 0, 2] and s.retries == [1, 0, 0, 2] and s.splits == [0, 0, 0, 1]
    assert s.retries_by_cause == {"http_502": 2, "timeout": 1}
    assert s.budget_rps == 50.0 and s.latency_p50_s is None


def test_latency_percentiles_leave_out_the_budget_wait() -> None:
    t = TimelineRecorder(budget_rps=10.0, clock=lambda: 0.0)
    for i in range(1, 101):
        t.answered(i / 100 + 1.0, budget_wait_s=1.0)  # 1 s queued for the budget, then i/100 s
    s = t.summary()
    assert s.latency_p50_s == pytest.approx(0.50) and s.latency_p95_s == pytest.approx(0.95)
    assert s.budget_wait_s == pytest.approx(100.0)


def test_an_empty_timeline_and_threads() -> None:
    assert TimelineRecorder(1.0).summary().seconds == []
    t = TimelineRecorder(1.0, clock=lambda: 0.0)
    workers = [threading.Thread(target=lambda: [t.request() for _ in range(1000)]) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert t.summary().requests == [4000]


@pytest.mark.parametrize(
    ("status", "desc", "cause"),
    [
        (500, "server error", "http_500"),
        (None, "request timed out", "timeout"),
        (None, "connection failed or was reset", "connection"),
        (None, "connection broken or answer garbled while reading it", "connection"),
        (None, None, "transport"),
    ],
)
def test_retry_causes_are_short_stable_names(status, desc, cause) -> None:
    assert retry_cause(status, desc) == cause
