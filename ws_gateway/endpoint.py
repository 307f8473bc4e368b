"""The Phoenix socket endpoint, `/socket/websocket`: the I/O edge of a client socket.

It negotiates the serializer (`vsn`; anything but 1.0.x or 2.0.x is refused with 403
before the upgrade), answers the `phoenix` subprotocol that the official client offers
with an auth token, accepts, and detaches the connection (see `app.connection`): from
then on each received frame goes through the codec and the socket's channels as it
arrives, and what they return is carried out at once. A frame it cannot decode closes
this socket, and only this one, with the codec's close code and reason.

Frames are handled in order, like the messages of a Phoenix socket: while a join waits
for the topic's owners to acknowledge the subscription, the rest of its actions (the
join reply) and every later frame wait too, and the socket is not read meanwhile.
"""

from __future__ import annotations

import logging
from functools import partial

from starlette.websockets import WebSocket

from app.connection import EXTENSION, Connection
from app.link import Ack
from app.phoenix import UNSUPPORTED_DATA, FrameError, Vsn, decode_binary, decode_text
from ws_gateway.channels import EMPTY, Action, Publish, Push, Reply, Subscribe, Unsubscribe, error
from ws_gateway.gateway import Gateway
from ws_gateway.socket import Socket

log = logging.getLogger("dps.gateway")


async def socket_endpoint(websocket: WebSocket) -> None:
    gateway: Gateway = websocket.app.state.gateway
    vsn = Vsn.negotiate(websocket.query_params.get("vsn"))
    if vsn is None:
        log.info("refused socket with unsupported vsn %r", websocket.query_params.get("vsn"))
        await websocket.close()  # before accepting: an HTTP 403, as Phoenix answers
        return
    conn: Connection = websocket.scope["extensions"][EXTENSION]
    subprotocol = "phoenix" if "phoenix" in websocket.scope.get("subprotocols", ()) else None
    await websocket.accept(subprotocol=subprotocol)
    limit = websocket.app.state.settings.socket_queue
    session = Session(Socket(conn, vsn, limit, gateway.counters, gateway.outbox), gateway)
    gateway.counters.sockets_opened += 1
    conn.detach(session.received, session.closed)


class Session:
    """One accepted socket: frames in, channel actions out."""

    __slots__ = ("backlog", "gateway", "open", "sock")

    def __init__(self, sock: Socket, gateway: Gateway) -> None:
        self.sock = sock
        self.gateway = gateway
        self.open = True
        self.backlog: list[tuple[bytes, bool]] | None = None  # frames held during a join

    def received(self, data: bytes, text: bool) -> None:
        if self.backlog is not None:
            self.backlog.append((data, text))
            return
        sock, gateway = self.sock, self.gateway
        try:
            if text:
                msg = decode_text(data, sock.vsn)
            elif sock.vsn is Vsn.V2:
                msg = decode_binary(data)
            else:
                raise FrameError(UNSUPPORTED_DATA, "binary frames need vsn=2.0.0")
        except FrameError as exc:
            gateway.counters.frame_errors += 1
            log.info("closing %s: %s", sock.peer, exc.reason)
            sock.close(exc.code, exc.reason)
            return
        self.run_all(sock.channels.handle(msg))

    def run_all(self, actions: list[Action]) -> None:
        for i, action in enumerate(actions):
            if isinstance(action, Subscribe):
                self.backlog = []
                self.sock.transport.pause_reading()
                rest = actions[i + 1 :]
                done = partial(self._joined, rest)
                self.gateway.join(self.sock, action.topic, action.join_ref, done)
                return
            self.run(action)

    def _joined(self, rest: list[Action]) -> None:
        backlog, self.backlog = self.backlog or [], None
        if not self.open:
            return
        self.sock.transport.resume_reading()
        self.run_all(rest)
        for data, text in backlog:
            self.received(data, text)

    def closed(self) -> None:
        self.open = False
        for topic in self.sock.channels.leave_all():
            self.gateway.leave(self.sock, topic)
        self.gateway.counters.sockets_closed += 1

    def run(self, action: Action) -> None:
        sock, gateway = self.sock, self.gateway
        match action:
            case Reply(join_ref, ref, topic, status, response):
                sock.reply(join_ref, ref, topic, status, response)
            case Push(join_ref, ref, topic, event, payload):
                sock.push(join_ref, ref, topic, event, payload)
            case Unsubscribe(topic):
                gateway.leave(sock, topic)
            case Publish(join_ref, ref, topic, event, payload, binary):

                def reply(result: Ack | str) -> None:
                    if isinstance(result, Ack):
                        status, response = "ok", EMPTY
                    else:
                        status, response = "error", error("publish failed", result)
                    sock.reply(join_ref, ref, topic, status, response)

                gateway.publish(topic, event, payload, binary, reply)
