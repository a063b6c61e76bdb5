"""What every phase of a run shares and never changes: its id, its clock, how it waits, its stop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from polyv_connector.progress import Progress
from polyv_connector.sender import Circuit


@dataclass(frozen=True)
class RunContext:
    """One run's context, given to each phase instead of a trail of parameters.

    ``clock``, ``sleep`` and ``seed`` are injected so tests pin time and jitter; ``stop`` lets
    another thread or a signal handler stop the run (:meth:`Circuit.stop`); ``progress`` says
    how far the run is (a no-op by default).
    """

    run_id: str
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    seed: int | None = None
    stop: Circuit = field(default_factory=Circuit)
    progress: Progress = field(default_factory=Progress)
