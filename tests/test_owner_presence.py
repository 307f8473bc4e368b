"""The owner's presence table (topic_server/presence.py), without sockets: examples of each
rule, then a property-based model of the whole protocol.

The model runs real gateways' `LocalPresence` (ws_gateway/presence.py) against a real
`PresenceTable`, over wires that carry their calls in order and can lose what is in flight
when the owner dies, and clients that hold a view as phoenix.js's `Presence` does
(`sync_state`, `sync_diff`, ported from phoenix.js); a gateway sends no diff to a socket
still waiting for its presence_state, as `Gateway.deliver` does. Whatever the steps (joins, leaves,
updates, gateway loss, owner failover with frames lost on the way, late joiners), once
nothing is in flight: the owner's merged view is the union of the gateways' local views,
and every client's view is the owner's.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.clock import FakeClock
from topic_server.presence import PresenceTable
from ws_gateway.presence import LocalPresence, Tracked

# A client's view: key -> metas (each a dict with its phx_ref), as phoenix.js keeps it.
View = dict[str, dict[str, list[dict[str, Any]]]]


def meta(ref: str, **fields: Any) -> bytes:
    return orjson.dumps({**fields, "phx_ref": ref})


def diff(table: PresenceTable[str]) -> list[tuple[str, Any]]:
    return [(topic, orjson.loads(payload)) for topic, payload in table.take_diffs()]


def test_a_track_joins_and_shows_in_the_state() -> None:
    table: PresenceTable[str] = PresenceTable()
    table.track("gw-a", "t", "alice", "r1", meta("r1", tab=1))
    table.track("gw-b", "t", "alice", "r2", meta("r2", tab=2))
    table.track("gw-b", "t", "bob", "r3", meta("r3"))
    assert orjson.loads(table.state("t")) == {
        "alice": {"metas": [{"tab": 1, "phx_ref": "r1"}, {"tab": 2, "phx_ref": "r2"}]},
        "bob": {"metas": [{"phx_ref": "r3"}]},
    }
    assert table.state("other") == b"{}"
    assert diff(table) == [
        (
            "t",
            {
                "joins": {
                    "alice": {"metas": [{"tab": 1, "phx_ref": "r1"}, {"tab": 2, "phx_ref": "r2"}]},
                    "bob": {"metas": [{"phx_ref": "r3"}]},
                },
                "leaves": {},
            },
        )
    ]
    assert diff(table) == []  # the next turn starts empty
    assert len(table) == 3 and table.changes == 3


def test_metas_are_stored_and_sent_as_the_gateway_made_them() -> None:
    table: PresenceTable[str] = PresenceTable()
    made = b'{"n": 123456789012345678901234567890, "phx_ref":"r1"}'  # not orjson's spelling
    table.track("gw", "t", "k", "r1", made)
    assert table.state("t") == b'{"k":{"metas":[' + made + b"]}}"
    assert table.take_diffs() == [("t", b'{"joins":{"k":{"metas":[' + made + b']}},"leaves":{}}')]


def test_an_untrack_leaves_with_the_stored_meta_and_empties_the_topic() -> None:
    table: PresenceTable[str] = PresenceTable()
    table.track("gw", "t", "k", "r1", meta("r1", x=1))
    table.take_diffs()
    table.untrack("gw", "t", "k", "r1")
    assert diff(table) == [
        ("t", {"joins": {}, "leaves": {"k": {"metas": [{"x": 1, "phx_ref": "r1"}]}}})
    ]
    assert table.state("t") == b"{}"
    assert (len(table), table._topics, table._gateways) == (0, {}, {})


def test_an_update_is_the_leave_of_the_old_meta_and_the_join_of_the_new_in_one_diff() -> None:
    table: PresenceTable[str] = PresenceTable()
    table.track("gw", "t", "k", "r1", meta("r1", away=False))
    table.take_diffs()
    table.track("gw", "t", "k", "r2", meta("r2", away=True), prev="r1")
    assert diff(table) == [
        (
            "t",
            {
                "joins": {"k": {"metas": [{"away": True, "phx_ref": "r2"}]}},
                "leaves": {"k": {"metas": [{"away": False, "phx_ref": "r1"}]}},
            },
        )
    ]
    assert orjson.loads(table.state("t")) == {"k": {"metas": [{"away": True, "phx_ref": "r2"}]}}


def test_a_turn_of_changes_is_one_diff_per_topic() -> None:
    table: PresenceTable[str] = PresenceTable()
    for i in range(3):
        table.track("gw", "t", f"k{i}", f"r{i}", meta(f"r{i}"))
    table.track("gw", "u", "k", "u1", meta("u1"))
    table.take_diffs()
    table.drop("gw")  # the gateway's link went down: everything it had leaves at once
    diffs = dict(diff(table))
    assert sorted(diffs) == ["t", "u"]
    assert diffs["t"] == {
        "joins": {},
        "leaves": {f"k{i}": {"metas": [{"phx_ref": f"r{i}"}]} for i in range(3)},
    }
    assert len(table) == 0


def test_a_ref_that_joins_and_leaves_in_one_turn_is_in_both_lists() -> None:
    """A client whose presence_state was taken mid-turn has it: the diff takes it out."""
    table: PresenceTable[str] = PresenceTable()
    table.track("gw", "t", "k", "r1", meta("r1"))
    state = orjson.loads(table.state("t"))
    table.untrack("gw", "t", "k", "r1")
    [(_, payload)] = diff(table)
    assert payload == {
        "joins": {"k": {"metas": [{"phx_ref": "r1"}]}},
        "leaves": {"k": {"metas": [{"phx_ref": "r1"}]}},
    }
    assert sync_diff(sync_state({}, state), payload) == {}
    assert sync_diff({}, payload) == {}


def test_a_ref_that_leaves_and_joins_again_in_one_turn_is_only_joined() -> None:
    """A gateway that leaves the topic at this owner and comes back within a turn (a ring
    move back and forth) re-tracks its entries: every client ends with them."""
    table: PresenceTable[str] = PresenceTable()
    table.track("gw", "t", "k", "r1", meta("r1"))
    before = orjson.loads(table.state("t"))
    table.take_diffs()
    table.drop("gw", "t")
    mid_turn = orjson.loads(table.state("t"))
    table.track("gw", "t", "k", "r1", meta("r1"))
    [(_, payload)] = diff(table)
    assert payload == {"joins": {"k": {"metas": [{"phx_ref": "r1"}]}}, "leaves": {}}
    for state in (before, mid_turn):
        assert sync_diff(sync_state({}, state), payload) == {"k": {"metas": [{"phx_ref": "r1"}]}}


def test_a_track_it_already_has_changes_nothing() -> None:
    table: PresenceTable[str] = PresenceTable()
    table.track("gw", "t", "k", "r1", meta("r1"))
    table.take_diffs()
    table.track("gw", "t", "k", "r1", meta("r1"))  # re-sent after a reroute
    assert diff(table) == []


def test_an_untrack_it_never_had_is_still_reported_gone() -> None:
    """A new owner gets the untracks its predecessor may have lost: no ghost stays."""
    table: PresenceTable[str] = PresenceTable()
    table.untrack("gw", "t", "k", "r9")
    assert diff(table) == [("t", {"joins": {}, "leaves": {"k": {"metas": [{"phx_ref": "r9"}]}}})]
    assert table.state("t") == b"{}"


def test_only_its_own_gateway_removes_an_entry() -> None:
    table: PresenceTable[str] = PresenceTable()
    table.track("gw-a", "t", "k", "r1", meta("r1"))
    table.take_diffs()
    table.untrack("gw-b", "t", "k", "r1")
    table.drop("gw-b")
    assert diff(table) == []
    assert len(table) == 1


def test_dropping_a_gateway_from_one_topic_keeps_its_other_topics() -> None:
    table: PresenceTable[str] = PresenceTable()
    table.track("gw", "t", "k", "r1", meta("r1"))
    table.track("gw", "u", "k", "r2", meta("r2"))
    table.take_diffs()
    table.drop("gw", "t")
    table.drop("gw", "never")
    assert [topic for topic, _ in diff(table)] == ["t"]
    assert orjson.loads(table.state("u")) == {"k": {"metas": [{"phx_ref": "r2"}]}}


def test_the_state_is_encoded_once_per_change() -> None:
    table: PresenceTable[str] = PresenceTable()
    table.track("gw", "t", "k", "r1", meta("r1"))
    first = table.state("t")
    assert table.state("t") is first
    table.track("gw", "t", "j", "r2", meta("r2"))
    assert table.state("t") is not first


# phoenix.js's Presence.syncState and Presence.syncDiff (assets/js/phoenix/presence.js),
# without the callbacks: what a client's list() shows.


def sync_state(current: View, new: Any) -> View:
    state = copy.deepcopy(current)
    joins: View = {}
    leaves: View = {key: presence for key, presence in state.items() if key not in new}
    for key, presence in new.items():
        if key in state:
            new_refs = {m["phx_ref"] for m in presence["metas"]}
            cur_refs = {m["phx_ref"] for m in state[key]["metas"]}
            joined = [m for m in presence["metas"] if m["phx_ref"] not in cur_refs]
            left = [m for m in state[key]["metas"] if m["phx_ref"] not in new_refs]
            if joined:
                joins[key] = {"metas": joined}
            if left:
                leaves[key] = {"metas": left}
        else:
            joins[key] = presence
    return sync_diff(state, {"joins": joins, "leaves": leaves})


def sync_diff(current: View, diff: Any) -> View:
    state = copy.deepcopy(current)
    for key, presence in diff["joins"].items():
        old = state.get(key)
        state[key] = copy.deepcopy(presence)
        if old is not None:
            joined = {m["phx_ref"] for m in state[key]["metas"]}
            kept = [m for m in old["metas"] if m["phx_ref"] not in joined]
            state[key]["metas"][:0] = kept
    for key, presence in diff["leaves"].items():
        old = state.get(key)
        if old is None:
            continue
        gone = {m["phx_ref"] for m in presence["metas"]}
        old["metas"] = [m for m in old["metas"] if m["phx_ref"] not in gone]
        if not old["metas"]:
            del state[key]
    return state


def refs(view: View) -> dict[str, set[str]]:
    """A view as key -> refs (phoenix.js orders metas as they came; order is not presence)."""
    return {key: {m["phx_ref"] for m in presence["metas"]} for key, presence in view.items()}


# The model.

TOPICS = ("t", "u")
KEYS = ("alice", "bob", "carol")
GATEWAYS = ("gw-a", "gw-b", "gw-c")
SOCKETS = 3  # per gateway
LINGER = 10.0


class Owner:
    """A topic server: its table, and whether it is the live one."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.table: PresenceTable[str] = PresenceTable()


