"""A served WebSocket connection: uvicorn's sans-I/O protocol plus a synchronous writer.

The gateway fans one message out to thousands of sockets. Through ASGI that would be one
`await send(...)` per socket, a coroutine chain that re-frames the same bytes every time.
This protocol (given to uvicorn as its `ws` class) exposes itself to the app in the ASGI
scope's extensions, so the fan-out can write frames that were built once, straight to each
socket's transport, with no await; node links use the same writer for their batches.
Everything else (handshake, pings, the closing handshake, inbound frames) stays uvicorn's.

Two behaviours differ from uvicorn's: a server shutdown closes sockets with 1001 (going
away, so every client reconnects elsewhere), and `close_now` starts the closing handshake
at once even when the write buffer is full, for slow consumers that stopped reading.
"""

from __future__ import annotations

import struct

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

EXTENSION = "dps.connection"
GOING_AWAY = 1001


def frame(payload: bytes, binary: bool = False) -> bytes:
    """An unmasked, unfragmented server-to-client WebSocket message."""
    head = 0x82 if binary else 0x81
    size = len(payload)
    if size < 126:
        return bytes((head, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", head, 126, size) + payload
    return struct.pack("!BBQ", head, 127, size) + payload


class Connection(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # set only when the upgrade goes ahead
        if scope is not None:
            scope["extensions"][EXTENSION] = self

    @property
    def closing(self) -> bool:
        return self.close_sent or self.transport.is_closing()

    def close_now(self, code: int, reason: str) -> None:
        """Send a close frame now; abort the connection if the client never answers it."""
        if self.closing:
            return
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self.read_paused:
            # Keep reading so that the client's close reply is seen.
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)

    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent:
            self.stop_keepalive()
            self.close_now(GOING_AWAY, "server shutting down")
        super().shutdown()
