"""The POLYV HTTP client: one pooled session, requests signed at the moment they are sent."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from polyv_connector.config import Credentials, SendOptions
from polyv_connector.errors import RunAborted
from polyv_connector.model import MAX_RESPONSE_BYTES
from polyv_connector.signing import signed_params
from polyv_connector.transport.classify import Outcome, classify_exception, classify_response, http_date
from polyv_connector.transport.ratelimit import RequestBudget
from polyv_connector.transport.redact import install_log_redaction
from polyv_connector.transport.retry import RetryPolicy, call_with_retry

# Before any request can be logged, whoever imports the client (library use included).
install_log_redaction(quiet=False)
log = logging.getLogger(__name__)

SAVE_PATH = "/live/v4/user/custom-field/viewer-value/save"
LIST_PATH = "/live/v4/user/custom-field/list"
#: The contract's largest field-list page; fewest requests, so the default.
MAX_PAGE_SIZE = 1000
USER_AGENT = "polyv-connector/0.1"
#: The largest clock skew corrected from POLYV's ``Date`` header (as the AWS SDKs do); past it
#: the clock is too wrong to trust and a person must fix it.
MAX_CLOCK_CORRECTION_S = 15 * 60.0


def abort_for(outcome: Outcome) -> RunAborted:
    """The run-stopping error for a ``fatal`` or ``blocked`` outcome, with an actionable message."""
    where = (
        f" (HTTP {outcome.http_status}, requestId {outcome.request_id})"
        if outcome.request_id
        else (f" (HTTP {outcome.http_status})" if outcome.http_status else "")
    )
    if outcome.kind == "blocked":
        return RunAborted(
            "blocked",
            f"POLYV rate limit hit: '{outcome.desc}'{where}. The client IP is blocked for 5 minutes "
            "for every POLYV API call; nothing more was sent. Lower --max-rps (and the number of "
            "parallel syncs), wait 5 minutes, then rerun.",
            http_status=outcome.http_status,
            error_code=outcome.error_code,
            request_id=outcome.request_id,
        )
    hints = {
        "auth": "check the appId and appSecret (POLYV_APP_ID / POLYV_APP_SECRET, or the Airflow "
        "connection's login and password)",
        "clock": "the request timestamp was refused: this machine's clock is probably off by more "
        "than 3 minutes; sync it with NTP",
        "endpoint": "check the API base URL (POLYV_API_BASE_URL or the connection's host)",
    }
    cause = outcome.fatal_cause or "auth"
    return RunAborted(
        cause,
        f"POLYV refused the request: '{outcome.desc}'{where}; {hints.get(cause, '')}. Nothing more was sent.",
        http_status=outcome.http_status,
        error_code=outcome.error_code,
        request_id=outcome.request_id,
    )


def read_capped(resp: requests.Response, limit: int) -> bytes | None:
    """The body of a streamed response, or ``None`` as soon as it proves longer than ``limit``
    bytes (a ``Content-Length`` over it, or ``limit + 1`` bytes read): memory stays bounded
    whatever the server sends. Counted after decompression, so a small gzip bomb is cut too."""
    declared = resp.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(chunk_size=64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class PolyvClient:
    """Talks to one POLYV account. Thread-safe: one ``requests.Session`` shared by all workers."""

    def __init__(
        self,
        credentials: Credentials,
        options: SendOptions | None = None,
        *,
        budget: RequestBudget | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credentials = credentials
        self._options = options or SendOptions()
        self._budget = budget
        self._clock = clock
        self._base = credentials.base_url.rstrip("/")
        self.session = requests.Session()
        pool = max(4, self._options.concurrency)
        adapter = HTTPAdapter(pool_connections=pool, pool_maxsize=pool, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": USER_AGENT})
        self._count_lock = threading.Lock()
        self._counts = {"POST": 0, "GET": 0}
        # Seconds added to the local clock when signing: measured once per client (per run)
        # from POLYV's Date header when it refuses a timestamp.
        self._clock_lock = threading.Lock()
        self._offset_s = 0.0
        self._clock_corrected = False
        # Seconds this thread's requests waited for the budget since it last asked (the sender
        # takes it after each save to tell latency from queueing).
        self._local = threading.local()

    @property
    def budget_rps(self) -> float | None:
        """The rate of the request budget this client draws on, when it has one (requests/s)."""
        rate = getattr(self._budget, "rate", None)
        return float(rate) if isinstance(rate, int | float) else None

    def take_budget_wait_s(self) -> float:
        """Seconds the calling thread waited for the budget since its last call (then reset)."""
        waited: float = getattr(self._local, "budget_wait_s", 0.0)
        self._local.budget_wait_s = 0.0
        return waited

    @property
    def requests_sent(self) -> int:
        """Every HTTP request made so far (field list, saves, retries and split halves)."""
        return sum(self._counts.values())

    @property
    def save_requests_sent(self) -> int:
        """Save requests made so far (retries and split halves included)."""
        return self._counts["POST"]

    @property
    def app_id(self) -> str:
        return self._credentials.app_id

    @property
    def clock_offset_s(self) -> float:
        """The correction applied to the local clock when signing (0 unless POLYV's clock differs)."""
        return self._offset_s

    def _signed_query(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        # Signed now, not when the batch was prepared: timestamps are valid for 3 minutes.
        now = self._clock() + self._offset_s
        params = {"appId": self._credentials.app_id, "timestamp": str(int(now * 1000))}
        if extra:
            params.update(extra)
        return signed_params(params, self._credentials.app_secret.reveal(), self._options.signature_method)

    def _exchange(
        self, method: str, path: str, *, body: bytes | None = None, extra: dict[str, str] | None = None
    ) -> tuple[Outcome, bytes]:
        offset = self._offset_s  # the correction this request is signed with
        outcome, content, date = self._exchange_once(method, path, body=body, extra=extra)
        if outcome.kind == "fatal" and outcome.fatal_cause == "clock":
            corrected, outcome = self._correct_clock(outcome, date, offset)
            if corrected:  # signed again with the corrected time: one more try
                outcome, content, _ = self._exchange_once(method, path, body=body, extra=extra)
        return outcome, content

    def _correct_clock(self, outcome: Outcome, date: str | None, used_offset: float) -> tuple[bool, Outcome]:
        """After ``invalid timestamp``: whether to try again with a corrected clock, and the
        outcome to report if not (the measured skew added to its description)."""
        with self._clock_lock:
            if self._offset_s != used_offset:
                return True, outcome  # another worker corrected it since this request was signed
            if self._clock_corrected:
                return False, outcome  # corrected once already and still refused: do not chase it
            try:
                skew = http_date(date) - self._clock() if date else None
            except (TypeError, ValueError, OverflowError):
                skew = None
            if skew is None:
                return False, replace(outcome, desc=f"{outcome.desc} (no usable Date header to measure the skew)")
            if abs(skew) > MAX_CLOCK_CORRECTION_S:
                return False, replace(
                    outcome,
                    desc=f"{outcome.desc} (this clock is {skew:+.0f}s off POLYV's, more than the "
                    f"{MAX_CLOCK_CORRECTION_S / 60:.0f} minutes corrected automatically)",
                )
            self._offset_s = skew
            self._clock_corrected = True
        log.warning(
            "POLYV refused the request timestamp: this machine's clock is %+.1fs off POLYV's (measured from "
            "its Date header); signing with the corrected time for the rest of the run. Sync the clock with NTP.",
            -skew,
        )
        return True, outcome

    def _exchange_once(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        extra: dict[str, str] | None = None,
    ) -> tuple[Outcome, bytes, str | None]:
        """One request, signed with the corrected clock: its outcome, body and ``Date`` header."""
        if self._budget is not None:
            waiting = time.monotonic()
            try:
                # A save joins a shared budget; the field list read before planning does not.
                self._budget.acquire(join=method == "POST")
            except RunAborted as exc:
                if exc.cause != "blocked":
                    raise
                # A shared budget says POLYV blocked this IP (recorded by this run or another):
                # answer as POLYV would, without sending anything.
                return Outcome("blocked", None, None, str(exc)), b"", None
            finally:
                waited = time.monotonic() - waiting
                self._local.budget_wait_s = getattr(self._local, "budget_wait_s", 0.0) + waited
        headers = {"Content-Type": "application/json; charset=utf-8"} if body is not None else None
        with self._count_lock:
            self._counts[method] += 1
        try:
            resp = self.session.request(
                method,
                self._base + path,
                params=self._signed_query(extra),
                data=body,
                headers=headers,
                timeout=self._options.timeout_s,
                # A redirect would turn the POST into a bodiless GET and carry the signed
                # query to another host: never follow one.
                allow_redirects=False,
                # Streamed, so that no more than the cap is ever read (see read_capped).
                stream=True,
            )
            try:
                content = read_capped(resp, MAX_RESPONSE_BYTES)
            finally:
                resp.close()
        except requests.RequestException as exc:
            return classify_exception(exc), b"", None
        outcome = classify_response(resp.status_code, content, resp.headers, now=self._clock())
        if outcome.kind == "blocked":
            self._share_block()
        return outcome, content or b"", resp.headers.get("Date")

    def _share_block(self) -> None:
        """Tell every run on a shared budget that POLYV blocked the IP, so none of them sends more."""
        record = getattr(self._budget, "record_block", None)
        if not callable(record):
            return  # a plain per-run TokenBucket (or no budget): nobody to tell
        try:
            record()
        except Exception:  # the block still stops this run; the others learn it from POLYV
            log.warning("could not record POLYV's block in the shared request budget", exc_info=True)

    def leave_budget(self) -> None:
        """Give this run's share of a shared budget back: no batch is left to send or retry."""
        leave = getattr(self._budget, "leave", None)
        if callable(leave):
            leave()

    def save(self, body: bytes) -> Outcome:
        """One signed POST of a JSON array body; classified, never raised (except programming errors)."""
        return self._exchange("POST", SAVE_PATH, body=body)[0]

    def list_fields(
        self,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        *,
        page_size: int = MAX_PAGE_SIZE,
    ) -> list[dict[str, Any]]:
        """Every custom field of the account, reading ``page_size`` fields per request (1 to 1000).

        Each page is retried on its own. Raises :class:`RunAborted` on refusal.
        """
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be within [1, {MAX_PAGE_SIZE}], got {page_size}")
        retry = retry or RetryPolicy.of(self._options)
        rng = rng or random.Random()
        fields: list[dict[str, Any]] = []
        page = 1
        while True:
            outcome, content = self._list_page(page, page_size, retry, rng, sleep)
            if outcome.kind in ("fatal", "blocked"):
                raise abort_for(outcome)
            if outcome.kind != "ok":
                raise RunAborted(
                    "unavailable",
                    f"could not read the custom field list: {outcome.desc} (HTTP {outcome.http_status}); "
                    "POLYV may be down, retry later (or skip the check: --no-check-fields, or check_fields=False "
                    "on the operator)",
                    http_status=outcome.http_status,
                    request_id=outcome.request_id,
                )
            data = json.loads(content.decode("utf-8")).get("data") or {}
            fields.extend(data.get("contents") or [])
            total_pages = int(data.get("totalPages") or 1)
            if page >= total_pages:
                return fields
            page += 1

    def _list_page(
        self, page: int, page_size: int, retry: RetryPolicy, rng: random.Random, sleep: Callable[[float], None]
    ) -> tuple[Outcome, bytes]:
        """One page of the field list, retried like every other call; its outcome and body."""
        paging = {"pageNumber": str(page), "pageSize": str(page_size)}
        content = b""

        def fetch() -> Outcome:
            nonlocal content
            outcome, content = self._exchange("GET", LIST_PATH, extra=paging)
            return outcome

        outcome = call_with_retry(fetch, retry, rng, sleep).outcome
        assert outcome is not None  # no should_stop, so the first try always happens
        return outcome, content

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> PolyvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