class Wire:
    """A gateway's link to one owner (an `OwnerLink`): calls queued in order, applied when
    delivered, lost if the owner dies first (its queries then fail, as `fail_all` does);
    once down, a query fails at once, as `RemoteOwner.presence` does on a closed link."""

    def __init__(self, owner: Owner, gateway: str) -> None:
        self.owner = owner
        self.gateway = gateway
        self.queue: list[Callable[[], None]] = []
        self.asking: list[Callable[[bytes | str], None]] = []
        self.closed = False

    def track(self, topic: str, key: str, ref: str, meta: bytes, prev: str | None) -> None:
        table, gateway = self.owner.table, self.gateway
        self.queue.append(lambda: table.track(gateway, topic, key, ref, meta, prev))

    def untrack(self, topic: str, key: str, ref: str) -> None:
        table, gateway = self.owner.table, self.gateway
        self.queue.append(lambda: table.untrack(gateway, topic, key, ref))

    def unsubscribe(self, topic: str) -> None:
        table, gateway = self.owner.table, self.gateway
        self.queue.append(lambda: table.drop(gateway, topic))

    def presence(self, topic: str, on_presence: Callable[[bytes | str], None]) -> None:
        if self.closed:
            on_presence("topic server unreachable")
            return
        table = self.owner.table

        def answer() -> None:
            self.asking.remove(on_presence)
            on_presence(table.state(topic))

        self.asking.append(on_presence)
        self.queue.append(answer)

    def deliver(self) -> None:
        queue, self.queue = self.queue, []
        for call in queue:
            call()

    def down(self) -> None:
        """The link is gone: what is still on its way is lost, its queries fail."""
        self.closed = True
        self.queue = []
        asking, self.asking = self.asking, []
        for on_presence in asking:
            on_presence("the topic server went down before answering")


