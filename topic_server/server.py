"""The topic server: sequences each publish and hands it to every gateway that wants it.

A publish is sequenced (one counter for the whole server, see `topics`), acknowledged to
its gateway, and delivered once to each gateway with subscribers on the topic, never once
per subscriber: the gateway fans out to its own sockets.

A publish on a topic with history is also numbered in the topic's stream, and copied to
the topic's successor before it is delivered and acknowledged (`replication`); the
deliveries and the acknowledgement carry its position.

Presence (`presence`) changes as gateways track and untrack their sockets; `interval`
seconds after the first change (0: at the end of the turn of the event loop), each changed
topic's diff is sequenced and delivered like a message, event `presence_diff`, marked as
presence: however many joins and leaves, a topic's subscribers get one diff per interval,
so a crowded topic's churn costs each of them a few frames a second, not one per change. A
gateway that is gone, or no longer subscribed to a topic, has no entries left there.
Presence diffs have no position: they are never kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from app.clock import Clock, RunningLoop
from app.counters import Counters
from app.link.codec import Entry
from app.link.interface import (
    Accepted,
    Delivery,
    GatewayLink,
    Kept,
    OnOutcome,
    Position,
    Recovery,
)
from topic_server.history import History
from topic_server.presence import PresenceTable
from topic_server.replication import Publish, Replication
from topic_server.topics import Topics

DEFAULT_HISTORY_BYTES = 256 * 1024 * 1024  # DPS_HISTORY_MAX_BYTES's default
RECOVERY_LIMIT = 1_000_000  # what a resubscribing gateway may have missed: all there is
PRESENCE_DIFF = "presence_diff"


class TopicServer:
    __slots__ = (
        "_flushing",
        "clock",
        "counters",
        "history",
        "interval",
        "name",
        "presence",
        "replication",
        "topics",
        "wall_clock",
    )

    def __init__(
        self,
        name: str,
        counters: Counters,
        history: History | None = None,
        replication: Replication | None = None,
        clock: Clock | None = None,
        interval: float = 0.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.counters = counters
        self.history = History(DEFAULT_HISTORY_BYTES, counters) if history is None else history
        # Without peers, a server alone: no copies, publishes acknowledged at once.
        self.replication = replication or Replication(self.history, _alone, _alone, _everything)
        self.clock = clock or RunningLoop()
        self.interval = interval  # seconds presence changes gather before their diffs go
        self.wall_clock = wall_clock  # sent_at and history times
        self.topics: Topics[GatewayLink] = Topics()
        self.presence: PresenceTable[GatewayLink] = PresenceTable()
        self._flushing = False

    def subscribe(self, gateway: GatewayLink, topic: str, since: Position | None = None) -> None:
        self.topics.subscribe(gateway, topic)
        if since is None:
            return
        # A gateway that moved here from another owner: what it has not seen yet, from the
        # stream held here (a server that is only listened to yet takes nothing over).
        epoch, offset = since
        missed = self.history.since(topic, epoch, offset, RECOVERY_LIMIT, self.wall_clock())
        if missed.recovered:
            for entry in missed.entries:
                e, position = entry, (missed.epoch, entry.offset)
                seq = self.topics.next_seq()
                gateway.deliver(Delivery(topic, seq, e.event, e.payload, e.binary, e.at, position))

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
        at = self.wall_clock()
        seq, _ = self._deliver(topic, event, payload, binary, at, None, origin, exclude)
        return seq

    def publish_kept(
        self,
        topic: str,
        event: str,
        payload: bytes,
        binary: bool,
        kept: Kept,
        done: OnOutcome,
        origin: GatewayLink | None = None,
        exclude: int = 0,
    ) -> None:
        def ready(entry: Entry, epoch: str) -> None:
            position = (epoch, entry.offset)
            self.counters.publishes += 1
            seq, _ = self._deliver(
                topic, event, payload, binary, entry.at, position, origin, exclude
            )
            done(Accepted(self.name, seq, position))

        at = self.wall_clock()
        publish = Publish(kept.size, kept.ttl, at, event, binary, payload, ready, done)
        self.replication.publish(topic, publish)

    def gauges(self) -> dict[str, tuple[float, str]]:
        history = self.history
        return {
            "topics": (len(self.topics), "topics with subscribed gateways"),
            "subscriptions": (
                self.topics.subscriptions(),
                "gateway subscriptions, one per topic and gateway",
            ),
            "presences": (len(self.presence), "presence entries, on every topic"),
            "history_messages": (len(history), "messages held in topics' histories"),
            "history_bytes": (history.bytes, "bytes of the messages held in histories"),
        }

    def trim(self) -> None:
        """Drop what is past its history rule's ttl (a periodic sweep's work)."""
        self.history.trim(self.wall_clock())

    def recover(
        self, topic: str, since: Position, limit: int, done: Callable[[Recovery], None]
    ) -> None:
        """What came after `since` (taking the topic over first if this server, which the
        gateways take for its owner, holds no stream of it yet), up to the last message
        that went on: those still waiting for their copy are delivered once it is made,
        and by then the recovering socket is a subscriber and gets them live; replayed
        too, they would arrive twice."""
        epoch, offset = since

        def answer() -> None:
            recovery = self.history.since(topic, epoch, offset, limit, self.wall_clock())
            released = self.replication.released(topic)
            if released is not None and recovery.last > released:
                entries = tuple(e for e in recovery.entries if e.offset <= released)
                recovery = recovery._replace(last=released, entries=entries)
            done(recovery)

        self.replication.read(topic, answer)

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
        at = self.wall_clock()
        for topic, diff in self.presence.take_diffs():
            _, sent = self._deliver(topic, PRESENCE_DIFF, diff, False, at, None, presence=True)
            self.counters.presence_diff_bytes += len(diff) * sent

    def _deliver(
        self,
        topic: str,
        event: str,
        payload: bytes,
        binary: bool,
        at: float,
        position: Position | None,
        origin: GatewayLink | None = None,
        exclude: int = 0,
        presence: bool = False,
    ) -> tuple[int, int]:
        """Sequence and deliver; the sequence number, and to how many gateways."""
        seq, gateways = self.topics.publish(topic)
        self.counters.gateway_deliveries_sent += len(gateways)
        if gateways:
            delivery = Delivery(topic, seq, event, payload, binary, at, position, presence)
            for gateway in gateways:
                if exclude and gateway is origin:
                    gateway.deliver(delivery, exclude)
                else:
                    gateway.deliver(delivery)
        return seq, len(gateways)


def _alone(name: str) -> None:
    """A server without peers: no successor, no server to ask."""


def _everything(topic: str) -> bool:
    """A server alone owns every topic."""
    return True
