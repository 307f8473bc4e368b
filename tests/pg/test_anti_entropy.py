"""Anti-entropy: digests heal divergence left by frames the network lost."""

from __future__ import annotations

from collections import Counter

from app.pg import Member, Node
from tests.pg.conftest import Cluster


def view(node: Node, group: str) -> Counter[Member]:
    return Counter(node.get_members("s", group))


def heal(cluster: Cluster) -> None:
    for node in cluster.nodes.values():
        node.send_digests()
    cluster.drain()


def test_lost_join_is_repaired(cluster: Cluster) -> None:
    a, b = cluster.node("a", "s"), cluster.node("b", "s")
    cluster.connect("a", "b")
    am = a.spawn_member().member
    a.join("s", "g", [am, am])
    assert cluster.net.drop_frame(("a", "b")) == ["join", "s", 1, "g", [1, 1]]
    cluster.drain()
    assert b.which_groups("s") == []
    heal(cluster)
    assert view(b, "g") == Counter({am: 2})


def test_lost_leave_and_exit_are_repaired(cluster: Cluster) -> None:
    a, b = cluster.node("a", "s"), cluster.node("b", "s")
    cluster.connect("a", "b")
    stays, goes = a.spawn_member(), a.spawn_member()
    a.join("s", "g", [stays.member, goes.member])
    a.join("s", "h", stays.member)
    cluster.drain()
    a.leave("s", "h", stays.member)
    goes.exit()
    assert cluster.net.drop_frame(("a", "b")) is not None
    assert cluster.net.drop_frame(("a", "b")) is not None
    cluster.drain()
    assert len(b.get_members("s", "g")) == 2 and b.get_members("s", "h") == (stays.member,)
    sub, _ = b.monitor_scope("s")
    heal(cluster)
    assert b.which_groups("s") == ["g"] and b.get_members("s", "g") == (stays.member,)
    assert sorted((e.kind, e.group) for e in sub.drain()) == [("leave", "g"), ("leave", "h")]


def test_lost_handshake_is_repaired(cluster: Cluster) -> None:
    a, b = cluster.node("a", "s"), cluster.node("b", "s")
    am, bm = a.spawn_member().member, b.spawn_member().member
    a.join("s", "g", am)
    b.join("s", "g", bm)
    cluster.net.connect("a", "b")
    cluster.net.deliver_one(("a", "b"))
    cluster.net.deliver_one(("b", "a"))  # both peer_ups: discovers queued
    assert cluster.net.drop_frame(("a", "b")) is not None
    assert cluster.net.drop_frame(("b", "a")) is not None
    cluster.drain()
    assert a.get_members("s", "g") == (am,) and b.get_members("s", "g") == (bm,)
    heal(cluster)
    assert view(a, "g") == view(b, "g") == Counter([am, bm])


def test_agreeing_digests_draw_no_sync(cluster: Cluster) -> None:
    a, b = cluster.node("a", "s"), cluster.node("b", "s")
    a.join("s", "g", a.spawn_member().member)
    cluster.connect("a", "b")
    a.send_digests()
    b.send_digests()
    frames = cluster.net.peek(("a", "b")) + cluster.net.peek(("b", "a"))
    assert [f[0] for f in frames] == ["digest", "digest"]
    cluster.drain()
    assert cluster.net.pending() == []  # no discover, hence no sync, went out


def test_digest_to_a_node_without_the_scope_is_dropped(cluster: Cluster) -> None:
    a = cluster.node("a", "s")
    cluster.node("b")
    cluster.connect("a", "b")
    a.send_digests()
    cluster.drain()
    assert cluster.net.pending() == []
