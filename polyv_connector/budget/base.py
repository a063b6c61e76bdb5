"""The shared request budget: one rate for every run leaving through one egress IP.

Two layers, on purpose:

* **Fair share** (ours): every run registers itself in the budget's store with a heartbeat; each
  run computes the same max-min fair split of the rate in force (the lowest rate any live run
  declared) among the live runs, honouring each run's own ``max_rps`` cap, and paces itself
  locally at its share. A run that stops heartbeating (killed) drops out after ``ttl_s``.
* **Never exceed** (pyrate-limiter's GCRA algorithm on a shared store): every acquisition also
  takes one unit from one bucket shared by all runs, so the total stays under the rate even
  while the runs' views of the registry disagree (a run just joined, a run just died).

The block POLYV imposes (5 minutes for the whole IP) is stored in the same place and checked in
the same store round trip as the shared bucket, so no run sends once another has recorded it.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pyrate_limiter import Rate
from pyrate_limiter.abstracts.algorithm import GCRA, Decision

from polyv_connector.errors import PolyvConnectorError, RunAborted

log = logging.getLogger("polyv_connector.budget")

#: How long a run stays registered without a heartbeat: a killed run's share is back within this.
DEFAULT_TTL_S = 3.0
#: How often a run refreshes its registration and recomputes its share.
DEFAULT_HEARTBEAT_S = 0.5
#: The longest ``acquire()`` waits in all before giving up (a budget that never admits is a bug).
DEFAULT_MAX_WAIT_S = 60.0
#: One sleep inside ``acquire()`` is never longer than this, so a block recorded meanwhile is seen.
MAX_SLEEP_SLICE_S = 0.25
#: POLYV blocks an IP for 5 minutes (polyv-api.md §4).
DEFAULT_BLOCK_S = 300.0
BLOCK_SECONDS_ENV = "POLYV_BLOCK_SECONDS"

#: The library's algorithm; stateless, shared by every budget of the process.
ALGORITHM = GCRA()


class BudgetBlocked(RunAborted):
    """POLYV blocked the egress IP and the shared budget says so: send nothing until ``until``.

    A :class:`RunAborted` with ``cause == "blocked"``, so callers that already stop a run on a
    POLYV block (exit 3, retryable later) treat a block another run recorded the same way.
    """

    def __init__(self, until: float, host_key: str) -> None:
        when = datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds")
        super().__init__(
            "blocked",
            f"POLYV blocked this machine's IP for {host_key} until {when} (recorded in the shared request "
            "budget, possibly by another run); nothing more was sent. Rerun after that time, with a lower "
            "--budget-rps or fewer parallel syncs.",
        )
        self.until = until
        self.host_key = host_key


class BudgetTimeout(PolyvConnectorError):
    """``acquire()`` waited longer than its bound without being admitted (should not happen)."""


@dataclass(frozen=True)
class RunInfo:
    """One run drawing on a budget, as stored in its registry."""

    run_id: str
    pid: int
    host: str
    rate: float  # the rate this run was configured with for the whole budget
    max_rps: float | None  # this run's own cap, None when uncapped
    started: float  # wall clock, seconds
    last_seen: float  # wall clock, seconds

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunInfo:
        max_rps = data.get("max_rps")
        return cls(
            run_id=str(data["run_id"]),
            pid=int(data["pid"]),
            host=str(data["host"]),
            rate=float(data["rate"]),
            max_rps=None if max_rps is None else float(max_rps),
            started=float(data["started"]),
            last_seen=float(data["last_seen"]),
        )


def fair_shares(rate: float, caps: dict[str, float | None]) -> dict[str, float]:
    """Max-min fair split of ``rate`` among runs, each capped by its own max_rps (None = no cap).

    Runs capped below the equal split get their cap; what they leave is split equally among the
    others. Every run computes this from the same registry, so the shares add up to ``rate``
    (or less, when every run is capped).
    """
    shares: dict[str, float] = {}
    remaining = rate
    ordered = sorted(caps.items(), key=lambda kv: (math.inf if kv[1] is None else kv[1], kv[0]))
    for index, (run_id, cap) in enumerate(ordered):
        equal = remaining / (len(ordered) - index)
        share = equal if cap is None else min(cap, equal)
        shares[run_id] = share
        remaining -= share
    return shares


def global_rates(rate: float) -> list[Rate]:
    """The shared bucket's rate: ``rate``/s with a burst of a tenth of a second.

    Expressed per 10 s (POLYV counts per 10 s) so fractional rates keep their precision;
    the GCRA emission interval is 1/rate s either way. At the 140/s maximum the worst 10-s
    window holds 1400 + 14 requests, under POLYV's 1500.
    """
    return [Rate(max(1, round(rate * 10)), 10_000, burst=max(1, math.ceil(rate / 10)))]


def block_seconds() -> float:
    """How long a block lasts when POLYV does not say: ``$POLYV_BLOCK_SECONDS`` or 300."""
    raw = os.environ.get(BLOCK_SECONDS_ENV)
    if not raw:
        return DEFAULT_BLOCK_S
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_BLOCK_S
    return value if value > 0 and math.isfinite(value) else DEFAULT_BLOCK_S


class BudgetStore(ABC):
    """Where a budget lives: its registry of runs, its shared bucket and its block.

    Every method is safe to call from several threads of one process and from several
    processes at once; ``take`` is atomic (check the block, then the bucket, in one step).
    """

    #: The place, printable: never holds a password.
    place: str

    @abstractmethod
    def take(self, rates: list[Rate], now_ms: int) -> tuple[float | None, Decision]:
        """``(blocked_until, anything)`` when blocked (nothing taken), else ``(None, the bucket's decision)``."""

    @abstractmethod
    def heartbeat(self, run: RunInfo, ttl_s: float) -> list[RunInfo]:
        """Store ``run`` (alive for ``ttl_s``), forget expired runs, return every live run."""

    @abstractmethod
    def runs(self, now: float) -> list[RunInfo]:
        """Every live run at ``now``."""

    @abstractmethod
    def unregister(self, run_id: str) -> None:
        """Forget a run at once (its share goes back to the others on their next heartbeat)."""

    @abstractmethod
    def set_block(self, until: float, now: float) -> float:
        """Store a block ending at ``until``; keeps the later end if one is stored. Returns the end."""

    @abstractmethod
    def get_block(self, now: float) -> float | None:
        """The end of the block in force, or None."""

    @abstractmethod
    def clear_block(self) -> None:
        """Lift the block."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


class _Pacer:
    """This run's local pace at its fair share: absolute slots, so late wake-ups self-correct."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._rate = rate
        self._next = clock()

    def set_rate(self, rate: float) -> None:
        with self._lock:
            self._rate = rate

    def reserve(self) -> float:
        """Reserve the next slot; return how long to wait for it."""
        with self._lock:
            now = self._clock()
            interval = 1.0 / self._rate
            # A slack of a few slots absorbs scheduling jitter without letting idle time pile up.
            start = max(self._next, now - 2 * interval)
            self._next = start + interval
            return max(0.0, start - now)


class SharedBudget:
    """A request budget shared by every run on one store and one POLYV API host.

    Implements the transport's ``RequestBudget`` protocol: ``acquire()`` blocks until one request
    may be sent, or raises :class:`BudgetBlocked` when the IP is blocked. Open it with
    :func:`polyv_connector.budget.open_budget`; use it as a context manager (the run registers at
    its first save, :meth:`leave` releases the share once it has nothing left to send, exit
    releases it at the latest).
    """

    def __init__(
        self,
        store: BudgetStore,
        *,
        host_key: str,
        rate: float,
        run_id: str,
        max_rps: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        ttl_s: float = DEFAULT_TTL_S,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        self._store = store
        self.host_key = host_key
        self.rate = rate
        self.run_id = run_id
        self.max_rps = max_rps
        self._clock = clock
        self._sleep = sleep
        self._heartbeat_s = heartbeat_s
        self._ttl_s = ttl_s
        self._max_wait_s = max_wait_s
        now = clock()
        self._me = RunInfo(run_id, os.getpid(), socket.gethostname(), rate, max_rps, now, now)
        self._state_lock = threading.Lock()
        self._rate_in_force = rate
        self._share = rate if max_rps is None else min(rate, max_rps)
        self._global_rates = global_rates(rate)
        self._pacer = _Pacer(self._share, clock)
        self._warned_rates: frozenset[float] = frozenset()
        self._registered = False
        self._closed = False
        self._join_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def place(self) -> str:
        """Where the budget lives (any password redacted)."""
        return self._store.place

    def __repr__(self) -> str:
        return f"SharedBudget(place={self.place!r}, host_key={self.host_key!r}, run_id={self.run_id!r})"

    def register(self) -> SharedBudget:
        """Join the budget: register this run and start its heartbeat (idempotent).

        A run joins on its first save (:meth:`acquire`), not when the budget is opened, so a run
        still reading and planning holds no share; :meth:`leave` gives the share back once no
        batch is left to send or retry, and a later save joins again.
        """
        with self._join_lock:  # one join at a time: acquire() from several sending threads
            with self._state_lock:
                if self._closed:
                    raise RuntimeError("this budget is closed")
                if self._registered:
                    return self
            stop = threading.Event()
            self._stop = stop
            self._refresh_now()  # the share among the runs registered now, this one included
            with self._state_lock:
                self._registered = True
            name = f"polyv-budget-{self.run_id}"
            self._thread = threading.Thread(target=self._beat, args=(stop,), name=name, daemon=True)
            self._thread.start()
        return self

    def leave(self) -> None:
        """Give the share back at once (the others take it on their next heartbeat); keep the store.

        For a run with no batch left to send or retry: its report and run page are written
        without holding a share. A later :meth:`acquire` of a save joins again.
        """
        with self._join_lock:
            with self._state_lock:
                was_registered = self._registered
                self._registered = False
            if not was_registered:
                return
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=5.0)
                self._thread = None
            try:
                self._store.unregister(self.run_id)
            except Exception:  # the store went away: the TTL releases the share instead
                log.warning("could not unregister run %s from the request budget %s", self.run_id, self.place)

    @property
    def registered(self) -> bool:
        """Whether this run holds a share now (joined and not left)."""
        return self._registered

    def close(self) -> None:
        """Leave the budget at once (the share goes back to the others) and release the store."""
        with self._state_lock:
            if self._closed:
                return
        try:
            self.leave()
        finally:
            with self._state_lock:
                self._closed = True
            self._store.close()

    def __enter__(self) -> SharedBudget:
        """The budget, not joined yet: the run joins on its first save (see :meth:`register`)."""
        with self._state_lock:
            if self._closed:
                raise RuntimeError("this budget is closed")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- fair share

    def refresh(self) -> None:
        """Heartbeat once: re-register, then recompute the rate in force and this run's share.

        Joins the budget if this run has not joined it yet (or has left it)."""
        if not self._registered:
            self.register()
            return
        self._refresh_now()

    def _refresh_now(self) -> None:
        now = self._clock()
        self._me = replace(self._me, last_seen=now)
        runs = self._store.heartbeat(self._me, self._ttl_s)
        if not any(r.run_id == self.run_id for r in runs):
            runs.append(self._me)
        self._apply(runs)

    def _apply(self, runs: Sequence[RunInfo]) -> None:
        rates = frozenset(r.rate for r in runs)
        in_force = min(rates)
        shares = fair_shares(in_force, {r.run_id: r.max_rps for r in runs})
        share = shares[self.run_id]
        with self._state_lock:
            if in_force != self._rate_in_force:
                self._global_rates = global_rates(in_force)
            self._rate_in_force = in_force
            self._share = share
            warn = len(rates) > 1 and rates != self._warned_rates
            self._warned_rates = rates if len(rates) > 1 else frozenset()
        self._pacer.set_rate(share)
        if warn:
            log.warning(
                "runs on the request budget for %s disagree on its rate (%s requests/s); the lowest, %g/s, "
                "is in force (this run asked for %g/s)",
                self.host_key,
                ", ".join(f"{r:g}" for r in sorted(rates)),
                in_force,
                self.rate,
            )

    def _beat(self, stop: threading.Event) -> None:
        failing = False
        while not stop.wait(self._heartbeat_s):
            try:
                self._refresh_now()
            except Exception as exc:  # keep beating: the store may come back; acquire() reports it
                if not failing:  # once per outage, not twice a second
                    log.warning("request budget heartbeat failed (%s): %s", self.place, exc)
                failing = True
            else:
                if failing:
                    log.warning("request budget heartbeat works again (%s)", self.place)
                failing = False

    @property
    def rate_in_force(self) -> float:
        """The budget's rate as this run last saw it (the lowest any live run declared)."""
        return self._rate_in_force

    @property
    def share(self) -> float:
        """This run's fair share of the rate in force, requests per second."""
        return self._share

    # ----------------------------------------------------------------- acquire

    def acquire(self, *, join: bool = True) -> None:
        """Wait until one request may be sent. Raises :class:`BudgetBlocked` if the IP is blocked.

        First this run's own pace (its fair share), then one unit of the shared bucket, checked
        together with the block. Sleeps are short slices; the whole wait is bounded. A save
        (``join=True``) joins the budget first; a request of a run that holds no share (the
        field list read before planning, ``join=False``) takes only its unit of the shared
        bucket, so it never exceeds the rate and never holds a share it does not use.
        """
        if join and not self._registered:
            self.register()
        deadline = self._clock() + self._max_wait_s
        if self._registered:
            self._sleep_bounded(self._pacer.reserve(), deadline)
        while True:
            now = self._clock()
            blocked_until, decision = self._store.take(self._global_rates, int(now * 1000))
            if blocked_until is not None:
                raise BudgetBlocked(blocked_until, self.host_key)
            if decision.allowed:
                return
            retry_s = (decision.retry_after_ms or 1) / 1000.0
            if now + retry_s > deadline:
                raise BudgetTimeout(
                    f"the shared request budget {self.place} ({self.host_key}) admitted nothing for "
                    f"{self._max_wait_s:g} s"
                )
            self._sleep(min(retry_s, MAX_SLEEP_SLICE_S))

    def _sleep_bounded(self, wait: float, deadline: float) -> None:
        if wait <= 0:
            return
        if self._clock() + wait > deadline:
            raise BudgetTimeout(f"this run's share of the request budget {self.place} would wait {wait:.1f} s")
        self._sleep(wait)

    # ----------------------------------------------------------------- block

    def record_block(self, until: float | None = None) -> float:
        """Tell every run on this budget that POLYV blocked the IP; returns the block's end.

        ``until`` defaults to now + ``$POLYV_BLOCK_SECONDS`` (300 s). Call it when POLYV answers
        ``qps exceeds number of calls`` (or HTTP 429).
        """
        now = self._clock()
        end = until if until is not None else now + block_seconds()
        stored = self._store.set_block(end, now)
        log.warning(
            "POLYV blocked the IP for %s until %s; every run on the request budget %s stops sending",
            self.host_key,
            datetime.fromtimestamp(stored, UTC).isoformat(timespec="seconds"),
            self.place,
        )
        return stored

    def blocked_until(self) -> float | None:
        """The end of the block in force (wall clock, seconds), or None."""
        return self._store.get_block(self._clock())

    def clear_block(self) -> None:
        """Lift the block by hand (e.g. once POLYV answers again before the 5 minutes are over)."""
        self._store.clear_block()
        log.warning("the POLYV block recorded in the request budget %s for %s was lifted", self.place, self.host_key)

    # ----------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """A JSON-able picture of the budget: place, host key, rate in force, runs, block."""
        now = self._clock()
        runs = self._store.runs(now)
        in_force = min([r.rate for r in runs], default=self.rate)
        shares = fair_shares(in_force, {r.run_id: r.max_rps for r in runs})
        until = self._store.get_block(now)
        return {
            "place": self.place,
            "host_key": self.host_key,
            "rate_in_force": in_force,
            "runs": [
                {
                    "run_id": r.run_id,
                    "pid": r.pid,
                    "host": r.host,
                    "rate": r.rate,
                    "max_rps": r.max_rps,
                    "share": round(shares[r.run_id], 3),
                    "last_seen": datetime.fromtimestamp(r.last_seen, UTC).isoformat(timespec="milliseconds"),
                    "last_seen_s_ago": round(max(0.0, now - r.last_seen), 3),
                }
                for r in sorted(runs, key=lambda r: r.started)
            ],
            "blocked": until is not None,
            "blocked_until": None
            if until is None
            else datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds"),
        }


def take_with(
    algorithm: GCRA, rates: list[Rate], state: tuple[float, ...] | None, now_ms: int
) -> tuple[tuple[float, ...], Decision]:
    """One GCRA step of the library's algorithm on a stored state (None = never used)."""
    current = algorithm.initial(rates) if state is None or len(state) != len(rates) else state
    return algorithm.step(rates, current, now_ms, 1)
