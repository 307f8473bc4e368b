"""The Phoenix socket endpoint, `/socket/websocket`: the I/O edge of a client socket.

Before the upgrade it negotiates the serializer (`vsn`; anything but 1.0.x or 2.0.x is
refused with 403, as Phoenix does) and asks the gateway's policy whether the socket may
connect (origin, connect token, and the connect hook when DPS_HOOK_CONNECT=1): a refusal
is an HTTP 403, counted and logged at most once a second. Then it answers the `phoenix`
subprotocol that the official client offers with an auth token, accepts, and detaches the
connection (see `app.served.websocket`): from then on each received frame goes to the socket's
`ClientSession` as it arrives.
"""

from __future__ import annotations

import logging

from starlette.responses import Response
from starlette.websockets import WebSocket

from app.served.detached import DetachedWebSocket
from app.served.websocket import EXTENSION, ServedWebSocket
from app.throttled_log import ThrottledLog
from ws_gateway.access.policy import Admitted, Policy, Refused
from ws_gateway.channels import Channels
from ws_gateway.gateway import Gateway
from ws_gateway.serializers import negotiate
from ws_gateway.session import ClientSession
from ws_gateway.socket import Socket

log = logging.getLogger("dps.gateway")
refused = ThrottledLog(log, logging.INFO)
nearly_full = ThrottledLog(log, logging.WARNING, interval=60)
NEARLY_FULL = 0.9  # of DPS_MAX_SOCKETS, from where a warning is logged (once a minute)


async def socket_endpoint(websocket: WebSocket) -> None:
    gateway: Gateway = websocket.app.state.gateway
    policy: Policy = websocket.app.state.policy
    serializer = negotiate(websocket.query_params.get("vsn"))
    if serializer is None:
        log.info("refused socket with unsupported vsn %r", websocket.query_params.get("vsn"))
        await websocket.close()  # before accepting: an HTTP 403, as Phoenix answers
        return
    counters = gateway.counters
    open_sockets = counters.sockets_opened - counters.sockets_closed
    limit: int = websocket.app.state.capacity.sockets
    if open_sockets >= limit:
        counters.connections_refused += 1
        refused("refused a socket: %d open, DPS_MAX_SOCKETS is %d", open_sockets, limit)
        await websocket.send_denial_response(Response("too many sockets\n", 503))
        return
    if open_sockets >= limit * NEARLY_FULL:
        nearly_full("%d client sockets open: near DPS_MAX_SOCKETS (%d)", open_sockets, limit)
    subprotocols = websocket.scope.get("subprotocols", ())
    admission = await _admit(websocket, policy, subprotocols)
    if isinstance(admission, Refused):
        gateway.counters.sockets_refused += 1
        client = websocket.client
        refused("refused socket from %s: %s", client.host if client else "?", admission.reason)
        await websocket.close()
        return
    conn: ServedWebSocket = websocket.scope["extensions"][EXTENSION]
    await websocket.accept(subprotocol="phoenix" if "phoenix" in subprotocols else None)
    queue: int = websocket.app.state.settings.socket_queue
    user, expires = admission.user, admission.expires

    def session_for(opened: DetachedWebSocket) -> ClientSession:
        sock = Socket(
            gateway.new_socket_id(), opened, serializer, queue, gateway.counters, gateway.outbox
        )
        session = ClientSession(sock, gateway, Channels(policy, user))
        if expires is not None:
            session.expire_at(expires, policy.clock())
        gateway.counters.sockets_opened += 1
        return session

    conn.detach(session_for)


async def _admit(
    websocket: WebSocket, policy: Policy, subprotocols: list[str]
) -> Admitted | Refused:
    admission = policy.admit(websocket.headers.get("origin"), websocket.query_params, subprotocols)
    if isinstance(admission, Refused) or not policy.hook_connect:
        return admission
    assert policy.hooks is not None  # DPS_HOOK_CONNECT needs DPS_HOOK_URL to start
    client = websocket.client
    params = {k: v for k, v in websocket.query_params.items() if k != "vsn"}
    verdict = await policy.hooks.ask(
        "connect",
        {
            "user": admission.user,
            "params": params,
            "address": client.host if client else None,
            "node": websocket.app.state.gateway.name,
        },
    )
    if not verdict.allow:
        return Refused(f"connect hook: {verdict.reason or 'refused'}")
    return admission
