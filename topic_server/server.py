"""The topic server: sequences each publish and hands it to every gateway that wants it.

A publish is sequenced (one counter for the whole server, see `topics`), acknowledged to
its gateway by the caller, and delivered once to each gateway with subscribers on the
topic, never once per subscriber: the gateway fans out to its own sockets.
"""

from __future__ import annotations

import time

from app.counters import Counters
from app.link.interface import Delivery, GatewayLink
from topic_server.topics import Topics


class TopicServer:
    __slots__ = ("counters", "name", "topics")

    def __init__(self, name: str, counters: Counters) -> None:
        self.name = name
        self.counters = counters
        self.topics: Topics[GatewayLink] = Topics()

    def subscribe(self, gateway: GatewayLink, topic: str) -> None:
        self.topics.subscribe(gateway, topic)

    def unsubscribe(self, gateway: GatewayLink, topic: str) -> None:
        self.topics.unsubscribe(gateway, topic)

    def gateway_down(self, gateway: GatewayLink) -> None:
        self.topics.drop(gateway)

    def publish(
        self,
        topic: str,
        event: str,
        payload: bytes,
        binary: bool,
        origin: GatewayLink | None = None,
        exclude: int = 0,
    ) -> int:
        """Sequence and deliver one message; returns its sequence number."""
        seq, gateways = self.topics.publish(topic)
        counters = self.counters
        counters.publishes += 1
        counters.gateway_deliveries_sent += len(gateways)
        if gateways:
            delivery = Delivery(topic, seq, event, payload, binary, time.time())
            for gateway in gateways:
                if exclude and gateway is origin:
                    gateway.deliver(delivery, exclude)
                else:
                    gateway.deliver(delivery)
        return seq
