"""The table alone: lock-step of the two views, totality, caches and events."""

from __future__ import annotations

from collections import Counter

from app.pg import Member, NodeId, Subscription
from app.pg.table import GroupTable, Owner

LOCAL, PEER = NodeId("a", "1"), NodeId("b", "1")
a1, a2 = Member("a", "1", 1), Member("a", "1", 2)
b1, b2 = Member("b", "1", 1), Member("b", "1", 2)


def check_lockstep(table: GroupTable) -> None:
    owners: list[Owner] = [table.local, *table.peers.values()]
    for owner in owners:
        for group, ms in owner.groups.items():
            assert ms and table.rows[group][owner.node] is ms
    for group, row in table.rows.items():
        assert row
        for node, ms in row.items():
            owner = table.local if node == LOCAL else table.peers[node]
            assert owner.groups[group] is ms


def events(sub: Subscription) -> list[tuple[str, str, Counter[Member]]]:
    return [(e.kind, e.group, Counter(e.members)) for e in sub.drain()]


def test_add_remove_with_multiplicity_and_no_phantom_groups() -> None:
    t = GroupTable(LOCAL, 1)
    t.add(t.local, "g", [a1, a1, a2])
    assert Counter(t.members("g")) == Counter({a1: 2, a2: 1})
    assert t.remove(t.local, "g", [a1, b1]) == [a1]
    assert t.remove(t.local, "nope", [a1]) == []
    assert t.remove(t.local, "g", [a1, a2]) == [a1, a2]
    assert t.groups() == [] and t.local_groups() == [] and t.members("g") == ()
    check_lockstep(t)


def test_reads_are_cached_and_invalidated() -> None:
    t = GroupTable(LOCAL, 1)
    t.add(t.local, "g", [a1])
    first = t.members("g")
    assert t.members("g") is first and t.local_members("g") == (a1,)
    t.add(t.local, "g", [a2])
    assert Counter(t.members("g")) == Counter([a1, a2])
    assert Counter(t.local_members("g")) == Counter([a1, a2])
    assert t.members("unknown") == () and "unknown" not in t.all_cache


def test_peer_state_is_separate_and_dropped_whole() -> None:
    t = GroupTable(LOCAL, 1)
    peer = t.add_peer(PEER, 1)
    t.add(t.local, "g", [a1])
    t.add(peer, "g", [b1, b1])
    t.add(peer, "h", [b2])
    sub = Subscription("s", None, 100)
    t.subscribe(sub)
    assert t.local_members("g") == (a1,)
    assert Counter(t.members("g")) == Counter({a1: 1, b1: 2})
    t.drop_peer(peer)
    assert PEER not in t.peers and t.groups() == ["g"] and t.members("g") == (a1,)
    assert events(sub) == [("leave", "g", Counter({b1: 2})), ("leave", "h", Counter([b2]))]
    check_lockstep(t)


def test_replace_notifies_the_difference_leaves_first() -> None:
    t = GroupTable(LOCAL, 1)
    peer = t.add_peer(PEER, 1)
    t.replace(peer, {"g": {b1: 2}, "h": {b2: 1}})
    sub = Subscription("s", None, 100)
    t.subscribe(sub)
    t.replace(peer, {"g": {b1: 1, b2: 1}, "h": {b2: 1}, "k": {b1: 1}})
    assert events(sub) == [
        ("leave", "g", Counter([b1])),
        ("join", "g", Counter([b2])),
        ("join", "k", Counter([b1])),
    ]
    t.replace(peer, {"k": {b1: 1}})
    assert events(sub) == [("leave", "g", Counter([b1, b2])), ("leave", "h", Counter([b2]))]
    assert t.groups() == ["k"]
    check_lockstep(t)


def test_group_subscriptions_see_only_their_group_and_can_be_removed() -> None:
    t = GroupTable(LOCAL, 1)
    g_sub, h_sub = Subscription("s", "g", 100), Subscription("s", "h", 100)
    t.subscribe(g_sub)
    t.subscribe(h_sub)
    t.add(t.local, "g", [a1])
    assert events(g_sub) == [("join", "g", Counter([a1]))] and len(h_sub) == 0
    assert t.unsubscribe(g_sub) and not t.unsubscribe(g_sub)
    assert not t.unsubscribe(Subscription("s", None, 1))
    t.add(t.local, "g", [a2])
    assert len(g_sub) == 0


def test_overflowing_subscriber_is_dropped_others_continue() -> None:
    t = GroupTable(LOCAL, 1)
    small, big = Subscription("s", None, 1), Subscription("s", "g", 100)
    t.subscribe(small)
    t.subscribe(big)
    t.add(t.local, "g", [a1])
    t.add(t.local, "g", [a2])
    assert small not in t.scope_subs and len(big) == 2


def test_close_subscriptions() -> None:
    t = GroupTable(LOCAL, 1)
    subs = [Subscription("s", None, 5), Subscription("s", "g", 5)]
    for sub in subs:
        t.subscribe(sub)
    t.close_subscriptions()
    assert not t.scope_subs and not t.group_subs
    assert all(sub.state.value == "closed" for sub in subs)
