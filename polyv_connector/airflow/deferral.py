"""Waits that free the worker: a run that must wait before it reads defers to the triggerer.

Two waits come before a run reads anything: the sync state held by another run of the same
account (or slice), and a POLYV block already recorded in the shared request budget. In
Airflow, with ``deferrable`` on, the operator does not sleep in its worker slot for them: it
defers on a time trigger and, when it resumes, looks again. The triggerer cannot test the
locks themselves (a file lock or an advisory lock belongs to the process or session that holds
it), so the look is made here, without waiting (:meth:`StateStore.try_open
<polyv_connector.state.store.StateStore.try_open>`, the budget's recorded block), and the
delay grows from :data:`FIRST_DELAY_S` to :data:`MAX_DELAY_S`.

No deferral is shorter than :func:`resume_floor`. Airflow (3.3) resumes a deferred task under
the same task-instance key (same try number) it ran under before deferring, and its scheduler
learns that the deferring worker process has exited only later: the worker's supervisor may
take up to ``[workers] min_heartbeat_interval`` (5 s) to notice, then a scheduler loop to read
it. When the trigger fires sooner, the scheduler queues the resumed task first, then reads the
old exit ("success"), which takes the new one out of its executor's running set, and fails it:
"finished with state success, but the task instance's state attribute is queued". Three
deferred runs of one account (a backfill) resuming together after the former 5-second first
delay met exactly that. A wait that has less of ``lock_timeout`` left than the floor is made
in process, as without deferring.

The whole wait stays bounded by ``lock_timeout``, counted from the first look: once it is
spent the run goes on and meets the holder (or the block) as a run that does not defer does:
``busy`` (exit 5) or ``blocked``. Nothing is read or sent before a look finds the way free, so
a resumed run reads and sends everything once. A block met in the middle of sending is not a
wait before reading: it keeps its behaviour (stop, report, retryable).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polyv_connector.config import SyncOptions
    from polyv_connector.runspec import RunSpec
    from polyv_connector.state.store import StateStore

log = logging.getLogger("polyv_connector")

#: The first deferral's delay, doubled at each look up to :data:`MAX_DELAY_S`.
FIRST_DELAY_S = 30.0
MAX_DELAY_S = 300.0
#: The shortest deferral (see :func:`resume_floor`).
MIN_DELAY_S = 30.0
#: The operator method Airflow calls when the trigger fires.
RESUME_METHOD = "resume_after_wait"


def default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable`` (false when unset)."""
    from airflow.sdk.configuration import conf

    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


def is_deferrable(setting: bool | None) -> bool:
    """The run's ``deferrable``: the setting when given, else Airflow's default."""
    return default_deferrable() if setting is None else setting


def resume_floor(heartbeat_s: float | None = None, idle_s: float | None = None) -> float:
    """The shortest deferral that resumes after Airflow has seen the deferring worker exit: four
    of the supervisor's longest waits (``[workers] min_heartbeat_interval``) and four scheduler
    loops (``[scheduler] scheduler_idle_sleep_time``), at least :data:`MIN_DELAY_S`. A shorter
    one can get the resumed task failed by the scheduler (the module's docstring says how)."""
    if heartbeat_s is None or idle_s is None:
        from airflow.sdk.configuration import conf

        heartbeat_s = conf.getfloat("workers", "min_heartbeat_interval", fallback=5.0)
        idle_s = conf.getfloat("scheduler", "scheduler_idle_sleep_time", fallback=1.0)
    return max(MIN_DELAY_S, 4 * heartbeat_s + 4 * idle_s)


@dataclass(frozen=True)
class Waited:
    """How long this task has been waiting: when its first look was, and how many looks so far
    (carried through each deferral in the trigger's kwargs: strict JSON)."""

    since: float
    looks: int = 0

    def to_kwargs(self) -> dict[str, Any]:
        return {"waited_since": self.since, "looks": self.looks}

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any] | None, now: float) -> Waited:
        kwargs = kwargs or {}
        since = kwargs.get("waited_since")
        looks = kwargs.get("looks")
        if not isinstance(since, int | float) or isinstance(since, bool) or not 0 < since <= now:
            return cls(since=now)
        return cls(since=float(since), looks=looks if isinstance(looks, int) and looks >= 0 else 0)


def next_delay(looks: int) -> float:
    """The delay before look ``looks + 1``: doubling from :data:`FIRST_DELAY_S`, at most :data:`MAX_DELAY_S`."""
    return float(min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** min(looks, 16)))


