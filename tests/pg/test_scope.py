"""The scope state machine alone: inputs in, outbox frames and table state out."""

from __future__ import annotations

from collections import Counter

import pytest

from app.pg import Member, NodeId, Subscription, wire
from app.pg.scope import Scope, ScopeState, UnsupportedVersion
from app.pg.wire import PgFrame, PgFrameError

ME, P, Q = NodeId("me", "i0"), NodeId("p", "i1"), NodeId("q", "i2")
a1, a2 = Member("me", "i0", 1), Member("me", "i0", 2)
p1, p2 = Member("p", "i1", 1), Member("p", "i1", 2)


def new_scope() -> Scope:
    return Scope("s", ME, 7)


def take(scope: Scope) -> list[tuple[NodeId, PgFrame]]:
    out, scope.outbox = scope.outbox, []
    return out


def feed(scope: Scope, peer: NodeId, frame: PgFrame) -> None:
    kind, _, instance = wire.header(frame)
    scope.receive(peer, kind, instance, frame)


def known(scope: Scope, peer: NodeId = P, instance: int = 1) -> Scope:
    feed(scope, peer, wire.sync("s", instance, {}))
    take(scope)
    return scope


def test_start_discovers_every_connected_node_asking_for_a_reply() -> None:
    s = new_scope()
    s.start([P, Q])
    assert take(s) == [
        (P, wire.discover("s", 7, reply=True)),
        (Q, wire.discover("s", 7, reply=True)),
    ]


def test_peer_up_discovers_without_asking_for_a_reply() -> None:
    s = new_scope()
    s.peer_up(P)
    assert take(s) == [(P, wire.discover("s", 7, reply=False))]


def test_discover_is_answered_by_one_sync_and_records_the_peer() -> None:
    s = new_scope()
    s.join("g", [a1, a1])
    feed(s, P, wire.discover("s", 1, reply=False))
    assert take(s) == [(P, ["sync", "s", 7, [["g", [1, 1]]]])]
    assert P in s.table.peers
    feed(s, P, wire.discover("s", 1, reply=False))  # again: just another sync
    assert [f[0] for _, f in take(s)] == ["sync"]


def test_discover_with_reply_draws_a_discover_back() -> None:
    s = new_scope()
    feed(s, P, wire.discover("s", 1, reply=True))
    assert take(s) == [(P, ["sync", "s", 7, []]), (P, wire.discover("s", 7, reply=False))]


def test_unknown_protocol_version_is_rejected_before_anything_changes() -> None:
    s = new_scope()
    with pytest.raises(UnsupportedVersion):
        feed(s, P, ["discover", "s", 1, 99, 0])
    assert take(s) == [] and P not in s.table.peers


def test_sync_records_and_replaces_state() -> None:
    s = new_scope()
    feed(s, P, ["sync", "s", 1, [["g", [1, 1, 2]], ["h", []]]])
    assert Counter(s.table.members("g")) == Counter({p1: 2, p2: 1})
    assert s.table.groups() == ["g"]  # an empty entry makes no group
    feed(s, P, ["sync", "s", 1, [["h", [2]]]])
    assert s.table.groups() == ["h"] and s.table.members("h") == (p2,)
    assert take(s) == []  # a sync is never answered


def test_sync_merges_a_group_listed_twice() -> None:
    s = new_scope()
    feed(s, P, ["sync", "s", 1, [["g", [1]], ["g", [1, 2]]]])
    assert Counter(s.table.members("g")) == Counter({p1: 2, p2: 1})


def test_join_and_leave_from_an_unknown_peer_are_ignored() -> None:
    s = new_scope()
    feed(s, P, wire.join("s", 1, "g", [1]))
    feed(s, P, wire.leave("s", 1, [1], ["g"]))
    assert s.table.groups() == [] and P not in s.table.peers


def test_remote_join_and_leave_with_multiplicity() -> None:
    s = known(new_scope())
    sub = Subscription("s", None, 100)
    s.table.subscribe(sub)
    feed(s, P, wire.join("s", 1, "g", [1, 1, 2]))
    feed(s, P, wire.join("s", 1, "h", [1]))
    feed(s, P, wire.leave("s", 1, [1], ["g", "g", "h", "nope"]))  # an exit: all its groups
    assert s.table.members("g") == (p2,) and s.table.groups() == ["g"]
    assert [(e.kind, e.group, e.members) for e in sub.drain()] == [
        ("join", "g", (p1, p1, p2)),
        ("join", "h", (p1,)),
        ("leave", "g", (p1, p1)),
        ("leave", "h", (p1,)),
    ]


