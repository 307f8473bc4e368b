"""Protocol scenarios between real nodes over the in-memory network (OTP pg_SUITE style)."""

from __future__ import annotations

from collections import Counter

from app.pg import Member, Node, Subscription, wire
from tests.pg.conftest import Cluster


def view(node: Node, scope: str, group: str) -> Counter[Member]:
    return Counter(node.get_members(scope, group))


def folded(
    snapshot: dict[str, tuple[Member, ...]], sub: Subscription
) -> dict[str, Counter[Member]]:
    state = {g: Counter(ms) for g, ms in snapshot.items()}
    for event in sub.drain():
        c = state.setdefault(event.group, Counter())
        if event.kind == "join":
            c.update(event.members)
        else:
            c.subtract(event.members)
    return {g: +c for g, c in state.items() if +c}


def current(node: Node, scope: str) -> dict[str, Counter[Member]]:
    return {g: view(node, scope, g) for g in node.which_groups(scope)}


def test_join_before_and_after_connect(cluster: Cluster) -> None:
    a, b = cluster.node("a", "s"), cluster.node("b", "s")
    early = a.spawn_member().member
    a.join("s", "g", [early, early])
    cluster.connect("a", "b")
    assert view(b, "s", "g") == Counter({early: 2})
    late = b.spawn_member().member
    b.join("s", "g", late)
    cluster.drain()
    assert view(a, "s", "g") == view(b, "s", "g") == Counter({early: 2, late: 1})
    assert a.get_local_members("s", "g") == (early, early)


def test_one_sync_per_side_when_both_scopes_run_at_connect(cluster: Cluster) -> None:
    a, b = cluster.node("a", "s"), cluster.node("b", "s")
    a.join("s", "g", a.spawn_member().member)
    kinds: list[str] = []
    orig = b.receive

    def spy(peer, frame):  # type: ignore[no-untyped-def]
        kinds.append(frame[0])
        orig(peer, frame)

    b.receive = spy  # type: ignore[method-assign]
    cluster.connect("a", "b")
    assert kinds == ["discover", "sync"]
    assert len(b.get_members("s", "g")) == 1


def test_scope_started_after_connect_discovers_with_reply(cluster: Cluster) -> None:
    a, b = cluster.node("a", "s"), cluster.node("b")
    a.join("s", "g", a.spawn_member().member)
    cluster.connect("a", "b")  # b has no scope yet: a's discover is dropped
    b.start_scope("s")
    bm = b.spawn_member().member
    b.join("s", "g", bm)
    cluster.drain()
    assert len(view(a, "s", "g")) == len(view(b, "s", "g")) == 2


def test_peer_down_and_reconnect(cluster: Cluster) -> None:
    a, b = cluster.node("a", "s"), cluster.node("b", "s")
    bm = b.spawn_member().member
    b.join("s", "g", bm)
    cluster.connect("a", "b")
    sub, snap = a.monitor_scope("s")
    cluster.net.disconnect("a", "b")
    cluster.drain()
    assert a.which_groups("s") == [] and b.get_members("s", "g") == (bm,)
    b.leave("s", "g", bm)  # while apart
    b.join("s", "h", bm)
    cluster.net.connect("a", "b")
    cluster.drain()
    assert a.which_groups("s") == ["h"] and a.get_members("s", "h") == (bm,)
    assert folded(snap, sub) == current(a, "s")


def test_node_restart_with_a_new_incarnation(cluster: Cluster) -> None:
    a, b = cluster.node("a", "s"), cluster.node("b", "s")
    old = b.spawn_member().member
    b.join("s", "g", old)
    cluster.connect("a", "b")
    cluster.kill("b")
    b2 = cluster.node("b", "s")
    new = b2.spawn_member().member
    assert new.local_id == old.local_id and new != old
    b2.join("s", "g", new)
    cluster.net.connect("a", "b")
    cluster.drain()
    assert a.get_members("s", "g") == (new,)


def test_restart_seen_before_the_old_link_is_noticed(cluster: Cluster) -> None:
    """A kill -9 and a quick restart: the new incarnation's peer_up comes first."""
    a, b = cluster.node("a", "s"), cluster.node("b", "s")
    old_b = b.id
    b.join("s", "g", b.spawn_member().member)
    cluster.connect("a", "b")
    b2 = Node("b", cluster.net.transport("b"))
    b2.start_scope("s")
    new = b2.spawn_member().member
    b2.join("s", "g", new)
    a.peer_up(b2.id)  # as a real link would report the new connection
    assert a.which_groups("s") == []  # the old incarnation is purged at once
    a.receive(old_b, ["sync", "s", 1, [["g", [1]]]])  # a late frame of the old run
    a.peer_down(old_b)  # and the old link's late peer_down
    assert a.which_groups("s") == []
    a.receive(b2.id, ["sync", "s", 1, [["g", [new.local_id]]]])
    assert a.get_members("s", "g") == (new,)


def test_overlapping_scopes_are_independent(cluster: Cluster) -> None:
    a, b, c = cluster.node("a", "s1"), cluster.node("b", "s1", "s2"), cluster.node("c", "s2")
    am, bm, cm = (n.spawn_member().member for n in (a, b, c))
    a.join("s1", "g", am)
    b.join("s1", "g", bm)
    b.join("s2", "g", bm)
    c.join("s2", "g", cm)
    cluster.connect("a", "b", "c")
    assert view(a, "s1", "g") == view(b, "s1", "g") == Counter([am, bm])
    assert view(c, "s2", "g") == view(b, "s2", "g") == Counter([bm, cm])
    assert a.get_members("s2", "g") == () and c.get_members("s1", "g") == ()
    b.stop_scope("s2")
    cluster.drain()
    assert view(c, "s2", "g") == Counter([cm]) and view(a, "s1", "g") == Counter([am, bm])


