"""A manual `app.clock.Clock`: time moves only when a test calls `advance`."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


class FakeTimer:
    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()  # equal deadlines run in the order they were set

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time on by `seconds`, running every callback that falls due on the way, in
        order of deadline, each with the clock at its own deadline."""
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self.now = max(self.now, when)
                timer.callback(*timer.args)
        self.now = end

    def stall(self, seconds: float) -> None:
        """This process was frozen for `seconds` (SIGSTOP, a busy loop): time moved and
        nothing ran. What fell due meanwhile runs, late, at the next `advance`."""
        self.now += seconds

    @property
    def pending(self) -> list[float]:
        """Deadlines of the callbacks not yet run nor cancelled, soonest first."""
        return sorted(when for when, _, timer in self._timers if not timer.cancelled)
