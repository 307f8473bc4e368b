"""A served WebSocket (client socket or node link): uvicorn's sans-I/O protocol plus a
synchronous writer.

The gateway fans one message out to thousands of sockets. Through ASGI that would be one
`await send(...)` per socket, a coroutine chain that re-frames the same bytes every time.
This protocol (given to uvicorn as its `ws` class) exposes itself to the app in the ASGI
scope's extensions, so the fan-out can write frames that were built once, straight to each
socket's transport, with no await; node links use the same writer for their batches.
Everything else (handshake, pings, the closing handshake, inbound frames) stays uvicorn's.

Once the app has accepted a connection it can `detach` it: received messages then go to
a callback as they are parsed, synchronously, instead of through an ASGI queue and a task
per connection, and the ASGI app returns without closing it. An idle socket then costs
its transport, its protocol objects and the app's own state, not a task with a stack of
coroutine frames and queues (about half of the memory of an idle socket), and a received
message is handled without a task switch.

A detached connection reads its whole data frames itself (`app.served.frames`), websockets'
parser costing several times more per message, and hands websockets the rest: control
frames one by one, and from anything else on (a fragment, a frame it refuses, or once a
close went either way) the whole connection. It takes over at a frame boundary only,
counting frames from the end of the upgrade request: uvicorn's HTTP protocol hands this
one the request alone, rebuilt from its parsed headers (bytes a client sent with it,
against RFC 6455, are dropped), and should a request come with more, websockets alone
reads the connection.

Three more behaviours differ from uvicorn's: a server shutdown closes sockets with 1001
(going away, so every client reconnects elsewhere); `close_now` starts the closing
handshake at once even when the write buffer is full, for slow consumers that stopped
reading; and with an `idle_timeout`, a socket from which no message has arrived for that
long is closed with 1000 when its next keep-alive ping is due (pongs do not count: a
client library that answers pings by itself is not a client that is there, as Phoenix
has it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import ClassVar

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import OPEN

from app.counters import Counters
from app.served import frames

EXTENSION = "dps.connection"
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
HANG_UP_GRACE = 1.0  # seconds a close frame has to leave before a hung-up client is cut off
MAX_REASON = 123  # bytes of a close frame's reason: its payload is at most 125, with the code
END_OF_REQUEST = b"\r\n\r\n"
MAX_UNREAD = 65536  # bytes of a frame in progress followed while websockets reads (beyond:
# not followed, and websockets goes on reading the connection)


def close_reason(reason: str) -> str:
    """`reason`, cut to whole UTF-8 characters that fit a close frame: a longer one makes
    the WebSocket library raise instead of closing."""
    return reason.encode()[:MAX_REASON].decode(errors="ignore")


def frame(payload: bytes, binary: bool = False) -> bytes:
    """An unmasked, unfragmented server-to-client WebSocket message."""
    head = 0x82 if binary else 0x81
    size = len(payload)
    if size < 126:
        return bytes((head, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", head, 126, size) + payload
    return struct.pack("!BBQ", head, 127, size) + payload


class _Discard:
    """Stands in for the ASGI receive queue of a detached connection."""

    @staticmethod
    def put_nowait(message: object) -> None:
        pass


class ServedWebSocket(WebSocketsSansIOProtocol):
    # Set on the subclass `configured` makes, one per node.
    idle_timeout: ClassVar[float | None] = None
    counters: ClassVar[Counters | None] = None

    on_message: Callable[[bytes, bool], None] | None = None
    on_close: Callable[[], None] | None = None
    heard = 0.0  # loop time of the last message received
    # While websockets reads: the bytes of the frame in progress at the end of what was
    # received, when the frame boundaries are known (None: unknown). `reading`: this class
    # reads the frames, websockets standing at the boundary before `partial`, a frame cut
    # across reads.
    unread: bytes | None = None
    reading = False
    partial: frames.Partial | None = None

    @classmethod
    def configured(cls, idle_timeout: float | None, counters: Counters) -> type[ServedWebSocket]:
        attributes = {"idle_timeout": idle_timeout, "counters": counters}
        return type("ConfiguredWebSocket", (cls,), attributes)

    def detach(
        self, on_message: Callable[[bytes, bool], None], on_close: Callable[[], None]
    ) -> None:
        """Deliver each message to `on_message(data, is_text)` and the end to `on_close()`;
        the ASGI app may then return. Messages already queued are delivered first."""
        queued = []
        while not self.queue.empty():
            queued.append(self.queue.get_nowait())
        self.queue = _Discard()  # type: ignore[assignment]
        self.request = self.response = None  # type: ignore[assignment]
        self.on_message, self.on_close = on_message, on_close
        for message in queued:
            if message["type"] == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    on_message(text.encode(), True)
                else:
                    on_message(message.get("bytes") or b"", False)
        if self.transport.is_closing() or self.disconnected:
            self._closed()
            return
        self.reading = self.unread == b"" and self.conn.state is OPEN
        if self.read_paused:
            # uvicorn pauses reading while its queue holds a message, until the app takes
            # it; nobody will now, so reading must resume here.
            self.read_paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.reading:
            if self.partial is not None and (self.close_sent or self.conn.state is not OPEN):
                data, self.partial = self.partial.joined() + data, None  # websockets' now
            self._read(data)
            return
        initiated = self.handshake_initiated
        super().data_received(data)
        unread = self.unread
        if unread is not None:  # follow the frames websockets reads
            unread += data
            unread = unread[frames.complete(unread) :]
            self.unread = unread if len(unread) <= MAX_UNREAD else None
        elif not initiated and self.handshake_initiated:
            # The request has been read: the frames start after it, if nothing came with it
            # (its end is the first blank line; one cut across reads is not looked for).
            end = data.find(END_OF_REQUEST)
            self.unread = b"" if 0 <= end == len(data) - len(END_OF_REQUEST) else None
        if self.on_message is not None and self.unread == b"" and self.conn.state is OPEN:
            self.reading = True  # websockets stands at a boundary: read from here on

    def _read(self, data: bytes) -> None:
        """Read whole frames (see `app.served.frames`) until websockets must read on."""
        cut = self.partial
        if cut is not None:
            whole = cut.add(data)
            if whole is None:
                return
            self.partial, data = None, whole
        limit = self.config.ws_max_size
        # websockets leaves OPEN only through what it reads here (a close), or as this side
        # closes (close_sent): its state is looked at after a control frame only.
        while not self.close_sent:
            messages, end, following = frames.split(data, True, limit)
            if messages:
                self.heard = self.loop.time()
                for message, text in messages:
                    on_message = self.on_message
                    if on_message is None or self.close_sent:
                        break  # closed by this side: the rest is not for anyone
                    on_message(message, text)
            if following == end and not self.close_sent:
                if end < len(data):
                    self.partial = frames.Partial(data[end:])
                return
            data = data[end:]
            if following < 0 or self.close_sent:
                break
            super().data_received(data[: following - end])  # a ping, pong or close
            data = data[following - end :]
            if self.conn.state is not OPEN:
                break  # a close came: websockets reads on, and discards what follows
        self.reading = False  # websockets reads from here on
        self.unread = None
        if data:
            super().data_received(data)

    def send_receive_event_to_app(self) -> None:
        on_message = self.on_message
        if on_message is None:
            super().send_receive_event_to_app()
            return
        parts = self.frames
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.frames = []
        self.heard = self.loop.time()
        if not self.close_sent:
            on_message(data, self.curr_msg_data_type == "text")

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._closed()

    def _closed(self) -> None:
        on_close = self.on_close
        self.on_message = self.on_close = None
        if on_close is not None:
            on_close()

    async def run_asgi(self) -> None:
        # uvicorn's run_asgi, except that a detached connection outlives the ASGI app.
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned %r.", result)
        if self.close_timer is None and self.on_close is None:
            self.transport.close()

    def handle_connect(self, event: Request) -> None:
        self.heard = self.loop.time()
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # set only when the upgrade goes ahead
        if scope is not None:
            scope["extensions"][EXTENSION] = self

    @property
    def closing(self) -> bool:
        return self.close_sent or self.transport.is_closing()

    def close_now(self, code: int, reason: str, hang_up: bool = False) -> None:
        """Send a close frame now; abort the connection if the client never answers it.

        With `hang_up` (a client that floods, or stopped reading, or sends what cannot be
        understood), nothing more is read from it: reading what it has sent only to find
        its close reply would cost as much as the abuse. The connection is aborted once
        the close frame has had `HANG_UP_GRACE` seconds to leave."""
        if self.closing:
            return
        self.conn.send_close(code, close_reason(reason))
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if hang_up:
            self.read_paused = True
            self.transport.pause_reading()
            self.close_timer = self.loop.call_later(HANG_UP_GRACE, self.transport.abort)
            return
        # Keep reading (whoever paused it) so that the client's close reply is seen.
        self.read_paused = False
        self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)

    def send_keepalive_ping(self) -> None:
        idle = self.idle_timeout
        if idle is not None and self.loop.time() - self.heard >= idle:
            self.ping_timer = None
            if self.counters is not None:
                self.counters.sockets_idle_closed += 1
            self.close_now(NORMAL_CLOSURE, f"idle: no message for {idle:g} s")
            return
        super().send_keepalive_ping()

    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent:
            self.stop_keepalive()
            self.close_now(GOING_AWAY, "server shutting down")
        super().shutdown()
