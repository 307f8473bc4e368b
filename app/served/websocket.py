"""A served WebSocket up to its detaching: uvicorn's sans-I/O protocol, then a handover.

uvicorn does the opening handshake and runs the ASGI app, which finds this protocol in
the scope's extensions (`EXTENSION`). Once the app has accepted the connection it
`detach`es it: a `DetachedWebSocket` (`app.served.detached`) takes the transport over, and
the ASGI app returns without closing it. The gateway fans one message out to thousands of
sockets; through ASGI that would be one `await send(...)` per socket, a coroutine chain
that re-frames the same bytes every time, and each idle socket would keep a task with its
stack of coroutine frames, queues, the scope and the request's headers. A detached socket
is written to straight, with frames built once, and keeps only what an open connection
needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from app.served import frames
from app.served.detached import DetachedWebSocket, Receiver
from app.served.keepalive import KeepAlive

EXTENSION = "dps.connection"
END_OF_REQUEST = b"\r\n\r\n"

R = TypeVar("R", bound=Receiver)


class ServedWebSocket(WebSocketsSansIOProtocol):
    # Set on the subclass `configured` makes, one per node.
    keepalive: ClassVar[KeepAlive[DetachedWebSocket]]

    detached = False
    # What websockets was given after the request that is not a whole frame yet: the frame
    # boundaries for `app.served.reader`.
    unread: bytes | None = None

    @classmethod
    def configured(cls, keepalive: KeepAlive[DetachedWebSocket]) -> type[ServedWebSocket]:
        return type("ConfiguredWebSocket", (cls,), {"keepalive": keepalive})

    def detach(self, receiver_for: Callable[[DetachedWebSocket], R]) -> R:
        """Hand the accepted connection over to a `DetachedWebSocket`, and return what
        `receiver_for` makes of it: the receiver of its messages (those that arrived before
        the handover first) and of its end. The ASGI app may then return."""
        self.detached = True
        self.stop_keepalive()  # the detached socket's own keep-alive takes over
        opened = DetachedWebSocket(
            self.keepalive,
            self.transport,
            self.conn,
            self.client,
            self.connections,  # type: ignore[arg-type]
            self.config.ws_max_size,
            self.unread,
        )
        opened.close_sent = self.close_sent
        if self.frames:  # a fragmented message had begun
            opened.fragments, opened.text = self.frames, self.curr_msg_data_type == "text"
        receiver = receiver_for(opened)
        queued: list[tuple[bytes, bool]] = []
        while not self.queue.empty():
            message = self.queue.get_nowait()
            if message["type"] == "websocket.receive":
                string = message.get("text")
                if string is not None:
                    queued.append((string.encode(), True))
                else:
                    queued.append((message.get("bytes") or b"", False))
        if self.disconnected:  # the end came before the handover
            for data, text in queued:
                receiver.received(data, text)
            receiver.closed()
            return receiver
        self.connections.discard(self)
        self.connections.add(opened)  # type: ignore[arg-type]
        self.transport.set_protocol(opened)
        if self.read_paused and not self.transport.is_closing():
            # uvicorn pauses reading while its queue holds a message, until the app takes
            # it; nobody will now. Resumed before the queued messages are handled, which
            # may pause it again.
            self.transport.resume_reading()
        opened.start(receiver, queued)
        return receiver

    def data_received(self, data: bytes) -> None:
        requested = self.handshake_initiated
        super().data_received(data)
        if requested:
            if self.unread is not None:
                self.unread = frames.follow(self.unread, data)
        elif self.handshake_initiated:
            # uvicorn's HTTP protocol parsed the request for the upgrade, and hands it over
            # in one piece: its end is this data's first blank line.
            end = data.find(END_OF_REQUEST)
            if end >= 0:
                self.unread = frames.follow(b"", data[end + len(END_OF_REQUEST) :])

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
        if self.close_timer is None and not self.detached:
            self.transport.close()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # uvicorn has copied the headers into the scope. websockets' parser keeps the
        # request for as long as the connection lasts: its headers (about 2.5 KB) need not.
        event.headers.clear()
        scope = getattr(self, "scope", None)  # set only when the upgrade goes ahead
        if scope is not None:
            scope["extensions"][EXTENSION] = self
