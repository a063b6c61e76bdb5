"""The simulator itself: state, settings and the POLYV contract applied to each request.

:class:`PolyvSimulator` owns the stored values, the counters, the fault and rate-limit settings,
and decides every answer following :mod:`.contract`; :mod:`.handler` carries requests and
answers over HTTP. It serves the test-suite, the benchmarks, the demo and users rehearsing a
sync, so it is strict where POLYV is strict, quiet, and fast enough not to be the bottleneck.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from types import TracebackType
from typing import Any

from polyv_connector.simulator.config import (
    DEFAULT_FIELDS,
    FaultConfig,
    RateLimitConfig,
    SimStats,
)
from polyv_connector.simulator.contract import (
    APP_NOT_FOUND_CODE,
    GATEWAY_HTML,
    HTML_CONTENT_TYPE,
    LIST_PATH,
    PORTAL_HTML,
    SAVE_PATH,
    UNAVAILABLE_HTML,
    ApiError,
    ApiRequest,
    BlockedError,
    Response,
    check_required_params,
    check_timestamp,
    error_response,
    field_page,
    json_response,
    parse_paging,
    parse_save_body,
    server_error_response,
    success_response,
)
from polyv_connector.simulator.handler import SimHTTPServer
from polyv_connector.simulator.ratelimit import RateLimiter, WindowPeak
from polyv_connector.simulator.signing import sign_matches

__all__ = ["DEFAULT_FIELDS", "FaultConfig", "PolyvSimulator", "RateLimitConfig", "SimStats"]

_DEFAULT_APPS: Mapping[str, str] = {"demo-app": "demo-secret"}
_DEFAULT_RATE_LIMIT = RateLimitConfig()
_SIM_PREFIX = "/_sim/"
_API_PATHS = frozenset({SAVE_PATH, LIST_PATH})
#: Drop the connection without an answer (a reset fault, or stop() during a delay).
_DROP = Response(status=0, action="reset")


class PolyvSimulator:
    """A local stand-in for POLYV's custom-field API, served over HTTP on ``host:port``.

    Every API request goes through, in order: the per-IP rate limit, the required parameters
    (``appId``, ``timestamp``, ``sign``), the appId, the timestamp window, the signature; save
    requests then through the configured faults, then body validation, then the upsert.

    ``apps`` maps appId to appSecret; ``fields`` are the customFieldIds every app knows;
    ``port=0`` picks a free port; ``rate_limit=None`` disables the rate limit; ``clock``
    (seconds, float) drives the timestamp check and the rate limit; ``max_items`` caps the
    objects of one save request; ``record_batches=False`` stops keeping every accepted batch
    (for benchmarks); ``clock_offset_s`` shifts the simulator's own clock (timestamp check and
    ``Date`` header) from ``clock``, to rehearse a client whose clock is off.
    Use :meth:`start`/:meth:`stop` or ``with PolyvSimulator(...) as sim:``.
    """

    def __init__(
        self,
        apps: Mapping[str, str] | None = None,
        fields: Iterable[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultConfig | None = None,
        rate_limit: RateLimitConfig | None = _DEFAULT_RATE_LIMIT,
        clock: Callable[[], float] = time.time,
        max_items: int = 1000,
        record_batches: bool = True,
        clock_offset_s: float = 0.0,
    ) -> None:
        self._apps = dict(_DEFAULT_APPS if apps is None else apps)
        self._fields = list(DEFAULT_FIELDS if fields is None else fields)
        self._field_set = frozenset(self._fields)
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self._host = host
        self._port = port
        self._clock = clock
        # POLYV's clock as this simulator keeps it: judges timestamps and writes the Date header.
        self.clock_offset_s = clock_offset_s
        self._max_items = max_items
        self._record_batches = record_batches
        self._limiter = RateLimiter(rate_limit, clock)
        # Measured over the limit's window (POLYV's 10 s when the limit is off), across accounts.
        self._peak = WindowPeak(rate_limit.window_s if rate_limit else _DEFAULT_RATE_LIMIT.window_s, clock)
        self._lock = threading.Lock()  # guards values, batches and counters
        self._values: dict[tuple[str, str, str], str] = {}
        self._batches: list[list[dict[str, Any]]] = []
        self._counts = _zero_counts()
        self._by_account: dict[str, int] = {}  # authenticated API requests per appId
        self._rng_lock = threading.Lock()
        self._faults = FaultConfig()
        self._rng = random.Random()
        self._unavailable_left = 0
        self.set_faults(faults or FaultConfig())
        self._stop_event = threading.Event()
        self._server: SimHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def now(self) -> float:
        """The simulator's own time: ``clock()`` shifted by ``clock_offset_s``."""
        return self._clock() + self.clock_offset_s

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> PolyvSimulator:
        """Bind the socket and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._stop_event.clear()
        server = SimHTTPServer(
            (self._host, self._port),
            dispatch=self._handle,
            on_connect=self._on_connect,
            clock=self.now,
        )
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},  # stop() waits up to this long
            name=f"polyv-simulator-{server.server_port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed requests and close open connections (idempotent)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stop_event.set()  # releases requests waiting in latency_s / hang_s
        server.shutdown()
        server.server_close()
        server.close_connections()  # idle keep-alive connections would otherwise linger
        if thread is not None:
            thread.join(timeout=5.0)
        self._server = self._thread = None

    def __enter__(self) -> PolyvSimulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound TCP port (useful with ``port=0``)."""
        return self._require_server().server_port

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running simulator."""
        host = self._host if ":" not in self._host else f"[{self._host}]"
        return f"http://{host}:{self.port}"

    # ----------------------------------------------------------------- inspection

    @property
    def values(self) -> dict[tuple[str, str, str], str]:
        """A copy of the stored values: ``(appId, viewerId, customFieldId) -> value``."""
        with self._lock:
            return dict(self._values)

    @property
    def stats(self) -> SimStats:
        """A snapshot of the counters."""
        with self._lock:
            counts = dict(self._counts)
        return SimStats(**{**counts, "peak_window_requests": self._peak.peak()})

    @property
    def requests_by_account(self) -> dict[str, int]:
        """A copy of the authenticated API requests counted per appId (either endpoint, any answer
        after the signature check), for measuring how the accounts shared the IP over time."""
        with self._lock:
            return dict(self._by_account)

    @property
    def peak_window_requests(self) -> int:
        """The most API requests one client IP sent in any sliding window of the rate limit
        (``window_s``, 10 s by default), over all accounts, whatever the answer."""
        return self._peak.peak()

    @property
    def accounts(self) -> list[str]:
        """The appIds the simulator accepts."""
        return list(self._apps)

    @property
    def received_batches(self) -> list[list[dict[str, Any]]]:
        """The items of every accepted save request, in arrival order (do not mutate them)."""
        with self._lock:
            return list(self._batches)

    @property
    def faults(self) -> FaultConfig:
        """The fault settings in force."""
        return self._faults

    @property
    def fields(self) -> list[str]:
        """The customFieldIds every app knows."""
        return list(self._fields)

    # ----------------------------------------------------------------- control

    def set_faults(self, faults: FaultConfig) -> None:
        """Switch to ``faults`` from the next request on; re-seeds the fault draws."""
        with self._rng_lock:
            self._rng = random.Random(faults.seed)
            self._unavailable_left = faults.unavailable_requests
            self._faults = faults

    def set_rate_limit(self, rate_limit: RateLimitConfig | None) -> None:
        """Replace the rate limit (None disables it) and forget every window and block."""
        self._limiter.configure(rate_limit)
        self._peak.configure(rate_limit.window_s if rate_limit else _DEFAULT_RATE_LIMIT.window_s)

    def reset(self) -> None:
        """Clear stored values, batches, counters, rate-limit windows and blocks."""
        with self._lock:
            self._values.clear()
            self._batches.clear()
            self._counts = _zero_counts()
            self._by_account.clear()
        self._limiter.reset()
        self._peak.reset()
        self.set_faults(self._faults)  # same seed, same sequence of draws again

    # ----------------------------------------------------------------- dispatch

    def _handle(self, request: ApiRequest) -> Response:
        if request.path.startswith(_SIM_PREFIX):
            return self._inspect(request)
        return self._handle_api(request)

    def _handle_api(self, request: ApiRequest) -> Response:
        is_save = request.method == "POST" and request.path == SAVE_PATH
        is_list = request.method == "GET" and request.path == LIST_PATH
        self._count(api_requests=1, save_requests=int(is_save), list_requests=int(is_list))
        self._peak.count(request.client_ip)
        faults = self._faults  # one consistent view even if set_faults() runs meanwhile
        if faults.latency_s > 0 and self._pause(faults.latency_s):
            return _DROP
        try:
            return self._answer_api(request, is_save, faults)
        except ApiError as exc:
            self._count(
                blocked_responses=int(isinstance(exc, BlockedError)),
                save_rejected_4xx=int(is_save and 400 <= exc.status < 500),
            )
            return error_response(exc)

    def _answer_api(self, request: ApiRequest, is_save: bool, faults: FaultConfig) -> Response:
        self._enforce_rate_limit(request.client_ip)
        if request.path not in _API_PATHS:
            raise ApiError(404, "path not found")
        if request.method != ("POST" if request.path == SAVE_PATH else "GET"):
            raise ApiError(405, "method not supported")
        app_id = self._authenticate(request.query)
        with self._lock:
            self._by_account[app_id] = self._by_account.get(app_id, 0) + 1
        unavailable = self._take_unavailable(faults)
        if unavailable is not None:
            return unavailable
        if is_save:
            return self._save(app_id, request, faults)
        return self._list_fields(request)

    def _enforce_rate_limit(self, client_ip: str) -> None:
        if not self._limiter.admit(client_ip):
            config = self._limiter.config
            raise BlockedError(config.block_http_status if config else 403)

    def _authenticate(self, query: Mapping[str, str]) -> str:
        check_required_params(query)
        app_id = query["appId"]
        secret = self._apps.get(app_id)
        if secret is None:
            raise ApiError(400, "application not found.", APP_NOT_FOUND_CODE)
        check_timestamp(query["timestamp"], self.now())
        if not sign_matches(query, secret, query["sign"]):
            raise ApiError(403, "invalid signature.")
        return app_id

    def _save(self, app_id: str, request: ApiRequest, faults: FaultConfig) -> Response:
        if faults.hang_s > 0:
            self._count(hangs=1)
            if self._pause(faults.hang_s):
                return _DROP
        fault = self._draw_fault(faults)
        if fault is not None:
            return fault
        items = parse_save_body(
            request.content_type,
            request.body,
            fields=self._field_set,
            max_items=self._max_items,
            poison_values=frozenset(faults.poison_values),
            poison_message=faults.poison_message,
        )
        self._store(app_id, items)
        return success_response(None)

    def _draw_fault(self, faults: FaultConfig) -> Response | None:
        if not faults.any_fault_rate:
            return None
        with self._rng_lock:
            draw = self._rng.random()
        # One draw partitioned by the rates keeps each rate exact when they sum to <= 1.
        for rate, kind in (
            (faults.reset_rate, "reset"),
            (faults.gateway_error_rate, "gateway"),
            (faults.error_rate, "error"),
            (faults.html_rate, "html"),
        ):
            if draw < rate:
                return self._fault_response(kind)
            draw -= rate
        return None

    def _take_unavailable(self, faults: FaultConfig) -> Response | None:
        """The 503 of ``unavailable_requests`` while the count lasts, else None."""
        with self._rng_lock:
            if self._unavailable_left <= 0:
                return None
            self._unavailable_left -= 1
        self._count(faults_5xx=1)
        headers = () if faults.retry_after is None else (("Retry-After", faults.retry_after),)
        return Response(status=503, body=UNAVAILABLE_HTML, content_type=HTML_CONTENT_TYPE, headers=headers)

    def _fault_response(self, kind: str) -> Response:
        if kind == "reset":
            self._count(resets=1)
            return _DROP
        if kind == "gateway":
            self._count(faults_5xx=1)
            return Response(status=502, body=GATEWAY_HTML, content_type=HTML_CONTENT_TYPE)
        if kind == "error":
            self._count(faults_5xx=1)
            return server_error_response()
        self._count(html_responses=1)
        return Response(status=200, body=PORTAL_HTML, content_type=HTML_CONTENT_TYPE)

    def _store(self, app_id: str, items: list[dict[str, Any]]) -> None:
        with self._lock:
            values = self._values
            for item in items:
                values[(app_id, item["viewerId"], item["customFieldId"])] = item["customFieldValue"]
            if self._record_batches:
                self._batches.append(items)
            self._counts["save_ok"] += 1
            self._counts["items_stored"] += len(items)

    def _list_fields(self, request: ApiRequest) -> Response:
        page_number, page_size = parse_paging(request.query)
        response = success_response(field_page(self._fields, page_number, page_size))
        self._count(list_ok=1)
        return response

    def _inspect(self, request: ApiRequest) -> Response:
        route = (request.method, request.path)
        if route == ("GET", "/_sim/values"):
            return json_response(200, self._values_listing(request.query.get("appId")))
        if route == ("GET", "/_sim/stats"):
            return json_response(200, self.stats.to_dict())
        if route == ("POST", "/_sim/reset"):
            self.reset()
            return json_response(200, {"reset": True})
        return error_response(ApiError(404, "path not found"))

    def _values_listing(self, app_id: str | None) -> list[dict[str, str]]:
        listing = []
        for (app, viewer_id, field_id), value in sorted(self.values.items()):
            if app_id and app != app_id:
                continue
            entry = {"viewerId": viewer_id, "customFieldId": field_id, "customFieldValue": value}
            if not app_id:
                entry = {"appId": app, **entry}
            listing.append(entry)
        return listing

    # ----------------------------------------------------------------- helpers

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; return True when stop() interrupted the wait."""
        return self._stop_event.wait(seconds)

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, amount in increments.items():
                self._counts[name] += amount

    def _on_connect(self) -> None:
        self._count(connections_opened=1)

    def _require_server(self) -> SimHTTPServer:
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        return self._server


def _zero_counts() -> dict[str, int]:
    return {f.name: 0 for f in fields(SimStats)}
