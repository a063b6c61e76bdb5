"""One place that decides what every POLYV answer (or transport failure) means.

Pure: a function of (HTTP status, body, headers, the caller's clock) or of the exception;
nothing is sent or logged.
Kinds, by what the sender must do:

* ``ok`` — confirmed.
* ``transient`` — retry with backoff, re-signed (5XX, gateway pages, timeouts, resets).
* ``data`` — a 40X that blames the request's content: split the batch to find the bad items.
* ``fatal`` — the run cannot succeed (credentials, clock skew, wrong URL): stop at once.
* ``blocked`` — POLYV's per-IP rate-limit block: open the circuit, send nothing more.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Literal

import requests

from polyv_connector.model import MAX_RESPONSE_BYTES
from polyv_connector.reasons import RESPONSE_TOO_LARGE

OutcomeKind = Literal["ok", "transient", "data", "fatal", "blocked"]

BLOCK_MESSAGE = "qps exceeds number of calls"


@dataclass(frozen=True)
class Outcome:
    """What one HTTP exchange meant. ``desc`` is POLYV's own message, or ours when it sent none."""

    kind: OutcomeKind
    http_status: int | None = None
    error_code: int | None = None
    desc: str | None = None
    request_id: str | None = None
    fatal_cause: str | None = None  # "auth" | "clock" | "endpoint" for kind == "fatal"
    #: Seconds the server asked us to wait (``Retry-After``), on ``transient`` outcomes only:
    #: a block stays a block whatever it says. Unbounded here; the retry policy bounds it.
    retry_after_s: float | None = None
    #: The reason code of items this outcome leaves failed when it is the last try, where it
    #: is more precise than ``retries_exhausted`` (``response_too_large``).
    reason_code: str | None = None


def _error_fields(doc: dict[str, object]) -> tuple[int | None, str | None]:
    error = doc.get("error")
    code: object = None
    desc: object = None
    if isinstance(error, dict):
        code, desc = error.get("code"), error.get("desc")
    if desc is None:
        desc = doc.get("message") or doc.get("msg")
    if code is None:
        code = doc.get("code")
    return (code if isinstance(code, int) else None), (str(desc) if desc is not None else None)


_DELTA_SECONDS = re.compile(r"[0-9]+")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # HTTP header names are case-insensitive; a plain dict (as in tests) is not.
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def http_date(text: str) -> float:
    """An HTTP-date as epoch seconds; raises ``ValueError``/``TypeError`` when it is not one."""
    return _http_date(text)


