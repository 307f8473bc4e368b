"""A topic server's link to one gateway, over the network.

Subscribe and unsubscribe frames update the server's table; a publish is sequenced,
acknowledged on this link, and delivered as one deliver frame to every gateway with
subscribers (this one included when it has some), the frame bytes shared by all. On a
topic with history, the acknowledgement (or the refusal) comes once the message is copied
(`topic_server.replication`), and a gateway can ask what came after a position. Track and
untrack frames update the server's presence; a presence query is answered on this link at
once, after everything the gateway sent before it. A frame only topic servers send (ack,
deliver, presence state) closes the link: the peer does not follow the protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.counters import Counters
from app.link import codec
from app.link.codec import (
    LinkFrame,
    LinkFrameError,
    LinkPg,
    LinkPresenceQuery,
    LinkPublish,
    LinkPublishKept,
    LinkRecover,
    LinkResubscribe,
    LinkSubscribe,
    LinkTrack,
    LinkUnsubscribe,
    LinkUntrack,
)
from app.link.connection import LinkConnection
from app.link.interface import Accepted, Delivery, Kept, Outcome, Recovery
from topic_server.server import TopicServer


class RemoteGateway:
    __slots__ = ("counters", "link", "on_pg", "server")

    def __init__(
        self,
        link: LinkConnection,
        server: TopicServer,
        counters: Counters,
        on_pg: Callable[[LinkConnection, Any], None],
    ) -> None:
        self.link = link
        self.server = server
        self.counters = counters
        self.on_pg = on_pg
        link.on_frame = self.on_frame

    @property
    def gateway(self) -> str:
        return self.link.peer.name

    def deliver(self, delivery: Delivery, exclude: int = 0) -> None:
        if self.link.closed:
            self.counters.gateway_deliveries_dropped += 1
            return
        self.link.send(delivery.frame_excluding(exclude) if exclude else delivery.frame)

    def on_frame(self, frame: LinkFrame) -> None:
        if isinstance(frame, LinkPublish):
            seq = self.server.publish(
                frame.topic, frame.event, frame.payload, frame.binary, self, frame.exclude
            )
            self.link.send(codec.ack(frame.id, seq))
        elif isinstance(frame, LinkPublishKept):
            f = frame
            kept = Kept(f.size, f.ttl)
            done = self._answer(f.id)
            self.server.publish_kept(
                f.topic, f.event, f.payload, f.binary, kept, done, self, f.exclude
            )
        elif isinstance(frame, LinkSubscribe):
            self.server.subscribe(self, frame.topic)
            self.link.send(codec.ack(frame.id, 0))
        elif isinstance(frame, LinkResubscribe):
            self.server.subscribe(self, frame.topic, (frame.epoch, frame.offset))
            self.link.send(codec.ack(frame.id, 0))
        elif isinstance(frame, LinkRecover):
            id, link = frame.id, self.link

            def answer(r: Recovery) -> None:
                link.send(codec.recovered(id, r.recovered, r.last, r.epoch, r.entries))

            self.server.recover(frame.topic, (frame.epoch, frame.offset), frame.limit, answer)
        elif isinstance(frame, LinkUnsubscribe):
            self.server.unsubscribe(self, frame.topic)
        elif isinstance(frame, LinkTrack):
            self.server.track(self, frame.topic, frame.key, frame.ref, frame.meta, frame.prev)
        elif isinstance(frame, LinkUntrack):
            self.server.untrack(self, frame.topic, frame.key, frame.ref)
        elif isinstance(frame, LinkPresenceQuery):
            self.link.send(codec.presence_state(frame.id, self.server.presence_state(frame.topic)))
        elif isinstance(frame, LinkPg):
            self.on_pg(self.link, frame.frame)
        else:  # a topic server's frame: the peer is broken, and the link closes
            raise LinkFrameError(f"unexpected {type(frame).__name__} from a gateway")

    def _answer(self, id: int) -> Callable[[Outcome], None]:
        """What tells the gateway how its publish `id` (on a topic with history) ended."""

        def answer(outcome: Outcome) -> None:
            if isinstance(outcome, Accepted) and outcome.position is not None:
                epoch, offset = outcome.position
                self.link.send(codec.accepted(id, outcome.seq, offset, epoch))
            else:
                self.link.send(codec.refused(id, str(outcome)))

        return answer
