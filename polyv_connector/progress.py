"""Progress: a live line (rows/s, ETA) on a terminal, plain log lines elsewhere.

Aggregated, never per request: one line at most every ``interval_s`` seconds (every 5 s in a
log), carrying what the phase's ``detail`` adds (the sender: requests, retries by cause, split
batches, time waiting for the budget). The line is also emitted while nothing completes
(:meth:`Progress.tick`), so a run that is retrying is not silent.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

log = logging.getLogger("polyv_connector")


class Progress:
    """Counts items through a phase and reports at most every ``interval_s`` seconds."""

    def __init__(
        self, stream: TextIO | None = None, interval_s: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._interval = interval_s if interval_s is not None else (0.2 if self._tty else 5.0)
        self._clock = clock
        self._phase = ""
        self._total = 0
        self._done = 0
        self._start = self._last = clock()
        self._detail: Callable[[], str] | None = None
        self._emitted: str | None = None

    def start(self, phase: str, total: int, detail: Callable[[], str] | None = None) -> None:
        """Begin a phase of ``total`` items (0: unknown); ``detail`` adds words to each line."""
        self._phase, self._total, self._done = phase, total, 0
        self._detail = detail
        self._emitted = None
        self._start = self._last = self._clock()

    def advance(self, n: int) -> None:
        self._done += n
        self.tick()

    def tick(self) -> None:
        """Emit a line if ``interval_s`` has passed since the last one (call it freely)."""
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            self._emit(now, final=False)

    def finish(self) -> None:
        self._emit(self._clock(), final=True)

    def _emit(self, now: float, final: bool) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self._done / elapsed
        left = max(self._total - self._done, 0)
        eta = f", ETA {left / rate:.0f}s" if rate > 0 and left and not final else ""
        total = f"/{self._total:,}" if self._total else ""
        line = f"{self._phase}: {self._done:,}{total} items, {rate:,.0f} items/s{eta}"
        if self._detail is not None:
            line += "; " + self._detail()
        if line == self._emitted and not self._tty:
            return  # nothing moved since the last line: say nothing rather than the same again
        self._emitted = line
        if self._tty:
            self._stream.write("\r" + line + ("\n" if final else ""))
            self._stream.flush()
        else:
            log.info("%s", line)
