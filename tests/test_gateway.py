"""The gateway's subscriber table and fan-out over the in-memory link, without sockets."""

from __future__ import annotations

from typing import Any

import orjson

from app.counters import Counters
from app.link.interface import Accepted, OnOutcome, Outcome
from app.link.memory import MemoryLink
from app.roles.embedded import SingleOwner
from tests.clock import FakeClock
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


def join(gateway: Gateway, sock: FakeSocket, topic: str, join_ref: str) -> None:
    done: list[str | None] = []
    gateway.join(sock, topic, join_ref, done.append)  # type: ignore[arg-type]
    assert done == [None]  # the in-memory owner acknowledges at once


def embedded(clock: FakeClock | None = None) -> tuple[Gateway, TopicServer, SingleOwner]:
    counters = Counters()
    router = SingleOwner()
    gateway = Gateway("gw", router, counters, clock)
    server = TopicServer("ts", counters, clock)
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

    def subscribe(self, topic: str, on_outcome: OnOutcome) -> None:
        self.acks.append(on_outcome)

    def unsubscribe(self, topic: str) -> None:
        self.unsubscribed.append(topic)

    def publish(
        self, topic: str, event: str, payload: bytes, binary: bool, on_outcome: OnOutcome
    ) -> None: ...


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
