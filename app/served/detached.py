"""A served WebSocket once detached from ASGI: the connection's protocol from then on.

uvicorn does the opening handshake (`app.served.websocket`); once the app has accepted the
connection and detached it, this object takes the transport over. It holds only what an
open connection needs, in slots: the transport, the receiver of its messages, its
keep-alive state, and websockets' sans-I/O protocol while it is needed (a close, a
fragment, a frame to refuse: not while whole frames are read, nor for pings and pongs,
`_control`); uvicorn's protocol, its ASGI scope, the request's headers and its queues are
dropped with the ASGI app. An idle socket then costs a few hundred bytes here, not
several kilobytes.

Received messages go to `receiver.received(data, is_text)` as they are parsed,
synchronously, and the end of the connection to `receiver.closed()`, once: whole frames
read in one pass, once websockets stands at a frame boundary (`app.served.reader`), the
rest by websockets. Frames are written straight to `transport`, built once for any number
of sockets (`frame`).

Keep-alive (`app.served.keepalive`): a ping every `ping_interval` after the last pong;
no pong within `ping_timeout` closes with 1011; with an `idle_timeout`, a socket from which
no message has arrived for that long is closed with 1000 when its next ping is due (pongs
do not count: a client library that answers pings by itself is not a client that is
there, as Phoenix has it). A server shutdown closes with 1001 (going away, so every client
reconnects elsewhere). `close_now` starts the closing handshake at once, even when the
write buffer is full, for slow consumers that stopped reading.
"""

from __future__ import annotations

import asyncio
import random
import struct
from typing import Protocol, cast

from websockets.exceptions import ProtocolError
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from app.clock import Timer
from app.served import frames
from app.served.keepalive import KeepAlive
from app.served.reader import FrameReader

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
INTERNAL_ERROR = 1011
HANG_UP_GRACE = 1.0  # seconds a close frame has to leave before a hung-up client is cut off
MAX_REASON = 123  # bytes of a close frame's reason: its payload is at most 125, with the code
CLOSE, PING, PONG = 0x8, 0x9, 0xA


def close_reason(reason: str) -> str:
    """`reason`, cut to whole UTF-8 characters that fit a close frame: a longer one makes
    the WebSocket library raise instead of closing."""
    return reason.encode()[:MAX_REASON].decode(errors="ignore")


def control(opcode: int, payload: bytes) -> bytes:
    """An unmasked control frame (close, ping, pong) of at most 125 bytes of payload."""
    return bytes((0x80 | opcode, len(payload))) + payload


