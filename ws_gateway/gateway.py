"""The gateway's subscriber table and fan-out.

For every topic with local subscribers: the V2 sockets with their join_ref, the V1 sockets,
and the topic servers this gateway is subscribed at (its owner; two while the topic moves
from one owner to another, see `router`) with the last sequence number each delivered.
The first local join of a topic subscribes the gateway, the last leave unsubscribes it:
a topic server sees one subscription per gateway, never one per socket. A join is done
(its reply may go out) once every owner has acknowledged the subscription, so that a
message published anywhere after a client's join reply reaches that client.

A deliver is fanned out here, the frame built once per serializer and join_ref and written
to each socket without awaiting. Deliveries from a server the topic is not subscribed at,
or not newer than the last one from that server, are dropped and counted, so every socket
sees a topic's messages in their owner's order, without duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from app.connection import frame
from app.counters import Counters
from app.link import Ack, AckCallback, OwnerLink
from app.phoenix import BroadcastFrames, Vsn
from app.throttled_log import ThrottledLog
from ws_gateway.socket import Outbox, Socket

log = logging.getLogger("dps.gateway")

NO_OWNER = "no topic server available"


class Router(Protocol):
    """Which topic servers own a topic, as this gateway sees the cluster now."""

    def owner_of(self, topic: str) -> OwnerLink | None:
        """Where publishes go."""
        ...

    def listeners(self, topic: str) -> set[OwnerLink]:
        """Where this gateway must be subscribed (the owner, and any owner-to-be)."""
        ...


class Subscribers:
    """The local subscribers of one topic."""

    __slots__ = ("owners", "unacked", "v1", "v2", "waiting")

    def __init__(self) -> None:
        self.v2: dict[Socket, str | None] = {}
        self.v1: set[Socket] = set()
        self.owners: dict[OwnerLink, int] = {}  # subscribed at -> last sequence delivered
        self.unacked = 0  # subscriptions of the first join not yet acknowledged
        self.waiting: list[Callable[[], None]] = []  # joins done when unacked reaches 0

    def acked(self, result: Ack | str) -> None:
        self.unacked -= 1
        if self.unacked == 0:
            waiting, self.waiting = self.waiting, []
            for done in waiting:
                done()

    def __bool__(self) -> bool:
        return bool(self.v2) or bool(self.v1)


class Gateway:
    __slots__ = ("counters", "name", "outbox", "router", "skipped", "stale", "topics")

    def __init__(self, name: str, router: Router, counters: Counters) -> None:
        self.name = name
        self.router = router
        self.counters = counters
        self.topics: dict[str, Subscribers] = {}
        self.outbox = Outbox()
        self.stale = ThrottledLog(log, logging.WARNING)
        self.skipped = ThrottledLog(log, logging.INFO)

    def join(
        self, sock: Socket, topic: str, join_ref: str | None, done: Callable[[], None]
    ) -> None:
        """Add `sock` to `topic`'s subscribers; `done()` once the owners have the topic."""
        subs = self.topics.get(topic)
        first = subs is None
        if subs is None:
            subs = self.topics[topic] = Subscribers()
        if sock.vsn is Vsn.V2:
            subs.v2[sock] = join_ref
        else:
            subs.v1.add(sock)
        if not first:
            if subs.unacked:
                subs.waiting.append(done)
            else:
                done()
            return
        links = self.router.listeners(topic)
        if not links:
            done()  # no owner yet: the topic is subscribed when one appears (reroute)
            return
        subs.unacked = len(links)
        subs.waiting.append(done)
        for link in links:
            subs.owners[link] = 0
            link.subscribe(topic, subs.acked)

    def leave(self, sock: Socket, topic: str) -> None:
        subs = self.topics.get(topic)
        if subs is None:
            return
        subs.v2.pop(sock, None)
        subs.v1.discard(sock)
        if not subs:
            del self.topics[topic]
            for link in subs.owners:
                link.unsubscribe(topic)

    def reroute(self) -> None:
        """The ring changed: subscribe and unsubscribe every topic where it now belongs."""
        listeners = self.router.listeners
        for topic, subs in self.topics.items():
            wanted = listeners(topic)
            for link in subs.owners.keys() - wanted:
                del subs.owners[link]
                link.unsubscribe(topic)
            for link in wanted - subs.owners.keys():
                subs.owners[link] = 0
                link.subscribe(topic, _ignore)

    def gauges(self) -> dict[str, tuple[float, str]]:
        c = self.counters
        return {
            "sockets": (c.sockets_opened - c.sockets_closed, "client sockets open"),
            "topics": (len(self.topics), "topics with local subscribers"),
        }

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
        last = subs.owners.get(source)
        if last is None or seq <= last:
            counters.stale_deliveries_dropped += 1
            self.stale(
                "dropped message %d on %r from %s: not subscribed there, or not newer than %s",
                seq,
                topic,
                source.owner,
                last,
            )
            return
        subs.owners[source] = seq
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
                self.skipped("binary message on %r not sent to %d V1 sockets", topic, len(subs.v1))
                return
            data = frame(v1)
            for sock in subs.v1:
                sock.send(data)
            counters.socket_deliveries += len(subs.v1)


def _ignore(result: Ack | str) -> None:
    """A re-subscription after a ring change: nobody waits for it."""
