"""A topic server in a cluster (DPS_APP=ts): gateways link to it; it registers in Redis.

It listens for node links at `/_dps/link` (dialled by gateways), joins the pg group
`topic_servers` so that gateways put it on their ring, and serves each linked gateway's
subscriptions and publishes through one `TopicServer`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from app.counters import Counters
from app.discovery import NodeRecord, Registry
from app.link_connection import LinkConnection, LinkOptions
from app.link_handshake import Identity
from app.link_hub import LinkHub
from app.metrics import Metrics
from app.pg import new_incarnation
from app.ring import RingConfig, RingError
from app.settings import Settings
from topic_server.gateway_link import RemoteGateway
from topic_server.server import TopicServer

log = logging.getLogger("dps.topic_server")

SCOPE = "dps"


class TopicServerNode(LinkHub):
    role = "ts"

    def __init__(self, settings: Settings, ring: RingConfig) -> None:
        if settings.node_name not in ring.servers:
            raise RingError(
                f"DPS_NODE: topic server {settings.node_name!r} is not declared in {ring.path} "
                f"(declared: {', '.join(sorted(ring.servers))})"
            )
        super().__init__(Identity(settings.node_name, self.role, new_incarnation()))
        self.settings = settings
        self.ring = ring
        self.started = time.monotonic()
        self.counters = Counters()
        self.metrics = Metrics(self.counters, self.gauges)
        self.options = LinkOptions(
            secret=settings.cluster_secret.get_secret_value() if settings.cluster_secret else "",
            queue_limit=settings.link_queue,
            ping_interval=settings.link_timeout / 3,
            ping_timeout=settings.link_timeout,
        )
        self.server = TopicServer(self.local.name, self.counters)
        self.gateways: dict[LinkConnection, RemoteGateway] = {}
        self.registry: Registry | None = None

    async def start(self) -> None:
        self.pg.start_scope(SCOPE)
        self.pg.join(SCOPE, "topic_servers", self.pg.spawn_member().member)
        if self.settings.redis_url:
            me = NodeRecord(
                self.local.name, self.role, self.local.incarnation, self.settings.advertise_address
            )
            self.registry = Registry(self.settings.redis_url, me, self.settings.lease_ttl, _ignore)
            self.registry.start()

    async def stop(self) -> None:
        self.pg.stop_scope(SCOPE)
        if self.registry is not None:
            await self.registry.close()

    # LinkHub
    def up(self, link: LinkConnection) -> None:
        self.gateways[link] = RemoteGateway(link, self.server, self.counters, self.pg_frame)

    def down(self, link: LinkConnection) -> None:
        gateway = self.gateways.pop(link, None)
        if gateway is not None:
            self.server.gateway_down(gateway)

    def overflowed(self) -> None:
        self.counters.link_overflows += 1

    # Operations
    def ready(self) -> bool:
        return self.registry is None or self.registry.registered.is_set()

    def gauges(self) -> dict[str, tuple[float, str]]:
        return {"topics": (len(self.server.topics), "topics with subscribed gateways")}

    def describe(self) -> dict[str, Any]:
        return {**self.view(SCOPE), "ring": {"declared": sorted(self.ring.servers)}}


def _ignore(nodes: dict[str, NodeRecord], absence_counts: bool) -> None:
    """Topic servers register, but dial no one: gateways dial them."""
