"""Retry policy as a value: pure decisions, the only side effect (sleeping) is the caller's."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, at most ``max_attempts`` tries per request."""

    max_attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0

    def should_retry(self, attempt: int) -> bool:
        """Whether a transient failure on try number ``attempt`` (1-based) earns another try."""
        return attempt < self.max_attempts

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed try ``attempt``: uniform in [0, min(cap, base * 2^(attempt-1))]."""
        return rng.uniform(0.0, min(self.cap_s, self.base_s * (2 ** (attempt - 1))))
