"""A topic server's link to another topic server: the copies of topics with history.

Both directions use the same link: this server's requests (a copy, a whole stream, a
takeover) with their answers, and the other server's requests, answered from this server's
`Replication`. Every request gets exactly one answer: the peer's, or, when the link goes
down first, LINK_DOWN (None for a takeover).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from typing import Any

from app.clock import Clock
from app.link import codec
from app.link.codec import (
    Entry,
    LinkAck,
    LinkCopy,
    LinkFrame,
    LinkPg,
    LinkStream,
    LinkTaken,
    LinkTakeover,
)
from app.link.connection import LinkConnection
from topic_server.history import Snapshot
from topic_server.replication import LINK_DOWN, Replication, Taken


class RemotePeer:
    __slots__ = ("_ids", "clock", "link", "on_pg", "replication", "streams", "takeovers")

    def __init__(
        self,
        link: LinkConnection,
        replication: Replication,
        clock: Clock,
        on_pg: Callable[[LinkConnection, Any], None],
    ) -> None:
        self.link = link
        self.replication = replication
        self.clock = clock
        self.on_pg = on_pg
        self.streams: dict[int, Callable[[int], None]] = {}  # copies and streams sent
        self.takeovers: dict[int, Callable[[Taken], None]] = {}
        self._ids = count(1)
        link.on_frame = self.on_frame

    @property
    def name(self) -> str:
        return self.link.peer.name

    @property
    def alive(self) -> bool:
        return not self.link.closed

    # Replication's Peer: requests to the other server.

    def copy(
        self,
        topic: str,
        epoch: str,
        entry: Entry,
        size: int,
        ttl: float,
        done: Callable[[int], None],
    ) -> None:
        if self.link.closed:
            done(LINK_DOWN)
            return
        id = next(self._ids)
        self.streams[id] = done
        self.link.send(codec.copy(id, size, ttl, topic, epoch, entry))

    def stream(self, topic: str, snapshot: Snapshot, done: Callable[[int], None]) -> None:
        if self.link.closed:
            done(LINK_DOWN)
            return
        id = next(self._ids)
        self.streams[id] = done
        s = snapshot
        self.link.send(codec.stream(id, s.last, s.size, s.ttl, topic, s.epoch, s.entries))

    def takeover(self, topic: str, done: Callable[[Taken], None]) -> None:
        if self.link.closed:
            done(None)
            return
        id = next(self._ids)
        self.takeovers[id] = done
        self.link.send(codec.takeover(id, topic))

    # Frames from the other server.

    def on_frame(self, frame: LinkFrame) -> None:
        replication = self.replication
        if isinstance(frame, LinkCopy):
            f = frame
            answer = replication.copied(f.topic, f.epoch, f.entry, f.size, f.ttl, self)
            self.link.send(codec.ack(f.id, answer))
        elif isinstance(frame, LinkAck):
            done = self.streams.pop(frame.id, None)
            if done is not None:
                done(frame.seq)
        elif isinstance(frame, LinkStream):
            snapshot = Snapshot(frame.epoch, frame.last, frame.size, frame.ttl, frame.entries)
            last = replication.streamed(frame.topic, snapshot, self, self.clock.time())
            self.link.send(codec.ack(frame.id, last))
        elif isinstance(frame, LinkTakeover):
            replication.hand_over(frame.topic, self, self._answer(frame.id, frame.topic))
        elif isinstance(frame, LinkTaken):
            taken = self.takeovers.pop(frame.id, None)
            if taken is not None:
                t = frame
                if t.holder:
                    taken(t.holder)
                else:
                    taken(Snapshot(t.epoch, t.last, t.size, t.ttl, t.entries) if t.epoch else None)
        elif isinstance(frame, LinkPg):
            self.on_pg(self.link, frame.frame)
        else:
            raise ValueError(f"{type(frame).__name__} is not a frame between topic servers")

    def _answer(self, id: int, topic: str) -> Callable[[Taken], None]:
        """What tells the other server how its takeover `id` ended."""

        def answer(taken: Taken) -> None:
            if isinstance(taken, str):
                self.link.send(codec.taken(id, topic, holder=taken))
            elif taken is None:
                self.link.send(codec.taken(id, topic))
            else:
                t = taken
                self.link.send(codec.taken(id, topic, t.epoch, t.last, t.size, t.ttl, t.entries))

        return answer

    def fail_all(self) -> None:
        """The link is gone: every request still waiting gets its answer."""
        streams, self.streams = self.streams, {}
        takeovers, self.takeovers = self.takeovers, {}
        for done in streams.values():
            done(LINK_DOWN)
        for taken in takeovers.values():
            taken(None)
