"""A topic server's end of its links to gateways, over real `LinkConnection`s that record
what they write, with the real `TopicServer` behind them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.counters import Counters
from app.link import codec
from app.link.codec import LinkAck, LinkDeliver, LinkFrame
from app.link.connection import LinkConnection
from app.link.handshake import Identity
from app.settings import Role
from topic_server.remote_gateway import RemoteGateway
from topic_server.server import TopicServer

pytestmark = pytest.mark.anyio


class Writer:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def write_message(self, data: bytes) -> None:
        self.messages.append(data)

    def buffered(self) -> int:
        return 0

    def close(self, code: int, reason: str) -> None:
        pass


class Gateway:
    """One linked gateway: the server's RemoteGateway for it, and what it was sent."""

    def __init__(self, name: str, server: TopicServer, counters: Counters, pg: list[Any]):
        self.writer = Writer()
        peer = Identity(name, Role.GATEWAY, "inc")
        self.link = LinkConnection(peer, self.writer, 1 << 20, on_overflow=lambda: None)
        self.remote = RemoteGateway(
            self.link, server, counters, lambda link, frame: pg.append((link, frame))
        )

    def receive(self, *frames: bytes) -> None:
        """Frames from the gateway, in one batch."""
        self.link.receive(b"".join(frames))

    async def sent(self) -> bytes:
        """Everything written to the gateway since last time."""
        await asyncio.sleep(0)  # a batch leaves at the end of the loop's turn
        data = b"".join(self.writer.messages)
        self.writer.messages.clear()
        return data


def frames(data: bytes) -> list[LinkFrame]:
    return list(codec.decode(data))


class Cluster:
    """A topic server and two linked gateways."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.server = TopicServer("ts-a", self.counters)
        self.pg: list[Any] = []
        self.a = Gateway("gw-a", self.server, self.counters, self.pg)
        self.b = Gateway("gw-b", self.server, self.counters, self.pg)


async def test_a_subscription_is_acked_with_seq_0() -> None:
    c = Cluster()
    c.a.receive(codec.subscribe(7, "t"), codec.subscribe(8, "u"))
    assert frames(await c.a.sent()) == [LinkAck(7, 0), LinkAck(8, 0)]
    assert c.server.topics.gateways("t") == (c.a.remote,)
    assert c.server.topics.gateways("u") == (c.a.remote,)


async def test_a_publish_is_sequenced_acked_and_delivered_once_per_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = Cluster()
    c.a.receive(codec.subscribe(1, "t"))
    c.b.receive(codec.subscribe(1, "t"))
    await c.a.sent(), await c.b.sent()
    encoded: list[int] = []
    deliver = codec.deliver

    def counted(seq: int, *rest: Any) -> bytes:
        encoded.append(seq)
        return deliver(seq, *rest)

    monkeypatch.setattr(codec, "deliver", counted)
    c.b.receive(
        codec.publish(2, 0, "t", "e", False, b'{"n":1}'),
        codec.publish(3, 0, "t", "e", True, b"\x01"),
    )
    to_a, to_b = await c.a.sent(), await c.b.sent()
    assert encoded == [1, 2]  # each message's deliver frame is encoded once, for both gateways
    first, second = frames(to_a)
    assert isinstance(first, LinkDeliver) and isinstance(second, LinkDeliver)
    one = deliver(1, first.sent_at, 0, "t", "e", False, b'{"n":1}')
    two = deliver(2, second.sent_at, 0, "t", "e", True, b"\x01")
    assert to_a == one + two
    # The publisher's link also carries the acks, after each message's deliver frame.
    assert to_b == one + codec.ack(2, 1) + two + codec.ack(3, 2)
    assert (c.counters.publishes, c.counters.gateway_deliveries_sent) == (2, 4)


async def test_a_publish_without_subscribers_is_acked_and_delivered_nowhere() -> None:
    c = Cluster()
    c.a.receive(codec.publish(5, 0, "nobody", "e", False, b"{}"))
    assert frames(await c.a.sent()) == [LinkAck(5, 1)]
    assert await c.b.sent() == b""
    assert (c.counters.publishes, c.counters.gateway_deliveries_sent) == (1, 0)


async def test_after_an_unsubscribe_a_gateway_gets_nothing_more() -> None:
    c = Cluster()
    c.a.receive(codec.subscribe(1, "t"))
    c.b.receive(codec.subscribe(1, "t"))
    c.a.receive(codec.unsubscribe("t"))
    await c.a.sent(), await c.b.sent()
    assert c.server.topics.gateways("t") == (c.b.remote,)
    c.b.receive(codec.publish(2, 0, "t", "e", False, b"{}"))
    assert await c.a.sent() == b""
    assert [type(f) for f in frames(await c.b.sent())] == [LinkDeliver, LinkAck]


async def test_a_delivery_to_a_closed_link_is_counted_as_dropped() -> None:
    c = Cluster()
    c.a.receive(codec.subscribe(1, "t"))
    c.b.receive(codec.subscribe(1, "t"))
    await c.a.sent(), await c.b.sent()
    c.a.link.close(1001, "going away")
    c.b.receive(codec.publish(2, 0, "t", "e", False, b"{}"))
    assert await c.a.sent() == b""
    assert [type(f) for f in frames(await c.b.sent())] == [LinkDeliver, LinkAck]
    assert c.counters.gateway_deliveries_dropped == 1


async def test_pg_frames_go_to_pg_with_their_link() -> None:
    c = Cluster()
    c.a.receive(codec.pg(["discover", "dps", 1]))
    assert c.pg == [(c.a.link, ["discover", "dps", 1])]
    assert c.a.remote.gateway == "gw-a"


async def test_the_socket_to_skip_is_named_to_the_publishing_gateway_alone() -> None:
    c = Cluster()
    c.a.receive(codec.subscribe(1, "t"))
    c.b.receive(codec.subscribe(1, "t"))
    await c.a.sent(), await c.b.sent()
    c.b.receive(codec.publish(2, 77, "t", "e", False, b"{}"))
    [to_a] = frames(await c.a.sent())
    to_b, ack = frames(await c.b.sent())
    assert isinstance(to_a, LinkDeliver) and isinstance(to_b, LinkDeliver)
    assert (to_a.exclude, to_b.exclude) == (0, 77)
    assert to_a._replace(exclude=77) == to_b and ack == LinkAck(2, 1)
