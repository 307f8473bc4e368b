"""A topic server in a cluster (DPS_APP=ts): gateways link to it; it registers in Redis.

It listens for node links at `/_dps/link` (dialled by gateways), joins the pg group
`topic_servers` so that gateways put it on their ring, and serves each linked gateway's
subscriptions and publishes through one `TopicServer`.

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
from app.link.handshake import Identity
from app.link.hub import SCOPE, TOPIC_SERVERS, LinkHub
from app.metrics import Metrics
from app.pg import new_incarnation
from app.ring import RingConfig, RingError
from app.settings import Role, Settings
from topic_server.remote_gateway import RemoteGateway
from topic_server.server import TopicServer

log = logging.getLogger("dps.topic_server")

PAUSE_TICK = 0.1  # seconds between checks that the process has not been paused


class TopicServerNode(LinkHub):
    role = Role.TOPIC_SERVER

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
        self.server = TopicServer(self.local.name, self.counters, clock, settings.presence_interval)
        self.gateways: dict[LinkConnection, RemoteGateway] = {}
        self.registry: Registry | None = None

    async def start(self) -> None:
        self._watchdog = self.clock.call_later(PAUSE_TICK, self._watch, self.clock.time())
        self.pg.start_scope(SCOPE)
        self.pg.join(SCOPE, TOPIC_SERVERS, self.pg.spawn_member().member)
        if self.settings.redis_url:
            me = NodeRecord(
                self.local.name, self.role, self.local.incarnation, self.settings.advertise_address
            )
            self.registry = Registry(self.settings.redis_url, me, self.settings.lease_ttl, _ignore)
            self.registry.start()

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
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

    # LinkHub
    def up(self, link: LinkConnection) -> None:
        if self.linked_since is None:
            self.linked_since = self.clock.time()
        self.gateways[link] = RemoteGateway(link, self.server, self.counters, self.pg_frame)

    def down(self, link: LinkConnection) -> None:
        gateway = self.gateways.pop(link, None)
        if gateway is not None:
            self.server.gateway_down(gateway)
        if not self.gateways:
            self.linked_since = None

    def overflowed(self) -> None:
        self.counters.link_overflows += 1

    # Operations
    def unready(self) -> list[str]:
        if self.registry is None or self.registry.registered:
            return []
        return ["not registered in Redis yet"]

    def gauges(self) -> dict[str, tuple[float, str]]:
        return {
            "topics": (len(self.server.topics), "topics with subscribed gateways"),
            "presences": (len(self.server.presence), "presence entries, on every topic"),
        }

    def describe(self) -> dict[str, Any]:
        return {
            **self.view(SCOPE),
            "not_tracked": {
                TOPIC_SERVERS: "topic servers do not link to each other: this one lists only "
                "itself (a gateway's /cluster lists every topic server it is linked to)"
            },
            "ring": {"declared": sorted(self.ring.servers)},
        }


def _ignore(nodes: dict[str, NodeRecord], absence_counts: bool) -> None:
    """Topic servers register, but dial no one: gateways dial them."""
