"""One run per sync state at a time: locks, their holders, and the run sequence number.

Two runs of one account that share a sync state must not interleave: each plans against
the state it loaded, so the later one would call items ``unchanged`` that the earlier one
has just changed in POLYV (a silent divergence), and both would compact the same folder at
once. A run therefore takes the state's lock *before* it loads the state and keeps it
until it has recorded and compacted everything.

Every lock here has the same small protocol (:class:`Lock`): ``acquire(timeout_s)`` tries
once (``timeout_s=0``) or polls until the timeout and then raises
:class:`~polyv_connector.errors.BusyError` naming the holder (runId, host, pid, since);
``release()``; a context manager; ``holder()``/``holders()`` to show who holds it; and a
``mode``: ``exclusive`` (a whole-account run) or ``shared`` (partition runs hold the
account's lock shared and their own slice exclusively).

* :class:`~polyv_connector.state.flock.FileLock`: ``flock`` on a file in the state folder; the
  OS releases it when the process dies, so ``kill -9`` never leaves it locked.
* :class:`~polyv_connector.state.pg_lock.PgAdvisoryLock`: a PostgreSQL session advisory lock
  on a dedicated connection; PostgreSQL releases it when the session ends.
* :class:`~polyv_connector.state.lease_lock.LeaseLock`: a lease row with an expiry of at most
  60 s that a heartbeat thread renews, for any DB-API database; an expired lease is taken over.

The store that grants a lock also hands the run a **run sequence number**, increasing by
one per lock taken on the account: records of the state are ordered by it, never by a
worker's clock (two hosts' clocks disagree; a lock's order is the order of the runs).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from types import TracebackType
from typing import Literal, Protocol

from polyv_connector.errors import BusyError

log = logging.getLogger("polyv_connector")

LockMode = Literal["exclusive", "shared"]
MODES: tuple[LockMode, ...] = ("exclusive", "shared")


class Lock(Protocol):
    """What every lock offers. ``seq`` is the run sequence number handed out by ``acquire``."""

    mode: LockMode
    run_id: str

    @property
    def seq(self) -> int | None: ...

    @property
    def held(self) -> bool: ...

    def acquire(self, timeout_s: float = 0.0) -> None: ...

    def release(self) -> None: ...

    def holder(self) -> dict[str, object] | None: ...

    def holders(self) -> list[dict[str, object]]: ...

    def __enter__(self) -> Lock: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


# ---- holders and messages --------------------------------------------------------------------
def iso_utc(epoch_s: float) -> str:
    """``2026-11-30T15:10:13Z``: when a holder took the lock, for people to read."""
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def self_description(run_id: str, mode: LockMode, seq: int | None, lock: str) -> dict[str, object]:
    return {
        "runId": run_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": iso_utc(time.time()),
        "mode": mode,
        "seq": seq,
        "lock": lock,
    }


def describe(holder: dict[str, object]) -> str:
    """``run r-1 (pid 42 on host-a, exclusive since 2026-...Z)``."""
    return (
        f"run {holder.get('runId') or '(unknown)'} (pid {holder.get('pid') or '?'} on {holder.get('host') or '?'}, "
        f"{holder.get('mode') or '?'} since {holder.get('since') or '?'})"
    )


def busy_error(what: str, holders: list[dict[str, object]], timeout_s: float) -> BusyError:
    """The :class:`BusyError` a run gets when ``what`` stays held for ``timeout_s``."""
    waited = f" after waiting {timeout_s:g} s" if timeout_s > 0 else ""
    if not holders:
        # The holder got the lock a moment ago and has not written its description yet.
        who = "another run (it is starting; its description is not written yet)"
    elif len(holders) == 1:
        who = describe(holders[0])
    else:
        who = f"{len(holders)} runs: " + "; ".join(describe(h) for h in holders)
    holder: dict[str, object] = dict(holders[0]) if holders else {}
    if len(holders) > 1:
        holder["holders"] = holders
    return BusyError(f"{what} is held by {who}{waited}; nothing was sent: retry when that run has ended", holder=holder)


def check_mode(mode: str) -> LockMode:
    if mode not in MODES:
        raise ValueError(f"lock mode must be 'exclusive' or 'shared', not {mode!r}")
    return mode


class PollingLock:
    """``acquire`` as a loop over ``_try_acquire``: try once, then poll until the timeout."""

    what = "the lock"

    def __init__(self, run_id: str, mode: LockMode) -> None:
        self.run_id = run_id
        self.mode: LockMode = check_mode(mode)
        self._seq: int | None = None
        self._held = False

    @property
    def seq(self) -> int | None:
        """The run sequence number this acquisition was given (None before, or if not asked for)."""
        return self._seq

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self, timeout_s: float = 0.0) -> None:
        """Take the lock, waiting up to ``timeout_s`` (0: try once); :class:`BusyError` if still held."""
        if self._held:
            raise RuntimeError(f"{self.what} is already held by this run")
        deadline = time.monotonic() + max(0.0, timeout_s)
        delay = 0.05
        while True:
            if self._try_acquire():
                self._held = True
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 0.5)
        self._give_up()
        raise busy_error(self.what, self.holders(), timeout_s)

    def release(self) -> None:
        """Give the lock back (a no-op if not held)."""
        if not self._held:
            return
        self._held = False
        self._release()

    def holder(self) -> dict[str, object] | None:
        """The first (oldest) holder's description, or None when free."""
        holders = self.holders()
        return holders[0] if holders else None

    def holders(self) -> list[dict[str, object]]:
        raise NotImplementedError

    def _try_acquire(self) -> bool:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _give_up(self) -> None:
        """Free what polling kept (a connection) when the lock stays held."""

    def __enter__(self) -> PollingLock:
        if not self._held:
            self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
