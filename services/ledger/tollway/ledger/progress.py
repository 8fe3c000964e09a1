"""The replay/verify progress line: events done, of how many, and the rate since the phase began."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import Callable

# A rate measured over less than this says nothing (a first report right after a phase begins
# would divide by microseconds and print trillions of events per second).
MIN_RATE_SECONDS = 0.5


class Progress:
    """A one-line progress bar on stderr with the rate; plain lines when not on a terminal."""

    def __init__(
        self, out: TextIO | None = None, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        """Start the clock."""
        self._out = out or sys.stderr
        self._clock = clock
        self._started = self._seen = clock()
        self._phase = ""
        self._last = float("-inf")
        self._tty = self._out.isatty()

    def __call__(self, phase: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` in ``phase`` (``done`` counts from 0 in each phase)."""
        now = self._clock()
        if phase != self._phase:
            # A phase began when the previous one last reported, not at its own first report
            # (which comes a whole batch later).
            self._phase, self._started = phase, self._seen
        self._seen = now
        final = total > 0 and done >= total
        if not final and now - self._last < (0.1 if self._tty else 2.0):
            return
        self._last = now
        line = f"  {phase:<6} [{_bar(done, total)}] {done:>10,}"
        line += (f"/{total:,}" if total else "") + f" events  {self.rate(done, now, final=final)}"
        end = "\n" if final or not self._tty else ""
        self._out.write(("\r" if self._tty else "") + line + end)
        self._out.flush()

    def rate(self, done: int, now: float, *, final: bool = False) -> str:
        """``"12,345 ev/s"``; blank while the phase is too young to measure (unless it ended)."""
        elapsed = now - self._started
        if elapsed <= 0 or (elapsed < MIN_RATE_SECONDS and not final):
            return " " * 15
        return f"{done / elapsed:>10,.0f} ev/s"


def _bar(done: int, total: int) -> str:
    if not total:
        return "?" * 30
    filled = min(30, int(30 * done / total))
    return "#" * filled + "." * (30 - filled)
