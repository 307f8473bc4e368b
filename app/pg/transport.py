"""What pg needs from the node links.

The contract (`Transport` going out, `Endpoint` coming in) is what Erlang distribution
gives OTP's `pg`:

- `send(peer, frame)` queues a frame (a JSON value) for `peer`. Frames to one peer
  arrive in send order. Nothing is dropped silently: a link that cannot deliver (its
  outbound queue overflows, its socket fails) goes down, and the peer is then reported
  down. `send` never calls back into the node; a frame to a peer that is not (or no
  longer) connected is discarded, as the node learns of the loss through `peer_down`.
- `peer_up(peer)` when a link to `peer` (a `NodeId`: name and incarnation) comes up;
  `peer_down(peer)` when it goes, after the last frame accepted from that connection
  and before any frame or `peer_up` of a newer one; `receive(peer, frame)` per frame.

DPS's node links (`app.link.hub`) implement it; the tests run pg on an in-memory network
that lets them decide every interleaving (`tests/pg/network.py`).
"""

from __future__ import annotations

from typing import Protocol

from app.pg.member import NodeId
from app.pg.wire import PgFrame

__all__ = ["Endpoint", "Transport"]


class Transport(Protocol):
    """The outbound side of the node links, as the node uses it."""

    def send(self, peer: NodeId, frame: PgFrame) -> None: ...


class Endpoint(Protocol):
    """The inbound side: what a link calls on its node (a `Node` is one)."""

    @property
    def id(self) -> NodeId: ...

    def peer_up(self, peer: NodeId) -> None: ...

    def peer_down(self, peer: NodeId) -> None: ...

    def receive(self, peer: NodeId, frame: PgFrame) -> None: ...
