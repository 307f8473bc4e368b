"""A topic server in a cluster (DPS_APP=ts): gateways link to it; it registers in Redis.

It listens for node links at `/_dps/link` (dialled by gateways, and by the topic servers
whose names sort before its own), joins the pg group `topic_servers` so that gateways put
it on their ring, and serves each linked gateway's subscriptions and publishes through one
`TopicServer`. It links to every other topic server (dialling those whose names sort after
its own: one link per pair), for the copies of topics with history (`replication`): the
successor of a topic is its owner on the ring of the topic servers linked here.

It tells each dialling gateway how long it has been linked to gateways without a break
(`linked_for`), so that all gateways hand it its topics at the same moment when it joins
the ring (see `ws_gateway.router`). The clock restarts when the last gateway link goes,
and when this process was paused for longer than a link timeout (SIGSTOP, a frozen VM):
the gateways have declared it down meanwhile and will all link again.
"""

from __future__ import annotations

import logging
from typing import Any

from app.clock import Clock, Timer
from app.counters import Counters
from app.discovery import NodeRecord, Registry
from app.link.connection import LinkConnection, LinkOptions
from app.link.dialer import Dialers
from app.link.handshake import Identity
from app.link.hub import SCOPE, TOPIC_SERVERS, LinkHub
from app.metrics import Metrics
from app.pg import new_incarnation
from app.ring import Ring, RingConfig, RingError
from app.settings import Role, Settings
from topic_server.history import History
from topic_server.remote_gateway import RemoteGateway
from topic_server.remote_peer import RemotePeer
from topic_server.replication import Replication
from topic_server.server import TopicServer

log = logging.getLogger("dps.topic_server")

PAUSE_TICK = 0.1  # seconds between checks that the process has not been paused
TRIM_TICK = 1.0  # seconds between sweeps of the history for messages past their ttl


class TopicServerNode(LinkHub):
    role = Role.TOPIC_SERVER
    accepts = frozenset({Role.GATEWAY, Role.TOPIC_SERVER})  # who may link to it

    def __init__(self, settings: Settings, ring: RingConfig, clock: Clock) -> None:
        if settings.node_name not in ring.servers:
            raise RingError(
                f"DPS_NODE: topic server {settings.node_name!r} is not declared in {ring.path} "
                f"(declared: {', '.join(sorted(ring.servers))})"
            )
        super().__init__(Identity(settings.node_name, self.role, new_incarnation()))
        self.settings = settings
        self.ring = ring
        self.clock = clock
        self.linked_since: float | None = None
        self._watchdog: Timer | None = None
        self.counters = Counters()
        self.metrics = Metrics(self.counters, self.gauges)
        self.options = LinkOptions.of(settings)
        self.peers: dict[str, RemotePeer] = {}  # the other topic servers, by name
        self.history = History(settings.history_max_bytes, self.counters)
        self.replication = Replication(self.history, self.successor, self.peers.get, self.first)
        self.server = TopicServer(
            self.local.name,
            self.counters,
            self.history,
            self.replication,
            clock,
            settings.presence_interval,
        )
        self.gateways: dict[LinkConnection, RemoteGateway] = {}
        self._without_me = Ring(ring, ())  # the ring of the peers: where copies go
        self._with_me = Ring(ring, (self.local.name,))  # where gateways send topics
        self._successors: dict[str, RemotePeer | None] = {}
        self._trimmer: Timer | None = None
        mine = self.local.name
        self.dialers = Dialers(self, self.options, clock, ring, wanted=lambda name: name > mine)
        self.registry: Registry | None = None

    async def start(self) -> None:
        self._watchdog = self.clock.call_later(PAUSE_TICK, self._watch, self.clock.time())
        self._trimmer = self.clock.call_later(TRIM_TICK, self._trim)
        self.pg.start_scope(SCOPE)
        self.pg.join(SCOPE, TOPIC_SERVERS, self.pg.spawn_member().member)
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

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._trimmer is not None:
            self._trimmer.cancel()
        self.dialers.stop()
        self.pg.stop_scope(SCOPE)
        if self.registry is not None:
            await self.registry.close()

    def linked_for(self) -> float:
        """Seconds linked to gateways without a break (0 when not linked)."""
        if self.linked_since is None:
            return 0.0
        return self.clock.time() - self.linked_since

    def _watch(self, last: float) -> None:
        """Every PAUSE_TICK: a tick that comes a link timeout late means this process was
        paused, and every gateway has declared it down meanwhile."""
        now = self.clock.time()
        if now - last > PAUSE_TICK + self.settings.link_timeout:
            log.warning("this process was paused for %.1f s", now - last - PAUSE_TICK)
            self.linked_since = None
        self._watchdog = self.clock.call_later(PAUSE_TICK, self._watch, now)

    def _trim(self) -> None:
        self.server.trim()
        self._trimmer = self.clock.call_later(TRIM_TICK, self._trim)

    def successor(self, topic: str) -> RemotePeer | None:
        """The topic server that owns `topic` when this one is gone (it holds the copy)."""
        try:
            return self._successors[topic]
        except KeyError:
            pass
        if len(self._successors) > 100_000:
            self._successors.clear()
        name = self._without_me.owner(topic)
        peer = self._successors[topic] = None if name is None else self.peers.get(name)
        return peer

    # LinkHub
    def up(self, link: LinkConnection) -> None:
        if link.peer.role is Role.TOPIC_SERVER:
            peer = RemotePeer(link, self.replication, self.clock, self.pg_frame)
            self.peers[link.peer.name] = peer
            self._peers_changed()
            return
        if self.linked_since is None:
            self.linked_since = self.clock.time()
        self.gateways[link] = RemoteGateway(link, self.server, self.counters, self.pg_frame)

    def down(self, link: LinkConnection) -> None:
        if link.peer.role is Role.TOPIC_SERVER:
            peer = self.peers.get(link.peer.name)
            if peer is not None and peer.link is link:
                del self.peers[link.peer.name]
                self._peers_changed()
                peer.fail_all()
            return
        gateway = self.gateways.pop(link, None)
        if gateway is not None:
            self.server.gateway_down(gateway)
        if not self.gateways:
            self.linked_since = None

    def first(self, topic: str) -> bool:
        """Whether this server owns `topic` on the ring of the live topic servers."""
        return self._with_me.owner(topic) == self.local.name

    def _peers_changed(self) -> None:
        self._without_me = Ring(self.ring, self.peers)
        self._with_me = Ring(self.ring, [*self.peers, self.local.name])
        self._successors.clear()
        self.replication.membership_changed()

    def overflowed(self) -> None:
        self.counters.link_overflows += 1

    # Operations
    def unready(self) -> list[str]:
        if self.registry is None or self.registry.registered:
            return []
        return ["not registered in Redis yet"]

    def gauges(self) -> dict[str, tuple[float, str]]:
        return self.server.gauges()

    def describe(self) -> dict[str, Any]:
        return {**self.view(SCOPE), "ring": {"declared": sorted(self.ring.servers)}}
