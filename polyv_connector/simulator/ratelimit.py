"""POLYV's per-client-IP rate limit with its block, driven by an injected clock."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from polyv_connector.simulator.config import RateLimitConfig


class RateLimiter:
    """A sliding-window counter per client IP plus a block once the window overflows.

    ``config=None`` disables the limit (useful for benchmarks that must not be throttled).
    """

    def __init__(self, config: RateLimitConfig | None, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    @property
    def config(self) -> RateLimitConfig | None:
        """The limit in force, or None when disabled."""
        return self._config

    def configure(self, config: RateLimitConfig | None) -> None:
        """Replace the limit and forget every window and block."""
        with self._lock:
            self._config = config
            self._clear()

    def reset(self) -> None:
        """Forget every window and block."""
        with self._lock:
            self._clear()

    def admit(self, client_ip: str) -> bool:
        """Count one request from ``client_ip``; return False when it must be refused.

        The request that would exceed ``max_requests`` within ``window_s`` is refused and
        starts the block; while blocked, refused requests are not counted in the window, so
        the client starts with an empty window when the block ends.
        """
        config = self._config
        if config is None:
            return True
        now = self._clock()
        with self._lock:
            if self._is_blocked(client_ip, now):
                return False
            window = self._windows.setdefault(client_ip, deque())
            cutoff = now - config.window_s
            while window and window[0] <= cutoff:
                window.popleft()
            if len(window) >= config.max_requests:
                self._blocked_until[client_ip] = now + config.block_s
                window.clear()
                return False
            window.append(now)
            return True

    def _is_blocked(self, client_ip: str, now: float) -> bool:
        until = self._blocked_until.get(client_ip)
        if until is None:
            return False
        if now < until:
            return True
        del self._blocked_until[client_ip]
        return False

    def _clear(self) -> None:
        self._windows.clear()
        self._blocked_until.clear()


class WindowPeak:
    """The most requests seen from one client IP in any sliding window of ``window_s`` seconds.

    Counts every API request as it arrives (whatever the answer, any account), as POLYV counts
    per client IP, so a test can assert that a client budget kept the traffic under the limit.
    """

    def __init__(self, window_s: float, clock: Callable[[], float]) -> None:
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {}
        self._peaks: dict[str, int] = {}

    @property
    def window_s(self) -> float:
        return self._window_s

    def configure(self, window_s: float) -> None:
        """Use another window length and forget everything seen."""
        with self._lock:
            self._window_s = window_s
            self._windows.clear()
            self._peaks.clear()

    def count(self, client_ip: str) -> None:
        now = self._clock()
        with self._lock:
            window = self._windows.setdefault(client_ip, deque())
            cutoff = now - self._window_s
            while window and window[0] <= cutoff:
                window.popleft()
            window.append(now)
            if len(window) > self._peaks.get(client_ip, 0):
                self._peaks[client_ip] = len(window)

    def peaks(self) -> dict[str, int]:
        """Client IP -> the most requests it sent in one window."""
        with self._lock:
            return dict(self._peaks)

    def peak(self) -> int:
        """The most requests any one client IP sent in one window."""
        with self._lock:
            return max(self._peaks.values(), default=0)

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
            self._peaks.clear()
