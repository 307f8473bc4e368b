"""The node API, call by call, with every return value and error."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.pg import (
    Member,
    MemberHandle,
    Node,
    NodeId,
    NoScopeError,
    NotLocalError,
    Subscription,
    wire,
)
from app.pg.wire import PgFrame, PgFrameError
from tests.pg.frames import arrived, nested_json, pg_frames


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[NodeId, PgFrame]] = []
        self.on_send: Callable[[PgFrame], object] = lambda frame: None

    def send(self, peer: NodeId, frame: PgFrame) -> None:
        self.sent.append((peer, frame))
        self.on_send(frame)

    def take(self) -> list[tuple[NodeId, PgFrame]]:
        out, self.sent = self.sent, []
        return out


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def node(rec: Recorder) -> Node:
    n = Node("a", rec, "inc-a")
    n.start_scope("s")
    return n


P = NodeId("b", "inc-b")


def test_identity() -> None:
    n = Node("a", Recorder())
    assert n.id.name == "a" and len(n.id.incarnation) == 16
    assert Node("a", Recorder(), "x").id == NodeId("a", "x")
    assert "Node a" in repr(n)


def test_start_and_stop_scope(node: Node) -> None:
    assert node.start_scope("s") == "already_started"
    assert node.start_scope("t") == "ok"
    assert sorted(node.scopes()) == ["s", "t"]
    assert node.stop_scope("t") == "ok"
    with pytest.raises(NoScopeError, match="no such process"):
        node.stop_scope("t")
    with pytest.raises(TypeError):
        node.start_scope(1)  # type: ignore[arg-type]


def test_stopped_scope_refuses_writes_and_reads_empty(node: Node) -> None:
    m = node.spawn_member().member
    node.join("s", "g", m)
    node.stop_scope("s")
    for call in (
        lambda: node.join("s", "g", m),
        lambda: node.leave("s", "g", m),
        lambda: node.monitor_scope("s"),
        lambda: node.monitor("s", "g"),
    ):
        with pytest.raises(NoScopeError):
            call()
    assert node.get_members("s", "g") == () and node.get_local_members("s", "g") == ()
    assert node.which_groups("s") == [] and node.which_local_groups("s") == []
    # a restart does not bring local memberships back; the member itself lives on
    node.start_scope("s")
    assert node.get_members("s", "g") == ()
    assert node.join("s", "g", m) == "ok"


def test_join_leave_multiplicity(node: Node) -> None:
    p, q = node.spawn_member().member, node.spawn_member().member
    assert node.join("s", "g", p) == "ok"
    assert node.join("s", "g", [p, q, p]) == "ok"
    assert Counter(node.get_members("s", "g")) == Counter({p: 3, q: 1})
    assert node.leave("s", "g", [p, p]) == "ok"
    assert node.leave("s", "g", [q, q]) == "ok"  # one removed, one not: still ok
    assert node.leave("s", "g", q) == "not_joined"
    assert node.leave("s", "h", p) == "not_joined"
    assert node.get_members("s", "g") == (p,)
    assert node.leave("s", "g", (p,)) == "ok"
    assert node.which_groups("s") == []


def test_empty_list_is_a_no_op_without_phantom_group(node: Node, rec: Recorder) -> None:
    assert node.join("s", "g", []) == "ok"
    assert node.which_groups("s") == []
    assert node.leave("s", "g", []) == "not_joined"
    with pytest.raises(NoScopeError):
        node.join("nope", "g", [])


def test_owner_rule_checked_before_any_change(node: Node) -> None:
    mine = node.spawn_member().member
    foreign = Member("b", "inc-b", 1)
    older_run = Member("a", "older", mine.local_id)
    for bad in (foreign, older_run, ("a", "inc-a", 1), "x"):
        with pytest.raises(NotLocalError) as e:
            node.join("s", "g", [mine, bad])  # type: ignore[list-item]
        assert e.value.bad == bad
        with pytest.raises(NotLocalError):
            node.leave("s", "g", [mine, bad])  # type: ignore[list-item]
    assert node.which_groups("s") == []
    with pytest.raises(TypeError):
        node.join("s", "g", "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        node.join("s", 5, mine)  # type: ignore[arg-type]


def test_exited_member_cannot_join_and_leave_says_not_joined(node: Node) -> None:
    h = node.spawn_member()
    node.join("s", "g", h.member)
    h.exit()
    assert not h.alive and "exited" in repr(h)
    with pytest.raises(NotLocalError, match="exited"):
        node.join("s", "g", h.member)
    assert node.leave("s", "g", h.member) == "not_joined"
    never_spawned = Member("a", "inc-a", 999)
    with pytest.raises(NotLocalError):
        node.join("s", "g", never_spawned)


def test_member_exit_leaves_every_group_of_every_scope(node: Node) -> None:
    node.start_scope("t")
    h, other = node.spawn_member(), node.spawn_member()
    m = h.member
    node.join("s", "g", [m, m])
    node.join("s", "h", [m, other.member])
    node.join("t", "g", m)
    sub, _ = node.monitor_scope("s")
    h.exit()
    h.exit()  # idempotent: a stale notice
    assert node.which_groups("t") == [] and node.which_groups("s") == ["h"]
    assert node.get_members("s", "h") == (other.member,)
    assert [(e.kind, e.group, e.members) for e in sub.drain()] == [
        ("leave", "g", (m, m)),
        ("leave", "h", (m,)),
    ]


def test_local_reads(node: Node, rec: Recorder) -> None:
    m = node.spawn_member().member
    node.join("s", "g", m)
    node.peer_up(P)
    node.receive(P, ["sync", "s", 1, [["g", [5]], ["r", [6]]]])
    remote5, remote6 = Member("b", "inc-b", 5), Member("b", "inc-b", 6)
    assert Counter(node.get_members("s", "g")) == Counter([m, remote5])
    assert node.get_local_members("s", "g") == (m,)
    assert sorted(node.which_groups("s")) == ["g", "r"]
    assert node.which_local_groups("s") == ["g"]
    assert node.get_members("s", "r") == (remote6,) and node.get_local_members("s", "r") == ()
    assert node.get_members("s", "nope") == () and node.get_members("nope", "g") == ()
    first = node.get_members("s", "g")
    assert node.get_members("s", "g") is first  # cached, immutable


def test_monitor_scope_snapshot_is_all_members_then_events(node: Node) -> None:
    m = node.spawn_member().member
    node.join("s", "g", m)
    node.peer_up(P)
    node.receive(P, ["sync", "s", 1, [["r", [5]]]])
    sub, snap = node.monitor_scope("s")
    assert snap == {"g": (m,), "r": (Member("b", "inc-b", 5),)}
    node.join("s", "g", [m, m])
    node.leave("s", "g", m)
    assert [(e.ref, e.kind, e.group, e.members) for e in sub.drain()] == [
        (sub, "join", "g", (m, m)),
        (sub, "leave", "g", (m,)),
    ]


def test_monitor_group_and_demonitor(node: Node) -> None:
    m = node.spawn_member().member
    node.join("s", "g", m)
    sub, members = node.monitor("s", "g")
    assert members == (m,) and isinstance(sub, Subscription)
    node.join("s", "other", m)
    node.leave("s", "g", m)
    assert [(e.kind, e.group) for e in sub.drain()] == [("leave", "g")]
    node.join("s", "g", m)
    assert node.demonitor("s", sub) == "ok"
    assert len(sub) == 0  # flushed
    assert node.demonitor("s", sub) is False
    assert node.demonitor("s", "junk") is False  # type: ignore[arg-type]
    node.start_scope("t")
    other, _ = node.monitor_scope("t")
    assert node.demonitor("s", other) is False
    with pytest.raises(NoScopeError):
        node.demonitor("nope", sub)


def test_subscriptions_end_when_the_scope_stops(node: Node) -> None:
    sub, _ = node.monitor_scope("s")
    node.stop_scope("s")
    assert sub.state.value == "closed"


def test_member_tied_to_a_task_exits_when_the_task_is_done(node: Node) -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        task = asyncio.create_task(release.wait())
        h = node.spawn_member(task)
        node.join("s", "g", h.member)
        release.set()
        await task
        await asyncio.sleep(0)  # done callbacks run on the next loop iteration
        assert not h.alive and node.get_members("s", "g") == ()

        crashed = asyncio.create_task(asyncio.sleep(3600))
        h2 = node.spawn_member(crashed)
        node.join("s", "g", h2.member)
        crashed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await crashed
        await asyncio.sleep(0)
        assert not h2.alive and node.which_groups("s") == []

    asyncio.run(scenario())


def test_frames_go_to_known_peers_through_the_transport(node: Node, rec: Recorder) -> None:
    node.peer_up(P)
    assert rec.take() == [(P, wire.discover("s", 1, reply=False))]
    node.receive(P, wire.discover("s", 1, reply=False))
    assert rec.take() == [(P, ["sync", "s", 1, []])]
    h: MemberHandle = node.spawn_member()
    node.join("s", "g", h.member)
    assert rec.take() == [(P, ["join", "s", 1, "g", [h.member.local_id]])]
    node.leave("s", "g", h.member)
    assert rec.take() == [(P, ["leave", "s", 1, [h.member.local_id], ["g"]])]
    node.start_scope("t")
    assert rec.take() == [(P, wire.discover("t", 1, reply=True))]
    node.stop_scope("t")
    assert rec.take() == [(P, wire.scope_down("t", 1))]
    node.start_scope("t")
    assert rec.take() == [(P, wire.discover("t", 2, reply=True))]  # next instance


def test_peer_up_for_self_is_ignored(node: Node, rec: Recorder) -> None:
    node.peer_up(node.id)
    node.peer_up(NodeId("a", "another-run-of-myself"))
    assert rec.take() == []
    node.receive(node.id, wire.discover("s", 1, reply=False))
    assert rec.take() == []


def test_frames_from_unconnected_peers_and_for_absent_scopes_are_dropped(
    node: Node, rec: Recorder
) -> None:
    node.receive(P, wire.discover("s", 1, reply=False))
    assert rec.take() == []
    node.peer_up(P)
    rec.take()
    node.receive(P, wire.discover("absent", 1, reply=False))
    assert rec.take() == []


def test_malformed_frames_are_logged_and_dropped(
    node: Node, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    node.peer_up(P)
    rec.take()
    with caplog.at_level(logging.WARNING, logger="app.pg.node"):
        node.receive(P, ["join"])
        node.receive(P, ["discover", "s", 1, 99, 0])
        node.receive(P, ["what", "s", 1])
    assert len(caplog.records) == 3 and "protocol version 99" in caplog.text
    assert rec.take() == []


def test_a_frame_deeper_than_python_recurses_is_logged_and_dropped(
    node: Node, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    node.peer_up(P)
    rec.take()
    deep = orjson.loads(nested_json(1000))
    with caplog.at_level(logging.WARNING, logger="app.pg.node"):
        node.receive(P, ["sync", "s", 1, [["g", deep]]])
        node.receive(P, deep)
    assert caplog.messages == [
        f"pg: dropped a frame from {P}: bad member ids: (a list, nested too deep or not JSON)",
        f"pg: dropped a frame from {P}: bad frame header: (a list, nested too deep or not JSON)",
    ]
    assert rec.take() == []


def malformed(node: Node, frame: Any) -> bool | None:
    """What pg's rules make of `frame` from P, connected, to a node running scope "s":
    True if malformed (logged, dropped), None if dropped silently (another scope, or a
    stale instance), False if applied."""
    try:
        kind, scope, instance = wire.header(frame)
    except PgFrameError:
        return True
    if scope != "s":
        return None
    owner = node._scopes["s"].table.peers.get(P)
    if owner is not None and instance < owner.instance:
        return None
    parse = {
        wire.DISCOVER: wire.parse_discover,
        wire.SYNC: wire.parse_sync,
        wire.JOIN: wire.parse_join,
        wire.LEAVE: wire.parse_leave,
        wire.DIGEST: wire.parse_digest,
        wire.SCOPE_DOWN: lambda frame: None,
    }.get(kind)
    if parse is None:
        return True
    try:
        parsed = parse(frame)
    except PgFrameError:
        return True
    return kind == wire.DISCOVER and parsed[0] != wire.PROTOCOL_VERSION


def restarts(frame: Any, owner: Any) -> bool:
    """Whether `frame` names a newer run of P's scope than the one recorded: the old run
    is forgotten (pg's rule 7) before the frame itself is parsed."""
    try:
        _, _, instance = wire.header(frame)
    except PgFrameError:
        return False
    return owner is not None and instance > owner.instance


def table(node: Node) -> dict[str, tuple[Member, ...]]:
    return {group: node.get_members("s", group) for group in node.which_groups("s")}


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # caplog: cleared
@given(frames=st.lists(pg_frames("s"), min_size=1, max_size=4))
def test_any_frame_is_applied_or_dropped_and_a_malformed_one_logged(
    frames: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    node = Node("a", rec, "inc-a")
    node.start_scope("s")
    node.peer_up(P)
    rec.take()
    for frame in map(arrived, frames):
        verdict = malformed(node, frame)
        owner = node._scopes["s"].table.peers.get(P)
        before = table(node)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="app.pg.node"):
            node.receive(P, frame)
        if verdict:
            [logged] = caplog.messages
            assert logged.startswith(f"pg: dropped a frame from {P}: ")
            assert rec.take() == []
            if not restarts(frame, owner):
                assert table(node) == before
        else:
            assert caplog.messages == []
            if verdict is None:
                assert (rec.take(), table(node)) == ([], before)
            rec.take()


def test_newer_incarnation_purges_the_older_one(node: Node, rec: Recorder) -> None:
    old, new = NodeId("b", "old"), NodeId("b", "new")
    node.peer_up(old)
    node.receive(old, ["sync", "s", 1, [["g", [1]]]])
    sub, _ = node.monitor("s", "g")
    node.peer_up(new)
    assert node.which_groups("s") == []
    assert [(e.kind, e.members) for e in sub.drain()] == [("leave", (Member("b", "old", 1),))]
    node.receive(old, ["sync", "s", 1, [["g", [1]]]])  # a late frame of the old run
    node.peer_down(old)  # its late peer_down
    node.peer_up(old)
    assert node.which_groups("s") == []
    node.receive(new, ["sync", "s", 1, [["g", [2]]]])
    assert node.get_members("s", "g") == (Member("b", "new", 2),)


def test_frame_from_a_newer_incarnation_before_its_peer_up(node: Node, rec: Recorder) -> None:
    old, new = NodeId("b", "old"), NodeId("b", "new")
    node.peer_up(old)
    node.receive(old, ["sync", "s", 1, [["g", [1]]]])
    rec.take()
    node.receive(new, ["sync", "s", 1, [["g", [2]]]])
    assert node.get_members("s", "g") == (Member("b", "new", 2),)
    assert rec.take() == [(new, wire.discover("s", 1, reply=False))]
    node.peer_up(new)  # the transport's own peer_up, late: nothing more happens
    assert rec.take() == []


def test_peer_down_removes_the_peer_and_is_idempotent(node: Node) -> None:
    node.peer_up(P)
    node.receive(P, ["sync", "s", 1, [["g", [1]]]])
    node.peer_down(P)
    node.peer_down(P)
    assert node.which_groups("s") == []
    node.receive(P, ["sync", "s", 1, [["g", [1]]]])  # after peer_down: dropped
    assert node.which_groups("s") == []


def test_close_stops_scopes_and_anti_entropy(node: Node, rec: Recorder) -> None:
    async def scenario() -> None:
        digest_sent = asyncio.Event()

        def on_send(frame: PgFrame) -> None:
            if frame[0] == "digest":
                digest_sent.set()

        rec.on_send = on_send
        node.peer_up(P)
        node.start_anti_entropy(0.001)
        with pytest.raises(RuntimeError):
            node.start_anti_entropy(1)
        await asyncio.wait_for(digest_sent.wait(), 5)
        node.close()
        assert node.scopes() == []
        assert rec.sent[-1] == (P, wire.scope_down("s", 1))

    asyncio.run(scenario())
