"""Log lines for events that can repeat once per message: at most one a second.

Dropped messages must be logged, but a message dropped per delivery must not become a
log line per delivery. Each event is logged at once the first time, then at most once
per `interval`, saying how many more happened in between (the counters have the totals).
"""

from __future__ import annotations

import logging
import time


class ThrottledLog:
    __slots__ = ("_last", "_suppressed", "interval", "level", "logger")

    def __init__(self, logger: logging.Logger, level: int, interval: float = 1.0) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self._last = float("-inf")
        self._suppressed = 0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        if self._suppressed:
            message += f" (and {self._suppressed} more like it since the last report)"
        self.logger.log(self.level, message, *args)
        self._last = now
        self._suppressed = 0
