"""`--reconnect-every`: when each subscriber drops its socket.

Publishing time is cut into periods of `--reconnect-every` seconds from its start; in each
one, every subscriber drops its socket once, at a moment drawn uniformly within the period
(its own draw), so that the drops are spread out rather than all at once, and each
subscriber is away about once per period. What a drop does (the socket aborted, a new one
rejoining with recovery) is the worker's; this is only the schedule, with time given in.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable


class Reconnects:
    """The drop moments of `count` subscribers, on the monotonic clock in nanoseconds;
    `draw()` gives a fraction in [0, 1) (`random.Random.random`)."""

    def __init__(self, count: int, start_ns: int, period_ns: int, draw: Callable[[], float]):
        self.start_ns = start_ns
        self.period_ns = period_ns
        self.draw = draw
        # (moment, subscriber, period): the earliest first.
        self.heap = [(self._moment(0), i, 0) for i in range(count)]
        heapq.heapify(self.heap)

    def _moment(self, period: int) -> int:
        return self.start_ns + int((period + self.draw()) * self.period_ns)

    def due(self, now_ns: int) -> list[int]:
        """The subscribers whose drop moment has come by `now_ns` (each drop once), in the
        order of their moments; each one's next drop is drawn in its next period."""
        heap, due = self.heap, []
        while heap and heap[0][0] <= now_ns:
            _, i, period = heapq.heappop(heap)
            due.append(i)
            heapq.heappush(heap, (self._moment(period + 1), i, period + 1))
        return due

    def next_ns(self) -> int | None:
        """When the next drop is due; None without subscribers."""
        return self.heap[0][0] if self.heap else None