def test_views_are_not_transitive(cluster: Cluster) -> None:
    a, b, c = (cluster.node(n, "s") for n in "abc")
    for n in (a, b, c):
        n.join("s", "g", n.spawn_member().member)
    cluster.connect("a", "b")
    cluster.connect("b", "c")
    assert len(b.get_members("s", "g")) == 3
    assert {m.node for m in a.get_members("s", "g")} == {"a", "b"}
    assert {m.node for m in c.get_members("s", "g")} == {"b", "c"}


def test_scope_restart_loses_local_members_keeps_remote(cluster: Cluster) -> None:
    """OTP scope_restart."""
    a, b = cluster.node("a", "s"), cluster.node("b", "s")
    am, bm = a.spawn_member().member, b.spawn_member().member
    a.join("s", "g", am)
    b.join("s", "g", bm)
    cluster.connect("a", "b")
    a.stop_scope("s")
    a.start_scope("s")
    cluster.drain()
    assert a.get_members("s", "g") == (bm,) and a.get_local_members("s", "g") == ()
    assert b.get_members("s", "g") == (bm,)
    a.join("s", "g", am)
    cluster.drain()
    assert view(b, "s", "g") == Counter([am, bm])


def test_graceful_node_stop_tells_peers_before_the_link_drops(cluster: Cluster) -> None:
    a, b = cluster.node("a", "s"), cluster.node("b", "s")
    b.join("s", "g", b.spawn_member().member)
    cluster.connect("a", "b")
    b.close()
    cluster.drain()
    assert a.which_groups("s") == []
    assert cluster.net.connected("a", "b")  # the link is up, the scope is gone


def test_forced_bogus_sync_then_real_sync(cluster: Cluster) -> None:
    """OTP forced_sync: an out-of-band sync for a known peer, then the real one."""
    a, b = cluster.node("a", "s"), cluster.node("b", "s")
    bm = b.spawn_member().member
    b.join("s", "g", bm)
    b.join("s", "h", [bm, bm])
    cluster.connect("a", "b")
    sub, snap = a.monitor_scope("s")
    bogus = ["sync", "s", 1, [["g", [bm.local_id, 999]], ["x", [5]]]]
    a.receive(b.id, bogus)
    assert Counter(m.local_id for m in a.get_members("s", "g")) == Counter([bm.local_id, 999])
    assert a.get_members("s", "h") == ()
    a.receive(b.id, wire.discover("s", 1, reply=False))  # any exchange: a answers...
    b.receive(a.id, wire.discover("s", 1, reply=False))  # ...and b re-syncs for real
    cluster.drain()
    assert current(a, "s") == {"g": Counter([bm]), "h": Counter({bm: 2})}
    assert folded(snap, sub) == current(a, "s")


def test_leave_before_sync_window(cluster: Cluster) -> None:
    """b records a on a's discover; a's leave reaches b before a's sync does."""
    a, b = cluster.node("a"), cluster.node("b", "s")
    am = a.spawn_member().member
    cluster.connect("a", "b")
    a.start_scope("s")  # discover(reply) to b
    cluster.net.deliver_one(("a", "b"))  # b: sync to a, discover back, a recorded (empty)
    cluster.net.deliver_one(("b", "a"))  # a: b's sync -> b known to a
    a.join("s", "g", am)  # to b, ahead of a's sync
    a.leave("s", "g", am)
    a.join("s", "h", am)
    assert [wire.header(f)[0] for f in cluster.net.peek(("a", "b"))] == ["join", "leave", "join"]
    cluster.net.deliver_one(("a", "b"))
    cluster.net.deliver_one(("a", "b"))
    assert b.which_groups("s") == []
    cluster.drain()
    assert b.which_groups("s") == ["h"] and b.get_members("s", "h") == (am,)


def test_nodeup_for_self_is_ignored(cluster: Cluster) -> None:
    a = cluster.node("a", "s")
    am = a.spawn_member().member
    a.join("s", "g", am)
    a.peer_up(a.id)
    cluster.drain()
    assert a.get_members("s", "g") == (am,)


def test_member_exit_is_one_leave_frame_per_scope(cluster: Cluster) -> None:
    a, b = cluster.node("a", "s", "t"), cluster.node("b", "s", "t")
    cluster.connect("a", "b")
    h = a.spawn_member()
    a.join("s", "g", [h.member, h.member])
    a.join("s", "h", h.member)
    a.join("t", "g", h.member)
    cluster.drain()
    h.exit()
    frames = cluster.net.peek(("a", "b"))
    assert frames == [
        ["leave", "s", 1, [h.member.local_id], ["g", "g", "h"]],
        ["leave", "t", 1, [h.member.local_id], ["g"]],
    ]
    cluster.drain()
    assert b.which_groups("s") == [] and b.which_groups("t") == []


def test_remote_subscriber_replays_the_view_through_churn(cluster: Cluster) -> None:
    a, b = cluster.node("a", "s"), cluster.node("b", "s")
    sub, snap = b.monitor_scope("s")
    gsub, gsnap = b.monitor("s", "g")
    handles = [a.spawn_member() for _ in range(3)]
    cluster.connect("a", "b")
    for h in handles:
        a.join("s", "g", [h.member, h.member])
    a.leave("s", "g", handles[0].member)
    handles[1].exit()
    cluster.drain()
    cluster.net.disconnect("a", "b")
    cluster.net.connect("a", "b")
    cluster.drain()
    assert folded(snap, sub) == current(b, "s")
    assert folded({"g": gsnap}, gsub) == current(b, "s")
