"""A gateway in a cluster (DPS_APP=ws): links to the topic servers, the ring, discovery.

The gateway dials every topic server it learns of (from Redis, or from ring.toml's
addresses without Redis) and keeps it linked. Ring membership is the pg group
`topic_servers` as seen over those links; its join and leave events move topics
(`router`), and every move re-subscribes the affected topics (`Gateway.reroute`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from enum import Enum
from typing import Any, NamedTuple

from app.clock import Clock
from app.counters import Counters
from app.discovery import NodeRecord, Registry
from app.link.codec import LinkDeliver, LinkDeliverKept
from app.link.connection import LinkConnection, LinkOptions
from app.link.dialer import Dialers
from app.link.handshake import Identity
from app.link.hub import GATEWAYS, SCOPE, TOPIC_SERVERS, LinkHub
from app.metrics import Metrics
from app.pg import EventKind, Member, SubscriptionEnded, new_incarnation
from app.ring import RingConfig
from app.settings import Role, Settings
from ws_gateway.access.policy import Policy
from ws_gateway.gateway import Gateway
from ws_gateway.remote_owner import RemoteOwner
from ws_gateway.router import ClusterRouter

log = logging.getLogger("dps.gateway")

EXPIRY_TICK = 0.05  # seconds between sweeps for publishes that waited too long
SETTLE_TICK = 0.01  # seconds between two looks at readiness while starting


class Move(Enum):
    UP = "up"
    DOWN = "down"


class Linked(NamedTuple):
    """The link to a topic server this gateway holds now (its newest)."""

    incarnation: str
    closed: bool


def ring_move(kind: EventKind, member: Member, linked: Linked | None) -> Move | None:
    """What a pg event of `topic_servers` about `member` does to the ring, if anything.

    Only the incarnation linked now counts: an event about an older one (a restarted
    server whose old membership is still being withdrawn) or about a server that is not
    linked any more is ignored. A leave takes the server off the ring; a join puts it on
    only while its link is open.
    """
    if linked is None or linked.incarnation != member.incarnation:
        return None
    if kind == "leave":
        return Move.DOWN
    return None if linked.closed else Move.UP


class GatewayNode(LinkHub):
    role = Role.GATEWAY

    def __init__(self, settings: Settings, ring: RingConfig, clock: Clock) -> None:
        super().__init__(Identity(settings.node_name, self.role, new_incarnation()))
        self.settings = settings
        self.ring = ring
        self.clock = clock
        self.counters = Counters()
        self.metrics = Metrics(self.counters, self.gauges)
        self.options = LinkOptions.of(settings)
        self.router = ClusterRouter(ring, settings.handover, self._rerouted, clock)
        # A socket that left is remembered until a hung topic server is surely declared down.
        linger = 2 * settings.link_timeout
        self.gateway = Gateway(self.local.name, self.router, self.counters, clock, linger)
        self.policy = Policy.of(settings, self.counters, time.time)
        self.owners: dict[str, RemoteOwner] = {}  # the newest link to each topic server
        self.by_link: dict[LinkConnection, RemoteOwner] = {}
        self.dialers = Dialers(self, self.options, clock, ring, wanted=lambda name: True)
        self.registry: Registry | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.pg.start_scope(SCOPE)
        self.pg.join(SCOPE, GATEWAYS, self.pg.spawn_member().member)
        subscription, _ = self.pg.monitor(SCOPE, TOPIC_SERVERS)  # no links yet: empty
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._membership(subscription)))
        self._tasks.append(loop.create_task(self._expire()))
        if self.settings.redis_url:
            me = NodeRecord(
                self.local.name, self.role, self.local.incarnation, self.settings.advertise_address
            )
            self.registry = Registry(
                self.settings.redis_url, me, self.settings.lease_ttl, self.dialers.discovered
            )
            self.registry.start()
        else:
            self.dialers.from_ring()

    async def settle(self, within: float) -> None:
        """Return once ready (`unready`), or after `within` seconds: a gateway that served
        before its first links were up would refuse its first joins ("no topic server
        available"), those of clients reconnecting to it after a restart among them."""
        deadline = self.clock.time() + within
        while self.unready():
            if self.clock.time() >= deadline:
                log.warning("serving before ready: %s", "; ".join(self.unready()))
                return
            await asyncio.sleep(SETTLE_TICK)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.dialers.stop()
        self.router.close()
        self.pg.stop_scope(SCOPE)
        if self.registry is not None:
            await self.registry.close()
        if self.policy.hooks is not None:
            await self.policy.hooks.close()

    # LinkHub
    def up(self, link: LinkConnection) -> None:
        owner = RemoteOwner(
            link,
            link.peer_linked_for,
            self.counters,
            self._deliver,
            self.pg_frame,
            self.metrics.ack_latency.observe,
            time.monotonic,  # not the loop's time: uvloop's counts whole milliseconds
        )
        self.owners[link.peer.name] = self.by_link[link] = owner

    def down(self, link: LinkConnection) -> None:
        owner = self.by_link.pop(link)
        owner.fail_all()
        if self.owners.get(link.peer.name) is owner:
            # Not when a newer incarnation of the server is linked already.
            del self.owners[link.peer.name]
            self.router.server_down(link.peer.name)

    def overflowed(self) -> None:
        self.counters.link_overflows += 1

    # Ring membership, from pg
    async def _membership(self, subscription: Any) -> None:
        try:
            while True:
                event = await subscription.get()
                for member in event.members:
                    owner = self.owners.get(member.node)
                    linked = (
                        None
                        if owner is None
                        else Linked(owner.link.peer.incarnation, owner.link.closed)
                    )
                    move = ring_move(event.kind, member, linked)
                    if move is Move.DOWN:
                        self.router.server_down(member.node)
                    elif move is Move.UP:
                        owner = self.owners[member.node]  # linked, or it would not move up
                        self.router.server_up(member.node, owner, owner.linked_for)
        except SubscriptionEnded:
            log.error("lost the pg subscription to topic_servers; ring updates stop")

    def _rerouted(self) -> None:
        self.gateway.reroute()

    def _deliver(self, source: RemoteOwner, frame: LinkDeliver | LinkDeliverKept) -> None:
        self.metrics.delivery_latency.observe(max(0.0, time.time() - frame.sent_at))
        f = frame
        if isinstance(f, LinkDeliverKept):
            position, presence = (f.epoch, f.offset), False
        else:
            position, presence = None, f.presence
        self.gateway.deliver(
            source, f.topic, f.seq, f.event, f.payload, f.binary, f.exclude, position, presence
        )

    async def _expire(self) -> None:
        timeout = self.settings.publish_timeout
        while True:
            await asyncio.sleep(EXPIRY_TICK)
            for owner in list(self.owners.values()):
                owner.expire(timeout)

    # Operations
    def unready(self) -> list[str]:
        """Ready once linked to every live topic server, each of them owning its topics."""
        router = self.router
        reasons = []
        if unlinked := self.dialers.alive - set(router.links):
            reasons.append(f"not linked yet to live topic servers: {', '.join(sorted(unlinked))}")
        if router.pending:
            pending = ", ".join(sorted(router.pending))
            reasons.append(f"ring not settled: waiting for the handover of {pending}")
        if not router.settled and not reasons:
            reasons.append("no topic server on the ring: none is live and linked")
        return reasons

    def gauges(self) -> dict[str, tuple[float, str]]:
        return self.gateway.gauges()

    def describe(self) -> dict[str, Any]:
        router = self.router
        return {
            **self.view(SCOPE),
            "not_tracked": {
                GATEWAYS: "gateways do not link to each other: this one lists only itself "
                "(a topic server's /cluster lists every gateway)"
            },
            "ring": {
                "declared": sorted(self.ring.servers),
                "linked": sorted(router.links),
                "settled": sorted(router.settled),
            },
        }
