"""Subscriptions: what `monitor_scope` and `monitor` hand back, and their events.

A `Subscription` is at once OTP's monitor reference and the subscriber's mailbox: a
bounded FIFO of `Event(ref, kind, group, members)` tuples, `ref` being the
subscription itself. The scope pushes events in the same synchronous step as the table
update that causes them, so the snapshot returned with the subscription plus the events
folded in order always equals the node's `get_members` view.

States (an enum, one way each):

- ACTIVE: events are queued. `get_nowait` / `await get` / `drain` consume them.
- CLOSED: `demonitor` was called (queued events are flushed, as OTP's demonitor does)
  or the scope stopped (queued events stay readable).
- OVERFLOWED: an event found the queue full. Events are never dropped silently: the
  subscription ends, its queue is cleared, and the consumer must monitor again to get
  a fresh snapshot.

Once the queue of an ended subscription is empty, `get_nowait` and `get` raise
`SubscriptionEnded`, so a consumer waiting on a scope that stops does not wait
forever. Waiting needs a running event loop; pushing does not, so the sans-I/O core
and synchronous tests never touch asyncio.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from typing import Literal, NamedTuple

from app.pg.member import Member

__all__ = ["Event", "EventKind", "Subscription", "SubscriptionEnded", "SubscriptionState"]

EventKind = Literal["join", "leave"]


class Event(NamedTuple):
    """One change seen by a subscriber: `members` joined or left `group`."""

    ref: Subscription
    kind: EventKind
    group: str
    members: tuple[Member, ...]


class SubscriptionState(enum.Enum):
    ACTIVE = "active"
    CLOSED = "closed"
    OVERFLOWED = "overflowed"


class SubscriptionEnded(Exception):
    """The subscription ended (see `state`) and no queued event is left."""

    def __init__(self, state: SubscriptionState) -> None:
        super().__init__(f"subscription {state.value}")
        self.state = state


class Subscription:
    """A monitor reference with its bounded event queue (see module docstring)."""

    __slots__ = ("_events", "_waiters", "group", "maxsize", "scope", "state")

    def __init__(self, scope: str, group: str | None, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.scope = scope
        self.group = group  # None for a scope-wide subscription
        self.maxsize = maxsize
        self.state = SubscriptionState.ACTIVE
        self._events: deque[Event] = deque()
        self._waiters: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        target = "scope" if self.group is None else f"group {self.group!r}"
        return f"<Subscription {self.scope!r} {target} {self.state.value} queued={len(self)}>"

    def __len__(self) -> int:
        return len(self._events)

    def get_nowait(self) -> Event:
        """The oldest queued event; `asyncio.QueueEmpty` if none yet."""
        if self._events:
            return self._events.popleft()
        if self.state is not SubscriptionState.ACTIVE:
            raise SubscriptionEnded(self.state)
        raise asyncio.QueueEmpty

    async def get(self) -> Event:
        """Wait for the next event."""
        while not self._events and self.state is SubscriptionState.ACTIVE:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        return self.get_nowait()

    def drain(self) -> list[Event]:
        """Every queued event, oldest first (empty list if none)."""
        events = list(self._events)
        self._events.clear()
        return events

    # The scope's side. `push` returns False when the event overflowed the queue: the
    # scope then forgets the subscription.

    def push(self, kind: EventKind, group: str, members: tuple[Member, ...]) -> bool:
        if len(self._events) >= self.maxsize:
            self._events.clear()
            self._end(SubscriptionState.OVERFLOWED)
            return False
        self._events.append(Event(self, kind, group, members))
        self._wake()
        return True

    def close(self, *, flush: bool) -> None:
        if flush:
            self._events.clear()
        if self.state is SubscriptionState.ACTIVE:
            self._end(SubscriptionState.CLOSED)

    def _end(self, state: SubscriptionState) -> None:
        self.state = state
        self._wake()

    def _wake(self) -> None:
        # Every waiter re-checks the queue; one that was cancelled is already done.
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
