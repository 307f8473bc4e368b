"""A gateway's link to one topic server, over the network.

Subscriptions, publishes, recoveries, presence tracks and queries go out as link frames;
acknowledgements, refusals, deliveries, recovered messages and presence states come back.
Every publish, subscription and presence query gets exactly one answer: the owner's ack,
refusal or state, or, if none comes within the publish timeout or the link goes down
first, an error; a recovery gets the owner's answer, or an unrecovered one. A publish is
never left without a reply. A frame only gateways send closes the link: the peer does not
follow the protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from typing import Any, TypeVar

from app.counters import Counters
from app.link import codec
from app.link.codec import (
    LinkAccepted,
    LinkAck,
    LinkDeliver,
    LinkDeliverKept,
    LinkFrame,
    LinkFrameError,
    LinkPg,
    LinkPresenceState,
    LinkRecovered,
    LinkRefused,
)
from app.link.connection import LinkConnection
from app.link.interface import (
    Accepted,
    Kept,
    OnOutcome,
    OnPresence,
    OnRecovery,
    Position,
    Recovery,
)

UNREACHABLE = "topic server unreachable"
TIMED_OUT = "no answer from the topic server in time"
WENT_DOWN = "the topic server went down before answering"

Deliveries = Callable[["RemoteOwner", LinkDeliver | LinkDeliverKept], None]


class RemoteOwner:
    __slots__ = (
        "_ids",
        "counters",
        "link",
        "linked_for",
        "now",
        "on_ack_latency",
        "on_deliver",
        "on_pg",
        "pending",
        "querying",
        "recovering",
        "subscribing",
    )

    def __init__(
        self,
        link: LinkConnection,
        linked_for: float,
        counters: Counters,
        on_deliver: Deliveries,
        on_pg: Callable[[LinkConnection, Any], None],
        on_ack_latency: Callable[[float], None],
        now: Callable[[], float],
    ) -> None:
        self.link = link
        self.linked_for = linked_for
        self.counters = counters
        self.on_deliver = on_deliver
        self.on_pg = on_pg
        self.on_ack_latency = on_ack_latency
        # Seconds on a monotonic clock, precise enough for sub-millisecond ack latencies.
        self.now = now
        # request id -> (callback, time sent); ids grow, so oldest first
        self.pending: dict[int, tuple[OnOutcome, float]] = {}  # publishes
        self.subscribing: dict[int, tuple[OnOutcome, float]] = {}
        self.recovering: dict[int, tuple[OnRecovery, float]] = {}
        self.querying: dict[int, tuple[OnPresence, float]] = {}  # presence queries
        self._ids = count(1)
        link.on_frame = self.on_frame

    @property
    def owner(self) -> str:
        return self.link.peer.name

    def subscribe(self, topic: str, on_outcome: OnOutcome, since: Position | None = None) -> None:
        if self.link.closed:
            on_outcome(UNREACHABLE)
            return
        id = next(self._ids)
        self.subscribing[id] = (on_outcome, self.now())
        if since is None:
            self.link.send(codec.subscribe(id, topic))
        else:
            self.link.send(codec.resubscribe(id, topic, *since))

    def unsubscribe(self, topic: str) -> None:
        self.link.send(codec.unsubscribe(topic))

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
        if self.link.closed:
            self.counters.publish_errors += 1
            on_outcome(UNREACHABLE)
            return
        id = next(self._ids)
        self.pending[id] = (on_outcome, self.now())
        if kept is None:
            self.link.send(codec.publish(id, exclude, topic, event, binary, payload))
        else:
            frame = codec.publish_kept(id, exclude, *kept, topic, event, binary, payload)
            self.link.send(frame)

    def recover(self, topic: str, since: Position, limit: int, done: OnRecovery) -> None:
        if self.link.closed:
            done(UNREACHABLE)
            return
        id = next(self._ids)
        self.recovering[id] = (done, self.now())
        epoch, offset = since
        self.link.send(codec.recover(id, limit, offset, topic, epoch))

    def track(self, topic: str, key: str, ref: str, meta: bytes, prev: str | None) -> None:
        self.link.send(codec.track(topic, key, ref, prev, meta))

    def untrack(self, topic: str, key: str, ref: str) -> None:
        self.link.send(codec.untrack(topic, key, ref))

    def presence(self, topic: str, on_presence: OnPresence) -> None:
        if self.link.closed:
            on_presence(UNREACHABLE)
            return
        id = next(self._ids)
        self.querying[id] = (on_presence, self.now())
        self.link.send(codec.presence_query(id, topic))

    def on_frame(self, frame: LinkFrame) -> None:
        # The frames of every message first: a deliver, then a publish's ack.
        if isinstance(frame, LinkDeliver | LinkDeliverKept):
            self.on_deliver(self, frame)
        elif isinstance(frame, LinkAck):
            entry = self.pending.pop(frame.id, None)
            if entry is not None:
                self.on_ack_latency(self.now() - entry[1])
                entry[0](Accepted(self.owner, frame.seq))
            else:
                entry = self.subscribing.pop(frame.id, None)
                if entry is not None:
                    entry[0](Accepted(self.owner, 0))
        elif isinstance(frame, LinkAccepted):
            entry = self.pending.pop(frame.id, None)
            if entry is not None:
                self.on_ack_latency(self.now() - entry[1])
                entry[0](Accepted(self.owner, frame.seq, (frame.epoch, frame.offset)))
        elif isinstance(frame, LinkRefused):
            entry = self.pending.pop(frame.id, None)
            if entry is not None:
                self.counters.publish_errors += 1
                entry[0](frame.reason)
        elif isinstance(frame, LinkRecovered):
            waiting = self.recovering.pop(frame.id, None)
            if waiting is not None:
                f = frame
                waiting[0](Recovery(f.recovered, f.epoch, f.last, f.entries))
        elif isinstance(frame, LinkPresenceState):
            query = self.querying.pop(frame.id, None)
            if query is not None:
                query[0](frame.state)
        elif isinstance(frame, LinkPg):
            self.on_pg(self.link, frame.frame)
        else:  # a gateway's frame: the peer is broken, and the link closes
            raise LinkFrameError(f"unexpected {type(frame).__name__} from a topic server")

    def expire(self, timeout: float) -> None:
        """Fail the requests that have waited `timeout` seconds or longer, oldest first."""
        deadline = self.now() - timeout
        self.counters.publish_errors += _expire(self.pending, deadline)
        _expire(self.subscribing, deadline)
        _expire(self.recovering, deadline)
        _expire(self.querying, deadline)

    def fail_all(self) -> None:
        """The link is gone: every request still waiting gets an error."""
        pending, self.pending = self.pending, {}
        subscribing, self.subscribing = self.subscribing, {}
        recovering, self.recovering = self.recovering, {}
        querying, self.querying = self.querying, {}
        self.counters.publish_errors += len(pending)
        for on_outcome, _ in [*pending.values(), *subscribing.values()]:
            on_outcome(WENT_DOWN)
        for fail, _ in [*recovering.values(), *querying.values()]:
            fail(WENT_DOWN)


# A request's callback: each takes the reason it failed.
Callback = TypeVar("Callback", OnOutcome, OnPresence, OnRecovery)


def _expire(waiting: dict[int, tuple[Callback, float]], deadline: float) -> int:
    """Fail the requests sent at or before `deadline`; how many."""
    expired = []
    for id, (_, sent) in waiting.items():
        if sent > deadline:
            break
        expired.append(id)
    for id in expired:
        waiting.pop(id)[0](TIMED_OUT)
    return len(expired)
