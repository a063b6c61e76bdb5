"""Client-side request budget: a thread-safe token bucket with an injected clock.

Rate limiting is separate from retrying: every HTTP request (first tries, retries and the
halves of a split batch alike) takes one token, so the run never exceeds ``rate`` requests
per second on average, nor ``burst`` at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class RequestBudget(Protocol):
    """Anything that can hand out permission to send one request (blocking until it can).

    ``join=False`` for a request that is not a save (the field list read before planning): a
    shared budget then lets it through without giving this run a share."""

    def acquire(self, *, join: bool = True) -> None: ...


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst`` tokens."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        # A small burst keeps parallel workers busy without letting a window overshoot.
        self.burst = max(1.0, burst if burst is not None else rate / 10)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Take a token now, or reserve the next one; return how long to wait for it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self, *, join: bool = True) -> None:
        wait = self._reserve()
        if wait > 0:
            self._sleep(wait)
