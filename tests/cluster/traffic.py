"""Steady traffic on one topic across gateways, recorded for fault tests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import websockets

from tests.support import POLL, TIMEOUT


@dataclass
class Subscriber:
    conn: websockets.ClientConnection
    received: list[tuple[int, float]] = field(default_factory=list)  # (n, arrival)
    positions: list[str] = field(default_factory=list)  # "epoch:offset", when joined for them

    def numbers(self) -> list[int]:
        return [n for n, _ in self.received]

    def longest_gap(self, after: float, before: float) -> float:
        """The longest wait between two arrivals within [after, before]."""
        times = [at for _, at in self.received if after <= at <= before]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


class Traffic:
    """One publisher (on the first URL) and subscribers on every URL, on `topic`.

    The publisher sends {"n": 1, 2, ...} every `interval` seconds and records each reply;
    every socket, the publisher's included, records what it receives and when (and its
    position, for sockets that join with `{"positions": true}`).
    """

    def __init__(
        self,
        urls: list[str],
        topic: str,
        per_gateway: int,
        interval: float,
        join: dict[str, Any] | None = None,
    ) -> None:
        self.urls = urls
        self.topic = topic
        self.join = join or {}
        self.per_gateway = per_gateway
        self.interval = interval
        self.subscribers: list[Subscriber] = []
        self.replies: dict[int, str] = {}  # n -> "ok" | "error"
        self.sent = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._stack = contextlib.AsyncExitStack()
        self._publishing = True

    async def __aenter__(self) -> Traffic:
        for url in self.urls:
            for _ in range(self.per_gateway):
                conn = await self._stack.enter_async_context(
                    websockets.connect(url, open_timeout=TIMEOUT)
                )
                await conn.send(
                    orjson.dumps(["1", "1", self.topic, "phx_join", self.join]).decode()
                )
                reply = orjson.loads(await asyncio.wait_for(conn.recv(), TIMEOUT))
                assert reply[4]["status"] == "ok", reply
                self.subscribers.append(Subscriber(conn))
        for sub in self.subscribers:
            self._tasks.append(asyncio.create_task(self._read(sub)))
        self._tasks.append(asyncio.create_task(self._publish(self.subscribers[0].conn)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await self._stack.aclose()

    async def _publish(self, conn: websockets.ClientConnection) -> None:
        while self._publishing:
            self.sent += 1
            body = {"n": self.sent}
            frame = ["1", f"p{self.sent}", self.topic, "publish", ["m", body]]
            await conn.send(orjson.dumps(frame).decode())
            await asyncio.sleep(self.interval)

    async def _read(self, sub: Subscriber) -> None:
        async for data in sub.conn:
            frame = orjson.loads(data)
            if frame[3] == "m":
                sub.received.append((frame[4]["n"], time.monotonic()))
                if frame[1] is not None:
                    sub.positions.append(frame[1])
            elif frame[3] == "phx_reply" and frame[1].startswith("p"):
                self.replies[int(frame[1][1:])] = frame[4]["status"]

    async def stop(self, settle: float = 8.0) -> None:
        """Stop publishing; wait until every publish has its reply and every socket has
        the last message acknowledged (each owner delivers in order, so what precedes it
        has arrived too). Whatever is still missing then is for the checks to report."""
        self._publishing = False
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline and len(self.replies) < self.sent:
            await asyncio.sleep(POLL)
        last = max(self.acked(), default=None)
        while time.monotonic() < deadline and last is not None:
            if all(last in sub.numbers() for sub in self.subscribers):
                break
            await asyncio.sleep(POLL)
        # Then a moment in which nothing should arrive, for check_order to see any
        # duplicate that comes late.
        await asyncio.sleep(0.3)

    def received_by_all(self, count: int) -> bool:
        """Every socket has received at least `count` messages."""
        return all(len(sub.received) >= count for sub in self.subscribers)

    def heard_after(self, moment: float) -> bool:
        """Every socket has received a message after `moment` (time.monotonic)."""
        return all(sub.received and sub.received[-1][1] > moment for sub in self.subscribers)

    def longest_gap(self, after: float, before: float) -> float:
        """The longest any socket waited for a message within [after, before]."""
        return max(sub.longest_gap(after, before) for sub in self.subscribers)

    def acked(self) -> set[int]:
        return {n for n, status in self.replies.items() if status == "ok"}

    def check_order(self) -> None:
        """Every socket saw each message at most once, in publish order."""
        for i, sub in enumerate(self.subscribers):
            numbers = sub.numbers()
            assert numbers == sorted(set(numbers)), f"subscriber {i}: duplicate or out of order"

    def check_replies(self) -> None:
        """Every publish got an answer, ok or error: none was left in silence."""
        missing = set(range(1, self.sent + 1)) - set(self.replies)
        assert not missing, f"publishes without a reply: {sorted(missing)[:20]}"