def test_leave_before_sync_is_a_no_op() -> None:
    s = new_scope()
    feed(s, P, wire.discover("s", 1, reply=False))  # recorded with an empty map
    feed(s, P, wire.leave("s", 1, [1, 2], ["g"]))
    assert s.table.groups() == []
    feed(s, P, ["sync", "s", 1, [["g", [2]]]])
    assert s.table.members("g") == (p2,)


def test_scope_down_and_peer_down_forget_the_peer() -> None:
    s = known(new_scope())
    feed(s, P, wire.join("s", 1, "g", [1]))
    feed(s, P, wire.scope_down("s", 1))
    assert s.table.groups() == [] and P not in s.table.peers
    feed(s, P, wire.scope_down("s", 1))  # unknown now: ignored
    known(s)
    feed(s, P, wire.join("s", 1, "g", [1]))
    s.peer_down(P)
    s.peer_down(P)
    assert s.table.groups() == [] and P not in s.table.peers


def test_newer_instance_purges_the_old_run_and_older_frames_are_dropped() -> None:
    s = known(new_scope(), instance=2)
    feed(s, P, wire.join("s", 2, "g", [1]))
    feed(s, P, wire.join("s", 1, "g", [2]))  # stale run: dropped
    assert s.table.members("g") == (p1,)
    feed(s, P, wire.join("s", 3, "g", [2]))  # newer run: old one purged, join from unknown
    assert s.table.groups() == [] and P not in s.table.peers
    feed(s, P, wire.discover("s", 3, reply=False))
    assert s.table.peers[P].instance == 3


def test_local_join_leave_exit_broadcast_to_known_peers_only() -> None:
    s = known(new_scope())
    s.join("g", [a1, a1])
    s.join("h", [a1, a2])
    assert take(s) == [(P, ["join", "s", 7, "g", [1, 1]]), (P, ["join", "s", 7, "h", [1, 2]])]
    assert s.leave("g", [a1, a2])
    assert take(s) == [(P, ["leave", "s", 7, [1], ["g"]])]  # only what was removed
    assert not s.leave("g", [a2]) and take(s) == []
    s.member_exit(a1)
    assert take(s) == [(P, ["leave", "s", 7, [1], ["g", "h"]])]
    s.member_exit(a1)  # stale notice
    assert take(s) == [] and s.memberships == {a2: ("h",)}


def test_exit_event_granularity_one_event_per_group() -> None:
    s = new_scope()
    s.join("g", [a1, a1])
    s.join("h", [a1])
    sub = Subscription("s", None, 100)
    s.table.subscribe(sub)
    s.member_exit(a1)
    assert [(e.kind, e.group, e.members) for e in sub.drain()] == [
        ("leave", "g", (a1, a1)),
        ("leave", "h", (a1,)),
    ]


def test_digest_match_is_quiet_mismatch_or_unknown_asks_for_a_sync() -> None:
    s = known(new_scope())
    feed(s, P, wire.join("s", 1, "g", [1]))
    good = wire.digest({"g": {p1: 1}})
    feed(s, P, wire.digest_frame("s", 1, good))
    assert take(s) == []
    feed(s, P, wire.digest_frame("s", 1, wire.digest({})))
    assert take(s) == [(P, wire.discover("s", 7, reply=False))]
    feed(s, Q, wire.digest_frame("s", 1, good))
    assert take(s) == [(Q, wire.discover("s", 7, reply=False))]


def test_send_digests_carries_the_local_digest() -> None:
    s = new_scope()
    s.join("g", [a1])
    s.send_digests([P])
    assert take(s) == [(P, wire.digest_frame("s", 7, wire.digest({"g": {a1: 1}})))]


def test_stop_tells_every_connected_node_and_closes_subscriptions() -> None:
    s = new_scope()
    sub = Subscription("s", None, 10)
    s.table.subscribe(sub)
    s.stop([P, Q])
    assert take(s) == [(P, wire.scope_down("s", 7)), (Q, wire.scope_down("s", 7))]
    assert s.state is ScopeState.STOPPED and sub.state.value == "closed"


def test_malformed_and_unknown_frames_raise_frame_error_without_change() -> None:
    s = known(new_scope())
    with pytest.raises(PgFrameError):
        feed(s, P, ["bogus", "s", 1])
    with pytest.raises(PgFrameError):
        feed(s, P, ["sync", "s", 1, [["g", [1]], ["h", ["x"]]]])
    assert s.table.groups() == []
    assert "Scope 's' #7" in repr(s)
