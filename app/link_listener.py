"""The listening end of node links: the `/_dps/link` WebSocket endpoint.

It sends the handshake's hello, authenticates the dialer, then hands the open link to the
node's hub and feeds it every batch received. Keep-alive on this end is uvicorn's ping
and pong on the served connection (see `app.roles`): a dialer that stops answering is
dropped after the link timeout. A refused dialer (wrong secret, wrong role, a broken
handshake) is closed with a reason and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket

from app.connection import EXTENSION, Connection, frame
from app.link_connection import LinkConnection, LinkOptions
from app.link_handshake import PROTOCOL_ERROR, Handshake, HandshakeError, State
from app.link_hub import LinkHub

log = logging.getLogger("dps.link")


class ServedLink:
    """`app.link_connection.Writer` over a connection uvicorn serves."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def write_message(self, data: bytes) -> None:
        if not self.conn.closing:
            self.conn.transport.write(frame(data, binary=True))

    def buffered(self) -> int:
        return self.conn.transport.get_write_buffer_size()

    def close(self, code: int, reason: str) -> None:
        self.conn.close_now(code, reason)


def link_endpoint(
    hub: LinkHub, options: LinkOptions, accept_role: str, linked_for: Callable[[], float]
) -> Callable[[WebSocket], Awaitable[None]]:
    """The endpoint for links dialled by nodes of role `accept_role`."""

    async def endpoint(websocket: WebSocket) -> None:
        conn: Connection = websocket.scope["extensions"][EXTENSION]
        await websocket.accept()
        handshake = Handshake(hub.local, options.secret, listener=True)
        conn.transport.write(frame(handshake.hello(linked_for()).encode()))
        link: LinkConnection | None = None
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                if link is not None and data is not None:
                    link.receive(data)
                    continue
                text = message.get("text")
                try:
                    if link is not None or text is None:
                        raise HandshakeError(PROTOCOL_ERROR, "unexpected message")
                    reply = handshake.receive(text)
                    peer = handshake.peer
                    if peer is not None and peer.role != accept_role:
                        raise HandshakeError(
                            PROTOCOL_ERROR, f"{peer.name} is a {peer.role} node, not {accept_role}"
                        )
                except HandshakeError as exc:
                    client = websocket.client
                    log.warning("refused link from %s: %s", client and client.host, exc.reason)
                    conn.close_now(exc.code, exc.reason)
                    return
                if reply is not None:
                    conn.transport.write(frame(reply.encode()))
                if handshake.state is State.OPEN and peer is not None:
                    link = LinkConnection(
                        peer, ServedLink(conn), options.queue_limit, hub.overflowed
                    )
                    hub.link_up(link)
        finally:
            if link is not None:
                hub.link_down(link)

    return endpoint
