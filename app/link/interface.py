"""The interface between gateways and topic servers, whatever carries it.

A gateway holds an `OwnerLink` for each topic server it routes to; a topic server holds a
`GatewayLink` for each gateway linked to it. In the embedded default both ends live in one
process (`app.link.memory`); in a cluster a network link implements the same calls, so
there is exactly one fan-out path: gateway -> owner (subscribe, unsubscribe, publish),
owner -> gateway (acknowledgement, deliver), one deliver per message and gateway.

Topics with history (`Kept`) add positions: each message of such a topic has one, its
stream's epoch and its offset (`Position`); a subscription can ask for what came after a
position (`since`), and a gateway can ask the owner what a client missed (`recover`).
Presence takes the same path: a gateway tells the owner about its own sockets (track,
untrack), the owner delivers each topic's presence diffs like messages (marked
`presence`), and answers presence queries (a joiner's `presence_state`, `/api/presence`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

from app.link import codec
from app.link.codec import Entry

# A message's place in its topic's history: the stream's epoch, and its offset there.
Position = tuple[str, int]


class Kept(NamedTuple):
    """A topic's history rule, as its publishes carry it: messages kept, and how long."""

    size: int
    ttl: float


class Accepted(NamedTuple):
    """A publish accepted and sequenced by `owner` as number `seq` (at `position`, on a
    topic with history)."""

    owner: str
    seq: int
    position: Position | None = None


class Recovery(NamedTuple):
    """What a client that saw `since` missed: `recovered` is False when the history no
    longer covers it (another epoch, or trimmed); `epoch` and `last` are the stream's
    position now ("" and 0 for a topic without a stream)."""

    recovered: bool
    epoch: str
    last: int
    entries: tuple[Entry, ...]


# What became of a publish or a subscription: accepted, or the reason it failed.
Outcome = Accepted | str
# Called exactly once per request, with its outcome.
OnOutcome = Callable[[Outcome], None]
# Called exactly once per recovery request: with what the owner answered, or why it could
# not (a history that is gone is an answer, `recovered` false; an owner out of reach is not).
OnRecovery = Callable[[Recovery | str], None]
# Called exactly once per presence query: the topic's presence as JSON, or why it failed.
OnPresence = Callable[[bytes | str], None]


class OwnerLink(Protocol):
    """A gateway's handle on one topic server (one connection to it)."""

    @property
    def owner(self) -> str:
        """The topic server's node name."""
        ...

    def subscribe(self, topic: str, on_outcome: OnOutcome, since: Position | None = None) -> None:
        """Subscribe this gateway; `on_outcome` once the owner has it (or why it failed).
        With `since`, the owner first delivers what came after that position."""
        ...

    def unsubscribe(self, topic: str) -> None: ...

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
        """Publish; `exclude`, if not 0, is the id of a socket on this gateway that must not
        receive the message (a publisher without echo); `kept`, the topic's history rule."""
        ...

    def recover(self, topic: str, since: Position, limit: int, done: OnRecovery) -> None:
        """What came after `since` (at most `limit` messages)."""
        ...

    def track(self, topic: str, key: str, ref: str, meta: bytes, prev: str | None) -> None:
        """Add this gateway's presence entry `ref` (in place of `prev`, if not None)."""
        ...

    def untrack(self, topic: str, key: str, ref: str) -> None: ...

    def presence(self, topic: str, on_presence: OnPresence) -> None:
        """Ask for the topic's presence, as it is once everything sent before is applied."""
        ...


class Delivery:
    """One sequenced message on its way to gateways. Its link frame is encoded once, on
    first use, and the same bytes go to every gateway linked over the network."""

    __slots__ = (
        "_frame",
        "binary",
        "event",
        "payload",
        "position",
        "presence",
        "sent_at",
        "seq",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        seq: int,
        event: str,
        payload: bytes,
        binary: bool,
        sent_at: float,
        position: Position | None = None,
        presence: bool = False,
    ) -> None:
        self.topic = topic
        self.seq = seq
        self.event = event
        self.payload = payload
        self.binary = binary
        self.sent_at = sent_at
        self.position = position
        self.presence = presence  # a presence diff (never kept, so without a position)
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = self.frame_excluding(0)
        return self._frame

    def frame_excluding(self, exclude: int) -> bytes:
        """The frame for the publishing gateway, naming the socket to skip."""
        if self.position is None:
            return codec.deliver(
                self.seq,
                self.sent_at,
                exclude,
                self.topic,
                self.event,
                self.binary,
                self.payload,
                self.presence,
            )
        epoch, offset = self.position
        return codec.deliver_kept(
            self.seq,
            self.sent_at,
            exclude,
            offset,
            epoch,
            self.topic,
            self.event,
            self.binary,
            self.payload,
        )


class GatewayLink(Protocol):
    """A topic server's handle on one gateway (one connection to it)."""

    @property
    def gateway(self) -> str:
        """The gateway's node name."""
        ...

    def deliver(self, delivery: Delivery, exclude: int = 0) -> None:
        """Send `delivery`, to every local subscriber but socket `exclude` if not 0."""
        ...


class Sequencer(Protocol):
    """What a topic server offers the links of its gateways."""

    @property
    def name(self) -> str: ...

    def subscribe(self, gateway: GatewayLink, topic: str, since: Position | None = None) -> None:
        """Subscribe `gateway`, and deliver it what came after `since`, if given."""
        ...

    def unsubscribe(self, gateway: GatewayLink, topic: str) -> None: ...

    def publish(
        self,
        topic: str,
        event: str,
        payload: bytes,
        binary: bool,
        origin: GatewayLink | None = None,
        exclude: int = 0,
    ) -> int:
        """Sequence and deliver one message; its sequence number. Socket `exclude` of the
        gateway `origin` does not receive it."""
        ...

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
        """The same for a topic with history: `done` once the message is numbered, held by
        the topic's successor, and delivered (or with why it was refused)."""
        ...

    def recover(
        self, topic: str, since: Position, limit: int, done: Callable[[Recovery], None]
    ) -> None:
        """What came after `since`: the topic server itself always has an answer."""
        ...

    def track(
        self, gateway: GatewayLink, topic: str, key: str, ref: str, meta: bytes, prev: str | None
    ) -> None: ...

    def untrack(self, gateway: GatewayLink, topic: str, key: str, ref: str) -> None: ...

    def presence_state(self, topic: str) -> bytes:
        """The topic's presence, the JSON object of a `presence_state`."""
        ...


class Recipient(Protocol):
    """What a gateway offers the links of its topic servers: where deliveries go."""

    @property
    def name(self) -> str: ...

    def deliver(
        self,
        source: OwnerLink,
        topic: str,
        seq: int,
        event: str,
        payload: bytes,
        binary: bool,
        exclude: int = 0,
        position: Position | None = None,
        presence: bool = False,
    ) -> None: ...
