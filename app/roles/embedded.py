"""The embedded default (DPS_APP=all): a gateway and a topic server in one process.

They talk through `MemoryLink`, the same interface a cluster's network links implement,
so the embedded server runs exactly the cluster's fan-out path, minus the network.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from app.counters import Counters
from app.link.interface import OwnerLink
from app.link.memory import MemoryLink
from app.metrics import Metrics
from app.settings import Role, Settings
from topic_server.history import History
from topic_server.node import TRIM_TICK
from topic_server.server import TopicServer
from ws_gateway.access.policy import Policy
from ws_gateway.gateway import Gateway


class SingleOwner:
    """The embedded router: the one topic server owns every topic."""

    __slots__ = ("link",)

    def __init__(self) -> None:
        self.link: OwnerLink | None = None

    def owner_of(self, topic: str) -> OwnerLink | None:
        return self.link

    def listeners(self, topic: str) -> set[OwnerLink]:
        return set() if self.link is None else {self.link}


class EmbeddedNode:
    role = Role.EMBEDDED

    def __init__(self, settings: Settings) -> None:
        self.name = settings.node_name
        self.counters = Counters()
        self.metrics = Metrics(self.counters, self.gauges)
        router = SingleOwner()
        self.gateway = Gateway(self.name, router, self.counters)
        self.policy = Policy.of(settings, self.counters, time.time)
        history = History(settings.history_max_bytes, self.counters)
        self.server = TopicServer(  # alone: no copies
            self.name, self.counters, history, interval=settings.presence_interval
        )
        router.link = MemoryLink(self.gateway, self.server)
        self._trimmer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """No links, no discovery: only the sweep of the histories."""
        self._trimmer = asyncio.get_running_loop().call_later(TRIM_TICK, self._trim)

    def _trim(self) -> None:
        self.server.trim()
        self._trimmer = asyncio.get_running_loop().call_later(TRIM_TICK, self._trim)

    async def stop(self) -> None:
        if self._trimmer is not None:
            self._trimmer.cancel()
        if self.policy.hooks is not None:
            await self.policy.hooks.close()

    def unready(self) -> list[str]:
        return []

    def gauges(self) -> dict[str, tuple[float, str]]:
        return {**self.server.gauges(), **self.gateway.gauges()}

    def describe(self) -> dict[str, Any]:
        return {}
