"""Retry policy, token bucket and response classification: pure, with injected clocks."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
import requests

from polyv_connector.transport.classify import Outcome, classify_exception, classify_response
from polyv_connector.transport.ratelimit import TokenBucket
from polyv_connector.transport.retry import RetryPolicy, call_with_retry


def test_backoff_is_full_jitter_within_exponential_cap() -> None:
    p = RetryPolicy(max_attempts=5, base_s=0.5, cap_s=4.0)
    rng = random.Random(1)
    for attempt, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (6, 4.0)]:
        waits = [p.backoff_s(attempt, rng) for _ in range(200)]
        assert min(waits) >= 0 and max(waits) <= cap and max(waits) > cap * 0.8
    assert p.should_retry(4) and not p.should_retry(5)


def test_token_bucket_holds_the_rate_without_real_sleeping() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(rate=100, burst=10, clock=lambda: now[0], sleep=sleep)
    for _ in range(1010):
        bucket.acquire()
    # 1010 requests at 100/s with a burst of 10 take 10 s: never more than the rate allows.
    assert now[0] == pytest.approx(10.0, abs=0.02)


@pytest.mark.parametrize(
    ("status", "body", "kind", "cause"),
    [
        (200, b'{"code":200,"status":"success","requestId":"r","data":null,"success":true}', "ok", None),
        (400, b'{"code":400,"status":"error","error":{"code":20002,"desc":"param validate error"}}', "data", None),
        (403, b'{"code":403,"status":"error","error":{"code":403,"desc":"invalid signature."}}', "fatal", "auth"),
        (400, b'{"code":400,"status":"error","error":{"code":20001,"desc":"application not found."}}', "fatal", "auth"),
        (400, b'{"code":400,"status":"error","error":{"code":400,"desc":"invalid timestamp."}}', "fatal", "clock"),
        (
            403,
            b'{"code":403,"status":"error","error":{"code":403,"desc":"qps exceeds number of calls"}}',
            "blocked",
            None,
        ),
        (200, b'{"code":429,"message":"qps exceeds number of calls"}', "blocked", None),
        (429, b"Too Many Requests", "blocked", None),
        (500, b'{"code":500,"status":"fail","error":{"code":500,"desc":"undefined error"}}', "transient", None),
        (502, b"<html>Bad Gateway</html>", "transient", None),
        (200, b"<html>captive portal</html>", "transient", None),
        (404, b"<html>not found</html>", "fatal", "endpoint"),
        # a body larger than the cap, left unread (None): a failed attempt, retried like a 5XX
        (200, None, "transient", None),
        (500, None, "transient", None),
        (403, None, "transient", None),
    ],
)
def test_classify_response(status: int, body: bytes | None, kind: str, cause: str | None) -> None:
    out = classify_response(status, body)
    assert out.kind == kind and out.fatal_cause == cause
    assert out.reason_code == ("response_too_large" if body is None else None)


def test_a_body_too_large_is_named_in_our_words_only() -> None:
    out = classify_response(200, None, {"Retry-After": "3"})
    assert out.desc == "HTTP 200 with a body larger than 1 MiB (not read)"
    assert out.retry_after_s == 3.0  # honoured as for any transient answer


def test_classify_exceptions() -> None:
    assert classify_exception(requests.ReadTimeout()).kind == "transient"
    assert classify_exception(requests.ConnectionError()).kind == "transient"
    with pytest.raises(ValueError, match="programming error"):
        classify_exception(ValueError("programming error"))


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (403, b"<html>Forbidden by firewall</html>", "blocked"),
        (401, b"Unauthorized", "blocked"),
        (408, b'{"code":408,"status":"error","error":{"code":408,"desc":"timeout"}}', "transient"),
        (302, b"", "fatal"),
        (301, b'{"code":301}', "fatal"),
    ],
)
def test_classify_edge_statuses(status: int, body: bytes, kind: str) -> None:
    assert classify_response(status, body).kind == kind


def test_every_requests_error_is_classified_without_its_text() -> None:
    url_error = requests.exceptions.InvalidURL("http://x/?sign=ABCDEF")
    out = classify_exception(url_error)
    assert out.kind == "fatal"
    assert "ABCDEF" not in (out.desc or "")
    assert classify_exception(requests.exceptions.ContentDecodingError()).kind == "transient"
    assert classify_exception(requests.exceptions.TooManyRedirects()).kind == "fatal"


# --------------------------------------------------------------------------- the one retry loop


def _calls(*kinds: str) -> tuple[list[str], Callable[[], Outcome]]:
    """A call that answers ``kinds`` in turn, and the log of the answers it gave."""
    given: list[str] = []
    answers = iter(kinds)

    def call() -> Outcome:
        given.append(next(answers))
        return Outcome(given[-1])  # type: ignore[arg-type]

    return given, call


@pytest.mark.parametrize("final", ["ok", "data", "fatal", "blocked"])
def test_call_with_retry_retries_transients_and_returns_on_a_final_answer(final: str) -> None:
    given, call = _calls("transient", "transient", final, "ok")
    slept: list[float] = []
    done = call_with_retry(call, RetryPolicy(5, 1.0, 8.0), random.Random(3), slept.append)
    assert done.outcome is not None and done.outcome.kind == final
    assert done.attempts == 3 and not done.stopped and given == ["transient", "transient", final]
    assert len(slept) == 2 and 0 <= slept[0] <= 1.0 and 0 <= slept[1] <= 2.0


def test_call_with_retry_gives_up_after_max_attempts_without_a_last_sleep() -> None:
    given, call = _calls(*["transient"] * 5)
    slept: list[float] = []
    done = call_with_retry(call, RetryPolicy(max_attempts=3), random.Random(1), slept.append)
    assert done.outcome is not None and done.outcome.kind == "transient"
    assert done.attempts == 3 and len(given) == 3 and len(slept) == 2


def test_call_with_retry_stops_before_any_request_once_told_to() -> None:
    given, call = _calls("transient", "transient", "ok")
    stop = [False]

    def sleep(_: float) -> None:
        stop[0] = True  # another worker opened the circuit while this one waited

    done = call_with_retry(call, RetryPolicy(), random.Random(1), sleep, should_stop=lambda: stop[0])
    assert done.stopped and done.attempts == 1 and given == ["transient"]
    never = call_with_retry(call, RetryPolicy(), random.Random(1), sleep, should_stop=lambda: True)
    assert never.stopped and never.attempts == 0 and never.outcome is None and given == ["transient"]


# --------------------------------------------------------------------------- Retry-After

HTML_503 = b"<html><title>503 Service Temporarily Unavailable</title></html>"
FAIL_500 = b'{"code":500,"status":"fail","error":{"code":500,"desc":"undefined error"}}'
QPS_403 = b'{"code":403,"status":"error","error":{"code":403,"desc":"qps exceeds number of calls"}}'
DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
NOW_OF_DATE = 1445412480.0  # DATE as epoch seconds


@pytest.mark.parametrize(
    ("status", "body", "headers", "now", "kind", "retry_after_s"),
    [
        # delta-seconds, any header case
        (503, HTML_503, {"Retry-After": "7"}, None, "transient", 7.0),
        (500, FAIL_500, {"retry-after": " 0 "}, None, "transient", 0.0),
        (502, HTML_503, {"RETRY-AFTER": "9" * 400}, None, "transient", math.inf),  # the policy bounds it
        # HTTP-date, measured from the answer's Date (server clock) even when ours is far off
        (503, HTML_503, {"Retry-After": DATE, "Date": "Wed, 21 Oct 2015 07:27:30 GMT"}, 0.0, "transient", 30.0),
        (503, HTML_503, {"Retry-After": "Sun Nov  6 08:49:37 1994", "Date": "Sun, 06 Nov 1994 08:49:07 GMT"}, None,
         "transient", 30.0),  # obsolete asctime form, no zone: UTC
        # ... from our clock when there is no Date, and never negative
        (503, HTML_503, {"Retry-After": DATE}, NOW_OF_DATE - 12, "transient", 12.0),
        (503, HTML_503, {"Retry-After": DATE}, NOW_OF_DATE + 99, "transient", 0.0),
        (503, HTML_503, {"Retry-After": DATE}, None, "transient", None),  # nothing to measure it from
        # unparsable: fall back to the backoff
        (503, HTML_503, {"Retry-After": "soon"}, None, "transient", None),
        (503, HTML_503, {"Retry-After": "-5"}, None, "transient", None),
        (503, HTML_503, {"Retry-After": "1.5"}, None, "transient", None),
        (503, HTML_503, {}, None, "transient", None),
        (503, HTML_503, None, None, "transient", None),
        # only transient outcomes carry it: a block stays a block, data stays data
        (429, b"Too Many Requests", {"Retry-After": "60"}, None, "blocked", None),
        (403, QPS_403, {"Retry-After": "60"}, None, "blocked", None),
        (400, b'{"code":400,"status":"error","error":{"code":20002,"desc":"param validate error"}}',
         {"Retry-After": "5"}, None, "data", None),
        (200, b'{"code":200,"status":"success","data":null,"success":true}', {"Retry-After": "5"}, None, "ok", None),
    ],
)  # fmt: skip
def test_classify_response_reads_retry_after(
    status: int, body: bytes, headers: dict[str, str] | None, now: float | None, kind: str, retry_after_s: float | None
) -> None:
    out = classify_response(status, body, headers, now=now)
    assert out.kind == kind and out.retry_after_s == retry_after_s


def test_retry_after_is_waited_as_given_but_never_past_the_cap() -> None:
    p = RetryPolicy(max_attempts=5, base_s=0.5, cap_s=4.0)
    rng = random.Random(2)
    assert p.wait_s(1, rng, 2.5) == 2.5 and p.wait_s(3, rng, 0.0) == 0.0
    assert p.wait_s(1, rng, 120.0) == 4.0 and p.wait_s(1, rng, math.inf) == 4.0
    assert 0 <= p.wait_s(1, rng, None) <= 0.5  # no header: the jittered backoff


def test_call_with_retry_sleeps_the_bounded_retry_after() -> None:
    answers = iter([Outcome("transient", 503, retry_after_s=3.0), Outcome("transient", 503, retry_after_s=99.0)])
    slept: list[float] = []
    done = call_with_retry(
        lambda: next(answers, Outcome("ok", 200)), RetryPolicy(5, 0.5, 10.0), random.Random(1), slept.append
    )
    assert done.outcome == Outcome("ok", 200) and done.attempts == 3 and slept == [3.0, 10.0]
