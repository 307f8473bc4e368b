"""The interface between gateways and topic servers, whatever carries it.

A gateway holds an `OwnerLink` for each topic server it routes to; a topic server holds a
`GatewayLink` for each gateway linked to it. In the embedded default both ends live in one
process (`app.link.memory`); in a cluster a network link implements the same calls, so
there is exactly one fan-out path: gateway -> owner (subscribe, unsubscribe, publish),
owner -> gateway (acknowledgement, deliver), one deliver per message and gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

from app.link import codec


class Accepted(NamedTuple):
    """A publish accepted and sequenced by `owner` as number `seq`."""

    owner: str
    seq: int


# What became of a publish or a subscription: accepted, or the reason it failed.
Outcome = Accepted | str
# Called exactly once per request, with its outcome.
OnOutcome = Callable[[Outcome], None]


class OwnerLink(Protocol):
    """A gateway's handle on one topic server (one connection to it)."""

    @property
    def owner(self) -> str:
        """The topic server's node name."""
        ...

    def subscribe(self, topic: str, on_outcome: OnOutcome) -> None:
        """Subscribe this gateway; `on_outcome` once the owner has it (or why it failed)."""
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
    ) -> None:
        """Publish; `exclude`, if not 0, is the id of a socket on this gateway that must not
        receive the message (a publisher without echo)."""
        ...


class Delivery:
    """One sequenced message on its way to gateways. Its link frame is encoded once, on
    first use, and the same bytes go to every gateway linked over the network."""

    __slots__ = ("_frame", "binary", "event", "payload", "sent_at", "seq", "topic")

    def __init__(
        self, topic: str, seq: int, event: str, payload: bytes, binary: bool, sent_at: float
    ) -> None:
        self.topic = topic
        self.seq = seq
        self.event = event
        self.payload = payload
        self.binary = binary
        self.sent_at = sent_at
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = self.frame_excluding(0)
        return self._frame

    def frame_excluding(self, exclude: int) -> bytes:
        """The frame for the publishing gateway, naming the socket to skip."""
        return codec.deliver(
            self.seq, self.sent_at, exclude, self.topic, self.event, self.binary, self.payload
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

    def subscribe(self, gateway: GatewayLink, topic: str) -> None: ...

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
    ) -> None: ...
