"""The gateway's subscriber table and fan-out.

For every topic with local subscribers: the V2 sockets with their join_ref, the V1 sockets,
the topic server this gateway is subscribed at (its owner) and the last sequence number
delivered. The first local join of a topic subscribes the gateway at the owner, the last
leave unsubscribes it: the owner sees one subscription per gateway, never per socket.

A deliver from the owner is fanned out here, the frame built once per serializer and
join_ref and written to each socket without awaiting. Deliveries from anything but the
topic's current owner, or not newer than the last one, are dropped and counted, so every
socket sees a topic's messages in its owner's order without duplicates.
"""

from __future__ import annotations

import logging
from typing import Protocol

from app.counters import Counters
from app.link import AckCallback, OwnerLink
from app.phoenix import BroadcastFrames, Vsn
from ws_gateway.connection import frame
from ws_gateway.socket import Socket

log = logging.getLogger("dps.gateway")

NO_OWNER = "no topic server available"


class Router(Protocol):
    """Which topic server owns a topic, as this gateway sees the cluster now."""

    def owner_of(self, topic: str) -> OwnerLink | None: ...


class Subscribers:
    """The local subscribers of one topic."""

    __slots__ = ("last_seq", "owner", "v1", "v2")

    def __init__(self, owner: OwnerLink | None) -> None:
        self.v2: dict[Socket, str | None] = {}
        self.v1: set[Socket] = set()
        self.owner = owner
        self.last_seq = 0

    def __bool__(self) -> bool:
        return bool(self.v2) or bool(self.v1)


class Gateway:
    __slots__ = ("counters", "name", "router", "sockets", "topics")

    def __init__(self, name: str, router: Router, counters: Counters) -> None:
        self.name = name
        self.router = router
        self.counters = counters
        self.topics: dict[str, Subscribers] = {}
        self.sockets = 0

    def join(self, sock: Socket, topic: str, join_ref: str | None) -> None:
        subs = self.topics.get(topic)
        if subs is None:
            owner = self.router.owner_of(topic)
            subs = self.topics[topic] = Subscribers(owner)
            if owner is not None:
                owner.subscribe(topic)
        if sock.vsn is Vsn.V2:
            subs.v2[sock] = join_ref
        else:
            subs.v1.add(sock)

    def leave(self, sock: Socket, topic: str) -> None:
        subs = self.topics.get(topic)
        if subs is None:
            return
        subs.v2.pop(sock, None)
        subs.v1.discard(sock)
        if not subs:
            del self.topics[topic]
            if subs.owner is not None:
                subs.owner.unsubscribe(topic)

    def publish(
        self, topic: str, event: str, payload: bytes, binary: bool, on_ack: AckCallback
    ) -> None:
        """Hand a message to the topic's owner; `on_ack` gets the outcome, exactly once."""
        self.counters.publishes_received += 1
        owner = self.router.owner_of(topic)
        if owner is None:
            self.counters.publish_errors += 1
            on_ack(NO_OWNER)
            return
        owner.publish(topic, event, payload, binary, on_ack)

    def deliver(
        self, source: OwnerLink, topic: str, seq: int, event: str, payload: bytes, binary: bool
    ) -> None:
        """Fan one message from `source` out to this gateway's subscribers of `topic`."""
        counters = self.counters
        counters.gateway_deliveries_received += 1
        subs = self.topics.get(topic)
        if subs is None:
            return  # the last subscriber left while the message was on its way
        if source is not subs.owner or seq <= subs.last_seq:
            counters.stale_deliveries_dropped += 1
            log.warning(
                "dropped message %d on %r from %s: not the topic's current owner or not newer",
                seq,
                topic,
                source.owner,
            )
            return
        subs.last_seq = seq
        frames = BroadcastFrames(topic, event, payload, binary)
        if subs.v2:
            built: dict[str | None, bytes] = {}
            for sock, join_ref in subs.v2.items():
                data = built.get(join_ref)
                if data is None:
                    data = built[join_ref] = frame(frames.v2(join_ref), binary)
                sock.send(data)
            counters.socket_deliveries += len(subs.v2)
        if subs.v1:
            v1 = frames.v1()
            if v1 is None:
                counters.v1_binary_skipped += len(subs.v1)
                log.info("binary message on %r not sent to %d V1 sockets", topic, len(subs.v1))
                return
            data = frame(v1)
            for sock in subs.v1:
                sock.send(data)
            counters.socket_deliveries += len(subs.v1)