class Router:
    def __init__(self) -> None:
        self.wire: Wire | None = None

    def owner_of(self, topic: str) -> Wire | None:
        return self.wire

    def listeners(self, topic: str) -> set[Wire]:
        return set() if self.wire is None else {self.wire}


class Sock:
    """A client socket with phoenix.js's `Presence` on each topic it joined: diffs wait until
    the instance's presence_state came, then apply on top of it."""

    ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self.ids)
        self.views: dict[str, View] = {}  # topic -> view, once its state came
        self.pending: dict[str, list[Any]] = {}  # topic -> diffs before its state

    def joined(self, topic: str) -> None:
        self.views.pop(topic, None)
        self.pending[topic] = []

    def left(self, topic: str) -> None:
        self.views.pop(topic, None)
        self.pending.pop(topic, None)

    def diff(self, topic: str, payload: Any) -> None:
        if topic in self.views:
            self.views[topic] = sync_diff(self.views[topic], payload)
        elif topic in self.pending:
            self.pending[topic].append(payload)

    def push(self, join_ref: str | None, ref: None, topic: str, event: str, payload: Any) -> None:
        assert event == "presence_state"
        view = sync_state(self.views.get(topic, {}), orjson.loads(orjson.dumps(payload)))
        for diff in self.pending.pop(topic, []):
            view = sync_diff(view, diff)
        self.views[topic] = view


