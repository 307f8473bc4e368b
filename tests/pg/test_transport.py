"""The in-memory network keeps the transport contract and lets tests pick interleavings."""

from __future__ import annotations

import pytest

from app.pg import NodeId
from app.pg.wire import PgFrame
from tests.pg.network import MemoryNetwork


class Probe:
    """An endpoint that records what reaches it."""

    def __init__(self, net: MemoryNetwork, name: str, incarnation: str = "1") -> None:
        self._id = NodeId(name, incarnation)
        self.transport = net.transport(name)
        self.log: list[tuple[str, str, object]] = []
        net.attach(self)

    @property
    def id(self) -> NodeId:
        return self._id

    def peer_up(self, peer: NodeId) -> None:
        self.log.append(("up", peer.incarnation, None))

    def peer_down(self, peer: NodeId) -> None:
        self.log.append(("down", peer.incarnation, None))

    def receive(self, peer: NodeId, frame: PgFrame) -> None:
        self.log.append(("frame", peer.incarnation, frame))


def test_connect_deliver_in_order_and_disconnect() -> None:
    net = MemoryNetwork()
    a, b = Probe(net, "a"), Probe(net, "b")
    net.connect("a", "b")
    assert net.connected("a", "b") and net.connected("b", "a")
    assert sorted(net.pending()) == [("a", "b"), ("b", "a")]
    net.deliver_one(("a", "b"))
    a.transport.send(b.id, ["x"])  # a has not seen its peer_up yet: not sent
    net.deliver_one(("b", "a"))
    a.transport.send(b.id, ["one"])
    a.transport.send(b.id, ["two"])
    assert net.drain() == 2
    assert b.log == [("up", "1", None), ("frame", "1", ["one"]), ("frame", "1", ["two"])]
    assert net.deliver_one(("a", "b")) is False
    net.disconnect("a", "b")
    net.drain()
    assert a.log[-1] == ("down", "1", None) and b.log[-1] == ("down", "1", None)


def test_frames_in_flight_are_lost_with_the_connection() -> None:
    net = MemoryNetwork()
    a, b = Probe(net, "a"), Probe(net, "b")
    net.connect("a", "b")
    net.drain()
    a.transport.send(b.id, ["lost"])
    net.disconnect("a", "b")
    a.transport.send(b.id, ["after"])  # a has not seen its peer_down: discarded
    net.connect("a", "b")
    net.drain()
    assert [e[0] for e in b.log] == ["up", "down", "up"]


def test_frame_sent_on_a_stale_view_is_discarded() -> None:
    net = MemoryNetwork()
    a, b = Probe(net, "a"), Probe(net, "b")
    net.connect("a", "b")
    net.drain()
    net.disconnect("a", "b")
    net.connect("a", "b")
    net.deliver_one(("a", "b"))  # b sees down
    net.deliver_one(("a", "b"))  # b sees up of the new connection
    b.transport.send(a.id, ["late"])  # b's view: new generation. a still on the old one
    a.transport.send(b.id, ["stale"])
    net.drain()
    assert ("frame", "1", ["stale"]) not in b.log
    assert a.log[-1] == ("frame", "1", ["late"])


def test_detach_is_a_kill_and_a_new_incarnation_can_attach() -> None:
    net = MemoryNetwork()
    a, b = Probe(net, "a"), Probe(net, "b")
    net.connect("a", "b")
    net.drain()
    b.transport.send(a.id, ["in flight"])
    net.detach("b")
    assert not net.connected("a", "b")
    b2 = Probe(net, "b", "2")
    net.connect("a", "b")
    net.drain()
    assert a.log[-2:] == [("down", "1", None), ("up", "2", None)]
    a.transport.send(b.id, ["to the old run"])  # discarded: b is now another incarnation
    a.transport.send(b2.id, ["to the new run"])
    net.drain()
    assert b2.log == [("up", "1", None), ("frame", "1", ["to the new run"])]
    assert net.endpoint("b") is b2


def test_drop_frame_and_errors() -> None:
    net = MemoryNetwork()
    a, b = Probe(net, "a"), Probe(net, "b")
    with pytest.raises(ValueError):
        Probe(net, "a")
    with pytest.raises(ValueError):
        net.disconnect("a", "b")
    net.connect("a", "b")
    with pytest.raises(ValueError):
        net.connect("a", "b")
    with pytest.raises(ValueError):
        net.connect("a", "a")
    net.drain()
    a.transport.send(b.id, ["dropped"])
    a.transport.send(b.id, ["kept"])
    assert net.drop_frame(("a", "b")) == ["dropped"]
    assert net.drop_frame(("b", "a")) is None
    net.drain()
    assert b.log[-1] == ("frame", "1", ["kept"])
    with pytest.raises(TypeError):
        a.transport.send(b.id, [object()])  # not JSON: fails loudly


def test_drain_detects_a_livelock() -> None:
    net = MemoryNetwork()

    class Echo(Probe):
        def receive(self, peer: NodeId, frame: PgFrame) -> None:
            self.transport.send(peer, frame)

    a, b = Echo(net, "a"), Echo(net, "b")
    net.connect("a", "b")
    net.drain()
    a.transport.send(b.id, ["ping"])
    with pytest.raises(RuntimeError, match="not quiet"):
        net.drain(max_items=100)