def _http_date(text: str) -> float:
    parsed = parsedate_to_datetime(text.strip())
    # HTTP-dates are always UTC; the obsolete asctime form carries no zone at all.
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def parse_retry_after(value: str, date: str | None = None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).

    An HTTP-date is measured from the answer's own ``Date`` header when there is one (both come
    from the server's clock, so a skewed local clock does not matter), else from ``now`` (epoch
    seconds). A date in the past means 0. Anything unparsable (or a date with nothing to measure
    it from) is None: the caller falls back to its own backoff.
    """
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)  # a huge value becomes inf, which the policy's cap bounds
    try:
        when = _http_date(text)
        reference = _http_date(date) if date else now
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if reference is None or not math.isfinite(when - reference):
        return None
    return max(0.0, when - reference)


def classify_response(
    http_status: int, body: bytes | None, headers: Mapping[str, str] | None = None, *, now: float | None = None
) -> Outcome:
    """Classify an HTTP answer by its status and body (never by headers alone).

    ``body`` ``None`` is a body larger than :data:`~polyv_connector.model.MAX_RESPONSE_BYTES`,
    left unread: a failed attempt (``response_too_large``), retried like a 5XX, whatever the
    status said (a 200 whose answer cannot be read confirms nothing). ``headers`` only add
    ``retry_after_s`` to a ``transient`` outcome; ``now`` (epoch seconds) measures a
    ``Retry-After`` HTTP-date when the answer carries no ``Date``.
    """
    outcome = _too_large(http_status) if body is None else _classify(http_status, body)
    if outcome.kind != "transient" or not headers:
        return outcome
    retry_after = _header(headers, "retry-after")
    if retry_after is None:
        return outcome
    return replace(outcome, retry_after_s=parse_retry_after(retry_after, _header(headers, "date"), now))


def _too_large(http_status: int) -> Outcome:
    # Our words only: nothing of the body (which was not read) reaches a reason or a log.
    return Outcome(
        "transient",
        http_status,
        None,
        f"HTTP {http_status} with a body larger than {MAX_RESPONSE_BYTES >> 20} MiB (not read)",
        reason_code=RESPONSE_TOO_LARGE.code,
    )


def _classify(http_status: int, body: bytes) -> Outcome:
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        doc = None
    if not isinstance(doc, dict):
        return _classify_non_json(http_status, body)
    code, desc = _error_fields(doc)
    request_id = doc.get("requestId") if isinstance(doc.get("requestId"), str) else None
    lowered = (desc or "").lower()
    if BLOCK_MESSAGE in lowered or http_status == 429:
        return Outcome("blocked", http_status, code, desc or BLOCK_MESSAGE, request_id)
    if http_status == 200 and (doc.get("success") is True or doc.get("code") == 200):
        return Outcome("ok", http_status, None, None, request_id)
    if "invalid signature" in lowered or "application not found" in lowered or code == 20001:
        return Outcome("fatal", http_status, code, desc, request_id, fatal_cause="auth")
    if "invalid timestamp" in lowered:
        return Outcome("fatal", http_status, code, desc, request_id, fatal_cause="clock")
    if http_status >= 500 or doc.get("status") == "fail" or (isinstance(doc.get("code"), int) and doc["code"] >= 500):
        return Outcome("transient", http_status, code, desc or "server error", request_id)
    if http_status == 408:
        return Outcome("transient", http_status, code, desc or "request timeout", request_id)
    if http_status in (401, 403, 407):
        return Outcome("fatal", http_status, code, desc or "permission denied", request_id, fatal_cause="auth")
    if 300 <= http_status < 400:
        return Outcome(
            "fatal", http_status, code, desc or f"redirected (HTTP {http_status})", request_id, fatal_cause="endpoint"
        )
    if http_status in (404, 405):
        return Outcome("fatal", http_status, code, desc or "endpoint not found", request_id, fatal_cause="endpoint")
    # Any other 40X (param validate error, param length is incorrect, json format error,
    # param should not be empty...) can be caused by one bad item of the batch.
    return Outcome("data", http_status, code, desc or f"HTTP {http_status}", request_id)


def _classify_non_json(http_status: int, body: bytes) -> Outcome:
    if http_status == 429 or BLOCK_MESSAGE.encode() in body.lower():
        return Outcome("blocked", http_status, None, BLOCK_MESSAGE)
    if http_status in (401, 403, 407):
        # The status of POLYV's block is undocumented (403 is plausible) and a firewall page
        # looks the same: stop rather than keep knocking on a door that may be blocking the IP.
        return Outcome(
            "blocked", http_status, None, f"HTTP {http_status} with a non-JSON body (an IP block or a firewall)"
        )
    if http_status in (404, 405) or 300 <= http_status < 400:
        return Outcome(
            "fatal",
            http_status,
            None,
            f"HTTP {http_status} with a non-JSON body: is the API base URL right?",
            fatal_cause="endpoint",
        )
    # Gateways (502/503/504) and proxies answer HTML; the API itself never does.
    return Outcome("transient", http_status, None, f"HTTP {http_status} with a non-JSON body (gateway or proxy)")


def classify_exception(exc: BaseException) -> Outcome:
    """Transport failures, by type only (their text may hold the signed URL).

    Timeouts, resets and garbled answers are transient; other request errors (bad URL,
    redirect loops, TLS set-up) will not get better by retrying: fatal. Anything that is not
    a ``requests`` error is a programming error and is re-raised.
    """
    if isinstance(exc, requests.Timeout):
        return Outcome("transient", None, None, "request timed out")
    if isinstance(exc, requests.exceptions.SSLError):
        return Outcome(
            "fatal", None, None, "TLS handshake failed (certificate or proxy problem)", fatal_cause="endpoint"
        )
    if isinstance(exc, requests.ConnectionError):
        return Outcome("transient", None, None, "connection failed or was reset")
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return Outcome("transient", None, None, "connection broken or answer garbled while reading it")
    if isinstance(exc, requests.RequestException):
        return Outcome("fatal", None, None, f"request failed: {type(exc).__name__}", fatal_cause="endpoint")
    raise exc
