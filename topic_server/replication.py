"""Who holds a topic's history, and the rule that nothing acknowledged is lost with its owner.

Topics with history are numbered by their owner (`topic_server.history`), and each message
is copied to the topic's *successor*, the topic server that owns the topic on the ring when
this one is not there, before the owner delivers it and acknowledges the publish. So when
the owner dies, the server the gateways move the topic to is the one that holds its copy,
and it goes on in the same epoch with the next offset: no acknowledged message is lost.

Per topic, a server is in one of these states:

    owner      it numbers the topic's messages; `copy_at` is the successor whose copy is
               complete (a new successor first gets the whole stream, then each message)
    copy       it holds the copy its `source` sends
    fenced     it handed the topic over to `fenced[topic]`, which has not gone down since:
               a publish that still reaches it is refused ("moved"), never numbered twice

A server that is not the owner and gets a publish takes the topic over first: from its
source, or else from the server that owns the topic without it (its successor: where the
history lives when this server has just come back). A server asked for a topic it does not
own points at the one it knows owns it (its source, or whom it handed the topic to), and
the asker follows; one that is itself taking the topic over answers once it owns it. A
read (a recovery) of a topic this server has no stream of takes it over too, so that the
owner gateways ask can always answer. The old holder delivers what it has
numbered, stops numbering the topic, and answers with the whole stream; the new owner
installs it and goes on. Without anybody to take over from, the new owner goes on with its
own copy, or starts a new epoch (the history was lost). Publishes that arrive during a
takeover wait, in order.

Peers are the other topic servers over node links (`topic_server.remote_peer`); the ring
and the links are the node's (`topic_server.node`). Everything here is synchronous: a
peer's answer comes back as a call (`ok`: the copy's offset; 0: "send me the whole
stream"; -1: the peer went down).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import NamedTuple, Protocol

from app.link.codec import Entry
from topic_server.history import History, Snapshot

LINK_DOWN = -1
WANTS_STREAM = 0

# A message numbered and copied: what the server does next (deliver it, acknowledge it).
Ready = Callable[[Entry, str], None]


class Peer(Protocol):
    """Another topic server, as replication uses it."""

    @property
    def name(self) -> str: ...

    @property
    def alive(self) -> bool: ...

    def copy(
        self,
        topic: str,
        epoch: str,
        entry: Entry,
        size: int,
        ttl: float,
        done: Callable[[int], None],
    ) -> None:
        """Send one message of a stream; `done(offset)`, or WANTS_STREAM, or LINK_DOWN."""
        ...

    def stream(self, topic: str, snapshot: Snapshot, done: Callable[[int], None]) -> None:
        """Send a whole stream; `done(last)`, or LINK_DOWN."""
        ...

    def takeover(self, topic: str, done: Callable[[Taken], None]) -> None:
        """Ask for the topic; `done(its stream)`, or the name of the server to ask instead,
        or None (it had none, or went down)."""
        ...


# The answer to a takeover: the stream, or the name of the server that owns the topic, or
# None (nobody has a stream of it there, or the link went down).
Taken = Snapshot | str | None


class HandOver(NamedTuple):
    """A takeover asked by `to`, answered once this server's own takeover is done."""

    to: Peer
    answer: Callable[[Taken], None]


class Held(NamedTuple):
    """A publish that waits: for its copy to be acknowledged, or for a takeover."""

    entry: Entry | None
    ready: Ready


class Publish(NamedTuple):
    size: int
    ttl: float
    at: float
    event: str
    binary: bool
    payload: bytes
    ready: Ready
    refuse: Callable[[str], None]