def frame(payload: bytes, binary: bool = False) -> bytes:
    """An unmasked, unfragmented server-to-client WebSocket message."""
    head = 0x82 if binary else 0x81
    size = len(payload)
    if size < 126:
        return bytes((head, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", head, 126, size) + payload
    return struct.pack("!BBQ", head, 127, size) + payload


class Receiver(Protocol):
    """What gets a detached socket's messages and its end. A text message's bytes are not
    checked for UTF-8 on the way: its receiver decodes them, and refuses what does not."""

    def received(self, data: bytes, text: bool) -> None: ...

    def closed(self) -> None: ...


class DetachedWebSocket(FrameReader):
    __slots__ = (
        "client",
        "close_sent",
        "closer",
        "conn",
        "connections",
        "due",
        "fragments",
        "heard",
        "keepalive",
        "max_size",
        "ping",
        "receiver",
        "text",
        "transport",
    )

    def __init__(
        self,
        keepalive: KeepAlive[DetachedWebSocket],
        transport: asyncio.Transport,
        conn: ServerProtocol,
        client: tuple[str, int] | None,
        connections: set[asyncio.Protocol],
        max_size: int | None,
        unread: bytes | None,
    ) -> None:
        """`unread`: what websockets was given after the request that is not a whole
        frame, if known (`app.served.reader`)."""
        super().__init__()
        self.unread = unread
        self.max_size = max_size  # of a received message
        self.keepalive = keepalive
        self.transport = transport
        # websockets' protocol, past its handshake; None while not needed (`start`)
        self.conn: ServerProtocol | None = conn
        self.client = client
        self.connections = connections  # the server's open connections, this one among them
        self.receiver: Receiver | None = None  # None until started, and once closed
        self.close_sent = False
        self.closer: Timer | None = None  # aborts a closing handshake that takes too long
        self.due: int | None = None  # its slot in `keepalive.deadlines`
        self.ping: bytes | None = None  # the payload of the ping waiting for its pong
        self.heard = keepalive.clock.time()  # when the last message arrived
        self.fragments: list[bytes] | None = None  # of a fragmented message, so far
        self.text = False  # whether that message is text

    def start(self, receiver: Receiver, queued: list[tuple[bytes, bool]]) -> None:
        """Messages go to `receiver`: the `queued` (data, is_text) first, then those that
        arrive. The first ping is due an interval on."""
        self.receiver = receiver
        keepalive = self.keepalive
        keepalive.due_at(self, self.heard + keepalive.ping_interval)
        for data, text in queued:
            self._message(data, text)
        self.follow(b"")  # whole frames from here, if websockets stands at a boundary
        conn = self.conn
        if self.reading and self.fragments is None and conn is not None and not conn.extensions:
            # websockets' protocol and parser are a third of an idle socket's bytes: made
            # again when a close or a frame it must refuse comes (`_protocol`).
            self.conn = None

    @property
    def closing(self) -> bool:
        return self.close_sent or self.transport.is_closing()

    def _reads_whole(self) -> bool:
        conn = self.conn
        if conn is None:  # open, unless this side closed it (a client's close answered)
            return not self.transport.is_closing()
        return conn.state is OPEN

    def _limits(self) -> tuple[bool, int | None]:
        return True, self.max_size

    def _protocol(self) -> ServerProtocol:
        """websockets' protocol, made again in the open state if it was dropped: this
        socket was then reading whole frames, at a frame boundary."""
        conn = self.conn
        if conn is None:
            conn = self.conn = ServerProtocol(state=OPEN, max_size=self.max_size)
        return conn

    def _control(self, data: bytes) -> None:
        if self.conn is not None:
            super()._control(data)  # websockets answers it
            return
        opcode, payload = data[0] & 0x0F, frames.payload(data)
        if opcode == PING:
            self.transport.write(control(PONG, payload))
        elif opcode == PONG:
            self._pong(payload)
        else:
            self._client_closed(data, payload)

    def _client_closed(self, data: bytes, payload: bytes) -> None:
        """The client's close: answered with its own code and reason, as websockets does,
        and the connection closed. When a crowd of clients leaves at once, a gateway answers
        thousands of closes in one turn of its event loop (uvloop reads every ready socket
        before it runs a timer); making websockets' protocol again for each, and reading
        the frame with it, would more than double that turn's work."""
        try:
            Close.parse(payload)
        except (ProtocolError, UnicodeDecodeError):
            self._parse(data)  # websockets refuses it, and says why
            return
        self.transport.write(control(CLOSE, payload))
        self._closed_by_us()  # what follows the close is not read (RFC 6455, 1.4)

    def _parse(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # closed by this side (a protocol error, a close answered): read no more
        conn = self._protocol()
        conn.receive_data(data)
        if conn.parser_exc is not None:
            # websockets has queued the close frame that says why (1002, 1007, 1009).
            self._write_queued()
            self._closed_by_us()
            return
        # Past the handshake, websockets' events are frames only; their payloads are bytes.
        for event in cast(list[Frame], conn.events_received()):
            opcode, data = event.opcode, cast(bytes, event.data)
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if event.fin:
                    self._message(data, opcode is Opcode.TEXT)
                else:
                    self.fragments, self.text = [data], opcode is Opcode.TEXT
            elif opcode is Opcode.CONT:
                if self.fragments is not None:
                    self.fragments.append(data)
                    if event.fin:
                        whole, self.fragments = b"".join(self.fragments), None
                        self._message(whole, self.text)
            elif opcode is Opcode.PING:
                self._write_queued()  # the pong websockets queued
            elif opcode is Opcode.PONG:
                self._pong(bytes(data))
            elif opcode is Opcode.CLOSE:
                self._close_received()

    def _message(self, data: bytes, text: bool) -> None:
        self.heard = self.keepalive.clock.time()
        receiver = self.receiver
        if receiver is not None and not self.close_sent:
            receiver.received(data, text)

    def _pong(self, payload: bytes) -> None:
        if self.ping is None or payload != self.ping:
            return  # unsolicited, or for an earlier ping
        self.ping = None
        keepalive = self.keepalive
        keepalive.due_at(self, keepalive.clock.time() + keepalive.ping_interval)

    def _close_received(self) -> None:
        if self.close_sent:  # the client's answer to ours: the closing handshake is done
            self._cancel_closer()
            self.transport.close()
        elif not self.transport.is_closing():
            self._write_queued()  # the close frame that answers it
            self.transport.close()

    def deadline(self, now: float) -> None:
        """Its keep-alive step: the pong did not come in time, or a ping is due (unless
        the socket is idle)."""
        if self.closing:
            return
        keepalive = self.keepalive
        if self.ping is not None:
            self.ping = None
            self._protocol().fail(INTERNAL_ERROR, "keepalive ping timeout")
            self._write_queued()
            self._closed_by_us()
            return
        idle = keepalive.idle_timeout
        if idle is not None and now - self.heard >= idle:
            keepalive.counters.sockets_idle_closed += 1
            self.close_now(NORMAL_CLOSURE, f"idle: no message for {idle:g} s")
            return
        # A random payload tells this ping's pong from a late one, or an unsolicited one.
        self.ping = struct.pack("!I", random.getrandbits(32))
        self.transport.write(control(PING, self.ping))
        keepalive.due_at(self, now + keepalive.ping_timeout)

    def close_now(self, code: int, reason: str, hang_up: bool = False) -> None:
        """Send a close frame now; abort the connection if the client never answers it.

        With `hang_up` (a client that floods, or stopped reading, or sends what cannot be
        understood), nothing more is read from it: reading what it has sent only to find
        its close reply would cost as much as the abuse. The connection is aborted once
        the close frame has had `HANG_UP_GRACE` seconds to leave."""
        if self.closing:
            return
        self._protocol().send_close(code, close_reason(reason))
        self._write_queued()
        self.close_sent = True
        keepalive = self.keepalive
        keepalive.forget(self)
        if hang_up:
            self.transport.pause_reading()
            self.closer = keepalive.clock.call_later(HANG_UP_GRACE, self.transport.abort)
            return
        # Keep reading (whoever paused it) so that the client's close reply is seen.
        self.transport.resume_reading()
        self.closer = keepalive.clock.call_later(keepalive.close_timeout, self.transport.abort)

    def shutdown(self) -> None:
        """The server is stopping (uvicorn calls this on each of its connections)."""
        if not self.closing:
            self._protocol().send_close(GOING_AWAY, "server shutting down")
            self._write_queued()
        self._closed_by_us()

    def connection_lost(self, exc: Exception | None) -> None:
        self.keepalive.forget(self)
        self._cancel_closer()
        self.connections.discard(self)
        receiver, self.receiver = self.receiver, None
        if receiver is not None:
            receiver.closed()

    def _write_queued(self) -> None:
        if self.conn is not None:
            self.transport.write(b"".join(self.conn.data_to_send()))

    def _closed_by_us(self) -> None:
        """Close after what was written, the close frame included."""
        self.close_sent = True
        self.keepalive.forget(self)
        self._cancel_closer()
        self.transport.close()

    def _cancel_closer(self) -> None:
        if self.closer is not None:
            self.closer.cancel()
            self.closer = None
