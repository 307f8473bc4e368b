"""A simulated cluster driven by Hypothesis against a model (docs/pg-groups.md section 6).

Up to five nodes on a `MemoryNetwork`, two scopes, three groups. The model keeps, per
live node: its current incarnation, its running scopes, its live members and their
memberships per scope; and the set of links. Rules follow spg's PropEr model plus
node restarts, subscriptions, and delivery of single frames on chosen links.

Checked at every step: local reads equal the model; join/leave answers are exactly the
model's (`not_joined` iff no listed occurrence was a member); every subscription's
snapshot plus folded events equals its node's current view. Checked after a drain:
every node's `get_members` is the memberships of itself and its directly linked nodes
running the scope, nothing else, and `which_groups` lists exactly the non-empty groups.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from app.pg import (
    Member,
    MemberHandle,
    Node,
    NodeId,
    NoScopeError,
    NotLocalError,
    Subscription,
    SubscriptionState,
)
from tests.pg.network import MemoryNetwork

# The long profile runs for minutes: lift pytest-timeout's per-test limit for it.
pytestmark = pytest.mark.timeout(0 if settings.get_current_profile_name() == "long" else 120)

NAMES = ("n0", "n1", "n2", "n3", "n4")
SCOPES = ("s", "t")
GROUPS = ("g0", "g1", "g2")

Memberships = Counter[tuple[str, Member]]  # (group, member) -> count


@dataclass
class NodeModel:
    node: Node
    running: set[str] = field(default_factory=set)
    members: dict[Member, MemberHandle] = field(default_factory=dict)
    memberships: dict[str, Memberships] = field(
        default_factory=lambda: {s: Counter() for s in SCOPES}
    )

    def group(self, scope: str, group: str) -> Counter[Member]:
        return Counter({m: n for (g, m), n in self.memberships[scope].items() if g == group})


@dataclass
class Watch:
    """A subscription and the view it has folded so far."""

    node: str
    incarnation: str
    scope: str
    group: str | None
    sub: Subscription
    view: dict[str, Counter[Member]]

    def fold(self) -> None:
        for event in self.sub.drain():
            assert event.ref is self.sub
            assert self.group is None or event.group == self.group
            c = self.view.setdefault(event.group, Counter())
            if event.kind == "join":
                c.update(event.members)
            else:
                assert not Counter(event.members) - c, "left without having joined"
                c.subtract(event.members)
            if not +c:
                del self.view[event.group]


def members_strategy(candidates: list[Member]) -> st.SearchStrategy[Member | list[Member]]:
    one = st.sampled_from(candidates)
    return st.one_of(one, st.lists(one, min_size=0, max_size=4))


class PgCluster(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net = MemoryNetwork()
        self.nodes: dict[str, NodeModel] = {}
        self.links: set[frozenset[str]] = set()
        self.watches: list[Watch] = []
        self.retired: set[NodeId] = set()

    # Nodes and links.

    @initialize(data=st.data(), count=st.integers(2, 4))
    def start_cluster(self, data: st.DataObject, count: int) -> None:
        for name in NAMES[:count]:
            self._start(name, data.draw(st.sets(st.sampled_from(SCOPES))))
            for _ in range(2):
                handle = self.nodes[name].node.spawn_member()
                self.nodes[name].members[handle.member] = handle
            for other in NAMES[:count]:
                if other < name:
                    self.net.connect(other, name)
                    self.links.add(frozenset((other, name)))

    @precondition(lambda self: len(self.nodes) < len(NAMES))
    @rule(data=st.data(), scopes=st.sets(st.sampled_from(SCOPES)))
    def start_node(self, data: st.DataObject, scopes: set[str]) -> None:
        self._start(data.draw(st.sampled_from([n for n in NAMES if n not in self.nodes])), scopes)

    def _start(self, name: str, scopes: set[str]) -> None:
        node = Node(name, self.net.transport(name))
        self.net.attach(node)
        self.nodes[name] = NodeModel(node)
        for scope in sorted(scopes):
            assert node.start_scope(scope) == "ok"
            self.nodes[name].running.add(scope)

    @precondition(lambda self: self.nodes)
    @rule(data=st.data(), graceful=st.booleans())
    def stop_node(self, data: st.DataObject, graceful: bool) -> None:
        name = data.draw(st.sampled_from(sorted(self.nodes)))
        model = self.nodes.pop(name)
        if graceful:
            model.node.close()
        self.net.detach(name)
        self.links = {link for link in self.links if name not in link}
        self.retired.add(model.node.id)
        self.watches = [w for w in self.watches if w.node != name]

    @precondition(lambda self: len(self.nodes) >= 2)
    @rule(data=st.data())
    def connect_or_disconnect(self, data: st.DataObject) -> None:
        pairs = [frozenset((a, b)) for a in self.nodes for b in self.nodes if a < b]
        pair = data.draw(st.sampled_from(sorted(pairs, key=sorted)))
        a, b = sorted(pair)
        if pair in self.links:
            self.net.disconnect(a, b)
            self.links.remove(pair)
        else:
            self.net.connect(a, b)
            self.links.add(pair)

    # Scopes.

    @precondition(lambda self: self.nodes)
    @rule(data=st.data())
    def start_scope(self, data: st.DataObject) -> None:
        model = self.nodes[data.draw(st.sampled_from(sorted(self.nodes)))]
        scope = data.draw(self._scope(sorted(set(SCOPES) - model.running)))
        expected = "already_started" if scope in model.running else "ok"
        assert model.node.start_scope(scope) == expected
        model.running.add(scope)

    @precondition(lambda self: self.nodes)
    @rule(data=st.data())
    def stop_scope(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.nodes)))
        model = self.nodes[name]
        scope = data.draw(self._scope(sorted(model.running)))
        if scope not in model.running:
            with pytest.raises(NoScopeError):
                model.node.stop_scope(scope)
            return
        assert model.node.stop_scope(scope) == "ok"
        model.running.remove(scope)
        model.memberships[scope].clear()
        for w in self.watches:
            if w.node == name and w.scope == scope:
                assert w.sub.state is SubscriptionState.CLOSED
        self.watches = [w for w in self.watches if not (w.node == name and w.scope == scope)]

    # Members.

    @precondition(lambda self: self.nodes)
    @rule(data=st.data())
    def spawn_member(self, data: st.DataObject) -> None:
        model = self.nodes[data.draw(st.sampled_from(sorted(self.nodes)))]
        handle = model.node.spawn_member()
        model.members[handle.member] = handle

    @staticmethod
    def _scope(likely: list[str]) -> st.SearchStrategy[str]:
        """Mostly one of `likely` (the interesting case), sometimes any scope."""
        anyone = st.sampled_from(SCOPES)
        if not likely:
            return anyone
        preferred = st.sampled_from(likely)
        return st.one_of(preferred, preferred, anyone)

    def _with_members(self) -> list[str]:
        return sorted(n for n, m in self.nodes.items() if m.members)

    @precondition(lambda self: self._with_members())
    @rule(data=st.data(), group=st.sampled_from(GROUPS))
    def join(self, data: st.DataObject, group: str) -> None:
        model = self.nodes[data.draw(st.sampled_from(self._with_members()))]
        scope = data.draw(self._scope(sorted(model.running)))
        listed = data.draw(members_strategy(sorted(model.members)))
        if scope not in model.running:
            with pytest.raises(NoScopeError):
                model.node.join(scope, group, listed)
            return
        assert model.node.join(scope, group, listed) == "ok"
        for m in [listed] if isinstance(listed, Member) else listed:
            model.memberships[scope][group, m] += 1

    @precondition(lambda self: self._with_members())
    @rule(data=st.data(), group=st.sampled_from(GROUPS))
    def leave(self, data: st.DataObject, group: str) -> None:
        model = self.nodes[data.draw(st.sampled_from(self._with_members()))]
        scope = data.draw(self._scope(sorted(model.running)))
        listed = data.draw(members_strategy(sorted(model.members)))
        if scope not in model.running:
            with pytest.raises(NoScopeError):
                model.node.leave(scope, group, listed)
            return
        counts = model.memberships[scope]
        changed = False
        for m in [listed] if isinstance(listed, Member) else listed:
            if counts[group, m]:
                counts[group, m] -= 1
                changed = True
        counts += Counter()  # drop zero counts
        model.memberships[scope] = counts
        assert model.node.leave(scope, group, listed) == ("ok" if changed else "not_joined")

    @precondition(lambda self: len(self._with_members()) >= 2)
    @rule(data=st.data(), scope=st.sampled_from(SCOPES), group=st.sampled_from(GROUPS))
    def join_foreign_member(self, data: st.DataObject, scope: str, group: str) -> None:
        a, b = data.draw(st.permutations(self._with_members()))[:2]
        model, foreign = self.nodes[a], data.draw(st.sampled_from(sorted(self.nodes[b].members)))
        if scope in model.running:
            with pytest.raises(NotLocalError):
                model.node.join(scope, group, [*model.members, foreign])

    @precondition(lambda self: self._with_members())
    @rule(data=st.data())
    def member_exit(self, data: st.DataObject) -> None:
        model = self.nodes[data.draw(st.sampled_from(self._with_members()))]
        member = data.draw(st.sampled_from(sorted(model.members)))
        model.members.pop(member).exit()
        for scope in SCOPES:
            model.memberships[scope] = Counter(
                {(g, m): n for (g, m), n in model.memberships[scope].items() if m != member}
            )

    # Subscriptions.

    @precondition(lambda self: any(m.running for m in self.nodes.values()))
    @rule(data=st.data(), group=st.none() | st.sampled_from(GROUPS))
    def subscribe(self, data: st.DataObject, group: str | None) -> None:
        name = data.draw(st.sampled_from(sorted(n for n, m in self.nodes.items() if m.running)))
        model = self.nodes[name]
        scope = data.draw(st.sampled_from(sorted(model.running)))
        if group is None:
            sub, snapshot = model.node.monitor_scope(scope)
            view = {g: Counter(ms) for g, ms in snapshot.items()}
        else:
            sub, members = model.node.monitor(scope, group)
            view = {group: Counter(members)} if members else {}
        self.watches.append(Watch(name, model.node.id.incarnation, scope, group, sub, view))

    # Delivery.

    @precondition(lambda self: self.net.pending())
    @rule(data=st.data())
    def deliver_one(self, data: st.DataObject) -> None:
        self.net.deliver_one(data.draw(st.sampled_from(sorted(self.net.pending()))))

    @precondition(lambda self: self.net.pending())
    @rule()
    def drain(self) -> None:
        self.net.drain()
        for name, model in self.nodes.items():
            for scope in SCOPES:
                self._check_converged(name, model, scope)

    def _check_converged(self, name: str, model: NodeModel, scope: str) -> None:
        node = model.node
        if scope not in model.running:
            assert node.which_groups(scope) == []
            return
        visible = [name] + [
            other
            for other in self.nodes
            if frozenset((name, other)) in self.links and scope in self.nodes[other].running
        ]
        expected_groups = set()
        for group in GROUPS:
            expected: Counter[Member] = Counter()
            for other in visible:
                expected += self.nodes[other].group(scope, group)
            actual = node.get_members(scope, group)
            assert Counter(actual) == expected, (name, scope, group)
            if expected:
                expected_groups.add(group)
            for m in actual:
                assert m.owner not in self.retired
                assert self.nodes[m.node].node.id == m.owner
        assert set(node.which_groups(scope)) == expected_groups
        assert len(node.which_groups(scope)) == len(expected_groups)

    # Checked after every step.

    @invariant()
    def local_reads_match_the_model(self) -> None:
        for model in self.nodes.values():
            node = model.node
            for scope in SCOPES:
                local_groups = set()
                for group in GROUPS:
                    expected = model.group(scope, group)
                    assert Counter(node.get_local_members(scope, group)) == expected
                    if expected:
                        local_groups.add(group)
                        assert set(expected) <= set(node.get_members(scope, group))
                assert set(node.which_local_groups(scope)) == local_groups
                if scope not in model.running:
                    assert node.get_members(scope, GROUPS[0]) == ()
                    continue
                # White-box: the member -> groups map (what an exit leaves) is exact too.
                held = node._scopes[scope].memberships
                assert {m: Counter(groups) for m, groups in held.items()} == {
                    m: Counter({g: n for (g, mm), n in model.memberships[scope].items() if mm == m})
                    for m in {m for _, m in model.memberships[scope]}
                }

    @invariant()
    def subscriptions_replay_their_node_view(self) -> None:
        for w in self.watches:
            w.fold()
            node = self.nodes[w.node].node
            groups = node.which_groups(w.scope) if w.group is None else [w.group]
            now = {g: Counter(node.get_members(w.scope, g)) for g in groups}
            assert w.view == {g: c for g, c in now.items() if c}


TestPgCluster = PgCluster.TestCase
