"""The gateway's subscriber table and fan-out.

For every topic with local subscribers: the sockets grouped by lane (sockets of one lane
receive the same bytes for a broadcast: the same serializer, and for V2 the same join_ref),
and the topic servers this gateway is subscribed at (its owner; two while the topic moves
from one owner to another, see `router`) with the last sequence number each delivered.
The first local join of a topic subscribes the gateway, the last leave unsubscribes it:
a topic server sees one subscription per gateway, never one per socket.

A join is done (its reply may go out) once every owner has acknowledged the subscription,
so that a message published anywhere after a client's join reply reaches that client. If
an owner refuses it or never answers, every join waiting for it fails and its socket is
no longer a subscriber: the client gets an error reply, never a join that receives nothing.

A deliver is fanned out here, the frame built once per lane and written to each socket
without awaiting. Deliveries from a server the topic is not subscribed at, or not newer
than the last one from that server, are dropped and counted, so every socket sees a
topic's messages in their owner's order, without duplicates. Presence diffs count only
from the topic's owner (`Router.owner_of`): while a topic moves, both owners have every
entry, and only one of them speaks; and they skip the sockets still waiting for their
`presence_state`, which will hold them (`ws_gateway.presence`).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Collection
from typing import Protocol

from app.clock import Clock, RunningLoop
from app.counters import Counters
from app.link.interface import OnOutcome, Outcome, OwnerLink
from app.throttled_log import ThrottledLog
from ws_gateway.presence import LocalPresence
from ws_gateway.serializers import Broadcast, Lane
from ws_gateway.socket import Outbox, Socket

log = logging.getLogger("dps.gateway")

NO_OWNER = "no topic server available"
# Seconds a socket's presence is remembered after it left (see `presence`): longer than a
# hung topic server takes to be declared down with the default DPS_LINK_TIMEOUT.
PRESENCE_LINGER = 3.0

# Called once a join is done: with None, or with the reason it failed.
JoinDone = Callable[[str | None], None]


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

    __slots__ = ("failure", "lanes", "owners", "sockets", "unacked", "waiting")

    def __init__(self) -> None:
        self.sockets: dict[Socket, Lane] = {}
        self.lanes: dict[Lane, dict[Socket, None]] = {}
        self.owners: dict[OwnerLink, int] = {}  # subscribed at -> last sequence delivered
        self.unacked = 0  # subscriptions of the first join not yet acknowledged
        self.failure: str | None = None  # why one of them failed
        self.waiting: list[tuple[Socket, JoinDone]] = []  # joins done when unacked is 0

    def add(self, sock: Socket, lane: Lane) -> None:
        self.discard(sock)
        self.sockets[sock] = lane
        members = self.lanes.get(lane)
        if members is None:
            self.lanes[lane] = {sock: None}
        else:
            members[sock] = None

    def discard(self, sock: Socket) -> None:
        lane = self.sockets.pop(sock, None)
        if lane is not None:
            members = self.lanes[lane]
            del members[sock]
            if not members:
                del self.lanes[lane]

    def __bool__(self) -> bool:
        return bool(self.sockets)


class Gateway:
    __slots__ = (
        "_ids",
        "counters",
        "name",
        "outbox",
        "presence",
        "router",
        "skipped",
        "stale",
        "topics",
    )

    def __init__(
        self,
        name: str,
        router: Router,
        counters: Counters,
        clock: Clock | None = None,
        presence_linger: float = PRESENCE_LINGER,
    ) -> None:
        self._ids = itertools.count(1)
        self.name = name
        self.router = router
        self.counters = counters
        self.topics: dict[str, Subscribers] = {}
        clock = clock or RunningLoop()
        self.presence = LocalPresence(router, clock, time.time, presence_linger)
        self.outbox = Outbox()
        self.stale = ThrottledLog(log, logging.WARNING)
        self.skipped = ThrottledLog(log, logging.INFO)

    def new_socket_id(self) -> int:
        return next(self._ids)

    def join(self, sock: Socket, topic: str, join_ref: str | None, done: JoinDone) -> None:
        """Add `sock` to `topic`'s subscribers; `done` once the owners have the topic."""
        subs = self.topics.get(topic)
        first = subs is None
        if subs is None:
            subs = self.topics[topic] = Subscribers()
        subs.add(sock, sock.serializer.lane(join_ref))
        if not first:
            if subs.unacked:
                subs.waiting.append((sock, done))
            else:
                done(None)
            return
        links = self.router.listeners(topic)
        if not links:
            done(None)  # no owner yet: the topic is subscribed when one appears (reroute)
            return
        subs.unacked = len(links)
        subs.waiting.append((sock, done))
        for link in links:
            subs.owners[link] = 0
            link.subscribe(topic, lambda outcome: self._subscribed(topic, subs, outcome))

    def _subscribed(self, topic: str, subs: Subscribers, outcome: Outcome) -> None:
        if isinstance(outcome, str):
            subs.failure = outcome
        subs.unacked -= 1
        if subs.unacked:
            return
        waiting, subs.waiting = subs.waiting, []
        failure, subs.failure = subs.failure, None
        if failure is not None:
            log.warning("joins of %r failed: %s", topic, failure)
            for sock, _ in waiting:
                self.leave(sock, topic)
        for _, done in waiting:
            done(failure)

    def leave(self, sock: Socket, topic: str) -> None:
        self.presence.untrack(sock, topic)
        subs = self.topics.get(topic)
        if subs is None:
            return
        subs.discard(sock)
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
            added = wanted - subs.owners.keys()
            for link in added:
                subs.owners[link] = 0
                link.subscribe(topic, _ignore)
            if added:
                self.presence.rerouted(topic, added)
        self.presence.reroute_left(self.topics)

    def gauges(self) -> dict[str, tuple[float, str]]:
        c = self.counters
        return {
            "sockets": (c.sockets_opened - c.sockets_closed, "client sockets open"),
            "topics": (len(self.topics), "topics with local subscribers"),
        }

    def publish(
        self,
        topic: str,
        event: str,
        payload: bytes,
        binary: bool,
        on_outcome: OnOutcome,
        exclude: int = 0,
    ) -> None:
        """Hand a message to the topic's owner; `on_outcome` gets the outcome, exactly once.
        Socket `exclude` of this gateway (if not 0) does not receive it."""
        self.counters.publishes_received += 1
        owner = self.router.owner_of(topic)
        if owner is None:
            self.counters.publish_errors += 1
            on_outcome(NO_OWNER)
            return
        owner.publish(topic, event, payload, binary, on_outcome, exclude)

    def deliver(
        self,
        source: OwnerLink,
        topic: str,
        seq: int,
        event: str,
        payload: bytes,
        binary: bool,
        exclude: int = 0,
        presence: bool = False,
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
        skip: Collection[Socket] = ()
        if presence:
            if source is not self.router.owner_of(topic):
                counters.presence_diffs_dropped += 1
                return
            skip = self.presence.waiting(topic)  # their presence_state will hold this diff
        broadcast = Broadcast(topic, event, payload, binary)
        for (serializer, join_ref), sockets in subs.lanes.items():
            data = serializer.fastlane(broadcast, join_ref)
            if data is None:
                counters.v1_binary_skipped += len(sockets)
                self.skipped("binary message on %r not sent to %d V1 sockets", topic, len(sockets))
                continue
            if exclude or skip:
                sent = 0
                for sock in sockets:
                    if sock.id != exclude and sock not in skip:
                        sock.send(data)
                        sent += 1
                counters.socket_deliveries += sent
                continue
            for sock in sockets:
                sock.send(data)
            counters.socket_deliveries += len(sockets)


def _ignore(outcome: Outcome) -> None:
    """A re-subscription after a ring change: nobody waits for it."""
