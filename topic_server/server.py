"""The topic server: sequences each publish and hands it to every gateway that wants it.

A publish is sequenced (one counter for the whole server, see `topics`), acknowledged to
its gateway by the caller, and delivered once to each gateway with subscribers on the
topic, never once per subscriber: the gateway fans out to its own sockets.

Presence (`presence`) changes as gateways track and untrack their sockets; `interval`
seconds after the first change (0: at the end of the turn of the event loop), each changed
topic's diff is sequenced and delivered like a message, event `presence_diff`, marked as
presence: however many joins and leaves, a topic's subscribers get one diff per interval,
so a crowded topic's churn costs each of them a few frames a second, not one per change. A
gateway that is gone, or no longer subscribed to a topic, has no entries left there.
"""

from __future__ import annotations

import time

from app.clock import Clock, RunningLoop
from app.counters import Counters
from app.link.interface import Delivery, GatewayLink
from topic_server.presence import PresenceTable
from topic_server.topics import Topics

PRESENCE_DIFF = "presence_diff"


class TopicServer:
    __slots__ = ("_flushing", "clock", "counters", "interval", "name", "presence", "topics")

    def __init__(
        self, name: str, counters: Counters, clock: Clock | None = None, interval: float = 0.0
    ) -> None:
        self.name = name
        self.counters = counters
        self.clock = clock or RunningLoop()
        self.interval = interval  # seconds presence changes gather before their diffs go
        self.topics: Topics[GatewayLink] = Topics()
        self.presence: PresenceTable[GatewayLink] = PresenceTable()
        self._flushing = False

    def subscribe(self, gateway: GatewayLink, topic: str) -> None:
        self.topics.subscribe(gateway, topic)

    def unsubscribe(self, gateway: GatewayLink, topic: str) -> None:
        self.topics.unsubscribe(gateway, topic)
        if gateway not in self.topics.gateways(topic):
            self.presence.drop(gateway, topic)
            self._changed()

    def gateway_down(self, gateway: GatewayLink) -> None:
        self.topics.drop(gateway)
        self.presence.drop(gateway)
        self._changed()

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
        self.counters.publishes += 1
        seq, _ = self._deliver(topic, event, payload, binary, origin, exclude)
        return seq

    def track(
        self, gateway: GatewayLink, topic: str, key: str, ref: str, meta: bytes, prev: str | None
    ) -> None:
        self.presence.track(gateway, topic, key, ref, meta, prev)
        self._changed()

    def untrack(self, gateway: GatewayLink, topic: str, key: str, ref: str) -> None:
        self.presence.untrack(gateway, topic, key, ref)
        self._changed()

    def presence_state(self, topic: str) -> bytes:
        return self.presence.state(topic)

    def _changed(self) -> None:
        self.counters.presence_changes += self.presence.changes
        self.presence.changes = 0
        if self.presence.changed and not self._flushing:
            self._flushing = True
            self.clock.call_later(self.interval, self._flush)

    def _flush(self) -> None:
        """The interval is over: one diff per changed topic, to its gateways."""
        self._flushing = False
        for topic, diff in self.presence.take_diffs():
            _, sent = self._deliver(topic, PRESENCE_DIFF, diff, False, presence=True)
            self.counters.presence_diff_bytes += len(diff) * sent

    def _deliver(
        self,
        topic: str,
        event: str,
        payload: bytes,
        binary: bool,
        origin: GatewayLink | None = None,
        exclude: int = 0,
        presence: bool = False,
    ) -> tuple[int, int]:
        """Sequence and deliver; the sequence number, and to how many gateways."""
        seq, gateways = self.topics.publish(topic)
        self.counters.gateway_deliveries_sent += len(gateways)
        if gateways:
            delivery = Delivery(topic, seq, event, payload, binary, time.time(), presence)
            for gateway in gateways:
                if exclude and gateway is origin:
                    gateway.deliver(delivery, exclude)
                else:
                    gateway.deliver(delivery)
        return seq, len(gateways)