def state_held(state: StateStore | None, options: SyncOptions, probe_id: str) -> bool:
    """Whether another run holds the sync state (or this slice of it) now, looked at without waiting."""
    if state is None or options.dry_run or options.planned:
        # A dry run reads a snapshot without the lock: it never waits. An apply does not look:
        # a look takes the lock, which moves the state's position its plan was made against.
        return False
    with state.try_open(probe_id, options.slice) as held:
        return held is None


def state_to_probe(state: StateStore | None, options: SyncOptions, app_id: str) -> StateStore | None:
    """The store to look at: the state table, else the folder state of ``state_dir`` (which the
    engine makes for itself), else none."""
    if state is None and options.state_dir:
        from polyv_connector.state.folder import SyncState

        return SyncState(options.state_dir, app_id, implicit_lock=False)
    return state


def remaining(options: SyncOptions, waited: Waited, clock: Callable[[], float] = time.time) -> SyncOptions:
    """``options`` with ``lock_timeout`` cut to what the deferrals left of it: the run's whole wait,
    deferred and in process, stays within ``lock_timeout``."""
    import dataclasses

    left = max(0.0, waited.since + options.lock_timeout_s - clock())
    return dataclasses.replace(options, lock_timeout_s=min(options.lock_timeout_s, left))


def block_left(budget: Any, now: float) -> float:
    """Seconds left of a POLYV block recorded in the budget (0: none)."""
    until = budget.blocked_until() if budget is not None else None
    return max(0.0, float(until) - now) if until else 0.0


@dataclass(frozen=True)
class Deferral:
    """Why the run waits, and for how long before its next look."""

    why: str
    delay_s: float
    waited: Waited


def must_wait(
    state: StateStore | None,
    options: SyncOptions,
    budget: Any,
    waited: Waited,
    probe_id: str,
    clock: Callable[[], float] = time.time,
    floor: float = MIN_DELAY_S,
) -> Deferral | None:
    """The deferral this run makes now, or None to go on: the way is free, or less than
    ``floor`` (:func:`resume_floor`) is left of ``lock_timeout``: the run then waits the rest in
    process, or meets the holder or the block, as it would without deferring."""
    now = clock()
    left = waited.since + options.lock_timeout_s - now
    if left < floor:
        return None
    block = block_left(budget, now)
    if block > 0:
        why = f"POLYV blocked this machine's IP; the block recorded in the request budget ends in {block:.0f} s"
        delay = block
    elif state_held(state, options, probe_id):
        why = "another run holds the sync state"
        delay = next_delay(waited.looks)
    else:
        return None
    return Deferral(why=why, delay_s=min(max(floor, delay), left), waited=Waited(waited.since, waited.looks + 1))


def time_trigger(delay_s: float) -> Any:
    """The triggerer's side of the wait: a plain timer (the standard provider's)."""
    from datetime import timedelta

    from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

    return TimeDeltaTrigger(timedelta(seconds=delay_s))


def log_deferral(deferral: Deferral, lock_timeout_s: float, clock: Callable[[], float] = time.time) -> str:
    """The task log's line for a deferral (the log shows it while the task is deferred)."""
    spent = clock() - deferral.waited.since
    return (
        f"waiting before reading: {deferral.why}; deferring to the triggerer for {deferral.delay_s:.0f} s "
        f"(look {deferral.waited.looks}, waited {spent:.0f} s of lock_timeout {lock_timeout_s:.0f} s); "
        "nothing has been read or sent"
    )


def wait_or_defer(
    operator: Any, spec: RunSpec, state: StateStore | None, budget: Any, run_id: str, app_id: str
) -> SyncOptions:
    """The run's options once the way is free; defers ``operator`` (raises Airflow's
    ``TaskDeferred``) when the run must wait and ``deferrable`` is on. Without deferring, the
    options are the spec's: the engine waits in process, as on the command line."""
    if not is_deferrable(spec.deferrable) or spec.options.lock_timeout_s <= 0:
        return spec.options
    waited = Waited.from_kwargs(getattr(operator, "_waited", None), time.time())
    probe = state_to_probe(state, spec.options, app_id)
    deferral = must_wait(probe, spec.options, budget, waited, run_id, floor=resume_floor())
    if deferral is None:
        return remaining(spec.options, waited)
    operator.log.info("%s", log_deferral(deferral, spec.options.lock_timeout_s))
    operator.defer(
        trigger=time_trigger(deferral.delay_s),
        method_name=RESUME_METHOD,
        kwargs=deferral.waited.to_kwargs(),
    )
    raise AssertionError("defer() returns only by raising TaskDeferred")  # pragma: no cover
