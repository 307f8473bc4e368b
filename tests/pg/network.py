"""An in-memory network for pg: the transport contract of `app.pg.transport`, inside one
process, without asyncio, with every interleaving decided by the test.

Each ordered pair of nodes has a FIFO queue carrying frames and the peer_up/peer_down
notices for the receiving end, so each end learns of connects and disconnects in order
with the frames. Each connection of a pair has a generation: a disconnect loses the
frames in flight, and a frame sent by a node that has not yet handled its peer_down (its
view is an older generation) is discarded. Frames go through orjson on the way, so
anything that is not plain JSON fails loudly.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import orjson

from app.pg.member import NodeId
from app.pg.transport import Endpoint
from app.pg.wire import PgFrame

Link = tuple[str, str]  # (sender name, receiver name)
_Item = tuple[Literal["up", "down", "frame"], NodeId, int, bytes]  # kind, sender, generation


class MemoryTransport:
    """One node's `Transport` on a `MemoryNetwork`."""

    __slots__ = ("_name", "_network")

    def __init__(self, network: MemoryNetwork, name: str) -> None:
        self._network = network
        self._name = name

    def send(self, peer: NodeId, frame: PgFrame) -> None:
        self._network._send(self._name, peer, frame)


class MemoryNetwork:
    def __init__(self) -> None:
        self._endpoints: dict[str, Endpoint] = {}
        self._generation = 0
        # Up connections: unordered pair -> generation.
        self._up: dict[frozenset[str], int] = {}
        # (holder, peer) -> generation of the connection the holder has seen come up.
        self._views: dict[Link, int] = {}
        self._queues: dict[Link, deque[_Item]] = {}

    def transport(self, name: str) -> MemoryTransport:
        return MemoryTransport(self, name)

    def attach(self, endpoint: Endpoint) -> None:
        name = endpoint.id.name
        if name in self._endpoints:
            raise ValueError(f"a node named {name!r} is already attached")
        self._endpoints[name] = endpoint

    def detach(self, name: str) -> None:
        """The node is gone (killed): its links go down, nothing more reaches it."""
        for other in list(self._endpoints):
            if self.connected(name, other):
                self.disconnect(name, other)
        del self._endpoints[name]
        for link in [link for link in self._queues if link[1] == name]:
            del self._queues[link]
        for link in [link for link in self._views if link[0] == name]:
            del self._views[link]

    def endpoint(self, name: str) -> Endpoint:
        return self._endpoints[name]

    def connected(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self._up

    def connect(self, a: str, b: str) -> None:
        pair = frozenset((a, b))
        if a == b or pair in self._up:
            raise ValueError(f"cannot connect {a!r} and {b!r}")
        self._generation += 1
        generation = self._up[pair] = self._generation
        self._enqueue((a, b), ("up", self._endpoints[a].id, generation, b""))
        self._enqueue((b, a), ("up", self._endpoints[b].id, generation, b""))

    def disconnect(self, a: str, b: str) -> None:
        generation = self._up.pop(frozenset((a, b)), None)
        if generation is None:
            raise ValueError(f"{a!r} and {b!r} are not connected")
        for src, dst in ((a, b), (b, a)):
            queue = self._queues.get((src, dst))
            if queue:  # frames in flight are lost with the connection
                self._queues[src, dst] = deque(item for item in queue if item[0] != "frame")
            self._enqueue((src, dst), ("down", self._endpoints[src].id, generation, b""))

    def pending(self) -> list[Link]:
        """Links with something to deliver."""
        return [link for link, queue in self._queues.items() if queue]

    def deliver_one(self, link: Link) -> bool:
        """Deliver the oldest item on `link`; False if there was none."""
        queue = self._queues.get(link)
        if not queue:
            return False
        kind, sender, generation, payload = queue.popleft()
        src, dst = link
        endpoint = self._endpoints[dst]
        if kind == "up":
            self._views[dst, src] = generation
            endpoint.peer_up(sender)
        elif kind == "down":
            self._views.pop((dst, src), None)
            endpoint.peer_down(sender)
        else:
            endpoint.receive(sender, orjson.loads(payload))
        return True

    def drain(self, max_items: int = 1_000_000) -> int:
        """Deliver until every queue is empty, round-robin over links; return the count."""
        delivered = 0
        while links := self.pending():
            for link in links:
                self.deliver_one(link)
                delivered += 1
            if delivered > max_items:
                raise RuntimeError(f"network not quiet after {delivered} deliveries")
        return delivered

    def peek(self, link: Link) -> list[PgFrame]:
        """The frames queued on `link`, oldest first, left in place."""
        return [orjson.loads(p) for kind, _, _, p in self._queues.get(link, ()) if kind == "frame"]

    def drop_frame(self, link: Link) -> PgFrame | None:
        """Lose the oldest frame on `link` (a fault the contract forbids: for tests)."""
        queue = self._queues.get(link, deque())
        for i, (kind, _, _, payload) in enumerate(queue):
            if kind == "frame":
                del queue[i]
                frame: PgFrame = orjson.loads(payload)
                return frame
        return None

    def _send(self, src: str, peer: NodeId, frame: PgFrame) -> None:
        payload = orjson.dumps(frame)  # first, so that a bad frame always fails loudly
        generation = self._up.get(frozenset((src, peer.name)))
        target = self._endpoints.get(peer.name)
        if (
            generation is None
            or self._views.get((src, peer.name)) != generation
            or target is None
            or target.id != peer
        ):
            return  # the sender will see (or has seen) this connection go down
        self._enqueue((src, peer.name), ("frame", self._endpoints[src].id, generation, payload))

    def _enqueue(self, link: Link, item: _Item) -> None:
        queue = self._queues.get(link)
        if queue is None:
            queue = self._queues[link] = deque()
        queue.append(item)
