"""The listening end of node links: the `/_dps/link` WebSocket endpoint.

It sends the handshake's hello, authenticates the dialer (which must prove the cluster
secret before this end says who it is), welcomes it, then hands the open link to the
node's hub and feeds it every batch received. Keep-alive on this end is the detached
connection's ping and pong (`app.served.keepalive`, configured in `app.roles`): a dialer
that stops answering is dropped after the link timeout. A refused dialer (wrong secret,
wrong role, a broken handshake) is closed with a reason and logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket

from app.link.codec import LinkClose
from app.link.connection import LinkConnection, LinkOptions
from app.link.handshake import Handshake, HandshakeError, HandshakeState
from app.link.hub import LinkHub
from app.served.detached import DetachedWebSocket, frame
from app.served.websocket import EXTENSION, ServedWebSocket
from app.settings import Role

log = logging.getLogger("dps.link")


class ServedLink:
    """`app.link.connection.Writer` over a connection uvicorn serves."""

    __slots__ = ("conn",)

    def __init__(self, conn: DetachedWebSocket) -> None:
        self.conn = conn

    def write_message(self, data: bytes) -> None:
        if not self.conn.closing:
            self.conn.transport.write(frame(data, binary=True))

    def buffered(self) -> int:
        return self.conn.transport.get_write_buffer_size()

    def close(self, code: int, reason: str) -> None:
        self.conn.close_now(code, reason)


def link_endpoint(
    hub: LinkHub, options: LinkOptions, accept: frozenset[Role], linked_for: Callable[[], float]
) -> Callable[[WebSocket], Awaitable[None]]:
    """The endpoint for links dialled by nodes of the roles in `accept`."""

    async def endpoint(websocket: WebSocket) -> None:
        conn: ServedWebSocket = websocket.scope["extensions"][EXTENSION]
        client = websocket.client
        if options.tls is not None and not conn.transport.get_extra_info("peercert"):
            address = client.host if client else "?"
            hub.refused("refused link from %s: no client certificate", address)
            await websocket.close()  # before the upgrade: HTTP 403
            return
        await websocket.accept()
        address = client.host if client else "?"

        def listener_for(opened: DetachedWebSocket) -> Listener:
            listener = Listener(hub, options, accept, opened, address, linked_for())
            opened.transport.write(frame(listener.handshake.hello().encode()))
            return listener

        listener = conn.detach(listener_for)
        # Anyone who reaches the port can open a link and say nothing: bound the wait.
        asyncio.get_running_loop().call_later(options.handshake_timeout, listener.too_slow)

    return endpoint


class Listener:
    """One served link connection: the handshake, then its batches."""

    __slots__ = ("accept", "address", "conn", "handshake", "hub", "link", "options")

    def __init__(
        self,
        hub: LinkHub,
        options: LinkOptions,
        accept: frozenset[Role],
        conn: DetachedWebSocket,
        address: str,
        linked_for: float,
    ) -> None:
        self.hub = hub
        self.options = options
        self.accept = accept
        self.conn = conn
        self.address = address
        self.handshake = Handshake(hub.local, options.secret, listener=True, linked_for=linked_for)
        self.link: LinkConnection | None = None

    def received(self, data: bytes, text: bool) -> None:
        if self.link is not None and not text:
            self.link.receive(data)
            return
        try:
            if self.link is not None or not text:
                raise HandshakeError(LinkClose.PROTOCOL_ERROR, "unexpected message")
            reply = self.handshake.receive(data)
            peer = self.handshake.peer
            if peer is not None and peer.role not in self.accept:
                raise HandshakeError(
                    LinkClose.PROTOCOL_ERROR,
                    f"{peer.name} is a {peer.role} node, not {'/'.join(sorted(self.accept))}",
                )
        except HandshakeError as exc:
            self.hub.refused("refused link from %s: %s", self.address, exc.reason)
            self.conn.close_now(exc.code, exc.reason)
            return
        if reply is not None:
            self.conn.transport.write(frame(reply.encode()))
        if self.handshake.state is HandshakeState.OPEN and peer is not None:
            writer = ServedLink(self.conn)
            self.link = LinkConnection(peer, writer, self.options.queue_limit, self.hub.overflowed)
            self.hub.link_up(self.link)

    def too_slow(self) -> None:
        """The dialer had its time to prove the secret; a link not open by now is closed."""
        if self.link is None and not self.conn.closing:
            self.hub.refused("refused link from %s: no handshake in time", self.address)
            self.conn.close_now(LinkClose.PROTOCOL_ERROR, "no handshake in time", hang_up=True)

    def closed(self) -> None:
        if self.link is not None:
            self.hub.link_down(self.link)