def wall() -> float:
    return 1700000000.0


class Gateway:
    def __init__(self, name: str, clock: FakeClock) -> None:
        self.name = name
        self.router = Router()
        self.presence = LocalPresence(self.router, clock, wall, LINGER)  # type: ignore[arg-type]
        self.sockets = [Sock() for _ in range(SOCKETS)]

    def local(self, topic: str) -> dict[str, set[str]]:
        view: dict[str, set[str]] = {}
        for entry in self.presence.topics.get(topic, {}).values():
            view.setdefault(entry.key, set()).add(entry.ref)
        return view


class PresenceModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(1000.0)  # every gateway's
        self.joins = itertools.count(1)
        self.owner = Owner("ts-1")
        self.owners = itertools.count(2)
        self.gateways = {name: self._gateway(name) for name in GATEWAYS}
        self.observers: list[tuple[str, View]] = [(t, {}) for t in TOPICS]  # watching all along

    def _gateway(self, name: str) -> Gateway:
        gateway = Gateway(name, self.clock)
        gateway.router.wire = Wire(self.owner, name)
        return gateway

    def _sock(self, gateway: str, index: int) -> Sock:
        return self.gateways[gateway].sockets[index]

    @rule(
        gateway=st.sampled_from(GATEWAYS),
        index=st.integers(0, SOCKETS - 1),
        topic=st.sampled_from(TOPICS),
        key=st.none() | st.sampled_from(KEYS),
        n=st.integers(0, 3),
    )
    def join(self, gateway: str, index: int, topic: str, key: str | None, n: int) -> None:
        sock = self._sock(gateway, index)
        sock.joined(topic)  # a new instance: it waits for its own presence_state
        wanted = Tracked(key, orjson.dumps({"n": n}))
        self.gateways[gateway].presence.track(sock, topic, str(next(self.joins)), wanted)  # type: ignore[arg-type]

    @rule(gateway=st.sampled_from(GATEWAYS), index=st.integers(0, SOCKETS - 1), n=st.integers(0, 9))
    def update(self, gateway: str, index: int, n: int) -> None:
        sock = self._sock(gateway, index)
        presence = self.gateways[gateway].presence
        for topic, entries in presence.topics.items():
            if sock in entries:
                presence.update(sock, topic, orjson.dumps({"n": n}))  # type: ignore[arg-type]
                return

    @rule(gateway=st.sampled_from(GATEWAYS), index=st.integers(0, SOCKETS - 1))
    def leave(self, gateway: str, index: int) -> None:
        sock = self._sock(gateway, index)
        gw = self.gateways[gateway]
        for topic in [t for t, entries in gw.presence.topics.items() if sock in entries]:
            sock.left(topic)
            gw.presence.untrack(sock, topic)  # type: ignore[arg-type]
            if topic not in gw.presence.topics:  # the gateway's last socket on the topic
                assert gw.router.wire is not None
                gw.router.wire.unsubscribe(topic)
            return

    @rule(gateway=st.sampled_from(GATEWAYS))
    def deliver(self, gateway: str) -> None:
        wire = self.gateways[gateway].router.wire
        assert wire is not None
        wire.deliver()

    @rule()
    def gateways_end_their_turn(self) -> None:
        """Each gateway asks for the presence_state of its turn's joiners."""
        self.clock.advance(0)

    @rule()
    def end_of_turn(self) -> None:
        """The owner sends its diffs to every client."""
        for topic, payload in self.owner.table.take_diffs():
            self._broadcast(topic, orjson.loads(payload))

    def _broadcast(self, topic: str, payload: Any) -> None:
        self.observers = [
            (t, sync_diff(view, payload) if t == topic else view) for t, view in self.observers
        ]
        for gateway in self.gateways.values():
            waiting = gateway.presence.waiting(topic)  # the gateway skips them, as it does
            for sock in gateway.sockets:
                if sock not in waiting:
                    sock.diff(topic, payload)

    @rule(topic=st.sampled_from(TOPICS))
    def late_observer(self, topic: str) -> None:
        """A client whose presence_state is taken now, mid-turn perhaps."""
        self.observers.append((topic, sync_state({}, orjson.loads(self.owner.table.state(topic)))))

    @rule(gateway=st.sampled_from(GATEWAYS))
    def gateway_dies(self, gateway: str) -> None:
        """kill -9 of a gateway: what it wrote still arrives (TCP delivers it before the
        close), then the owner sees its link close and sends the leaves at the end of that
        turn. (An owner that dies within that turn leaves them unsaid: a double fault
        presence does not mend.)"""
        wire = self.gateways[gateway].router.wire
        assert wire is not None
        wire.deliver()
        self.owner.table.drop(gateway)
        self.end_of_turn()
        self.gateways[gateway] = self._gateway(gateway)

    @rule(lose_in_flight=st.booleans())
    def owner_dies(self, lose_in_flight: bool) -> None:
        """kill -9 of the owner: frames on their way to it, and the diffs of its turn, may be
        lost; every gateway re-subscribes its topics at the next owner."""
        for gateway in self.gateways.values():
            assert gateway.router.wire is not None
            if not lose_in_flight:
                gateway.router.wire.deliver()
            # Then the link goes down, failing what was sent meanwhile (a query the answers
            # above made), before the gateway reroutes, as `GatewayNode.down` does.
            gateway.router.wire.down()
        if not lose_in_flight:
            self.end_of_turn()
        self.owner = Owner(f"ts-{next(self.owners)}")
        for gateway in self.gateways.values():
            wire = gateway.router.wire = Wire(self.owner, gateway.name)
            for topic in list(gateway.presence.topics):
                gateway.presence.rerouted(topic, {wire})  # type: ignore[arg-type]
            gateway.presence.reroute_left(gateway.presence.topics)

    @precondition(lambda self: self._quiet() and not self.owner.table.changed)
    @rule(seconds=st.floats(0, 2 * LINGER))
    def time_passes(self, seconds: float) -> None:
        """Only once nothing is in flight: a link delivers, an owner ends its turn, or it is
        declared down, well within `linger`."""
        self.clock.advance(seconds)

    def _quiet(self) -> bool:
        asking = any(g.presence.asking for g in self.gateways.values())
        wires = (g.router.wire for g in self.gateways.values())
        return not asking and all(not wire.queue for wire in wires if wire is not None)

    @invariant()
    def once_nothing_is_in_flight_every_view_is_the_union_of_the_local_views(self) -> None:
        """And every tracked socket has had its presence_state."""
        if not self._quiet() or self.owner.table.changed:
            return
        for topic in TOPICS:
            union: dict[str, set[str]] = {}
            for gateway in self.gateways.values():
                for key, entries in gateway.local(topic).items():
                    union.setdefault(key, set()).update(entries)
            merged = refs(orjson.loads(self.owner.table.state(topic)))
            assert merged == union
            for t, view in self.observers:
                if t == topic:
                    assert refs(view) == merged
            for gateway in self.gateways.values():
                for sock in gateway.presence.topics.get(topic, {}):
                    assert refs(sock.views[topic]) == merged  # its presence_state came


TestPresenceModel = PresenceModel.TestCase
