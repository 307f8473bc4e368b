"""The interface between gateways and topic servers, whatever carries it.

A gateway holds an `OwnerLink` for each topic server it routes to; a topic server holds a
`GatewayLink` for each gateway linked to it. In the embedded default both ends live in one
process (`app.memory_link`); in a cluster a network link implements the same calls, so there
is exactly one fan-out path: gateway -> owner (subscribe, unsubscribe, publish), owner ->
gateway (acknowledgement, deliver), one deliver per message and gateway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol


class Ack(NamedTuple):
    """A publish accepted and sequenced by `owner` as number `seq`."""

    owner: str
    seq: int


# Called exactly once per publish: with the Ack, or with the reason it failed.
AckCallback = Callable[[Ack | str], None]


class OwnerLink(Protocol):
    """A gateway's handle on one topic server (one connection to it)."""

    @property
    def owner(self) -> str:
        """The topic server's node name."""
        ...

    def subscribe(self, topic: str) -> None: ...

    def unsubscribe(self, topic: str) -> None: ...

    def sync(self, topics: Iterable[str]) -> None:
        """Replace everything this gateway is subscribed to at the owner with `topics`."""
        ...

    def publish(
        self, topic: str, event: str, payload: bytes, binary: bool, on_ack: AckCallback
    ) -> None: ...


class GatewayLink(Protocol):
    """A topic server's handle on one gateway (one connection to it)."""

    @property
    def gateway(self) -> str:
        """The gateway's node name."""
        ...

    def deliver(self, topic: str, seq: int, event: str, payload: bytes, binary: bool) -> None: ...
