"""Plain, frozen configuration values of the simulator, and its statistics snapshot."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

#: customFieldIds every simulated app knows when ``fields`` is not given.
DEFAULT_FIELDS: list[str] = ["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER"]


def _check_fraction(name: str, value: float) -> None:
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value!r}")


def _check_non_negative(name: str, value: float) -> None:
    if math.isnan(value) or value < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


@dataclass(frozen=True)
class FaultConfig:
    """Faults the simulator injects into *save* requests (all off by default).

    The four ``*_rate`` values are fractions of save requests. One uniform draw decides per
    request, in the order reset, gateway error, server error, HTML, so the rates are exact
    as long as they add up to at most 1 (past that, earlier kinds win). A faulted request
    stores nothing. ``latency_s`` delays every API request (both endpoints); ``hang_s``
    delays every save request before it is processed (to exercise client timeouts).
    ``poison_values`` make a save request that contains one of them fail whole with
    ``400 param validate error`` (or ``poison_message``: a long or hostile error text).
    ``seed`` makes the draws reproducible.

    ``unavailable_requests`` answers the next that many API requests (either endpoint, once
    authenticated, before any other fault) ``503`` with a gateway page and, unless
    ``retry_after`` is None, a ``Retry-After: <retry_after>`` header (sent verbatim:
    delta-seconds or an HTTP-date). The count starts again at each ``set_faults`` and ``reset``.
    """

    error_rate: float = 0.0
    gateway_error_rate: float = 0.0
    reset_rate: float = 0.0
    latency_s: float = 0.0
    hang_s: float = 0.0
    html_rate: float = 0.0
    poison_values: tuple[str, ...] = ()
    poison_message: str = "param validate error"
    seed: int | None = None
    unavailable_requests: int = 0
    retry_after: str | None = None

    def __post_init__(self) -> None:
        for name in ("error_rate", "gateway_error_rate", "reset_rate", "html_rate"):
            _check_fraction(name, getattr(self, name))
        _check_non_negative("latency_s", self.latency_s)
        _check_non_negative("hang_s", self.hang_s)
        if self.unavailable_requests < 0:
            raise ValueError(f"unavailable_requests must be >= 0, got {self.unavailable_requests!r}")
        if self.retry_after is not None and not self.retry_after.isprintable():
            raise ValueError("retry_after must be a printable header value")
        # Accept any iterable of strings (a list from a CLI, say) but keep the value hashable.
        object.__setattr__(self, "poison_values", tuple(self.poison_values))

    @property
    def any_fault_rate(self) -> bool:
        """True when at least one probabilistic fault can fire."""
        return self.error_rate + self.gateway_error_rate + self.reset_rate + self.html_rate > 0


@dataclass(frozen=True)
class RateLimitConfig:
    """POLYV's per-client-IP rate limit: ``max_requests`` per sliding ``window_s`` seconds.

    The request that exceeds the limit starts a block of ``block_s`` seconds during which every
    API request from that IP is answered with ``block_http_status`` (POLYV does not document
    the status; 403 and 429 are both plausible) and the message ``qps exceeds number of calls``.
    The defaults are POLYV's documented limits.
    """

    max_requests: int = 1500
    window_s: float = 10.0
    block_s: float = 300.0
    block_http_status: int = 403

    def __post_init__(self) -> None:
        if self.max_requests < 1:
            raise ValueError(f"max_requests must be >= 1, got {self.max_requests!r}")
        if math.isnan(self.window_s) or self.window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {self.window_s!r}")
        _check_non_negative("block_s", self.block_s)
        if not 400 <= self.block_http_status <= 599:
            raise ValueError(f"block_http_status must be 4xx or 5xx, got {self.block_http_status}")


@dataclass(frozen=True)
class SimStats:
    """A snapshot of the simulator's counters.

    ``save_requests`` counts every POST to the save path, whatever became of it;
    ``save_rejected_4xx`` counts those answered with any 4xx (blocks with a 4xx status
    included); ``faults_5xx`` counts injected 500, 502 and 503 answers; ``items_stored`` counts
    accepted items, repeats included. ``peak_window_requests`` is not a counter but a high-water
    mark (see :attr:`PolyvSimulator.peak_window_requests`).
    """

    api_requests: int = 0
    save_requests: int = 0
    save_ok: int = 0
    save_rejected_4xx: int = 0
    faults_5xx: int = 0
    resets: int = 0
    html_responses: int = 0
    hangs: int = 0
    blocked_responses: int = 0
    items_stored: int = 0
    list_requests: int = 0
    list_ok: int = 0
    connections_opened: int = 0
    #: The most API requests one client IP sent in any sliding rate-limit window (10 s by default),
    #: over all accounts, whatever the answer: what POLYV's limit counts.
    peak_window_requests: int = 0

    def to_dict(self) -> dict[str, int]:
        """Return the counters as a plain dict (what ``GET /_sim/stats`` answers)."""
        return asdict(self)
