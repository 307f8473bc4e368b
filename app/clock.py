"""Time as an input: what code with timers (handover, keep-alive, pauses) is given.

An asyncio event loop satisfies `Clock`, so production passes `asyncio.get_running_loop()`
(or `RunningLoop()` where the object is built before the loop runs); tests pass a manual
clock (`tests/clock.py`) and move time themselves, without sleeping.
uvloop's `time()` counts whole milliseconds: code that measures sub-millisecond latencies
takes `time.monotonic` instead (see `ws_gateway.remote_owner`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, TypeVarTuple

Ts = TypeVarTuple("Ts")


class Timer(Protocol):
    """A scheduled callback (`asyncio.TimerHandle` is one)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    def call_later(self, delay: float, callback: Callable[[*Ts], object], *args: *Ts) -> Timer:
        """Call `callback(*args)` once `delay` seconds have passed, unless cancelled."""
        ...


class RunningLoop:
    """The `Clock` of whichever event loop runs when it is asked. A role's node is built
    before uvicorn starts the loop, so it cannot be handed the loop itself."""

    __slots__ = ()

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    def call_later(self, delay: float, callback: Callable[[*Ts], object], *args: *Ts) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback, *args)
