"""One client socket as the gateway sees it: its id, its serializer, its writer.

Frames for a socket are collected during a turn of the event loop and written together at
its end (`Outbox`): when several messages reach a socket at once, as under load, they
cost one system call, not one each.

The outbound queue is the connection's write buffer, and the frames of this turn. Both are
bounded by `limit` bytes, at every write: a socket whose buffer holds more than that when
more is to be written, or to which more than that is written within one turn, has stopped
keeping up, and is closed with 1013 (try again later) instead of growing without bound or
slowing anyone else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from app.counters import Counters
from app.served.detached import DetachedWebSocket
from ws_gateway.serializers import Serializer, encode_reply

log = logging.getLogger("dps.gateway")

TRY_AGAIN_LATER = 1013


class Outbox:
    """The sockets with frames to write at the end of this turn of the event loop; and the
    turn's number, with what waits for the next (sockets that spent their frames of this
    turn, `ws_gateway.session`): one callback per turn for all of them, not one each."""

    __slots__ = ("held", "pending", "scheduled", "turn")

    def __init__(self) -> None:
        self.pending: list[Socket] = []
        self.held: list[Callable[[], None]] = []
        self.scheduled = False
        self.turn = 0  # turns that ended with something to do

    def schedule(self) -> None:
        self.scheduled = True
        asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        self.turn += 1
        pending, self.pending = self.pending, []
        for sock in pending:
            sock.flush()
        held, self.held = self.held, []
        for resume in held:
            resume()


class Socket:
    __slots__ = (
        "conn",
        "counters",
        "id",
        "limit",
        "out",
        "outbox",
        "queued",
        "serializer",
        "transport",
    )

    def __init__(
        self,
        id: int,
        conn: DetachedWebSocket,
        serializer: Serializer,
        limit: int,
        counters: Counters,
        outbox: Outbox,
    ) -> None:
        self.id = id  # unique on this gateway, never 0
        self.conn = conn
        self.transport = conn.transport
        self.serializer = serializer
        self.limit = limit
        self.counters = counters
        self.outbox = outbox
        self.out: list[bytes] | None = None
        self.queued = 0  # bytes in `out`

    def send(self, data: bytes) -> None:
        """Queue one framed message (a serializer's output)."""
        out = self.out
        if out is not None:
            out.append(data)
            self.queued += len(data)
            if self.queued > self.limit:
                self._overflowed()
            return
        self.out = [data]
        self.queued = len(data)
        outbox = self.outbox
        outbox.pending.append(self)
        if not outbox.scheduled:
            outbox.schedule()

    def flush(self) -> None:
        out, self.out = self.out, None
        transport = self.transport
        # conn.closing, without the property and its second look into the connection
        if out is None or self.conn.close_sent or transport.is_closing():
            return
        if transport.get_write_buffer_size() > self.limit:
            self._overflowed()
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _overflowed(self) -> None:
        self.out = None  # what was queued is dropped with the socket
        if self.conn.closing:
            return
        self.counters.slow_consumers_closed += 1
        log.warning("closing slow consumer %s: more than %d bytes waiting", self.peer, self.limit)
        self.conn.close_now(TRY_AGAIN_LATER, "slow consumer: outbound queue full", hang_up=True)

    def push(
        self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any
    ) -> None:
        """Send one frame to this socket only (phx_close)."""
        self.send(self.serializer.encode(join_ref, ref, topic, event, payload))

    def reply(
        self, join_ref: str | None, ref: str | None, topic: str, status: str, response: Any
    ) -> None:
        self.send(encode_reply(self.serializer, join_ref, ref, topic, status, response))

    def close(self, code: int, reason: str, hang_up: bool = False) -> None:
        """Close with `code` and `reason` (see `DetachedWebSocket.close_now` for `hang_up`),
        after what was already queued for this socket (the replies before the close)."""
        self.flush()
        self.conn.close_now(code, reason, hang_up)

    @property
    def peer(self) -> str:
        client = self.conn.client
        return f"{client[0]}:{client[1]}" if client else "?"
