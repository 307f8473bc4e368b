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

On a topic with history, messages also have positions. The gateway remembers the last one
it delivered: a delivery at or before it is dropped (a message heard from two owners during
a move), and when the topic moves to another owner the gateway subscribes there *since*
that position, so that what the old owner copied but did not get to deliver still reaches
every subscriber, once. A join that recovers (`recover`) is answered with what the client
missed before its socket is added to the subscribers: the owner answers on the same link
after the deliveries up to its answer, so nothing is missed between the two, or sent twice.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Collection
from functools import partial
from typing import Protocol

from app.clock import Clock, RunningLoop
from app.counters import Counters
from app.link.interface import (
    Kept,
    OnOutcome,
    OnRecovery,
    Outcome,
    OwnerLink,
    Position,
    Recovery,
)
from app.throttled_log import ThrottledLog
from ws_gateway.presence import LocalPresence
from ws_gateway.serializers import Broadcast, Lane
from ws_gateway.socket import Outbox, Socket

log = logging.getLogger("dps.gateway")

NO_OWNER = "no topic server available"
# Seconds a socket's presence is remembered after it left (see `presence`): longer than a
# hung topic server takes to be declared down with the default DPS_LINK_TIMEOUT.
PRESENCE_LINGER = 3.0

# Called once a join is done: with None (or the Recovery, for a join that recovers), or
# with the reason it failed.
JoinDone = Callable[[str | Recovery | None], None]


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

    __slots__ = (
        "failure",
        "lanes",
        "owners",
        "position",
        "recovering",
        "sockets",
        "unacked",
        "waiting",
    )

    def __init__(self) -> None:
        self.sockets: dict[Socket, Lane] = {}
        self.lanes: dict[Lane, dict[Socket, None]] = {}
        self.recovering: set[Socket] = set()  # joins that wait for what they missed
        self.position: Position | None = None  # of the last message delivered (history)
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
        return bool(self.sockets) or bool(self.recovering)


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

    def join(
        self,
        sock: Socket,
        topic: str,
        join_ref: str | None,
        done: JoinDone,
        positions: bool = False,
        recover: tuple[Position, int] | None = None,
    ) -> None:
        """Add `sock` to `topic`'s subscribers; `done` once the owners have the topic.
        `positions`: its frames carry their positions; `recover`: (the position the client
        saw, at most how many messages): what it missed first."""
        lane = sock.serializer.lane(join_ref, positions or recover is not None)
        if recover is not None:  # once subscribed, ask what the client missed
            done = partial(self._recover, sock, topic, lane, *recover, done)
        subs = self.topics.get(topic)
        first = subs is None
        if subs is None:
            subs = self.topics[topic] = Subscribers()
        if recover is None:
            subs.add(sock, lane)
        else:
            subs.recovering.add(sock)
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

    def _recover(
        self,
        sock: Socket,
        topic: str,
        lane: Lane,
        since: Position,
        limit: int,
        done: JoinDone,
        problem: str | Recovery | None,
    ) -> None:
        owner = self.router.owner_of(topic)
        if owner is None or problem is not None:
            # Without an owner, nobody knows what the client missed: the join fails, and the
            # client joins again (phoenix.js does, after a pause) once the gateway has linked.
            self._recovered(sock, topic, lane, NO_OWNER if problem is None else problem, done)
            return
        owner.recover(topic, since, limit, lambda r: self._recovered(sock, topic, lane, r, done))

    def _recovered(
        self, sock: Socket, topic: str, lane: Lane, outcome: str | Recovery, done: JoinDone
    ) -> None:
        subs = self.topics.get(topic)
        if subs is not None and sock in subs.recovering:
            subs.recovering.discard(sock)
            if isinstance(outcome, Recovery):
                subs.add(sock, lane)
            elif not subs:
                self.leave(sock, topic)
        done(outcome)

    def leave(self, sock: Socket, topic: str) -> None:
        self.presence.untrack(sock, topic)
        subs = self.topics.get(topic)
        if subs is None:
            return
        subs.discard(sock)
        subs.recovering.discard(sock)
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
                link.subscribe(topic, _ignore, subs.position)
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
        kept: Kept | None = None,
    ) -> None:
        """Hand a message to the topic's owner; `on_outcome` gets the outcome, exactly once.
        Socket `exclude` of this gateway (if not 0) does not receive it; `kept` is the
        topic's history rule, if it has one."""
        self.counters.publishes_received += 1
        owner = self.router.owner_of(topic)
        if owner is None:
            self.counters.publish_errors += 1
            on_outcome(NO_OWNER)
            return
        owner.publish(topic, event, payload, binary, on_outcome, exclude, kept)

    def recover(self, topic: str, since: Position, limit: int, done: OnRecovery) -> None:
        """What came after `since` on `topic` (for `/api/history`), from its owner."""
        owner = self.router.owner_of(topic)
        if owner is None:
            done(NO_OWNER)
            return
        owner.recover(topic, since, limit, done)

    def deliver(
        self,
        source: OwnerLink,
        topic: str,
        seq: int,
        event: str,
        payload: bytes,
        binary: bool,
        exclude: int = 0,
        position: Position | None = None,
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
        ref = None
        if position is not None:
            seen = subs.position
            if seen is not None and seen[0] == position[0] and position[1] <= seen[1]:
                counters.stale_deliveries_dropped += 1  # delivered already, by another owner
                return
            subs.position = position
            ref = f"{position[0]}:{position[1]}"
        skip: Collection[Socket] = ()
        if presence:
            if source is not self.router.owner_of(topic):
                counters.presence_diffs_dropped += 1
                return
            skip = self.presence.waiting(topic)  # their presence_state will hold this diff
        broadcast = Broadcast(topic, event, payload, binary, ref)
        for (serializer, join_ref, positions), sockets in subs.lanes.items():
            data = serializer.fastlane(broadcast, join_ref, positions)
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
