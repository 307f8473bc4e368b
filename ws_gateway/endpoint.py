"""The Phoenix socket endpoint, `/socket/websocket`: the I/O edge of a client socket.

It negotiates the serializer (`vsn`; anything but 1.0.x or 2.0.x is refused with 403
before the upgrade), answers the `phoenix` subprotocol that the official client offers
with an auth token, accepts, and detaches the connection (see `app.websocket`): from then
on each received frame goes to the socket's `ClientSession` as it arrives.
"""

from __future__ import annotations

import logging

from starlette.websockets import WebSocket

from app.websocket import EXTENSION, ServedWebSocket
from ws_gateway.gateway import Gateway
from ws_gateway.serializers import negotiate
from ws_gateway.session import ClientSession
from ws_gateway.socket import Socket

log = logging.getLogger("dps.gateway")


async def socket_endpoint(websocket: WebSocket) -> None:
    gateway: Gateway = websocket.app.state.gateway
    serializer = negotiate(websocket.query_params.get("vsn"))
    if serializer is None:
        log.info("refused socket with unsupported vsn %r", websocket.query_params.get("vsn"))
        await websocket.close()  # before accepting: an HTTP 403, as Phoenix answers
        return
    conn: ServedWebSocket = websocket.scope["extensions"][EXTENSION]
    subprotocol = "phoenix" if "phoenix" in websocket.scope.get("subprotocols", ()) else None
    await websocket.accept(subprotocol=subprotocol)
    limit = websocket.app.state.settings.socket_queue
    sock = Socket(conn, serializer, limit, gateway.counters, gateway.outbox)
    session = ClientSession(sock, gateway)
    gateway.counters.sockets_opened += 1
    conn.detach(session.received, session.closed)