class Replication:
    def __init__(
        self,
        history: History,
        successor: Callable[[str], Peer | None],
        peer: Callable[[str], Peer | None],
        first: Callable[[str], bool],
    ) -> None:
        self.history = history
        self.successor = successor  # the server that owns a topic when this one is gone
        self.peer = peer  # a linked server, by name
        self.first = first  # whether this server owns a topic on the ring of the live ones
        self.owned: set[str] = set()
        self.copy_at: dict[str, Peer] = {}  # owned topic -> the successor with a full copy
        self.waiting: dict[str, deque[Held]] = {}  # owned topic -> messages awaiting copy
        self.source: dict[str, Peer] = {}  # copied topic -> the owner sending it
        self.fenced: dict[str, Peer] = {}  # topic handed over -> to whom
        # topic -> the publishes, reads and hand-overs that wait for its takeover
        self.takeovers: dict[str, list[Publish | HandOver | Callable[[], None]]] = {}

    # The owner's side.

    def publish(self, topic: str, publish: Publish) -> None:
        """Number, copy and then `ready` a message; or `refuse` it (the topic moved)."""
        held = self.takeovers.get(topic)
        if held is not None:
            held.append(publish)
            return
        if topic not in self.owned:
            holder = self.fenced.get(topic)
            if holder is not None and holder.alive:
                publish.refuse(f"topic moved to {holder.name}")
                return
            if self._take_over(topic, publish):
                return
            self._own(topic)
        entry = self.history.append(
            topic,
            publish.size,
            publish.ttl,
            publish.at,
            publish.event,
            publish.binary,
            publish.payload,
        )
        stream = self.history.streams[topic]
        successor = self.successor(topic)
        if successor is None:
            publish.ready(entry, stream.epoch)
            return
        self.waiting.setdefault(topic, deque()).append(Held(entry, publish.ready))
        if self.copy_at.get(topic) is successor:
            done = self._copied(topic, successor)
            successor.copy(topic, stream.epoch, entry, publish.size, publish.ttl, done)
        else:
            self._send_stream(topic, successor)

    def read(self, topic: str, then: Callable[[], None]) -> None:
        """Call `then` once this server holds the topic's stream, if anybody does: a topic
        it has no stream of is taken over first."""
        held = self.takeovers.get(topic)
        if held is not None:
            held.append(then)
        elif (
            topic in self.owned or topic in self.history.streams or not self._take_over(topic, then)
        ):
            then()

    def released(self, topic: str) -> int | None:
        """The offset up to which the messages of an owned topic have gone on (delivered
        and acknowledged); None when none waits for its copy."""
        waiting = self.waiting.get(topic)
        if not waiting:
            return None
        first = waiting[0].entry
        assert first is not None
        return first.offset - 1

    def _take_over(self, topic: str, first: Publish | Callable[[], None]) -> bool:
        """Ask the topic's holder for it, `first` waiting meanwhile; False when there is
        nobody to ask."""
        source = self.source.get(topic) or self.successor(topic)
        if source is None or not source.alive:
            return False
        self.takeovers[topic] = [first]
        self._ask(topic, source, {source.name})
        return True

    def _ask(self, topic: str, holder: Peer, asked: set[str]) -> None:
        def done(taken: Taken) -> None:
            if isinstance(taken, str):  # follow the pointer, once per server
                following = self.peer(taken)
                if following is not None and following.alive and taken not in asked:
                    self._ask(topic, following, asked | {taken})
                    return
                taken = None
            self._taken(topic, taken)

        holder.takeover(topic, done)

    def membership_changed(self) -> None:
        """Servers came or went. The copy of a topic whose owner went away, held where the
        ring now puts the topic, is the topic: this server owns it at once (so that a
        second copy exists again now, not at the next publish). A topic whose successor
        changed sends it the whole stream."""
        for topic, source in list(self.source.items()):
            held = topic in self.history.streams and topic not in self.takeovers
            if held and not source.alive and topic not in self.owned and self.first(topic):
                self._own(topic)
        for topic in list(self.owned):
            successor = self.successor(topic)
            if successor is not self.copy_at.get(topic) and topic in self.history.streams:
                if successor is None:
                    self.copy_at.pop(topic, None)
                    self._release(topic, None)
                else:
                    self._send_stream(topic, successor)

    def _own(self, topic: str) -> None:
        self.owned.add(topic)
        self.fenced.pop(topic, None)
        self.source.pop(topic, None)

    def _send_stream(self, topic: str, peer: Peer) -> None:
        self.copy_at[topic] = peer
        peer.stream(topic, self.history.streams[topic].snapshot(), self._copied(topic, peer))

    def _copied(self, topic: str, peer: Peer) -> Callable[[int], None]:
        def done(offset: int) -> None:
            if self.copy_at.get(topic) is not peer or topic not in self.owned:
                return  # a copy to a former successor: the current one decides
            if offset > 0:
                self._release(topic, offset)
                return
            del self.copy_at[topic]
            successor = self.successor(topic)
            if successor is None:  # alone now: nobody to hold a copy
                self._release(topic, None)
            else:
                self._send_stream(topic, successor)

        return done

    def _release(self, topic: str, upto: int | None) -> None:
        """The messages now copied (up to offset `upto`; all: None) go on."""
        waiting = self.waiting.get(topic)
        if not waiting:
            return
        epoch = self.history.streams[topic].epoch
        while waiting:
            held = waiting[0]
            assert held.entry is not None
            if upto is not None and held.entry.offset > upto:
                break
            waiting.popleft()
            held.ready(held.entry, epoch)
        if not waiting:
            del self.waiting[topic]

    def _taken(self, topic: str, snapshot: Snapshot | None) -> None:
        waiting = self.takeovers.pop(topic, [])
        if snapshot is not None:
            at = next((w.at for w in waiting if isinstance(w, Publish)), 0.0)
            self.history.install(topic, snapshot, at)
        self._own(topic)
        for step in waiting:  # in the order they came: after a hand-over, publishes move
            if isinstance(step, Publish):
                self.publish(topic, step)
            elif isinstance(step, HandOver):
                self.hand_over(topic, step.to, step.answer)
            else:
                step()

    # The other side: copies, and topics taken over by another server.

    def hand_over(self, topic: str, to: Peer, answer: Callable[[Taken], None]) -> None:
        """`to` takes the topic over. The owner answers with the whole stream: what it
        numbered goes on (`to` will hold it), and nothing more is numbered here. A server
        that knows of a live owner elsewhere points at it; one taking the topic over itself
        answers once it owns it; any other hands over what it has."""
        waiting = self.takeovers.get(topic)
        if waiting is not None:
            waiting.append(HandOver(to, answer))
            return
        if topic in self.owned:
            self.owned.discard(topic)
            self._release(topic, None)
            self.copy_at.pop(topic, None)
        else:
            for holder in (self.source.get(topic), self.fenced.get(topic)):
                if holder is not None and holder is not to and holder.alive:
                    answer(holder.name)
                    return
        self.fenced[topic] = to
        self.source[topic] = to
        stream = self.history.streams.get(topic)
        answer(None if stream is None else stream.snapshot())

    def copied(
        self, topic: str, epoch: str, entry: Entry, size: int, ttl: float, sender: Peer
    ) -> int:
        """A message of a topic `sender` owns; its offset, or WANTS_STREAM."""
        self._yield(topic, sender)
        return entry.offset if self.history.add(topic, epoch, entry, size, ttl) else WANTS_STREAM

    def streamed(self, topic: str, snapshot: Snapshot, sender: Peer, now: float) -> int:
        """The whole stream of a topic `sender` owns; its last offset."""
        self._yield(topic, sender)
        self.history.install(topic, snapshot, now)
        return snapshot.last

    def _yield(self, topic: str, owner: Peer) -> None:
        # Two owners at once (the ring moved under a partition): the one that sends copies
        # wins, and what this one numbered meanwhile goes on to its subscribers.
        if topic in self.owned:
            self.owned.discard(topic)
            self._release(topic, None)
            self.copy_at.pop(topic, None)
        self.source[topic] = owner
