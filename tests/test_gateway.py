"""The gateway's subscriber table and fan-out over the in-memory link, without sockets."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from app.counters import Counters
from app.link.codec import Entry
from app.link.interface import (
    Accepted,
    Kept,
    OnOutcome,
    OnRecovery,
    Outcome,
    Position,
    Recovery,
)
from app.link.memory import MemoryLink
from app.roles.embedded import SingleOwner
from tests.clock import FakeClock
from tests.test_history import history
from topic_server.server import TopicServer
from ws_gateway.gateway import NO_OWNER, Gateway
from ws_gateway.presence import Tracked
from ws_gateway.serializers import V1, V2, Serializer


class FakeSocket:
    """Records the frames the gateway writes to it."""

    ids = iter(range(1, 1_000_000))

    def __init__(self, serializer: Serializer = V2) -> None:
        self.id = next(self.ids)
        self.serializer = serializer
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def push(self, join_ref: str | None, ref: None, topic: str, event: str, payload: Any) -> None:
        self.send(self.serializer.encode(join_ref, ref, topic, event, payload))

    def payloads(self) -> list[Any]:
        """The messages sent: text as JSON, binary as bytes (unmasked server frames)."""
        messages = []
        for data in self.sent:
            size = data[1] & 0x7F
            body = data[2 + {126: 2, 127: 8}.get(size, 0) :]
            messages.append(orjson.loads(body) if data[0] == 0x81 else body)
        return messages


def join(
    gateway: Gateway, sock: FakeSocket, topic: str, join_ref: str, positions: bool = False
) -> None:
    done: list[str | Recovery | None] = []
    gateway.join(sock, topic, join_ref, done.append, positions)  # type: ignore[arg-type]
    assert done == [None]  # the in-memory owner acknowledges at once


def recover(
    gateway: Gateway, sock: FakeSocket, topic: str, since: Position, limit: int
) -> list[str | Recovery | None]:
    """Join `sock` (as instance "1") recovering what came after `since`; what `done` got."""
    done: list[str | Recovery | None] = []
    gateway.join(sock, topic, "1", done.append, recover=(since, limit))  # type: ignore[arg-type]
    return done


def embedded(
    clock: FakeClock | None = None, wall_clock: Callable[[], float] = time.time
) -> tuple[Gateway, TopicServer, SingleOwner]:
    """A gateway and a topic server alone, over the in-memory link; the server's streams
    start in epochs e1, e2, ... and its history reads the time from `wall_clock`."""
    counters = Counters()
    router = SingleOwner()
    clock = clock or FakeClock()
    gateway = Gateway("gw", router, counters, clock)
    server = TopicServer("ts", counters, history(), clock=clock, wall_clock=wall_clock)
    router.link = MemoryLink(gateway, server)
    return gateway, server, router


def test_one_subscription_per_gateway_and_topic() -> None:
    gateway, server, _ = embedded()
    a, b = FakeSocket(), FakeSocket()
    join(gateway, a, "t", "1")
    join(gateway, b, "t", "2")
    assert [link.gateway for link in server.topics.gateways("t")] == ["gw"]
    assert server.topics._by_topic["t"] == {server.topics.gateways("t")[0]: 1}
    gateway.leave(a, "t")  # type: ignore[arg-type]
    assert len(server.topics) == 1
    gateway.leave(b, "t")  # type: ignore[arg-type]
    assert len(server.topics) == 0
    assert gateway.topics == {}


def test_fan_out_builds_each_frame_once() -> None:
    gateway, _, _ = embedded()
    sockets = [FakeSocket() for _ in range(4)] + [FakeSocket(V1) for _ in range(2)]
    for i, sock in enumerate(sockets):
        join(gateway, sock, "t", "1" if i < 3 else "2")
    acks: list[Outcome] = []
    gateway.publish("t", "ev", b'{"n":1}', False, acks.append)
    assert acks == [Accepted("ts", 1)]
    assert [s.payloads() for s in sockets[:3]] == [[["1", None, "t", "ev", {"n": 1}]]] * 3
    assert sockets[3].payloads() == [["2", None, "t", "ev", {"n": 1}]]
    v1 = {"topic": "t", "event": "ev", "payload": {"n": 1}, "ref": None}
    assert [s.payloads() for s in sockets[4:]] == [[v1], [v1]]
    # The same bytes object for every socket with the same serializer and join_ref.
    assert sockets[0].sent[0] is sockets[1].sent[0] is sockets[2].sent[0]
    assert sockets[4].sent[0] is sockets[5].sent[0]
    assert gateway.counters.socket_deliveries == 6
    assert gateway.counters.gateway_deliveries_sent == 1


def test_binary_messages_skip_v1_sockets_and_count_them() -> None:
    gateway, _, _ = embedded()
    v1, v2 = FakeSocket(V1), FakeSocket()
    join(gateway, v1, "t", "1")
    join(gateway, v2, "t", "1")
    gateway.publish("t", "publish", b"\x01\x02", True, lambda _: None)
    assert v1.sent == []
    assert v2.sent == [b"\x82\x0f" + bytes([0, 1, 1, 7]) + b"1tpublish\x01\x02"]
    assert gateway.counters.v1_binary_skipped == 1


def test_deliveries_from_a_former_owner_or_out_of_order_are_dropped() -> None:
    gateway, _, router = embedded()
    sock = FakeSocket()
    join(gateway, sock, "t", "1")
    owner = router.link
    assert owner is not None
    gateway.deliver(owner, "t", 5, "ev", b"{}", False)
    gateway.deliver(owner, "t", 5, "ev", b"{}", False)  # a duplicate
    gateway.deliver(owner, "t", 4, "ev", b"{}", False)  # older
    gateway.deliver(
        MemoryLink(gateway, TopicServer("other", Counters())), "t", 9, "e", b"{}", False
    )
    assert len(sock.sent) == 1
    assert gateway.counters.stale_deliveries_dropped == 3


def test_publish_without_an_owner_fails_at_once() -> None:
    gateway, _, router = embedded()
    router.link = None
    acks: list[Outcome] = []
    gateway.publish("t", "ev", b"{}", False, acks.append)
    assert acks == [NO_OWNER]
    assert gateway.counters.publish_errors == 1


class SlowOwner:
    """An owner link whose acknowledgements the test releases."""

    owner = "ts-slow"

    def __init__(self) -> None:
        self.acks: list[OnOutcome] = []
        self.unsubscribed: list[str] = []
        self.recoveries: list[tuple[str, Position, int, OnRecovery]] = []

    def subscribe(self, topic: str, on_outcome: OnOutcome) -> None:
        self.acks.append(on_outcome)

    def unsubscribe(self, topic: str) -> None:
        self.unsubscribed.append(topic)

    def publish(
        self, topic: str, event: str, payload: bytes, binary: bool, on_outcome: OnOutcome
    ) -> None: ...

    def recover(self, topic: str, since: Position, limit: int, done: OnRecovery) -> None:
        self.recoveries.append((topic, since, limit, done))


def slow_gateway() -> tuple[Gateway, SlowOwner]:
    router = SingleOwner()
    owner = SlowOwner()
    router.link = owner
    return Gateway("gw", router, Counters()), owner


def test_joins_are_done_only_once_the_owner_has_the_subscription() -> None:
    gateway, owner = slow_gateway()
    done: list[tuple[str, str | None]] = []
    gateway.join(FakeSocket(), "t", "1", lambda p: done.append(("first", p)))  # type: ignore[arg-type]
    gateway.join(FakeSocket(), "t", "2", lambda p: done.append(("second", p)))  # type: ignore[arg-type]
    assert (done, len(owner.acks)) == ([], 1)  # one subscription for the gateway
    owner.acks[0](Accepted("ts-slow", 0))
    assert done == [("first", None), ("second", None)]
    gateway.join(FakeSocket(), "t", "3", lambda p: done.append(("third", p)))  # type: ignore[arg-type]
    assert done[-1] == ("third", None)


def test_a_failed_subscription_fails_every_waiting_join_and_unsubscribes() -> None:
    gateway, owner = slow_gateway()
    done: list[str | None] = []
    gateway.join(FakeSocket(), "t", "1", done.append)  # type: ignore[arg-type]
    gateway.join(FakeSocket(), "t", "2", done.append)  # type: ignore[arg-type]
    owner.acks[0]("the topic server went down before answering")
    assert done == ["the topic server went down before answering"] * 2
    # Neither socket is a subscriber: nothing is delivered to them, nothing stays subscribed.
    assert gateway.topics == {}
    assert owner.unsubscribed == ["t"]
    # The next join subscribes again.
    gateway.join(FakeSocket(), "t", "3", done.append)  # type: ignore[arg-type]
    assert len(owner.acks) == 2


def test_a_publisher_without_echo_is_skipped_at_its_own_gateway() -> None:
    gateway, _, _ = embedded()
    sender, other = FakeSocket(), FakeSocket()
    join(gateway, sender, "t", "1")
    join(gateway, other, "t", "1")
    gateway.publish("t", "ev", b"{}", False, lambda _: None, exclude=sender.id)
    assert sender.sent == [] and len(other.sent) == 1
    assert gateway.counters.socket_deliveries == 1


# Topics with history: positions, and recovery.

KEPT = Kept(3, 30.0)  # a rule's history_size = 3, history_ttl = 30


def test_sockets_that_asked_for_positions_get_them_in_the_ref_slot_by_lane() -> None:
    gateway, _, _ = embedded()
    plain, positioned, also, other_ref = FakeSocket(), FakeSocket(), FakeSocket(), FakeSocket()
    v1_plain, v1_positioned = FakeSocket(V1), FakeSocket(V1)
    join(gateway, plain, "t", "1")
    join(gateway, positioned, "t", "1", positions=True)
    join(gateway, also, "t", "1", positions=True)
    join(gateway, other_ref, "t", "2", positions=True)
    join(gateway, v1_plain, "t", "1")
    join(gateway, v1_positioned, "t", "1", positions=True)
    acks: list[Outcome] = []
    for n in (1, 2):
        gateway.publish("t", "ev", b'{"n":%d}' % n, False, acks.append, kept=KEPT)
    assert acks == [Accepted("ts", 1, ("e1", 1)), Accepted("ts", 2, ("e1", 2))]
    assert plain.sent[0] == b'\x81\x1b["1",null,"t","ev",{"n":1}]'  # as without history
    assert plain.payloads()[1] == ["1", None, "t", "ev", {"n": 2}]
    assert positioned.payloads() == [
        ["1", "e1:1", "t", "ev", {"n": 1}],
        ["1", "e1:2", "t", "ev", {"n": 2}],
    ]
    assert other_ref.payloads() == [
        ["2", "e1:1", "t", "ev", {"n": 1}],
        ["2", "e1:2", "t", "ev", {"n": 2}],
    ]
    assert [m["ref"] for m in v1_plain.payloads()] == [None, None]
    assert [m["ref"] for m in v1_positioned.payloads()] == ["e1:1", "e1:2"]
    # One frame per lane: serializer, join_ref and whether it carries positions.
    assert positioned.sent[0] is also.sent[0]
    assert positioned.sent[0] != plain.sent[0]
    assert gateway.counters.socket_deliveries == 12
    # A topic without history has no position to give.
    join(gateway, positioned, "u", "1", positions=True)
    gateway.publish("u", "ev", b"{}", False, acks.append)
    assert acks[-1] == Accepted("ts", 3)
    assert positioned.payloads()[-1] == ["1", None, "u", "ev", {}]


def test_a_delivery_at_or_before_the_last_position_is_dropped() -> None:
    gateway, _, router = embedded()
    sock = FakeSocket()
    join(gateway, sock, "t", "1", positions=True)
    owner = router.link
    assert owner is not None
    # Sequence numbers all newer: only the positions tell the repeats (a message heard from
    # both owners while the topic moves). A new epoch starts over.
    positions = [("e1", 1), ("e1", 2), ("e1", 2), ("e1", 1), ("e1", 3), ("e2", 1)]
    for seq, position in enumerate(positions, 1):
        gateway.deliver(owner, "t", seq, "ev", b"{}", False, position=position)
    assert [frame[1] for frame in sock.payloads()] == ["e1:1", "e1:2", "e1:3", "e2:1"]
    assert gateway.counters.stale_deliveries_dropped == 2


def test_a_topic_that_moves_is_resubscribed_since_the_last_position_delivered() -> None:
    gateway, old, router = embedded()
    sock = FakeSocket()
    join(gateway, sock, "t", "1", positions=True)
    for n in (1, 2):
        gateway.publish("t", "ev", b'{"n":%d}' % n, False, lambda _: None, kept=KEPT)
    # The old owner numbered a third message and copied it to its successor, then died
    # before delivering it: the successor's copy holds it.
    old.history.append("t", 3, 30.0, time.time(), "ev", False, b'{"n":3}')
    new = TopicServer("ts-b", Counters(), history())
    new.history.install("t", old.history.streams["t"].snapshot(), time.time())
    router.link = MemoryLink(gateway, new)
    gateway.reroute()
    assert len(old.topics) == 0 and len(new.topics) == 1
    acks: list[Outcome] = []
    gateway.publish("t", "ev", b'{"n":4}', False, acks.append, kept=KEPT)
    assert acks == [Accepted("ts-b", 2, ("e1", 4))]  # the same stream, where it was
    assert sock.payloads() == [["1", f"e1:{n}", "t", "ev", {"n": n}] for n in (1, 2, 3, 4)]


def test_a_recovering_join_subscribes_first_then_asks_what_was_missed() -> None:
    gateway, owner = slow_gateway()
    done: list[str | Recovery | None] = []
    gateway.join(FakeSocket(), "t", "1", done.append, recover=(("e1", 4), 3))  # type: ignore[arg-type]
    assert (len(owner.acks), owner.recoveries) == (1, [])
    owner.acks[0](Accepted("ts-slow", 0))
    assert [r[:3] for r in owner.recoveries] == [("t", ("e1", 4), 3)]
    assert done == []  # the reply waits for the answer


def test_a_recovering_join_gets_nothing_live_until_its_recovery_is_answered() -> None:
    gateway, owner = slow_gateway()
    live, late = FakeSocket(), FakeSocket()
    done: list[str | Recovery | None] = []
    gateway.join(live, "t", "1", done.append, positions=True)  # type: ignore[arg-type]
    owner.acks[0](Accepted("ts-slow", 0))
    gateway.join(late, "t", "1", done.append, recover=(("e1", 1), 3))  # type: ignore[arg-type]
    [(topic, since, limit, answer)] = owner.recoveries
    assert (topic, since, limit, done) == ("t", ("e1", 1), 3, [None])
    gateway.deliver(owner, "t", 1, "ev", b'{"n":2}', False, position=("e1", 2))  # type: ignore[arg-type]
    assert live.payloads() == [["1", "e1:2", "t", "ev", {"n": 2}]]
    assert late.sent == []  # message 2 comes with the answer, not live
    missed = (Entry(2, 0.0, "ev", False, b'{"n":2}'),)
    answer(Recovery(True, "e1", 2, missed))
    assert done == [None, Recovery(True, "e1", 2, missed)]
    assert late.sent == []  # the session replays what it missed, from the answer
    gateway.deliver(owner, "t", 2, "ev", b'{"n":3}', False, position=("e1", 3))  # type: ignore[arg-type]
    assert late.payloads() == [["1", "e1:3", "t", "ev", {"n": 3}]]
    assert late.sent[0] is live.sent[1]  # one lane: both asked for positions


def test_a_recovering_join_fails_without_an_owner_to_answer_it() -> None:
    """recovered: false would tell the client its history is gone; it is only out of reach,
    so the join fails and the client joins again later."""
    gateway = Gateway("gw", SingleOwner(), Counters())  # not linked to a topic server yet
    assert recover(gateway, FakeSocket(), "t", ("e1", 4), 3) == [NO_OWNER]
    assert gateway.topics == {}
    gateway, owner = slow_gateway()
    sock = FakeSocket()
    done: list[str | Recovery | None] = []
    gateway.join(sock, "t", "1", done.append, recover=(("e1", 1), 3))  # type: ignore[arg-type]
    owner.acks[0](Accepted("ts-slow", 0))
    owner.recoveries[0][3]("the topic server went down before answering")
    assert done == ["the topic server went down before answering"]
    assert (gateway.topics, owner.unsubscribed) == ({}, ["t"])


def test_a_socket_that_leaves_while_recovering_is_not_subscribed_by_the_answer() -> None:
    gateway, owner = slow_gateway()
    sock = FakeSocket()
    done: list[str | Recovery | None] = []
    gateway.join(sock, "t", "1", done.append, recover=(("e1", 1), 3))  # type: ignore[arg-type]
    owner.acks[0](Accepted("ts-slow", 0))
    gateway.leave(sock, "t")  # type: ignore[arg-type]
    assert (gateway.topics, owner.unsubscribed) == ({}, ["t"])
    owner.recoveries[0][3](Recovery(True, "e1", 1, ()))
    assert gateway.topics == {}
    assert done == [Recovery(True, "e1", 1, ())]


def test_recovery_says_recovered_false_once_history_no_longer_covers_the_gap() -> None:
    clock = FakeClock(1000.0)
    gateway, _, _ = embedded(wall_clock=clock.time)
    for n in range(1, 6):
        gateway.publish("t", "ev", b'{"n":%d}' % n, False, lambda _: None, kept=KEPT)
    # history_size 3 keeps offsets 3, 4 and 5: after 2, all is there; after 1, not.
    kept = tuple(Entry(n, 1000.0, "ev", False, b'{"n":%d}' % n) for n in (3, 4, 5))
    assert recover(gateway, FakeSocket(), "t", ("e1", 2), 3) == [Recovery(True, "e1", 5, kept)]
    trimmed = FakeSocket()
    assert recover(gateway, trimmed, "t", ("e1", 1), 3) == [Recovery(False, "e1", 5, ())]
    assert recover(gateway, FakeSocket(), "t", ("e9", 5), 3) == [Recovery(False, "e1", 5, ())]
    assert recover(gateway, FakeSocket(), "t", ("e1", 6), 3) == [Recovery(False, "e1", 5, ())]
    # Past the ttl (30 s) nothing is kept: only a client that missed nothing recovers.
    clock.advance(31.0)
    assert recover(gateway, FakeSocket(), "t", ("e1", 4), 3) == [Recovery(False, "e1", 5, ())]
    assert recover(gateway, FakeSocket(), "t", ("e1", 5), 3) == [Recovery(True, "e1", 5, ())]
    # A topic without history has no stream to recover from.
    assert recover(gateway, FakeSocket(), "u", ("e1", 5), 3) == [Recovery(False, "", 0, ())]
    # Unrecovered or not, the socket is subscribed: live messages follow.
    gateway.publish("t", "ev", b'{"n":6}', False, lambda _: None, kept=KEPT)
    assert trimmed.payloads() == [["1", "e1:6", "t", "ev", {"n": 6}]]


def present(gateway: Gateway, sock: FakeSocket, topic: str, join_ref: str, key: str) -> None:
    """Join and track, as a session does for a join to a presence topic."""
    join(gateway, sock, topic, join_ref)
    gateway.presence.track(sock, topic, join_ref, Tracked(key, b"{}"))  # type: ignore[arg-type]


def presence_events(sock: FakeSocket) -> list[tuple[str, dict[str, Any]]]:
    return [(frame[3], frame[4]) for frame in sock.payloads() if frame[3].startswith("presence_")]


def metas(*keys: str) -> dict[str, Any]:
    return {key: {"metas": [{"phx_ref": ANY, "online_at": ANY}]} for key in keys}


class Anything:
    def __eq__(self, other: object) -> bool:
        return True


ANY = Anything()


def test_presence_over_the_in_memory_link() -> None:
    clock = FakeClock()
    gateway, server, _ = embedded(clock)
    alice, bob = FakeSocket(), FakeSocket(V1)
    present(gateway, alice, "t", "1", "alice")
    present(gateway, bob, "t", "5", "bob")
    assert alice.sent == bob.sent == []
    # The end of the turn: the diff of both joins reached neither socket before its state,
    # which holds it: each gets that state alone.
    clock.advance(0)
    assert presence_events(alice) == [("presence_state", metas("alice", "bob"))]
    assert [frame["event"] for frame in bob.payloads()] == ["presence_state"]
    assert bob.payloads()[0]["payload"] == metas("alice", "bob")
    carol = FakeSocket()
    present(gateway, carol, "t", "2", "carol")
    clock.advance(0)
    assert presence_events(alice)[1:] == [
        ("presence_diff", {"joins": metas("carol"), "leaves": {}})
    ]
    assert presence_events(carol) == [("presence_state", metas("alice", "bob", "carol"))]
    gateway.leave(bob, "t")  # type: ignore[arg-type]
    clock.advance(0)
    assert presence_events(alice)[-1] == ("presence_diff", {"joins": {}, "leaves": metas("bob")})
    assert (server.counters.presence_changes, server.counters.presence_diff_bytes) == (4, ANY)
    gateway.leave(alice, "t")  # type: ignore[arg-type]
    gateway.leave(carol, "t")  # type: ignore[arg-type]
    clock.advance(0)
    assert len(server.presence) == 0 and server.presence_state("t") == b"{}"


def test_a_gateway_that_is_gone_or_unsubscribed_has_no_presence_left() -> None:
    clock = FakeClock()
    gateway, server, router = embedded(clock)
    present(gateway, FakeSocket(), "t", "1", "alice")
    present(gateway, FakeSocket(), "u", "1", "alice")
    assert router.link is not None
    server.unsubscribe(router.link, "t")  # type: ignore[arg-type]
    assert server.presence_state("t") == b"{}" and server.presence_state("u") != b"{}"
    server.gateway_down(router.link)  # type: ignore[arg-type]
    assert len(server.presence) == 0


def test_presence_diffs_count_only_from_the_topics_owner() -> None:
    """While a topic moves, both owners have every entry: the gateway hears one."""
    gateway, _, router = embedded()
    sock = FakeSocket()
    join(gateway, sock, "t", "1")
    owner = router.link
    assert owner is not None
    other = MemoryLink(gateway, TopicServer("other", Counters()))
    gateway.topics["t"].owners[other] = 0  # listened to: a server the topic moves to
    diff = b'{"joins":{},"leaves":{}}'
    gateway.deliver(other, "t", 1, "presence_diff", diff, False, presence=True)
    assert sock.sent == [] and gateway.counters.presence_diffs_dropped == 1
    gateway.deliver(other, "t", 2, "news", b"{}", False)  # a message: from either
    gateway.deliver(owner, "t", 3, "presence_diff", diff, False, presence=True)
    assert [frame[3] for frame in sock.payloads()] == ["news", "presence_diff"]
