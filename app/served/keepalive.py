"""Keep-alive for the detached WebSockets of one server: one timer for all of them.

Each detached socket has at most one keep-alive step to come, at a deadline: its next
ping, or the end of its wait for the pong of the ping it was sent. A timer per socket
would cost an event-loop timer (about half a kilobyte) per idle socket; instead the
deadlines are kept in a timing wheel (`Deadlines`) of slots `tick` seconds wide, and one
timer, armed for the earliest slot, runs every step that has fallen due.

Invariants: a socket is in at most one slot, the one its `due` names (None: in none); a
step never runs before its deadline, and at most one tick after it (later only when the
event loop itself is late). The tick is an eighth of the shorter of the ping interval and
the pong timeout, so neither is stretched by more than an eighth.
"""

from __future__ import annotations

import math
from typing import Generic, Protocol, TypeVar

from app.clock import Clock, Timer
from app.counters import Counters

TICKS = 8  # slots per ping interval (or pong timeout, if shorter)


class Scheduled(Protocol):
    due: int | None  # the slot it is in, None when in none


S = TypeVar("S", bound=Scheduled)


class Deadlines(Generic[S]):
    """Items by deadline, to a precision of `tick` seconds. Pure: time is an argument."""

    __slots__ = ("slots", "tick")

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self.slots: dict[int, dict[S, None]] = {}  # slot -> its items, in the order set

    def set(self, item: S, when: float) -> None:
        """Make `when` the deadline of `item`, instead of any it had."""
        self.clear(item)
        slot = math.ceil(when / self.tick)  # the first slot that starts at or after `when`
        items = self.slots.get(slot)
        if items is None:
            items = self.slots[slot] = {}
        items[item] = None
        item.due = slot

    def clear(self, item: S) -> None:
        """`item` has no deadline any more."""
        slot = item.due
        if slot is None:
            return
        item.due = None
        items = self.slots[slot]
        del items[item]
        if not items:
            del self.slots[slot]

    def next(self) -> float | None:
        """When the earliest slot falls due; None when there is none."""
        return min(self.slots) * self.tick if self.slots else None

    def expired(self, now: float) -> list[S]:
        """Take out the items whose slot has fallen due at `now`, earliest slot first."""
        due = sorted(slot for slot in self.slots if slot * self.tick <= now)
        out: list[S] = []
        for slot in due:
            for item in self.slots.pop(slot):
                item.due = None
                out.append(item)
        return out


class Pinged(Scheduled, Protocol):
    def deadline(self, now: float) -> None:
        """Its keep-alive step has fallen due (`now` on the clock of `KeepAlive.clock`)."""


P = TypeVar("P", bound=Pinged)


class KeepAlive(Generic[P]):
    """The keep-alive settings of a server's detached sockets, their deadlines and the
    one timer that runs them.

    `ping_interval`: seconds from a socket's pong (or its detaching) to its next ping;
    `ping_timeout`: seconds a ping waits for its pong before the socket is closed;
    `idle_timeout` (None: never): seconds without a message after which a socket is
    closed at its next ping; `close_timeout`: seconds a closing handshake may take."""

    __slots__ = (
        "armed",
        "clock",
        "close_timeout",
        "counters",
        "deadlines",
        "idle_timeout",
        "ping_interval",
        "ping_timeout",
        "timer",
    )

    def __init__(
        self,
        clock: Clock,
        counters: Counters,
        ping_interval: float,
        ping_timeout: float,
        idle_timeout: float | None = None,
        close_timeout: float = 10.0,
    ) -> None:
        self.clock = clock
        self.counters = counters
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.idle_timeout = idle_timeout
        self.close_timeout = close_timeout
        self.deadlines: Deadlines[P] = Deadlines(min(ping_interval, ping_timeout) / TICKS)
        self.timer: Timer | None = None
        self.armed = math.inf  # when the timer fires

    def due_at(self, sock: P, when: float) -> None:
        """Run `sock.deadline` at `when` (a tick later at most)."""
        self.deadlines.set(sock, when)
        self._arm()

    def forget(self, sock: P) -> None:
        """`sock` has no keep-alive step to come."""
        self.deadlines.clear(sock)

    def _arm(self) -> None:
        when = self.deadlines.next()
        if when is None or when >= self.armed:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.armed = when
        self.timer = self.clock.call_later(max(0.0, when - self.clock.time()), self._run)

    def _run(self) -> None:
        self.timer, self.armed = None, math.inf
        now = self.clock.time()
        for sock in self.deadlines.expired(now):
            sock.deadline(now)
        self._arm()
