"""One accepted client socket's inbound side: frames in, channel actions carried out.

Frames are handled in order, like the messages of a Phoenix socket: while a join waits
for the topic's owners to acknowledge the subscription, its reply and every later frame
wait too, and the socket is not read meanwhile. A frame the serializer cannot decode
closes this socket, and only this one, with the serializer's close code and reason.
"""

from __future__ import annotations

import logging

from app.link.interface import Accepted, Outcome
from ws_gateway.channels import EMPTY, Action, Join, Leave, Publish, Push, Reply, error
from ws_gateway.gateway import Gateway
from ws_gateway.serializers import ClientFrameError
from ws_gateway.socket import Socket

log = logging.getLogger("dps.gateway")


class ClientSession:
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
        sock = self.sock
        try:
            msg = sock.serializer.decode(data, text)
        except ClientFrameError as exc:
            self.gateway.counters.frame_errors += 1
            log.info("closing %s: %s", sock.peer, exc.reason)
            sock.close(exc.code, exc.reason)
            return
        self.run_all(sock.channels.handle(msg))

    def run_all(self, actions: list[Action]) -> None:
        for action in actions:
            self.run(action)

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
            case Join():
                self._join(action)
            case Leave(topic):
                gateway.leave(sock, topic)
            case Publish(join_ref, ref, topic, event, payload, binary):

                def reply(outcome: Outcome) -> None:
                    if isinstance(outcome, Accepted):
                        status, response = "ok", EMPTY
                    else:
                        status, response = "error", error("publish failed", outcome)
                    sock.reply(join_ref, ref, topic, status, response)

                gateway.publish(topic, event, payload, binary, reply)

    def _join(self, join: Join) -> None:
        # Hold every later frame until the gateway has the subscription.
        self.backlog = []
        self.sock.transport.pause_reading()
        self.gateway.join(self.sock, join.topic, join.join_ref, lambda p: self._joined(join, p))

    def _joined(self, join: Join, problem: str | None) -> None:
        backlog, self.backlog = self.backlog or [], None
        if not self.open:
            return
        self.sock.transport.resume_reading()
        self.run_all(self.sock.channels.join_done(join, problem))
        for data, text in backlog:
            self.received(data, text)
