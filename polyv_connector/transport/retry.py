"""Retry policy as a value, and the one retry loop every POLYV call goes through.

The policy's decisions are pure; :func:`call_with_retry` owns the only side effect (sleeping),
and takes the sleep, the jitter source and the stop check from its caller so tests never sleep.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from polyv_connector.transport.classify import Outcome

if TYPE_CHECKING:
    from polyv_connector.config import SendOptions


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, at most ``max_attempts`` tries per request.

    ``cap_s`` (``SendOptions.backoff_max_s``) bounds every wait, a server's ``Retry-After``
    included: a server asking for longer is tried again after ``cap_s``, so one request never
    holds a worker longer than ``max_attempts * cap_s`` plus its timeouts, and an answer that
    says "come back in an hour" cannot stall a run.
    """

    max_attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0

    @classmethod
    def of(cls, send: SendOptions) -> RetryPolicy:
        """The policy the send options set (``max_attempts``, ``backoff_base_s``, ``backoff_max_s``)."""
        return cls(send.max_attempts, send.backoff_base_s, send.backoff_max_s)

    def should_retry(self, attempt: int) -> bool:
        """Whether a transient failure on try number ``attempt`` (1-based) earns another try."""
        return attempt < self.max_attempts

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed try ``attempt``: uniform in [0, min(cap, base * 2^(attempt-1))]."""
        return rng.uniform(0.0, min(self.cap_s, self.base_s * (2 ** (attempt - 1))))

    def wait_s(self, attempt: int, rng: random.Random, retry_after_s: float | None = None) -> float:
        """Seconds to wait after failed try ``attempt``.

        The server's ``Retry-After`` when it sent one (it knows when it will be back), never
        more than ``cap_s`` and not jittered; otherwise :meth:`backoff_s`.
        """
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.cap_s)
        return self.backoff_s(attempt, rng)


@dataclass(frozen=True, kw_only=True)
class Attempted:
    """What :func:`call_with_retry` ended with.

    ``outcome`` is the last answer (None when ``should_stop`` held before the first try);
    ``attempts`` counts the requests actually made; ``stopped`` says ``should_stop`` ended the
    loop before the answer was final, so the caller must not read ``outcome`` as a verdict.
    """

    outcome: Outcome | None
    attempts: int
    stopped: bool = False


def call_with_retry(
    call: Callable[[], Outcome],
    policy: RetryPolicy,
    rng: random.Random,
    sleep: Callable[[float], None],
    should_stop: Callable[[], bool] | None = None,
) -> Attempted:
    """Run ``call`` until its outcome is final: ``ok``, ``data``, ``fatal`` or ``blocked``.

    A ``transient`` outcome is tried again after :meth:`RetryPolicy.wait_s` (its bounded
    ``Retry-After``, else the jittered backoff) until the policy's attempts are spent; the last
    transient outcome is then returned. ``should_stop``
    is checked before every try, so a circuit opened by another worker stops this one without
    another request. ``call`` must sign its request itself: each try is signed again
    (timestamps are valid for 3 minutes).
    """
    outcome: Outcome | None = None
    attempt = 0
    while True:
        if should_stop is not None and should_stop():
            return Attempted(outcome=outcome, attempts=attempt, stopped=True)
        attempt += 1
        outcome = call()
        if outcome.kind != "transient" or not policy.should_retry(attempt):
            return Attempted(outcome=outcome, attempts=attempt)
        sleep(policy.wait_s(attempt, rng, outcome.retry_after_s))
