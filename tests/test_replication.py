"""Replication of histories between topic servers, without a network: a model checked by
Hypothesis over publishes, kills, comebacks and every order of the messages between servers.

Servers talk through in-memory peers whose requests and answers wait in queues that the
test delivers one at a time, in any order between pairs (each pair stays in order, as a
link does). The ring is the real one. Publishes go to the topic's owner on the ring of the
live servers, as gateways send them. The property: whatever happens while at most one server is
down at a time, every acknowledged message of a topic stays in the history of the topic's
owner, in one epoch, each at the offset it was acknowledged with; no offset is acknowledged
twice.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from app.counters import Counters
from app.link.codec import Entry
from app.link.interface import Accepted, Delivery, Kept, Recovery
from app.ring import Declared, Ring, RingConfig
from topic_server.history import History, Snapshot
from topic_server.replication import LINK_DOWN, Publish, Replication, Taken
from topic_server.server import TopicServer

NAMES = ("ts-a", "ts-b", "ts-c")
TOPICS = ("t1", "t2", "t3")
CONFIG = RingConfig({n: Declared(n, 1, None) for n in NAMES}, 160, Path("ring.toml"))
SIZE = 1000  # nothing is trimmed in this model


class Network:
    """Ordered queues between every pair of servers, delivered by the test."""

    def __init__(self) -> None:
        self.queues: dict[tuple[str, str], deque[Callable[[], None]]] = {}

    def send(self, src: str, dst: str, step: Callable[[], None]) -> None:
        self.queues.setdefault((src, dst), deque()).append(step)

    def pending(self) -> list[tuple[str, str]]:
        return sorted(pair for pair, queue in self.queues.items() if queue)

    def deliver(self, pair: tuple[str, str]) -> None:
        self.queues[pair].popleft()()

    def cut(self, name: str) -> None:
        """What was on its way to or from `name` is lost with its links."""
        for pair in list(self.queues):
            if name in pair:
                del self.queues[pair]


class Server:
    def __init__(self, name: str, cluster: Cluster) -> None:
        self.name = name
        self.cluster = cluster
        self.history = History(1 << 30, Counters(), lambda: next(cluster.epochs))
        self.peers: dict[str, FakePeer] = {}
        self.replication = Replication(self.history, self.successor, self.peers.get, self.first)

    def first(self, topic: str) -> bool:
        return Ring(CONFIG, [*self.peers, self.name]).owner(topic) == self.name

    def successor(self, topic: str) -> FakePeer | None:
        owner = Ring(CONFIG, self.peers).owner(topic)
        return None if owner is None else self.peers[owner]


class FakePeer:
    """Server `local`'s handle on server `remote`, over the network."""

    def __init__(self, local: Server, remote: Server) -> None:
        self.local = local
        self.remote = remote
        self.up = True
        self.waiting: list[Callable[[], None]] = []  # what to answer if the link goes down

    @property
    def name(self) -> str:
        return self.remote.name

    @property
    def alive(self) -> bool:
        return self.up

    def _request(
        self,
        ask: Callable[[Server, FakePeer], Any],
        answer: Callable[[Any], None],
        failed: Callable[[], None],
    ) -> None:
        if not self.up:
            failed()
            return
        network = self.local.cluster.network
        self.waiting.append(failed)

        def at_remote() -> None:
            back = self.remote.peers[self.local.name]
            result = ask(self.remote, back)

            def at_local() -> None:
                if failed in self.waiting:
                    self.waiting.remove(failed)
                    answer(result)

            network.send(self.remote.name, self.local.name, at_local)

        network.send(self.local.name, self.remote.name, at_remote)

    def copy(
        self,
        topic: str,
        epoch: str,
        entry: Entry,
        size: int,
        ttl: float,
        done: Callable[[int], None],
    ) -> None:
        self._request(
            lambda server, back: server.replication.copied(topic, epoch, entry, size, ttl, back),
            done,
            lambda: done(LINK_DOWN),
        )

    def stream(self, topic: str, snapshot: Snapshot, done: Callable[[int], None]) -> None:
        self._request(
            lambda server, back: server.replication.streamed(topic, snapshot, back, 0.0),
            done,
            lambda: done(LINK_DOWN),
        )

    def takeover(self, topic: str, done: Callable[[Taken], None]) -> None:
        """The remote answers when it can (after its own takeover, maybe): the answer goes
        back over the network then."""
        if not self.up:
            done(None)
            return
        network = self.local.cluster.network
        failed = lambda: done(None)  # noqa: E731
        self.waiting.append(failed)

        def at_remote() -> None:
            back = self.remote.peers[self.local.name]

            def answer(taken: Taken) -> None:
                def at_local() -> None:
                    if failed in self.waiting:
                        self.waiting.remove(failed)
                        done(taken)

                network.send(self.remote.name, self.local.name, at_local)

            self.remote.replication.hand_over(topic, back, answer)

        network.send(self.local.name, self.remote.name, at_remote)

    def down(self) -> None:
        self.up = False
        waiting, self.waiting = self.waiting, []
        for failed in waiting:
            failed()


class Cluster:
    def __init__(self) -> None:
        self.network = Network()
        self.servers: dict[str, Server] = {}
        self.epochs = (f"e{i}" for i in itertools.count(1))

    def start(self, name: str) -> None:
        server = self.servers[name] = Server(name, self)
        for other in self.servers.values():
            if other is not server:
                other.peers[name] = FakePeer(other, server)
                server.peers[other.name] = FakePeer(server, other)
        for each in self.servers.values():
            each.replication.membership_changed()

    def kill(self, name: str) -> None:
        del self.servers[name]
        self.network.cut(name)
        for other in self.servers.values():
            peer = other.peers.pop(name)
            other.replication.membership_changed()
            peer.down()

    def owner(self, topic: str) -> Server:
        name = Ring(CONFIG, self.servers).owner(topic)
        assert name is not None
        return self.servers[name]


class ReplicationModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cluster = Cluster()
        for name in NAMES:
            self.cluster.start(name)
        # topic -> epoch -> offset -> payload, for every acknowledged publish
        self.acked: dict[str, dict[str, dict[int, bytes]]] = {}
        self.sent = 0

    @rule(topic=st.sampled_from(TOPICS))
    def publish(self, topic: str) -> None:
        self.sent += 1
        payload = b"%d" % self.sent

        def ready(entry: Entry, epoch: str) -> None:
            offsets = self.acked.setdefault(topic, {}).setdefault(epoch, {})
            assert entry.offset not in offsets, f"{topic} {epoch}:{entry.offset} acked twice"
            assert entry.payload == payload
            offsets[entry.offset] = payload

        message = Publish(SIZE, 3600.0, 0.0, "ev", False, payload, ready, lambda reason: None)
        self.cluster.owner(topic).replication.publish(topic, message)

    @precondition(lambda self: bool(self.cluster.network.pending()))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        pair = data.draw(st.sampled_from(self.cluster.network.pending()))
        self.cluster.network.deliver(pair)

    @rule()
    def drain(self) -> None:
        self._drain()
        # As a gateway's recovery request would: the owner gets hold of each stream.
        for topic in self.acked:
            self.cluster.owner(topic).replication.read(topic, lambda: None)
        self._drain()
        self.check_nothing_acked_is_lost()

    def _drain(self) -> None:
        for _ in range(100_000):
            pairs = self.cluster.network.pending()
            if not pairs:
                return
            self.cluster.network.deliver(pairs[0])
        raise AssertionError("the servers never stop talking")

    # A server dies only once everything on its way arrived: the model checks what copies
    # promise (a copy at the successor before the ack), not what a lost link can break.
    @precondition(
        lambda self: len(self.cluster.servers) == len(NAMES) and not self.cluster.network.pending()
    )
    @rule(name=st.sampled_from(NAMES))
    def kill(self, name: str) -> None:
        if name in self.cluster.servers:
            self.cluster.kill(name)

    @rule(name=st.sampled_from(NAMES))
    def come_back(self, name: str) -> None:
        if name not in self.cluster.servers:
            self.cluster.start(name)
            self.drain()

    def check_nothing_acked_is_lost(self) -> None:
        for topic, by_epoch in self.acked.items():
            owner = self.cluster.owner(topic)
            stream = owner.history.streams.get(topic)
            kept = {} if stream is None else {e.offset: e.payload for e in stream.entries}
            latest = max(by_epoch, key=lambda epoch: max(by_epoch[epoch]))
            assert stream is not None and stream.epoch == latest, (topic, by_epoch.keys())
            assert len(by_epoch) == 1, f"{topic}: a new epoch although a copy survived"
            assert by_epoch[latest].items() <= kept.items(), topic

    @invariant()
    def offsets_have_no_gaps(self) -> None:
        for server in self.cluster.servers.values():
            for stream in server.history.streams.values():
                offsets = [entry.offset for entry in stream.entries]
                assert offsets == list(range(stream.last - len(offsets) + 1, stream.last + 1))


TestReplication = ReplicationModel.TestCase


class Recorder:
    """A gateway's link, as the topic server sees it: what it was delivered."""

    gateway = "ws-a"

    def __init__(self) -> None:
        self.offsets: list[int] = []

    def deliver(self, delivery: Delivery, exclude: int = 0) -> None:
        assert delivery.position is not None
        self.offsets.append(delivery.position[1])


def test_a_recovery_replays_what_went_out_and_leaves_the_rest_to_come_live() -> None:
    """A message waits for its copy before it is delivered; a recovery answered meanwhile
    stops before it, since the recovering socket, subscribed by then, gets it live."""
    cluster = Cluster()
    cluster.start("ts-a")
    cluster.start("ts-b")
    owner = cluster.owner("t1")
    server = TopicServer(owner.name, Counters(), owner.history, owner.replication)
    gateway = Recorder()
    server.topics.subscribe(gateway, "t1")
    acked: list[int] = []

    def publish() -> None:
        server.publish_kept(
            "t1",
            "ev",
            b"{}",
            False,
            Kept(SIZE, 3600.0),
            lambda outcome: acked.append(outcome.seq if isinstance(outcome, Accepted) else -1),
        )

    def recover(offset: int) -> Recovery:
        answers: list[Recovery] = []
        server.recover("t1", ("e1", offset), SIZE, answers.append)
        (answer,) = answers
        return answer

    publish()
    while cluster.network.pending():  # the copy made: offset 1 delivered and acknowledged
        cluster.network.deliver(cluster.network.pending()[0])
    publish()  # offset 2 waits for its copy
    assert gateway.offsets == [1] and len(acked) == 1
    assert recover(0) == Recovery(True, "e1", 1, owner.history.streams["t1"].snapshot().entries[:1])
    assert recover(1) == Recovery(True, "e1", 1, ())
    while cluster.network.pending():
        cluster.network.deliver(cluster.network.pending()[0])
    assert gateway.offsets == [1, 2] and len(acked) == 2
    assert [e.offset for e in recover(1).entries] == [2]  # gone out now: replayed
